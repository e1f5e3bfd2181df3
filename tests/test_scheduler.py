"""The scheduler's per-poll logic, against a scripted JobSource at its injected seam."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.checkpoints import MemoryCheckpointStore, StateStore
from monitor.clock import Clock
from monitor.config import Settings
from monitor.config_parse import parse_settings
from monitor.core.cadence import BACKOFF_BASE_S
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import BackupJob, JobDetails, JobKey, JobStatus, KnownEnded
from monitor.core.vaults import SubscriptionRef, VaultKind, VaultRef, parse_vault_id
from monitor.delivery import Delivery, SinkRoute
from monitor.errors import (
    ArmForbidden,
    ArmNotFound,
    ArmServerError,
    ArmThrottled,
    DeliveryError,
    ForeignOriginError,
    ParseError,
    StartupError,
    StoreError,
)
from monitor.outbox import OutboxEvent, OutboxSink
from monitor.poller import CHECKPOINT_REFRESH_S
from monitor.principals import Principal, Principals
from monitor.scheduler import PollScheduler
from tests.fakes import FakeClock, bare_details
from tests.virtual_time import VIRTUAL_TIME_BACKEND, LoopClock


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Every test here runs on virtual time: its fakes are in-process coroutines."""
    return VIRTUAL_TIME_BACKEND


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
        self.discovery_failures: dict[str, list[Exception]] = {}
        """Raised once each, in order, by discovery calls: key "*" for the subscription list,
        else a subscription id."""
        self.calls: list[tuple[str, str]] = []

    def _discovery_fails(self, key: str) -> None:
        queued = self.discovery_failures.get(key)
        if queued:
            raise queued.pop(0)

    principals = Principals.single()

    async def list_subscriptions(self, principal: Principal | None = None) -> list[SubscriptionRef]:
        self.calls.append(("subscriptions", "*"))
        self._discovery_fails("*")
        return [SubscriptionRef(id=s) for s in sorted({v.subscription_id for v in self.vaults})]

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]:
        if kind is VaultKind.RECOVERY_SERVICES:
            self.calls.append(("vaults", subscription_id))
            self._discovery_fails(subscription_id)
        else:
            self._discovery_fails(f"{subscription_id}/{kind.value}")
        return [v for v in self.vaults if v.subscription_id == subscription_id and v.kind is kind]

    async def get_vault(self, vault_id: str) -> VaultRef:
        return next(v for v in self.vaults if v.key == vault_id.lower())

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        self.calls.append(("list", vault.name))
        failure = self.failures.get(vault.key)
        if failure is not None:
            raise failure
        return [
            j for j in self.listed[vault.key] if j.start_at and start_at <= j.start_at <= end_at
        ]

    def forget_vault(self, vault_key: str) -> None:
        self.calls.append(("forget", vault_key))

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        self.calls.append(("get", job_name))
        found = self.direct.get(job_name.lower()) or next(
            (j for j in self.listed[vault.key] if j.name.lower() == job_name.lower()), None
        )
        if found is None:
            raise ArmNotFound("gone", url=f"{vault.id}/backupJobs/{job_name}", status=404)
        return bare_details(found)

    def rate_per_s(self, subscription_id: str) -> float:
        return 100.0

    def calm(self, subscription_id: str) -> bool:
        return False  # no spare reads: these tests count polls at the configured intervals


class ListSink:
    """An OutboxSink that keeps what it is given (it outlives schedulers: restarts append)."""

    kind: ClassVar[str] = "list"

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    @property
    def name(self) -> str:
        return "default"

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        self.events.extend(e.event for e in batch)

    async def delivered_ids(self) -> set[str]:
        return set()

    async def aclose(self) -> None:
        pass

    def statuses(self, name: str) -> list[tuple[str | None, str]]:
        return [
            (e["job"]["previous_status"], e["job"]["status"])
            for e in self.events
            if e["job"]["id"] == name
        ]


def settings(*, discovery: Mapping[str, object] | None = None, **poll: object) -> Any:
    """Valid settings with `poll` set on top, unvalidated: these tests poll every 50 ms, below
    the 1 s an operator may configure (on virtual time, so the figures are the tests' own)."""
    parsed = parse_settings(
        {
            "azure": {
                "arm_endpoint": "http://127.0.0.1:1/",
                "allow_http_loopback": True,
                "credential": "static",
                "static_token": "t",
            },
            "discovery": dict(discovery or {}),
        }
    )
    fast: dict[str, Any] = {"active_interval_s": 0.05, "idle_interval_s": 0.1, "overlap_s": 1}
    fast |= poll
    return dataclasses.replace(parsed, poll=dataclasses.replace(parsed.poll, **fast))


async def run_until(scheduler: PollScheduler, done: Any, timeout_s: float = 5.0) -> None:
    """Run the scheduler until `done()` holds (checked every 20 ms), then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        with anyio.fail_after(timeout_s):
            # The conditions span several fakes, so poll them (bounded by fail_after).
            while not done():  # noqa: ASYNC110
                await anyio.sleep(0.02)
        scheduler.stop()


def one_sink(store: StateStore, sink: OutboxSink, parsed: Settings) -> Delivery:
    """Delivery from `store` to `sink` alone, as the default sink; on a clock of its own, so
    tests that count the scheduler's sleeps see only those."""
    return Delivery(
        outbox=store,
        routes=[SinkRoute(sink, parsed.delivery_sinks[0])],
        settings=parsed.outbox,
        clock=LoopClock(),
        rng=random.Random(2),
    )


def make(
    source: ScriptedSource,
    store: MemoryCheckpointStore,
    sink: ListSink,
    *,
    clock: Clock | None = None,
    discovery: Mapping[str, object] | None = None,
    checkpoint_refresh_s: float = CHECKPOINT_REFRESH_S,
    **poll: object,
) -> PollScheduler:
    clock = clock or LoopClock()
    parsed = settings(discovery=discovery, **poll)
    return PollScheduler(
        source=source,
        rates=source,
        store=store,
        delivery=one_sink(store, sink, parsed),
        clock=clock,
        settings=parsed,
        rng=random.Random(1),
        checkpoint_refresh_s=checkpoint_refresh_s,
    )


def server_error(url: str = "https://management.azure.com/subscriptions") -> ArmServerError:
    return ArmServerError("503 ServiceUnavailable", url=url, status=503)


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


async def test_a_vault_that_is_gone_is_forgotten_by_the_source_too() -> None:
    """A vault whose list answers 404 is dropped, and its source lets go of what it kept of it
    (`forget_vault`, once); the other vault is still polled."""
    gone, kept = vault_ref(SUB_A, "gone"), vault_ref(SUB_A, "kept")
    source = ScriptedSource([gone, kept])
    source.failures[gone.key] = ArmNotFound("404", url=f"{gone.id}/backupJobs", status=404)
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink)
    with capture_logs() as logs:
        await run_until(
            scheduler, lambda: sum(1 for c in source.calls if c == ("list", "kept")) >= 3
        )
    assert [c for c in source.calls if c[0] == "forget"] == [("forget", gone.key)]
    assert [r["vault"] for r in logs if r["event"] == "vault.dropped"] == ["gone"]
    assert sum(1 for c in source.calls if c == ("list", "gone")) == 1


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
    scheduler = make(
        source, store, sink, active_interval_s=1.5, idle_interval_s=1.5, backfill_details="all"
    )
    polled: set[str] = set()

    def all_polled() -> bool:
        polled.update(name for kind, name in source.calls if kind == "list")
        return len(polled) == len(vaults)

    await run_until(scheduler, all_polled, timeout_s=4.0)


class WideSource(ScriptedSource):
    """Lists more than the window asks for, as a window that moved back (a late job) would."""

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
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


async def test_first_discovery_retries_until_arm_answers() -> None:
    """A 5xx on the first subscription list is retried (with a log line), then polling starts."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.discovery_failures["*"] = [server_error()]
    source.listed[vault.key] = [job(vault, "J1", "InProgress", start=NOW)]
    sink = ListSink()
    with capture_logs() as logs:
        await run_until(make(source, MemoryCheckpointStore(), sink), lambda: sink.events)
    retries = [row for row in logs if row["event"] == "discovery.retrying"]
    assert len(retries) == 1
    assert "503" in retries[0]["error"]
    assert 1.0 <= retries[0]["retry_in_s"] <= 2.0
    assert source.calls[:2] == [("subscriptions", "*"), ("subscriptions", "*")]


def failing_start(
    failures: list[Exception], startup_timeout_s: float
) -> tuple[ScriptedSource, FakeClock, PollScheduler]:
    """A scheduler on a virtual clock whose subscription list raises `failures`, in order."""
    source = ScriptedSource([vault_ref(SUB_A, "v1")])
    source.discovery_failures["*"] = failures
    clock = FakeClock()
    discovery = {"startup_timeout_s": startup_timeout_s}
    scheduler = make(source, MemoryCheckpointStore(), ListSink(), clock=clock, discovery=discovery)
    return source, clock, scheduler


async def test_first_discovery_gives_up_after_startup_timeout() -> None:
    """Only 5xx answers: backoff doubles until `startup_timeout_s` would pass, then exit 3."""
    _, clock, scheduler = failing_start([server_error() for _ in range(50)], 60)
    with pytest.raises(StartupError) as caught:
        await scheduler.run()
    attempts = len(clock.sleeps) + 1
    assert f"gave up after {attempts} attempts" in str(caught.value)
    assert "discovery.startup_timeout_s = 60" in str(caught.value)
    assert "503" in str(caught.value)
    assert sum(clock.sleeps) <= 60
    assert all(b > a for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))
    assert attempts >= 4


@pytest.mark.parametrize("startup_timeout_s", [0, 300])
async def test_first_discovery_stops_at_once_on_a_failure_that_will_not_pass(
    startup_timeout_s: float,
) -> None:
    """A 403 on the subscription list is not retried, whatever the startup timeout."""
    forbidden = ArmForbidden("403 AuthorizationFailed", url="https://x/subscriptions", status=403)
    source, clock, scheduler = failing_start([forbidden], startup_timeout_s)
    with pytest.raises(StartupError, match="ARM unreachable: no discovery call succeeded: 403"):
        await scheduler.run()
    assert clock.sleeps == []
    assert source.calls == [("subscriptions", "*")]


async def test_a_subscription_missed_by_discovery_is_retried_before_the_interval() -> None:
    """One subscription's vault list fails at start: its vaults are watched seconds later, not
    after `discovery.interval_s`."""
    a, b = vault_ref(SUB_A, "va"), vault_ref(SUB_B, "vb")
    source = ScriptedSource([a, b])
    source.discovery_failures[SUB_B] = [server_error()]
    source.listed[b.key] = [job(b, "JB", "InProgress", start=NOW)]
    sink = ListSink()
    scheduler = make(source, MemoryCheckpointStore(), sink, discovery={"interval_s": 300})
    with capture_logs() as logs:
        await run_until(scheduler, lambda: sink.statuses("JB"), timeout_s=10)
    assert [c for c in source.calls if c[0] == "vaults"].count(("vaults", SUB_B)) == 2
    assert any(row["event"] == "discovery.retry_scheduled" for row in logs)


async def test_unchanged_polls_refresh_the_checkpoint_only_when_due() -> None:
    """A poll that changes nothing skips the checkpoint until the stored poll time is
    `checkpoint_refresh_s` old; a change is checkpointed by the poll that sees it."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [job(vault, "J1", "Completed", start=NOW - timedelta(minutes=5))]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink, checkpoint_refresh_s=3600.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        with anyio.fail_after(5):
            while scheduler.stats.polls < 1:  # noqa: ASYNC110 - the scheduler is the signal
                await anyio.sleep(0.01)
            first = (await store.load())[vault.key].polled_at
            assert first is not None
            while scheduler.stats.polls < 6:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            assert (await store.load())[vault.key].polled_at == first  # five polls, no writes
            source.listed[vault.key].append(
                job(vault, "J2", "InProgress", start=LoopClock().utcnow())
            )
            while not sink.statuses("J2"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            saved = (await store.load())[vault.key]
            assert saved.polled_at is not None
            assert saved.polled_at > first
            assert {k.job_name for k in saved.jobs} == {"j1", "j2"}
        scheduler.stop()
    assert saved.polled_at is not None
    # The same vault where every stored poll time is due: each poll refreshes it.
    refreshing = make(source, store, sink, checkpoint_refresh_s=0.0)
    await run_until(refreshing, lambda: refreshing.stats.polls >= 2)
    refreshed = (await store.load())[vault.key].polled_at
    assert refreshed is not None
    assert refreshed > saved.polled_at


async def test_restart_after_unrecorded_polls_emits_what_changed_meanwhile_once() -> None:
    """An older stored poll time after a restart only widens the first window: a job that ran
    while the monitor was down is emitted once, and nothing already emitted is repeated."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [job(vault, "J1", "Completed", start=NOW - timedelta(minutes=5))]
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink)
    await run_until(scheduler, lambda: scheduler.stats.polls >= 5)
    source.listed[vault.key].append(job(vault, "J2", "Failed", start=LoopClock().utcnow()))
    restarted = make(source, store, sink)
    await run_until(restarted, lambda: restarted.stats.polls >= 5)
    assert [(e["job"]["id"], e["job"]["status"]) for e in sink.events] == [
        ("J1", "Completed"),
        ("J2", "Failed"),
    ]


async def test_an_empty_vaults_first_poll_is_checkpointed() -> None:
    """A vault with no jobs changes nothing on its first poll, yet that poll is checkpointed:
    after a restart its next job is news, not history recorded silently (backfill = false)."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    sink, store = ListSink(), MemoryCheckpointStore()
    scheduler = make(source, store, sink, backfill=False)
    await run_until(scheduler, lambda: scheduler.stats.polls >= 2)
    assert vault.key in await store.load()
    source.listed[vault.key] = [job(vault, "J1", "InProgress", start=LoopClock().utcnow())]
    await run_until(make(source, store, sink, backfill=False), lambda: sink.events)
    assert sink.statuses("J1") == [(None, "InProgress")]


class DeadSink(ListSink):
    """A sink whose destination refuses every delivery (a receiver that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        self.attempts += 1
        raise DeliveryError("receiver down", status=503)


async def test_events_committed_before_a_stop_are_delivered_by_the_next_start() -> None:
    """Committed while the sink was down: the next start (same store) delivers them, once, and
    its polls commit nothing again."""
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    source.listed[vault.key] = [job(vault, "J1", "InProgress", start=LoopClock().utcnow())]
    dead, store = DeadSink(), MemoryCheckpointStore()
    first = make(source, store, dead)
    await run_until(first, lambda: store.last_seq == 1 and dead.attempts >= 1)
    assert dead.events == []
    sink = ListSink()
    restarted = make(source, store, sink)
    await run_until(restarted, lambda: sink.events and restarted.stats.polls >= 3)
    assert sink.statuses("J1") == [(None, "InProgress")]
    assert store.last_seq == 1  # the restart's polls found nothing new to commit
    assert (await store.cursors())["default"] == 1


# ------------------------------------------------------------------------------ hardening (#9)


class FailingStore(MemoryCheckpointStore):
    """The in-memory store, whose saves fail while `failing` is set (a full state volume)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.failed_saves = 0

    async def save(self, vault_key: str, **kwargs: Any) -> None:
        if self.failing:
            self.failed_saves += 1
            raise StoreError("cannot write checkpoint: [Errno 28] No space left on device")
        await super().save(vault_key, **kwargs)


class FlakyDetails(ScriptedSource):
    """Detail reads of the jobs named in `failing` answer 503 (or raise what is given)."""

    def __init__(self, vaults: Sequence[VaultRef]) -> None:
        super().__init__(vaults)
        self.failing: dict[str, Exception] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.list_delay_s = 0.0

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        failure = self.failing.get(job_name.lower())
        if failure is not None:
            self.calls.append(("get", job_name))
            raise failure
        found = await super().get_job(vault, job_name)
        return bare_details(found.job, Read="directly")

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        sub = vault.subscription_id
        self.in_flight[sub] = self.in_flight.get(sub, 0) + 1
        self.peak[sub] = max(self.peak.get(sub, 0), self.in_flight[sub])
        try:
            if self.list_delay_s:
                await anyio.sleep(self.list_delay_s)
            return await super().list_jobs(vault, start_at, end_at)
        finally:
            self.in_flight[sub] -= 1


class TestFailingCheckpoint:
    async def test_a_failing_store_never_makes_an_event_go_out_twice(self) -> None:
        """While commits fail nothing is delivered and nothing moves; once the store works,
        the job's state at that moment goes out once, and the store holds it."""
        vault = vault_ref(SUB_A, "v1")
        source = ScriptedSource([vault])
        start = NOW - timedelta(seconds=20)
        source.listed[vault.key] = [job(vault, "J1", "InProgress", start=start)]
        sink, store = ListSink(), FailingStore()
        store.failing = True
        scheduler = make(source, store, sink)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                with anyio.fail_after(10):
                    while store.failed_saves < 3:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    health = scheduler.estate_health()
                    assert health.store_problem is not None
                    assert "No space left" in health.store_problem
                    assert health.unsaved_vaults == 1
                    source.listed[vault.key] = [job(vault, "J1", "Completed", start=start)]
                    while store.failed_saves < 6:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    assert sink.events == []  # nothing goes out before the store holds it
                    store.failing = False
                    while not sink.events:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    polls = scheduler.stats.polls
                    while scheduler.stats.polls < polls + 3:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                scheduler.stop()
        assert sink.statuses("J1") == [(None, "Completed")]
        stored = (await store.load())[vault.key]
        assert [s.status.value for s in stored.jobs.values()] == ["Completed"]
        assert scheduler.estate_health().unsaved_vaults == 0
        assert scheduler.estate_health().store_problem is None
        events = [row["event"] for row in logs]
        assert events.count("checkpoint.failed") == 1  # once per problem, not per poll
        assert events.count("checkpoint.recovered") == 1
        assert "poll.failed" not in events
        assert "poll.crashed" not in events

    async def test_changes_kept_in_memory_survive_a_restart_through_the_store(self) -> None:
        """What a failed save left in memory is written by a later save: a restart re-emits none."""
        vault = vault_ref(SUB_A, "v1")
        source = ScriptedSource([vault])
        start = NOW - timedelta(seconds=20)
        source.listed[vault.key] = [job(vault, "J1", "Failed", start=start)]
        sink, store = ListSink(), FailingStore()
        store.failing = True
        first = make(source, store, sink)

        async def stored() -> bool:
            return vault.key in await store.load()

        with capture_logs():
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.run)
                with anyio.fail_after(10):
                    while store.failed_saves < 3:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    store.failing = False  # the volume was freed: no poll has changes any more
                    while not await stored():  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                first.stop()
        assert sink.statuses("J1") == [(None, "Failed")]
        again = ListSink()
        second = make(source, store, again)
        await run_until(second, lambda: second.stats.polls >= 2)
        assert again.events == []


class TestDetailRetry:
    async def test_details_that_come_back_in_time_go_out_with_the_event(self) -> None:
        """A terminal change whose detail read fails is held, then emitted once with details."""
        vault = vault_ref(SUB_A, "v1")
        source = FlakyDetails([vault])
        start = NOW - timedelta(seconds=20)
        source.listed[vault.key] = [job(vault, "J1", "InProgress", start=start)]
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, detail_retry_s=30)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                with anyio.fail_after(10):
                    while not sink.events:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    source.failing["j1"] = server_error(f"{vault.id}/backupJobs/J1")
                    source.listed[vault.key] = [job(vault, "J1", "Failed", start=start)]
                    while source.calls.count(("get", "J1")) < 4:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    assert len(sink.events) == 1  # held back, not sent without details
                    del source.failing["j1"]
                    while len(sink.events) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                scheduler.stop()
        assert sink.statuses("J1") == [(None, "InProgress"), ("InProgress", "Failed")]
        assert sink.events[1]["job"]["properties"] == {"Read": "directly"}
        events = [row["event"] for row in logs]
        assert events.count("details.retrying") == 1
        assert "details.gave_up" not in events
        assert scheduler.estate_health().vaults_by_state == {"ok": 1}

    async def test_details_that_never_come_go_out_without_after_detail_retry_s(self) -> None:
        """Past detail_retry_s the event goes out without details, and a log line says so."""
        vault = vault_ref(SUB_A, "v1")
        source = FlakyDetails([vault])
        start = NOW - timedelta(seconds=20)
        source.listed[vault.key] = [job(vault, "J1", "Failed", start=start)]
        source.failing["j1"] = server_error()
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, detail_retry_s=0.5, backfill_details="all")
        with capture_logs() as logs:
            await run_until(scheduler, lambda: sink.events and scheduler.stats.polls >= 3)
        assert sink.statuses("J1") == [(None, "Failed")]
        assert "properties" not in sink.events[0]["job"]
        gave_up = [row for row in logs if row["event"] == "details.gave_up"]
        assert len(gave_up) == 1
        assert gave_up[0]["job_id"] == "J1"
        assert gave_up[0]["tried_for_s"] >= 0.5

    async def test_a_held_job_that_leaves_the_list_is_still_emitted(self) -> None:
        """A first-seen finished job held for details, then gone from the list, is read directly."""
        vault = vault_ref(SUB_A, "v1")
        source = FlakyDetails([vault])
        finished = job(vault, "J1", "Failed", start=NOW - timedelta(seconds=20))
        source.listed[vault.key] = [finished]
        source.failing["j1"] = server_error()
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, detail_retry_s=30, backfill_details="all")
        with capture_logs():
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                with anyio.fail_after(10):
                    while source.calls.count(("get", "J1")) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    source.listed[vault.key] = []
                    source.direct["j1"] = finished
                    del source.failing["j1"]
                    while not sink.events:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                scheduler.stop()
        assert sink.statuses("J1") == [(None, "Failed")]
        assert sink.events[0]["job"]["properties"] == {"Read": "directly"}


class TestOneJobsTrouble:
    async def test_a_direct_read_that_crashes_is_that_jobs_problem(self) -> None:
        """A tracked job whose direct read raises (as `evil/name` did) never fails the vault."""
        vault = vault_ref(SUB_A, "v1")
        source = FlakyDetails([vault])
        start = NOW - timedelta(seconds=20)
        source.listed[vault.key] = [
            job(vault, "evil", "InProgress", start=start),
            job(vault, "J2", "InProgress", start=start),
        ]
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                with anyio.fail_after(10):
                    while len(sink.events) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    source.failing["evil"] = ValueError("job_name must be one path segment")
                    source.listed[vault.key] = [job(vault, "J2", "Failed", start=start)]
                    while len(sink.events) < 3:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    polls = scheduler.stats.polls
                    while scheduler.stats.polls < polls + 3:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                scheduler.stop()
        assert sink.statuses("J2") == [(None, "InProgress"), ("InProgress", "Failed")]
        assert scheduler.estate_health().vaults_by_state == {"ok": 1}
        events = [row["event"] for row in logs]
        assert events.count("job.read_failed") == 1
        assert "poll.crashed" not in events
        assert "poll.failed" not in events

    async def test_a_tracked_job_whose_name_is_refused_is_forgotten(self) -> None:
        """A checkpoint from before names were checked may track `evil/name`: it is dropped
        once, logged, and the vault goes on."""
        vault = vault_ref(SUB_A, "v1")
        source = FlakyDetails([vault])
        store = MemoryCheckpointStore()
        evil = job(vault, "evil/name", "InProgress", start=NOW - timedelta(seconds=20))
        await store.save(
            vault.key,
            changed=[JobSnapshot.of(evil)],
            removed=[],
            polled_at=NOW - timedelta(seconds=5),
        )
        source.failing["evil/name"] = ParseError("name", "'/' is not allowed in a path segment")
        source.listed[vault.key] = [job(vault, "J2", "Completed", start=NOW - timedelta(seconds=9))]
        sink = ListSink()
        scheduler = make(source, store, sink)
        with capture_logs() as logs:
            await run_until(scheduler, lambda: sink.events and scheduler.stats.polls >= 3)
        assert sink.statuses("J2") == [(None, "Completed")]
        assert [k.job_name for k in (await store.load())[vault.key].jobs] == ["j2"]
        assert [row["event"] for row in logs].count("job.unreadable") == 1
        assert source.calls.count(("get", "evil/name")) == 1
        assert scheduler.estate_health().vaults_by_state == {"ok": 1}

    async def test_a_refused_next_link_is_retried_on_the_normal_backoff(self) -> None:
        """A foreign nextLink fails the poll, which is retried in seconds, not 300 s."""
        vault = vault_ref(SUB_A, "v1")
        source = ScriptedSource([vault])
        source.failures[vault.key] = ForeignOriginError(
            "refused to send the ARM token to https://evil.example", url="https://evil.example/x"
        )
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink)
        with capture_logs() as logs:
            await run_until(scheduler, lambda: scheduler.stats.failed_polls >= 1)
        failed = [row for row in logs if row["event"] == "poll.failed"]
        assert failed
        assert failed[0]["retry_in_s"] <= BACKOFF_BASE_S
        assert scheduler.estate_health().vaults_by_state == {"failing": 1}


class ScarceSource(ScriptedSource):
    """A ScriptedSource whose subscriptions are granted `rate` reads/s (the planner's input)."""

    def __init__(self, vaults: Sequence[VaultRef], rate: float) -> None:
        super().__init__(vaults)
        self.rate = rate

    def rate_per_s(self, subscription_id: str) -> float:
        return self.rate


class TestDetailsWhenTheBudgetBinds:
    @pytest.mark.parametrize(
        ("rate", "setting", "read"),
        [
            (0.5, "not_succeeded", {"F1", "W1"}),  # 6 vaults at 0.1 s need 60 reads/s: binds
            (0.5, "all", {"S1", "F1", "W1"}),
            (1000.0, "not_succeeded", {"S1", "F1", "W1"}),  # the intervals decide: all read
        ],
    )
    async def test_a_binding_budget_reads_details_only_where_they_matter(
        self, rate: float, setting: str, read: set[str]
    ) -> None:
        """While the rate binds, a job that ended Completed goes out without details (its read
        would be one poll fewer of some vault); failed and warned ones still get theirs."""
        vaults = [vault_ref(SUB_A, f"v{n}") for n in range(6)]
        source = ScarceSource(vaults, rate)
        start = NOW - timedelta(seconds=5)
        names = {"S1": "Completed", "F1": "Failed", "W1": "CompletedWithWarnings"}
        for name in names:
            source.listed[vaults[0].key].append(job(vaults[0], name, "InProgress", start=start))
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, details_when_budget_binds=setting)
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            with anyio.fail_after(60):
                while len(sink.events) < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                assert scheduler._planner.binds(SUB_A) is (rate < 1)
                source.listed[vaults[0].key] = [
                    job(vaults[0], name, status, start=start) for name, status in names.items()
                ]
                while len(sink.events) < 6:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            scheduler.stop()
        assert {name for kind, name in source.calls if kind == "get"} == read
        ended = {e["job"]["id"]: e["job"] for e in sink.events if e["job"]["outcome"]}
        assert {name for name, j in ended.items() if "properties" in j} == read
        assert all(("errors" in j) == ("tasks" in j) == ("properties" in j) for j in ended.values())


class TestFirstRound:
    async def test_polls_in_flight_are_limited_per_subscription(self) -> None:
        """With max_concurrency_per_subscription = 2, one subscription never has 3 polls at once,
        while two subscriptions together use more than 2 workers."""
        vaults = [vault_ref(sub, f"v{n}") for sub in (SUB_A, SUB_B) for n in range(6)]
        source = FlakyDetails(vaults)
        source.list_delay_s = 0.1
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, max_concurrency_per_subscription=2)
        await run_until(scheduler, lambda: scheduler.stats.polls >= 24)
        assert source.peak == {SUB_A: 2, SUB_B: 2}

    @pytest.mark.parametrize(
        ("backfill_details", "read"),
        [
            ("not_succeeded", {"F1", "W1", "C1"}),
            ("all", {"S1", "S2", "F1", "W1", "C1"}),
            ("none", set()),
        ],
    )
    async def test_backfilled_jobs_read_details_only_where_they_matter(
        self, backfill_details: str, read: set[str]
    ) -> None:
        """A first poll reads the details of failed, warned and cancelled jobs by default."""
        vault = vault_ref(SUB_A, "v1")
        source = ScriptedSource([vault])
        statuses = {
            "S1": "Completed",
            "S2": "Completed",
            "F1": "Failed",
            "W1": "CompletedWithWarnings",
            "C1": "Cancelled",
        }
        source.listed[vault.key] = [
            job(vault, name, status, start=NOW - timedelta(minutes=n + 1))
            for n, (name, status) in enumerate(statuses.items())
        ]
        sink, store = ListSink(), MemoryCheckpointStore()
        scheduler = make(source, store, sink, backfill_details=backfill_details)
        await run_until(scheduler, lambda: len(sink.events) == 5)
        assert {name for kind, name in source.calls if kind == "get"} == read
