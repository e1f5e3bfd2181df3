"""Missed backups (issue 13): how soon a skipped scheduled run is reported, and its ARM cost.

One emulator process (`backup-monitor emulator --profile policies --skip-rate 0.1`, HTTPS with
a throwaway CA, pinned to core 0) runs its policies' schedules on an accelerated clock
(`--clock-speed K`, default 600: a world day in 144 real seconds). Two `backup-monitor run`
processes (pinned to core 1), each with its own principal, state file and events file, run on
the same clock (`[clock]`) with `[poll] active_interval_s = 900, idle_interval_s = 3600` and
`[discovery] interval_s = 86400` (world seconds; the job polls are the same in both, so they
cancel in the difference), and differ in one setting:

- PROTECTION: `[protection]` at its defaults (items every 900 s, policies every 3600 s);
- PEER_NO_PROTECTION: `[protection] enabled = false` (jobs only).

Figures, over the measured window (from 2 world hours after both daemons started to the stop):

- **Reads:** `backup_monitor_arm_requests_total` by `kind` from each daemon's /metrics at the
  window's start and end; reads added per vault per world hour = (PROTECTION − PEER) / vaults /
  world hours; PROTECTION's `items_list` and `policies_list` per vault-hour; 429s (the daemons'
  `backup_monitor_arm_throttled_total` and the emulator's read log per principal).
- **Delay:** every run of `/_emulator/expected` that made no job (`job_id` null), due in the
  window, whose latest deadline (due + 2 h, the longest grace of the profile) + 15 min is before
  the stop, matched to PROTECTION's `backup_item.backup_missed` on (item id lower-cased, due,
  kind): event time − due and − deadline, per run kind; false reports (events whose run made a
  job).
- **The peer (simulated):** Microsoft's "latest recovery point age" log alert, evaluated every
  6 h (PT6H), firing when an item's recovery point is older than LatestRPAgeThresholdInDays
  (2, its default, and 1). Each item's recovery points are the end times of its succeeded
  non-log jobs (`/_emulator/transitions`, joined to `/expected` by job id) and its
  `lastRecoveryPoint` read at the start; a skipped run is detected at the first evaluation
  t ≥ due at which the age exceeds the threshold and the last recovery point is older than the
  due time. Averaged over `--phases` evaluation phases spread over the 6 h (the alert's phase
  is whenever it was created). Also counted: firings on items none of whose runs since their
  last recovery point was skipped (the threshold is shorter than the policy's gap).

Run: PYTHONPATH=. .venv/bin/python bench/missed_backups.py --quick   (about 3 minutes)
     PYTHONPATH=. .venv/bin/python bench/missed_backups.py           (about 5 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import os
import platform
import shlex
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backup_vaults import parse_metrics  # noqa: E402
from bench.estate import (  # noqa: E402
    DaemonProcess,
    get_json,
    lag_summary,
    make_tls,
    mint,
    parse_at,
    pin,
    spawn_emulator,
    write_config,
)
from monitor.commands.common import number_arg  # noqa: E402
from monitor.config import ProtectionSettings  # noqa: E402
from monitor.emulator.clock import ScaledClock  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTIES = ("protection", "peer_no_protection")
MISSED = "backup_item.backup_missed"
SUCCEEDED = frozenset({"Completed", "CompletedWithWarnings"})
LOG_OPERATION = "Backup (Log)"
KINDS = ("backup", "full", "log")
ALERT_PERIOD_S = 6 * 3600.0  # the quickstart's evaluationFrequency PT6H
THRESHOLDS_DAYS = (2, 1)  # LatestRPAgeThresholdInDays: its default, and its most sensitive
LONGEST_GRACE = timedelta(hours=2)  # the profile's: 0.5 × the 4-hourly VM policy's interval
DECIDED_AFTER = timedelta(minutes=15)  # a run is judged if its deadline + this is before the stop
WARMUP = timedelta(hours=2)  # the window starts this long (world) after both daemons started
ITEMS_API = "api-version=2025-08-01"
PROTECTION = ProtectionSettings()


def parser() -> argparse.ArgumentParser:
    """The bench's command line."""
    count = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
    positive = number_arg(float, "a number", lambda v: v > 0, "> 0")
    rate = number_arg(float, "a number", lambda v: 0 <= v <= 1, "between 0 and 1")

    def moment(text: str) -> datetime:
        try:
            value = parse_at(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
        if value.tzinfo is None:
            raise argparse.ArgumentTypeError(f"needs a UTC offset or Z: {text!r}")
        return value.astimezone(UTC)

    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--days", type=positive, default=2.0, help="world days from --start to the stop")
    p.add_argument("--speed", type=positive, default=600.0, help="world seconds per real second")
    p.add_argument(
        "--start", type=moment, default=moment("2026-10-28T00:00:00Z"), help="world start time"
    )
    p.add_argument("--subscriptions", type=count, default=2, help="subscriptions")
    p.add_argument("--vaults-per-subscription", type=count, default=5, help="vaults in each")
    p.add_argument("--skip-rate", type=rate, default=0.1, help="share of runs that make no job")
    p.add_argument("--seed", type=int, default=13, help="the emulator's world seed")
    p.add_argument("--phases", type=count, default=36, help="alert phases averaged over (6 h)")
    p.add_argument("--quick", action="store_true", help="one world day")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--output", type=Path, default=RESULTS / "missed_backups.json", help="results file"
    )
    return p


# ---------------------------------------------------------------------------- pure figures


def run_key(item_id: str, due: datetime, kind: str) -> tuple[str, datetime, str]:
    """What a ground-truth run and a `backup_missed` event are matched on."""
    return (item_id.lower(), due.astimezone(UTC).replace(microsecond=0), kind.lower())


def reads_by_kind(text: str) -> Counter[str]:
    """`backup_monitor_arm_requests_total` of a /metrics text, summed by `kind`."""
    out: Counter[str] = Counter()
    for name, labels, value in parse_metrics(text):
        if name == "backup_monitor_arm_requests_total":
            out[labels.get("kind", "?")] += int(value)
    return out


def throttled(text: str) -> float:
    """`backup_monitor_arm_throttled_total` of a /metrics text, every label summed."""
    return sum(v for n, _, v in parse_metrics(text) if n == "backup_monitor_arm_throttled_total")


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95 and max of `values` (NaN when there are none)."""
    out = lag_summary(list(values))
    out["max"] = max(values) if values else float("nan")
    return out


def recovery_points(
    runs: Iterable[Mapping[str, Any]],
    transitions: Iterable[Mapping[str, Any]],
    initial: Mapping[str, datetime],
) -> dict[str, list[datetime]]:
    """Each item's recovery points, sorted: the end (`at`) of every succeeded transition of a
    job a non-log scheduled run made (the job's run from `runs`' `job_id`), and `initial`'s
    `lastRecoveryPoint` of the item (lower-cased id)."""
    item_of = {
        str(r["job_id"]).lower(): str(r["item_id"]).lower()
        for r in runs
        if r.get("job_id") is not None and str(r["kind"]).lower() != "log"
    }
    points: dict[str, set[datetime]] = {i.lower(): {at} for i, at in initial.items()}
    for t in transitions:
        if t.get("to") not in SUCCEEDED or t.get("operation") == LOG_OPERATION:
            continue
        item = item_of.get(str(t["job_id"]).lower())
        if item is not None:
            points.setdefault(item, set()).add(parse_at(str(t["at"])).astimezone(UTC))
    return {item: sorted(ps) for item, ps in points.items()}


def last_point(points: Sequence[datetime], t: datetime) -> datetime | None:
    """The latest of the sorted `points` at or before `t`."""
    i = bisect.bisect_right(points, t)
    return points[i - 1] if i else None


def evaluations(
    epoch: datetime, phase_s: float, start: datetime, until: datetime
) -> list[datetime]:
    """The alert's evaluation times epoch + phase + n × 6 h within [start, until]."""
    first = epoch + timedelta(seconds=phase_s)
    if start > first:
        n = -(-(start - first).total_seconds() // ALERT_PERIOD_S)
        first += timedelta(seconds=n * ALERT_PERIOD_S)
    out: list[datetime] = []
    t = first
    while t <= until:
        out.append(t)
        t += timedelta(seconds=ALERT_PERIOD_S)
    return out


def peer_detects(
    points: Sequence[datetime],
    due: datetime,
    *,
    threshold_s: float,
    epoch: datetime,
    phase_s: float,
    until: datetime,
) -> datetime | None:
    """When the recovery-point-age alert first reports a run due at `due` that made no job.

    The first evaluation t ≥ `due` (and ≤ `until`) at which the item's latest recovery point at
    t (None: never had one, taken as `epoch`) is older than `due` and t − it > `threshold_s`;
    None if a later recovery point comes first or the window ends.
    """
    for t in evaluations(epoch, phase_s, due, until):
        last = last_point(points, t) or epoch
        if last >= due:
            return None
        if (t - last).total_seconds() > threshold_s:
            return t
    return None


@dataclass
class PeerFigures:
    """The simulated alert's figures for one threshold, averaged over the phases."""

    threshold_days: float
    runs: int = 0
    detected_share: float = 0.0
    delays_s: list[float] = field(default_factory=list)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    unexplained_firings_per_phase: float = 0.0
    unexplained_items: int = 0
    unexplained_item_ids: list[str] = field(default_factory=list)
    detected_runs: list[tuple[str, datetime, str]] = field(default_factory=list)
    """`run_key` of each detection (a run once per phase that detects it)."""


def peer_figures(
    skipped: Sequence[Mapping[str, Any]],
    points: Mapping[str, Sequence[datetime]],
    *,
    threshold_days: float,
    epoch: datetime,
    window: tuple[datetime, datetime],
    phases: int,
    explained_by: Sequence[Mapping[str, Any]] | None = None,
) -> PeerFigures:
    """The alert against the judged skipped runs, over `phases` phases spread over 6 h.

    `skipped`: the judged runs (`item_id`, `due`, `kind`); `points`: `recovery_points`; detected
    only up to `window`'s end. Also the firings in `window` on items none of whose non-log runs
    since their last recovery point is in `explained_by` (every skipped run; default `skipped`):
    the alert firing on a policy's normal gap or a job that ended late.
    """
    threshold_s = threshold_days * 86400.0
    start, until = window
    fig = PeerFigures(threshold_days=threshold_days, runs=len(skipped))
    detected = 0
    kind_delays: dict[str, list[float]] = {k: [] for k in KINDS}
    kind_detected: Counter[str] = Counter()
    skipped_by_item: dict[str, list[datetime]] = {}
    for r in skipped if explained_by is None else explained_by:
        if str(r["kind"]).lower() != "log":
            item = str(r["item_id"]).lower()
            skipped_by_item.setdefault(item, []).append(parse_at(str(r["due"])))
    unexplained = 0
    noisy: set[str] = set()
    for n in range(phases):
        phase_s = ALERT_PERIOD_S * n / phases
        for r in skipped:
            due = parse_at(str(r["due"]))
            item = str(r["item_id"]).lower()
            at = peer_detects(
                points.get(item, ()),
                due,
                threshold_s=threshold_s,
                epoch=epoch,
                phase_s=phase_s,
                until=until,
            )
            if at is not None:
                detected += 1
                fig.detected_runs.append(run_key(item, due, str(r["kind"])))
                delay = (at - due).total_seconds()
                fig.delays_s.append(delay)
                kind = str(r["kind"]).lower()
                kind_delays.setdefault(kind, []).append(delay)
                kind_detected[kind] += 1
        for item, ps in points.items():
            for t in evaluations(epoch, phase_s, start, until):
                last = last_point(ps, t) or epoch
                if (t - last).total_seconds() <= threshold_s:
                    continue
                if not any(last < due <= t for due in skipped_by_item.get(item, ())):
                    unexplained += 1
                    noisy.add(item)
    total = len(skipped) * phases
    fig.detected_share = detected / total if total else float("nan")
    fig.unexplained_firings_per_phase = unexplained / phases
    fig.unexplained_items = len(noisy)
    fig.unexplained_item_ids = sorted(noisy)
    kinds = Counter(str(r["kind"]).lower() for r in skipped)
    for kind, values in kind_delays.items():
        runs = kinds.get(kind, 0) * phases
        fig.by_kind[kind] = {
            **summary(values),
            "runs": kinds.get(kind, 0),
            "detected_share": kind_detected[kind] / runs if runs else float("nan"),
        }
    return fig


def report_delays(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, datetime, str], float]:
    """Seconds from each reported run's due time to its first `backup_missed` event, by
    `run_key`."""
    out: dict[tuple[str, datetime, str], float] = {}
    for e in events:
        if e.get("event") != MISSED:
            continue
        run = e["expected_run"]
        due = parse_at(str(run["due_time"]))
        key = run_key(str(e["item"]["id"]), due, str(run["kind"]))
        out.setdefault(key, (parse_at(str(e["time"])) - due).total_seconds())
    return out


def same_runs_ratio(
    peer_runs: Sequence[tuple[str, datetime, str]],
    peer_delays: Sequence[float],
    ours: Mapping[tuple[str, datetime, str], float],
) -> float | None:
    """The peer's mean delay over ours on the runs both reported (`peer_runs` and
    `peer_delays` side by side, a run as often as the peer reported it); None if there are none.
    """
    pairs = [(d, ours[k]) for k, d in zip(peer_runs, peer_delays, strict=True) if k in ours]
    if not pairs:
        return None
    return statistics.fmean(p for p, _ in pairs) / statistics.fmean(o for _, o in pairs)


def judge_missed(
    events: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    *,
    judged_from: datetime,
    judged_until: datetime,
) -> dict[str, Any]:
    """PROTECTION's `backup_missed` events against the ground truth.

    Judged: runs with no job due at `judged_from` ≤ due ≤ `judged_until`; per kind, how many,
    the share reported, and the delay of each report (event time − due, − deadline). False
    reports: events of runs that made a job; unknown: events of runs no schedule made.
    """
    truth = {run_key(str(r["item_id"]), parse_at(str(r["due"])), str(r["kind"])): r for r in runs}
    reports: dict[tuple[str, datetime, str], Mapping[str, Any]] = {}
    duplicates = 0
    for e in events:
        if e.get("event") != MISSED:
            continue
        run = e["expected_run"]
        key = run_key(str(e["item"]["id"]), parse_at(str(run["due_time"])), str(run["kind"]))
        if key in reports:
            duplicates += 1
        reports.setdefault(key, e)
    judged = [
        k
        for k, r in truth.items()
        if r.get("job_id") is None and judged_from <= k[1] <= judged_until
    ]
    out: dict[str, Any] = {
        "reports": len(reports),
        "duplicates": duplicates,
        "false_reports": sum(
            1 for k in reports if k in truth and truth[k].get("job_id") is not None
        ),
        "unknown_reports": sum(1 for k in reports if k not in truth),
        "by_kind": {},
    }
    all_due: list[float] = []
    all_deadline: list[float] = []
    reported = 0
    for kind in KINDS:
        mine = [k for k in judged if k[2] == kind]
        due_delays: list[float] = []
        deadline_delays: list[float] = []
        for k in mine:
            report = reports.get(k)
            if report is None:
                continue
            at = parse_at(str(report["time"]))
            due_delays.append((at - k[1]).total_seconds())
            deadline = parse_at(str(report["expected_run"]["deadline"]))
            deadline_delays.append((at - deadline).total_seconds())
        reported += len(due_delays)
        all_due += due_delays
        all_deadline += deadline_delays
        out["by_kind"][kind] = {
            "judged": len(mine),
            "reported": len(due_delays),
            "reported_share": len(due_delays) / len(mine) if mine else float("nan"),
            "delay_after_due_s": summary(due_delays),
            "delay_after_deadline_s": summary(deadline_delays),
        }
    out["judged"] = len(judged)
    out["reported"] = reported
    out["reported_share"] = reported / len(judged) if judged else float("nan")
    out["delay_after_due_s"] = summary(all_due)
    out["delay_after_deadline_s"] = summary(all_deadline)
    out["lost"] = sorted(f"{k[0]} {k[1].isoformat()} {k[2]}" for k in judged if k not in reports)[
        :10
    ]
    return out


def added_reads(
    before: Mapping[str, Counter[str]],
    after: Mapping[str, Counter[str]],
    *,
    vaults: int,
    world_hours: float,
) -> dict[str, Any]:
    """Reads per vault per world hour of each party, and PROTECTION's excess over the peer."""
    per: dict[str, dict[str, float]] = {}
    for party in PARTIES:
        delta = after[party] - before[party]
        per[party] = {kind: n / vaults / world_hours for kind, n in sorted(delta.items())}
        per[party]["total"] = sum(delta.values()) / vaults / world_hours
    return {
        "per_vault_hour": per,
        "added_per_vault_hour": per["protection"]["total"] - per["peer_no_protection"]["total"],
        "items_list_per_vault_hour": per["protection"].get("items_list", 0.0),
        "policies_list_per_vault_hour": per["protection"].get("policies_list", 0.0),
    }


# ---------------------------------------------------------------------------- processes


async def read_all(http: aiohttp.ClientSession, url: str, route: str, key: str) -> list[Any]:
    """Every row of a paged `/_emulator/...` route (`since`, `next`)."""
    rows: list[Any] = []
    since = 0
    while True:
        page = await get_json(http, f"{url}/_emulator/{route}?since={since}&limit=100000")
        rows += page[key]
        if not page[key]:
            return rows
        since = page["next"]


async def initial_points(
    http: aiohttp.ClientSession, url: str, token: str, vaults: Sequence[str]
) -> dict[str, datetime]:
    """Each item's `lastRecoveryPoint` (lower-cased id) from its vault's backupProtectedItems."""
    out: dict[str, datetime] = {}
    headers = {"Authorization": f"Bearer {token}"}
    for vault in vaults:
        next_url: str | None = f"{url}{vault}/backupProtectedItems?{ITEMS_API}"
        while next_url:
            async with http.get(next_url, headers=headers) as response:
                response.raise_for_status()
                page = await response.json()
            for row in page["value"]:
                last = row["properties"].get("lastRecoveryPoint")
                if last:
                    out[str(row["id"]).lower()] = parse_at(str(last)).astimezone(UTC)
            next_url = page.get("nextLink")
    return out


@dataclass
class Snapshot:
    """One daemon's /metrics and the emulator's read log of its principal, at a world time."""

    at: datetime
    reads: Counter[str]
    throttled_daemon: float
    served: int
    throttled_429: int


async def snapshot(
    http: aiohttp.ClientSession, url: str, port: int, principal: str, clock: ScaledClock
) -> Snapshot:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        response.raise_for_status()
        text = await response.text()
    log = await get_json(http, f"{url}/_emulator/reads?principal={principal}")
    rows = [*log["vaults"], *log["outside_vaults"]]
    return Snapshot(
        at=clock.utcnow(),
        reads=reads_by_kind(text),
        throttled_daemon=throttled(text),
        served=sum(int(r.get("served", 0)) for r in rows),
        throttled_429=sum(int(r.get("throttled_429", 0)) for r in rows),
    )


def daemon_config(
    path: Path,
    *,
    url: str,
    token: str,
    ca: Path,
    subscriptions: Sequence[str],
    state: Path,
    events: Path,
    clock: ScaledClock,
    protection: bool,
) -> None:
    """`bench.estate.write_config`'s config plus the world-second intervals, `[clock]` and
    `[protection]`."""
    write_config(
        path,
        url=url,
        token=token,
        ca=ca,
        subscriptions=subscriptions,
        state=state,
        events=events,
        ops_listen="127.0.0.1:0",
    )
    text = path.read_text()
    for table, line in (
        ("[azure]\n", "request_timeout_s = 600\n"),  # world seconds (its most): 1 real s at 600×
        ("[discovery]\n", "interval_s = 86400\n"),
    ):
        assert table in text
        text = text.replace(table, table + line, 1)
    text += "\n".join(
        [
            "[poll]",
            "active_interval_s = 900",
            "idle_interval_s = 3600",
            "[clock]",
            f"speed = {clock.speed!r}",
            f'start = "{clock.start.isoformat()}"',
            f"anchor = {clock.anchor!r}",
            "[protection]",
            f"enabled = {'true' if protection else 'false'}",
            "",
        ]
    )
    path.write_text(text)


async def sleep_until(clock: ScaledClock, moment: datetime) -> None:
    left = (moment - clock.utcnow()).total_seconds()
    if left > 0:
        await asyncio.sleep(left / clock.speed)


async def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    tls = make_tls(tmp / "tls")
    anchor = time.time()
    clock = ScaledClock(args.speed, args.start, anchor)
    stop_at = args.start + timedelta(days=args.days)
    command = [
        "backup-monitor", "emulator", "--port", "0", "--seed", str(args.seed),
        "--profile", "policies", "--subscriptions", str(args.subscriptions),
        "--vaults-per-subscription", str(args.vaults_per_subscription),
        "--skip-rate", f"{args.skip_rate:g}", "--clock-speed", f"{args.speed!r}",
        "--clock-start", args.start.isoformat(), "--clock-anchor", f"{anchor!r}",
        "--token-lifetime", f"{3600 * args.speed:.0f}",
        "--tls-cert", str(tls[1]), "--tls-key", str(tls[2]),
    ]  # fmt: skip
    emu = spawn_emulator(command)
    lifetime_s = (stop_at - args.start).total_seconds() + 30 * 86400.0
    daemons: dict[str, DaemonProcess] = {}
    ssl_context = ssl.create_default_context(cafile=str(tls[0]))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            vault_ids = [v["id"] for s in world["subscriptions"] for v in s["vaults"]]
            items = sum(len(v["items"]) for s in world["subscriptions"] for v in s["vaults"])
            truth_token = await mint(http, emu.url, "bench-truth", lifetime_s)
            initial = await initial_points(http, emu.url, truth_token, vault_ids)
            initial_at = clock.utcnow()
            for party in PARTIES:
                d = tmp / party
                d.mkdir()
                daemon_config(
                    d / "monitor.toml",
                    url=emu.url,
                    token=await mint(http, emu.url, f"bench-{party}", lifetime_s),
                    ca=tls[0],
                    subscriptions=subs,
                    state=d / "state.sqlite",
                    events=d / "events.jsonl",
                    clock=clock,
                    protection=party == "protection",
                )
                daemons[party] = DaemonProcess(
                    party, d / "monitor.toml", d / "events.jsonl", d / "stderr.log"
                )
            for daemon in daemons.values():
                daemon.start()
            for daemon in daemons.values():
                await daemon.wait_started()
            started = clock.utcnow()
            window_start = started + WARMUP
            if window_start >= stop_at:
                raise RuntimeError(f"the daemons started at {started}, too late for {stop_at}")
            ports = {p: d.ops_port() for p, d in daemons.items()}
            await sleep_until(clock, window_start)
            before = {
                p: await snapshot(http, emu.url, ports[p], f"bench-{p}", clock) for p in PARTIES
            }
            await sleep_until(clock, stop_at)
            after = {
                p: await snapshot(http, emu.url, ports[p], f"bench-{p}", clock) for p in PARTIES
            }
            for daemon in daemons.values():
                await daemon.stop()
            stopped = clock.utcnow()
            runs = await read_all(http, emu.url, "expected", "runs")
            transitions = await read_all(http, emu.url, "transitions", "transitions")
            load = os.getloadavg()
    finally:
        for daemon in daemons.values():
            daemon.kill_if_running()
        emu.process.terminate()
        emu.process.wait(timeout=30)

    world_hours = statistics.fmean(
        (after[p].at - before[p].at).total_seconds() / 3600.0 for p in PARTIES
    )
    reads = added_reads(
        {p: before[p].reads for p in PARTIES},
        {p: after[p].reads for p in PARTIES},
        vaults=len(vault_ids),
        world_hours=world_hours,
    )
    reads["emulator_served_per_vault_hour"] = {
        p: (after[p].served - before[p].served) / len(vault_ids) / world_hours for p in PARTIES
    }
    reads["throttled_429_emulator"] = {
        p: after[p].throttled_429 - before[p].throttled_429 for p in PARTIES
    }
    reads["throttled_daemon_metrics"] = {
        p: after[p].throttled_daemon - before[p].throttled_daemon for p in PARTIES
    }
    judged_until = stop_at - LONGEST_GRACE - DECIDED_AFTER
    events = daemons["protection"].read_events()
    ours = judge_missed(events, runs, judged_from=window_start, judged_until=judged_until)
    skipped = [
        r
        for r in runs
        if r.get("job_id") is None and window_start <= parse_at(str(r["due"])) <= judged_until
    ]
    every_skipped = [r for r in runs if r.get("job_id") is None]
    policy_of = {str(r["item_id"]).lower(): str(r.get("policy_id", "")) for r in runs}
    points = recovery_points(runs, transitions, initial)
    peers: dict[str, Any] = {}
    mine = report_delays(events)
    for days in THRESHOLDS_DAYS:
        fig = peer_figures(
            skipped,
            points,
            threshold_days=days,
            epoch=args.start,
            window=(window_start, stop_at),
            phases=args.phases,
            explained_by=every_skipped,
        )
        # The runs the alert had time to report: due a threshold and a period before the stop.
        latest = stop_at - timedelta(days=days, seconds=ALERT_PERIOD_S)
        given = peer_figures(
            [r for r in skipped if parse_at(str(r["due"])) <= latest],
            points,
            threshold_days=days,
            epoch=args.start,
            window=(window_start, stop_at),
            phases=args.phases,
            explained_by=every_skipped,
        )
        delay = summary(fig.delays_s)
        ours_mean = ours["delay_after_due_s"]["mean"]
        peers[f"threshold_{days}d"] = {
            "threshold_days": days,
            "runs": fig.runs,
            "detected_share": fig.detected_share,
            "delay_after_due_s": delay,
            "by_kind": fig.by_kind,
            "ratio_mean_delay_peer_over_ours": delay["mean"] / ours_mean if ours_mean else None,
            "ratio_on_the_same_runs": same_runs_ratio(fig.detected_runs, fig.delays_s, mine),
            "unexplained_firings_per_phase": fig.unexplained_firings_per_phase,
            "unexplained_items": fig.unexplained_items,
            "unexplained_items_by_policy": dict(
                Counter(policy_of.get(i, "").rsplit("/", 1)[-1] for i in fig.unexplained_item_ids)
            ),
            "given_time": {
                "due_before": latest.isoformat(),
                "runs": given.runs,
                "detected_share": given.detected_share,
                "delay_after_due_s": summary(given.delays_s),
            },
        }
    return {
        "world": {
            "start": args.start.isoformat(),
            "stop": stop_at.isoformat(),
            "daemons_started": started.isoformat(),
            "window_start": window_start.isoformat(),
            "judged_until": judged_until.isoformat(),
            "stopped": stopped.isoformat(),
            "world_hours_measured": world_hours,
            "vaults": len(vault_ids),
            "items": items,
            "items_with_initial_recovery_point": len(initial),
            "initial_read_at": initial_at.isoformat(),
            "scheduled_runs": len(runs),
            "skipped_runs": sum(1 for r in runs if r.get("job_id") is None),
        },
        "reads": reads,
        "ours": ours,
        "peer": peers,
        "loadavg_at_end": list(load),
    }


# ---------------------------------------------------------------------------- output


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def minutes(seconds: Any) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds / 60:,.1f} min"


def table(result: Mapping[str, Any]) -> str:
    """The figures as a text table."""
    run = result["run"]
    reads, ours = run["reads"], run["ours"]
    lines = [
        f"world {run['world']['start']} → {run['world']['stop']}: {run['world']['vaults']} vaults, "
        f"{run['world']['items']} items, {run['world']['scheduled_runs']} runs, "
        f"{run['world']['skipped_runs']} skipped; measured "
        f"{fmt(run['world']['world_hours_measured'])} world hours",
        "",
        "ARM reads per vault per world hour   protection   peer (no protection)",
    ]
    per = reads["per_vault_hour"]
    for kind in sorted(set(per["protection"]) | set(per["peer_no_protection"])):
        lines.append(
            f"  {kind:<34} {fmt(per['protection'].get(kind, 0.0), 2):>10}   "
            f"{fmt(per['peer_no_protection'].get(kind, 0.0), 2):>10}"
        )
    lines += [
        f"  added by [protection]: {fmt(reads['added_per_vault_hour'], 2)} reads per vault-hour "
        f"(items_list {fmt(reads['items_list_per_vault_hour'], 2)}, "
        f"policies_list {fmt(reads['policies_list_per_vault_hour'], 2)})",
        f"  429s: emulator {reads['throttled_429_emulator']}, "
        f"daemons {reads['throttled_daemon_metrics']}",
        "",
        "missed run → event       judged  reported  mean after due  p50      max      "
        "mean after deadline",
    ]
    for kind in (*KINDS, "all"):
        row = ours if kind == "all" else ours["by_kind"][kind]
        lines.append(
            f"  {kind:<22} {row['judged']:>6}  {fmt(row['reported_share'] * 100, 0):>6} %  "
            f"{minutes(row['delay_after_due_s']['mean']):>14}  "
            f"{minutes(row['delay_after_due_s']['p50']):>8} "
            f"{minutes(row['delay_after_due_s']['max']):>8}  "
            f"{minutes(row['delay_after_deadline_s']['mean']):>10}"
        )
    lines.append(
        f"  false reports {ours['false_reports']}, unknown {ours['unknown_reports']}, "
        f"duplicates {ours['duplicates']}"
    )
    lines += ["", "peer: recovery-point age alert (PT6H), averaged over phases"]
    for peer in run["peer"].values():
        lines.append(
            f"  threshold {peer['threshold_days']} d: detected "
            f"{fmt(peer['detected_share'] * 100, 0)} % in the window, mean delay "
            f"{minutes(peer['delay_after_due_s']['mean'])} (p50 "
            f"{minutes(peer['delay_after_due_s']['p50'])}), "
            f"{fmt(peer['ratio_mean_delay_peer_over_ours'])}× ours "
            f"({fmt(peer['ratio_on_the_same_runs'])}× on the same runs); "
            f"{fmt(peer['unexplained_firings_per_phase'])} firings with no skipped run "
            f"({peer['unexplained_items']} items)"
        )
        given = peer["given_time"]
        lines.append(
            f"    of the {given['runs']} runs due a threshold + 6 h before the stop: detected "
            f"{fmt(given['detected_share'] * 100, 0)} %, mean delay "
            f"{minutes(given['delay_after_due_s']['mean'])}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.days = 1.0
    pin(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; emulator pinned to core 0, daemons to core 1"
    )
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/missed_backups.py", *sys.argv[1:]]),
        "machine": machine,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": list(os.getloadavg()),
        "settings": {
            "speed": args.speed,
            "start": args.start.isoformat(),
            "days": args.days,
            "subscriptions": args.subscriptions,
            "vaults_per_subscription": args.vaults_per_subscription,
            "skip_rate": args.skip_rate,
            "seed": args.seed,
            "phases": args.phases,
            "poll": {"active_interval_s": 900, "idle_interval_s": 3600},
            "discovery_interval_s": 86400,
            "protection": {
                "items_interval_s": PROTECTION.items_interval_s,
                "policies_interval_s": PROTECTION.policies_interval_s,
                "grace_s": PROTECTION.grace_s,
                "grace_fraction": PROTECTION.grace_fraction,
            },
            "alert_period_s": ALERT_PERIOD_S,
            "thresholds_days": list(THRESHOLDS_DAYS),
        },
    }
    tmp = tempfile.mkdtemp(prefix="bench-missed-")
    if args.keep:
        print(f"keeping configs, events and logs in {tmp}")
    t0 = time.monotonic()
    try:
        result["run"] = asyncio.run(one_run(args, Path(tmp)))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["run_s"] = time.monotonic() - t0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(table(result))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
