"""Where each vault's jobs come from: the `JobSource` of both kinds of vault (`JobSources`).

Recovery Services vaults are read straight from ARM (their list takes a time `$filter`). A
Backup vault's ARM list has no filter: every read of it costs pages in proportion to the
vault's history. So, by default (`[backup_vaults] jobs_from = "resource_graph"`):

- **Windows from Resource Graph.** One query per batch of subscriptions (at most
  `subscriptions_per_query`) finds the Backup vault jobs started since the oldest window its
  vaults asked for, less `resource_graph_margin_s` (rows may appear late). One answer serves
  every poll of those subscriptions' vaults for `resource_graph_refresh_s`; queries are paced
  by Resource Graph's own quota (`pacing.RESOURCE_GRAPH_SCOPE`), not by ARM's read budgets.
- **Precision from ARM.** Every row is `provisional`: the poll step reads each job a row shows
  running from ARM before that status counts (`core/tracker.py`), so a stale row never undoes
  a newer status, and a tracked running job the index no longer (or not yet) shows is read
  directly as for any vault. Terminal rows are final and count as they are.
- **A backstop from ARM.** A full ARM listing of each vault every `backstop_interval_s`
  (the first one at a random point of the first interval, so a large estate's listings are
  spread), and on any poll while Resource Graph cannot be read (refused, throttled, failing):
  whatever the index never showed is found there.

With `jobs_from = "listing"` every Backup vault poll is a full ARM listing (the naive way; no
Resource Graph access needed). Both ways return jobs outside the window: the poll step keeps
only what it may (jobs before its lookback floor that it does not know are ignored).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import structlog

from monitor.clock import Clock
from monitor.config import AzureSettings, BackupVaultSettings
from monitor.core.jobs import BackupJob, JobDetails, KnownEnded
from monitor.core.resource_graph import GraphJobsPage, backup_vault_jobs_query
from monitor.core.vaults import SubscriptionRef, VaultKind, VaultRef
from monitor.errors import ArmError, ArmLimitExceeded, ParseError
from monitor.metrics import Metrics
from monitor.principals import Principal, Principals

__all__ = ["ArmJobReads", "JobSources", "SourceStats"]

log = structlog.get_logger("monitor.scheduler")

ASKED_FOR_S = 3600.0
"""A subscription whose Backup vaults asked for no window this long is left out of queries."""


class ArmJobReads(Protocol):
    """The ARM reads behind `JobSources` (`monitor.arm.ArmClient` is one)."""

    @property
    def principals(self) -> Principals: ...

    async def list_subscriptions(
        self, principal: Principal | None = None
    ) -> list[SubscriptionRef]: ...

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]: ...

    async def get_vault(self, vault_id: str) -> VaultRef: ...

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]: ...

    async def list_all_jobs(self, vault: VaultRef) -> list[BackupJob]: ...

    def forget_vault(self, vault_key: str) -> None: ...

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails: ...

    async def query_backup_vault_jobs(
        self, query: str, subscriptions: list[str], skip_token: str | None
    ) -> GraphJobsPage: ...


@dataclass(slots=True)
class SourceStats:
    """What the Backup vault path did (Resource Graph pages are in the ARM requests metric)."""

    graph_failures: int = 0  # queries that failed (the polls fell back to a full listing)
    full_listings: int = 0  # full ARM listings of a Backup vault (backstops, fallbacks, naive)


@dataclass(slots=True)
class _Answer:
    """One Resource Graph answer for one subscription: when, from when, its jobs by vault."""

    fetched_at: float  # monotonic, taken before the query was sent
    since: datetime
    jobs: dict[str, list[BackupJob]] = field(default_factory=dict)


class JobSources:
    """The `poller.JobSource` of both kinds of vault, and discovery's `VaultSource`.

    Args:
        arm: the ARM client.
        settings: `[backup_vaults]`.
        azure: `[azure]` (the most pages one query follows: `max_list_pages`).
        clock: monotonic time for the answers' age and the backstop's schedule.
        rng: spreads each vault's first backstop over the first interval, and jitters the
            later ones by up to a tenth.
        metrics: counts the full listings by reason (None: not measured).
    """

    def __init__(
        self,
        arm: ArmJobReads,
        settings: BackupVaultSettings,
        *,
        azure: AzureSettings,
        clock: Clock,
        rng: random.Random,
        metrics: Metrics | None = None,
    ) -> None:
        self._arm, self._settings, self._azure = arm, settings, azure
        self._clock, self._rng, self._metrics = clock, rng, metrics
        self._answers: dict[str, _Answer] = {}  # by lower-cased subscription id
        self._asked: dict[str, dict[str, tuple[float, datetime]]] = {}  # sub → vault → ask
        self._backstop_due: dict[str, float] = {}  # vault key → monotonic due time
        self._query_lock = anyio.Lock()
        self._graph_problem: str | None = None  # the last failure logged, until a success
        self.stats = SourceStats()

    def __repr__(self) -> str:
        return f"JobSources(jobs_from={self._settings.jobs_from!r})"

    # ------------------------------------------------------------------ VaultSource

    @property
    def principals(self) -> Principals:
        """Who signs in for which subscription (`ArmClient.principals`)."""
        return self._arm.principals

    async def list_subscriptions(self, principal: Principal | None = None) -> list[SubscriptionRef]:
        """Every subscription `principal` can see (`ArmClient.list_subscriptions`)."""
        return await self._arm.list_subscriptions(principal)

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]:
        """A subscription's vaults of `kind` (`ArmClient.list_vaults`)."""
        return await self._arm.list_vaults(subscription_id, kind)

    async def get_vault(self, vault_id: str) -> VaultRef:
        """One vault of either kind (`ArmClient.get_vault`)."""
        return await self._arm.get_vault(vault_id)

    # ------------------------------------------------------------------ JobSource

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        """One job from ARM, of either kind of vault (the truth a provisional row waits for)."""
        return await self._arm.get_job(vault, job_name)

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        """The vault's jobs for the window [start_at, end_at].

        A Recovery Services vault's come from its filtered ARM list, exactly the window, less
        the ended jobs `known` already gives with the status listed (`ArmClient.list_jobs`). A
        Backup vault's come from Resource Graph (provisional, reaching `resource_graph_margin_s`
        before the window), or from a full ARM listing (its whole history) when the backstop
        is due, Resource Graph cannot be read, or `jobs_from = "listing"`.

        Raises:
            ArmError, ParseError: as `ArmClient.list_jobs` (the ARM list failed); a failed
                Resource Graph query is not raised, it falls back to the full listing.
        """
        if vault.kind is not VaultKind.BACKUP_VAULT:
            return await self._arm.list_jobs(vault, start_at, end_at, known=known)
        if self._settings.jobs_from == "listing":
            return await self._full_listing(vault, "configured")
        if self._backstop_is_due(vault):
            return await self._full_listing(vault, "backstop")
        try:
            rows = await self._graph_rows(vault, start_at)
        except (ArmError, ParseError) as exc:
            self.stats.graph_failures += 1
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._graph_problem:
                log.warning(
                    "resource_graph.failed",
                    error=problem,
                    fallback="a full ARM listing of each Backup vault polled until it answers",
                )
                self._graph_problem = problem
            return await self._full_listing(vault, "fallback")
        reach = start_at - timedelta(seconds=self._settings.resource_graph_margin_s)
        return [job for job in rows if job.start_at is None or reach <= job.start_at <= end_at]

    def forget_vault(self, vault_key: str) -> None:
        """The vault is no longer watched: its backstop schedule, the window it asked Resource
        Graph for and what the ARM client keeps of it go (`ArmClient.forget_vault`). A vault
        watched again later starts afresh, its first backstop anywhere in the first interval."""
        self._backstop_due.pop(vault_key, None)
        sub = _subscription_of(vault_key)
        asks = self._asked.get(sub)
        if asks is not None:
            asks.pop(vault_key, None)
            if not asks:
                del self._asked[sub]
        self._arm.forget_vault(vault_key)

    async def jobs_for_items(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> tuple[list[BackupJob], datetime]:
        """The jobs that started in [start_at, end_at] for the item watcher, and the moment up
        to which that list is complete.

        A Recovery Services vault's come from its filtered ARM list, complete to `end_at`. A
        Backup vault's come from Resource Graph, complete only to `end_at` less
        `resource_graph_margin_s` (its rows lag), or from a full ARM listing (complete to
        `end_at`) with `jobs_from = "listing"` or while Resource Graph cannot be read. The
        poll's backstop schedule is not touched.

        Raises:
            ArmError, ParseError: as `ArmClient.list_jobs`.
        """
        if vault.kind is not VaultKind.BACKUP_VAULT:
            return await self._arm.list_jobs(vault, start_at, end_at), end_at
        if self._settings.jobs_from == "resource_graph":
            try:
                rows = await self._graph_rows(vault, start_at)
            except (ArmError, ParseError):
                self.stats.graph_failures += 1  # the poll's path logs it
            else:
                margin = timedelta(seconds=self._settings.resource_graph_margin_s)
                jobs = [j for j in rows if j.start_at is None or start_at <= j.start_at <= end_at]
                return jobs, end_at - margin
        self.stats.full_listings += 1
        return await self._arm.list_jobs(vault, start_at, end_at), end_at

    # ------------------------------------------------------------------ the backstop

    def _backstop_is_due(self, vault: VaultRef) -> bool:
        now = self._clock.monotonic()
        interval = self._settings.backstop_interval_s
        due = self._backstop_due.get(vault.key)
        if due is None:  # the first, anywhere in the first interval
            self._backstop_due[vault.key] = now + self._rng.uniform(0.0, interval)
            return False
        return now >= due

    async def _full_listing(self, vault: VaultRef, reason: str) -> list[BackupJob]:
        jobs = await self._arm.list_all_jobs(vault)
        self.stats.full_listings += 1
        if self._metrics is not None:
            self._metrics.backup_vault_listed(reason)
        interval = self._settings.backstop_interval_s
        self._backstop_due[vault.key] = self._clock.monotonic() + interval * self._rng.uniform(
            0.9, 1.0
        )
        return jobs

    # ------------------------------------------------------------------ Resource Graph

    async def _graph_rows(self, vault: VaultRef, start_at: datetime) -> list[BackupJob]:
        """The vault's rows of a fresh enough answer that reaches back far enough."""
        sub = vault.subscription_id.lower()
        now = self._clock.monotonic()
        self._asked.setdefault(sub, {})[vault.key] = (now, start_at)
        reach = start_at - timedelta(seconds=self._settings.resource_graph_margin_s)
        if not self._serves(sub, reach, now):
            async with self._query_lock:  # one query at a time; a waiter may find it answered
                if not self._serves(sub, reach, self._clock.monotonic()):
                    await self._query(sub)
        return self._answers[sub].jobs.get(vault.key, [])

    def _serves(self, sub: str, reach: datetime, now: float) -> bool:
        answer = self._answers.get(sub)
        return (
            answer is not None
            and now - answer.fetched_at < self._settings.resource_graph_refresh_s
            and answer.since <= reach
        )

    def _batch(self, first: str, now: float) -> list[str]:
        """`first`, then the other subscriptions of its principal asked for lately whose
        answers are half stale, up to `subscriptions_per_query`: they are refreshed together."""
        settings = self._settings
        batch = [first]
        principals = self._arm.principals
        principal = principals.of_subscription(first)  # a query is one principal's
        for sub, asks in self._asked.items():
            if len(batch) >= settings.subscriptions_per_query:
                break
            if sub == first or not any(now - at < ASKED_FOR_S for at, _ in asks.values()):
                continue
            if principals.of_subscription(sub) is not principal:
                continue
            answer = self._answers.get(sub)
            if answer is None or now - answer.fetched_at >= settings.resource_graph_refresh_s / 2:
                batch.append(sub)
        return batch

    async def _query(self, first: str) -> None:
        """Query Resource Graph for `first`'s batch and store one answer per subscription.

        Raises:
            ArmError, ParseError: a page failed (nothing is stored); ArmLimitExceeded past
                `azure.max_list_pages` pages.
        """
        now = self._clock.monotonic()
        batch = self._batch(first, now)
        margin = timedelta(seconds=self._settings.resource_graph_margin_s)
        starts = [
            start
            for sub in batch
            for at, start in self._asked.get(sub, {}).values()
            if now - at < ASKED_FOR_S
        ]
        since = (min(starts) - margin).replace(microsecond=0)
        query = backup_vault_jobs_query(since)
        answers = {sub: _Answer(fetched_at=now, since=since) for sub in batch}
        token: str | None = None
        pages = 0
        while True:
            if pages >= self._azure.max_list_pages:
                raise ArmLimitExceeded(
                    f"a Resource Graph query passed azure.max_list_pages "
                    f"({self._azure.max_list_pages}) pages",
                    url="/providers/Microsoft.ResourceGraph/resources",
                    cap="azure.max_list_pages",
                    limit=self._azure.max_list_pages,
                )
            page = await self._arm.query_backup_vault_jobs(query, batch, token)
            pages += 1
            if page.truncated:
                log.warning("resource_graph.truncated", subscriptions=len(batch), page=pages)
            for job in page.jobs:
                sub = _subscription_of(job.key.vault_key)
                if sub in answers:
                    answers[sub].jobs.setdefault(job.key.vault_key, []).append(job)
            token = page.skip_token
            if token is None:
                break
        self._answers.update(answers)
        if self._graph_problem is not None:
            log.info("resource_graph.recovered")
            self._graph_problem = None


def _subscription_of(vault_key: str) -> str:
    """The subscription of a lower-cased vault id (`/subscriptions/{sub}/...`)."""
    return vault_key.split("/", 3)[2]
