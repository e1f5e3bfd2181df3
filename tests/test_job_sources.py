"""JobSources on its own: which path each poll takes, what one Resource Graph answer serves,
how far back a query reaches, the backstop's schedule and the fallback while Resource Graph fails.

The ARM side is scripted (`ScriptedReads`, the `ArmJobReads` protocol `ArmClient` implements);
end to end, against the emulator, tests/test_backup_vaults_e2e.py runs the same code.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from monitor.config import AzureSettings, BackupVaultSettings
from monitor.core.jobs import BackupJob, JobDetails, JobKey, JobStatus, KnownEnded
from monitor.core.resource_graph import GraphJobsPage
from monitor.core.vaults import SubscriptionRef, VaultKind, VaultRef, parse_vault_id
from monitor.errors import ArmServerError
from monitor.job_sources import JobSources
from monitor.principals import Principal, Principals
from tests.fakes import FakeClock

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUB_A = "11111111-1111-4111-8111-111111111111"
SUB_B = "22222222-2222-4222-8222-222222222222"


def backup_vault(sub: str, name: str) -> VaultRef:
    return parse_vault_id(
        f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.DataProtection"
        f"/backupVaults/{name}"
    )


def job(vault: VaultRef, name: str, start_at: datetime, *, provisional: bool) -> BackupJob:
    return BackupJob(
        key=JobKey(vault_key=vault.key, job_name=name),
        name=name,
        resource_id=f"{vault.id}/backupJobs/{name}",
        job_type="AzureBackupJob",
        operation="Backup",
        backup_management_type="AzureBackupVault",
        entity="disk-1",
        status=JobStatus.IN_PROGRESS,
        start_at=start_at,
        end_at=None,
        duration_raw=None,
        actions=(),
        activity_id=None,
        properties={},
        provisional=provisional,
    )


class ScriptedReads:
    """The ARM reads, answering from `history` (every vault's jobs) and recording each call."""

    def __init__(self, history: dict[str, list[BackupJob]]) -> None:
        self.history = history
        self.calls: list[tuple[str, str]] = []
        self.queries: list[tuple[str, tuple[str, ...]]] = []
        self.graph_failures: list[Exception] = []

    principals = Principals.single()

    async def list_subscriptions(self, principal: Principal | None = None) -> list[SubscriptionRef]:
        return [SubscriptionRef(id=SUB_A), SubscriptionRef(id=SUB_B)]

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]:
        return []

    async def get_vault(self, vault_id: str) -> VaultRef:
        return parse_vault_id(vault_id)

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        self.calls.append(("list_jobs", vault.name))
        return []

    async def list_all_jobs(self, vault: VaultRef) -> list[BackupJob]:
        self.calls.append(("list_all_jobs", vault.name))
        return list(self.history.get(vault.key, []))

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        raise AssertionError("JobSources passes get_job through; not tested here")

    def forget_vault(self, vault_key: str) -> None:
        self.calls.append(("forget_vault", vault_key))

    async def query_backup_vault_jobs(
        self, query: str, subscriptions: list[str], skip_token: str | None
    ) -> GraphJobsPage:
        self.calls.append(("graph", query))
        self.queries.append((query, tuple(subscriptions)))
        if self.graph_failures:
            raise self.graph_failures.pop(0)
        rows = [
            dataclasses.replace(j, provisional=True)
            for key, jobs in self.history.items()
            if key.split("/")[2] in subscriptions
            for j in jobs
        ]
        return GraphJobsPage(
            jobs=tuple(rows), skipped=(), skip_token=None, total_records=None, truncated=False
        )

    def named(self, what: str) -> list[str]:
        return [arg for call, arg in self.calls if call == what]


def sources(reads: ScriptedReads, clock: FakeClock, **settings: object) -> JobSources:
    return JobSources(
        reads,
        BackupVaultSettings(**settings),  # type: ignore[arg-type]
        azure=AzureSettings(),
        clock=clock,
        rng=random.Random(3),
    )


async def test_a_recovery_services_vault_is_read_from_its_filtered_list() -> None:
    """No Resource Graph, no full listing: the ARM client's windowed list, as before."""
    reads, clock = ScriptedReads({}), FakeClock(start_at=NOW)
    rsv = parse_vault_id(
        f"/subscriptions/{SUB_A}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v"
    )
    await sources(reads, clock).list_jobs(rsv, NOW - timedelta(hours=1), NOW)
    assert reads.calls == [("list_jobs", "v")]


async def test_one_answer_serves_every_vault_of_its_batch_while_fresh() -> None:
    """Two vaults in two subscriptions ask within `resource_graph_refresh_s`: one query names
    both subscriptions; each vault gets its own rows, within its window less the margin."""
    a, b = backup_vault(SUB_A, "a"), backup_vault(SUB_B, "b")
    start = NOW - timedelta(minutes=10)
    history = {
        a.key: [
            job(a, "old", start - timedelta(minutes=16), provisional=False),
            job(a, "late", start - timedelta(minutes=14), provisional=False),
            job(a, "new", start + timedelta(minutes=1), provisional=False),
        ],
        b.key: [job(b, "other", start, provisional=False)],
    }
    reads, clock = ScriptedReads(history), FakeClock(start_at=NOW)
    source = sources(reads, clock, resource_graph_refresh_s=20, resource_graph_margin_s=900)
    await source.list_jobs(b, start, NOW)  # b asks first: a's subscription is not known yet
    clock.advance(25)
    got_a = await source.list_jobs(a, start, NOW)
    clock.advance(5)
    got_b = await source.list_jobs(b, start, NOW)  # b's answer came with a's query
    graph = reads.queries
    assert [q[1] for q in graph] == [(SUB_B.lower(),), (SUB_A.lower(), SUB_B.lower())]
    assert [j.name for j in got_a] == ["late", "new"]  # 14 min before the window: in the margin
    assert all(j.provisional for j in got_a)
    assert [j.name for j in got_b] == ["other"]
    since = (start - timedelta(seconds=900)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"datetime({since})" in graph[1][0]
    assert reads.named("list_all_jobs") == []


async def test_an_older_window_is_not_served_by_a_newer_answer() -> None:
    """A vault whose window starts before what the answer reaches back to gets a new query."""
    a = backup_vault(SUB_A, "a")
    reads, clock = ScriptedReads({a.key: []}), FakeClock(start_at=NOW)
    source = sources(reads, clock)
    await source.list_jobs(a, NOW - timedelta(minutes=5), NOW)
    await source.list_jobs(a, NOW - timedelta(hours=3), NOW)
    assert len(reads.named("graph")) == 2


async def test_the_backstop_lists_each_vault_once_an_interval() -> None:
    """The first full listing falls somewhere in the first interval; the next one within an
    interval (jittered down by at most a tenth) after it, counted by reason."""
    a = backup_vault(SUB_A, "a")
    reads, clock = ScriptedReads({a.key: []}), FakeClock(start_at=NOW)
    source = sources(reads, clock, backstop_interval_s=600)
    listings: list[float] = []
    for _ in range(200):  # a poll every 15 s for 50 minutes
        before = len(reads.named("list_all_jobs"))
        await source.list_jobs(a, clock.utcnow() - timedelta(minutes=5), clock.utcnow())
        if len(reads.named("list_all_jobs")) > before:
            listings.append(clock.monotonic() - 1000.0)
        clock.advance(15)
    assert listings[0] < 600
    gaps = [b - a for a, b in itertools.pairwise(listings)]
    assert all(540 - 15 <= gap <= 600 + 15 for gap in gaps), gaps
    assert source.stats.full_listings == len(listings) == 5


async def test_a_forgotten_vault_leaves_no_schedule_and_no_window_behind() -> None:
    """`forget_vault` (the scheduler no longer watches it): its subscription joins no later
    batch, its overdue backstop is not run if it comes back (its first is scheduled anew), and
    the ARM client is told to forget it too."""
    a, b = backup_vault(SUB_A, "a"), backup_vault(SUB_B, "b")
    reads, clock = ScriptedReads({a.key: [], b.key: []}), FakeClock(start_at=NOW)
    source = sources(reads, clock, resource_graph_refresh_s=20, backstop_interval_s=600)
    await source.list_jobs(b, NOW - timedelta(minutes=5), NOW)
    clock.advance(700)  # b's first backstop, somewhere in the first 600 s, is overdue
    source.forget_vault(b.key)
    await source.list_jobs(a, clock.utcnow() - timedelta(minutes=5), clock.utcnow())
    assert [q[1] for q in reads.queries] == [(SUB_B.lower(),), (SUB_A.lower(),)]
    await source.list_jobs(b, clock.utcnow() - timedelta(minutes=5), clock.utcnow())
    assert reads.named("list_all_jobs") == []
    assert reads.named("forget_vault") == [b.key]


async def test_listing_mode_lists_the_whole_history_on_every_poll() -> None:
    """`jobs_from = "listing"`: no Resource Graph at all."""
    a = backup_vault(SUB_A, "a")
    history = {a.key: [job(a, "j", NOW - timedelta(days=3), provisional=False)]}
    reads, clock = ScriptedReads(history), FakeClock(start_at=NOW)
    source = sources(reads, clock, jobs_from="listing")
    for _ in range(3):
        got = await source.list_jobs(a, NOW - timedelta(minutes=5), NOW)
        assert [j.name for j in got] == ["j"]  # the whole history: the poll step sorts it out
    assert reads.named("list_all_jobs") == ["a", "a", "a"]
    assert reads.named("graph") == []


async def test_a_failing_resource_graph_falls_back_to_full_listings_logged_once() -> None:
    """Each poll while Resource Graph fails is a full listing; one warning, then one line when
    it answers again."""
    a = backup_vault(SUB_A, "a")
    reads, clock = ScriptedReads({a.key: []}), FakeClock(start_at=NOW)
    failure = ArmServerError("503 from Resource Graph", url="/providers/x", status=503)
    reads.graph_failures = [failure, failure]
    source = sources(reads, clock, resource_graph_refresh_s=1)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await source.list_jobs(a, NOW - timedelta(minutes=5), NOW)
            clock.advance(2)
    assert reads.named("list_all_jobs") == ["a", "a"]
    assert [e["event"] for e in logs] == ["resource_graph.failed", "resource_graph.recovered"]
    assert source.stats.graph_failures == 2


@pytest.mark.parametrize("per_query", [1, 2])
async def test_a_batch_names_at_most_subscriptions_per_query(per_query: int) -> None:
    """`subscriptions_per_query` caps how many subscriptions one query names."""
    a, b = backup_vault(SUB_A, "a"), backup_vault(SUB_B, "b")
    reads, clock = ScriptedReads({a.key: [], b.key: []}), FakeClock(start_at=NOW)
    source = sources(reads, clock, subscriptions_per_query=per_query, resource_graph_refresh_s=10)
    await source.list_jobs(a, NOW - timedelta(minutes=5), NOW)
    clock.advance(11)
    await source.list_jobs(b, NOW - timedelta(minutes=5), NOW)
    assert max(len(q[1]) for q in reads.queries) == per_query
