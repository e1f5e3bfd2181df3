"""What the monitor remembers per vault: `VaultCheckpoint`, the `CheckpointStore` contract (a
vault's checkpoint and its poll's events, saved together), the checks every store applies to a
save, and the in-memory store. The SQLite store is in store.py."""

# Rules:
# - A `save` is one atomic transaction: after any crash, a vault's state is either entirely the
#   state before the call or entirely the state after it.
# - Every store validates and normalises a save with `check_save` before it changes anything,
#   so all stores accept and refuse the same calls.

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self

from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint
from monitor.outbox import EventLine, Outbox, OutboxEvent, OutboxSignal, Pruned, retention_floor

__all__ = [
    "CheckpointStore",
    "ItemStateStore",
    "MemoryCheckpointStore",
    "StateStore",
    "check_save",
    "check_save_items",
]


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
        events: Sequence[EventLine] = (),
        now: datetime | None = None,
    ) -> None:
        """One poll of a vault, atomically: upsert `changed`, delete `removed`, set `polled_at`,
        and append `events` to the outbox (committed at `now`, default `polled_at`).

        Idempotent for the checkpoint: saving the same arguments twice leaves the same state
        (the events, though, are appended twice). A snapshot listed twice in `changed` counts
        once, the last one winning. Removing an unknown key is a no-op.

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


def check_save_items(states: Mapping[str, str], removed: Sequence[str]) -> None:
    """Validate `save_items`' arguments: no key both saved and removed."""
    both = set(states).intersection(removed)
    if both:
        raise ValueError(f"item keys both saved and removed: {sorted(both)}")


class ItemStateStore(Protocol):
    """Where the item watcher keeps each protected item's state (`core.item_watch.ItemState`
    as JSON text, opaque to the store), committed with the events it caused."""

    async def load_items(self) -> dict[str, dict[str, str]]:
        """Every stored item state: vault key → item key → state text.

        Raises:
            StoreError: the state could not be read.
        """
        ...

    async def save_items(
        self,
        vault_key: str,
        *,
        states: Mapping[str, str],
        removed: Sequence[str],
        events: Sequence[EventLine],
        now: datetime,
    ) -> None:
        """One round of a vault's items, atomically: upsert `states`, delete `removed`, and
        append `events` to the outbox (committed at `now`).

        Raises:
            ValueError: a key is both saved and removed, or `now` is naive; nothing is written.
            StoreError: the write failed; nothing is written.
        """
        ...


class StateStore(CheckpointStore, ItemStateStore, Outbox, Protocol):
    """The state file: checkpoints, item states and the outbox (`SqliteCheckpointStore`, the
    memory store)."""


class MemoryCheckpointStore:
    """A `StateStore` in memory: for tests and `[state] path = ":memory:"`.

    It has the same semantics as the SQLite store (validation, normalisation, idempotence, the
    outbox and its cursors) and nothing survives the process. It needs no opening; `async with`
    is accepted for symmetry.
    """

    def __init__(self) -> None:
        self._vaults: dict[str, tuple[dict[JobKey, JobSnapshot], datetime | None]] = {}
        self._items: dict[str, dict[str, str]] = {}
        self._events: list[OutboxEvent] = []
        self._cursors: dict[str, int] = {}
        self._last_seq = 0
        self._bytes = 0
        self._last_committed: datetime | None = None  # newest committed_at: never goes back
        self._signal = OutboxSignal()

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
        events: Sequence[EventLine] = (),
        now: datetime | None = None,
    ) -> None:
        """See `CheckpointStore.save`.

        Raises:
            ValueError: as `CheckpointStore.save`; nothing is changed.
        """
        upserts, deletes, polled_at = check_save(vault_key, changed, removed, polled_at)
        at = _utc(now or polled_at, "now")  # checked before anything changes
        jobs = dict(self._vaults.get(vault_key, ({}, None))[0])
        jobs.update(upserts)
        for key in deletes:
            jobs.pop(key, None)
        self._vaults[vault_key] = (jobs, polled_at)
        self._append(events, at)

    def _append(self, events: Sequence[EventLine], at: datetime) -> None:
        if events:
            # Kept apart from the events: prune may have deleted them all.
            if self._last_committed is not None:
                at = max(at, self._last_committed)
            self._last_committed = at
            for line in events:
                self._last_seq += 1
                self._events.append(OutboxEvent(self._last_seq, line.event_id, at, line.line))
                self._bytes += len(line.line)
            self._signal.notify()

    async def forget(self, vault_key: str) -> None:
        """See `CheckpointStore.forget`."""
        self._vaults.pop(vault_key, None)
        self._items.pop(vault_key, None)

    async def load_items(self) -> dict[str, dict[str, str]]:
        """See `ItemStateStore.load_items` (copies)."""
        return {key: dict(items) for key, items in self._items.items()}

    async def save_items(
        self,
        vault_key: str,
        *,
        states: Mapping[str, str],
        removed: Sequence[str],
        events: Sequence[EventLine],
        now: datetime,
    ) -> None:
        """See `ItemStateStore.save_items`.

        Raises:
            ValueError: as `ItemStateStore.save_items`; nothing is changed.
        """
        check_save_items(states, removed)
        at = _utc(now, "now")
        items = {**self._items.get(vault_key, {}), **states}
        for key in removed:
            items.pop(key, None)
        if items:
            self._items[vault_key] = items
        else:
            self._items.pop(vault_key, None)
        self._append(events, at)

    @property
    def last_seq(self) -> int:
        """See `Outbox.last_seq`."""
        return self._last_seq

    @property
    def size(self) -> tuple[int, int]:
        """See `Outbox.size`."""
        return len(self._events), self._bytes

    async def wait_beyond(self, seq: int) -> None:
        """See `Outbox.wait_beyond`."""
        await self._signal.wait_beyond(seq, lambda: self._last_seq)

    async def read(self, after: int, limit: int) -> list[OutboxEvent]:
        """See `Outbox.read`."""
        start = bisect.bisect_right(self._events, after, key=lambda e: e.seq)
        return self._events[start : start + limit]

    async def cursors(self) -> dict[str, int]:
        """See `Outbox.cursors`."""
        return dict(self._cursors)

    async def advance(self, sink: str, seq: int) -> None:
        """See `Outbox.advance`."""
        self._cursors[sink] = max(seq, self._cursors.get(sink, seq))

    async def prune(
        self,
        *,
        delivered: Mapping[str, int],
        reading: Mapping[str, int],
        older_than: datetime,
        max_bytes: int,
    ) -> Pruned:
        """See `Outbox.prune`."""
        floor = retention_floor(
            ((e.seq, e.committed_at, len(e.line)) for e in self._events),
            total_bytes=self._bytes,
            older_than=older_than,
            max_bytes=max_bytes,
        )
        dropped: dict[str, int] = {}
        for sink, position in reading.items():
            count = sum(1 for e in self._events if position < e.seq <= floor)
            if count:
                dropped[sink] = count
            if delivered.get(sink, 0) < floor:
                await self.advance(sink, floor)
        cut = max(floor, min(delivered.values(), default=0))
        keep = bisect.bisect_right(self._events, cut, key=lambda e: e.seq)
        gone, self._events = self._events[:keep], self._events[keep:]
        self._bytes -= sum(len(e.line) for e in gone)
        return Pruned(floor=cut, removed=len(gone), dropped=dropped)
