"""What the monitor remembers per vault: `VaultCheckpoint`, the `CheckpointStore` contract, the
checks every store applies to a save, and the in-memory store. The SQLite store is in store.py."""

# Rules:
# - A `save` is one atomic transaction: after any crash, a vault's state is either entirely the
#   state before the call or entirely the state after it.
# - Every store validates and normalises a save with `check_save` before it changes anything,
#   so all stores accept and refuse the same calls.

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self

from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint

__all__ = ["CheckpointStore", "MemoryCheckpointStore", "check_save"]


class CheckpointStore(Protocol):
    """Where the scheduler keeps per-vault job state between polls and across restarts."""

    async def load(self) -> dict[str, VaultCheckpoint]:
        """Every vault's state, keyed by vault key; vaults never saved (or forgotten) are absent.

        Raises:
            StoreError: the state could not be read.
        """
        ...

    async def save(
        self,
        vault_key: str,
        *,
        changed: Sequence[JobSnapshot],
        removed: Sequence[JobKey],
        polled_at: datetime,
    ) -> None:
        """One poll of a vault, atomically: upsert `changed`, delete `removed`, set `polled_at`.

        Idempotent: saving the same arguments twice leaves the same state. A snapshot listed
        twice in `changed` counts once, the last one winning. Removing an unknown key is a no-op.

        Raises:
            ValueError: a key belongs to another vault, a key is both changed and removed, or a
                datetime is naive; nothing is written.
            StoreError: the write failed; nothing is written.
        """
        ...

    async def forget(self, vault_key: str) -> None:
        """Drop everything remembered about a vault (it disappeared); unknown vaults are a no-op.

        Raises:
            StoreError: the write failed; nothing is changed.
        """
        ...


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def check_save(
    vault_key: str,
    changed: Sequence[JobSnapshot],
    removed: Sequence[JobKey],
    polled_at: datetime,
) -> tuple[dict[JobKey, JobSnapshot], set[JobKey], datetime]:
    """Validate a save's arguments and normalise them (UTC datetimes, canonical statuses)."""
    upserts: dict[JobKey, JobSnapshot] = {}
    for snap in changed:
        if snap.key.vault_key != vault_key:
            raise ValueError(f"snapshot {snap.key} does not belong to vault {vault_key!r}")
        upserts[snap.key] = JobSnapshot(
            key=snap.key,
            status=JobStatus.of(snap.status.value),
            start_at=None if snap.start_at is None else _utc(snap.start_at, "start_at"),
        )
    deletes = set(removed)
    for key in deletes:
        if key.vault_key != vault_key:
            raise ValueError(f"removed key {key} does not belong to vault {vault_key!r}")
    both = deletes.intersection(upserts)
    if both:
        raise ValueError(f"keys both changed and removed: {sorted(k.job_name for k in both)}")
    return upserts, deletes, _utc(polled_at, "polled_at")


class MemoryCheckpointStore:
    """A `CheckpointStore` in a dict: for tests and `[state] path = ":memory:"`.

    It has the same semantics as the SQLite store (validation, normalisation, idempotence) and
    nothing survives the process. It needs no opening; `async with` is accepted for symmetry.
    """

    def __init__(self) -> None:
        self._vaults: dict[str, tuple[dict[JobKey, JobSnapshot], datetime | None]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; the state stays readable."""

    async def load(self) -> dict[str, VaultCheckpoint]:
        """Copies of every vault's state (mutating them does not change the store)."""
        return {
            key: VaultCheckpoint(vault_key=key, jobs=dict(jobs), polled_at=polled_at)
            for key, (jobs, polled_at) in self._vaults.items()
        }

    async def save(
        self,
        vault_key: str,
        *,
        changed: Sequence[JobSnapshot],
        removed: Sequence[JobKey],
        polled_at: datetime,
    ) -> None:
        """See `CheckpointStore.save`.

        Raises:
            ValueError: as `CheckpointStore.save`; nothing is changed.
        """
        upserts, deletes, polled_at = check_save(vault_key, changed, removed, polled_at)
        jobs = dict(self._vaults.get(vault_key, ({}, None))[0])
        jobs.update(upserts)
        for key in deletes:
            jobs.pop(key, None)
        self._vaults[vault_key] = (jobs, polled_at)

    async def forget(self, vault_key: str) -> None:
        """See `CheckpointStore.forget`."""
        self._vaults.pop(vault_key, None)
