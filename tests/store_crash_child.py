"""A process that saves checkpoint generations in a tight loop until it is SIGKILLed.

Run as `python -c "from tests.store_crash_child import main; main()" PATH`. Generation `g` of a
vault is a set of jobs that all carry status `Gen{g}`, start time `BASE + g s` and `polled_at =
BASE + g s`, and whose names shift with `g` so that every save also removes jobs. After each
vault's save commits, the child prints `{vault_index} {g}`. A checkpoint that mixes two
generations would prove a torn transaction.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from monitor.checkpoints import VaultCheckpoint
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.store import SqliteCheckpointStore

VAULTS = [
    f"/subscriptions/s1/resourcegroups/rg/providers/microsoft.recoveryservices/vaults/v{i}"
    for i in range(3)
]
JOBS_PER_GENERATION = 200
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def job_names(generation: int) -> set[str]:
    """The jobs of a generation: a window of names that moves with it."""
    offset = generation % 7
    return {f"job-{i:04d}" for i in range(offset, offset + JOBS_PER_GENERATION)}


def instant(generation: int) -> datetime:
    """The start time and polled_at of a generation."""
    return BASE + timedelta(seconds=generation)


def generation_of(checkpoint: VaultCheckpoint) -> int:
    """The single generation a checkpoint holds.

    Raises:
        AssertionError: the checkpoint mixes generations or does not match one entirely.
    """
    statuses = {snap.status.value for snap in checkpoint.jobs.values()}
    assert len(statuses) == 1, f"{checkpoint.vault_key}: mixed statuses {sorted(statuses)[:5]}"
    (status,) = statuses
    generation = int(status.removeprefix("Gen"))
    assert {key.job_name for key in checkpoint.jobs} == job_names(generation)
    assert {snap.start_at for snap in checkpoint.jobs.values()} == {instant(generation)}
    assert checkpoint.polled_at == instant(generation)
    return generation


async def run(path: Path) -> None:
    """Save generations forever, starting after the last one in the file."""
    async with SqliteCheckpointStore(path) as store:
        state = await store.load()
        known = {v: {k.job_name for k in state[v].jobs} if v in state else set() for v in VAULTS}
        generation = max((generation_of(c) for c in state.values()), default=-1) + 1
        while True:
            names = job_names(generation)
            status = JobStatus.of(f"Gen{generation}")
            for index, vault in enumerate(VAULTS):
                changed = [
                    JobSnapshot(
                        key=JobKey(vault_key=vault, job_name=name),
                        status=status,
                        start_at=instant(generation),
                    )
                    for name in names
                ]
                removed = [JobKey(vault_key=vault, job_name=n) for n in known[vault] - names]
                await store.save(
                    vault, changed=changed, removed=removed, polled_at=instant(generation)
                )
                known[vault] = names
                sys.stdout.write(f"{index} {generation}\n")
                sys.stdout.flush()
            generation += 1


def main() -> None:
    """Entry point: the state file path is the first argument."""
    anyio.run(run, Path(sys.argv[1]))
