"""The outbox's records and the contract of a sink that delivers from it.

Each poll's events are committed to the outbox in the same transaction as the vault's
checkpoint (store.py). Every configured sink then delivers from the outbox in order, with a
durable cursor of its own (delivery.py): a sink that is down holds back only itself.
"""

# Rules:
# - An `OutboxEvent` carries the event as committed: its schema v1 JSON line (`line`, ending in a
#   newline), which the stdout and file sinks write as it is, and `event`, the decoded object
#   the other formats render from. Both are the same event; nothing here changes either.
# - A sink's `deliver` either delivers the whole batch, or raises `DeliveryError` saying how
#   many events at its head did get through (`delivered`) and when to try again. A sink never
#   retries by itself: the worker owns backoff, the cursor and the metrics.

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import anyio
import orjson

from monitor.events import encode_events, event_id_of

__all__ = [
    "EventLine",
    "Outbox",
    "OutboxEvent",
    "OutboxSignal",
    "OutboxSink",
    "Pruned",
    "SinkStatus",
    "retention_floor",
]


@dataclass(frozen=True, slots=True)
class EventLine:
    """An event on its way into the outbox: its id and its schema v1 JSON line."""

    event_id: str
    line: bytes

    @classmethod
    def of(cls, event: Mapping[str, object]) -> EventLine:
        """The line of a rendered schema v1 event (`render_event`).

        Raises:
            ValueError: the event has no `event_id`.
            SinkError: it cannot be serialised (`encode_events`).
        """
        event_id = event_id_of(event)
        if event_id is None:
            raise ValueError("an outbox event needs an event_id")
        return cls(event_id, encode_events([event]))


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One committed event.

    Attributes:
        seq: its position in the outbox: strictly increasing, never reused.
        event_id: the event's `event_id`.
        committed_at: when its poll committed it (UTC).
        line: the schema v1 event as one JSON line, newline included (`encode_events`).
    """

    seq: int
    event_id: str
    committed_at: datetime
    line: bytes
    _decoded: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    @property
    def event(self) -> Mapping[str, Any]:
        """The schema v1 event object (decoded once, on first use)."""
        if not self._decoded:
            self._decoded.append(orjson.loads(self.line))
        return self._decoded[0]


class OutboxSink(Protocol):
    """A destination the delivery worker feeds from the outbox.

    `name` is unique among the configured sinks and keys the sink's durable cursor: renaming a
    sink starts it afresh. `kind` is its type (`stdout`, `file`, `webhook`, `alertmanager`,
    `azure_monitor_logs`), the `kind` label of the per-sink metrics.
    """

    kind: ClassVar[str]

    @property
    def name(self) -> str: ...

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """Deliver `batch` (oldest first, never empty), or raise `DeliveryError`.

        When this returns, every event of the batch is where the sink promises (written and
        flushed; acknowledged with a 2xx). Cancellation may land mid-request: the worker then
        delivers the batch again (at least once).

        Raises:
            DeliveryError: part of the batch (`delivered` events at its head) or none of it got
                through; `retry_after_s` and `permanent` say what the destination answered.
        """
        ...

    async def delivered_ids(self) -> set[str]:
        """The `event_id`s the destination is known to hold already, read back at start (the
        file sink's tail); empty when the destination cannot be read back. The worker skips
        these events past the cursor: a crash between a write and its cursor commit then
        repeats nothing."""
        ...

    async def aclose(self) -> None:
        """Release what the sink holds; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one `Outbox.prune` removed.

    Attributes:
        floor: every event with a seq at or below it is gone (0: none yet).
        removed: events deleted by this call.
        dropped: by sink, events deleted before that sink had read them (retention).
    """

    floor: int
    removed: int
    dropped: Mapping[str, int]


class Outbox(Protocol):
    """The committed events, oldest first, and each sink's durable cursor.

    Events are appended by `CheckpointStore.save` in the transaction of their checkpoint.
    """

    @property
    def last_seq(self) -> int:
        """The seq of the newest committed event (0: none ever)."""
        ...

    @property
    def size(self) -> tuple[int, int]:
        """Events held and their bytes."""
        ...

    async def wait_beyond(self, seq: int) -> None:
        """Return once an event newer than `seq` is committed."""
        ...

    async def read(self, after: int, limit: int) -> list[OutboxEvent]:
        """Up to `limit` events with a seq above `after`, oldest first.

        Raises:
            StoreError: the read failed.
        """
        ...

    async def cursors(self) -> dict[str, int]:
        """Every sink's cursor: the seq of the last event it delivered (or skipped)."""
        ...

    async def advance(self, sink: str, seq: int) -> None:
        """Move `sink`'s cursor to `seq` (never back).

        Raises:
            StoreError: the write failed; the cursor stays where it was.
        """
        ...

    async def prune(
        self,
        *,
        delivered: Mapping[str, int],
        reading: Mapping[str, int],
        older_than: datetime,
        max_bytes: int,
    ) -> Pruned:
        """Delete what every sink has delivered, and what retention no longer keeps.

        `delivered` is each configured sink's cursor, `reading` the highest seq each has read
        (its events in flight are not counted as dropped). Events committed before
        `older_than`, and the oldest beyond `max_bytes`, go even if a sink has not delivered
        them; the cursors of those sinks move past them, in the same transaction.

        Raises:
            StoreError: the transaction failed; nothing was deleted.
        """
        ...


def retention_floor(
    oldest_first: Iterable[tuple[int, datetime, int]],
    *,
    total_bytes: int,
    older_than: datetime,
    max_bytes: int,
) -> int:
    """The highest seq retention removes (0: none): every event committed before `older_than`,
    and the oldest ones while the rest exceed `max_bytes`.

    `oldest_first` yields (seq, committed_at, bytes) from the oldest event on; it is read only
    as far as needed (committed times never decrease along seqs: the stores make it so).
    """
    floor = 0
    remaining = total_bytes
    for seq, committed_at, size in oldest_first:
        if committed_at >= older_than and remaining <= max_bytes:
            break
        floor, remaining = seq, remaining - size
    return floor


class OutboxSignal:
    """Wakes the delivery workers when a commit added events."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made by the first waiter, in its event loop

    def notify(self) -> None:
        """New events are committed."""
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait_beyond(self, seq: int, last_seq: Callable[[], int]) -> None:
        """Wait until `last_seq()` exceeds `seq`."""
        while last_seq() <= seq:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One sink now, for metrics and the ops server.

    Attributes:
        depth: committed events past its cursor.
        oldest_age_s: age of the oldest of them (0 when none).
        failing: its last delivery failed.
    """

    name: str
    kind: str
    depth: int
    oldest_age_s: float
    failing: bool
