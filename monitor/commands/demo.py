"""`backup-monitor demo`: the daemon against an in-process emulator, narrated for a person.

Events are shown as readable lines as they are emitted; at the end a summary compares what the
monitor emitted with the emulator's ground truth (`/_emulator/transitions`) and reads the
emulator's request statistics for the budget and 429 figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TextIO

import aiohttp
import anyio

from monitor.clock import SystemClock
from monitor.commands.common import add_world_options, count_arg, positive_float, run_guarded
from monitor.commands.exits import EXIT_OK
from monitor.commands.run import open_monitor, stop_on_signals
from monitor.config_parse import parse_settings
from monitor.core.dataprotection import job_status
from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus
from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator.tour import run_tour
from monitor.events import EVENT_TYPE
from monitor.logs import configure_logging
from monitor.outbox import OutboxEvent

ARROW = "→"


@dataclass(slots=True)
class DemoSink:
    """A sink that prints each event as a line a person can read and keeps them for the summary."""

    kind: ClassVar[str] = "demo"
    out: TextIO
    events: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "default"

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        for item in batch:
            self.events.append(item.event)
            self.out.write(describe(item.event) + "\n")
        self.out.flush()

    async def delivered_ids(self) -> set[str]:
        """A demo starts afresh: nothing to read back."""
        return set()

    async def aclose(self) -> None:
        self.out.flush()


def _kind_of(job: Mapping[str, Any]) -> str:
    """A job's type, or for a Backup vault job its datasource type's last segment (`disks`)."""
    datasource = job.get("datasource_type")
    if datasource:
        return f"bv:{str(datasource).rsplit('/', 1)[-1]}"
    return str(job["type"] or "?")


SHORT_ID_CHARS = 8
"""How much of a job's id a demo line shows: its last characters (the same entity's jobs
otherwise look alike)."""


def lag_text(event: Mapping[str, Any]) -> str:
    """How a line states a job event's lag: `lag 3.2 s` for a change the monitor saw happen
    (the detection lag the summary averages), `first seen` for a job it had never seen (found
    already running or ended: the time since then is backfill, not detection); empty without
    a lag."""
    if event["job"]["previous_status"] is None:
        return "first seen"
    lag = event.get("detection_lag_s")
    return "" if lag is None else f"lag {lag:5.1f} s"


def describe(event: Mapping[str, Any]) -> str:
    """One event as a line: time, vault, job type, entity, operation, the job id's last 8
    characters, transition, lag (`lag_text`); an item event (or a long-running job) as time,
    vault, its type and what it is about."""
    if event.get("event") != EVENT_TYPE:
        return _describe_other(event)
    job, vault = event["job"], event["vault"]
    before = job["previous_status"] or "new"
    lag = lag_text(event)
    errors = job.get("errors") or []
    error_text = ""
    if errors:
        code = errors[0].get("code")
        error_text = f"  [{code}] " if code else "  "
        error_text += str(errors[0].get("message") or "")
    return (
        f"{event['time'][11:19]}  {vault['name']:<13} {_kind_of(job):<17} "
        f"{(job['entity'] or '')[:22]:<22} {(job['operation'] or '')[:21]:<21} "
        f"{str(job['id'])[-SHORT_ID_CHARS:]:<{SHORT_ID_CHARS}}  "
        f"{before:>21} {ARROW} {job['status']:<21}{'  ' + lag if lag else ''}{error_text}"
    ).rstrip()


def _describe_other(event: Mapping[str, Any]) -> str:
    item = event.get("item") or {}
    job = event.get("job") or {}
    about = item.get("friendly_name") or item.get("name") or job.get("entity") or ""
    kind = str(event.get("event", "?")).split(".", 1)[-1]
    return f"{event['time'][11:19]}  {event['vault']['name']:<13} {kind:<17} {str(about)[:40]}"


def summarize(
    events: Sequence[Mapping[str, Any]],
    transitions: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Any],
    *,
    cutoff_at: datetime,
    duration_s: float,
    budget_per_s: float,
) -> list[str]:
    """The closing summary as lines.

    Args:
        events: every event the monitor emitted.
        transitions: the emulator's ground truth for the whole run.
        stats: `/_emulator/stats`.
        cutoff_at: terminal transitions after this are too recent to require (still in flight).
        duration_s: how long the daemon ran.
        budget_per_s: the monitor's read budget per subscription.
    """
    lines = ["", f"summary after {duration_s:.0f} s:"]
    others = Counter(str(e.get("event")) for e in events if e.get("event") != EVENT_TYPE)
    events = [e for e in events if e.get("event") == EVENT_TYPE]
    outcomes = Counter(e["job"]["outcome"] or "running" for e in events)
    backfill = sum(1 for e in events if e["job"]["previous_status"] is None)
    lines.append(
        f"  {len(events)} events ({backfill} first sightings, {len(events) - backfill} changes): "
        + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    )
    # Exactly the lags the lines print as `lag`: changes seen happening, not first sightings.
    live_lags = sorted(
        e["detection_lag_s"]
        for e in events
        if e["job"]["previous_status"] is not None and e.get("detection_lag_s") is not None
    )
    if live_lags:
        p95 = live_lags[min(len(live_lags) - 1, round(0.95 * (len(live_lags) - 1)))]
        lines.append(
            f"  detection lag of jobs seen finishing: mean {statistics.fmean(live_lags):.1f} s, "
            f"p95 {p95:.1f} s over {len(live_lags)} jobs (the lines' lag; first sightings are "
            "backfill, not counted)"
        )
    if others:
        lines.append("  item events: " + ", ".join(f"{n} {k}" for k, n in sorted(others.items())))
    emitted = Counter(str(e["event_id"]) for e in events)
    expected = {
        event_id(t["vault_id"], t["job_id"], status)
        for t in transitions
        if (status := truth_status(t)).is_terminal and _at(t) <= cutoff_at
    }
    caught = sum(1 for eid in expected if eid in emitted)
    duplicates = sum(n - 1 for n in emitted.values() if n > 1)
    lines.append(
        f"  ground truth: {caught} of {len(expected)} terminal transitions emitted, "
        f"{duplicates} duplicate event ids"
    )
    scopes = {k: v for k, v in stats.get("by_scope", {}).items() if k != "tenant"}
    if scopes:
        peak = max(v["peak_per_s_10s"] for v in scopes.values())
        rate = sum(v["requests"] for v in scopes.values()) / max(duration_s, 1e-9) / len(scopes)
        lines.append(
            f"  ARM reads: {rate:.1f}/s per subscription on average, peak {peak:.1f}/s over 10 s, "
            f"budget {budget_per_s:.1f}/s; {stats.get('throttled_429', 0)} answered 429"
        )
    return lines


def truth_status(transition: Mapping[str, Any]) -> JobStatus:
    """An emulator ground-truth row's status as events carry it (a Backup vault's `Succeeded` is
    `Completed`, its `Started` `InProgress`)."""
    if transition.get("vault_kind") == "backup_vault":
        return job_status(str(transition["to"]))
    return JobStatus.of(str(transition["to"]))


def _at(transition: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(transition["at"]).replace("Z", "+00:00"))


def add_demo_parser(commands: Any) -> None:
    """The `demo` command."""
    demo = commands.add_parser(
        "demo",
        help="run the daemon against the built-in emulator and narrate what happens",
        description=(
            "Start the emulator in-process with its demo profile and the daemon against it; show "
            "each event as it is emitted and end with a summary checked against the emulator's "
            "ground truth."
        ),
    )
    demo.add_argument(
        "--duration", type=positive_float, default=60.0, help="seconds to run (default: 60)"
    )
    add_world_options(demo, subscriptions=2, vaults=4)
    demo.add_argument(
        "--backup-vaults-per-subscription",
        type=count_arg,
        default=2,
        help="Backup vaults (Microsoft.DataProtection) in each subscription (default: 2)",
    )
    demo.add_argument(
        "--tour",
        action="store_true",
        help="instead of the daemon, walk through what the emulator serves as a plain client",
    )


DEMO_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "azure": {"credential": "static", "allow_http_loopback": True},
    "poll": {"active_interval_s": 5, "idle_interval_s": 10, "lookback_s": 600},
    "discovery": {"interval_s": 30},
    "state": {"path": ":memory:"},
    "log": {"level": "warning"},
}


async def demo(args: argparse.Namespace, out: TextIO) -> None:
    """The daemon against an in-process emulator for `args.duration` seconds, narrated."""
    world = WorldSettings(
        seed=args.seed,
        subscriptions=args.subscriptions,
        vaults_per_subscription=args.vaults_per_subscription,
        backup_vaults_per_subscription=args.backup_vaults_per_subscription,
    )
    clock, rng = SystemClock(), random.Random(args.seed)
    async with running_emulator(EmulatorSettings(world=world)) as emu:
        raw = {section: dict(values) for section, values in DEMO_SETTINGS.items()}
        raw["azure"].update(arm_endpoint=emu.url + "/", static_token=emu.token)
        settings = parse_settings(raw)
        sink = DemoSink(out)
        out.write(
            f"emulator at {emu.url}: {args.subscriptions} subscriptions x "
            f"({args.vaults_per_subscription} Recovery Services vaults + "
            f"{args.backup_vaults_per_subscription} Backup vaults); the daemon runs "
            f"{args.duration:.0f} s\n\n"
        )
        started = clock.monotonic()
        async with (
            open_monitor(settings, clock=clock, rng=rng, sink=sink) as scheduler,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(stop_on_signals, lambda: scheduler, tg.cancel_scope)

            async def stop_later() -> None:
                await clock.sleep(args.duration)
                scheduler.stop()

            tg.start_soon(stop_later)
            await scheduler.run()
            tg.cancel_scope.cancel()
        duration = clock.monotonic() - started
        async with aiohttp.ClientSession() as http:
            transitions = []
            for kind in ("recovery_services", "backup_vault"):
                url = f"{emu.url}/_emulator/transitions?kind={kind}&limit=100000"
                async with http.get(url) as response:
                    transitions += (await response.json())["transitions"]
            async with http.get(f"{emu.url}/_emulator/stats") as response:
                stats = await response.json()
        cutoff = clock.utcnow() - timedelta(seconds=2 * settings.poll.idle_interval_s)
        for line in summarize(
            sink.events,
            transitions,
            stats,
            cutoff_at=cutoff,
            duration_s=duration,
            budget_per_s=settings.budget.read_fraction * settings.budget.reads_per_s,
        ):
            out.write(line + "\n")


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor demo`: the daemon against the emulator (or `--tour`: a plain client)."""
    if args.tour:
        settings = EmulatorSettings(
            world=WorldSettings(
                seed=args.seed,
                subscriptions=args.subscriptions,
                vaults_per_subscription=args.vaults_per_subscription,
            ),
            page_size=5,
        )
        anyio.run(lambda: run_tour(settings, duration_s=args.duration, out=out))
        return EXIT_OK
    configure_logging("warning", "auto")
    return run_guarded(demo, args, out)
