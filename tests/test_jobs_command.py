"""`backup-monitor jobs list|show|wait` as a process, against the emulator over TLS."""

from __future__ import annotations

import io
import random
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.arm import OperationReply
from monitor.cli import build_parser
from monitor.clock import SystemClock
from monitor.commands.console import fit, human_s
from monitor.commands.exits import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
)
from monitor.commands.jobs import open_arm, parse_jobs_request, run_jobs_command
from monitor.commands.jobs_common import UsageError
from monitor.commands.jobs_list import (
    DEFAULT_LIST_TIMEOUT_S,
    ListRequest,
    error_text,
    listed_error_codes,
)
from monitor.commands.jobs_show import ShowRequest
from monitor.commands.jobs_wait import job_progress
from monitor.config_load import load_settings
from monitor.core.diff import JobStateChanged
from monitor.core.jobs import JobDetails, JobStatus, parse_job_details
from monitor.core.vaults import VaultKind, VaultRef, parse_vault_id
from monitor.emulator import Emulator, EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator.backup_vaults import BvJob
from monitor.emulator.backup_vaults import job_resource_id as bv_job_resource_id
from monitor.emulator.catalogue import COMPLETED, FAILED
from monitor.emulator.estate import Job, Vault
from monitor.emulator.wire import job_json
from monitor.emulator.world import World
from monitor.errors import ArmError, ArmForbidden, ArmNotFound, ArmServerError, ArmThrottled
from monitor.events import event_schema, render_event, render_job
from tests import hostile_arm
from tests.fakes import FakeClock

SETTINGS = EmulatorSettings(
    world=WorldSettings(seed=21, subscriptions=2, vaults_per_subscription=3)
)
API = "api-version=2025-08-01"
COMMAND = [sys.executable, "-m", "monitor"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
async def emu(server_ssl_context: ssl.SSLContext) -> AsyncIterator[Emulator]:
    async with running_emulator(SETTINGS, ssl_context=server_ssl_context) as emu:
        yield emu


def write_config(emu: Emulator, path: Path, ca_pem_path: str) -> Path:
    path.write_text(
        f'[azure]\narm_endpoint = "{emu.url}/"\ncredential = "static"\n'
        f'static_token = "{emu.token}"\nca_bundle = "{ca_pem_path}"\nrequest_timeout_s = 10\n'
    )
    return path


@pytest.fixture
def config(emu: Emulator, tmp_path: Path, ca_pem_path: str) -> Path:
    return write_config(emu, tmp_path / "monitor.toml", ca_pem_path)


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Runs `backup-monitor ARGV…` as a process while the emulator serves in this event loop.

    A process, not `main()` in a thread: the CLI configures structlog for its whole process,
    which must not leak into the other tests' `capture_logs`.
    """

    async def run(*argv: str) -> Run:
        done = await anyio.run_process([*COMMAND, *argv], check=False)
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())

    return run


def job_schema() -> dict[str, Any]:
    schema = event_schema()
    return {"$defs": schema["$defs"], "$ref": "#/$defs/job"}


def vault_schema() -> dict[str, Any]:
    schema = event_schema()
    return {"$defs": schema["$defs"], "$ref": "#/$defs/vault"}


def live_vaults(emu: Emulator) -> list[Vault]:
    return [v for v in emu.world.vaults.values() if not v.deleted]


def finished_job(emu: Emulator, status: str, *, vm: bool = False) -> Job:
    """A job of the world's history that already ended with `status`."""
    emu.world.advance(datetime.now(UTC))
    for vault in live_vaults(emu):
        for job in vault.jobs:
            if job.status == status and (not vm or job.job_type.startswith("AzureIaaSVM")):
                return job
    raise AssertionError(f"no {status} job in the world")


def running_job(emu: Emulator, *, left_s: float) -> Job:
    """A running job that will not end for at least `left_s` seconds."""
    now = datetime.now(UTC)
    emu.world.advance(now)
    for vault in live_vaults(emu):
        for job in vault.jobs:
            if (
                not job.is_terminal
                and job.plan
                and job.plan[0][0] > now + timedelta(seconds=left_s)
            ):
                return job
    raise AssertionError("no long-running job in the world")


class TestList:
    async def test_default_scope_lists_every_watched_vault_as_event_objects(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """Without a scope, every vault the config watches is read; records are job + vault."""
        started = datetime.now(UTC)
        run = await cli(
            "jobs", "list", "--config", str(config), "--since", "10m", "--output", "json"
        )
        assert run.code == EXIT_OK, run.err
        assert run.err == ""
        records = orjson.loads(run.out)
        assert records
        for record in records:
            assert list(record) == ["job", "vault", "error_codes"]
            jsonschema.validate(record["job"], job_schema())
            jsonschema.validate(record["vault"], vault_schema())
        world_jobs = {j.name: v for v in live_vaults(emu) for j in v.jobs if j.start_at <= started}
        listed = {r["job"]["id"] for r in records}
        assert listed >= set(world_jobs), "every job of the window is listed"
        assert {r["vault"]["name"] for r in records} == {v.name for v in world_jobs.values()}
        starts = [r["job"]["start_time"] for r in records]
        assert starts == sorted(starts, reverse=True), "newest first"

    async def test_filters_are_case_insensitive_and_repeatable(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """--status (any casing, repeated), --type and --operation narrow the list as documented."""
        before = datetime.now(UTC)
        emu.world.advance(before)
        ended_before = {
            j.name
            for v in live_vaults(emu)
            for j in v.jobs
            if j.status in (FAILED, COMPLETED)
            and j.backup_management_type == "AzureIaasVM"
            and j.operation == "Backup"
        }
        run = await cli(
            "jobs",
            "list",
            "--config",
            str(config),
            "--status",
            "FAILED",
            "--status",
            "completed",
            "--type",
            "azureiaasvm",
            "--operation",
            "backup",
            "--output",
            "jsonl",
        )
        assert run.code == EXIT_OK, run.err
        records = [orjson.loads(line) for line in run.out.splitlines()]
        assert {r["job"]["id"] for r in records} >= ended_before
        for r in records:
            assert r["job"]["status"] in ("Failed", "Completed")
            assert r["job"]["backup_management_type"] == "AzureIaasVM"
            assert r["job"]["operation"].split(" ")[0] == "Backup"

    async def test_a_failing_vault_is_one_line_and_the_others_still_print(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """A 403 vault and a deleted vault are one stderr line each; the others print; exit 4."""
        sub = sorted(emu.world.subscriptions)[0]
        vaults = sorted(emu.world.subscriptions[sub].vaults.values(), key=lambda v: v.name)
        forbidden, gone, fine = vaults[0], vaults[1], vaults[2]
        run = await cli(
            "jobs",
            "list",
            "--config",
            str(config),
            "--subscription",
            sub,
            "--vault",
            gone.id,
            "--since",
            "30m",
        )
        assert run.code == EXIT_OK, run.err
        emu.world.set_forbidden(forbidden.id, True)
        emu.world.delete_vault(gone.id)
        run = await cli(
            "jobs",
            "list",
            "--config",
            str(config),
            "--vault",
            forbidden.id,
            "--vault",
            gone.id,
            "--vault",
            fine.id,
            "--since",
            "30m",
        )
        assert run.code == EXIT_API_ERROR
        lines = run.err_lines
        assert len(lines) == 2, lines
        by_vault = {
            name: next(x for x in lines if f"vault {name} " in x)
            for name in (forbidden.name, gone.name)
        }
        assert "403 AuthorizationFailed" in by_vault[forbidden.name]
        assert "404 ResourceNotFound" in by_vault[gone.name]
        assert all("request id " in line for line in lines)
        table = run.out.splitlines()
        assert table[0].split()[:3] == ["STARTED", "(UTC)", "STATUS"]
        assert len(table) > 1
        assert all(fine.name in row for row in table[1:])

    async def test_failed_jobs_carry_their_error_codes(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """A failed job's error codes are the world's (a MARS or DPM job has none), read from
        its details; any other job's are empty."""
        emu.world.advance(datetime.now(UTC))
        argv = ["jobs", "list", "--config", str(config), "--since", "7d", "--output", "jsonl"]
        run = await cli(*argv)
        assert run.code == EXIT_OK, run.err
        assert run.err == ""
        records = [orjson.loads(line) for line in run.out.splitlines()]
        world = {j.name: j for v in live_vaults(emu) for j in v.jobs}
        failed = [r for r in records if r["job"]["status"] == "Failed"]
        assert failed
        for record in failed:
            job = world[record["job"]["id"]]
            assert job.error is not None
            no_code = job.job_type in ("MabJob", "DpmJob")
            assert record["error_codes"] == ([] if no_code else [str(job.error.code)])
        assert all(r["error_codes"] == [] for r in records if r["job"]["status"] != "Failed")

    async def test_error_codes_are_read_within_a_cap_newest_first(
        self, emu: Emulator, config: Path, ca_pem_path: str
    ) -> None:
        """At most `detail_reads` details reads (one each), for the newest failed jobs; the
        others' codes are null, and one stderr line says how many were not read."""
        emu.world.advance(datetime.now(UTC))
        settings = load_settings(config, {})
        runs = []
        async with open_arm(settings, clock=SystemClock(), rng=random.Random(1)) as arm:

            async def nothing() -> list[VaultRef]:
                return []

            for status, cap in (("completed", 1), ("failed", 1)):
                args = build_parser().parse_args(
                    ["jobs", "list", "--since", "7d", "--status", status, "--output", "jsonl"]
                    + [arg for v in live_vaults(emu) for arg in ("--vault", v.id)]
                )
                parsed = parse_jobs_request(args)
                assert isinstance(parsed, ListRequest)
                request = replace(parsed, detail_reads=cap)
                out, err = io.StringIO(), io.StringIO()
                before = await stats(emu, ca_pem_path)
                code = await run_jobs_command(
                    request, reader=arm, discover=nothing, clock=SystemClock(), out=out, err=err
                )
                reads = (await stats(emu, ca_pem_path))["requests"] - before["requests"]
                runs.append((code, out.getvalue(), err.getvalue(), reads))
        (code, _, _, list_reads), (code2, text, err_text, reads) = runs
        assert code == code2 == EXIT_OK, err_text
        records = [orjson.loads(line) for line in text.splitlines()]
        assert len(records) >= 2
        assert records[0]["error_codes"] is not None
        assert all(r["error_codes"] is None for r in records[1:])
        (line,) = err_text.splitlines()
        assert f"the error codes of {len(records) - 1} more failed jobs were not read" in line
        # The same list pages both times (a new page at most): the difference is the one read.
        assert 1 <= reads - list_reads <= 2, (list_reads, reads)

    async def test_the_table_shows_the_subscription_and_the_error_code(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """SUBSCRIPTION is the subscription id's first 8 characters; ERROR a failed job's code,
        - for a job without any."""
        run = await cli("jobs", "list", "--config", str(config), "--since", "2h")
        assert run.code == EXIT_OK, run.err
        header, *rows = run.out.splitlines()
        names = header.split()
        assert names[-4:] == ["SUBSCRIPTION", "VAULT", "JOB", "ERROR"]
        at = header.index("SUBSCRIPTION")
        world = {j.name: j for v in live_vaults(emu) for j in v.jobs}
        statuses = set()
        for row in rows:
            sub, _, name, error = row[at:].split()
            job = world[name]
            assert sub == job.vault.subscription_id[:8]
            statuses.add(job.status)
            if (
                row.split()[2] == "Failed"
                and job.error
                and job.job_type not in ("MabJob", "DpmJob")
            ):
                assert error == str(job.error.code)
            elif row.split()[2] != "Failed":
                assert error == "-"
        assert FAILED in statuses

    async def test_nothing_matched_is_one_stderr_line_naming_the_filters(
        self, config: Path, cli: Callable[..., Any]
    ) -> None:
        """No job matched: nothing on stdout (an empty array for json), one stderr line with
        the window and every filter; exit 0."""
        for output, printed in (("table", ""), ("jsonl", ""), ("json", "[]\n")):
            run = await cli(
                "jobs", "list", "--config", str(config), "--status", "cancelling",
                "--type", "NoSuchType", "--operation", "restore", "--output", output,
            )  # fmt: skip
            assert run.code == EXIT_OK, run.err
            assert run.out == printed
            (line,) = run.err_lines
            assert line.startswith("backup-monitor jobs list: no jobs matched: none started ")
            assert line.endswith(
                "in the 6 vaults read with --status Cancelling; --operation restore; "
                "--type nosuchtype"
            )

    async def test_subscription_scope_reads_only_that_subscription(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """--subscription lists the vaults of that subscription and nothing else."""
        sub = sorted(emu.world.subscriptions)[1]
        run = await cli(
            "jobs", "list", "--config", str(config), "--subscription", sub, "--output", "jsonl"
        )
        assert run.code == EXIT_OK, run.err
        subs = {orjson.loads(line)["vault"]["subscription_id"] for line in run.out.splitlines()}
        assert subs == {sub}

    async def test_bad_arguments_exit_2_before_connecting(self, cli: Callable[..., Any]) -> None:
        """A malformed vault id or an inverted window is exit 2 with one line; no config needed."""
        run = await cli("jobs", "list", "--vault", "/subscriptions/x/vaults/y")
        assert run.code == EXIT_USAGE
        assert "not a vault resource id (a Recovery Services vault or a Backup vault)" in run.err
        run = await cli("jobs")
        assert run.code == EXIT_USAGE


GUID = "00000000-0000-0000-0000-000000000001"
VAULT_ID = f"/subscriptions/{GUID}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v1"
JOB = "7ddead57-0000-4000-8000-000000000009"


class TestArguments:
    """Every identifier an argument puts into a URL path is checked before anything connects."""

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (
                ["list", "--subscription", "../../x"],
                "--subscription: must be a subscription GUID, got '../../x'",
            ),
            (["list", "--subscription", "abc"], "--subscription: must be a subscription GUID"),
            (["list", "--subscription", GUID, "--subscription", ""], "--subscription: must be a"),
            (
                ["list", "--vault", VAULT_ID.replace("/v1", "/..")],
                "--vault: not a vault resource id (a Recovery Services vault or a Backup "
                "vault): vault name is a dot segment",
            ),
            (
                ["list", "--vault", VAULT_ID.replace(GUID, "../../x")],
                "--vault: not a vault resource id (a Recovery Services vault or a Backup vault)",
            ),
            (
                ["show", VAULT_ID.replace("/v1", "/v?1"), JOB],
                "VAULT_ID: not a vault resource id (a Recovery Services vault or a Backup "
                "vault): vault name holds '?'",
            ),
            (
                ["show", VAULT_ID, "../../../../etc/passwd"],
                f"JOB_ID: a job name, or the resource id of a job in {VAULT_ID}",
            ),
            (
                ["show", VAULT_ID, VAULT_ID.replace("/v1", "/v2") + f"/backupJobs/{JOB}"],
                "JOB_ID: a job name, or the resource id of a job in",
            ),
            (["show", VAULT_ID, f"{VAULT_ID}/backupJobs/a/b"], "JOB_ID: a job name, or the"),
            (["show", VAULT_ID, f"{VAULT_ID}/backupJobs/.."], "JOB_ID: job name is a dot segment"),
            (["show", VAULT_ID, "a?b"], "JOB_ID: job name holds '?' (U+003F)"),
            (["show", VAULT_ID, "a%2F"], "JOB_ID: job name holds '%'"),
            (["show", VAULT_ID, "  "], "JOB_ID: job name is empty"),
            (["wait", VAULT_ID, "evil\\name"], "JOB_ID: job name holds '\\\\'"),
            (["wait", VAULT_ID, "a\u202eb"], "JOB_ID: job name holds '\\u202e' (U+202E)"),
        ],
    )
    def test_bad_identifier_is_a_usage_error_naming_the_argument(
        self, argv: list[str], message: str
    ) -> None:
        """A subscription that is not a GUID, or a vault or job name that is not one safe path
        segment, is a UsageError whose message starts with the argument's name."""
        args = build_parser().parse_args(["jobs", *argv])
        with pytest.raises(UsageError) as info:
            parse_jobs_request(args)
        assert str(info.value).startswith(message.split(":", 1)[0] + ":")
        assert message in str(info.value)

    @pytest.mark.parametrize(
        ("job_arg", "name"),
        [
            (JOB, JOB),
            (f"  {JOB} ", JOB),
            (f"{VAULT_ID}/backupJobs/{JOB}", JOB),
            (f"{VAULT_ID.upper()}/BACKUPJOBS/{JOB}/", JOB),
            ("a;b", "a;b"),
        ],
    )
    def test_a_job_is_a_name_or_a_resource_id_in_the_vault(self, job_arg: str, name: str) -> None:
        """JOB_ID is a job name or, in any casing, the resource id of a job of VAULT_ID."""
        args = build_parser().parse_args(["jobs", "show", VAULT_ID, job_arg])
        request = parse_jobs_request(args)
        assert isinstance(request, ShowRequest)
        assert request.job_name == name

    def test_subscriptions_are_lower_cased(self) -> None:
        """--subscription takes a GUID in any casing and reads it lower-cased."""
        args = build_parser().parse_args(["jobs", "list", "--subscription", GUID.upper()])
        request = parse_jobs_request(args)
        assert isinstance(request, ListRequest)
        assert request.subscriptions == (GUID,)

    async def test_a_path_in_an_argument_exits_2_with_one_line_and_sends_nothing(
        self, emu: Emulator, config: Path, cli: Callable[..., Any], ca_pem_path: str
    ) -> None:
        """Items 8 and 10 of issue 9: `--subscription ../../x` and `jobs show VAULT
        ../../../../etc/passwd` exit 2 with one line (no traceback), and ARM sees no request."""
        vault = live_vaults(emu)[0]
        before = (await stats(emu, ca_pem_path))["requests"]
        run = await cli("jobs", "list", "--config", str(config), "--subscription", "../../x")
        assert (run.code, run.err_lines) == (
            EXIT_USAGE,
            [
                "backup-monitor jobs list: --subscription: "
                "must be a subscription GUID, got '../../x'"
            ],
        )
        run = await cli("jobs", "list", "--config", str(config), "--subscription", "abc")
        assert run.code == EXIT_USAGE
        assert len(run.err_lines) == 1
        run = await cli("jobs", "show", "--config", str(config), vault.id, "../../../../etc/passwd")
        assert run.code == EXIT_USAGE
        assert len(run.err_lines) == 1
        assert run.err_lines[0].startswith("backup-monitor jobs show: JOB_ID: a job name, or ")
        assert run.out == ""
        assert (await stats(emu, ca_pem_path))["requests"] == before


class TestListTimeout:
    async def test_a_list_that_pages_forever_stops_at_the_timeout_with_one_line(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        tmp_path: Path,
        cli: Callable[..., Any],
    ) -> None:
        """A vault paging forever, slowly: exit 13 at --timeout, one line naming it, no output."""
        pagers = {
            "slow": hostile_arm.endless(delay_s=0.25),
            "quick": hostile_arm.listing(
                lambda name: [hostile_arm.job_item(name, "0000000c-0000-4000-8000-000000000000")]
            ),
        }
        async with hostile_arm.running_hostile_arm(pagers, ssl_context=server_ssl_context) as arm:
            config = tmp_path / "monitor.toml"
            config.write_text(
                f'[azure]\narm_endpoint = "{arm.url}/"\ncredential = "static"\n'
                f'static_token = "{hostile_arm.TOKEN}"\nca_bundle = "{ca_pem_path}"\n'
            )
            with anyio.fail_after(60):
                run = await cli(
                    "jobs",
                    "list",
                    "--config",
                    str(config),
                    "--vault",
                    hostile_arm.vault_id("quick"),
                    "--vault",
                    hostile_arm.vault_id("slow"),
                    "--timeout",
                    "2s",
                )
        assert run.code == EXIT_TIMED_OUT, run.err
        assert run.out == ""
        (line,) = run.err_lines
        assert line.startswith("backup-monitor jobs list: timed out after ")
        assert "(--timeout 2s); nothing printed: 1 of 2 vaults not read: slow" in line
        assert arm.requests["slow"] > 1, "it was paging when the timeout passed"
        assert arm.requests["quick"] == 1

    def test_the_timeout_defaults_to_five_minutes_and_must_be_positive(self) -> None:
        """Without --timeout a list has 300 s; --timeout 0 is a usage error naming the option."""
        args = build_parser().parse_args(["jobs", "list"])
        request = parse_jobs_request(args)
        assert isinstance(request, ListRequest)
        assert request.timeout_s == DEFAULT_LIST_TIMEOUT_S == 300
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(["jobs", "list", "--timeout", "0"])
        assert caught.value.code == EXIT_USAGE


class TestShow:
    async def test_text_view_has_errors_tasks_and_property_bag(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """A failed VM job shows its error code, recommendations, tasks and property bag."""
        job = finished_job(emu, FAILED, vm=True)
        assert job.error is not None
        run = await cli("jobs", "show", "--config", str(config), job.vault.id, job.name)
        assert run.code == EXIT_OK, run.err
        assert "Failed  (failed)" in run.out
        assert f", location {job.vault.location})\n" in run.out
        assert f"{job.error.code} {job.error.title}: {job.error.message}" in run.out
        assert f"→ {job.error.recommendations[0]}" in run.out
        assert "\nTasks\n" in run.out
        assert "Transfer data to vault" in run.out
        assert "\nProperties\n" in run.out
        assert "VM Name" in run.out

    async def test_json_is_the_event_job_plus_extended(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """--output json gives the schema's job and vault objects and the extra details."""
        job = finished_job(emu, FAILED, vm=True)
        assert job.error is not None
        run = await cli(
            "jobs", "show", "--config", str(config), job.vault.id, job.name, "--output", "json"
        )
        assert run.code == EXIT_OK, run.err
        record = orjson.loads(run.out)
        jsonschema.validate(record["job"], job_schema())
        jsonschema.validate(record["vault"], vault_schema())
        assert record["vault"]["location"] == job.vault.location
        assert record["vault"]["location"]
        assert record["job"]["errors"][0]["code"] == str(job.error.code)
        assert record["extended"]["errors"][0]["title"] == job.error.title
        assert record["extended"]["arm_properties"]["jobType"] == job.job_type

    async def test_unknown_job_is_not_found(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """A job that does not exist exits 14 with one line: vault, 404, ARM's code."""
        vault = live_vaults(emu)[0]
        run = await cli("jobs", "show", "--config", str(config), vault.id, str(uuid.uuid4()))
        assert run.code == EXIT_NOT_FOUND
        (line,) = run.err_lines
        assert f"vault {vault.name} " in line
        assert "404 BMSUserErrorJobNotFound" in line
        assert "request id " in line


class TestWait:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            ("Completed", EXIT_OK),
            ("CompletedWithWarnings", EXIT_COMPLETED_WITH_WARNINGS),
            ("Failed", EXIT_FAILED),
            ("Cancelled", EXIT_CANCELLED),
        ],
    )
    async def test_each_outcome_has_its_exit_code(
        self, emu: Emulator, config: Path, cli: Callable[..., Any], status: str, code: int
    ) -> None:
        """The exit code says how the job ended; stdout says it in words."""
        job = finished_job(emu, status)
        run = await cli("jobs", "wait", "--config", str(config), job.vault.id, job.name)
        assert run.code == code, run.err
        assert run.out.startswith(f"{status}: job {job.name} ")

    async def test_unknown_job_is_not_found(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """Waiting for a job that does not exist exits 14."""
        vault = live_vaults(emu)[0]
        run = await cli("jobs", "wait", "--config", str(config), vault.id, str(uuid.uuid4()))
        assert run.code == EXIT_NOT_FOUND
        assert "404 BMSUserErrorJobNotFound" in run.err

    @pytest.mark.parametrize("columns", [40, 80, 120])
    async def test_timeout_exits_13_and_shows_progress_on_a_terminal(
        self, emu: Emulator, config: Path, columns: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--timeout 2s on a long job exits 13; a terminal stderr gets a live status line that
        fits COLUMNS less one (never wraps) and whose elapsed time moves at every redraw."""
        job = running_job(emu, left_s=8)
        monkeypatch.setenv("COLUMNS", str(columns))

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        out, err = io.StringIO(), Terminal()
        args = build_parser().parse_args(
            ["jobs", "wait", job.vault.id, job.name, "--timeout", "2s", "--config", str(config)]
        )
        settings = load_settings(config, {})
        clock = SystemClock()
        async with open_arm(settings, clock=clock, rng=random.Random(1)) as arm:

            async def nothing() -> list[Any]:
                return []

            started = clock.monotonic()
            code = await run_jobs_command(
                parse_jobs_request(args),
                reader=arm,
                discover=nothing,
                clock=clock,
                out=out,
                err=err,
            )
            waited = clock.monotonic() - started
        assert code == EXIT_TIMED_OUT
        assert 2.0 <= waited < 6.0
        text = err.getvalue()
        drawn = [d for d in text.split("\r\x1b[K") if d and not d.endswith("\n")]
        assert len(drawn) >= 2, drawn
        for line in drawn:
            assert len(line) <= columns - 1, line
            assert "\n" not in line
            assert line.startswith("InProgress") or line.startswith("job "), line
            assert "InProgress  elapsed " in line
            assert "%" not in line
        elapsed = [line.split("elapsed ", 1)[1].split()[0] for line in drawn]
        assert len(set(elapsed)) >= 2, elapsed
        if columns >= 80:
            assert all(line.startswith(f"job {job.name[:8]}") for line in drawn), drawn
        assert "timed out after" in text

    @pytest.mark.long(seconds=10)
    @pytest.mark.parametrize("header", ["Azure-AsyncOperation", "Location"])
    async def test_operation_url_is_followed_to_its_job_and_its_end(
        self,
        server_ssl_context: ssl.SSLContext,
        tmp_path: Path,
        ca_pem_path: str,
        cli: Callable[..., Any],
        header: str,
    ) -> None:
        """A trigger-backup's operation URL resolves to its job, which is waited to the end."""
        settings = EmulatorSettings(
            world=WorldSettings(seed=4, subscriptions=1, vaults_per_subscription=2, time_scale=4),
            operation_retry_after_s=60,
        )
        async with running_emulator(settings, ssl_context=server_ssl_context) as emu:
            config = write_config(emu, tmp_path / "monitor.toml", ca_pem_path)
            vault = live_vaults(emu)[0]
            item = vault.items[0]
            url = (
                f"{emu.url}{vault.id}/backupFabrics/Azure/protectionContainers/{item.container}"
                f"/protectedItems/{item.name}/backup?{API}"
            )
            context = ssl.create_default_context(cafile=ca_pem_path)
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
                http.post(url, headers={"Authorization": f"Bearer {emu.token}"}) as response,
            ):
                assert response.status == 202
                operation_url = response.headers[header]
            with anyio.fail_after(40):
                run = await cli(
                    "jobs",
                    "wait",
                    "--config",
                    str(config),
                    "--operation-url",
                    operation_url,
                    "--output",
                    "json",
                )
            assert run.code == EXIT_OK, run.err
            (op,) = emu.world.operations.values()
            assert op.job is not None
            record = orjson.loads(run.out)
            assert record["job"]["id"] == op.job.name
            assert record["job"]["status"] == "Completed"
            assert op.job.status == "Completed"

    async def test_foreign_operation_url_is_refused_before_any_request(
        self, emu: Emulator, config: Path, cli: Callable[..., Any]
    ) -> None:
        """An operation URL on another origin exits 4 and the foreign server sees nothing."""
        vault = live_vaults(emu)[0]
        url = f"{emu.foreign_url}{vault.id}/backupOperations/{uuid.uuid4()}?{API}"
        run = await cli("jobs", "wait", "--config", str(config), "--operation-url", url)
        assert run.code == EXIT_API_ERROR
        (line,) = run.err_lines
        assert "refused to send the ARM token" in line
        assert emu.arm.foreign.requests == 0
        assert emu.arm.foreign.tokens_received == 0

    @pytest.mark.long(seconds=40)
    async def test_reads_fewer_than_a_30s_loop_and_returns_soon_after_the_end(
        self,
        server_ssl_context: ssl.SSLContext,
        tmp_path: Path,
        ca_pem_path: str,
        cli: Callable[..., Any],
        record_property: Callable[[str, object], None],
    ) -> None:
        """For a job of D ≥ 30 s, reads < 2 + ⌊D/30⌋ and the wait returns ≤ 5 s after its end."""
        settings = EmulatorSettings(
            world=WorldSettings(seed=8, subscriptions=3, vaults_per_subscription=8)
        )
        async with running_emulator(settings, ssl_context=server_ssl_context) as emu:
            config = write_config(emu, tmp_path / "monitor.toml", ca_pem_path)
            with anyio.fail_after(60):
                job = await fresh_long_vm_job(emu, min_s=30, max_s=42)
            before = await stats(emu, ca_pem_path)
            with anyio.fail_after(job.duration_s + 20):
                run = await cli("jobs", "wait", "--config", str(config), job.vault.id, job.name)
            returned_at = datetime.now(UTC)
            after = await stats(emu, ca_pem_path)
        assert run.code == EXIT_OK, run.err
        reads = after["requests"] - before["requests"]
        bar = 2 + int(job.duration_s // 30)
        assert job.end_at is not None
        late_s = (returned_at - job.end_at).total_seconds()
        measured = f"D={job.duration_s:.1f}s reads={reads} bar={bar} late={late_s:.2f}s"
        record_property("wait_measurement", measured)
        assert reads < bar, measured
        assert 0 <= late_s <= 5, measured


OPERATION_ID = "0000000f-0000-4000-8000-000000000001"
JOB_NAME = "0000000c-0000-4000-8000-000000000001"
ARM_URL = "https://management.azure.com"


def arm_error(kind: type[ArmError], status: int, **extra: Any) -> ArmError:
    """An error as `ArmClient` raises it for `status` (its message names the URL it read)."""
    url = f"{ARM_URL}/read"
    text = f"ARM answered {status} Code{status} to GET {url}: message (request id r{status})"
    if kind is ArmThrottled:
        return ArmThrottled(text, url=url, code=f"Code{status}", **extra)
    return kind(text, url=url, status=status, code=f"Code{status}", **extra)


class ScriptedReader:
    """A `JobReader` whose reads answer in turn from a script (the last answer repeats); an
    exception in the script is raised."""

    def __init__(self, *, operations: Sequence[object] = (), jobs: Sequence[object] = ()) -> None:
        self.scripts = {"operation": list(operations), "job": list(jobs)}
        self.reads = {"operation": 0, "job": 0}

    def _answer(self, read: str) -> Any:
        script = self.scripts[read]
        answer = script[min(self.reads[read], len(script) - 1)]
        self.reads[read] += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]:
        raise AssertionError("jobs wait lists no vaults")

    async def list_jobs(self, vault: VaultRef, start_at: datetime, end_at: datetime) -> list[Any]:
        raise AssertionError("jobs wait lists no jobs")

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        assert (vault.name, job_name) == ("v1", JOB_NAME)
        answer: JobDetails = self._answer("job")
        return answer

    async def get_operation(self, url: str) -> OperationReply:
        answer: OperationReply = self._answer("operation")
        return answer

    async def get_vault(self, vault_id: str) -> VaultRef:
        raise AssertionError("jobs wait reads no vault")


def completed_job() -> JobDetails:
    vault = parse_vault_id(hostile_arm.vault_id("v1"))
    return parse_job_details(hostile_arm.job_item("v1", JOB_NAME), vault)


def operation_succeeded() -> OperationReply:
    payload = {"status": "Succeeded", "properties": {"jobId": JOB_NAME}}
    return OperationReply(
        status=200, payload=payload, retry_after_s=None, location=None, request_id="r200"
    )


async def wait_with(reader: ScriptedReader, clock: FakeClock, *argv: str) -> Run:
    """`jobs wait ARGV…` on `reader` in virtual time; stderr is not a terminal."""
    out, err = io.StringIO(), io.StringIO()
    request = parse_jobs_request(build_parser().parse_args(["jobs", "wait", *argv]))

    async def nothing() -> list[VaultRef]:
        return []

    code = await run_jobs_command(
        request, reader=reader, discover=nothing, clock=clock, out=out, err=err
    )
    return Run(code, out.getvalue(), err.getvalue())


class TestWaitReads:
    """Both reads of `jobs wait`, the operation's and the job's, meet ARM's errors alike."""

    OPERATION = f"{ARM_URL}{hostile_arm.vault_id('v1')}/backupOperations/{OPERATION_ID}?{API}"

    async def test_transient_errors_of_either_read_are_retried_with_backoff(self) -> None:
        """429 waits its Retry-After, 5xx doubles from 2 s per read, and the wait goes on."""
        reader = ScriptedReader(
            operations=[
                arm_error(ArmThrottled, 429, retry_after_s=7.0),
                arm_error(ArmServerError, 503),
                operation_succeeded(),
            ],
            jobs=[arm_error(ArmServerError, 500), completed_job()],
        )
        clock = FakeClock()
        run = await wait_with(reader, clock, "--operation-url", self.OPERATION, "--timeout", "1h")
        assert run.code == EXIT_OK, run.err
        assert run.out.startswith(f"Completed: job {JOB_NAME} ")
        assert clock.sleeps == [7.0, 4.0, 2.0]
        assert [line.rsplit("; ", 1)[1] for line in run.err_lines] == [
            "retrying in 7 s",
            "retrying in 4 s",
            "retrying in 2 s",
        ]
        assert run.err_lines[0].startswith(f"backup-monitor jobs wait: operation {OPERATION_ID} ")
        assert run.err_lines[2].startswith(f"backup-monitor jobs wait: job {JOB_NAME} ")

    async def test_transient_errors_until_the_deadline_time_out(self) -> None:
        """5xx answers until --timeout passes exit 13 after one last read at the deadline."""
        reader = ScriptedReader(operations=[arm_error(ArmServerError, 503)])
        clock = FakeClock()
        run = await wait_with(reader, clock, "--operation-url", self.OPERATION, "--timeout", "10s")
        assert run.code == EXIT_TIMED_OUT
        assert clock.sleeps == [2.0, 4.0, 4.0]
        assert reader.reads["operation"] == 4
        assert run.err_lines[-1].endswith(": timed out after 10s")

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (arm_error(ArmNotFound, 404), EXIT_NOT_FOUND),
            (arm_error(ArmForbidden, 403), EXIT_API_ERROR),
        ],
    )
    @pytest.mark.parametrize("read", ["operation", "job"])
    async def test_a_lasting_error_ends_the_wait_at_once(
        self, read: str, error: ArmError, code: int
    ) -> None:
        """A 404 or a 403 of either read is one stderr line and its exit code, with no retry."""
        if read == "operation":
            reader = ScriptedReader(operations=[error])
            argv = ["--operation-url", self.OPERATION]
        else:
            reader = ScriptedReader(jobs=[error])
            argv = [hostile_arm.vault_id("v1"), JOB_NAME]
        clock = FakeClock()
        run = await wait_with(reader, clock, *argv)
        assert run.code == code
        assert reader.reads[read] == 1
        assert clock.sleeps == []
        (line,) = run.err_lines
        assert line.endswith(
            f"ARM answered {error.status} Code{error.status}: message (request id r{error.status})"
        )
        assert (": not found: " in line) == (code == EXIT_NOT_FOUND)

    async def test_the_job_an_operation_names_may_be_missing_for_30_s(self) -> None:
        """A 404 for the operation's job is read again every 3 s for 30 s, then exits 14."""
        reader = ScriptedReader(
            operations=[operation_succeeded()], jobs=[arm_error(ArmNotFound, 404)]
        )
        clock = FakeClock()
        run = await wait_with(reader, clock, "--operation-url", self.OPERATION)
        assert run.code == EXIT_NOT_FOUND
        assert clock.sleeps == [3.0] * 10
        assert reader.reads["job"] == 11
        (line,) = run.err_lines
        assert f"job {JOB_NAME} in vault v1 " in line
        assert ": not found: " in line


class ShowReader(ScriptedReader):
    """A `JobReader` for `jobs show`: the job answers from the script, the vault read raises
    `vault_error` (or gives the vault in westeurope)."""

    def __init__(self, *, jobs: Sequence[object], vault_error: ArmError | None) -> None:
        super().__init__(jobs=jobs)
        self.vault_error = vault_error
        self.vault_reads = 0

    async def get_vault(self, vault_id: str) -> VaultRef:
        self.vault_reads += 1
        if self.vault_error is not None:
            raise self.vault_error
        return parse_vault_id(vault_id, location="westeurope")


class TestShowVault:
    """`jobs show` reads the vault beside the job, for its location."""

    @pytest.mark.parametrize(
        ("vault_error", "location"),
        [(None, "westeurope"), (arm_error(ArmForbidden, 403), None)],
    )
    async def test_the_vault_read_gives_the_location_and_its_failure_does_not_fail_the_show(
        self, vault_error: ArmError | None, location: str | None
    ) -> None:
        """The location comes from the vault's own read; when that read fails the job is still
        shown (exit 0, nothing on stderr) with the location null."""
        reader = ShowReader(jobs=[completed_job()], vault_error=vault_error)
        args = ["jobs", "show", hostile_arm.vault_id("v1"), JOB_NAME, "--output", "json"]
        request = parse_jobs_request(build_parser().parse_args(args))
        out, err = io.StringIO(), io.StringIO()

        async def nothing() -> list[VaultRef]:
            return []

        code = await run_jobs_command(
            request, reader=reader, discover=nothing, clock=FakeClock(), out=out, err=err
        )
        assert (code, err.getvalue()) == (EXIT_OK, "")
        assert orjson.loads(out.getvalue())["vault"]["location"] == location
        assert (reader.vault_reads, reader.reads["job"]) == (1, 1)


async def fresh_long_vm_job(emu: Emulator, *, min_s: float, max_s: float) -> Job:
    """A VM job (it reports estimatedRemainingDuration) that started ≤ 2 s ago, will run
    `min_s`–`max_s` in all, and will not be cancelled (cancellation ends it before its estimate)."""
    while True:
        now = datetime.now(UTC)
        emu.world.advance(now)
        for vault in live_vaults(emu):
            for job in reversed(vault.jobs[-5:]):
                if (
                    job.job_type.startswith("AzureIaaSVM")
                    and not job.is_terminal
                    and job.outcome != "Cancelled"
                    and min_s <= job.duration_s <= max_s
                    and (now - job.start_at).total_seconds() <= 2
                ):
                    return job
        await anyio.sleep(0.25)


async def stats(emu: Emulator, ca_pem_path: str) -> Any:
    return await emulator_json(emu, ca_pem_path, "stats")


async def emulator_json(emu: Emulator, ca_pem_path: str, what: str) -> Any:
    """`GET /_emulator/{what}` (the ground truth), over TLS."""
    context = ssl.create_default_context(cafile=ca_pem_path)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.get(f"{emu.url}/_emulator/{what}") as response,
    ):
        return await response.json()


def test_render_job_is_the_event_job_object() -> None:
    """render_job gives exactly the `job` object render_event writes (one renderer, two uses)."""
    world = World(
        WorldSettings(seed=3, subscriptions=1, vaults_per_subscription=1),
        datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    )
    wjob = next(j for v in world.vaults.values() for j in v.jobs if j.is_terminal)
    vault = parse_vault_id(wjob.vault.id)  # a job parses only against its own vault
    details = parse_job_details(job_json(wjob, world.now, details=True), vault)
    change = JobStateChanged(
        vault_key=vault.key,
        job=details.job,
        previous_status=JobStatus.IN_PROGRESS,
        observed_at=datetime(2026, 11, 25, 10, 1, tzinfo=UTC),
    )
    event = render_event(
        change, vault=vault, details=details, emitted_at=datetime(2026, 11, 25, 10, 1, tzinfo=UTC)
    )
    assert event["job"] == render_job(
        details.job, details=details, previous_status=JobStatus.IN_PROGRESS
    )


# --------------------------------------------------------------------------------------------
# Backup vaults (Microsoft.DataProtection) beside Recovery Services vaults

BV_SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=21, subscriptions=2, vaults_per_subscription=2, backup_vaults_per_subscription=2
    )
)
BV_STATUS = {"Started": "InProgress", "Succeeded": "Completed"}
"""The emulator's Backup vault status words that the monitor writes canonically."""
CANONICAL = {
    "InProgress",
    "Cancelling",
    "Completed",
    "CompletedWithWarnings",
    "Failed",
    "Cancelled",
}


@pytest.fixture
async def bv_emu(server_ssl_context: ssl.SSLContext) -> AsyncIterator[Emulator]:
    async with running_emulator(BV_SETTINGS, ssl_context=server_ssl_context) as emu:
        yield emu


@pytest.fixture
def bv_config(bv_emu: Emulator, tmp_path: Path, ca_pem_path: str) -> Path:
    return write_config(bv_emu, tmp_path / "monitor.toml", ca_pem_path)


def bv_jobs(emu: Emulator) -> list[BvJob]:
    """Every Backup vault job the emulator holds now (its ground truth)."""
    emu.world.advance(datetime.now(UTC))
    return [j for v in emu.world.backup_vaults.vaults.values() for j in v.jobs]


def bv_finished(emu: Emulator, status: str) -> BvJob:
    """A Backup vault job of the world's history that already ended with `status`."""
    for job in bv_jobs(emu):
        if job.status == status:
            return job
    raise AssertionError(f"no Backup vault job {status} in the world")


def window(hours: float = 3.0) -> tuple[datetime, datetime, list[str]]:
    """A window that ended a moment ago (whole seconds) and its --since/--until arguments."""
    until = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    since = until - timedelta(hours=hours)
    return since, until, ["--since", since.isoformat(), "--until", until.isoformat()]


class TestBackupVaults:
    async def test_kind_backup_vault_lists_exactly_the_backup_vault_jobs(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """--kind backup_vault: every Backup vault job that started in the window, and no
        other; records are the event's job and vault objects, with vault.kind and the
        datasource, statuses in their canonical words."""
        since, until, args = window()
        listed_from = bv_emu.arm.clock.utcnow()  # a job that ended before is listed ended
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--kind", "backup_vault", *args,
            "--output", "jsonl",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        records = [orjson.loads(line) for line in run.out.splitlines()]
        truth = {j.name: j for j in bv_jobs(bv_emu) if since <= j.start_at <= until}
        assert truth, "the world has Backup vault jobs in the window"
        assert {r["job"]["id"] for r in records} == set(truth)
        for record in records:
            jsonschema.validate(record["job"], job_schema())
            jsonschema.validate(record["vault"], vault_schema())
            job, vault = record["job"], record["vault"]
            world = truth[job["id"]]
            assert vault["kind"] == "backup_vault"
            assert vault["id"].lower() == world.vault.key
            assert (job["type"], job["backup_management_type"]) == (
                "AzureBackupJob",
                "AzureBackupVault",
            )
            assert job["datasource_type"] == world.instance.datasource.type
            assert job["datasource_name"] == job["entity"] == world.instance.data_source_name
            assert job["backup_instance"] == world.instance.friendly_name
            assert job["policy_name"] == world.instance.policy
            # The status as the list read it (the job may have moved on since): always in
            # the canonical words, never the examples' Started or Succeeded.
            assert job["status"] in CANONICAL, job["status"]
            if world.is_terminal and world.end_at is not None and world.end_at <= listed_from:
                assert job["status"] == BV_STATUS.get(world.status, world.status)

    async def test_kind_recovery_services_leaves_backup_vaults_out(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """--kind recovery_services lists the Recovery Services jobs only; without --kind both
        kinds are listed."""
        since, until, args = window()
        rs = await cli(
            "jobs", "list", "--config", str(bv_config), "--kind", "recovery_services", *args,
            "--output", "jsonl",
        )  # fmt: skip
        both = await cli("jobs", "list", "--config", str(bv_config), *args, "--output", "jsonl")
        assert rs.code == both.code == EXIT_OK, rs.err + both.err
        rs_kinds = {orjson.loads(line)["vault"]["kind"] for line in rs.out.splitlines()}
        assert rs_kinds == {"recovery_services"}
        both_records = [orjson.loads(line) for line in both.out.splitlines()]
        assert {r["vault"]["kind"] for r in both_records} == {"recovery_services", "backup_vault"}
        truth = {j.name for j in bv_jobs(bv_emu) if since <= j.start_at <= until}
        assert {
            r["job"]["id"] for r in both_records if r["vault"]["kind"] == "backup_vault"
        } == truth

    async def test_kind_restricts_what_is_discovered(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any], ca_pem_path: str
    ) -> None:
        """--kind backup_vault reads no Recovery Services vault's jobs at all (the emulator's
        read log), and every Backup vault's."""
        _, _, args = window(1.0)
        run = await cli("jobs", "list", "--config", str(bv_config), "--kind", "backup_vault", *args)
        assert run.code == EXIT_OK, run.err
        log = await emulator_json(bv_emu, ca_pem_path, "reads")
        read = {row["vault_id"].lower() for row in log["vaults"] if row["served"]}
        assert read == set(bv_emu.world.backup_vaults.vaults)

    async def test_table_says_the_kind_and_the_datasource_type(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """The table's KIND is rs or bv; a Backup vault row's TYPE is its datasource type."""
        _, _, args = window()
        run = await cli("jobs", "list", "--config", str(bv_config), *args)
        assert run.code == EXIT_OK, run.err
        header, *rows = run.out.splitlines()
        assert header.split() == [
            "STARTED", "(UTC)", "STATUS", "DURATION", "OPERATION", "KIND", "TYPE", "ENTITY",
            "SUBSCRIPTION", "VAULT", "JOB", "ERROR",
        ]  # fmt: skip
        by_job = {j.name: j for j in bv_jobs(bv_emu)}
        kinds = set()
        at = {name: header.index(name) for name in ("KIND", "TYPE", "ENTITY", "JOB", "ERROR")}
        for row in rows:
            job_name = row[at["JOB"] : at["ERROR"]].strip()
            kind = row[at["KIND"] : at["TYPE"]].strip()
            kinds.add(kind)
            if job_name in by_job:
                assert kind == "bv"
                type_text = row[at["TYPE"] : at["ENTITY"]].strip()
                assert type_text == by_job[job_name].instance.datasource.type
            else:
                assert kind == "rs"
        assert kinds == {"rs", "bv"}

    async def test_type_matches_a_datasource_type(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """--type takes a Backup vault job's datasource type (any casing)."""
        since, until, args = window()
        in_window = [j for j in bv_jobs(bv_emu) if since <= j.start_at <= until]
        wanted = in_window[0].instance.datasource.type
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--type", wanted.upper(), *args,
            "--output", "jsonl",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        records = [orjson.loads(line) for line in run.out.splitlines()]
        assert {r["job"]["id"] for r in records} == {
            j.name for j in in_window if j.instance.datasource.type == wanted
        }

    async def test_a_vault_of_the_other_kind_is_a_usage_error(
        self, cli: Callable[..., Any]
    ) -> None:
        """--vault of a Recovery Services vault with --kind backup_vault: exit 2, one line."""
        run = await cli("jobs", "list", "--vault", VAULT_ID, "--kind", "backup_vault")
        assert run.code == EXIT_USAGE
        assert "is a Recovery Services vault, but --kind asks for backup_vault only" in run.err
        run = await cli("jobs", "list", "--kind", "rsv")
        assert run.code == EXIT_USAGE

    async def test_subscription_scope_lists_both_kinds(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """--subscription reads the subscription's vaults of both kinds (or --kind's)."""
        sub = sorted(bv_emu.world.subscriptions)[1]
        _, _, args = window()
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--subscription", sub, *args,
            "--output", "jsonl",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        records = [orjson.loads(line) for line in run.out.splitlines()]
        assert {r["vault"]["subscription_id"] for r in records} == {sub}
        assert {r["vault"]["kind"] for r in records} == {"recovery_services", "backup_vault"}

    async def test_vault_scope_takes_a_backup_vault_id(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """--vault with a Backup vault's id lists that vault's jobs of the window."""
        since, until, args = window()
        vault = next(iter(bv_emu.world.backup_vaults.vaults.values()))
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--vault", vault.id, *args,
            "--output", "json",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        records = orjson.loads(run.out)
        assert {r["job"]["id"] for r in records} == {
            j.name for j in vault.jobs if since <= j.start_at <= until
        }

    async def test_show_prints_datasource_instance_policy_errors_and_sub_tasks(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """`jobs show` of a failed Backup vault job: its datasource, backup instance, policy,
        the errorDetails with their recommended action, and the sub-tasks."""
        job = bv_finished(bv_emu, FAILED)
        assert job.error is not None
        code, message, action = job.error
        run = await cli("jobs", "show", "--config", str(bv_config), job.vault.id, job.name)
        assert run.code == EXIT_OK, run.err
        inst = job.instance
        for needed in (
            "AzureBackupJob  (AzureBackupVault)",
            f"Datasource       {inst.data_source_name}  ({inst.datasource.type})",
            f"Datasource id    {inst.data_source_id}",
            f"Backup instance  {inst.friendly_name}",
            f"Policy           {inst.policy}",
            f"{job.vault.name}  (Backup vault, resource group {job.vault.resource_group}",
            "Failed  (failed)",
            f"{code}: {message}",
            f"→ {action}",
            "\nTasks\n",
            "\nProperties\n",
            "PolicyRuleName",
        ):
            assert needed in run.out, needed
        assert "Transfer Data" in run.out or "Restore" in run.out
        json_run = await cli(
            "jobs", "show", "--config", str(bv_config), job.vault.id, job.name, "--output", "json"
        )
        record = orjson.loads(json_run.out)
        jsonschema.validate(record["job"], job_schema())
        jsonschema.validate(record["vault"], vault_schema())
        assert record["vault"]["kind"] == "backup_vault"
        assert record["job"]["errors"][0]["code"] == code
        assert record["job"]["datasource_id"] == inst.data_source_id

    async def test_show_takes_the_job_resource_id_as_arm_spells_it(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """JOB_ID may be the job's resource id with ARM's `Backupvaults` spelling."""
        job = bv_finished(bv_emu, FAILED)
        run = await cli(
            "jobs", "show", "--config", str(bv_config), job.vault.id, bv_job_resource_id(job)
        )
        assert run.code == EXIT_OK, run.err
        assert job.name in run.out

    @pytest.mark.parametrize(
        ("status", "code", "written"),
        [
            ("Succeeded", EXIT_OK, "Completed"),
            ("Completed", EXIT_OK, "Completed"),
            ("Failed", EXIT_FAILED, "Failed"),
        ],
    )
    async def test_wait_ends_with_the_exit_code_of_the_outcome(
        self,
        bv_emu: Emulator,
        bv_config: Path,
        cli: Callable[..., Any],
        status: str,
        code: int,
        written: str,
    ) -> None:
        """`jobs wait` on a Backup vault job that ended: the exit code says how, in either of
        the vocabularies (Succeeded is Completed)."""
        job = bv_finished(bv_emu, status)
        run = await cli("jobs", "wait", "--config", str(bv_config), job.vault.id, job.name)
        assert run.code == code, run.err
        assert run.out.startswith(f"{written}: job {job.name} ")
        assert f"in vault {job.vault.name}" in run.out

    async def test_wait_on_an_unknown_backup_vault_job_is_not_found(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """A job that does not exist in a Backup vault exits 14."""
        vault = next(iter(bv_emu.world.backup_vaults.vaults.values()))
        run = await cli("jobs", "wait", "--config", str(bv_config), vault.id, str(uuid.uuid4()))
        assert run.code == EXIT_NOT_FOUND, run.err

    async def test_subscription_scope_follows_the_configured_kinds(
        self, bv_emu: Emulator, bv_config: Path, cli: Callable[..., Any]
    ) -> None:
        """Without --kind, --subscription reads the kinds `[discovery] vault_kinds` names."""
        with bv_config.open("a") as file:
            file.write('[discovery]\nvault_kinds = ["recovery_services"]\n')
        sub = sorted(bv_emu.world.subscriptions)[0]
        _, _, args = window()
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--subscription", sub, *args,
            "--output", "jsonl",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        kinds = {orjson.loads(line)["vault"]["kind"] for line in run.out.splitlines()}
        assert kinds == {"recovery_services"}
        run = await cli(
            "jobs", "list", "--config", str(bv_config), "--subscription", sub, *args,
            "--kind", "backup_vault", "--output", "jsonl",
        )  # fmt: skip
        assert run.code == EXIT_OK, run.err
        kinds = {orjson.loads(line)["vault"]["kind"] for line in run.out.splitlines()}
        assert kinds == {"backup_vault"}


ERROR_ENTRIES = st.one_of(
    st.fixed_dictionaries({"errorCode": st.integers(0, 10**6)}),
    st.fixed_dictionaries({"errorCode": st.text("ABCxyz019", min_size=1, max_size=8)}),
    st.fixed_dictionaries({"code": st.text("ABCxyz", min_size=1, max_size=8)}),
    st.fixed_dictionaries({"errorString": st.text(max_size=5)}),  # MARS, DPM: no code
    st.fixed_dictionaries({"errorCode": st.booleans() | st.none() | st.just("  ")}),
    st.integers() | st.text(max_size=3) | st.none(),  # not an entry at all
)


@given(entries=st.lists(ERROR_ENTRIES, max_size=6))
def test_listed_error_codes_keep_every_code_in_order(entries: list[Any]) -> None:
    """Every entry's code (a number as its digits) is kept, in order; entries without one, and
    codes that are not a number or a non-empty string, are left out; ERROR shows the first and
    how many more."""
    item = hostile_arm.job_item("v1", JOB_NAME, status="Failed")
    item["properties"]["errorDetails"] = entries
    job = parse_job_details(item, parse_vault_id(hostile_arm.vault_id("v1"))).job
    codes = listed_error_codes(job)
    assert codes is not None
    wanted = [
        str(code)
        for e in entries
        if isinstance(e, dict)
        and not isinstance(code := e.get("errorCode", e.get("code")), bool)
        and (isinstance(code, int) or (isinstance(code, str) and code.strip()))
    ]
    assert list(codes) == wanted
    text = error_text(codes)
    if not codes:
        assert text == "-"
    else:
        assert text.startswith(codes[0])
        assert text.endswith(f"+{len(codes) - 1}" if len(codes) > 1 else codes[0])
    del item["properties"]["errorDetails"]
    unlisted = parse_job_details(item, parse_vault_id(hostile_arm.vault_id("v1"))).job
    assert listed_error_codes(unlisted) is None
    assert error_text(None) == "?"


@given(
    candidates=st.lists(st.text("ab …", max_size=60), min_size=1, max_size=5),
    width=st.integers(1, 200),
)
def test_fit_never_passes_the_last_column(candidates: list[str], width: int) -> None:
    """The progress line is the first variant that fits in width − 1 columns, else the last
    one cut to that with an ellipsis: never wider, so never wrapped."""
    line = fit(candidates, width)
    room = max(width - 1, 1)
    assert len(line) <= room
    fitting = [c for c in candidates if len(c) <= room]
    if fitting:
        assert line == fitting[0]
    else:
        assert candidates[-1].startswith(line.removesuffix("…"))


@given(
    name=st.text("0123456789abcdef-", min_size=36, max_size=36),
    vault=st.text("abc-012", min_size=1, max_size=50),
    elapsed=st.floats(0, 10**6),
    left=st.none() | st.floats(0, 10**6),
    columns=st.integers(30, 300),
)
def test_the_wait_line_keeps_the_status_and_the_elapsed_time(
    name: str, vault: str, elapsed: float, left: float | None, columns: int
) -> None:
    """At any width from 30 columns, the line that is drawn still has the status and the time
    waited, uncut."""
    variants = job_progress(
        name, vault, status="InProgress", elapsed_s=elapsed, left_s=left, next_read_s=3.0
    )
    line = fit(variants, columns)
    assert f"InProgress  elapsed {human_s(elapsed)}" in line
