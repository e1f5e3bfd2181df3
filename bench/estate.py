"""The daemon against an emulated estate, judged by the emulator's ground truth, beside its peers.

One emulator process (`backup-monitor emulator --profile estate`, HTTPS with a throwaway CA,
pinned to core 0) serves every party of the run. The subscriptions are split in two halves,
each watched by its own `backup-monitor run` process (pinned to core 1):

- DEFAULT: default poll intervals (15 s active, 60 s idle); the budget does not bind.
- BUDGET-BOUND: active = idle = 1 s with many vaults per subscription, so the read budget (not the
  intervals) decides how often a vault is polled; its terminal-transition lag is compared with
  the round-robin optimum V / 2r (DESIGN §9).

Peers, on the same emulator, in the same run:

- the official `azure-mgmt-recoveryservicesbackup` async client listing the same vault pages as
  our `ArmClient` (with the daemon's metrics observer), both measured in this process with
  process CPU time around the lists only (one shared aiohttp session and SSL context for the
  SDK, one client per subscription reused);
- the FLOOR: a bare aiohttp GET of the same pages through our session (same connector, SSL
  context and keep-alive pool), `orjson.loads`, nothing else; ours / floor is the bar;
- an `az backup job wait`-style poller on the DEFAULT half: every 30 s it lists each vault's
  running jobs, and GETs every running job it knows every 30 s until it is terminal.

Each party uses its own principal (its own token), so their ARM read buckets are separate, as
for separate tools in one tenant. Figures: daemon CPU ms per vault poll (utime+stime from
/proc/<pid>/stat between the daemon's `scheduler.started` log line and the stop, divided by the
polls the daemon counts in its `shutdown.done` line) and peak RSS (VmHWM); reads/s per
subscription against the budget and 429s (`/_emulator/stats`); detection lag of terminal
transitions (event `time` − ground-truth `at`, joined on event_id); events missed, duplicated
and wrong against `/_emulator/transitions`.

FIRST ROUND (part of the full run, not of --quick): a second emulator (`--profile demo`, 20
subscriptions × 100 vaults) and one daemon with default settings and a fresh state. The round
runs from the daemon's `scheduler.started` line to the last read the emulator served a vault's
first poll (`/_emulator/reads`); the daemon's /metrics (`backup_monitor_vaults{state="ok"}`)
only says when to stop waiting. Its minimum: each subscription's reads in that round (discovery
and every vault's first poll) through its own budget from a full bucket, the slowest one.

Run: .venv/bin/python bench/estate.py --quick        (about 4 minutes)
     .venv/bin/python bench/estate.py --quick --client-only  (ours, floor, SDK: ~30 s)
     .venv/bin/python bench/estate.py --first-round  (about 4 minutes)
     .venv/bin/python bench/estate.py [--subscriptions 4 --vaults-per-subscription 60
                                       --duration 240 --faults 0.05] [--scale]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from prometheus_client import CollectorRegistry
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.arm import ArmClient  # noqa: E402
from monitor.arm_http import open_session  # noqa: E402
from monitor.clock import SystemClock  # noqa: E402
from monitor.commands.common import number_arg  # noqa: E402
from monitor.config import AzureSettings, BudgetSettings  # noqa: E402
from monitor.core.budget import BudgetSettings as CoreBudgetSettings  # noqa: E402
from monitor.core.budget import RateBudget  # noqa: E402
from monitor.core.diff import JobSnapshot, JobTable, diff_jobs, event_id  # noqa: E402
from monitor.core.jobs import JobStatus  # noqa: E402
from monitor.core.vaults import VaultRef  # noqa: E402
from monitor.core.wire import build_jobs_filter  # noqa: E402
from monitor.credentials import StaticTokenCredential, TokenCache  # noqa: E402
from monitor.emulator.identity import STATIC_PRINCIPAL  # noqa: E402
from monitor.events import (  # noqa: E402
    EVENT_TYPE,
    encode_events,
    render_event,
)
from monitor.metrics import Metrics  # noqa: E402
from monitor.pacing import BudgetBook, core_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The budget's sustained rate at defaults: read_fraction 0.5 of 25/s, less the 0.2 s burst
# spread over the 10 s window (monitor/core/budget.py).
BUDGET_RATE = CoreBudgetSettings().rate_per_s
BUDGET_SHARE = CoreBudgetSettings().share_per_s
AZ_WAIT_INTERVAL_S = 30.0
# FaultSettings.mixed: every kind but foreign nextLinks, in equal shares.
FAULT_KINDS = ("server_error", "latency", "drop", "truncate", "malformed", "expired_token")


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


# ---------------------------------------------------------------------------- processes


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_hwm_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_env(tree: Path | None) -> dict[str, Any]:
    """`subprocess.Popen` keywords that make `python -m monitor` import `tree`'s package (its
    working directory, first on `PYTHONPATH`); {} for None (this interpreter's)."""
    if tree is None:
        return {}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    return {"cwd": str(tree), "env": env}


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert chain, key)."""
    import trustme

    tmp.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path, chain, key = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca.cert_pem.write_to_path(str(ca_path))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=i > 0)
    cert.private_key_pem.write_to_path(str(key))
    return ca_path, chain, key


@dataclass
class EmulatorProcess:
    process: subprocess.Popen[bytes]
    banner: dict[str, str]
    command: list[str]

    @property
    def url(self) -> str:
        return self.banner["url"]


def start_emulator(
    *,
    subscriptions: int,
    vaults: int,
    time_scale: float,
    seed: int,
    tls: tuple[Path, Path, Path],
    profile: str = "estate",
    extra: Sequence[str] = (),
) -> EmulatorProcess:
    command = [
        "backup-monitor", "emulator", "--port", "0", "--seed", str(seed),
        "--subscriptions", str(subscriptions), "--vaults-per-subscription", str(vaults),
        "--profile", profile, "--time-scale", f"{time_scale:g}", "--page-size", "20",
        "--tls-cert", str(tls[1]), "--tls-key", str(tls[2]), *extra,
    ]  # fmt: skip
    return spawn_emulator(command)


def spawn_emulator(command: list[str]) -> EmulatorProcess:
    """`backup-monitor emulator ...` (`command`) as this interpreter's subprocess, pinned to
    core 0, once it has printed its banner line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", *command[1:]],
        stdout=subprocess.PIPE,
        preexec_fn=lambda: pin(0),
    )
    assert process.stdout is not None
    banner = orjson.loads(process.stdout.readline())
    return EmulatorProcess(process=process, banner=banner, command=command)


def write_config(
    path: Path,
    *,
    url: str,
    token: str,
    ca: Path,
    subscriptions: Sequence[str],
    state: Path,
    events: Path,
    poll: Mapping[str, float | bool] | None = None,
    ops_listen: str | None = None,
    sinks: Sequence[str] = (),
) -> None:
    """A daemon config for the emulator at `url`, with `[poll]` keys as given.

    `poll` None leaves `[poll]`, `[discovery] interval_s` and `request_timeout_s` at their
    defaults (the first round measures those); otherwise the estate's scaled runs set them.
    `ops_listen` None disables the ops server. `sinks`: TOML lines of `[[sinks]]` entries that
    replace `[events] sink` (so `events` is not written to unless an entry names it).
    """
    subs = ", ".join(f'"{s}"' for s in subscriptions)
    lines = [
        "[azure]",
        f'arm_endpoint = "{url}/"',
        'credential = "static"',
        f'static_token = "{token}"',
        f'ca_bundle = "{ca}"',
        *([] if poll is None else ["request_timeout_s = 10"]),
        "[discovery]",
        f"subscriptions = [{subs}]",
        *([] if poll is None else ["interval_s = 600"]),
    ]
    if poll is not None:
        lines.append("[poll]")
        for key, value in poll.items():
            shown = ("true" if value else "false") if isinstance(value, bool) else f"{value:g}"
            lines.append(f"{key} = {shown}")
    lines += [
        "[state]",
        f'path = "{state}"',
        *([] if sinks else ["[events]", f'sink = "{events}"']),
        "[ops]",
        *(["enabled = false"] if ops_listen is None else [f'listen = "{ops_listen}"']),
        "[log]",
        'format = "json"',
        *sinks,
        "",
    ]
    path.write_text("\n".join(lines))


def estate_poll(
    *,
    active_s: float,
    idle_s: float,
    lookback_s: float,
    overlap_s: float = 30.0,
    backfill: bool = True,
) -> dict[str, float | bool]:
    """The `[poll]` keys of a scaled estate run.

    The estate runs `time_scale` times faster than life: the default 300 s overlap would re-list
    hours of scaled history on every poll, hence `overlap_s`.
    """
    return {
        "active_interval_s": active_s,
        "idle_interval_s": idle_s,
        "lookback_s": round(lookback_s),
        "overlap_s": overlap_s,
        "backfill": backfill,
    }


class DaemonProcess:
    """`backup-monitor run` pinned to core 1; CPU and RSS read from /proc.

    `tree` None runs the `monitor` package this interpreter imports; a directory runs that
    checkout's (its working directory and `PYTHONPATH`), e.g. an older revision as a peer.
    """

    def __init__(
        self, name: str, config: Path, events: Path, logs: Path, *, tree: Path | None = None
    ) -> None:
        self.name, self.config, self.events, self.logs = name, config, events, logs
        self.tree = tree
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu_at_start = 0.0
        self.started_at = 0.0
        self.started_wall: datetime | None = None  # the `scheduler.started` line's timestamp
        self.cpu_s = 0.0
        self.rss_mb = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        with self.logs.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=lambda: pin(1),
                **tree_env(self.tree),
            )

    async def wait_started(self, timeout_s: float = 120.0) -> None:
        """Until the daemon logs `scheduler.started`; then the CPU baseline is read."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            started = [r for r in self.read_logs() if r.get("event") == "scheduler.started"]
            if started:
                self.cpu_at_start = cpu_s(self.process.pid)
                self.started_at = time.monotonic()
                self.started_wall = parse_at(str(started[0]["timestamp"]))
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} daemon exited: {self.logs.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} daemon did not start")

    def sample(self) -> tuple[float, float]:
        """(CPU seconds since `scheduler.started`, wall seconds since then)."""
        assert self.process is not None
        return cpu_s(self.process.pid) - self.cpu_at_start, time.monotonic() - self.started_at

    async def stop(self) -> None:
        assert self.process is not None
        self.cpu_s, self.wall_s = self.sample()
        self.rss_mb = rss_hwm_mb(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        process = self.process
        await asyncio.to_thread(process.wait, 30)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def read_logs(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if not self.logs.exists():
            return rows
        for line in self.logs.read_bytes().splitlines():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                rows.append({"event": line.decode(errors="replace")})
        return rows

    def read_events(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [orjson.loads(line) for line in self.events.read_bytes().splitlines() if line]

    def polls(self) -> int:
        done = [r for r in self.read_logs() if r.get("event") == "shutdown.done"]
        return int(done[-1]["polls"]) if done else 0

    def ops_port(self) -> int:
        """The port the ops server bound (`[ops] listen` with port 0), from `ops.listening`."""
        for r in self.read_logs():
            if r.get("event") == "ops.listening":
                return int(r["port"])
        raise RuntimeError(f"{self.name} daemon logged no ops.listening line")


# ---------------------------------------------------------------------------- emulator API


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def mint(
    http: aiohttp.ClientSession, url: str, principal: str, lifetime_s: float = 86400.0
) -> str:
    """A token of `principal` lasting `lifetime_s` (the emulator's world seconds)."""
    async with http.post(
        f"{url}/_emulator/tokens", json={"principal": principal, "lifetime_s": lifetime_s}
    ) as response:
        return str((await response.json())["token"])


async def all_transitions(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    since = 0
    while True:
        page = await get_json(http, f"{url}/_emulator/transitions?since={since}&limit=100000")
        rows += page["transitions"]
        if not page["transitions"]:
            return rows
        since = page["next"]


def parse_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------- judging


@dataclass
class Verdict:
    expected: int = 0
    emitted: int = 0
    missed: int = 0
    duplicates: int = 0
    wrong: int = 0
    lags: list[float] = field(default_factory=list)
    others: Counter[str] = field(default_factory=Counter)  # item and long-running events


def judge(
    events: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    *,
    vaults: set[str],
    lag_from: datetime,
    cutoff: datetime,
    expect_from: datetime | None = None,
) -> Verdict:
    """Score a daemon's events against the world's transitions in its vaults.

    Expected: every terminal transition in `vaults` at or before `cutoff` (the lookback covers
    the whole history). Lag: terminal transitions after `lag_from` (steady state), event `time`
    − ground-truth `at`. Events of other types than job state changes (`[protection]`'s item
    events, `backup_job.long_running`) have no transition to match: they are counted in
    `others`, by type, never as wrong (every event id still counts for the duplicates).
    """
    mine = [t for t in truth if t["vault_id"].lower() in vaults]
    at_of = {event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"])): t for t in mine}
    expected = {
        eid
        for eid, t in at_of.items()
        if t["to"] in TERMINAL
        and parse_at(t["at"]) <= cutoff
        and (expect_from is None or parse_at(t["at"]) >= expect_from)
    }
    emitted = Counter(str(e["event_id"]) for e in events)
    verdict = Verdict(expected=len(expected), emitted=len(events))
    verdict.missed = len(expected - set(emitted))
    verdict.duplicates = sum(n - 1 for n in emitted.values() if n > 1)
    seen: set[str] = set()
    for e in events:
        if e["event"] != EVENT_TYPE:
            verdict.others[str(e["event"])] += 1
            continue
        eid = str(e["event_id"])
        t = at_of.get(eid)
        job = e["job"]
        if t is None or job["status"].lower() != t["to"].lower():
            verdict.wrong += 1
            continue
        if eid in seen or t["to"] not in TERMINAL:
            continue
        seen.add(eid)
        at = parse_at(t["at"])
        if at >= lag_from:
            verdict.lags.append((parse_at(e["time"]) - at).total_seconds())
    return verdict


def backfill_done_at(
    events: list[dict[str, Any]], truth: list[dict[str, Any]], run_start: datetime
) -> datetime:
    """When the last event about a transition made before the daemon started was emitted."""
    before = {
        event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"]))
        for t in truth
        if parse_at(t["at"]) < run_start
    }
    times = [parse_at(e["time"]) for e in events if e["event_id"] in before]
    return max(times, default=run_start)


def lag_summary(lags: list[float]) -> dict[str, float]:
    if not lags:
        return {"n": 0, "mean": float("nan"), "p50": float("nan"), "p95": float("nan")}
    ordered = sorted(lags)
    return {
        "n": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
    }


# ---------------------------------------------------------------------------- peer 1: SDK


class _Token:
    """An azure-core AsyncTokenCredential with one fixed token."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 86400)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _Token:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class NullSink:
    """Encodes events as the file sink would, and drops the bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    async def emit(self, events: Sequence[dict[str, object]]) -> None:
        self.bytes += len(encode_events(events))


UNPACED = BudgetSettings(read_fraction=1.0, reads_per_s=1e6, bucket_size=10_000_000, floor=0)
"""A budget that never binds (the emulator's time scale refills its buckets as fast): the CPU
runs back to back, as the floor's and the SDK's do. Its own bucket holds 200,000 reads and
refills at 980,000 a second (`core.budget`: a fifth of a second's worth, the rest spread over
ten); at 1,000 reads/s it held 200 and paced at 980/s, so a run of more reads than that, back
to back, was paced at ~1 ms a read (a 5,000-read run of `bench/steady_poll.py`'s ours: 1.0 ms
of wall time a read against the floor's 0.3). Paced reads each wake an idle loop, which
costs the same few tenths of a millisecond whoever sends them (`PACE_S=0.04 bench/steady_poll.py`).
The rounds of `client_vs_sdk` are `ROUND_GAP_S` apart instead, so ARM's buckets refill."""


def our_client(
    session: aiohttp.ClientSession,
    azure: AzureSettings,
    token: str,
    *,
    budget: BudgetSettings = UNPACED,
    clock: SystemClock,
    rng: random.Random,
) -> ArmClient:
    """Our ArmClient as `run` builds it (the daemon's metrics observer), over `session`, with
    one static token and its own budget book (`UNPACED` unless told)."""
    return ArmClient(
        session=session,
        tokens=TokenCache(StaticTokenCredential(token), azure.token_scope, clock),
        azure=azure,
        budgets=BudgetBook(budget, clock=clock, rng=rng),
        clock=clock,
        rng=rng,
        observer=Metrics(CollectorRegistry()),
    )


ROUND_GAP_S = 2.0
"""Seconds between two rounds of `client_vs_sdk`: one round reads about two pages per vault,
~50 reads per subscription, which ARM's 25 reads/s refill in two seconds (not CPU time)."""

CLIENT_ROUNDS = 8
"""Measured rounds of each party in `client_vs_sdk`, interleaved (after one warm-up each). A
round is ~0.1 s of CPU a party: with 3, one burst of another process's work moved ours/floor
by 0.3 (1.31-1.67 in three runs of one tree); each round's ratio is reported too."""


async def client_vs_sdk(
    url: str, ca: Path, tokens: Mapping[str, str], subscriptions: list[str]
) -> dict[str, Any]:
    """CPU per page: our ArmClient vs the floor vs the official SDK's async client.

    Same pages, same process, same method (process CPU time around each round only). The
    FLOOR is the least any client can spend on the same GET: a bare `session.get` of the same
    URL through the same session as ours (`open_session`: its connector, SSL context and
    keep-alive pool), `orjson.loads` of the body, the nextLink followed, nothing else. Each
    party is warmed up once (connections, TLS, caches); then `CLIENT_ROUNDS` rounds of
    ours (list), the floor, ours (steady poll) and the SDK are interleaved and summed. Each
    party has its own principal in `tokens` (`bench-ours`, `bench-absorb` for the unmeasured
    poll before each steady round, `bench-floor`, `bench-sdk`), so one
    party's reads never drain another's ARM bucket.
    """
    ours_token, floor_token, sdk_token = (
        tokens["bench-ours"],
        tokens["bench-floor"],
        tokens["bench-sdk"],
    )
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.mgmt.recoveryservicesbackup.aio import RecoveryServicesBackupClient

    clock = SystemClock()
    rng = random.Random(1)
    azure = AzureSettings(
        arm_endpoint=f"{url}/",
        credential="static",
        static_token=ours_token,
        ca_bundle=ca,
    )
    ssl_context = ssl.create_default_context(cafile=str(ca))
    now = datetime.now(UTC)
    # The whole history of the world: most vaults fill one 20-job page, some two.
    start, end = now - timedelta(days=3), now + timedelta(minutes=5)
    flt = build_jobs_filter(start, end)
    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=100)
    async with (
        open_session(azure, ssl_context) as session,
        aiohttp.ClientSession(connector=connector) as shared,
    ):
        arm = our_client(session, azure, ours_token, clock=clock, rng=rng)
        # The steady round's unmeasured poll before it reads as its own principal, so that it
        # never drains the measured one's ARM bucket (60 vaults a subscription: 429s).
        absorber = our_client(session, azure, tokens["bench-absorb"], clock=clock, rng=rng)
        vaults_by_sub = {s: await arm.list_vaults(s) for s in subscriptions}

        # Pages per vault, as the list rounds (all jobs parsed) count them: a steady poll's
        # listing leaves out the ended jobs it knows, so its length does not count its pages.
        pages_of: dict[str, int] = {}

        async def ours_round(mode: str, known: dict[str, JobTable], client: ArmClient = arm) -> Any:
            sink = NullSink()
            counts: dict[str, float] = {"pages": 0, "jobs": 0, "events": 0}

            async def one_sub(vaults: list[VaultRef]) -> None:
                for vault in vaults:
                    if mode == "list":
                        jobs = await client.list_jobs(vault, start, end)
                        pages_of[vault.key] = max(1, -(-len(jobs) // 20))
                        counts["jobs"] += len(jobs)
                        counts["pages"] += pages_of[vault.key]
                        continue
                    # As the daemon's poll step: what it knows is a JobTable, and the listing
                    # leaves out the ended jobs it gives with the status listed.
                    before = known.get(vault.key) or JobTable()
                    jobs = await client.list_jobs(vault, start, end, known=before.ended_status)
                    counts["jobs"] += len(jobs)
                    counts["pages"] += pages_of[vault.key]
                    observed = clock.utcnow()
                    changes = diff_jobs(before, jobs, observed)
                    events = [
                        render_event(c, vault=vault, details=None, emitted_at=observed)
                        for c in changes
                    ]
                    if events:
                        await sink.emit(events)
                    counts["events"] += len(events)
                    if changes:
                        known[vault.key] = before.replaced(JobSnapshot.of(c.job) for c in changes)

            cpu0 = time.process_time()
            await asyncio.gather(*(one_sub(v) for v in vaults_by_sub.values()))
            counts["cpu_s"] = time.process_time() - cpu0
            return counts

        floor_headers = {"Authorization": f"Bearer {floor_token}"}
        query = quote(flt, safe="")
        api = f"api-version={azure.api_version}"

        async def floor_round() -> dict[str, float]:
            counts = {"pages": 0, "jobs": 0, "errors": 0}

            async def one_sub(vaults: list[VaultRef]) -> None:
                for vault in vaults:
                    link: str | None = f"{url}{vault.id}/backupJobs?{api}&$filter={query}"
                    while link:
                        async with session.get(
                            URL(link, encoded=True), headers=floor_headers
                        ) as response:
                            status, body = response.status, await response.read()
                        if status != 200:
                            counts["errors"] += 1
                            break
                        page = orjson.loads(body)
                        counts["pages"] += 1
                        counts["jobs"] += len(page["value"])
                        link = page.get("nextLink")

            cpu0 = time.process_time()
            await asyncio.gather(*(one_sub(v) for v in vaults_by_sub.values()))
            out: dict[str, float] = dict(counts)
            out["cpu_s"] = time.process_time() - cpu0
            return out

        transport = AioHttpTransport(session=shared, session_owner=False)
        credential = _Token(sdk_token)
        clients = {
            s: RecoveryServicesBackupClient(
                credential,
                s,
                base_url=url,
                transport=transport,
            )
            for s in subscriptions
        }

        async def sdk_round() -> dict[str, float]:
            counts = {"pages": 0, "jobs": 0}

            async def one_sub(sub: str) -> None:
                client = clients[sub]
                for vault in vaults_by_sub[sub]:
                    paged = client.backup_jobs.list(
                        vault_name=vault.name, resource_group_name=vault.resource_group, filter=flt
                    )
                    async for page in paged.by_page():
                        counts["pages"] += 1
                        async for job in page:
                            counts["jobs"] += 1
                            read_fields(job)

            cpu0 = time.process_time()
            await asyncio.gather(*(one_sub(s) for s in subscriptions))
            out: dict[str, float] = dict(counts)
            out["cpu_s"] = time.process_time() - cpu0
            return out

        async def gap() -> None:
            await asyncio.sleep(ROUND_GAP_S)

        known: dict[str, JobTable] = {}
        # Warm-ups: connections, TLS, caches.
        await ours_round("list", {})
        await gap()
        await floor_round()
        await sdk_round()
        await gap()
        ours_cold = await ours_round("poll", known)  # nothing known: every job is rendered
        await gap()
        rounds: dict[str, list[dict[str, float]]] = {
            "ours_list": [],
            "floor": [],
            "ours_steady": [],
            "sdk": [],
        }
        for _ in range(CLIENT_ROUNDS):
            rounds["ours_list"].append(await ours_round("list", {}))
            await gap()
            rounds["floor"].append(await floor_round())
            await gap()
            # The steady poll: what changed since the last round (at time scale 300, its 8 s
            # are 40 world minutes: ~0.7 changed jobs a page) is absorbed by one poll of every
            # vault first, unmeasured; the measured one right after finds what changed in
            # between, as nearly every poll of the daemon does (0.018 events a poll at the
            # scale point).
            await ours_round("poll", known, absorber)
            rounds["ours_steady"].append(await ours_round("poll", known))
            await gap()
            rounds["sdk"].append(await sdk_round())
            await gap()
        for client in clients.values():
            await client.close()

    def summed(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: sum(r[k] for r in rows) for k in rows[0]}

    ours_list, floor, ours_steady, sdk = (summed(rounds[k]) for k in rounds)
    parse = await parse_only(url, ssl_context, ours_token, vaults_by_sub, flt)

    def per_page_ms(row: dict[str, float]) -> float:
        return 1000 * row["cpu_s"] / max(1, row["pages"])

    result = {
        "vaults": sum(len(v) for v in vaults_by_sub.values()),
        "rounds": CLIENT_ROUNDS,
        "ours_list": ours_list,
        "ours_poll_cold": ours_cold,
        "ours_poll_steady": ours_steady,
        "floor": floor,
        "sdk": sdk,
        "ours_cpu_ms_per_page": per_page_ms(ours_list),
        "ours_cpu_ms_per_poll_cold": per_page_ms(ours_cold),
        "ours_cpu_ms_per_poll_steady": per_page_ms(ours_steady),
        "floor_cpu_ms_per_page": per_page_ms(floor),
        "sdk_cpu_ms_per_page": per_page_ms(sdk),
        "jobs_per_page": ours_list["jobs"] / max(1, ours_list["pages"]),
        "steady_events_per_page": ours_steady["events"] / max(1, ours_steady["pages"]),
        "parse_only": parse,
    }
    result["cpu_ratio_vs_sdk"] = result["sdk_cpu_ms_per_page"] / result["ours_cpu_ms_per_page"]
    result["cpu_ratio_vs_sdk_full_poll"] = (
        result["sdk_cpu_ms_per_page"] / result["ours_cpu_ms_per_poll_cold"]
    )
    # The bar: our steady poll (request, parse, diff, nothing to render) over the floor.
    result["cpu_ratio_vs_floor"] = (
        result["ours_cpu_ms_per_poll_steady"] / result["floor_cpu_ms_per_page"]
    )
    result["cpu_ratio_vs_floor_list"] = (
        result["ours_cpu_ms_per_page"] / result["floor_cpu_ms_per_page"]
    )
    result["cpu_ms_per_page_rounds"] = {
        party: [round(per_page_ms(row), 4) for row in rows] for party, rows in rounds.items()
    }
    # How much the machine moved it: each round's steady poll over the floor round next to it.
    result["cpu_ratio_vs_floor_rounds"] = sorted(
        round(per_page_ms(o) / per_page_ms(f), 3)
        for o, f in zip(rounds["ours_steady"], rounds["floor"], strict=True)
    )
    return result


def print_client_line(s: Mapping[str, Any]) -> None:
    """One line of `client_vs_sdk`'s figures, printed as soon as they are measured."""
    print(
        f"client vs floor vs SDK (ms/page): ours {s['ours_cpu_ms_per_page']:.3f} list, "
        f"{s['ours_cpu_ms_per_poll_steady']:.3f} steady poll "
        f"({s['steady_events_per_page']:.3f} events a page); floor "
        f"{s['floor_cpu_ms_per_page']:.3f}; SDK {s['sdk_cpu_ms_per_page']:.3f}; "
        f"ours/floor {s['cpu_ratio_vs_floor']:.2f}× (list {s['cpu_ratio_vs_floor_list']:.2f}×; "
        f"by round {', '.join(f'{r:.2f}' for r in s['cpu_ratio_vs_floor_rounds'])}), "
        f"SDK/ours {s['cpu_ratio_vs_sdk']:.2f}×"
    )


async def client_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Only `client_vs_sdk`, over the estate emulator `args` describe (`--client-only`)."""
    emu, ca = start_estate(args, tmp)
    try:
        ssl_context = ssl.create_default_context(cafile=str(ca))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            tokens = {
                p: await mint(http, emu.url, p)
                for p in ("bench-ours", "bench-absorb", "bench-floor", "bench-sdk")
            }
        result = await client_vs_sdk(emu.url, ca, tokens, subs)
    finally:
        emu.process.terminate()
        emu.process.wait(timeout=20)
    print_client_line(result)
    return result


def read_fields(job: Any) -> None:
    """Read what a monitor needs of one SDK job (the SDK's models deserialize on access)."""
    p = job.properties
    _ = (job.id, job.name, p.job_type, p.status, p.operation, p.entity_friendly_name)
    _ = (p.start_time, p.end_time, p.backup_management_type, p.activity_id)
    _ = getattr(p, "duration", None)


async def parse_only(
    url: str,
    ssl_context: ssl.SSLContext,
    token: str,
    vaults_by_sub: dict[str, list[VaultRef]],
    flt: str,
    rounds: int = 20,
) -> dict[str, float]:
    """CPU per page of decoding and modelling the same page bytes, without any I/O.

    Ours: orjson + `parse_jobs_page`. The SDK: json.loads (as azure-core's `response.json()`)
    + its `_deserialize(List[JobResource], value)` + reading the fields a monitor needs.
    """
    import json
    from typing import List  # noqa: UP035 (the SDK's own deserializer wants typing.List)

    from azure.mgmt.recoveryservicesbackup import models as sdk_models
    from azure.mgmt.recoveryservicesbackup._utils.model_base import _deserialize

    from monitor.core.jobs import parse_jobs_page

    headers = {"Authorization": f"Bearer {token}"}
    bodies: list[tuple[VaultRef, bytes]] = []
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        for vaults in vaults_by_sub.values():
            for vault in vaults[:10]:
                query = quote(flt, safe="")
                link = f"{url}{vault.id}/backupJobs?api-version=2025-08-01&$filter={query}"
                async with http.get(URL(link, encoded=True)) as response:
                    if response.status == 200:
                        bodies.append((vault, await response.read()))
                await asyncio.sleep(0.1)
    cpu0 = time.process_time()
    for _ in range(rounds):
        for vault, body in bodies:
            parse_jobs_page(orjson.loads(body), vault)
    ours = time.process_time() - cpu0
    cpu0 = time.process_time()
    for _ in range(rounds):
        for _vault, body in bodies:
            for job in _deserialize(List[sdk_models.JobResource], json.loads(body)["value"]):  # noqa: UP006
                read_fields(job)
    sdk = time.process_time() - cpu0
    pages = rounds * max(1, len(bodies))
    return {
        "pages": pages,
        "ours_ms_per_page": 1000 * ours / pages,
        "sdk_ms_per_page": 1000 * sdk / pages,
        "ratio": sdk / ours if ours > 0 else float("nan"),
    }


# ---------------------------------------------------------------------------- peer 2: az wait


@dataclass
class AzWaitPeer:
    """`az backup job wait` on every running job: GET it every 30 s until terminal.

    Running jobs are found by listing each vault's InProgress jobs every 30 s (one read per
    vault); a job that starts and ends between two lists is never seen.
    """

    url: str
    token: str
    vaults: list[str]
    reads: int = 0
    errors: int = 0
    detected: dict[str, float] = field(default_factory=dict)  # event id → lag-free time seen
    seen_at: dict[str, datetime] = field(default_factory=dict)

    async def run(self, seconds: float, ssl_context: ssl.SSLContext) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        api = "api-version=2025-08-01"
        running: dict[tuple[str, str], float] = {}  # (vault, job) → next GET (monotonic)
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(ssl=ssl_context, limit=32)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

            async def get(url: str) -> Any:
                self.reads += 1
                try:
                    async with http.get(URL(url, encoded=True)) as response:
                        if response.status != 200:
                            self.errors += 1
                            return None
                        return await response.json()
                except (aiohttp.ClientError, TimeoutError):
                    self.errors += 1
                    return None

            async def lister() -> None:
                spread = AZ_WAIT_INTERVAL_S / max(1, len(self.vaults))
                while time.monotonic() < deadline:
                    for vault in self.vaults:
                        now = datetime.now(UTC)
                        flt = build_jobs_filter(now - timedelta(days=3), now + timedelta(minutes=5))
                        query = quote(f"{flt} and status eq 'InProgress'", safe="")
                        body = await get(f"{self.url}{vault}/backupJobs?{api}&$filter={query}")
                        for job in (body or {}).get("value", []):
                            running.setdefault((vault, job["name"]), time.monotonic())
                        await asyncio.sleep(spread)

            async def waiter() -> None:
                while time.monotonic() < deadline:
                    now = time.monotonic()
                    due = [k for k, at in running.items() if at <= now]
                    for vault, job in due:
                        body = await get(f"{self.url}{vault}/backupJobs/{job}?{api}")
                        if body is None:
                            running[(vault, job)] = time.monotonic() + AZ_WAIT_INTERVAL_S
                            continue
                        status = body["properties"]["status"]
                        if status in TERMINAL:
                            del running[(vault, job)]
                            eid = event_id(vault, job, JobStatus.of(status))
                            self.seen_at[eid] = datetime.now(UTC)
                        else:
                            running[(vault, job)] = time.monotonic() + AZ_WAIT_INTERVAL_S
                    await asyncio.sleep(0.2)

            await asyncio.gather(lister(), waiter())


# ---------------------------------------------------------------------------- the run


@dataclass
class Half:
    name: str
    subscriptions: list[str]
    vaults: list[str]
    daemon: DaemonProcess
    active_s: float
    idle_s: float


def start_estate(args: argparse.Namespace, tmp: Path) -> tuple[EmulatorProcess, Path]:
    """The estate emulator `args` describe (`add_world_arguments`, and `--subscriptions`),
    HTTPS with a throwaway CA in `tmp`: the process and the CA's file."""
    tls = make_tls(tmp)
    emu = start_emulator(
        subscriptions=args.subscriptions,
        vaults=args.vaults_per_subscription,
        time_scale=args.time_scale,
        seed=args.seed,
        tls=tls,
    )
    return emu, tls[0]


async def estate_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    emu, ca = start_estate(args, tmp)
    ssl_context = ssl.create_default_context(cafile=str(ca))
    halves: list[Half] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            vaults_of = {s["id"]: [v["id"] for v in s["vaults"]] for s in world["subscriptions"]}
            jobs_now = sum(v["jobs"] for s in world["subscriptions"] for v in s["vaults"])
            tokens = {
                p: await mint(http, emu.url, p)
                for p in ("bench-ours", "bench-absorb", "bench-floor", "bench-sdk", "az")
            }
            history_s = 86400 / args.time_scale
            lookback_s = max(3600.0, 3 * history_s + 2 * args.duration)
            split = max(1, len(subs) // 2)
            for name, group, active_s, idle_s in (
                ("default", subs[:split], 15.0, 60.0),
                ("budget-bound", subs[split:], 1.0, 1.0),
            ):
                d = tmp / name
                d.mkdir()
                write_config(
                    d / "monitor.toml",
                    url=emu.url,
                    token=emu.banner["token"],
                    ca=ca,
                    subscriptions=group,
                    state=d / "state.sqlite",
                    events=d / "events.jsonl",
                    poll=estate_poll(
                        active_s=active_s,
                        idle_s=idle_s,
                        lookback_s=lookback_s,
                        # Both halves measure steady polling: the history is recorded silently
                        # (the first start's backfill is judged by tests/reliability and e2e).
                        backfill=False,
                    ),
                )
                daemon = DaemonProcess(
                    name, d / "monitor.toml", d / "events.jsonl", d / "stderr.log"
                )
                vaults = [v.lower() for s in group for v in vaults_of[s]]
                halves.append(Half(name, group, vaults, daemon, active_s, idle_s))

            print(f"emulator up: {len(subs)} subscriptions, {len(vaults_of[subs[0]])} vaults each")
            sdk = await client_vs_sdk(emu.url, ca, tokens, subs)
            print_client_line(sdk)
            if args.faults > 0:
                async with http.put(
                    f"{emu.url}/_emulator/faults",
                    json={
                        **dict.fromkeys(FAULT_KINDS, args.faults / len(FAULT_KINDS)),
                        "latency_s": 0.5,
                    },
                ) as r:
                    r.raise_for_status()
            await http.post(f"{emu.url}/_emulator/stats/reset")
            for half in halves:
                half.daemon.start()
            for half in halves:
                await half.daemon.wait_started()
            run_start = datetime.now(UTC)
            print(f"daemons started; running {args.duration:.0f} s with the az-wait peer")
            peer = AzWaitPeer(emu.url, tokens["az"], list(vaults_of[subs[0]]))
            samples: list[tuple[datetime, dict[str, Any], int]] = []

            async def sample_stats() -> None:
                # Every 5 s: the emulator's counters and the peer's reads, to cut windows later.
                deadline = time.monotonic() + args.duration
                while time.monotonic() < deadline:
                    got = await get_json(http, f"{emu.url}/_emulator/stats")
                    samples.append((datetime.now(UTC), got, peer.reads))
                    await asyncio.sleep(5.0)

            await asyncio.gather(peer.run(args.duration, ssl_context), sample_stats())
            stats = await get_json(http, f"{emu.url}/_emulator/stats")
            for half in halves:
                await half.daemon.stop()
            stopped = datetime.now(UTC)
            truth = await all_transitions(http, emu.url)
            if args.keep:
                (tmp / "transitions.json").write_bytes(orjson.dumps(truth))
            faults = await get_json(http, f"{emu.url}/_emulator/faults")
    finally:
        for half in halves:
            half.daemon.kill_if_running()
        emu.process.terminate()
        emu.process.wait(timeout=20)

    report: dict[str, Any] = {
        "emulator_command": shlex.join(emu.command),
        "time_scale": args.time_scale,
        "jobs_in_world_at_start": jobs_now,
        "client_vs_sdk": sdk,
        "faults_injected": faults["injected"],
    }
    principal = STATIC_PRINCIPAL
    by_principal = {(r["scope"], r["principal"]): r for r in stats["by_principal"]}
    for half in halves:
        daemon = half.daemon
        polls = daemon.polls()
        v_per_sub = len(half.vaults) / len(half.subscriptions)
        rows = [by_principal.get((s, principal), {}) for s in half.subscriptions]
        requests = sum(int(r.get("requests", 0)) for r in rows)
        elapsed = daemon.wall_s
        reads_per_poll = requests / max(1, polls)
        # A transition is due once every vault has had time for a poll after it.
        round_s = v_per_sub * reads_per_poll / BUDGET_RATE
        margin = 5.0 + max(2 * round_s, half.idle_s if half.name == "default" else 0.0)
        events = daemon.read_events()
        backfill_end = backfill_done_at(events, truth, run_start)
        # Steady state: after the first round of polls and after the backfill's detail reads.
        # First polls are spread over the first interval (idle vaults: the idle interval);
        # without backfill a transition before a vault's first poll is recorded silently.
        first_round_s = half.idle_s if half.name == "default" else 2 * round_s
        lag_from = max(run_start + timedelta(seconds=first_round_s), backfill_end)
        lag_from += timedelta(seconds=5)
        verdict = judge(
            events,
            truth,
            vaults=set(half.vaults),
            lag_from=lag_from,
            # Without backfill, transitions before a vault's first poll are not expected.
            expect_from=run_start + timedelta(seconds=first_round_s + 5),
            cutoff=stopped - timedelta(seconds=margin),
        )
        rate_measured = requests / len(half.subscriptions) / max(1.0, elapsed)
        report[half.name] = {
            "subscriptions": len(half.subscriptions),
            "vaults_per_subscription": v_per_sub,
            "active_interval_s": half.active_s,
            "idle_interval_s": half.idle_s,
            "seconds": elapsed,
            "polls": polls,
            "daemon_cpu_s": daemon.cpu_s,
            "cpu_ms_per_poll": 1000 * daemon.cpu_s / max(1, polls),
            "cpu_percent_of_core": 100 * daemon.cpu_s / max(1e-9, elapsed),
            "rss_mb": daemon.rss_mb,
            "requests": requests,
            "reads_per_poll": reads_per_poll,
            "reads_per_s_per_subscription": rate_measured,
            "peak_reads_per_s_per_subscription": max(
                float(r.get("peak_per_s_10s", 0.0)) for r in rows
            ),
            "peak_reads_per_s_1s": max(float(r.get("peak_per_s_1s", 0.0)) for r in rows),
            "throttled_429": sum(int(r.get("throttled_429", 0)) for r in rows),
            "expected_terminal": verdict.expected,
            "events": verdict.emitted,
            "missed": verdict.missed,
            "duplicates": verdict.duplicates,
            "wrong": verdict.wrong,
            "other_events": dict(verdict.others),
            "lag": lag_summary(verdict.lags),
            "lag_measured_after_start_s": (lag_from - run_start).total_seconds(),
            "backfill_done_after_start_s": (backfill_end - run_start).total_seconds(),
            # Round robin over V vaults at r polls/s: a change waits V/(2r) on average.
            "lag_optimum_s": v_per_sub / (2 * BUDGET_RATE),
            "lag_optimum_measured_reads_s": v_per_sub * reads_per_poll / (2 * BUDGET_RATE),
            "lag_optimum_measured_rate_s": v_per_sub / (2 * rate_measured / reads_per_poll)
            if rate_measured > 0
            else float("nan"),
        }

    # The az-wait peer watched the default half's first subscription. Both are compared over a
    # window after the daemon's backfill (its first polls read every job of the lookback).
    default = halves[0]
    peer_vaults = {v.lower() for v in vaults_of[subs[0]]}
    truth_by_id = {
        event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"])): t
        for t in truth
        if t["vault_id"].lower() in peer_vaults
    }
    ours_all = default.daemon.read_events()
    backfilled = [
        parse_at(e["time"])
        for e in ours_all
        if e["event_id"] in truth_by_id and parse_at(truth_by_id[e["event_id"]]["at"]) < run_start
    ]
    backfill_end = max(backfilled, default=run_start)
    earliest = max(run_start + timedelta(seconds=AZ_WAIT_INTERVAL_S + 5), backfill_end)
    latest = stopped - timedelta(seconds=AZ_WAIT_INTERVAL_S + 5)
    usable = [x for x in samples if earliest <= x[0] <= latest]
    peer_report: dict[str, Any] = {"subscription": subs[0], "vaults": len(peer_vaults)}
    if len(usable) >= 2:
        (t0, s0, p0), (t1, s1, p1) = usable[0], usable[-1]

        def ours_reads(stats_row: dict[str, Any]) -> int:
            rows = {(r["scope"], r["principal"]): r for r in stats_row["by_principal"]}
            return int(rows.get((subs[0], principal), {}).get("requests", 0))

        in_window = {
            eid
            for eid, t in truth_by_id.items()
            if t["to"] in TERMINAL and t0 <= parse_at(t["at"]) <= t1
        }
        peer_lags = [
            (peer.seen_at[eid] - parse_at(truth_by_id[eid]["at"])).total_seconds()
            for eid in in_window
            if eid in peer.seen_at
        ]
        ours_events = {str(e["event_id"]): e for e in ours_all if e["event_id"] in in_window}
        ours_lags = [
            (parse_at(e["time"]) - parse_at(truth_by_id[eid]["at"])).total_seconds()
            for eid, e in ours_events.items()
        ]
        reads_ours, reads_peer = ours_reads(s1) - ours_reads(s0), p1 - p0
        peer_report.update(
            window_s=(t1 - t0).total_seconds(),
            window_starts_after_start_s=(t0 - run_start).total_seconds(),
            terminal_transitions=len(in_window),
            peer_detected=len(peer_lags),
            peer_reads=reads_peer,
            peer_errors=peer.errors,
            peer_reads_per_detected=reads_peer / max(1, len(peer_lags)),
            peer_lag=lag_summary(peer_lags),
            ours_detected=len(ours_events),
            ours_reads=reads_ours,
            ours_reads_per_detected=reads_ours / max(1, len(ours_events)),
            ours_lag=lag_summary(ours_lags),
            note="reads made inside the window; terminal transitions whose `at` lies in it",
        )
    else:
        peer_report["note"] = "run too short: no window after the backfill; use a longer duration"
    report["az_wait_peer"] = peer_report
    return report


# ---------------------------------------------------------------------------- first round

FIRST_ROUND_BAR = 1.5
"""The first round may take at most this many times the minimum its reads allow (issue 9)."""
METRICS_EVERY_S = 0.5


def budget_figures() -> tuple[float, float]:
    """(bucket capacity in reads, sustained reads/s) of one subscription's budget at defaults.

    Built exactly as the daemon builds it (`[budget]` defaults through `pacing.core_settings`):
    the bucket starts full at its first read, every read waits for a whole token (no debt).
    """
    budget = RateBudget(core_settings(BudgetSettings()))
    return budget.capacity, budget.rate_per_s


def minimum_s(reads: int, capacity: float, rate_per_s: float) -> float:
    """The shortest time `reads` reads can take from a full bucket: the n-th read waits until
    `capacity + rate·t − (n − 1) ≥ 1`, so the last one goes at `(reads − capacity) / rate`."""
    return max(0.0, reads - capacity) / rate_per_s


async def vault_states(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """`backup_monitor_vaults{state=…}` from the daemon's /metrics."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        response.raise_for_status()
        text = await response.text()
    states: dict[str, float] = {}
    prefix = 'backup_monitor_vaults{state="'
    for line in text.splitlines():
        if line.startswith(prefix):
            label, value = line[len(prefix) :].split('"} ')
            states[label] = float(value)
    return states


async def first_round_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """A fresh state, default settings: time until the emulator saw every vault's first poll."""
    tls = make_tls(tmp)
    subs_n = args.first_round_subscriptions
    vaults_n = args.first_round_vaults_per_subscription
    emu = start_emulator(
        subscriptions=subs_n, vaults=vaults_n, time_scale=1, seed=args.seed, tls=tls, profile="demo"
    )
    d = tmp / "first-round"
    d.mkdir()
    daemon = DaemonProcess("first-round", d / "monitor.toml", d / "events.jsonl", d / "stderr.log")
    ssl_context = ssl.create_default_context(cafile=str(tls[0]))
    timeline: list[tuple[float, float]] = []  # (s after scheduler.started, vaults ok per daemon)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            sub_of = {v["id"].lower(): s["id"] for s in world["subscriptions"] for v in s["vaults"]}
            jobs = sum(v["jobs"] for s in world["subscriptions"] for v in s["vaults"])
            write_config(  # default [poll], [budget] and [discovery]; ops on a free port
                d / "monitor.toml",
                url=emu.url,
                token=emu.banner["token"],
                ca=tls[0],
                subscriptions=subs,
                state=d / "state.sqlite",
                events=d / "events.jsonl",
                ops_listen="127.0.0.1:0",
            )
            daemon.start()
            await daemon.wait_started(timeout_s=300)
            assert daemon.started_wall is not None
            port = daemon.ops_port()
            print(f"first round: {len(subs)} subscriptions, {len(sub_of)} vaults, {jobs} jobs")
            deadline = time.monotonic() + args.first_round_timeout
            report_at = 30.0
            while True:
                states = await vault_states(http, port)
                elapsed = (datetime.now(UTC) - daemon.started_wall).total_seconds()
                timeline.append((elapsed, states.get("ok", 0.0)))
                if states.get("ok", 0.0) >= len(sub_of) or time.monotonic() > deadline:
                    break
                if elapsed >= report_at:
                    print(f"  +{elapsed:.0f} s: {states.get('ok', 0.0):.0f} vaults polled")
                    report_at += 30.0
                await asyncio.sleep(METRICS_EVERY_S)
            reads = await get_json(http, f"{emu.url}/_emulator/reads?principal={STATIC_PRINCIPAL}")
            stats = await get_json(http, f"{emu.url}/_emulator/stats")
            await daemon.stop()
    finally:
        daemon.kill_if_running()
        emu.process.terminate()
        emu.process.wait(timeout=30)
    report = first_round_report(
        reads, stats, started=daemon.started_wall, sub_of=sub_of, subscriptions=subs
    )
    done = [t for t, ok in timeline if ok >= len(sub_of)]
    report.update(
        emulator_command=shlex.join(emu.command),
        jobs_in_world_at_start=jobs,
        timeout_s=args.first_round_timeout,
        daemon_round_s=done[0] if done else None,
        daemon_polls=daemon.polls(),
        daemon_rss_mb=daemon.rss_mb,
        daemon_cpu_s=daemon.cpu_s,
    )
    return report


def first_round_report(
    reads: dict[str, Any],
    stats: dict[str, Any],
    *,
    started: datetime | None,
    sub_of: dict[str, str],
    subscriptions: list[str],
) -> dict[str, Any]:
    """The round time and the budget's minimum for the reads each subscription's round made.

    A vault's first poll is done at the last read the emulator served it before its second
    poll began (`/_emulator/reads`); the round ends with the last of them and starts at the
    daemon's `scheduler.started` line. A subscription's reads are its discovery reads and every
    read of its vaults' first polls; the minimum is that of the slowest subscription, as
    subscriptions are paced by their own budgets, in parallel.
    """
    assert started is not None
    capacity, rate = budget_figures()
    rows = {str(r["vault_id"]).lower(): r for r in reads["vaults"]}
    per_sub: dict[str, dict[str, Any]] = {
        s.lower(): {
            "subscription": s,
            "vaults": 0,
            "vaults_polled": 0,
            "discovery_reads": 0,
            "first_poll_reads": 0,
            "pages": 0,
            "detail_reads": 0,
            "reads_by_end": 0,
            "throttled_429": 0,
            "done_s": 0.0,
        }
        for s in subscriptions
    }
    for r in reads["outside_vaults"]:
        row = per_sub.get(str(r["scope"]).lower())
        if row is not None:
            row["discovery_reads"] += int(r["served"])
    done_s: list[float] = []
    latest: list[dict[str, Any]] = []
    for vault, sub in sub_of.items():
        row = per_sub[sub.lower()]
        row["vaults"] += 1
        got = rows.get(vault)
        first = None if got is None else got["first_poll"]
        if got is None or first is None:
            continue
        row["vaults_polled"] += 1
        row["discovery_reads"] += int(got["before_first_poll"])
        row["first_poll_reads"] += int(first["reads"])
        row["pages"] += int(first["pages"])
        row["detail_reads"] += int(first["jobs"])
        at = (parse_at(first["last_at"]) - started).total_seconds()
        done_s.append(at)
        row["done_s"] = max(row["done_s"], at)
        latest.append(
            {
                "vault_id": got["vault_id"],
                "started_s": (parse_at(first["started_at"]) - started).total_seconds(),
                "done_s": at,
                "reads": int(first["reads"]),
                "throttled_429": int(got["throttled_429"]),
            }
        )
    for r in stats["by_principal"]:
        row = per_sub.get(str(r["scope"]).lower())
        if row is not None and r["principal"] == STATIC_PRINCIPAL:
            row["reads_by_end"] += int(r["served"])
            row["throttled_429"] += int(r["throttled_429"])
    for row in per_sub.values():
        row["reads"] = row["discovery_reads"] + row["first_poll_reads"]
        row["minimum_s"] = minimum_s(row["reads"], capacity, rate)
    slowest = max(per_sub.values(), key=lambda r: r["minimum_s"])
    vaults = len(sub_of)
    polled = len(done_s)
    round_s = max(done_s) if polled == vaults and done_s else None
    ordered = sorted(done_s)

    def share_by(seconds: float) -> float:
        return sum(1 for t in ordered if t <= seconds) / max(1, vaults)

    reads_of = [r["reads"] for r in per_sub.values()]
    return {
        "subscriptions": len(subscriptions),
        "vaults": vaults,
        "vaults_polled": polled,
        "round_s": round_s,
        "minimum_s": slowest["minimum_s"],
        "ratio": None if round_s is None else round_s / max(1e-9, slowest["minimum_s"]),
        "bar": FIRST_ROUND_BAR,
        "slowest_subscription": slowest["subscription"],
        "budget_capacity_reads": capacity,
        "budget_reads_per_s": rate,
        "reads_per_subscription": {
            "min": min(reads_of),
            "mean": statistics.fmean(reads_of),
            "max": max(reads_of),
        },
        "reads_per_vault": sum(reads_of) / max(1, vaults),
        "pages_per_vault": sum(r["pages"] for r in per_sub.values()) / max(1, vaults),
        "detail_reads_per_vault": sum(r["detail_reads"] for r in per_sub.values()) / max(1, vaults),
        "vault_done_s": {
            "p50": ordered[len(ordered) // 2] if ordered else None,
            "p90": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] if ordered else None,
        },
        "polled_share_by_s": {str(t): share_by(t) for t in (30, 60, 120, 180)},
        "throttled_429": int(stats["throttled_429"]),
        # Every read served by the round's end, second polls of early vaults included.
        "reads_by_end_per_subscription": statistics.fmean(
            r["reads_by_end"] for r in per_sub.values()
        ),
        "last_vaults": sorted(latest, key=lambda v: -v["done_s"])[:5],
        "by_subscription": sorted(per_sub.values(), key=lambda r: str(r["subscription"])),
    }


# ---------------------------------------------------------------------------- scale point


async def scale_config(emu: EmulatorProcess, tls: tuple[Path, Path, Path], d: Path) -> int:
    """Write the scale point's daemon config into `d` (monitor.toml; its state and events
    files beside it); returns how many jobs the emulator's world holds."""
    ssl_context = ssl.create_default_context(cafile=str(tls[0]))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        world = await get_json(http, f"{emu.url}/_emulator/world")
    subs = [s["id"] for s in world["subscriptions"]]
    write_config(
        d / "monitor.toml",
        url=emu.url,
        token=emu.banner["token"],
        ca=tls[0],
        subscriptions=subs,
        state=d / "state.sqlite",
        events=d / "events.jsonl",
        poll=estate_poll(
            active_s=15,
            idle_s=60,
            lookback_s=90000,
            overlap_s=300,
            # Steady state is measured; a backfill would emit ~170,000 events first.
            backfill=False,
        ),
    )
    return sum(v["jobs"] for s in world["subscriptions"] for v in s["vaults"])


async def scale_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """10,000 vaults over 200 subscriptions, default intervals, 24 h of history tracked."""
    tls = make_tls(tmp)
    subs_n, vaults_n = args.scale_subscriptions, args.scale_vaults_per_subscription
    built = time.monotonic()
    emu = start_emulator(subscriptions=subs_n, vaults=vaults_n, time_scale=1, seed=3, tls=tls)
    build_s = time.monotonic() - built
    d = tmp / "scale"
    d.mkdir()
    daemon = DaemonProcess("scale", d / "monitor.toml", d / "events.jsonl", d / "stderr.log")
    ssl_context = ssl.create_default_context(cafile=str(tls[0]))
    try:
        jobs = await scale_config(emu, tls, d)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            daemon.start()
            await daemon.wait_started(timeout_s=300)
            print(f"scale: {subs_n} subscriptions, {jobs} jobs; warming up {args.scale_warmup}s")
            await asyncio.sleep(args.scale_warmup)
            cpu0, wall0 = daemon.sample()
            await asyncio.sleep(args.scale_measure)
            cpu1, wall1 = daemon.sample()
            stats = await get_json(http, f"{emu.url}/_emulator/stats")
            await daemon.stop()
    finally:
        daemon.kill_if_running()
        emu.process.terminate()
        emu.process.wait(timeout=30)
    events = sum(1 for _ in daemon.events.open("rb")) if daemon.events.exists() else 0
    peaks = [float(r["peak_per_s_10s"]) for s, r in stats["by_scope"].items() if s != "tenant"]
    return {
        "subscriptions": subs_n,
        "vaults": subs_n * vaults_n,
        "emulator_build_s": build_s,
        "jobs_in_world": jobs,
        "polls": daemon.polls(),
        "events_emitted": events,
        "warmup_s": args.scale_warmup,
        "measured_s": wall1 - wall0,
        "cpu_percent_of_core": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "cpu_percent_including_backfill": 100 * daemon.cpu_s / daemon.wall_s,
        "rss_mb": daemon.rss_mb,
        "throttled_429": stats["throttled_429"],
        "peak_reads_per_s_per_subscription": max(peaks) if peaks else 0.0,
    }


# ---------------------------------------------------------------------------- output


def merge_results(name: str, keys: Mapping[str, Any]) -> Path:
    """Write `keys` into bench/results/`name`, keeping the keys other benches wrote there."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    current: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    current.update(keys)
    path.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2))
    return path


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def print_table(result: dict[str, Any]) -> None:
    print()
    print(f"command:  {result['command']}")
    print(f"machine:  {result['machine']}")
    if "estate" in result:
        r = result["estate"]
        s = r["client_vs_sdk"]
        print(f"emulator: {r['emulator_command']}")
        rows: list[tuple[str, str, str]] = [
            ("client CPU per page, request+parse (ms)", fmt(s["ours_cpu_ms_per_page"], 3), ""),
            (
                "client CPU per full poll, nothing known (ms)",
                fmt(s["ours_cpu_ms_per_poll_cold"], 3),
                "request, parse, diff, render+emit every job",
            ),
            (
                "client CPU per full poll, steady (ms)",
                fmt(s["ours_cpu_ms_per_poll_steady"], 3),
                "request, parse, diff, render+emit changes",
            ),
            (
                "floor CPU per page: bare GET + orjson (ms)",
                fmt(s["floor_cpu_ms_per_page"], 3),
                "same session and pool as ours",
            ),
            (
                "ours / floor, steady poll",
                fmt(s["cpu_ratio_vs_floor"], 2) + "×",
                f"list only: {fmt(s['cpu_ratio_vs_floor_list'], 2)}×",
            ),
            ("official SDK CPU per page (ms)", fmt(s["sdk_cpu_ms_per_page"], 3), ""),
            (
                "SDK / ours per page",
                fmt(s["cpu_ratio_vs_sdk"], 1) + "×",
                f"full poll (cold): {fmt(s['cpu_ratio_vs_sdk_full_poll'], 1)}×",
            ),
            ("jobs per page", fmt(s["jobs_per_page"], 1), f"{s['sdk']['pages']} SDK pages"),
            (
                "parse only, no I/O: ours / SDK (ms per page)",
                f"{fmt(s['parse_only']['ours_ms_per_page'], 3)} / "
                f"{fmt(s['parse_only']['sdk_ms_per_page'], 3)}",
                f"SDK / ours {fmt(s['parse_only']['ratio'], 1)}×",
            ),
        ]
        for name in ("default", "budget-bound"):
            h = r[name]
            tag = f"[{name}]"
            lag = h["lag"]
            rows += [
                (
                    f"{tag} vaults, intervals",
                    f"{h['subscriptions']}×{h['vaults_per_subscription']:.0f}",
                    f"active {h['active_interval_s']:g} s, idle {h['idle_interval_s']:g} s",
                ),
                (
                    f"{tag} daemon CPU per vault poll (ms)",
                    fmt(h["cpu_ms_per_poll"], 3),
                    f"{h['polls']} polls, {fmt(h['cpu_percent_of_core'], 1)} % of a core",
                ),
                (f"{tag} daemon peak RSS (MiB)", fmt(h["rss_mb"], 1), ""),
                (
                    f"{tag} reads/s per subscription (mean, peak 10 s)",
                    f"{fmt(h['reads_per_s_per_subscription'])}, "
                    f"{fmt(h['peak_reads_per_s_per_subscription'])}",
                    f"budget {fmt(BUDGET_RATE)} sustained, {fmt(BUDGET_SHARE)} over 10 s",
                ),
                (f"{tag} 429s", str(h["throttled_429"]), ""),
                (f"{tag} reads per poll", fmt(h["reads_per_poll"], 3), ""),
                (
                    f"{tag} lag mean / p50 / p95 (s)",
                    f"{fmt(lag['mean'])} / {fmt(lag['p50'])} / {fmt(lag['p95'])}",
                    f"n={lag['n']}",
                ),
                (
                    f"{tag} missed / duplicated / wrong",
                    f"{h['missed']} / {h['duplicates']} / {h['wrong']}",
                    f"of {h['expected_terminal']} terminal transitions, {h['events']} events"
                    + "".join(
                        f"; {n} {kind}" for kind, n in sorted(h.get("other_events", {}).items())
                    ),
                ),
            ]
        b = r["budget-bound"]
        opt = b["lag_optimum_s"]
        rows += [
            (
                "[budget-bound] optimum V/2r (s)",
                fmt(opt),
                f"×reads/poll: {fmt(b['lag_optimum_measured_reads_s'])}; "
                f"at measured rate: {fmt(b['lag_optimum_measured_rate_s'])}",
            ),
            (
                "[budget-bound] lag mean / bar (1.15·V/2r + 0.2)",
                fmt(b["lag"]["mean"] / (1.15 * opt + 0.2)),
                f"mean / optimum: {fmt(b['lag']['mean'] / opt)}",
            ),
        ]
        p = r["az_wait_peer"]
        if "peer_lag" in p:
            reads_ratio = p["peer_reads_per_detected"] / max(1e-9, p["ours_reads_per_detected"])
            lag_ratio = p["peer_lag"]["mean"] / max(1e-9, p["ours_lag"]["mean"])
            rows += [
                (
                    "az-wait peer: reads per detected terminal",
                    fmt(p["peer_reads_per_detected"]),
                    f"ours {fmt(p['ours_reads_per_detected'])} "
                    f"(peer / ours {fmt(reads_ratio, 1)}×)",
                ),
                (
                    "az-wait peer: lag mean / p95 (s)",
                    f"{fmt(p['peer_lag']['mean'])} / {fmt(p['peer_lag']['p95'])}",
                    f"ours {fmt(p['ours_lag']['mean'])} / {fmt(p['ours_lag']['p95'])} "
                    f"(peer / ours {fmt(lag_ratio, 1)}×)",
                ),
                (
                    "az-wait peer: detected / terminal transitions",
                    f"{p['peer_detected']} / {p['terminal_transitions']}",
                    f"ours {p['ours_detected']}; window {fmt(p['window_s'], 0)} s from "
                    f"+{fmt(p['window_starts_after_start_s'], 0)} s",
                ),
            ]
        else:
            rows.append(("az-wait peer", "-", p["note"]))
        if sum(r["faults_injected"].values()):
            rows.append(("faults injected", str(sum(r["faults_injected"].values())), ""))
    else:
        rows = []
    if "scale" in result:
        sc = result["scale"]
        rows += [
            (
                "[scale] vaults / subscriptions / jobs",
                f"{sc['vaults']} / {sc['subscriptions']} / {sc['jobs_in_world']}",
                f"emulator built in {fmt(sc['emulator_build_s'], 1)} s",
            ),
            (
                "[scale] daemon CPU % of one core (steady)",
                fmt(sc["cpu_percent_of_core"], 1),
                f"over {fmt(sc['measured_s'], 0)} s after {sc['warmup_s']} s warm-up; "
                f"with backfill {fmt(sc['cpu_percent_including_backfill'], 1)} %",
            ),
            ("[scale] daemon peak RSS (MiB)", fmt(sc["rss_mb"], 1), ""),
            (
                "[scale] 429s, peak reads/s per subscription",
                f"{sc['throttled_429']}, {fmt(sc['peak_reads_per_s_per_subscription'])}",
                f"{sc['polls']} polls, {sc['events_emitted']} events",
            ),
        ]
    if "first_round" in result:
        fr = result["first_round"]
        per_sub = fr["reads_per_subscription"]
        ratio = "-" if fr["ratio"] is None else fmt(fr["ratio"]) + "×"
        round_s = "-" if fr["round_s"] is None else fmt(fr["round_s"], 1)
        daemon_s = "-" if fr["daemon_round_s"] is None else fmt(fr["daemon_round_s"], 1)
        last = fr["last_vaults"][0] if fr["last_vaults"] else None
        shares = ", ".join(f"{t} s: {100 * v:.0f} %" for t, v in fr["polled_share_by_s"].items())
        rows += [
            (
                "[first round] vaults / subscriptions / jobs",
                f"{fr['vaults']} / {fr['subscriptions']} / {fr['jobs_in_world_at_start']}",
                f"{fr['vaults_polled']} polled; demo profile, fresh state, default settings",
            ),
            (
                "[first round] time to poll every vault once (s)",
                round_s,
                f"emulator's last first-poll read; the daemon's /metrics said so at {daemon_s} s",
            ),
            (
                "[first round] minimum the budget allows (s)",
                fmt(fr["minimum_s"], 1),
                f"slowest subscription: (reads − {fmt(fr['budget_capacity_reads'], 1)}) / "
                f"{fmt(fr['budget_reads_per_s'])} reads/s",
            ),
            ("[first round] round / minimum", ratio, f"bar {fmt(fr['bar'], 1)}×"),
            (
                "[first round] reads per subscription (min / mean / max)",
                f"{per_sub['min']} / {fmt(per_sub['mean'], 0)} / {per_sub['max']}",
                f"per vault {fmt(fr['reads_per_vault'])}: {fmt(fr['pages_per_vault'])} pages, "
                f"{fmt(fr['detail_reads_per_vault'])} detail GETs",
            ),
            (
                "[first round] reads served by the round's end, per subscription",
                fmt(fr["reads_by_end_per_subscription"], 0),
                "mean; first polls and the second polls of vaults polled early",
            ),
            (
                "[first round] last vault: first poll started / done (s)",
                f"{fmt(last['started_s'], 1)} / {fmt(last['done_s'], 1)}" if last else "-",
                f"{last['reads']} reads" if last else "",
            ),
            ("[first round] vaults polled by", "", shares),
            ("[first round] 429s", str(fr["throttled_429"]), ""),
        ]
    width = max(len(n) for n, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


def add_world_arguments(parser: argparse.ArgumentParser, *, vaults_per_subscription: int) -> None:
    """`--vaults-per-subscription`, `--time-scale` and `--seed` of the estate emulator."""
    count = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
    seconds = number_arg(float, "a number", lambda v: v > 0, "> 0")
    parser.add_argument(
        "--vaults-per-subscription",
        type=count,
        default=vaults_per_subscription,
        help="vaults in each subscription",
    )
    parser.add_argument(
        "--time-scale",
        type=seconds,
        default=300.0,
        help="the emulator's 'estate' profile runs this many times faster than real time",
    )
    parser.add_argument("--seed", type=int, default=11, help="the emulator's world seed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    count = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
    seconds = number_arg(float, "a number", lambda v: v > 0, "> 0")
    parser.add_argument(
        "--subscriptions",
        type=count,
        default=4,
        help="subscriptions of the estate (≥ 2): the first half runs at default intervals, the "
        "second in the budget-bound regime",
    )
    add_world_arguments(parser, vaults_per_subscription=60)
    parser.add_argument("--duration", type=seconds, default=240.0, help="seconds the daemons run")
    parser.add_argument(
        "--faults",
        type=number_arg(float, "a number", lambda v: 0 <= v <= 1, "between 0 and 1"),
        default=0.0,
        help="total ARM fault rate, spread over every fault kind",
    )
    parser.add_argument("--quick", action="store_true", help="4×40 vaults, 200 s: ~4 minutes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--scale", action="store_true", help="also run the 10,000-vault point")
    parser.add_argument("--scale-only", action="store_true", help="run only the scale point")
    parser.add_argument(
        "--client-only",
        action="store_true",
        help="run only the client CPU part (ours, the floor and the SDK over the same pages); "
        "prints its figures and writes no results file",
    )
    parser.add_argument(
        "--scale-subscriptions", type=count, default=200, help="subscriptions of the scale point"
    )
    parser.add_argument(
        "--scale-vaults-per-subscription",
        type=count,
        default=50,
        help="vaults per subscription of the scale point",
    )
    parser.add_argument(
        "--scale-warmup",
        type=seconds,
        default=90.0,
        help="seconds the scale point runs before it measures (first polls, checkpoints)",
    )
    parser.add_argument(
        "--scale-measure", type=seconds, default=120.0, help="seconds the scale point measures"
    )
    parser.add_argument(
        "--first-round",
        action="store_true",
        help="run only the first-round point (part of the full run; not of --quick): a fresh "
        "state over the demo profile, time until every vault was polled once against the "
        "minimum the read budget allows for the reads that round made",
    )
    parser.add_argument(
        "--first-round-subscriptions",
        type=count,
        default=20,
        help="subscriptions of the first-round point",
    )
    parser.add_argument(
        "--first-round-vaults-per-subscription",
        type=count,
        default=100,
        help="vaults per subscription of the first-round point",
    )
    parser.add_argument(
        "--first-round-timeout",
        type=number_arg(float, "a number", lambda v: 10 <= v <= 3600, "between 10 and 3600"),
        default=900.0,
        help="seconds the first-round point waits for every vault's first poll before it gives up",
    )
    args = parser.parse_args()
    if args.quick:
        args.subscriptions, args.vaults_per_subscription, args.duration = 4, 40, 200.0
    if args.subscriptions < 2:
        parser.error("--subscriptions must be at least 2 (one half per regime)")
    pin(1)
    # Our client logs through structlog: keep its debug lines out of the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/estate.py", *sys.argv[1:]]),
        "machine": machine + "; emulator pinned to core 0, daemons and peers to core 1",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    if args.client_only:
        with tempfile.TemporaryDirectory(prefix="bench-client-") as where:
            got = asyncio.run(client_run(args, Path(where) / "estate"))
        print(orjson.dumps(got, option=orjson.OPT_INDENT_2).decode())
        return
    tmp = tempfile.mkdtemp(prefix="bench-estate-")
    if args.keep:
        print(f"keeping configs, events and logs in {tmp}")
    run_estate = not (args.scale_only or args.first_round)
    run_first_round = args.first_round or not (args.quick or args.scale_only)
    try:
        if run_estate:
            result["estate"] = asyncio.run(estate_run(args, Path(tmp) / "estate"))
        if run_first_round:
            result["first_round"] = asyncio.run(first_round_run(args, Path(tmp) / "first-round"))
        if args.scale or args.scale_only:
            result["scale"] = asyncio.run(scale_run(args, Path(tmp) / "scale"))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if "estate" in result:
        r = result["estate"]
        b, dflt = r["budget-bound"], r["default"]
        result.update(
            cpu_ms_per_poll=dflt["cpu_ms_per_poll"],
            cpu_ms_per_poll_budget_bound=b["cpu_ms_per_poll"],
            client_cpu_ms_per_page=r["client_vs_sdk"]["ours_cpu_ms_per_page"],
            client_cpu_ms_per_full_poll=r["client_vs_sdk"]["ours_cpu_ms_per_poll_cold"],
            sdk_cpu_ms_per_page=r["client_vs_sdk"]["sdk_cpu_ms_per_page"],
            cpu_ratio_vs_sdk=r["client_vs_sdk"]["cpu_ratio_vs_sdk"],
            floor_cpu_ms_per_page=r["client_vs_sdk"]["floor_cpu_ms_per_page"],
            client_cpu_ms_per_steady_poll=r["client_vs_sdk"]["ours_cpu_ms_per_poll_steady"],
            cpu_ratio_vs_floor=r["client_vs_sdk"]["cpu_ratio_vs_floor"],
            throttled_429=dflt["throttled_429"] + b["throttled_429"],
            peak_reads_per_s_per_subscription=max(
                dflt["peak_reads_per_s_per_subscription"], b["peak_reads_per_s_per_subscription"]
            ),
            budget_reads_per_s=BUDGET_RATE,
            lag_mean_s=b["lag"]["mean"],
            lag_p95_s=b["lag"]["p95"],
            lag_optimum_s=b["lag_optimum_s"],
            lag_default_mean_s=dflt["lag"]["mean"],
            default_lag_mean_s=dflt["lag"]["mean"],
            azwait_lag_mean_s=r["az_wait_peer"].get("peer_lag", {}).get("mean", float("nan")),
            lag_optimum_measured_s=b["lag_optimum_measured_reads_s"],
            reads_per_poll_budget_bound=b["reads_per_poll"],
            missed=dflt["missed"] + b["missed"],
            duplicates=dflt["duplicates"] + b["duplicates"],
            wrong=dflt["wrong"] + b["wrong"],
            rss_mb=max(dflt["rss_mb"], b["rss_mb"]),
        )
    if "scale" in result:
        result.update(
            scale_cpu_percent=result["scale"]["cpu_percent_of_core"],
            scale_rss_mb=result["scale"]["rss_mb"],
        )
    if "first_round" in result:
        fr = result["first_round"]
        result.update(
            first_round_s=fr["round_s"],
            first_round_minimum_s=fr["minimum_s"],
            first_round_ratio=fr["ratio"],
            first_round_throttled_429=fr["throttled_429"],
        )
    if "estate" in result:
        name = "latest.json"
    elif "first_round" in result:
        name = "first_round.json"
    else:
        name = "scale.json"
    path = merge_results(name, result)
    print_table(result)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
