"""What the scheduler reports of the estate's health: vault states and the estate at one moment."""

# Rules:
# - Plain values and one protocol: nothing here reads a clock, a metric or a socket. The
#   scheduler builds an `EstateHealth`; /healthz, /readyz and the metrics Collector read it.
# - A `VaultState`'s value is the `state` label of `backup_monitor_vaults` and a key of
#   /readyz's `vaults`: both are public, so the values never change.

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from monitor.core.tracker import VaultJobs
from monitor.core.vaults import VaultRef

__all__ = ["EstateHealth", "EstateView", "VaultState", "WatchedHealth"]


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
        unsaved_vaults: vaults whose changes the store does not hold yet: their events wait
            for a commit (nothing is delivered before the store holds it), or a checkpoint
            without events is kept in memory.
        subscriptions: distinct subscriptions of the watched vaults.
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
    subscriptions: int = 0

    @classmethod
    def of(
        cls,
        watched: Iterable[WatchedHealth],
        *,
        now: float,
        bound_s: Callable[[str], float],
        started: bool,
        stopping: bool,
        ticked_at: float | None,
        store_problem: str | None,
    ) -> EstateHealth:
        """The estate's health at monotonic `now`.

        A vault is stale when its last successful poll in this process (or, never polled, the
        moment it started being watched) is older than `bound_s` of its (lower-cased)
        subscription id.
        """
        bounds: dict[str, float] = {}
        states: dict[VaultState, int] = {}
        stale: list[str] = []
        pending: list[str] = []
        oldest: float | None = None
        running = unsaved = 0
        for w in watched:
            states[w.state] = states.get(w.state, 0) + 1
            running += w.running_jobs
            unsaved += w.known.has_unsaved or w.held_back > 0
            sub = w.vault.subscription_id.lower()
            bound = bounds.get(sub)
            if bound is None:
                bound = bounds[sub] = bound_s(sub)
            age = now - (w.ok_at if w.ok_at is not None else w.added_at)
            oldest = age if oldest is None else max(oldest, age)
            if w.ok_at is None:
                pending.append(w.vault.name)
            if age > bound:
                stale.append(w.vault.name)
        return cls(
            started=started,
            stopping=stopping,
            dispatch_age_s=None if ticked_at is None else now - ticked_at,
            vaults_by_state=states,
            running_jobs=running,
            oldest_poll_age_s=oldest,
            stale_vaults=tuple(sorted(stale)),
            pending_vaults=tuple(sorted(pending)),
            store_problem=store_problem,
            unsaved_vaults=unsaved,
            subscriptions=len(bounds),
        )


class WatchedHealth(Protocol):
    """What `EstateHealth.of` reads of each watched vault (`poller.WatchedVault`)."""

    @property
    def vault(self) -> VaultRef: ...
    @property
    def known(self) -> VaultJobs: ...
    @property
    def state(self) -> VaultState: ...
    @property
    def running_jobs(self) -> int: ...
    @property
    def held_back(self) -> int: ...
    @property
    def ok_at(self) -> float | None: ...
    @property
    def added_at(self) -> float: ...


class EstateView(Protocol):
    """Whatever can describe the estate now (the PollScheduler)."""

    def estate_health(self) -> EstateHealth: ...
