"""What the reliability suite adds to tests/daemon.py: its config (short intervals, a file sink
that SIGKILL may cut short), and a verdict that also tells duplicates within one run apart.

The daemon itself runs, is waited on and is stopped by tests/daemon.py, as in every other test.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus
from monitor.emulator import Emulator
from tests.daemon import Daemon, ground_truth
from tests.daemon import judge as judge_events
from tests.daemon import wait_until_caught_up as wait_until_emitted
from tests.daemon import write_config as shared_write_config

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


def reliability_daemon(tmp: Path, emu: Emulator) -> Daemon:
    """The shared daemon with the reliability config and a file sink under `tmp`; a line that
    SIGKILL cut short is not an event."""
    events = tmp / "events.jsonl"
    config = write_config(tmp / "monitor.toml", emu, tmp / "state.sqlite", events)
    return Daemon(config, events, tmp / "stderr.log", stdout_to_events=False, partial_lines=True)


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

    tests/daemon.py's judge (every event validated against the shipped JSON Schema, missed and
    invented ids), plus: an event is also wrong when its status is not the transition's, and
    `duplicates_within_one_run` counts the extra copies that came from one incarnation of the
    daemon (a restart cannot explain them).
    """
    events = daemon.read_events()
    whole = [e for e in events if not e.get("partial")]
    missing, emitted, invented = judge_events(whole, truth, cutoff=cutoff, skip_vaults=skip_vaults)
    made = {event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"])): t for t in truth}
    wrong = invented + [
        e
        for e in whole
        if (t := made.get(str(e["event_id"]))) is not None
        and str(e["job"]["status"]).lower() != str(t["to"]).lower()
    ]
    within: Counter[str] = Counter()
    bounds = [*daemon.incarnations, len(events)]
    for lo, hi in pairwise(bounds):
        for eid, n in Counter(str(e["event_id"]) for e in events[lo:hi]).items():
            if n > 1:
                within[eid] += n - 1
    return Verdict(
        missing=missing,
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
    """Until every terminal transition up to `cutoff` was emitted (or the timeout): the verdict."""
    await wait_until_emitted(
        daemon.read_events, emu, cutoff=cutoff, skip_vaults=skip_vaults, timeout_s=timeout_s
    )
    return judge(daemon, await ground_truth(emu), cutoff=cutoff, skip_vaults=skip_vaults)


def now() -> datetime:
    return datetime.now(UTC)
