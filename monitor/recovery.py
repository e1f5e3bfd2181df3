"""What a crash can leave behind: events written whose checkpoint was not.

The scheduler emits a poll's events, then checkpoints them. A SIGKILL (or a power loss) between
the two leaves events in the sink that the checkpoint does not know, and the next start would
emit them again. Where the sink can be read back (an events file, or stdout redirected to one),
the next start rolls the checkpoint forward to the last events written, so nothing is emitted
twice. Where it cannot (a pipe), delivery stays at-least-once and `event_id` tells the repeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.checkpoints import VaultCheckpoint
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey
from monitor.events import recorded_state


@dataclass(frozen=True, slots=True)
class Recovered:
    """The checkpoints rolled forward, and per vault the snapshots the store does not hold yet.

    Attributes:
        checkpoints: every vault's checkpoint, by vault key, with the events' job states applied
            (a vault only the events know gets one with `polled_at` None).
        unsaved: by vault key, the snapshots that differ from the store: the next checkpoint of
            that vault must write them.
    """

    checkpoints: dict[str, VaultCheckpoint]
    unsaved: dict[str, list[JobSnapshot]]

    @property
    def jobs(self) -> int:
        """How many job states were rolled forward."""
        return sum(len(snaps) for snaps in self.unsaved.values())


def roll_forward(
    checkpoints: Mapping[str, VaultCheckpoint], events: Iterable[Mapping[str, Any]]
) -> Recovered:
    """Apply the last emitted state of every job in `events` (oldest first) to `checkpoints`.

    Events are emitted before their checkpoint is written, so a job's last emitted status is at
    least as recent as its checkpointed one; the one exception (a terminal status checkpointed
    silently, an older running status emitted) is kept as checkpointed: a terminal status is never
    rolled back. Events that are not schema v1 job events, or lack a vault id, job id or status,
    are ignored (the events module reads them: `monitor.events.recorded_state`).
    """
    latest: dict[str, dict[JobKey, JobSnapshot]] = {}
    for event in events:
        found = recorded_state(event)
        if found is not None:
            vault_key, snap = found
            latest.setdefault(vault_key, {})[snap.key] = snap
    result = dict(checkpoints)
    unsaved: dict[str, list[JobSnapshot]] = {}
    for vault_key, snaps in latest.items():
        known = checkpoints.get(vault_key)
        jobs = dict(known.jobs) if known is not None else {}
        fresh = [snap for snap in snaps.values() if _newer(jobs.get(snap.key), snap)]
        if not fresh:
            continue
        for snap in fresh:
            jobs[snap.key] = snap
        result[vault_key] = VaultCheckpoint(
            vault_key=vault_key, jobs=jobs, polled_at=known.polled_at if known else None
        )
        unsaved[vault_key] = fresh
    return Recovered(checkpoints=result, unsaved=unsaved)


def _newer(known: JobSnapshot | None, emitted: JobSnapshot) -> bool:
    if known is None:
        return True
    if known.status == emitted.status:
        return False
    return not (known.status.is_terminal and not emitted.status.is_terminal)
