"""`ItemWatcher`: each vault's protected items and policies on a slow cadence, checked against
the jobs that started (`core/item_watch.py`), their events committed with their states.

One round of one vault: its policies (when `policies_interval_s` has passed), its protected
items, then the jobs that started since the oldest moment any item still needs; each item is
evaluated, and the round's events and item states go into the state file in one transaction
(`ItemStateStore.save_items`), so a restart neither repeats nor loses a report. A round that
fails leaves everything as it was: the next one decides the same runs with the same event ids.
"""

# Rules:
# - Reads go through the same ArmClient and per-subscription budgets as job polling; a
#   per-action throttle of these reads pauses the rounds of that subscription only.
# - One vault's failure is that vault's: it is logged once per kind of failure and retried
#   after a backoff; other vaults' rounds go on.
# - Time comes from the Clock; jitter from the injected random.Random.

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

import anyio
import orjson
import structlog

from monitor.checkpoints import ItemStateStore
from monitor.clock import Clock
from monitor.config import ProtectionSettings
from monitor.core.item_watch import (
    Evaluation,
    ItemChange,
    ItemHealth,
    ItemState,
    LongRunningSettings,
    WatchSettings,
    evaluate,
    long_running_jobs,
    window_start,
)
from monitor.core.jobs import BackupJob
from monitor.core.protection import BackupPolicy, ItemIndex, ProtectedItem
from monitor.core.vaults import VaultRef
from monitor.errors import ArmError, ArmNotFound, ArmThrottled, ParseError, StoreError
from monitor.events import render_change
from monitor.item_memory import (
    IndexRow,
    ItemMemory,
    index_digest,
    index_rows,
    index_text,
    read_index,
)
from monitor.outbox import EventLine

__all__ = ["ItemWatcher", "ProtectionReads", "WatchStats"]

log = structlog.get_logger(__name__)

VAULT_ITEM_KEY: Final = "~vault"
"""The state key of a vault's jobs that belong to no item (their long-running flags)."""
INDEX_KEY: Final = "~index"
"""The state key of what names each item in its jobs (`ItemIndex`), so that job events after a
restart carry their item before the vault's first round."""
LIST_SETTLE_S: Final = 15.0
"""A job may be listed some seconds after it starts: runs are decided only up to this long
before the jobs were read."""
FIRST_ROUND_SPREAD_S: Final = 60.0
"""The first rounds of the vaults found at start are spread over this many seconds (at most
the items interval)."""
RETRY_MIN_S: Final = 30.0


class ProtectionReads(Protocol):
    """What the watcher reads: `ArmClient` for items and policies, `JobSources` for jobs."""

    async def list_protected_items(self, vault: VaultRef) -> list[ProtectedItem]: ...

    async def list_policies(self, vault: VaultRef) -> list[BackupPolicy]: ...


class JobWindow(Protocol):
    """The jobs of a window (`JobSources.jobs_for_items`)."""

    async def jobs_for_items(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> tuple[list[BackupJob], datetime]: ...


@dataclass(slots=True)
class WatchStats:
    """What the watcher did, for tests and benchmarks."""

    rounds: int = 0
    failed_rounds: int = 0


@dataclass(slots=True)
class _Vault:
    vault: VaultRef
    due_at: float  # monotonic
    policies_at: float | None = None  # monotonic time of the last policy read
    policies: dict[str, BackupPolicy] = field(default_factory=dict)
    # The index of its items and their states as the last round left them (or as restored),
    # packed: 0.3-3.9 KiB a vault of six items, where the objects were 5.5-9.7 KiB
    # (`item_memory`). None: nothing is known yet.
    memory: ItemMemory | None = None
    # The digest of the text stored under INDEX_KEY (`index_digest`): a later round stores its
    # index only when it differs. Not the text: ~2.4 KiB a vault, 24 MiB over 10,000 vaults.
    index_digest: bytes | None = None
    rounds: int = 0
    failures: int = 0
    problem: str | None = None


class ItemWatcher:
    """The rounds of every watched vault's items; `run` until cancelled.

    Args:
        reads: the ARM client (items, policies).
        jobs: where each round's job window comes from (`JobSources`).
        store: where item states and the events they caused are committed.
        settings: `[protection]`.
        clock: time and sleeps.
        rng: spreads the first rounds and jitters the later ones.
        metrics: told of each vault's item health after each round (None: not measured).
    """

    def __init__(
        self,
        *,
        reads: ProtectionReads,
        jobs: JobWindow,
        store: ItemStateStore,
        settings: ProtectionSettings,
        clock: Clock,
        rng: random.Random,
        metrics: ItemMetrics | None = None,
    ) -> None:
        self._reads, self._jobs, self._store = reads, jobs, store
        self._settings, self._clock, self._rng = settings, clock, rng
        self._metrics = metrics
        self._watch = WatchSettings(
            grace_s=settings.grace_s,
            grace_fraction=settings.grace_fraction,
            early_s=settings.early_s,
        )
        self._long = LongRunningSettings(
            after_s=settings.long_running_after_s,
            factor=settings.long_running_factor,
            min_samples=settings.long_running_min_samples,
        )
        self._vaults: dict[str, _Vault] = {}
        self._stored: dict[str, dict[str, str]] = {}
        self._wake = anyio.Event()
        self._slots = anyio.Semaphore(settings.max_concurrency)
        self.stats = WatchStats()

    def __repr__(self) -> str:
        return f"ItemWatcher(vaults={len(self._vaults)})"

    # ------------------------------------------------------------------ the watched set

    async def load(self) -> None:
        """Read the stored item states (before the first `watch`).

        Raises:
            StoreError: the state file could not be read.
        """
        self._stored = await self._store.load_items()

    def watch(self, vault: VaultRef) -> None:
        """Start the rounds of `vault` (its first within `FIRST_ROUND_SPREAD_S`); for a vault
        watched already, take `vault` as its description from now on (a tenant or region
        learnt since) and change nothing else."""
        known = self._vaults.get(vault.key)
        if known is not None:
            known.vault = vault
            return
        spread = min(FIRST_ROUND_SPREAD_S, self._settings.items_interval_s)
        watched = _Vault(vault=vault, due_at=self._clock.monotonic() + self._rng.uniform(0, spread))
        stored = self._stored.pop(vault.key, {})
        rows: list[IndexRow] | None = None
        states: dict[str, ItemState] = {}
        for key, text in stored.items():
            if key == INDEX_KEY:
                watched.index_digest = index_digest(text)
                rows = read_index(vault, text)
                continue
            try:
                states[key] = ItemState.from_json(orjson.loads(text))
            except (orjson.JSONDecodeError, ParseError) as exc:
                # Treated as a first sight: nothing old is reported, nothing is repeated.
                log.warning("items.state_unreadable", vault=vault.id, item=key, problem=str(exc))
        if stored:
            watched.memory = ItemMemory.pack(rows, states)
        self._vaults[vault.key] = watched
        self._wake.set()

    def unwatch(self, vault_key: str) -> None:
        """Stop the rounds of a vault (the scheduler forgets its stored state)."""
        self._vaults.pop(vault_key, None)
        if self._metrics is not None:
            self._metrics.items_forgotten(vault_key)

    def item_id_of(self, vault_key: str, job: BackupJob) -> str | None:
        """The id of the protected item `job` belongs to, if the last round can tell."""
        watched = self._vaults.get(vault_key)
        if watched is None or watched.memory is None:
            return None
        index = watched.memory.index(vault_key)
        item = None if index is None else index.item_for(job)
        return None if item is None else item.id

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Run every vault's rounds when due, at most `max_concurrency` at once; until
        cancelled."""
        async with anyio.create_task_group() as rounds:
            while True:
                now = self._clock.monotonic()
                due = [w for w in self._vaults.values() if w.due_at <= now]
                for watched in due:
                    watched.due_at = float("inf")  # in flight
                    await self._slots.acquire()
                    rounds.start_soon(self._round_slot, watched)
                waits = [w.due_at for w in self._vaults.values()]
                delay = min(waits, default=float("inf")) - self._clock.monotonic()
                self._wake = anyio.Event()
                if delay == float("inf"):
                    await self._wake.wait()
                elif delay > 0:
                    with anyio.CancelScope(deadline=self._clock.deadline_after(delay)):
                        await self._wake.wait()

    async def _round_slot(self, watched: _Vault) -> None:
        # The next round is due `delay` after this one began, not ended: a slow round (a
        # loaded machine, a slow ARM) does not push every later decision back.
        started = self._clock.monotonic()
        try:
            delay = await self._round_guarded(watched)
        finally:
            self._slots.release()
        if self._vaults.get(watched.vault.key) is watched:
            watched.due_at = max(started + delay, self._clock.monotonic())
            self._wake.set()

    async def _round_guarded(self, watched: _Vault) -> float:
        """One round; the seconds until the next."""
        interval = self._settings.items_interval_s
        vault = watched.vault
        try:
            await self.round(watched)
        except ArmThrottled as exc:
            self._failed(watched, f"throttled ({exc.code})", exc)
            return max(float(exc.retry_after_s), 1.0)
        except ArmNotFound as exc:
            # Gone: discovery drops it; until then, keep trying at the slow cadence.
            self._failed(watched, "not_found", exc)
            return interval
        except (ArmError, ParseError, StoreError) as exc:
            self._failed(watched, type(exc).__name__, exc)
            return self._backoff(watched)
        except Exception as exc:  # a bug: that vault's rounds go on after a backoff, not the daemon
            self.stats.failed_rounds += 1
            watched.failures += 1
            log.exception("items.round_crashed", vault=vault.id, error=f"{type(exc).__name__}")
            return self._backoff(watched)
        if watched.problem is not None:
            log.info("items.recovered", vault=vault.id, after=watched.failures)
        watched.failures, watched.problem = 0, None
        return interval * self._rng.uniform(0.95, 1.0)

    def _backoff(self, watched: _Vault) -> float:
        interval = self._settings.items_interval_s
        backoff = min(interval, RETRY_MIN_S * 2.0 ** min(watched.failures - 1, 6))
        return backoff * self._rng.uniform(0.8, 1.0)

    def _failed(self, watched: _Vault, problem: str, exc: Exception) -> None:
        self.stats.failed_rounds += 1
        watched.failures += 1
        if problem != watched.problem:
            log.warning(
                "items.round_failed",
                vault=watched.vault.id,
                problem=problem,
                error=f"{type(exc).__name__}: {exc}",
            )
        watched.problem = problem

    # ------------------------------------------------------------------ one round

    async def round(self, watched: _Vault) -> None:
        """Read, evaluate, commit one vault's items.

        Raises:
            ArmError, ParseError: a read failed (nothing changed).
            StoreError: the commit failed (nothing changed; the next round repeats it).
        """
        vault = watched.vault
        mono = self._clock.monotonic()
        now = self._clock.utcnow()  # the round's moment: its job window ends here
        if watched.policies_at is None or mono - watched.policies_at >= (
            self._settings.policies_interval_s
        ):
            policies = await self._reads.list_policies(vault)
            watched.policies = {p.key: p for p in policies}
            watched.policies_at = mono
            for read in policies:
                if read.problem is not None:
                    log.info(
                        "items.policy_unscheduled",
                        vault=vault.id,
                        policy=read.name,
                        problem=read.problem,
                    )
        items = await self._reads.list_protected_items(vault)
        previous = {} if watched.memory is None else watched.memory.states()
        start = now
        for item in items:
            policy = _policy_of(item, watched.policies)
            state = previous.get(item.key)
            start = min(start, window_start(state, policy, now=now, settings=self._watch))
        vault_state = previous.get(VAULT_ITEM_KEY)
        if vault_state is not None:
            for _, started in vault_state.running:
                start = min(start, started)
        jobs, seen_until = await self._jobs.jobs_for_items(vault, start, now)
        seen_until = min(seen_until, now - timedelta(seconds=LIST_SETTLE_S))
        index = ItemIndex.of(items)
        by_item: dict[str, list[BackupJob]] = {}
        loose: list[BackupJob] = []
        for job in jobs:
            owner = index.item_for(job)
            if owner is None:
                loose.append(job)
            else:
                by_item.setdefault(owner.key, []).append(job)

        changes: list[ItemChange] = []
        states: dict[str, ItemState] = {}
        health: dict[str, ItemHealth] = {}
        for item in items:
            evaluation: Evaluation = evaluate(
                item,
                _policy_of(item, watched.policies),
                previous.get(item.key),
                by_item.get(item.key, ()),
                seen_until=seen_until,
                now=now,
                settings=self._watch,
                long_running=self._long,
            )
            changes.extend(evaluation.changes)
            states[item.key] = evaluation.state
            health[item.key] = evaluation.health
        flagged_before = () if vault_state is None else vault_state.flagged
        loose_changes, flagged = long_running_jobs(
            loose,
            item=None,
            vault_key=vault.key,
            durations=(),
            flagged=flagged_before,
            now=now,
            settings=self._long,
        )
        changes.extend(loose_changes)
        states[VAULT_ITEM_KEY] = ItemState(
            decided_through=now,
            protection_state=None,
            health_status=None,
            flagged=flagged,
            running=tuple(
                (job.name, job.start_at)
                for job in loose
                if job.start_at is not None and not job.status.is_terminal
            ),
        )
        removed = [key for key in previous if key not in states]
        saved = {
            key: orjson.dumps(state.to_json()).decode()
            for key, state in states.items()
            if previous.get(key) != state
        }
        rendered = [render_change(change, vault=vault, emitted_at=now) for change in changes]
        lines = [EventLine.of(event) for event in rendered]
        rows = index_rows(items)
        text = index_text(rows)
        digest = index_digest(text)
        if digest != watched.index_digest:
            saved[INDEX_KEY] = text
        if saved or removed or lines:
            await self._store.save_items(
                vault.key, states=saved, removed=removed, events=lines, now=now
            )
        watched.memory = ItemMemory.pack(rows, states)
        watched.index_digest = digest
        if watched.rounds == 0:
            log.info(
                "items.first_round",
                vault=vault.name,
                items=len(items),
                policies=len(watched.policies),
                events=len(lines),
            )
        watched.rounds += 1
        self.stats.rounds += 1
        for change in changes:
            log.info(
                "items.event",
                vault=vault.name,
                kind=type(change).__name__,
                event_id=change.event_id,
            )
        if self._metrics is not None:
            recovery_points = {item.key: item.last_recovery_point for item in items}
            self._metrics.items_evaluated(vault, health, recovery_points)
            self._metrics.item_events_committed(str(event["event"]) for event in rendered)


class ItemMetrics(Protocol):
    """What the watcher tells the metrics (`Metrics`)."""

    def items_evaluated(
        self,
        vault: VaultRef,
        health: Mapping[str, ItemHealth],
        recovery_points: Mapping[str, datetime | None],
    ) -> None: ...

    def items_forgotten(self, vault_key: str) -> None: ...

    def item_events_committed(self, events: Iterable[str]) -> None: ...


def _policy_of(item: ProtectedItem, policies: Mapping[str, BackupPolicy]) -> BackupPolicy | None:
    key = item.policy_key
    return None if key is None else policies.get(key)
