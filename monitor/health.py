"""What the scheduler reports of the estate's health: vault states and the estate at one moment."""

# Rules:
# - Plain values and one protocol: nothing here reads a clock, a metric or a socket. The
#   scheduler builds an `EstateHealth`; /healthz, /readyz and the metrics Collector read it.
# - A `VaultState`'s value is the `state` label of `backup_monitor_vaults` and a key of
#   /readyz's `vaults`: both are public, so the values never change.
# - Readiness is "this process serves its shard": it never depends on one vault. A forbidden or
#   failing vault is shown by /healthz's detail and `backup_monitor_vault_stale_seconds`, and
#   alerted on there; holding the pod unready for it would stall every rolling update.

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from monitor.core.tracker import VaultJobs
from monitor.core.vaults import VaultRef

__all__ = [
    "HEALTH_STALL_S",
    "EstateHealth",
    "EstateView",
    "StaleVault",
    "VaultState",
    "WatchedHealth",
    "health_problems",
    "readiness_problems",
]

HEALTH_STALL_S: Final = 60.0
"""/healthz fails when the dispatch loop has not ticked for this long (it ticks every ≤ 5 s)."""


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
class StaleVault:
    """A watched vault not polled successfully within its bound.

    Attributes:
        vault: the vault.
        state: where it stands (pending, failing, forbidden; ok when its last poll went fine
            but too long ago, e.g. while its subscription is paused by a 429).
        age_s: seconds since its last successful poll in this process (never polled: since it
            started being watched).
        bound_s: the bound it is past.
        problem: the last problem its polls logged (None: none logged).
    """

    vault: VaultRef
    state: VaultState
    age_s: float
    bound_s: float
    problem: str | None = None


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
        stale: the vaults whose last successful poll is older than their bound, by name.
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
    stale: tuple[StaleVault, ...] = ()
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
        stale: list[StaleVault] = []
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
                stale.append(
                    StaleVault(
                        vault=w.vault, state=w.state, age_s=age, bound_s=bound, problem=w.reported
                    )
                )
        return cls(
            started=started,
            stopping=stopping,
            dispatch_age_s=None if ticked_at is None else now - ticked_at,
            vaults_by_state=states,
            running_jobs=running,
            oldest_poll_age_s=oldest,
            stale=tuple(sorted(stale, key=lambda s: (s.vault.name, s.vault.key))),
            pending_vaults=tuple(sorted(pending)),
            store_problem=store_problem,
            unsaved_vaults=unsaved,
            subscriptions=len(bounds),
        )

    @property
    def stale_vaults(self) -> tuple[str, ...]:
        """The names of the stale vaults, sorted."""
        return tuple(s.vault.name for s in self.stale)


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
    @property
    def reported(self) -> str | None: ...


def health_problems(health: EstateHealth) -> list[str]:
    """Why the process is not alive and well (empty: healthy): not running, or its dispatch
    loop stalled."""
    if not health.started:
        return ["the scheduler is not running (starting, or stopped)"]
    if health.dispatch_age_s is None or health.dispatch_age_s > HEALTH_STALL_S:
        age = "never" if health.dispatch_age_s is None else f"{health.dispatch_age_s:.0f} s ago"
        return [f"the dispatch loop last ticked {age} (limit {HEALTH_STALL_S:.0f} s)"]
    return []


def readiness_problems(health: EstateHealth) -> list[str]:
    """Why this process does not serve its shard (empty: ready): not running, stalled, stopping,
    or its checkpoints failing (nothing new is committed, so nothing is delivered).

    Vaults never count: one forbidden, failing or slow vault is not a reason to take the pod out
    of service (see `StaleVault`, /healthz's detail and the per-vault metric)."""
    problems = health_problems(health)
    if health.stopping:
        problems.append("shutting down")
    if health.store_problem is not None:
        problems.append(
            f"checkpoints failing ({health.unsaved_vaults} vaults unsaved: their events wait "
            f"for the store, retried with every poll): {health.store_problem}"
        )
    return problems


class EstateView(Protocol):
    """Whatever can describe the estate now (the PollScheduler)."""

    def estate_health(self) -> EstateHealth: ...
