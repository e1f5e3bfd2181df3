"""The scheduler's per-poll logic, against a scripted JobSource at its injected seam."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.clock import SystemClock
from monitor.config import parse_settings
from monitor.core.jobs import BackupJob, JobDetails, JobKey, JobStatus, VaultRef, parse_vault_id
from monitor.errors import ArmNotFound, ArmThrottled
from monitor.scheduler import PollScheduler
from monitor.store import MemoryCheckpointStore

SUB_A, SUB_B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def vault_ref(sub: str, name: str) -> VaultRef:
    return parse_vault_id(
        f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/{name}"
    )


def job(vault: VaultRef, name: str, status: str, *, start: datetime) -> BackupJob:
    terminal = JobStatus.of(status).is_terminal
    return BackupJob(
        key=JobKey(vault_key=vault.key, job_name=name.lower()),
        name=name,
        resource_id=f"{vault.id}/backupJobs/{name}",
        job_type="AzureIaaSVMJob",
        operation="Backup",
        backup_management_type="AzureIaasVM",
        entity="vm-1",
        status=JobStatus.of(status),
        start_at=start,
        end_at=start + timedelta(seconds=30) if terminal else None,
        duration_raw="PT30S",
        actions=(),
        activity_id=None,
        properties={},
    )


class ScriptedSource:
    """A JobSource whose answers the test sets: listed jobs and directly readable jobs per vault."""

    def __init__(self, vaults: Sequence[VaultRef]) -> None:
        self.vaults = list(vaults)
        self.listed: dict[str, list[BackupJob]] = {v.key: [] for v in vaults}
        self.direct: dict[str, BackupJob] = {}
        self.failures: dict[str, Exception] = {}
        self.calls: list[tuple[str, str]] = []

    async def list_subscriptions(self) -> list[str]:
        return sorted({v.subscription_id for v in self.vaults})

    async def list_vaults(self, subscription_id: str) -> list[VaultRef]:
        return [v for v in self.vaults if v.subscription_id == subscription_id]

    async def get_vault(self, vault_id: str) -> VaultRef:
        return next(v for v in self.vaults if v.key == vault_id.lower())

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]:
        self.calls.append(("list", vault.name))
        failure = self.failures.get(vault.key)
        if failure is not None:
            raise failure
        return [
            j for j in self.listed[vault.key] if j.start_at and start_at <= j.start_at <= end_at
        ]

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        self.calls.append(("get", job_name))
        found = self.direct.get(job_name.lower()) or next(
            (j for j in self.listed[vault.key] if j.name.lower() == job_name.lower()), None
        )
        if found is None:
            raise ArmNotFound("gone", url=f"{vault.id}/backupJobs/{job_name}", status=404)
        return JobDetails(
            job=found,
            errors=(),
            tasks=(),
            property_bag={},
            progress_percentage=None,
            estimated_remaining_s=None,
            dynamic_error_message=None,
        )

    def rate_per_s(self, subscription_id: str) -> float:
        return 100.0


class ListSink:
    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        self.events.extend(events)

    async def aclose(self) -> None:
        pass

    def statuses(self, name: str) -> list[tuple[str | None, str]]:
        return [
            (e["job"]["previous_status"], e["job"]["status"])
            for e in self.events
            if e["job"]["id"] == name
        ]


def settings(**poll: object) -> Any:
    return parse_settings(
        {
            "azure": {
                "arm_endpoint": "http://127.0.0.1:1/",
                "allow_http_loopback": True,
                "credential": "static",
                "static_token": "t",
            },
            "poll": {"active_interval_s": 0.05, "idle_interval_s": 0.1, "overlap_s": 1, **poll},
        }
    )


async def run_until(scheduler: PollScheduler, done: Any, timeout_s: float = 5.0) -> None:
    """Run the scheduler until `done()` holds (checked every 20 ms), then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        with anyio.fail_after(timeout_s):
            # The conditions span several fakes, so poll them (bounded by fail_after).
            while not done():  # noqa: ASYNC110
                await anyio.sleep(0.02)
        scheduler.stop()


def make(source: ScriptedSource, store: MemoryCheckpointStore, sink: ListSink, **poll: object):
    return PollScheduler(
        source=source,
        store=store,
        sink=sink,
        clock=SystemClock(),
        settings=settings(**poll),
        rng=random.Random(1),
    )


NOW = datetime.now(UTC)


async def test_running_job_that_left_the_list_is_read_directly() -> None:
    """A tracked InProgress job missing from the list is fetched by id and its end is emitted."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    running = job(vault, "J1", "InProgress", start=NOW - timedelta(seconds=5))
    source.listed[vault.key] = [running]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink)
    await run_until(scheduler, lambda: sink.statuses("J1"))
    # The job now falls out of the list (as if its start left the window) and completes.
    source.listed[vault.key] = []
    source.direct["j1"] = job(vault, "J1", "Completed", start=NOW - timedelta(seconds=5))
    scheduler = make(source, store, sink)
    await run_until(scheduler, lambda: len(sink.statuses("J1")) == 2)
    assert sink.statuses("J1") == [(None, "InProgress"), ("InProgress", "Completed")]
    assert ("get", "j1") in source.calls


async def test_vanished_running_job_is_forgotten() -> None:
    """A tracked running job that answers 404 is dropped from state, with a diagnostic."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [job(vault, "J1", "InProgress", start=NOW)]
    sink, store = ListSink(), MemoryCheckpointStore()
    await run_until(make(source, store, sink), lambda: sink.events)
    assert (await store.load())[vault.key].jobs
    source.listed[vault.key] = []
    scheduler = make(source, store, sink)
    with capture_logs() as logs:
        await run_until(scheduler, lambda: ("get", "j1") in source.calls and scheduler.stats.polls)
    assert not (await store.load())[vault.key].jobs
    assert any(row["event"] == "job.vanished" for row in logs)


async def test_restart_from_checkpoint_emits_nothing_twice() -> None:
    """A second scheduler on the same store emits only what changed since the first."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [
        job(vault, "J1", "Completed", start=NOW - timedelta(minutes=5)),
        job(vault, "J2", "InProgress", start=NOW - timedelta(seconds=10)),
    ]
    sink, store = ListSink(), MemoryCheckpointStore()
    await run_until(make(source, store, sink), lambda: len(sink.events) == 2)
    source.listed[vault.key][1] = job(vault, "J2", "Failed", start=NOW - timedelta(seconds=10))
    await run_until(make(source, store, sink), lambda: len(sink.events) == 3)
    await anyio.sleep(0.3)
    assert [(e["job"]["id"], e["job"]["status"]) for e in sink.events] == [
        ("J1", "Completed"),
        ("J2", "InProgress"),
        ("J2", "Failed"),
    ]


async def test_backfill_off_records_silently() -> None:
    """With backfill = false, jobs seen on the first poll are recorded, not emitted."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [
        job(vault, "J1", "Completed", start=NOW - timedelta(minutes=5)),
        job(vault, "J2", "InProgress", start=NOW - timedelta(seconds=10)),
    ]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink, backfill=False)
    await run_until(scheduler, lambda: scheduler.stats.polls >= 2)
    assert sink.events == []
    source.listed[vault.key][1] = job(vault, "J2", "Completed", start=NOW - timedelta(seconds=10))
    scheduler = make(source, store, sink, backfill=False)
    await run_until(scheduler, lambda: sink.events)
    assert sink.statuses("J2") == [("InProgress", "Completed")]


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("a bug in one vault"),
        ArmThrottled("429", url="u", retry_after_s=30),
    ],
)
async def test_one_vault_failing_does_not_stop_the_others(failure: Exception) -> None:
    """A crash in one vault, or a 429 in its subscription, leaves other subscriptions polled."""
    bad, good = vault_ref(SUB_A, "bad"), vault_ref(SUB_B, "good")
    source = ScriptedSource([bad, good])
    source.failures[bad.key] = failure
    source.listed[good.key] = [job(good, "G1", "Completed", start=NOW - timedelta(seconds=30))]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink)
    with capture_logs():
        await run_until(
            scheduler, lambda: sum(1 for c in source.calls if c == ("list", "good")) >= 5
        )
    assert sink.statuses("G1") == [(None, "Completed")]
    bad_polls = sum(1 for c in source.calls if c == ("list", "bad"))
    assert bad_polls >= 1
    if isinstance(failure, ArmThrottled):
        assert bad_polls == 1  # held for Retry-After (30 s), not retried meanwhile
        assert scheduler.stats.throttled == 1


async def test_costly_first_polls_do_not_push_back_vaults_not_yet_polled() -> None:
    """Backfill details make first polls cost 6 reads; the rest still get theirs in one interval."""
    vaults = [vault_ref(SUB_A, f"v{n:02d}") for n in range(30)]
    source = ScriptedSource(vaults)
    source.rate_per_s = lambda subscription_id: 20.0  # type: ignore[method-assign]
    for vault in vaults:  # five finished jobs each: five detail reads on the first poll
        source.listed[vault.key] = [
            job(vault, f"{vault.name}-{n}", "Completed", start=NOW - timedelta(minutes=n + 1))
            for n in range(5)
        ]
    sink, store = ListSink(), MemoryCheckpointStore()
    # 30 vaults at 1 read each fit 20 reads/s with a 1.5 s interval; at 6 reads each they would
    # stretch it to 9 s if the first polls fed the estimate.
    scheduler = make(source, store, sink, active_interval_s=1.5, idle_interval_s=1.5)
    polled: set[str] = set()

    def all_polled() -> bool:
        polled.update(name for kind, name in source.calls if kind == "list")
        return len(polled) == len(vaults)

    await run_until(scheduler, all_polled, timeout_s=4.0)


class WideSource(ScriptedSource):
    """Lists more than the window asks for, as a window that moved back (a late job) would."""

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]:
        return await super().list_jobs(vault, start_at - timedelta(minutes=30), end_at)


async def test_finished_job_listed_again_after_the_window_moved_is_not_emitted_again() -> None:
    """A finished job listed again by a wider window is still known: one event, not one per poll."""
    vault = vault_ref(SUB_A, "v1")
    source = WideSource([vault])
    source.listed[vault.key] = [job(vault, "OLD", "Completed", start=NOW - timedelta(minutes=10))]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink, overlap_s=0.5)
    await run_until(scheduler, lambda: scheduler.stats.polls >= 5)
    assert sink.statuses("OLD") == [(None, "Completed")]
