"""The simulated estate without HTTP: determinism, lifecycles, estate changes."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.emulator.catalogue import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    COMPLETED_WITH_WARNINGS,
    FAILED,
    IN_PROGRESS,
    PROFILES,
    TERMINAL,
)
from monitor.emulator.world import World, WorldSettings, utc

T0 = utc(2026, 11, 25, 10)
ALL_TYPES = {
    "AzureIaaSVMJob",
    "AzureIaaSVMJobV2",
    "AzureWorkloadJob",
    "AzureStorageJob",
    "MabJob",
    "DpmJob",
    "VaultJob",
}
LEGAL = {
    None: {IN_PROGRESS},
    IN_PROGRESS: {COMPLETED, COMPLETED_WITH_WARNINGS, FAILED, CANCELLING},
    CANCELLING: {CANCELLED},
}


def small_world(**overrides: object) -> World:
    return World(WorldSettings(seed=3, subscriptions=2, vaults_per_subscription=4, **overrides), T0)  # type: ignore[arg-type]


class TestDeterminism:
    def test_same_seed_same_world(self) -> None:
        """Two worlds from one seed advanced to one time made the same transitions."""
        a, b = small_world(), small_world()
        a.advance(T0 + timedelta(minutes=5))
        b.advance(T0 + timedelta(minutes=5))
        assert a.transitions == b.transitions
        assert len(a.transitions) > 50

    def test_other_seed_other_world(self) -> None:
        """Another seed gives other subscriptions and jobs."""
        a = small_world()
        b = World(WorldSettings(seed=4, subscriptions=2, vaults_per_subscription=4), T0)
        assert set(a.subscriptions) != set(b.subscriptions)

    @settings(max_examples=25, deadline=None)
    @given(steps=st.lists(st.floats(min_value=0.0, max_value=40.0), min_size=1, max_size=12))
    def test_advancing_in_steps_equals_one_jump(self, steps: list[float]) -> None:
        """However the clock is stepped, the world makes the same transitions."""
        stepped, jumped = small_world(), small_world()
        at = T0
        for step in steps:
            at += timedelta(seconds=step)
            stepped.advance(at)
        jumped.advance(at)
        assert stepped.transitions == jumped.transitions


class TestLifecycles:
    def test_every_job_follows_a_legal_path(self) -> None:
        """Each job goes None → InProgress → terminal, or through Cancelling to Cancelled."""
        world = small_world()
        world.advance(T0 + timedelta(minutes=10))
        by_job: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
        for t in world.transitions:
            by_job[t.job_id].append((t.from_status, t.to_status))
        for steps in by_job.values():
            previous: str | None = None
            for before, after in steps:
                assert before == previous
                assert after in LEGAL[before]
                previous = after

    def test_transition_times_never_go_back(self) -> None:
        """The ground truth is ordered by time and numbered without gaps."""
        world = small_world()
        world.advance(T0 + timedelta(minutes=10))
        times = [t.at for t in world.transitions]
        assert times == sorted(times)
        assert [t.seq for t in world.transitions] == list(range(1, len(times) + 1))

    def test_terminal_jobs_have_end_and_failed_jobs_have_errors(self) -> None:
        """A finished job has an end time; only failed jobs carry an error."""
        world = small_world()
        world.advance(T0 + timedelta(minutes=10))
        jobs = [j for v in world.vaults.values() for j in v.jobs]
        assert any(j.status == FAILED for j in jobs)
        for job in jobs:
            assert (job.end_at is not None) == (job.status in TERMINAL)
            assert (job.error is not None) == (job.outcome == FAILED)

    def test_demo_profile_shows_every_job_type(self) -> None:
        """A demo estate of modest size runs all seven job types of the reference."""
        world = World(WorldSettings(seed=1, subscriptions=3, vaults_per_subscription=6), T0)
        world.advance(T0 + timedelta(minutes=15))
        seen = {j.job_type for v in world.vaults.values() for j in v.jobs}
        assert seen == ALL_TYPES

    def test_demo_profile_is_busy_within_a_minute(self) -> None:
        """The demo profile makes dozens of transitions in one minute on the default estate."""
        world = World(WorldSettings(), T0)
        before = len(world.transitions)
        world.advance(T0 + timedelta(minutes=1))
        assert len(world.transitions) - before >= 24

    def test_estate_profile_runs_daily_schedules(self) -> None:
        """In the estate profile each VM item backs up about once per scaled day."""
        settings_ = WorldSettings(
            seed=2, subscriptions=1, vaults_per_subscription=3, profile=PROFILES["estate"]
        )
        world = World(settings_, T0)
        vm_items = [i for v in world.vaults.values() for i in v.items if i.workload.value == "vm"]
        assert vm_items
        for item in vm_items:
            starts = [j for j in item.vault.jobs if j.item is item]
            assert 1 <= len(starts) <= 2  # one day of history

    def test_time_scale_compresses_the_estate(self) -> None:
        """time_scale 60 runs a day of the estate profile in 24 minutes."""
        world = World(
            WorldSettings(
                seed=2,
                subscriptions=1,
                vaults_per_subscription=2,
                profile=PROFILES["estate"],
                time_scale=60,
            ),
            T0,
        )
        assert world.profile.period_s == pytest.approx(1440)
        assert world.profile.history_s == pytest.approx(1440)


class TestEstateChanges:
    def test_deleted_vault_stops_changing(self) -> None:
        """After deletion a vault's jobs make no more transitions and it is not live."""
        world = small_world()
        vault = next(iter(world.vaults.values()))
        world.delete_vault(vault.id.upper())
        count = sum(1 for t in world.transitions if t.vault_id == vault.id)
        world.advance(T0 + timedelta(minutes=10))
        assert sum(1 for t in world.transitions if t.vault_id == vault.id) == count
        assert world.live_vault(vault.id) is None
        with pytest.raises(KeyError):
            world.delete_vault(vault.id)

    def test_added_vault_starts_running(self) -> None:
        """A vault added at run time gets items and jobs; adding it twice is refused."""
        world = small_world()
        sub = next(iter(world.subscriptions))
        vault = world.add_vault(
            subscription_id=sub, resource_group="rg-new", name="rsv-new", location="westeurope"
        )
        world.advance(T0 + timedelta(minutes=5))
        assert vault.items
        assert vault.jobs
        with pytest.raises(ValueError, match="exists already"):
            world.add_vault(
                subscription_id=sub, resource_group="rg-new", name="rsv-new", location="westeurope"
            )

    def test_triggered_backup_resolves_to_a_running_job(self) -> None:
        """A trigger makes an operation that names a real job after the operation delay."""
        world = small_world()
        vault = next(iter(world.vaults.values()))
        op = world.trigger_backup(vault, vault.items[0])
        assert op.status == IN_PROGRESS
        assert op.job is None
        world.advance(T0 + timedelta(seconds=world.settings.operation_delay_s + 0.1))
        assert op.status == "Succeeded"
        job = world.operations[op.id.lower()].job
        assert job is not None
        assert vault.jobs_by_name[job.name.lower()] is job
        assert job.is_user_triggered

    def test_retention_forgets_old_jobs(self) -> None:
        """Jobs that ended longer ago than retention_s are dropped from the vault."""
        world = small_world(retention_s=60.0)
        world.advance(T0 + timedelta(minutes=10))
        horizon = world.now - timedelta(seconds=60 + 120)  # prune runs as later jobs finish
        for vault in world.vaults.values():
            assert all(j.end_at is None or j.end_at >= horizon for j in vault.jobs)
            assert all(vault.jobs_by_name[j.name.lower()] is j for j in vault.jobs)
            assert vault.pruned + len(vault.jobs) == (
                vault.jobs[-1].ordinal + 1 if vault.jobs else vault.pruned
            )
