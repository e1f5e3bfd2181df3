"""What ArmClient tells of each request: `ArmCallKind` and the `ArmObserver` protocol (metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

__all__ = ["ArmCallKind", "ArmObserver"]


class ArmCallKind(StrEnum):
    """What one ARM request reads, as its caller knew it (the `kind` an ArmObserver is told)."""

    SUBSCRIPTIONS_LIST = "subscriptions_list"
    """A page of `GET /subscriptions` (tenant-scoped)."""
    VAULTS_LIST = "vaults_list"
    """A page of a subscription's vaults (either kind)."""
    VAULT_GET = "vault_get"
    """One vault."""
    JOBS_LIST = "jobs_list"
    """A page of a vault's backup jobs (the first or a nextLink)."""
    JOB_GET = "job_get"
    """One backup job with its details."""
    ITEMS_LIST = "items_list"
    """A page of a vault's protected items (Recovery Services) or backup instances."""
    POLICIES_LIST = "policies_list"
    """A page of a vault's backup policies (either kind)."""
    GRAPH_QUERY = "graph_query"
    """A page of a Resource Graph query (its own quota; scope `resource-graph`)."""
    OTHER = "other"
    """Anything else (an async-operation URL)."""


class ArmObserver(Protocol):
    """Told of every request an ArmClient sent, once each, when it ended (metrics).

    Called synchronously on the event loop: it must be quick and must not raise.
    """

    def arm_call_finished(
        self,
        *,
        scope: str,
        kind: ArmCallKind,
        status: int | None,
        duration_s: float,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None,
    ) -> None:
        """One request ended.

        Args:
            scope: its budget scope: the lower-cased subscription id, `"tenant"`, or
                `"resource-graph"`.
            kind: what it read.
            status: the HTTP status, or None when no answer came (connection failure, timeout
                or cancellation before the headers).
            duration_s: from sending to the end of the body (or the failure), on the client's
                clock.
            headers: the response headers (None without an answer).
            retry_after_s: the answer's `Retry-After` in seconds, when present and readable.
        """
