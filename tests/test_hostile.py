"""A hostile ARM over real sockets: a loopback stub serves names, dates and shapes made to break
the daemon; every valid job is still emitted, every bad item is skipped with its JSON path once
per page read, and the vault stays ok."""

from __future__ import annotations

import ssl
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import anyio
import jsonschema
import orjson
import pytest
from aiohttp import web

from monitor.events import event_schema
from tests.daemon import Daemon

SUB = "5a1e0000-0000-4000-8000-000000000001"
TOKEN = "hostile-stub-token"
RG = "rg-hostile"
_VAULTS_PREFIX = ("subscriptions", SUB, "resourcegroups", RG, "providers")


def vault_id(name: str, *, rg: str = RG) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices"
        f"/vaults/{name}"
    )


MAIN = vault_id("main")
RTL_VAULT = "כספת-גיבוי"  # a right-to-left name: letters, so a valid one
SEMICOLON_VAULT = "a;b"  # ';' is kept: Backup's container names hold it

G_FAILED = "7ddead57-0000-4000-8000-0000000000f1"
G_COMPLETED = "7ddead57-0000-4000-8000-0000000000c1"
G_BIG_ENTITY = "7ddead57-0000-4000-8000-0000000000e1"
G_HUGE_ISO = "7ddead57-0000-4000-8000-0000000000d1"
G_HUGE_TIMESPAN = "7ddead57-0000-4000-8000-0000000000d2"
G_ODD_ENTITY = "7ddead57-0000-4000-8000-0000000000d3"
G_RTL_VAULT = "7ddead57-0000-4000-8000-0000000000a1"
G_LATER = "7ddead57-0000-4000-8000-0000000000b1"
G_DEEP = "7ddead57-0000-4000-8000-0000000000ee"
DEEP = 100_000


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def job(name: object, status: str = "Completed", *, vault: str = MAIN, **props: Any) -> Any:
    """A `backupJobs` item that started ten minutes ago (inside the lookback)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    properties: dict[str, Any] = {
        "jobType": "AzureIaaSVMJob",
        "operation": "Backup",
        "backupManagementType": "AzureIaasVM",
        "entityFriendlyName": "vm-1",
        "status": status,
        "startTime": iso(start),
        "duration": "PT5M",
        "actionsInfo": [],
    }
    if status != "InProgress":
        properties["endTime"] = iso(start + timedelta(minutes=5))
    properties.update(props)
    return {
        "id": f"{vault}/backupJobs/{name}",
        "name": name,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": properties,
    }


def failed_details() -> Any:
    """The details answer of G_FAILED: its error code is what alerting needs."""
    item = job(G_FAILED, "Failed")
    item["properties"]["errorDetails"] = [
        {"errorCode": "UserErrorHostile", "errorString": "boom", "recommendations": ["fix it"]}
    ]
    return item


def page(items: Sequence[object]) -> bytes:
    return orjson.dumps({"value": list(items)})


@dataclass
class StubArm:
    """A loopback ARM: one subscription list, one vault list, a job page per vault name and
    details per job name; it records every path asked for, as decoded segments."""

    subscription_items: list[object]
    vault_items: list[object]
    pages: dict[str, bytes]
    details: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(vault name, lower-cased job name) -> the job's details answer."""
    requests: list[tuple[str, ...]] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _arm_error(401, "InvalidAuthenticationToken")
        segments = tuple(unquote(s) for s in request.rel_url.raw_path.split("/")[1:])
        self.requests.append(segments)
        low = tuple(s.lower() for s in segments)
        if low == ("subscriptions",):
            self.served["subscriptions"] += 1
            return _json(page(self.subscription_items))
        if low == ("subscriptions", SUB, "providers", "microsoft.recoveryservices", "vaults"):
            self.served["vaults"] += 1
            return _json(page(self.vault_items))
        if (
            len(low) in (9, 10)
            and low[:5] == _VAULTS_PREFIX
            and low[5:7] == ("microsoft.recoveryservices", "vaults")
            and low[8] == "backupjobs"
        ):
            vault = segments[7]
            if len(low) == 9 and vault in self.pages:
                self.served[f"jobs:{vault}"] += 1
                return _json(self.pages[vault])
            if len(low) == 10 and (vault, low[9]) in self.details:
                self.served[f"details:{segments[9]}"] += 1
                return _json(orjson.dumps(self.details[vault, low[9]]))
        return _arm_error(404, "ResourceNotFound")

    def vault_names_asked(self) -> set[str]:
        return {s[7] for s in self.requests if len(s) > 8 and s[6].lower() == "vaults"}

    def job_names_asked(self) -> set[str]:
        return {s[9] for s in self.requests if len(s) == 10}


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _arm_error(status: int, code: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": code}})
    return web.Response(status=status, body=body, content_type="application/json")


@asynccontextmanager
async def serving(stub: StubArm, ssl_context: ssl.SSLContext) -> AsyncIterator[str]:
    """Serve `stub` over TLS on a free loopback port; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def write_config(path: Path, url: str, ca_pem_path: str, *, idle_s: float = 2) -> Path:
    path.write_text(
        "\n".join(
            [
                "[azure]",
                f'arm_endpoint = "{url}/"',
                'credential = "static"',
                f'static_token = "{TOKEN}"',
                f'ca_bundle = "{ca_pem_path}"',
                "request_timeout_s = 5",
                "[poll]",
                "active_interval_s = 1",
                f"idle_interval_s = {idle_s}",
                "lookback_s = 3600",
                "[discovery]",
                "interval_s = 300",
                "[state]",
                f'path = "{path.parent / "state.sqlite"}"',
                "[log]",
                'format = "json"',
                "[ops]",
                'listen = "127.0.0.1:0"',
            ]
        )
        + "\n"
    )
    return path


# --------------------------------------------------------------------------------------------
# The matrix


@dataclass
class Matrix:
    """The main vault's page: `valid` jobs (name, item) and `hostile` items (item, JSON path
    after `value[i]`, words of the problem), interleaved in `items`."""

    valid: list[tuple[str, Any]]
    hostile: list[tuple[object, str, str]]
    items: list[object]

    @property
    def valid_names(self) -> set[str]:
        return {name for name, _ in self.valid}


def matrix() -> Matrix:
    """The job matrix, its times relative to now."""
    valid: list[tuple[str, Any]] = [
        (G_FAILED, job(G_FAILED, "Failed")),
        (G_COMPLETED, job(G_COMPLETED)),
        ("גיבוי-יומי", job("גיבוי-יומי")),  # right-to-left letters
        ("نسخ احتياطي", job("نسخ احتياطي", "CompletedWithWarnings")),
        ("a;b", job("a;b", "Cancelled")),
        ("x" * 260, job("x" * 260)),  # the longest name accepted
        (G_BIG_ENTITY, job(G_BIG_ENTITY, entityFriendlyName=BIG_ENTITY)),
        (G_HUGE_ISO, job(G_HUGE_ISO, duration="P99999999999999999999D")),
        (G_HUGE_TIMESPAN, job(G_HUGE_TIMESPAN, "InProgress", duration="99999999.23:59:59")),
        (G_ODD_ENTITY, job(G_ODD_ENTITY, entityFriendlyName=ODD_ENTITY)),
    ]
    hostile: list[tuple[object, str, str]] = [
        (job(".."), "name", "dot segment"),
        (job("."), "name", "dot segment"),
        (job("evil/name"), "name", "holds '/'"),
        (job("a?b"), "name", "holds '?'"),
        (job("a#b"), "name", "holds '#'"),
        (job("a\\b"), "name", "holds '\\\\'"),
        (job("a\nb"), "name", "holds '\\n'"),
        (job("line\u2028sep"), "name", "holds '\\u2028'"),
        (job("a%2Fb"), "name", "holds '%'"),
        (job("rtl\u202eoverride"), "name", "holds '\\u202e'"),
        (job("\uff0e\uff0e"), "name", "normalises (NFKC) to the dot segment"),
        (job("x" * 5000), "name", "5000 characters long"),
        (job(" padded"), "name", "whitespace"),
        (job(7), "name", "missing, empty or not a string"),
        (job("bad-date-1", startTime="2026-02-30T10:00:00Z"), "properties.startTime", "ISO 8601"),
        (job("bad-date-2", startTime="99999-01-01T00:00:00Z"), "properties.startTime", "ISO 8601"),
        (job("bad-date-3", endTime="2026-13-01T00:00:00Z"), "properties.endTime", "ISO 8601"),
        (job("elsewhere", vault=vault_id("other")), "id", "not a job of the vault"),
        (42, "", "expected an object, got int"),
        ("a job", "", "expected an object, got str"),
        (None, "", "expected an object, got NoneType"),
        ([], "", "expected an object, got list"),
        (True, "", "expected an object, got bool"),
    ]
    items: list[object] = []
    for n in range(max(len(valid), len(hostile))):
        items += [valid[n][1]] if n < len(valid) else []
        items += [hostile[n][0]] if n < len(hostile) else []
    return Matrix(valid=valid, hostile=hostile, items=items)


BIG_ENTITY = "vm-" + "é" * 100_000  # 200 KB of UTF-8
ODD_ENTITY = "vm\n\u202e1-mv ;?#/..\\"  # not an identifier: passed through verbatim


def vault_item(resource_id: str) -> Any:
    name = resource_id.rsplit("/", 1)[-1]
    return {
        "id": resource_id,
        "name": name,
        "type": "Microsoft.RecoveryServices/vaults",
        "location": "westeurope",
    }


VALID_VAULTS = ["main", RTL_VAULT, SEMICOLON_VAULT]
HOSTILE_VAULTS: list[tuple[object, str, str]] = [
    (vault_item(vault_id("..")), "id", "vault name is a dot segment"),
    (vault_item(vault_id("a?b")), "id", "vault name holds '?'"),
    (vault_item(vault_id("a#b")), "id", "vault name holds '#'"),
    (vault_item(vault_id("a\\b")), "id", "vault name holds '\\\\'"),
    (vault_item(vault_id("a\nb")), "id", "vault name holds '\\n'"),
    (vault_item(vault_id("\u202emain")), "id", "vault name holds '\\u202e'"),
    (vault_item(vault_id("x" * 5000)), "id", "5000 characters long"),
    (vault_item(vault_id("a/b")), "id", "segments"),
    (vault_item(vault_id("v", rg="..")), "id", "resource group is a dot segment"),
    (5, "", "expected an object"),
]
HOSTILE_SUBSCRIPTIONS: list[tuple[object, str, str]] = [
    ({"subscriptionId": "../../x"}, "subscriptionId", "must be a GUID, got '../../x'"),
    ({"subscriptionId": "abc", "state": "Enabled"}, "subscriptionId", "must be a GUID"),
    ({"id": "/subscriptions/.."}, "id", "must be a GUID"),
    ("nope", "", "expected an object"),
]


def matrix_stub(jobs: Matrix) -> StubArm:
    """One subscription, the vault list and the job pages of the matrix."""
    rtl_job = job(G_RTL_VAULT, vault=vault_id(RTL_VAULT))
    vaults: list[object] = [vault_item(vault_id(VALID_VAULTS[0]))]
    vaults += [item for item, _, _ in HOSTILE_VAULTS]
    vaults += [vault_item(vault_id(name)) for name in VALID_VAULTS[1:]]
    return StubArm(
        subscription_items=[
            {"id": "/subscriptions/x"},  # not a GUID either
            {"subscriptionId": SUB, "state": "Enabled"},
            *(item for item, _, _ in HOSTILE_SUBSCRIPTIONS),
        ],
        vault_items=vaults,
        pages={
            "main": page(jobs.items),
            RTL_VAULT: page([rtl_job]),
            SEMICOLON_VAULT: page([]),
        },
        details={("main", name.lower()): item for name, item in jobs.valid}
        | {("main", G_FAILED): failed_details(), (RTL_VAULT, G_RTL_VAULT): rtl_job},
    )


def expected_paths(
    items: Sequence[object], hostile: Sequence[tuple[object, str, str]]
) -> dict[str, str]:
    """JSON path -> problem words, for each hostile item where it sits in `items`."""
    out: dict[str, str] = {}
    for item, path, words in hostile:
        index = next(i for i, it in enumerate(items) if it is item)
        out[f"value[{index}].{path}" if path else f"value[{index}]"] = words
    return out


async def readiness(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/readyz") as response:
        body: dict[str, Any] = orjson.loads(await response.read())
        body["status"] = response.status
        return body


async def wait_ready(daemon: Daemon, vaults: int, timeout_s: float = 30) -> dict[str, Any]:
    """/readyz once it answers 200 with `vaults` vaults, all ok."""
    base = await daemon.ops_url()
    async with aiohttp.ClientSession() as http:
        with anyio.fail_after(timeout_s):
            while True:
                body = await readiness(http, base)
                if body["status"] == 200 and body["vaults"] == {"ok": vaults}:
                    return body
                assert daemon.process is not None
                assert daemon.process.poll() is None, daemon.read_logs()[-5:]
                await anyio.sleep(0.2)


def rows(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [r for r in daemon.read_logs() if r.get("event") == event]


def assert_schema(events: list[dict[str, Any]]) -> None:
    validator = jsonschema.Draft202012Validator(event_schema())
    for event in events:
        validator.validate(event)


def assert_logged_once_per_read(
    logged: list[dict[str, Any]], expected: dict[str, str], reads: int, **context: str
) -> None:
    """Each expected path was logged exactly once per page read, with its context and problem;
    nothing else was."""
    assert reads >= 1
    assert Counter(r["path"] for r in logged) == dict.fromkeys(expected, reads)
    for row in logged:
        for key, value in context.items():
            assert row[key] == value, row
        assert expected[row["path"]] in row["problem"], row


@pytest.fixture(name="daemon_in")
def _daemon_in(tmp_path: Path) -> Any:
    """Start the daemon on a config; killed at the end if the test did not stop it."""
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.kill_if_running()


async def test_hostile_values_matrix(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_pem_path: str, daemon_in: Any
) -> None:
    """Unicode and right-to-left names, 5,000-character names, `..`, `?`, `#`, `;`, `\\`,
    newlines and `/` in job and vault names, impossible dates, huge durations, a 200 KB entity
    name and non-object items on one page: every valid job is emitted once (schema-valid),
    every bad item is logged once per page read with its vault and JSON path, no request names
    a bad item, and every vault is ok."""
    jobs = matrix()
    stub = matrix_stub(jobs)
    async with serving(stub, server_ssl_context) as url:
        daemon = daemon_in(write_config(tmp_path / "monitor.toml", url, ca_pem_path))
        await wait_ready(daemon, vaults=len(VALID_VAULTS))
        valid = jobs.valid_names | {G_RTL_VAULT}
        await daemon.wait_until(lambda: len(daemon.read_events()) >= len(valid), timeout_s=30)
        assert (await wait_ready(daemon, vaults=len(VALID_VAULTS)))["ok"] is True
        assert await daemon.stop() == 0

    events = daemon.read_events()
    assert_schema(events)
    emitted = Counter(e["job"]["id"] for e in events)
    assert emitted == dict.fromkeys(valid, 1)
    by_id = {e["job"]["id"]: e for e in events}
    assert by_id[G_FAILED]["job"]["errors"][0]["code"] == "UserErrorHostile"
    assert by_id[G_BIG_ENTITY]["job"]["entity"] == BIG_ENTITY
    assert by_id[G_ODD_ENTITY]["job"]["entity"] == ODD_ENTITY
    assert by_id[G_HUGE_ISO]["job"]["duration_s"] == pytest.approx(99999999999999999999 * 86400)
    assert by_id[G_RTL_VAULT]["vault"]["name"] == RTL_VAULT
    assert by_id["a;b"]["job"]["resource_id"] == f"{MAIN}/backupJobs/a;b"

    assert_logged_once_per_read(
        rows(daemon, "arm.job_skipped"),
        expected_paths(jobs.items, jobs.hostile),
        stub.served["jobs:main"],
        vault=MAIN,
    )
    assert_logged_once_per_read(
        rows(daemon, "arm.vault_skipped"),
        expected_paths(stub.vault_items, HOSTILE_VAULTS),
        stub.served["vaults"],
        subscription=SUB,
    )
    subscription_paths = expected_paths(stub.subscription_items, HOSTILE_SUBSCRIPTIONS)
    subscription_paths["value[0].id"] = "must be a GUID"
    assert_logged_once_per_read(
        rows(daemon, "arm.subscription_skipped"), subscription_paths, stub.served["subscriptions"]
    )
    for event in ("poll.failed", "poll.crashed", "details.failed", "discovery.failed"):
        assert rows(daemon, event) == [], event
    # Nothing a bad item named was ever put into a URL; every valid name went in verbatim.
    assert stub.vault_names_asked() == set(VALID_VAULTS)
    terminal = {name for name, item in jobs.valid if item["properties"]["status"] != "InProgress"}
    assert G_FAILED in stub.job_names_asked() <= terminal | {G_RTL_VAULT}


async def test_a_job_named_with_a_slash_does_not_stop_its_vault(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_pem_path: str, daemon_in: Any
) -> None:
    """Issue 9 item 1: a Failed job and a job named `evil/name` on one page; when the second
    ends, the Failed job's event (with its error code) has gone out, the vault stays ok, and a
    job that appears later is emitted too."""
    stub = StubArm(
        subscription_items=[{"subscriptionId": SUB}],
        vault_items=[vault_item(MAIN)],
        pages={"main": page([job(G_FAILED, "Failed"), job("evil/name", "InProgress")])},
        details={("main", G_FAILED): failed_details(), ("main", G_LATER): job(G_LATER)},
    )
    async with serving(stub, server_ssl_context) as url:
        daemon = daemon_in(write_config(tmp_path / "monitor.toml", url, ca_pem_path, idle_s=1))
        await daemon.wait_until(lambda: len(daemon.read_events()) == 1, timeout_s=30)
        stub.pages["main"] = page(
            [job(G_FAILED, "Failed"), job("evil/name", "Completed"), job(G_LATER)]
        )
        await daemon.wait_until(lambda: len(daemon.read_events()) == 2, timeout_s=30)
        reads = stub.served["jobs:main"]
        await daemon.wait_until(lambda: stub.served["jobs:main"] >= reads + 2, timeout_s=30)
        await wait_ready(daemon, vaults=1)
        assert await daemon.stop() == 0

    events = daemon.read_events()
    assert_schema(events)
    assert [(e["job"]["id"], e["job"]["status"]) for e in events] == [
        (G_FAILED, "Failed"),
        (G_LATER, "Completed"),
    ]
    assert events[0]["job"]["errors"][0]["code"] == "UserErrorHostile"
    assert_logged_once_per_read(
        rows(daemon, "arm.job_skipped"),
        {"value[1].name": "job name holds '/' (U+002F)"},
        stub.served["jobs:main"],
        vault=MAIN,
    )
    assert rows(daemon, "poll.crashed") == rows(daemon, "poll.failed") == []
    assert all("evil" not in "/".join(s) for s in stub.requests)
    assert stub.job_names_asked() <= {G_FAILED, G_LATER}


async def test_a_100000_deep_property_bag_does_not_hide_the_page(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_pem_path: str, daemon_in: Any
) -> None:
    """A job whose property bag nests 100,000 deep sits among valid jobs: the valid jobs are
    still emitted and the vault stays ok (the deep one is emitted or skipped with its path)."""
    jobs = matrix()
    jobs.items.append("__DEEP__")
    index = len(jobs.items) - 1
    stub = matrix_stub(jobs)
    deep = job(G_DEEP)
    deep["properties"]["extendedInfo"] = {"propertyBag": "__BAG__"}
    nested = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    deep_item = orjson.dumps(deep).replace(b'"__BAG__"', nested)
    stub.pages["main"] = stub.pages["main"].replace(b'"__DEEP__"', deep_item)
    valid = jobs.valid_names | {G_RTL_VAULT}
    async with serving(stub, server_ssl_context) as url:
        daemon = daemon_in(write_config(tmp_path / "monitor.toml", url, ca_pem_path))

        def settled() -> bool:
            emitted = {e["job"]["id"] for e in daemon.read_events()}
            return valid <= emitted or bool(rows(daemon, "poll.failed"))

        await daemon.wait_until(settled, timeout_s=30)
        assert rows(daemon, "poll.failed") == []
        await wait_ready(daemon, vaults=len(VALID_VAULTS))
        assert await daemon.stop() == 0
    emitted = Counter(e["job"]["id"] for e in daemon.read_events())
    assert valid <= set(emitted)
    assert max(emitted.values()) == 1
    deep_skips = [
        r for r in rows(daemon, "arm.job_skipped") if r["path"].startswith(f"value[{index}]")
    ]
    assert (G_DEEP in emitted) != bool(deep_skips)


async def test_jobs_list_skips_a_listed_vault_named_dot_dot(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    """Issue 9 item 10: `jobs list --subscription` over a vault list holding `..` and other
    unsafe names reads only the safe vaults (no URL holds a bad name), prints their valid jobs,
    logs each bad vault and job with its path, and exits 0."""
    jobs = matrix()
    stub = matrix_stub(jobs)
    async with serving(stub, server_ssl_context) as url:
        config = write_config(tmp_path / "monitor.toml", url, ca_pem_path)
        # The stub serves Recovery Services vaults only (a 404 for the Backup vault list).
        argv = [
            *("jobs", "list", "--config", str(config), "--subscription", SUB),
            *("--kind", "recovery_services", "--output", "jsonl"),
        ]
        with anyio.fail_after(60):
            done = await anyio.run_process([sys.executable, "-m", "monitor", *argv], check=False)
    assert done.returncode == 0, done.stderr.decode()
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    listed = Counter((r["vault"]["name"], r["job"]["id"]) for r in records)
    expected = {("main", name) for name in jobs.valid_names} | {(RTL_VAULT, G_RTL_VAULT)}
    assert listed == dict.fromkeys(expected, 1)
    assert stub.vault_names_asked() == set(VALID_VAULTS)
    logged = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith(b"{")]
    vault_skips = Counter(r["path"] for r in logged if r["event"] == "arm.vault_skipped")
    assert vault_skips == dict.fromkeys(expected_paths(stub.vault_items, HOSTILE_VAULTS), 1)
    job_skips = Counter(r["path"] for r in logged if r["event"] == "arm.job_skipped")
    assert job_skips == dict.fromkeys(expected_paths(jobs.items, jobs.hostile), 1)
