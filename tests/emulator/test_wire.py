"""How the emulator writes objects on the wire, quirks included."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.emulator.catalogue import FAILED
from monitor.emulator.wire import format_duration, format_time, job_json
from monitor.emulator.world import World, WorldSettings, utc

T0 = utc(2026, 11, 25, 10)


@pytest.mark.parametrize(
    ("seconds", "iso", "timespan"),
    [
        (0.0, "PT0S", "00:00:00"),
        (12.4272909, "PT12.4272909S", "00:00:12.4272909"),
        (1223.0896697, "PT20M23.0896697S", "00:20:23.0896697"),
        (93784.5, "P1DT2H3M4.5S", "1.02:03:04.5000000"),
        (3600.0, "PT1H", "01:00:00"),
    ],
)
def test_duration_forms(seconds: float, iso: str, timespan: str) -> None:
    """Durations come out as ISO 8601 or as .NET TimeSpan text."""
    assert format_duration(seconds, timespan=False) == iso
    assert format_duration(seconds, timespan=True) == timespan


@given(st.datetimes(timezones=st.just(utc(2000, 1, 1).tzinfo)))
def test_times_have_seven_fraction_digits(at) -> None:
    """Timestamps carry seven fractional digits and a Z, as ARM writes them."""
    text = format_time(at)
    assert text.endswith("Z")
    assert len(text.split(".")[1]) == 8


@pytest.fixture(scope="module")
def world() -> World:
    world = World(WorldSettings(seed=5, subscriptions=3, vaults_per_subscription=6), T0)
    world.advance(T0 + timedelta(minutes=15))
    return world


def test_job_ids_use_the_rp_spelling(world: World) -> None:
    """Job ids start `/Subscriptions/`; some vaults spell the provider in lower case."""
    ids = [
        job_json(j, world.now, details=False)["id"] for v in world.vaults.values() for j in v.jobs
    ]
    assert all(i.startswith("/Subscriptions/") for i in ids)
    assert any("/providers/microsoft.recoveryservices/" in i for i in ids)
    assert any("/providers/Microsoft.RecoveryServices/" in i for i in ids)


def test_running_jobs_have_sentinel_or_no_end(world: World) -> None:
    """Running jobs: no endTime for VM and workload jobs, a sentinel for the others."""
    seen = set()
    for vault in world.vaults.values():
        for job in vault.jobs:
            if job.end_at is not None:
                continue
            props = job_json(job, world.now, details=False)["properties"]
            end = props.get("endTime")
            seen.add((job.job_type, end))
            if job.job_type in ("AzureIaaSVMJob", "AzureIaaSVMJobV2", "AzureWorkloadJob"):
                assert end is None
            elif job.job_type == "AzureStorageJob":
                assert end == "0001-01-01T00:00:00Z"
            else:
                assert end == "2001-01-01T00:00:00Z"
    assert seen


def test_actions_are_integers(world: World) -> None:
    """actionsInfo holds integers: 1 while cancellable, 2 once failed."""
    for vault in world.vaults.values():
        for job in vault.jobs:
            actions = job_json(job, world.now, details=False)["properties"]["actionsInfo"]
            assert all(isinstance(a, int) for a in actions)
            if job.status == FAILED:
                assert actions == [2]


def test_error_shapes_differ_by_type(world: World) -> None:
    """Failed VM jobs have an int errorCode and a title; MAB and DPM jobs have neither."""
    shapes = {}
    for vault in world.vaults.values():
        for job in vault.jobs:
            if job.status == FAILED:
                errors = job_json(job, world.now, details=True)["properties"]["errorDetails"]
                shapes[job.job_type] = set(errors[0])
    assert shapes.get("AzureIaaSVMJob", {"errorCode", "errorTitle"}) >= {"errorCode", "errorTitle"}
    for kind in ("MabJob", "DpmJob"):
        if kind in shapes:
            assert shapes[kind] == {"errorString", "recommendations"}


def test_both_duration_forms_appear(world: World) -> None:
    """The default world mixes ISO 8601 and TimeSpan durations."""
    durations = [
        job_json(j, world.now, details=False)["properties"]["duration"]
        for v in world.vaults.values()
        for j in v.jobs
    ]
    assert any(d.startswith("P") for d in durations)
    assert any(not d.startswith("P") for d in durations)


def test_terminal_renderings_are_cached_and_stable(world: World) -> None:
    """A finished job renders the same later; the cache returns the same object."""
    job = next(j for v in world.vaults.values() for j in v.jobs if j.is_terminal)
    first = job_json(job, world.now, details=True)
    assert job_json(job, world.now + timedelta(hours=1), details=True) is first


def test_tasks_end_within_their_job(world: World) -> None:
    """No task of a finished job ends after the job, cancelled jobs included."""
    checked = 0
    for vault in world.vaults.values():
        for job in vault.jobs:
            if job.end_at is None:
                continue
            info = job_json(job, world.now, details=True)["properties"]["extendedInfo"]
            for task in info.get("tasksList", []):
                end = task.get("endTime")
                if end and not end.startswith("0001"):
                    assert end <= format_time(job.end_at), (job.status, task)
                    checked += 1
    assert checked
