"""The item watcher against the emulator's policies world over real sockets: the real ArmClient,
JobSources and store, on the emulator's accelerated clock (both sides share it)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import jsonschema
import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.arm import ArmClient
from monitor.arm_http import make_ssl_context, open_session
from monitor.checkpoints import MemoryCheckpointStore
from monitor.clock import ScaledClock
from monitor.config import AzureSettings, BackupVaultSettings, BudgetSettings, ProtectionSettings
from monitor.core.protection import BackupPolicy, ProtectedItem
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.credentials import StaticTokenCredential, TokenCache
from monitor.emulator import Emulator, EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator import clock as emulator_clock
from monitor.emulator.catalogue import PROFILES
from monitor.errors import ArmThrottled
from monitor.events import event_schema
from monitor.item_watcher import INDEX_KEY, ItemWatcher
from monitor.job_sources import JobSources
from monitor.metrics import Metrics
from monitor.outbox import EventLine
from monitor.pacing import BudgetBook
from tests.test_credentials import SCOPE

SPEED = 10800.0  # three hours of world time per real second
START = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
VALIDATOR = jsonschema.Draft202012Validator(
    event_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


@dataclass
class Rig:
    emu: Emulator
    arm: ArmClient
    sources: JobSources
    store: MemoryCheckpointStore
    clock: ScaledClock
    control: aiohttp.ClientSession

    def vaults(self) -> list[VaultRef]:
        return [parse_vault_id(v.id, location=v.location) for v in self.emu.world.vaults.values()]

    async def events(self) -> list[dict[str, Any]]:
        rows = [orjson.loads(e.line) for e in await self.store.read(0, 100_000)]
        for row in rows:
            VALIDATOR.validate(row)
        return rows

    async def post(self, path: str, body: dict[str, object]) -> None:
        async with self.control.post(f"{self.emu.url}{path}", json=body) as answer:
            assert answer.status < 300, await answer.text()

    def watcher(self, **settings: Any) -> ItemWatcher:
        return ItemWatcher(
            reads=self.arm,
            jobs=self.sources,
            store=self.store,
            settings=ProtectionSettings(**settings),
            clock=self.clock,
            rng=random.Random(5),
        )

    async def sleep_world(self, seconds: float) -> None:
        await anyio.sleep(seconds / SPEED)


@asynccontextmanager
async def rig(**world: Any) -> AsyncIterator[Rig]:
    anchor = time.time()
    emulator_side = emulator_clock.ScaledClock(SPEED, START, anchor)
    clock = ScaledClock(speed=SPEED, start=START, anchor=anchor)
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=7,
            subscriptions=1,
            vaults_per_subscription=1,
            profile=PROFILES["policies"],
            **world,
        )
    )
    async with (
        running_emulator(settings, clock=emulator_side) as emu,
        aiohttp.ClientSession() as control,
    ):
        azure = AzureSettings(
            arm_endpoint=emu.url + "/",
            credential="static",
            static_token=emu.token,
            allow_http_loopback=True,
            request_timeout_s=30.0,
        )
        budgets = BudgetBook(BudgetSettings(), clock=clock, rng=random.Random(3))
        async with open_session(azure, make_ssl_context(None)) as session:
            tokens = TokenCache(StaticTokenCredential(emu.token), SCOPE, clock)
            arm = ArmClient(
                session=session,
                tokens=tokens,
                azure=azure,
                budgets=budgets,
                clock=clock,
                rng=random.Random(4),
            )
            sources = JobSources(
                arm,
                BackupVaultSettings(),
                azure=azure,
                clock=clock,
                rng=random.Random(6),
            )
            yield Rig(emu, arm, sources, MemoryCheckpointStore(), clock, control)


async def run_for(rig_: Rig, watcher: ItemWatcher, world_s: float) -> None:
    async with anyio.create_task_group() as tg:
        await watcher.load()
        for vault in rig_.vaults():
            watcher.watch(vault)
        tg.start_soon(watcher.run)
        await rig_.sleep_world(world_s)
        tg.cancel_scope.cancel()


def item_ids(rig_: Rig) -> list[str]:
    return [item.id for vault in rig_.emu.world.vaults.values() for item in vault.items]


async def test_a_silently_stopped_schedule_is_reported_missed() -> None:
    """An item whose schedule stops making jobs: each of its runs is reported once, after its
    grace, and no run of the other items is."""
    async with rig() as r:
        target = item_ids(r)[0]
        await r.post("/_emulator/items/skip", {"id": target, "skip": True})
        watcher = r.watcher(items_interval_s=900)
        await run_for(r, watcher, 86400)
        events = await r.events()
    missed = [e for e in events if e["event"] == "backup_item.backup_missed"]
    assert missed, [e["event"] for e in events]
    assert {e["item"]["id"].lower() for e in missed} == {target.lower()}
    assert len({e["event_id"] for e in missed}) == len(missed)
    for event in missed:
        deadline = datetime.fromisoformat(event["expected_run"]["deadline"].replace("Z", "+00:00"))
        emitted = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        # Within two rounds: at 10,800× a round's real milliseconds are world minutes (the
        # bound of one round is judged at 2,400× in tests/test_missed_backups_e2e.py).
        assert timedelta(0) <= emitted - deadline <= timedelta(seconds=2 * 900)


async def test_protection_stop_is_one_change_and_no_missed_run() -> None:
    async with rig() as r:
        target = item_ids(r)[1]
        watcher = r.watcher(items_interval_s=600)
        async with anyio.create_task_group() as tg:
            await watcher.load()
            for vault in r.vaults():
                watcher.watch(vault)
            tg.start_soon(watcher.run)
            await r.sleep_world(3600)
            await r.post(
                "/_emulator/items/protection", {"id": target, "state": "ProtectionStopped"}
            )
            await r.sleep_world(86400)
            tg.cancel_scope.cancel()
        events = await r.events()
    changes = [
        e
        for e in events
        if e["event"] == "backup_item.protection_changed"
        and e["item"]["id"].lower() == target.lower()
    ]
    assert [c["protection"]["state"] for c in changes] == ["ProtectionStopped"]
    assert changes[0]["protection"]["previous_state"] == "Protected"
    missed = [e for e in events if e["event"] == "backup_item.backup_missed"]
    assert [e for e in missed if e["item"]["id"].lower() == target.lower()] == []


async def test_a_hung_job_is_reported_long_running_once() -> None:
    async with rig() as r:
        target = item_ids(r)[0]
        await r.post("/_emulator/items/hang", {"id": target, "hang": True})
        watcher = r.watcher(items_interval_s=600, long_running_after_s=6 * 3600)
        await run_for(r, watcher, 86400)
        events = await r.events()
    long = [e for e in events if e["event"] == "backup_job.long_running"]
    assert long, [e["event"] for e in events]
    assert len({e["job"]["id"] for e in long}) == len(long)
    assert all(e["long_running"]["elapsed_s"] > e["long_running"]["threshold_s"] for e in long)


async def test_a_per_action_throttle_pauses_item_reads_only() -> None:
    """ResourceRequestsThrottled on protectedItems/read: the next item read raises at once
    without being sent, while the same subscription's job list is read as usual."""
    async with rig() as r:
        r.emu.arm.protected_items_limiter.configure(2, 300.0)
        vault = r.vaults()[0]
        await r.arm.list_protected_items(vault)
        await r.arm.list_protected_items(vault)
        with capture_logs() as logs, pytest.raises(ArmThrottled) as first:
            await r.arm.list_protected_items(vault)
        assert first.value.code == "ResourceRequestsThrottled"
        assert [row["event"] for row in logs] == ["arm.action_throttled"]
        refused = r.emu.arm.protected_items_limiter.throttled
        with pytest.raises(ArmThrottled) as second:
            await r.arm.list_protected_items(vault)
        assert r.emu.arm.protected_items_limiter.throttled == refused  # not sent
        assert 0 < second.value.retry_after_s <= first.value.retry_after_s + 1
        now = r.clock.utcnow()
        await r.arm.list_jobs(vault, now - timedelta(hours=1), now)  # not paused
        await r.arm.list_policies(vault)  # another action: not paused


async def test_state_survives_a_new_watcher() -> None:
    """A second watcher on the same store (a restart) repeats nothing the first reported."""
    async with rig() as r:
        for item_id in item_ids(r):
            await r.post("/_emulator/items/skip", {"id": item_id, "skip": True})
        await run_for(r, r.watcher(items_interval_s=900), 43200)
        first = await r.events()
        restarted = r.watcher(items_interval_s=900)
        await restarted.load()
        (vault,) = r.vaults()
        restarted.watch(vault)
        now = r.clock.utcnow()
        jobs = await r.arm.list_jobs(vault, now - timedelta(days=2), now)
        restored_names = [restarted.item_id_of(vault.key, job) for job in jobs]
        restored_names = [name for name in restored_names if name is not None]
        await run_for(r, r.watcher(items_interval_s=900), 43200)
        both = await r.events()
    assert first
    assert restored_names, "a restarted watcher names no job's item before its first round"
    ids = [e["event_id"] for e in both]
    assert len(ids) == len(set(ids))
    assert len(both) > len(first)


class RecordingStore(MemoryCheckpointStore):
    """The memory store, counting the rounds that stored a vault's index and keeping the keys
    rounds removed."""

    def __init__(self) -> None:
        super().__init__()
        self.index_writes = 0
        self.removed: list[str] = []

    async def save_items(
        self,
        vault_key: str,
        *,
        states: Mapping[str, str],
        removed: Sequence[str],
        events: Sequence[EventLine],
        now: datetime,
    ) -> None:
        await super().save_items(vault_key, states=states, removed=removed, events=events, now=now)
        self.index_writes += INDEX_KEY in states
        self.removed.extend(removed)


async def test_an_unchanged_index_is_stored_once_across_a_restart() -> None:
    """The watcher keeps a digest of the stored index, not its text: rounds whose items did not
    change do not store it again, nor do those of a watcher restarted on the same store."""
    async with rig() as r:
        r.store = store = RecordingStore()
        first = r.watcher(items_interval_s=900)
        await run_for(r, first, 6 * 900)
        assert first.stats.rounds >= 3
        assert store.index_writes == 1
        restarted = r.watcher(items_interval_s=900)
        await run_for(r, restarted, 3 * 900)
        assert restarted.stats.rounds >= 2
        assert store.index_writes == 1
        (vault,) = r.vaults()
        assert INDEX_KEY in (await store.load_items())[vault.key]


async def test_backup_vault_instances_follow_their_policies() -> None:
    """Backup vault instances whose jobs follow their policies' repeating intervals (Resource
    Graph windows): every instance is read and judged, and no run that made a job is reported
    missed; the metrics count each instance once."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with rig(backup_vaults_per_subscription=1) as r:
        vaults = [
            parse_vault_id(v.id, location=v.location)
            for v in r.emu.world.backup_vaults.vaults.values()
        ]
        instances = sum(len(v.instances) for v in r.emu.world.backup_vaults.vaults.values())
        watcher = ItemWatcher(
            reads=r.arm,
            jobs=r.sources,
            store=r.store,
            settings=ProtectionSettings(items_interval_s=900),
            clock=r.clock,
            rng=random.Random(5),
            metrics=metrics,
        )
        async with anyio.create_task_group() as tg:
            await watcher.load()
            for vault in vaults:
                watcher.watch(vault)
            tg.start_soon(watcher.run)
            await r.sleep_world(86400)
            tg.cancel_scope.cancel()
        events = await r.events()
    assert watcher.stats.rounds > 10
    assert watcher.stats.failed_rounds == 0
    assert [e for e in events if e["event"] == "backup_item.backup_missed"] == []
    sub = vaults[0].subscription_id.lower()
    counted = sum(
        registry.get_sample_value("backup_monitor_items", {"subscription": sub, "state": state})
        or 0.0
        for state in ("fresh", "overdue", "missed", "unprotected")
    )
    assert counted == instances > 0


async def test_the_opt_in_recovery_point_gauge_has_one_series_per_item() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.record_item_recovery_points()
    async with rig() as r:
        watcher = ItemWatcher(
            reads=r.arm,
            jobs=r.sources,
            store=r.store,
            settings=ProtectionSettings(items_interval_s=900, recovery_point_metric=True),
            clock=r.clock,
            rng=random.Random(5),
            metrics=metrics,
        )
        await run_for(r, watcher, 7200)
        items = {
            item.id.lower(): item for vault in r.emu.world.vaults.values() for item in vault.items
        }
    series = [
        s
        for family in registry.collect()
        if family.name == "backup_monitor_item_last_recovery_point_timestamp_seconds"
        for s in family.samples
    ]
    assert {s.labels["item"] for s in series} <= set(items)
    assert len(series) >= len(items) - 1  # an item with no recovery point yet has no series
    assert all(s.value > START.timestamp() - 30 * 86400 for s in series)


class CaseFlipping:
    """The ARM client's reads, the items' ids upper-cased once `flipped` (ARM's casing of ids
    varies between answers)."""

    def __init__(self, arm: ArmClient) -> None:
        self.arm, self.flipped = arm, False

    async def list_policies(self, vault: VaultRef) -> list[BackupPolicy]:
        return await self.arm.list_policies(vault)

    async def list_protected_items(self, vault: VaultRef) -> list[ProtectedItem]:
        items = await self.arm.list_protected_items(vault)
        return [replace(item, id=item.id.upper()) for item in items] if self.flipped else items


async def test_an_item_keeps_its_state_when_its_id_changes_case() -> None:
    """States are kept under the ids as read but found without regard to case: after the ids'
    casing changes, every item's state goes on (its durations are not read afresh) and none is
    removed."""
    async with rig() as r:
        r.store = store = RecordingStore()
        reads = CaseFlipping(r.arm)
        watcher = ItemWatcher(
            reads=reads,
            jobs=r.sources,
            store=store,
            settings=ProtectionSettings(items_interval_s=900),
            clock=r.clock,
            rng=random.Random(5),
        )
        (vault,) = r.vaults()

        async def durations() -> dict[str, int]:
            stored = (await store.load_items())[vault.key]
            return {
                key: len(orjson.loads(text)["durations"])
                for key, text in stored.items()
                if key not in (INDEX_KEY, "~vault")
            }

        async with anyio.create_task_group() as tg:
            await watcher.load()
            watcher.watch(vault)
            tg.start_soon(watcher.run)
            await r.sleep_world(12 * 3600)
            before = await durations()
            reads.flipped = True
            rounds = watcher.stats.rounds
            with anyio.fail_after(30):
                while watcher.stats.rounds < rounds + 2:
                    await r.sleep_world(900)
            tg.cancel_scope.cancel()
        after = await durations()
    assert store.removed == []
    assert set(after) == set(before)
    assert max(before.values()) >= 3
    assert all(after[key] >= before[key] for key in before)
