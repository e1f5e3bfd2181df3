"""The transactional outbox (issue 11) against its peers, in the same run: two figures.

1. DAEMON CPU PER POLL, with the outbox against without it (bar: at most 1.2×). One emulator
   (`--profile estate`, HTTPS, pinned to core 0) serves, at the same time, daemons pinned to
   core 1 that all watch the same vaults, each with a principal (a token) of its own so their
   ARM read budgets are separate:
   - `baseline`: the daemon as it was before the outbox (`--baseline REV`, default 2bd1ad4:
     emit to the file, then checkpoint), run from a temporary `git worktree` of that revision;
   - `outbox`: this tree's daemon, `[events] sink` into a file (the default sink: committed to
     the outbox with the checkpoint, then delivered to the file, fsynced);
   - `outbox+webhook`: this tree's daemon with the same file sink and a second sink, a json
     webhook (signed, default batching) into a loopback receiver in a separate process.
   Active = idle = 1 s, so the read budget decides how often a vault is polled (equal budgets,
   about equal polls). CPU: utime+stime from /proc/<pid>/stat between `scheduler.started` and
   the stop, divided by the polls of the daemon's `shutdown.done` line (bench/estate.py).

2. OUTBOX THROUGHPUT ON ONE CORE (bar: 2,000 events/s into a loopback webhook). N synthetic
   schema v1 events (`render_event` of synthetic jobs) are committed into a real SQLite state
   file with `SqliteCheckpointStore.save(..., events=...)`, 10 per poll. Then this process,
   pinned to core 1, runs a `Delivery` with one sink from the oldest event: a `WebhookSink`
   (json, signed) into a receiver in a separate process on core 0 (tests/receivers.py
   `WebhookReceiver`, which checks every signature), at linger 1 s (the default) and 0 s; then
   a `FileSink` (fsync on). Figures: wall time from the start until the receiver holds all N
   events and the sink's cursor is stored at N, events/s, CPU seconds of this process in that
   time; and whether every event arrived exactly once, in outbox order.

Run: PYTHONPATH=. .venv/bin/python bench/outbox.py --quick   (about 2½ minutes)
     PYTHONPATH=. .venv/bin/python bench/outbox.py           (about 5½ minutes)
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import structlog

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

from bench.estate import (  # noqa: E402
    DaemonProcess,
    add_world_arguments,
    cpu_s,
    estate_poll,
    fmt,
    get_json,
    merge_results,
    mint,
    pin,
    start_estate,
    tree_env,
    write_config,
)
from monitor.clock import SystemClock  # noqa: E402
from monitor.commands.common import number_arg  # noqa: E402
from monitor.config_sinks import FileSinkSettings, OutboxSettings, WebhookSinkSettings  # noqa: E402
from monitor.core.diff import JobSnapshot, JobStateChanged  # noqa: E402
from monitor.core.jobs import BackupJob, JobKey, JobStatus  # noqa: E402
from monitor.core.vaults import VaultRef, parse_vault_id  # noqa: E402
from monitor.delivery import Delivery, SinkRoute  # noqa: E402
from monitor.events import render_event  # noqa: E402
from monitor.outbox import EventLine, OutboxSink  # noqa: E402
from monitor.sink_http import open_sink_session  # noqa: E402
from monitor.sinks import build_line_sink  # noqa: E402
from monitor.sinks_webhook import WebhookSink  # noqa: E402
from monitor.store import SqliteCheckpointStore  # noqa: E402

CPU_BAR = 1.2
"""Daemon CPU per poll with the outbox may be at most this many times that without it."""
THROUGHPUT_BAR = 2000.0
"""Events/s the outbox delivers into a loopback webhook on one core, at least."""
SECRET_ENV = "BENCH_OUTBOX_WEBHOOK_SECRET"
SECRET = "bench-outbox-secret"
EVENTS_PER_POLL = 10
STATUSES = ("InProgress", "Completed", "Failed", "CompletedWithWarnings", "Cancelled")


# ---------------------------------------------------------------------------- the receiver


def receiver_child(expect: int) -> None:
    """The receiver process: a `WebhookReceiver` (signatures checked) until stdin closes.

    Prints `{"url": …}` when it listens, `{"done": true}` once it accepted `expect` event ids
    (0: never), and at the end `{"ids": [...], "requests": n, "bad_signatures": n}`.
    """
    sys.path.insert(0, str(ROOT))
    from tests.receivers import WebhookReceiver

    pin(0)
    with WebhookReceiver(secret=SECRET.encode()) as receiver:
        print(orjson.dumps({"url": receiver.url}).decode(), flush=True)
        if expect:
            counted = [0, 0]  # requests counted, their event ids: each request is read once

            def enough(r: WebhookReceiver) -> bool:
                accepted = r.accepted
                counted[1] += sum(len(q.event_ids) for q in accepted[counted[0] :])
                counted[0] = len(accepted)
                return counted[1] >= expect

            receiver.wait_for(enough, timeout=3600)
            print('{"done": true}', flush=True)
        sys.stdin.read()
        summary = {
            "ids": receiver.event_ids(),
            "requests": len(receiver.requests),
            "bad_signatures": receiver.bad_signatures,
        }
        print(orjson.dumps(summary).decode(), flush=True)


class Receiver:
    """The receiver process, seen from here (asyncio pipes)."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process, self.url = process, url
        self.cpu_at_start = 0.0  # its start-up (imports, the server) is not counted

    @classmethod
    async def start(cls, expect: int = 0) -> Receiver:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--receiver-child",
            str(expect),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            **tree_env(ROOT),
        )
        assert process.stdout is not None
        banner = orjson.loads(await process.stdout.readline())
        receiver = cls(process, str(banner["url"]))
        receiver.cpu_at_start = cpu_s(process.pid)
        return receiver

    async def done(self) -> None:
        """Until the receiver accepted the events it expects."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the receiver process ended before it had every event")

    async def finish(self) -> dict[str, Any]:
        """Stop it; what it accepted, and the CPU seconds it used (`cpu_s`)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        used = cpu_s(self.process.pid) - self.cpu_at_start
        self.process.stdin.close()
        summary: dict[str, Any] = orjson.loads(await self.process.stdout.read())
        summary["cpu_s"] = used
        await self.process.wait()
        return summary

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def exactly_once_in_order(got: Sequence[str], expected: Sequence[str]) -> dict[str, Any]:
    """Counts of what a destination holds against the outbox's order of ids."""
    counts = Counter(got)
    first_seen: list[str] = []
    seen: set[str] = set()
    for eid in got:
        if eid not in seen:
            seen.add(eid)
            first_seen.append(eid)
    return {
        "expected": len(expected),
        "received": len(got),
        "distinct": len(counts),
        "missing": len(set(expected) - seen),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "unexpected": len(seen - set(expected)),
        "in_order": first_seen == list(expected),
    }


# ---------------------------------------------------------------------------- figure 1


@dataclass
class Party:
    name: str
    daemon: DaemonProcess
    tree: Path


def make_baseline(rev: str, into: Path) -> tuple[Path, str]:
    """A detached `git worktree` of `rev` at `into`, and its short commit id; refuses when a
    daemon run from a tree would not import that tree's `monitor`."""
    into.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(into), rev],
        check=True,
    )
    short = subprocess.run(
        ["git", "-C", str(into), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for tree in (into, ROOT):
        where = Path(imported_from(tree)).resolve()
        if not where.is_relative_to(tree.resolve()):
            remove_baseline(into)
            raise RuntimeError(f"python -m monitor run in {tree} would import {where}")
    return into, short


def remove_baseline(tree: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
    )
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def imported_from(tree: Path) -> str:
    """Where `python -m monitor` run as `DaemonProcess(tree=…)` runs it imports `monitor` from."""
    out = subprocess.run(
        [sys.executable, "-c", "import monitor; print(monitor.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        **tree_env(tree),
    )
    return str(out.stdout).strip()


async def cpu_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Figure 1: the daemons at once against one emulator; CPU ms per vault poll of each."""
    baseline, rev = await asyncio.to_thread(make_baseline, args.baseline, tmp / "baseline-tree")
    trees = {"baseline": baseline, "outbox": ROOT, "outbox+webhook": ROOT}
    emu, ca = start_estate(args, tmp)
    ssl_context = ssl.create_default_context(cafile=str(ca))
    parties: list[Party] = []
    receiver: Receiver | None = None
    old_env = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = SECRET  # the daemons inherit it (webhook `secret_env`)
    try:
        receiver = await Receiver.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            world = await get_json(http, f"{emu.url}/_emulator/world")
            subs = [s["id"] for s in world["subscriptions"]]
            history_s = 86400 / args.time_scale
            poll = estate_poll(
                active_s=1.0,
                idle_s=1.0,
                lookback_s=max(3600.0, 3 * history_s + 2 * args.duration),
                backfill=False,  # steady polling; the history is recorded silently
            )
            for name, tree in trees.items():
                d = tmp / name.replace("+", "-")
                d.mkdir()
                events = d / "events.jsonl"
                sinks: list[str] = []
                if name == "outbox+webhook":
                    sinks = [
                        "[[sinks]]",
                        'type = "file"',
                        f'path = "{events}"',
                        "[[sinks]]",
                        'type = "webhook"',
                        f'url = "{receiver.url}"',
                        'format = "json"',
                        f'secret_env = "{SECRET_ENV}"',
                    ]
                write_config(
                    d / "monitor.toml",
                    url=emu.url,
                    token=await mint(http, emu.url, f"bench-outbox-{len(parties)}"),
                    ca=ca,
                    subscriptions=subs,
                    state=d / "state.sqlite",
                    events=events,
                    poll=poll,
                    sinks=sinks,
                )
                daemon = DaemonProcess(
                    name,
                    d / "monitor.toml",
                    events,
                    d / "stderr.log",
                    tree=None if tree == ROOT else tree,
                )
                parties.append(Party(name, daemon, tree))
            print(
                f"emulator up: {len(subs)} subscriptions × {args.vaults_per_subscription} vaults; "
                f"baseline {args.baseline} ({rev}) in {baseline}"
            )
            for party in parties:
                party.daemon.start()
            for party in parties:
                await party.daemon.wait_started()
            print(f"daemons started; running {args.duration:g} s")
            await asyncio.sleep(args.duration)
            for party in parties:
                await party.daemon.stop()
        received = await receiver.finish()
        receiver = None
    finally:
        for party in parties:
            party.daemon.kill_if_running()
        if receiver is not None:
            receiver.kill()
        if old_env is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = old_env
        emu.process.terminate()
        emu.process.wait(timeout=20)
        remove_baseline(baseline)

    report: dict[str, Any] = {
        "emulator_command": shlex.join(emu.command),
        "baseline": args.baseline,
        "baseline_commit": rev,
        "duration_s": args.duration,
        "subscriptions": args.subscriptions,
        "vaults": args.subscriptions * args.vaults_per_subscription,
        "parties": {},
    }
    file_ids: list[str] = []
    for party in parties:
        daemon = party.daemon
        polls = daemon.polls()
        emitted = daemon.read_events()
        if party.name == "outbox+webhook":
            file_ids = [str(e["event_id"]) for e in emitted]
        ids = Counter(str(e["event_id"]) for e in emitted)
        report["parties"][party.name] = {
            "polls": polls,
            "events": len(emitted),
            "duplicated_event_ids": sum(n - 1 for n in ids.values() if n > 1),
            "cpu_s": daemon.cpu_s,
            "wall_s": daemon.wall_s,
            "cpu_ms_per_poll": 1000 * daemon.cpu_s / max(1, polls),
            "cpu_percent_of_core": 100 * daemon.cpu_s / max(1e-9, daemon.wall_s),
            "rss_mb": daemon.rss_mb,
        }
    webhook_ids = [str(i) for i in received["ids"]]
    # What the webhook got against what the same daemon's file sink wrote (in outbox order);
    # the last events may still have been lingering at the stop.
    report["webhook_vs_file"] = exactly_once_in_order(webhook_ids, file_ids[: len(webhook_ids)])
    report["webhook_vs_file"].update(
        requests=received["requests"], bad_signatures=received["bad_signatures"]
    )
    p = report["parties"]
    report["ratio"] = p["outbox"]["cpu_ms_per_poll"] / p["baseline"]["cpu_ms_per_poll"]
    report["ratio_with_webhook"] = (
        p["outbox+webhook"]["cpu_ms_per_poll"] / p["baseline"]["cpu_ms_per_poll"]
    )
    return report


# ---------------------------------------------------------------------------- figure 2

VAULT_IDS = tuple(
    "/subscriptions/00000000-0000-4000-8000-00000000b0b0/resourceGroups/rg-bench"
    f"/providers/Microsoft.RecoveryServices/vaults/rsv-bench-{i:02d}"
    for i in range(8)
)
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def synthetic(count: int) -> list[tuple[VaultRef, BackupJob, dict[str, object]]]:
    """`count` distinct job transitions over 8 vaults, `EVENTS_PER_POLL` in a row per vault:
    each one's vault, job and schema v1 event (`render_event`)."""
    vaults = [parse_vault_id(v, location="westeurope") for v in VAULT_IDS]
    out: list[tuple[VaultRef, BackupJob, dict[str, object]]] = []
    for i in range(count):
        vault = vaults[(i // EVENTS_PER_POLL) % len(vaults)]
        status = JobStatus.of(STATUSES[i % len(STATUSES)])
        name = f"7ddead57-0000-4000-8000-{i:012d}"
        start = T0 + timedelta(seconds=i)
        job = BackupJob(
            key=JobKey(vault_key=vault.key, job_name=name),
            name=name,
            resource_id=f"{vault.id}/backupJobs/{name}",
            job_type="AzureIaaSVMJob",
            operation="Backup",
            backup_management_type="AzureIaasVM",
            entity=f"vm-app-{i % 500:03d}",
            status=status,
            start_at=start,
            end_at=start + timedelta(minutes=42) if status.is_terminal else None,
            duration_raw="PT42M" if status.is_terminal else None,
            actions=(),
            activity_id=None,
            properties={},
        )
        observed = start + timedelta(minutes=43)
        change = JobStateChanged(
            vault_key=vault.key,
            job=job,
            previous_status=JobStatus.of("InProgress") if status.is_terminal else None,
            observed_at=observed,
        )
        event = render_event(change, vault=vault, details=None, emitted_at=observed)
        out.append((vault, job, event))
    return out


def synthetic_events(count: int) -> list[dict[str, object]]:
    """The schema v1 events of `synthetic(count)`."""
    return [event for _, _, event in synthetic(count)]


async def commit_events(
    path: Path, rows: Sequence[tuple[VaultRef, BackupJob, dict[str, object]]]
) -> float:
    """Commit the events of `rows` into a new state file, `EVENTS_PER_POLL` per save with the
    checkpoint of their jobs, as a poll does; the seconds it took."""
    clock = SystemClock()
    started = time.perf_counter()
    async with SqliteCheckpointStore(path) as store:
        for at in range(0, len(rows), EVENTS_PER_POLL):
            chunk = rows[at : at + EVENTS_PER_POLL]
            vault = chunk[0][0]
            await store.save(
                vault.key,
                changed=[
                    JobSnapshot(key=job.key, status=job.status, start_at=job.start_at)
                    for _, job, _ in chunk
                ],
                removed=(),
                polled_at=clock.utcnow(),
                events=[EventLine.of(event) for _, _, event in chunk],
            )
    return time.perf_counter() - started


async def deliver_all(
    state: Path,
    sink: OutboxSink,
    settings: WebhookSinkSettings | FileSinkSettings,
    n: int,
    arrived: Any,
) -> dict[str, float]:
    """Run a `Delivery` of `sink` from the oldest event until `arrived()` returns and the
    sink's cursor is stored at `n`: wall and CPU seconds of this process."""
    clock = SystemClock()
    async with SqliteCheckpointStore(state) as store:
        delivery = Delivery(
            outbox=store,
            routes=[SinkRoute(sink, settings)],
            settings=OutboxSettings(),
            clock=clock,
            rng=random.Random(7),
        )
        wall0, cpu0 = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            await tg.start(delivery.run)
            await arrived()
            arrived_s = time.perf_counter() - wall0
            # The cursor is stored after the receiver answered: poll the store for it.
            while (await store.cursors()).get(settings.name, 0) < n:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            tg.cancel_scope.cancel()
    return {"wall_s": wall, "cpu_s": cpu, "arrived_s": arrived_s}


async def throughput_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Figure 2: N committed events delivered into a webhook (two lingers) and a file."""
    n = args.events
    rows = synthetic(n)
    expected = [str(event["event_id"]) for _, _, event in rows]
    pristine = tmp / "outbox.sqlite"
    commit_s = await commit_events(pristine, rows)
    size = pristine.stat().st_size
    print(f"{n} events committed in {commit_s:.1f} s ({size / 2**20:.1f} MiB state file)")
    report: dict[str, Any] = {
        "events": n,
        "events_per_poll": EVENTS_PER_POLL,
        "commit_s": commit_s,
        "state_file_mib": size / 2**20,
        "runs": {},
    }
    for linger in (1.0, 0.0):
        name = f"webhook-linger{linger:g}"
        state = tmp / f"{name}.sqlite"
        shutil.copyfile(pristine, state)
        receiver = await Receiver.start(expect=n)
        try:
            settings = WebhookSinkSettings(
                type="webhook", name=name, url=receiver.url, start="oldest", linger_s=linger
            )
            async with open_sink_session(ssl.create_default_context()) as session:
                sink = WebhookSink(
                    settings, session=session, clock=SystemClock(), secret=SECRET.encode()
                )
                timing = await deliver_all(state, sink, settings, n, receiver.done)
            received = await receiver.finish()
        finally:
            receiver.kill()
        check = exactly_once_in_order([str(i) for i in received["ids"]], expected)
        check.update(
            requests=received["requests"],
            bad_signatures=received["bad_signatures"],
            receiver_cpu_s=received["cpu_s"],
        )
        report["runs"][name] = {
            **timing,
            "events_per_s": n / timing["wall_s"],
            "events_per_cpu_s": n / max(1e-9, timing["cpu_s"]),
            "batch_max_events": settings.batch_max_events,
            "linger_s": linger,
            **check,
        }
        print(f"  {name}: {n / timing['wall_s']:,.0f} events/s")
    state = tmp / "file.sqlite"
    shutil.copyfile(pristine, state)
    out = tmp / "events.jsonl"
    file_settings = FileSinkSettings(type="file", name="file", path=out, start="oldest")
    async with build_line_sink(file_settings) as file_sink:

        async def nothing() -> None:
            return None

        timing = await deliver_all(state, file_sink, file_settings, n, nothing)
    ids = [str(orjson.loads(line)["event_id"]) for line in out.read_bytes().splitlines() if line]
    report["runs"]["file-fsync"] = {
        **timing,
        "events_per_s": n / timing["wall_s"],
        "events_per_cpu_s": n / max(1e-9, timing["cpu_s"]),
        "batch_max_events": file_settings.batch_max_events,
        "linger_s": file_settings.linger_s,
        **exactly_once_in_order(ids, expected),
    }
    print(f"  file-fsync: {n / timing['wall_s']:,.0f} events/s")
    return report


# ---------------------------------------------------------------------------- output


def print_table(result: dict[str, Any]) -> None:
    print()
    print(f"command:  {result['command']}")
    print(f"machine:  {result['machine']}")
    rows: list[tuple[str, str, str]] = []
    if "cpu" in result:
        c = result["cpu"]
        print(f"emulator: {c['emulator_command']}")
        rows.append(
            (
                "[cpu] run length",
                f"{c['duration_s']:g} s",
                f"{c['vaults']} vaults, active = idle = 1 s, daemons at once on core 1",
            )
        )
        for name, p in c["parties"].items():
            tree = f"{c['baseline']} ({c['baseline_commit']})" if name == "baseline" else "HEAD"
            rows.append(
                (
                    f"[cpu] {name}: CPU per vault poll (ms)",
                    fmt(p["cpu_ms_per_poll"], 3),
                    f"{tree}; {p['polls']} polls, {p['events']} events "
                    f"({p['duplicated_event_ids']} dup), {fmt(p['cpu_percent_of_core'], 1)} % "
                    f"of a core, RSS {fmt(p['rss_mb'], 0)} MiB",
                )
            )
        w = c["webhook_vs_file"]
        rows += [
            ("[cpu] outbox / baseline", fmt(c["ratio"], 3) + "×", f"bar ≤ {CPU_BAR:g}×"),
            (
                "[cpu] outbox+webhook / baseline",
                fmt(c["ratio_with_webhook"], 3) + "×",
                "what one more sink costs",
            ),
            (
                "[cpu] webhook got / dup / in file order",
                f"{w['received']} / {w['duplicates']}",
                f"in order: {w['in_order']}; {w['requests']} requests, "
                f"{w['bad_signatures']} bad signatures",
            ),
        ]
    if "throughput" in result:
        t = result["throughput"]
        rows.append(
            (
                "[outbox] events committed",
                str(t["events"]),
                f"{t['events_per_poll']} per save, {fmt(t['commit_s'], 1)} s, "
                f"{fmt(t['state_file_mib'], 1)} MiB; delivery pinned to core 1",
            )
        )
        for name, r in t["runs"].items():
            bar = f"bar ≥ {THROUGHPUT_BAR:,.0f}" if name.startswith("webhook") else ""
            rows += [
                (
                    f"[outbox] {name}: events/s",
                    fmt(r["events_per_s"], 0),
                    f"{bar}; batch {r['batch_max_events']}, linger {r['linger_s']:g} s",
                ),
                (
                    f"[outbox] {name}: events per CPU second",
                    fmt(r["events_per_cpu_s"], 0),
                    "this process's CPU: the ceiling on one core"
                    + (
                        f"; the receiver used {fmt(r['receiver_cpu_s'])} CPU s"
                        if "receiver_cpu_s" in r
                        else ""
                    ),
                ),
                (
                    f"[outbox] {name}: wall / CPU (s)",
                    f"{fmt(r['wall_s'])} / {fmt(r['cpu_s'])}",
                    f"the receiver had all at {fmt(r['arrived_s'])} s"
                    if name.startswith("webhook")
                    else "written and fsynced; read back after the run",
                ),
                (
                    f"[outbox] {name}: received / missing / dup",
                    f"{r['received']} / {r['missing']} / {r['duplicates']}",
                    f"in outbox order: {r['in_order']}"
                    + (f"; {r['requests']} requests" if "requests" in r else "")
                    + (f", {r['bad_signatures']} bad signatures" if "requests" in r else ""),
                ),
            ]
    width = max(len(n) for n, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The keys this bench owns in bench/results/latest.json."""
    out: dict[str, Any] = {"outbox_bench_at": result["at"], "outbox_command": result["command"]}
    if "cpu" in result:
        c = result["cpu"]
        p = c["parties"]
        out.update(
            outbox_cpu_ms_per_poll=p["outbox"]["cpu_ms_per_poll"],
            outbox_cpu_ms_per_poll_baseline=p["baseline"]["cpu_ms_per_poll"],
            outbox_cpu_ms_per_poll_with_webhook=p["outbox+webhook"]["cpu_ms_per_poll"],
            outbox_cpu_ratio=c["ratio"],
            outbox_cpu_ratio_with_webhook=c["ratio_with_webhook"],
            outbox_cpu_baseline=f"{c['baseline']} ({c['baseline_commit']})",
            outbox_cpu_run_s=c["duration_s"],
        )
    if "throughput" in result:
        runs = result["throughput"]["runs"]
        out.update(
            outbox_webhook_events_per_s=runs["webhook-linger1"]["events_per_s"],
            outbox_webhook_linger0_events_per_s=runs["webhook-linger0"]["events_per_s"],
            outbox_file_events_per_s=runs["file-fsync"]["events_per_s"],
            outbox_throughput_events=result["throughput"]["events"],
        )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    count = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
    seconds = number_arg(float, "a number", lambda v: v > 0, "> 0")
    p.add_argument(
        "--baseline", default="2bd1ad4", help="git revision of the daemon without the outbox"
    )
    p.add_argument("--duration", type=seconds, default=240.0, help="seconds the daemons run")
    p.add_argument("--subscriptions", type=count, default=2, help="subscriptions of the estate")
    add_world_arguments(p, vaults_per_subscription=40)
    p.add_argument(
        "--events", type=count, default=20_000, help="events committed, then delivered (figure 2)"
    )
    p.add_argument(
        "--quick", action="store_true", help="daemons 90 s, 10,000 events: about 2½ minutes"
    )
    p.add_argument("--only", choices=("cpu", "throughput"), help="run one figure only")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/results")
    p.add_argument("--receiver-child", type=int, metavar="N", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.receiver_child is not None:
        receiver_child(args.receiver_child)
        return
    if args.quick:
        args.duration, args.events = 90.0, 10_000
    pin(1)
    # The delivery logs through structlog: keep its info lines out of the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/outbox.py", *(argv or sys.argv[1:])]),
        "machine": machine + "; emulator and receivers on core 0, daemons and delivery on core 1",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    if args.keep:
        print(f"keeping configs, events and logs in {tmp}")
    try:
        if args.only in (None, "cpu"):
            result["cpu"] = asyncio.run(cpu_run(args, tmp / "cpu"))
        if args.only in (None, "throughput"):
            (tmp / "throughput").mkdir(parents=True)
            result["throughput"] = asyncio.run(throughput_run(args, tmp / "throughput"))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(result)
    if not args.no_write:
        path = merge_results("latest.json", {**figures(result), "outbox": result})
        print(f"\nwritten: {path} (keys outbox*)")


if __name__ == "__main__":
    main()
