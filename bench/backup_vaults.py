"""Backup vaults: ARM reads per vault per hour, Resource Graph windows against full listings.

A Backup vault's ARM job list has no filter, so each read of it costs pages in proportion to
the vault's history. For each history size (`--history`, jobs per Backup vault), one emulator
process (`backup-monitor emulator --profile demo`, HTTPS with a throwaway CA, pinned to core 0;
`--backup-vault-history-jobs N`, Resource Graph rows `--staleness` seconds late, no faults,
ARM's default read buckets) serves two `backup-monitor run` processes at once (pinned to core
1), each with its own principal, state file and events file, default settings but one:

- RESOURCE_GRAPH: `[backup_vaults] jobs_from = "resource_graph"` (the default);
- LISTING (the peer): `jobs_from = "listing"`, a full ARM listing on every poll (naive).

The emulator needs at least one Recovery Services vault per subscription; only Backup vault
reads are counted. The measured window starts once both daemons have polled every vault once
(`backup_monitor_vaults{state="ok"}` on their /metrics equals the vault count) and lasts
`--duration` seconds; the daemons then run on (up to `--drain` seconds) until each has emitted
every terminal transition of the window, and stop.

Figures per daemon, over the window: ARM reads per Backup vault per hour (jobs_list pages +
job_get from the daemon's /metrics, less the Recovery Services vaults' reads the emulator's read
log counts for its principal, divided by the Backup vaults and scaled to an hour), of which
full-listing pages (the Backup vaults' pages in the read log: a Backup vault's list is only ever
read whole); full listings by reason (`backup_monitor_backup_vault_full_listings_total`);
Resource Graph queries per hour; 429s (ARM and Resource Graph, the emulator's stats for the
principal). Detection lag of the window's terminal Backup vault transitions (event `time` −
ground-truth `at`, joined on event_id); missed / duplicated / wrong against
`/_emulator/transitions?kind=backup_vault`. Beside them the cost model (`cost_model`).

Run: PYTHONPATH=. .venv/bin/python bench/backup_vaults.py --quick   (about 6 minutes)
     PYTHONPATH=. .venv/bin/python bench/backup_vaults.py           (about 15 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import shlex
import shutil
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.estate import (  # noqa: E402
    DaemonProcess,
    get_json,
    lag_summary,
    make_tls,
    mint,
    parse_at,
    pin,
    spawn_emulator,
    vault_states,
    write_config,
)
from monitor.commands.common import number_arg  # noqa: E402
from monitor.config import BackupVaultSettings  # noqa: E402
from monitor.core.budget import BudgetSettings as CoreBudgetSettings  # noqa: E402
from monitor.core.dataprotection import job_status  # noqa: E402
from monitor.core.diff import event_id  # noqa: E402
from monitor.events import EVENT_TYPE  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BUDGET_RATE = CoreBudgetSettings().rate_per_s
BACKSTOP_S = BackupVaultSettings().backstop_interval_s
# Later backstops are jittered 0.9–1.0× the interval: their mean spacing.
BACKSTOP_MEAN_S = 0.95 * BACKSTOP_S
PARTIES = ("resource_graph", "listing")
BV_MARK = "/microsoft.dataprotection/"


def parser() -> argparse.ArgumentParser:
    """The bench's command line."""
    count = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
    seconds = number_arg(float, "a number", lambda v: v > 0, "> 0")

    def sizes(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"history sizes must be at least 1: {text!r}")
        return values

    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--history", type=sizes, default=[100, 1000, 5000], help="jobs per Backup vault, each a run"
    )
    p.add_argument("--duration", type=seconds, default=150.0, help="seconds of the measured window")
    p.add_argument(
        "--drain",
        type=seconds,
        default=150.0,
        help="most seconds the daemons run on after the window for its last detections",
    )
    p.add_argument(
        "--warmup-timeout",
        type=seconds,
        default=400.0,
        help="most seconds to wait for both daemons' first poll of every vault",
    )
    p.add_argument("--subscriptions", type=count, default=2, help="subscriptions")
    p.add_argument(
        "--backup-vaults-per-subscription", type=count, default=5, help="Backup vaults in each"
    )
    p.add_argument(
        "--vaults-per-subscription",
        type=count,
        default=1,
        help="Recovery Services vaults in each (the emulator's least is 1; not counted)",
    )
    p.add_argument("--staleness", type=seconds, default=30.0, help="Resource Graph row lag (s)")
    p.add_argument("--page-size", type=count, default=20, help="jobs per ARM page")
    p.add_argument("--seed", type=int, default=12, help="the emulator's world seed")
    p.add_argument("--quick", action="store_true", help="history 100,1000; 60 s windows")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--output", type=Path, default=RESULTS / "backup_vaults.json", help="results file"
    )
    return p


# ---------------------------------------------------------------------------- processes


def start_emulator(args: argparse.Namespace, history: int, tls: tuple[Path, Path, Path]) -> Any:
    command = [
        "backup-monitor", "emulator", "--port", "0", "--seed", str(args.seed),
        "--subscriptions", str(args.subscriptions),
        "--vaults-per-subscription", str(args.vaults_per_subscription),
        "--backup-vaults-per-subscription", str(args.backup_vaults_per_subscription),
        "--backup-vault-history-jobs", str(history),
        "--resource-graph-staleness", f"{args.staleness:g}",
        "--profile", "demo", "--page-size", str(args.page_size),
        "--tls-cert", str(tls[1]), "--tls-key", str(tls[2]),
    ]  # fmt: skip
    return spawn_emulator(command)


# ---------------------------------------------------------------------------- measurements


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition: (name, labels, value) of every sample line."""
    rows: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        for part in rest.rstrip("}").split('",'):
            if "=" in part:
                key, _, val = part.partition("=")
                labels[key.strip()] = val.strip().strip('"')
        try:
            rows.append((name, labels, float(value)))
        except ValueError:
            continue
    return rows


@dataclass
class Snapshot:
    """What one daemon had done by a moment: its /metrics and the emulator's read log."""

    at: float  # monotonic
    jobs_list: float = 0.0  # pages, every subscription (both kinds of vault)
    job_get: float = 0.0
    graph_queries: float = 0.0
    throttled: float = 0.0  # the daemon's own count of ARM 429s
    listings: Counter[str] | None = None  # full listings by reason
    rs_served: int = 0  # the emulator's reads of Recovery Services vaults, this principal
    bv_served: int = 0  # ... of Backup vaults
    bv_pages: int = 0  # Backup vault job-list pages
    graph_429: int = 0  # Resource Graph 429s, this principal
    graph_served: int = 0  # Resource Graph queries the emulator answered, this principal
    metrics_text: str = ""
    arm_429: int = 0  # ARM 429s the emulator counted for this principal


def summarize_metrics(snap: Snapshot, text: str) -> None:
    snap.listings = Counter()
    for name, labels, value in parse_metrics(text):
        if name == "backup_monitor_arm_requests_total":
            kind = labels.get("kind")
            if kind == "jobs_list":
                snap.jobs_list += value
            elif kind == "job_get":
                snap.job_get += value
            elif kind == "graph_query":
                snap.graph_queries += value
        elif name == "backup_monitor_arm_throttled_total":
            snap.throttled += value
        elif name == "backup_monitor_backup_vault_full_listings_total":
            snap.listings[labels.get("reason", "?")] += int(value)


async def snapshot(http: aiohttp.ClientSession, url: str, port: int, principal: str) -> Snapshot:
    snap = Snapshot(at=time.monotonic())
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        response.raise_for_status()
        snap.metrics_text = await response.text()
        summarize_metrics(snap, snap.metrics_text)
    reads = await get_json(http, f"{url}/_emulator/reads?principal={principal}")
    for row in reads["vaults"]:
        if BV_MARK in str(row["vault_id"]).lower():
            snap.bv_served += int(row["served"])
            snap.bv_pages += int(row["pages"])
            snap.arm_429 += int(row["throttled_429"])
        else:
            snap.rs_served += int(row["served"])
            snap.arm_429 += int(row["throttled_429"])
    for row in reads["outside_vaults"]:
        snap.arm_429 += int(row["throttled_429"])
    stats = await get_json(http, f"{url}/_emulator/stats")
    for row in stats["resource_graph"]["by_principal"]:
        if row["principal"] == principal:
            snap.graph_429 = int(row["throttled_429"])
            snap.graph_served = int(row["served"])
    return snap


class Truth:
    """The Backup vault ground truth, read incrementally (`?kind=backup_vault&since=SEQ`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rows: list[dict[str, Any]] = []
        self.since = 0

    async def read(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Every row so far (new ones fetched)."""
        while True:
            page = await get_json(
                http,
                f"{self.url}/_emulator/transitions?kind=backup_vault&since={self.since}"
                "&limit=100000",
            )
            self.rows += page["transitions"]
            if not page["transitions"]:
                return self.rows
            self.since = page["next"]


def truth_id(row: dict[str, Any]) -> str:
    """The event id of a Backup vault ground-truth row (`Started` is InProgress, `Succeeded`
    Completed)."""
    return event_id(str(row["vault_id"]), str(row["job_id"]), job_status(str(row["to"])))


def terminal_in(truth: list[dict[str, Any]], start: datetime, end: datetime) -> dict[str, Any]:
    """Terminal Backup vault transitions at `start` ≤ at ≤ `end`, by event id."""
    return {
        truth_id(t): t
        for t in truth
        if job_status(str(t["to"])).is_terminal and start <= parse_at(str(t["at"])) <= end
    }


def judge(
    events: list[dict[str, Any]], truth: list[dict[str, Any]], expected: dict[str, Any]
) -> dict[str, Any]:
    """Missed, duplicated and wrong Backup vault job state changes, and the window's lags
    (item events and long-running jobs are counted apart, in `other_events`)."""
    status_of = {truth_id(t): job_status(str(t["to"])) for t in truth}
    ours = [e for e in events if (e.get("vault") or {}).get("kind") == "backup_vault"]
    mine = [e for e in ours if e.get("event") == EVENT_TYPE]
    others = Counter(str(e.get("event")) for e in ours if e.get("event") != EVENT_TYPE)
    emitted = Counter(str(e["event_id"]) for e in mine)
    wrong = 0
    lags: list[float] = []
    reported: list[float] = []
    seen: set[str] = set()
    for e in mine:
        eid = str(e["event_id"])
        status = status_of.get(eid)
        if status is None or job_status(str(e["job"]["status"])) != status:
            wrong += 1
            continue
        if eid in expected and eid not in seen:
            seen.add(eid)
            lags.append(
                (parse_at(str(e["time"])) - parse_at(str(expected[eid]["at"]))).total_seconds()
            )
            if "detection_lag_s" in e:
                reported.append(float(e["detection_lag_s"]))
    return {
        "expected_terminal": len(expected),
        "events": len(mine),
        "missed": len(set(expected) - set(emitted)),
        "missed_ids": sorted(set(expected) - set(emitted))[:10],
        "duplicates": sum(n - 1 for n in emitted.values() if n > 1),
        "duplicate_ids": sorted(eid for eid, n in emitted.items() if n > 1)[:10],
        "wrong": wrong,
        "other_events": dict(others),
        "lag": lag_summary(lags),
        "lag_reported": lag_summary(reported),
    }


def rates(a: Snapshot, b: Snapshot, backup_vaults: int) -> dict[str, Any]:
    """Per Backup vault per hour between two snapshots of one daemon."""
    seconds = b.at - a.at
    per_vault_hour = 3600.0 / seconds / backup_vaults
    metrics_reads = (b.jobs_list + b.job_get) - (a.jobs_list + a.job_get)
    rs = b.rs_served - a.rs_served
    bv_reads = metrics_reads - rs
    bv_pages = b.bv_pages - a.bv_pages
    assert a.listings is not None
    assert b.listings is not None
    listings = b.listings - a.listings
    n_listings = sum(listings.values())
    return {
        "window_s": seconds,
        "reads_per_vault_hour": bv_reads * per_vault_hour,
        "full_listing_pages_per_vault_hour": bv_pages * per_vault_hour,
        "other_reads_per_vault_hour": (bv_reads - bv_pages) * per_vault_hour,
        "emulator_bv_reads_per_vault_hour": (b.bv_served - a.bv_served) * per_vault_hour,
        "graph_queries_per_hour": (b.graph_queries - a.graph_queries) * 3600.0 / seconds,
        "emulator_graph_queries_per_hour": (b.graph_served - a.graph_served) * 3600.0 / seconds,
        "full_listings": dict(listings),
        "full_listings_total": n_listings,
        "listings_per_vault_hour": n_listings * per_vault_hour,
        "pages_per_listing": bv_pages / n_listings if n_listings else None,
        "metrics_reads": metrics_reads,
        "rs_vault_reads": rs,
        "throttled_429_arm": b.arm_429 - a.arm_429,
        "throttled_429_daemon_metrics": b.throttled - a.throttled,
        "throttled_429_graph": b.graph_429 - a.graph_429,
    }


def cost_model(
    rg: dict[str, Any],
    naive: dict[str, Any],
    *,
    pages_per_listing: float,
    duration_s: float,
    backup_vaults: int,
    per_subscription: int,
    rs_reads_per_s_per_sub: float,
) -> dict[str, Any]:
    """The cost model beside the measurement.

    resource_graph ≈ (confirm + detail GETs) + pages_per_listing × 3600 / backstop interval;
    listing ≈ pages_per_listing × polls per hour, the polls capped by the read budget.
    """
    gets = rg["other_reads_per_vault_hour"]
    backstop_pages = pages_per_listing * 3600.0 / BACKSTOP_MEAN_S
    naive_polls = naive["listings_per_vault_hour"]
    budget_polls = (
        (BUDGET_RATE - rs_reads_per_s_per_sub) * 3600.0 / per_subscription / pages_per_listing
    )
    return {
        "pages_per_listing": pages_per_listing,
        "resource_graph_reads_per_vault_hour": gets + backstop_pages,
        "resource_graph_backstop_pages_per_vault_hour": backstop_pages,
        "resource_graph_gets_per_vault_hour": gets,
        "listing_reads_per_vault_hour": pages_per_listing * naive_polls,
        "listing_polls_per_vault_hour": naive_polls,
        "listing_polls_per_vault_hour_budget_cap": budget_polls,
        "backstop_listings_expected_in_window": backup_vaults * duration_s / BACKSTOP_S,
        "backstop_listings_observed_in_window": rg["full_listings"].get("backstop", 0),
    }


# ---------------------------------------------------------------------------- one run


async def wait_all_ok(
    http: aiohttp.ClientSession, daemons: Sequence[DaemonProcess], vaults: int, timeout_s: float
) -> dict[str, float]:
    """Until every daemon reports every vault ok; seconds each took (after the first start)."""
    t0 = time.monotonic()
    done: dict[str, float] = {}
    ports = {d.name: d.ops_port() for d in daemons}
    while len(done) < len(daemons):
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"first polls not done after {timeout_s:g} s: {done}")
        for d in daemons:
            if d.name in done:
                continue
            assert d.process is not None
            if d.process.poll() is not None:
                raise RuntimeError(f"{d.name} exited: {d.logs.read_text()[-2000:]}")
            states = await vault_states(http, ports[d.name])
            if states.get("ok", 0) >= vaults:
                done[d.name] = time.monotonic() - t0
        await asyncio.sleep(1.0)
    return done


async def one_run(args: argparse.Namespace, history: int, tmp: Path) -> dict[str, Any]:
    tls = make_tls(tmp / "tls")
    started = time.monotonic()
    emu = start_emulator(args, history, tls)
    built_s = time.monotonic() - started
    ssl_context = ssl.create_default_context(cafile=str(tls[0]))
    daemons: dict[str, DaemonProcess] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            n_bv = args.subscriptions * args.backup_vaults_per_subscription
            n_vaults = n_bv + args.subscriptions * args.vaults_per_subscription
            for party in PARTIES:
                d = tmp / party
                d.mkdir()
                token = await mint(http, emu.url, f"bench-{party}")
                config = d / "monitor.toml"
                write_config(
                    config,
                    url=emu.url,
                    token=token,
                    ca=tls[0],
                    subscriptions=subs,
                    state=d / "state.sqlite",
                    events=d / "events.jsonl",
                    ops_listen="127.0.0.1:0",
                )
                with config.open("a") as f:
                    f.write(f'[backup_vaults]\njobs_from = "{party}"\n')
                daemons[party] = DaemonProcess(party, config, d / "events.jsonl", d / "stderr.log")
            for daemon in daemons.values():
                daemon.start()
            for daemon in daemons.values():
                await daemon.wait_started()
            first_polls = await wait_all_ok(
                http, list(daemons.values()), n_vaults, args.warmup_timeout
            )
            window_start = datetime.now(UTC)
            ports = {p: d.ops_port() for p, d in daemons.items()}
            before = {p: await snapshot(http, emu.url, ports[p], f"bench-{p}") for p in PARTIES}
            await asyncio.sleep(args.duration)
            after = {p: await snapshot(http, emu.url, ports[p], f"bench-{p}") for p in PARTIES}
            window_end = datetime.now(UTC)
            # Run on until each daemon has emitted the window's terminal transitions.
            drain_t0 = time.monotonic()
            drained: dict[str, float | None] = dict.fromkeys(PARTIES)
            ground = Truth(emu.url)
            while time.monotonic() - drain_t0 < args.drain:
                truth = await ground.read(http)
                expected = terminal_in(truth, window_start, window_end)
                for p, daemon in daemons.items():
                    if drained[p] is None:
                        got = {str(e["event_id"]) for e in daemon.read_events()}
                        if set(expected) <= got:
                            drained[p] = time.monotonic() - drain_t0
                if all(v is not None for v in drained.values()):
                    break
                await asyncio.sleep(2.0)
            for daemon in daemons.values():
                await daemon.stop()
            truth = await ground.read(http)
            load = os.getloadavg()
    finally:
        for daemon in daemons.values():
            daemon.kill_if_running()
        emu.process.terminate()
        emu.process.wait(timeout=30)
    expected = terminal_in(truth, window_start, window_end)
    out: dict[str, Any] = {
        "history_jobs_per_backup_vault": history,
        "emulator": shlex.join(emu.command),
        "emulator_start_s": built_s,
        "first_polls_done_s": first_polls,
        "window": {
            "start": window_start.isoformat(),
            "end": window_end.isoformat(),
            "seconds": (window_end - window_start).total_seconds(),
        },
        "loadavg_at_end": list(load),
    }
    per_sub = args.backup_vaults_per_subscription
    for p, daemon in daemons.items():
        (tmp / p / "metrics.txt").write_text(after[p].metrics_text)
        row = rates(before[p], after[p], n_bv)
        row.update(judge(daemon.read_events(), truth, expected))
        row["drained_after_s"] = drained[p]
        row["cpu_s"] = daemon.cpu_s
        row["rss_mb"] = daemon.rss_mb
        out[p] = row
    rg, naive = out["resource_graph"], out["listing"]
    ppl = naive["pages_per_listing"] or math.ceil(history / args.page_size)
    rs_rate = naive["rs_vault_reads"] / naive["window_s"] / args.subscriptions
    out["cost_model"] = cost_model(
        rg, naive, pages_per_listing=ppl, duration_s=rg["window_s"], backup_vaults=n_bv,
        per_subscription=per_sub, rs_reads_per_s_per_sub=rs_rate,
    )  # fmt: skip
    out["ratio_reads_listing_over_resource_graph"] = naive["reads_per_vault_hour"] / max(
        1e-9, rg["reads_per_vault_hour"]
    )
    out["ratio_reads_listing_over_resource_graph_model"] = naive["reads_per_vault_hour"] / max(
        1e-9, out["cost_model"]["resource_graph_reads_per_vault_hour"]
    )
    return out


# ---------------------------------------------------------------------------- output


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, one column pair per history size."""
    runs = result["runs"]
    head = "| measure | " + " | ".join(
        f"{r['history_jobs_per_backup_vault']:,} jobs: resource_graph | listing" for r in runs
    )
    lines = [head + " |", "| --- |" + " ---: | ---: |" * len(runs)]

    def row(name: str, cell: Any) -> None:
        cells = []
        for r in runs:
            a, b = cell(r, r["resource_graph"]), cell(r, r["listing"])
            cells += [a, b]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("ARM reads per Backup vault per hour", lambda r, d: fmt(d["reads_per_vault_hour"], 0))
    row(
        "… of which full-listing pages",
        lambda r, d: fmt(d["full_listing_pages_per_vault_hour"], 0),
    )
    row("… other reads (job GETs)", lambda r, d: fmt(d["other_reads_per_vault_hour"], 0))
    row(
        "full listings in the window (by reason)",
        lambda r, d: ", ".join(f"{k} {v}" for k, v in sorted(d["full_listings"].items())) or "0",
    )
    row("Resource Graph queries per hour", lambda r, d: fmt(d["graph_queries_per_hour"], 0))
    row(
        "429s: ARM / Resource Graph",
        lambda r, d: f"{d['throttled_429_arm']} / {d['throttled_429_graph']}",
    )
    row(
        "lag mean / p50 / p95 (s)",
        lambda r, d: f"{fmt(d['lag']['mean'])} / {fmt(d['lag']['p50'])} / {fmt(d['lag']['p95'])}",
    )
    row(
        "missed / duplicated / wrong",
        lambda r, d: (
            f"{d['missed']} / {d['duplicates']} / {d['wrong']} of {d['expected_terminal']}"
        ),
    )

    def pair(name: str, cell: Any) -> None:
        cells: list[str] = []
        for r in runs:
            cells += list(cell(r, r["cost_model"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    pair(
        "ratio listing / resource_graph, reads per vault-hour: measured (model)",
        lambda r, m: (
            "",
            f"{fmt(r['ratio_reads_listing_over_resource_graph'])}× "
            f"({fmt(r['ratio_reads_listing_over_resource_graph_model'])}×)",
        ),
    )
    pair(
        "model, reads per vault-hour: GETs + pages/listing × 3600/(0.95·interval); "
        "pages/listing × polls/h",
        lambda r, m: (
            f"{fmt(m['resource_graph_gets_per_vault_hour'], 0)} + "
            f"{fmt(m['pages_per_listing'])} × {fmt(3600 / BACKSTOP_MEAN_S, 2)} = "
            f"{fmt(m['resource_graph_reads_per_vault_hour'], 0)}",
            f"{fmt(m['pages_per_listing'])} × {fmt(m['listing_polls_per_vault_hour'], 0)} = "
            f"{fmt(m['listing_reads_per_vault_hour'], 0)}",
        ),
    )
    pair(
        "listing polls per vault-hour: budget cap",
        lambda r, m: ("", fmt(m["listing_polls_per_vault_hour_budget_cap"], 0)),
    )
    pair(
        "backstop listings in the window: observed / expected V·D/interval",
        lambda r, m: (
            f"{m['backstop_listings_observed_in_window']} / "
            f"{fmt(m['backstop_listings_expected_in_window'], 2)}",
            "",
        ),
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.history, args.duration, args.drain = [100, 1000], 60.0, 90.0
    pin(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; emulator pinned to core 0, daemons to core 1"
    )
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/backup_vaults.py", *sys.argv[1:]]),
        "machine": machine,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": list(os.getloadavg()),
        "settings": {
            "subscriptions": args.subscriptions,
            "backup_vaults_per_subscription": args.backup_vaults_per_subscription,
            "recovery_services_vaults_per_subscription": args.vaults_per_subscription,
            "resource_graph_staleness_s": args.staleness,
            "page_size": args.page_size,
            "profile": "demo",
            "duration_s": args.duration,
            "drain_s": args.drain,
            "backstop_interval_s": BACKSTOP_S,
            "budget_reads_per_s_per_subscription": BUDGET_RATE,
            "daemons": "default settings but [backup_vaults] jobs_from",
        },
        "runs": [],
    }
    tmp = tempfile.mkdtemp(prefix="bench-bv-")
    if args.keep:
        print(f"keeping configs, events and logs in {tmp}")
    try:
        for history in args.history:
            t0 = time.monotonic()
            (Path(tmp) / f"h{history}").mkdir(parents=True)
            run = asyncio.run(one_run(args, history, Path(tmp) / f"h{history}"))
            run["run_s"] = time.monotonic() - t0
            result["runs"].append(run)
            print(f"history {history}: done in {run['run_s']:.0f} s", flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(result))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
