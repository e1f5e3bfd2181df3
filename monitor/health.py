"""What the scheduler reports of the estate's health: vault states and the estate at one moment."""

# Rules:
# - Plain values and one protocol: nothing here reads a clock, a metric or a socket. The
#   scheduler builds an `EstateHealth`; /healthz, /readyz and the metrics Collector read it.
# - A `VaultState`'s value is the `state` label of `backup_monitor_vaults` and a key of
#   /readyz's `vaults`: both are public, so the values never change.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["EstateHealth", "EstateView", "VaultState"]


class VaultState(StrEnum):
    """Where a watched vault stands (the `state` label of `backup_monitor_vaults`)."""

    PENDING = "pending"
    """Not polled successfully yet."""
    OK = "ok"
    """The last poll went fine."""
    FAILING = "failing"
    """The last poll failed (an ARM error, a malformed page, a sink that failed)."""
    FORBIDDEN = "forbidden"
    """The last poll was refused with 403."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EstateHealth:
    """What the scheduler knows of the estate at one moment; read by /readyz and the Collector.

    Attributes:
        started: the first discovery finished and the dispatch loop runs.
        stopping: a stop was requested.
        dispatch_age_s: seconds since the dispatch loop last ticked (None before it started).
        vaults_by_state: watched vaults per state.
        running_jobs: tracked jobs that are not in a terminal state.
        oldest_poll_age_s: seconds since the least recently polled vault's last successful
            poll (a vault never polled counts from when it started being watched); None when
            no vault is watched.
        stale_vaults: names of vaults whose last successful poll is older than their bound.
        pending_vaults: names of vaults never polled successfully by this process.
        store_problem: the last checkpoint failure while the store fails (None: it works).
        unsaved_vaults: vaults whose emitted changes the store does not hold yet.
    """

    started: bool
    stopping: bool
    dispatch_age_s: float | None
    vaults_by_state: Mapping[VaultState, int]
    running_jobs: int
    oldest_poll_age_s: float | None
    stale_vaults: tuple[str, ...] = ()
    pending_vaults: tuple[str, ...] = ()
    store_problem: str | None = None
    unsaved_vaults: int = 0


class EstateView(Protocol):
    """Whatever can describe the estate now (the PollScheduler)."""

    def estate_health(self) -> EstateHealth: ...
