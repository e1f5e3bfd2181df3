"""The daemon as a child process against an in-process emulator, and the judge of its events.

Kept apart from tests/test_daemon_e2e.py so that the reliability suite stands on its own.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import jsonschema

from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus
from monitor.emulator import Emulator
from monitor.events import event_schema
from tests.daemon import Daemon as SharedDaemon
from tests.daemon import at, ground_truth, read_json_lines
from tests.daemon import write_config as shared_write_config

TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}
LONG = os.environ.get("RELIABILITY_LONG") == "1"


def write_config(path: Path, emu: Emulator, state: Path, events: Path) -> Path:
    """Short intervals so a run of seconds sees many polls; events to a file."""
    return shared_write_config(
        path,
        emu,
        state,
        sections={
            "azure": {"request_timeout_s": 3},
            "events": {"sink": str(events)},
            "ops": {"enabled": False},
        },
        active_interval_s=1,
        idle_interval_s=2,
    )


class Daemon(SharedDaemon):
    """The shared daemon with a file sink; remembers where each incarnation starts."""

    def __init__(self, tmp: Path, emu: Emulator) -> None:
        events = tmp / "events.jsonl"
        config = write_config(tmp / "monitor.toml", emu, tmp / "state.sqlite", events)
        super().__init__(config, events, tmp / "stderr.log", stdout_to_events=False)
        self.incarnations: list[int] = []  # events-file line count at each start
        self.log_offset = 0  # stderr-log size at the last start

    def start(self) -> None:
        self.incarnations.append(len(self.read_events()))
        self.log_offset = self.logs.stat().st_size if self.logs.exists() else 0
        super().start()

    async def wait_started(self, timeout_s: float = 30.0) -> None:
        """Until this incarnation logs `scheduler.started` (it polls from then on)."""
        assert self.process is not None
        with anyio.fail_after(timeout_s):
            while b'"scheduler.started"' not in self.logs.read_bytes()[self.log_offset :]:
                assert self.process.poll() is None, "the daemon exited while starting"
                await anyio.sleep(0.05)

    def read_events(self) -> list[dict[str, Any]]:
        # A SIGKILL may leave a partial last line; it is not an event.
        return read_json_lines(
            self.events, unreadable=lambda line: {"event_id": "<partial line>", "partial": True}
        )


@dataclass
class Verdict:
    """What a run's events are worth against the ground truth."""

    missing: set[str]
    duplicates: dict[str, int]
    wrong: list[dict[str, Any]]
    events: int
    duplicates_within_one_run: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{len(self.missing)} missed, {sum(self.duplicates.values())} duplicated "
            f"({sum(self.duplicates_within_one_run.values())} within one run), "
            f"{len(self.wrong)} wrong, of {self.events} events"
        )


def judge(
    daemon: Daemon,
    truth: list[dict[str, Any]],
    *,
    cutoff: datetime,
    skip_vaults: frozenset[str] = frozenset(),
) -> Verdict:
    """Missed terminal transitions up to `cutoff`, duplicated and wrong events.

    Every event is validated against the shipped JSON Schema. A duplicate is extra copies of one
    event id; `duplicates_within_one_run` counts those whose copies came from one incarnation of
    the daemon (a restart cannot explain them).
    """
    events = daemon.read_events()
    validator = jsonschema.Draft202012Validator(event_schema())
    made = {event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"])): t for t in truth}
    expected = {
        eid
        for eid, t in made.items()
        if t["to"] in TERMINAL and at(t) <= cutoff and t["vault_id"].lower() not in skip_vaults
    }
    ids = [str(e["event_id"]) for e in events if not e.get("partial")]
    emitted = Counter(ids)
    wrong = []
    for e in events:
        if e.get("partial"):
            continue
        validator.validate(e)
        t = made.get(str(e["event_id"]))
        if t is None or str(e["job"]["status"]).lower() != str(t["to"]).lower():
            wrong.append(e)
    within: Counter[str] = Counter()
    bounds = [*daemon.incarnations, len(events)]
    for lo, hi in pairwise(bounds):
        for eid, n in Counter(str(e["event_id"]) for e in events[lo:hi]).items():
            if n > 1:
                within[eid] += n - 1
    return Verdict(
        missing=expected - set(emitted),
        duplicates={eid: n - 1 for eid, n in emitted.items() if n > 1},
        wrong=wrong,
        events=len(events),
        duplicates_within_one_run=dict(within),
    )


async def wait_until_caught_up(
    daemon: Daemon,
    emu: Emulator,
    *,
    cutoff: datetime,
    skip_vaults: frozenset[str] = frozenset(),
    timeout_s: float = 90.0,
) -> Verdict:
    """Until every terminal transition up to `cutoff` was emitted (or the timeout)."""
    with anyio.move_on_after(timeout_s):
        while True:
            verdict = judge(daemon, await ground_truth(emu), cutoff=cutoff, skip_vaults=skip_vaults)
            if not verdict.missing:
                return verdict
            await anyio.sleep(0.5)
    return judge(daemon, await ground_truth(emu), cutoff=cutoff, skip_vaults=skip_vaults)


def now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "LONG",
    "Daemon",
    "Verdict",
    "ground_truth",
    "judge",
    "now",
    "signal",
    "wait_until_caught_up",
    "write_config",
]
