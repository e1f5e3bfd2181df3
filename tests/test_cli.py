"""The `backup-monitor` command line, run as a real process."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme

from monitor.cli import main

COMMAND = [sys.executable, "-m", "monitor"]


Started = tuple[subprocess.Popen[bytes], dict[str, str]]


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., Started]]:
    """Starts `backup-monitor emulator --port 0 ARGS…` and reads its banner; kills it afterwards."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> Started:
        process = subprocess.Popen(
            [*COMMAND, "emulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        assert process.stdout is not None
        return process, orjson.loads(process.stdout.readline())

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture
def emulator_process(start_emulator: Callable[..., Started]) -> Started:
    return start_emulator("--seed", "5", "--subscriptions", "1")


async def test_emulator_prints_its_banner_first_and_serves(emulator_process) -> None:
    """The first stdout line is the JSON banner; its token reads a page of jobs."""
    _, banner = emulator_process
    assert set(banner) >= {"url", "token", "tenant_id"}
    headers = {"Authorization": f"Bearer {banner['token']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{banner['url']}/subscriptions?api-version=2022-12-01", headers=headers
        ) as r:
            sub = (await r.json())["value"][0]["subscriptionId"]
        url = (
            f"{banner['url']}/subscriptions/{sub}/providers/Microsoft.RecoveryServices/vaults"
            "?api-version=2025-08-01"
        )
        async with http.get(url, headers=headers) as r:
            vault = (await r.json())["value"][0]["id"]
        async with http.get(
            f"{banner['url']}{vault}/backupJobs?api-version=2025-08-01", headers=headers
        ) as r:
            assert r.status == 200
            assert "x-ms-ratelimit-remaining-subscription-reads" in r.headers
            assert isinstance((await r.json())["value"], list)


async def test_emulator_backup_vault_flags(start_emulator: Callable[..., Started]) -> None:
    """Backup vaults, their history seed and Resource Graph staleness from the command line:
    with 10 minutes of staleness only the seeded jobs (days old) have Resource Graph rows."""
    _, banner = start_emulator(
        "--subscriptions",
        "1",
        "--backup-vaults-per-subscription",
        "2",
        "--backup-vault-history-jobs",
        "3",
        "--resource-graph-staleness",
        "600",
    )
    headers = {"Authorization": f"Bearer {banner['token']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{banner['url']}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
            json={"query": "RecoveryServicesResources | project id, properties"},
            headers=headers,
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["x-ms-user-quota-remaining"] == "14"
        body = await r.json()
    assert body["totalRecords"] == 6
    assert all("endTime" in row["properties"] for row in body["data"])


def test_emulator_stops_cleanly_on_sigterm(emulator_process) -> None:
    """SIGTERM ends the emulator with exit code 0."""
    process, _ = emulator_process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, cert_path, key_path


async def test_emulator_serves_tls(
    start_emulator: Callable[..., Started], tls_files: tuple[trustme.CA, Path, Path]
) -> None:
    """With --tls-cert/--tls-key the emulator speaks HTTPS trusted through the given CA."""
    ca, cert_path, key_path = tls_files
    process, banner = start_emulator("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    assert banner["url"].startswith("https://127.0.0.1:")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    headers = {"Authorization": f"Bearer {banner['token']}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.get(f"{banner['url']}/subscriptions?api-version=2022-12-01", headers=headers) as r,
    ):
        assert r.status == 200
    process.terminate()
    assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["emulator", "--port", "70000"], "between 0 and 65535"),
        (["emulator", "--subscriptions", "0"], "at least 1"),
        (["emulator", "--profile", "huge"], "invalid choice"),
        (["demo", "--duration", "-1"], "must be > 0"),
        (["emulator", "--faults", "1.5"], "between 0 and 1"),
        (["emulator", "--fault", "server_error"], "must look like KIND=RATE"),
        (["emulator", "--fault", "drop=often"], "drop: must be a number"),
        (["emulator", "--resource-graph-staleness", "-1"], "0 or more"),
        (["emulator", "--backup-vault-history-jobs", "x"], "must be a whole number"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad command-line values exit with code 2 and say what is wrong."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("gremlins=0.1", "--fault: unknown fault 'gremlins'; known: drop, expired_token"),
        ("drop=2", "--fault: drop: must be between 0 and 1, got 2.0"),
    ],
)
def test_emulator_refuses_unknown_faults_and_rates_out_of_range(
    fault: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --fault exits 2 with one line naming it, before anything listens."""
    assert main(["emulator", "--port", "0", "--fault", fault]) == 2
    assert message in capsys.readouterr().err


async def test_emulator_fault_options_set_its_fault_rates(
    start_emulator: Callable[..., Started],
) -> None:
    """--faults spreads a total over every kind; each --fault then sets one kind."""
    # drop and expired_token off, so the one ARM request below meets the 5xx for certain.
    _, banner = start_emulator(
        "--faults", "0.12", "--fault", "server_error=1", "--fault", "latency_s=2",
        "--fault", "drop=0", "--fault", "expired_token=0",
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{banner['url']}/_emulator/faults") as r:
            settings = (await r.json())["settings"]
        headers = {"Authorization": f"Bearer {banner['token']}"}
        async with http.get(
            f"{banner['url']}/subscriptions?api-version=2022-12-01", headers=headers
        ) as r:
            assert r.status in (500, 503, 504)
            assert "error" in await r.json()
    assert settings["server_error"] == 1.0
    assert settings["truncate"] == pytest.approx(0.02)
    assert settings["drop"] == 0.0
    assert settings["foreign_next_link"] == 0.0
    assert settings["latency_s"] == 2.0


def test_tls_options_go_together(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--tls-cert without --tls-key is refused with exit code 2."""
    assert main(["emulator", "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_no_command_prints_help() -> None:
    """Without a command the CLI prints help and exits 2."""
    assert main([]) == 2


def test_demo_runs_the_daemon_and_exits_by_itself() -> None:
    """`backup-monitor demo` runs the daemon against the emulator and ends with its summary."""
    result = subprocess.run(
        [*COMMAND, "demo", "--duration", "8"], capture_output=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert " → " in out
    assert "summary after" in out
    assert "terminal transitions emitted, 0 duplicate event ids" in out
    assert "0 answered 429" in out


def test_demo_tour_walks_through_the_emulator() -> None:
    """`backup-monitor demo --tour` plays a plain ARM client and ends on its own."""
    result = subprocess.run(
        [*COMMAND, "demo", "--tour", "--duration", "3"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "429 SubscriptionRequestsThrottled" in out
    assert "operation Succeeded" in out
    assert "transitions watched" in out


def test_python_dash_m_and_console_script_agree() -> None:
    """`python -m monitor --version` prints the package version."""
    result = subprocess.run([*COMMAND, "--version"], capture_output=True, check=True)
    assert result.stdout.decode().startswith("backup-monitor 0.1.0")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[poll]\nactive_intervall_s = 5\n", "poll.active_intervall_s: unknown key"),
        ('[poll]\nactive_interval_s = "fast"\n', "poll.active_interval_s:"),
        (
            '[azure]\narm_endpoint = "https://management.azure.com/"\ncredential = "static"\n'
            'static_token = "s3cr3t-t0ken"\n',
            "azure.credential:",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_bad_config_exits_2_with_one_line(
    command: str, toml: str, expected: str, tmp_path: Path
) -> None:
    """Unknown keys, wrong types and a static token towards real ARM exit 2 with one line."""
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    result = subprocess.run(
        [*COMMAND, command, "--config", str(config)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "s3cr3t-t0ken" not in result.stderr.decode()


def test_check_config_exits_3_when_arm_is_unreachable(tmp_path: Path) -> None:
    """An ARM endpoint nobody answers on is a startup failure: exit 3 with a clear line."""
    config = tmp_path / "monitor.toml"
    config.write_text(
        '[azure]\narm_endpoint = "http://127.0.0.1:9/"\nallow_http_loopback = true\n'
        'credential = "static"\nstatic_token = "t"\nrequest_timeout_s = 2\n'
    )
    result = subprocess.run(
        [*COMMAND, "check-config", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr.decode()
    assert "startup failed" in result.stderr.decode()


def test_check_config_lists_what_it_would_watch(emulator_process: Started, tmp_path: Path) -> None:
    """Against the emulator, check-config authenticates, discovers and prints every vault."""
    _, banner = emulator_process
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[azure]\narm_endpoint = "{banner["url"]}/"\nallow_http_loopback = true\n'
        f'credential = "static"\nstatic_token = "{banner["token"]}"\n'
    )
    result = subprocess.run(
        [*COMMAND, "check-config", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "configuration is valid" in out
    assert "5 vaults would be watched" in out
    assert out.count("rsv-000-") == 5
    assert "sink default: stdout (json)\n" in out


def test_check_config_json_is_one_object_naming_every_vault(
    start_emulator: Callable[..., Started], tmp_path: Path
) -> None:
    """`check-config --output json` prints one JSON object (nothing else on stdout): the
    endpoint, every vault with its subscription, kind, group, name, location, tenant and id,
    the count of each kind, where Backup vault jobs come from and every sink; the same vaults
    as the text."""
    _, banner = start_emulator(
        "--seed", "5", "--subscriptions", "2", "--backup-vaults-per-subscription", "1"
    )
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[azure]\narm_endpoint = "{banner["url"]}/"\nallow_http_loopback = true\n'
        f'credential = "static"\nstatic_token = "{banner["token"]}"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "events.jsonl"}"\n'
        '[sinks.filter]\noutcomes = ["failed"]\n'
    )
    argv = [*COMMAND, "check-config", "--config", str(config)]
    result = subprocess.run([*argv, "--output", "json"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    report = orjson.loads(result.stdout)
    assert list(report) == [
        "config_valid",
        "authenticated",
        "arm_endpoint",
        "vaults",
        "vault_count",
        "vault_counts",
        "backup_vault_jobs_from",
        "sinks",
    ]
    assert report["config_valid"] is True
    assert report["authenticated"] is True
    assert report["arm_endpoint"] == banner["url"] + "/"
    vaults = report["vaults"]
    assert report["vault_count"] == len(vaults) == 12
    assert report["vault_counts"] == {"recovery_services": 10, "backup_vault": 2}
    for vault in vaults:
        assert list(vault) == [
            "subscription_id",
            "kind",
            "resource_group",
            "name",
            "location",
            "tenant_id",
            "id",
        ]
        assert vault["tenant_id"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"  # the emulator's
        assert vault["id"].lower().startswith(f"/subscriptions/{vault['subscription_id']}/")
        assert vault["id"].endswith("/" + vault["name"])
        assert vault["location"]
    assert {v["kind"] for v in vaults} == {"recovery_services", "backup_vault"}
    assert len({v["subscription_id"] for v in vaults}) == 2
    assert report["backup_vault_jobs_from"] == "resource_graph"
    assert report["sinks"] == [
        {
            "name": "file",
            "type": "file",
            "description": f"file: file {tmp_path / 'events.jsonl'} (json) (filtered)",
            "filtered": True,
        }
    ]
    text = subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout.decode()
    for vault in vaults:
        assert f"  {vault['name']:<28} {vault['location']}\n" in text


def test_check_config_names_each_sink_and_refuses_a_missing_secret(
    emulator_process: Started, tmp_path: Path
) -> None:
    """check-config prints every [[sinks]] entry without a webhook's URL, and exits 3 naming
    the sink and the variable when a webhook's secret_env is not set."""
    _, banner = emulator_process
    config = tmp_path / "monitor.toml"
    secret_url = "https://hooks.slack.com/services/T0/B0/SECRETPART"
    config.write_text(
        f'[azure]\narm_endpoint = "{banner["url"]}/"\nallow_http_loopback = true\n'
        f'credential = "static"\nstatic_token = "{banner["token"]}"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "events.jsonl"}"\n'
        f'[[sinks]]\ntype = "webhook"\nname = "chat"\nurl = "{secret_url}"\n'
        'format = "slack"\nsecret_env = "TEST_CHAT_SECRET"\n'
        '[sinks.filter]\noutcomes = ["failed"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "TEST_CHAT_SECRET"}
    run = [*COMMAND, "check-config", "--config", str(config)]
    result = subprocess.run(run, capture_output=True, timeout=60, check=False, env=env)
    assert result.returncode == 3, result.stderr.decode()
    assert "sink 'chat': secret_env names TEST_CHAT_SECRET, which is not set" in (
        result.stderr.decode()
    )
    env["TEST_CHAT_SECRET"] = "s"
    result = subprocess.run(run, capture_output=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert f"sink file: file {tmp_path / 'events.jsonl'} (json)\n" in out
    assert (
        "sink chat: webhook (slack, signed with $TEST_CHAT_SECRET; the URL is not shown) "
        "(filtered)\n"
    ) in out
    assert "SECRETPART" not in out + result.stderr.decode()


def test_sigterm_during_the_first_discovery_exits_0(tmp_path: Path) -> None:
    """A daemon stuck discovering (ARM accepts but never answers) stops on SIGTERM with 0."""
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = tmp_path / "monitor.toml"
        config.write_text(
            f'[azure]\narm_endpoint = "http://127.0.0.1:{port}/"\nallow_http_loopback = true\n'
            'credential = "static"\nstatic_token = "t"\nrequest_timeout_s = 60\n'
            '[ops]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\n'
        )
        process = subprocess.Popen(
            [*COMMAND, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            for line in process.stderr:  # wait until the ops server is up: discovery runs
                if b"ops.listening" in line:
                    break
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            assert process.stderr is not None
            process.stderr.close()
