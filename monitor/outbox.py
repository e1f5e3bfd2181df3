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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import orjson

__all__ = ["OutboxEvent", "OutboxSink"]


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
