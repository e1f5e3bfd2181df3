"""Tests of the adaptive poll delays of `jobs wait` and of the backoff in monitor.core.cadence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.core.cadence import (
    BACKOFF_BASE_S,
    END_MARGIN_S,
    MAX_DELAY_S,
    MIN_DELAY_S,
    OPERATION_DEFAULT_DELAY_S,
    OPERATION_MAX_DELAY_S,
    backoff_s,
    next_job_poll_s,
    next_operation_poll_s,
)
from monitor.core.jobs import JobStatus

STATUSES = st.sampled_from([JobStatus.IN_PROGRESS, JobStatus.CANCELLING, JobStatus.of("Paused")])
SECONDS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@given(STATUSES, SECONDS, SECONDS, st.integers(min_value=0, max_value=1000))
def test_delay_is_always_within_bounds(status, remaining, age, overdue) -> None:
    """Whatever ARM says, a job is read at most every 2 s and at least every 60 s."""
    delay = next_job_poll_s(
        status=status, estimated_remaining_s=remaining, age_s=age, overdue_reads=overdue
    )
    assert MIN_DELAY_S <= delay <= MAX_DELAY_S


@given(st.floats(min_value=0.001, max_value=MAX_DELAY_S - END_MARGIN_S))
def test_a_running_job_is_read_just_after_its_estimated_end(remaining: float) -> None:
    """The whole estimate is slept (plus the margin): a read that cannot end the wait is waste."""
    delay = next_job_poll_s(
        status=JobStatus.IN_PROGRESS, estimated_remaining_s=remaining, age_s=5, overdue_reads=0
    )
    assert delay == max(remaining + END_MARGIN_S, MIN_DELAY_S)


def test_an_overdue_job_is_read_sooner_and_sooner_apart_then_capped() -> None:
    """Past its estimate, delays double from 2 s up to the cap."""
    delays = [
        next_job_poll_s(
            status=JobStatus.IN_PROGRESS, estimated_remaining_s=30, age_s=600, overdue_reads=n
        )
        for n in range(1, 9)
    ]
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]


def test_without_an_estimate_the_delay_grows_with_the_jobs_age() -> None:
    """No estimate (non-VM jobs): a quarter of the age, between 2 s and 60 s."""
    ages = [0, 4, 20, 100, 3600]
    delays = [
        next_job_poll_s(
            status=JobStatus.IN_PROGRESS, estimated_remaining_s=None, age_s=a, overdue_reads=0
        )
        for a in ages
    ]
    assert delays == [2, 2, 5, 25, 60]


def test_a_cancelling_job_is_read_soon() -> None:
    """Cancelling ends in seconds: the first re-read comes after 2 s."""
    assert (
        next_job_poll_s(
            status=JobStatus.CANCELLING, estimated_remaining_s=300, age_s=600, overdue_reads=1
        )
        == MIN_DELAY_S
    )


@given(st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)))
def test_operation_retry_after_is_honoured_up_to_the_cap(retry_after) -> None:
    """Retry-After is followed between 1 s and 10 s; without it, 3 s."""
    delay = next_operation_poll_s(retry_after)
    if retry_after is None:
        assert delay == OPERATION_DEFAULT_DELAY_S
    else:
        assert delay == min(max(retry_after, 1.0), OPERATION_MAX_DELAY_S)


@given(st.integers(min_value=-5, max_value=10_000), st.floats(min_value=0.5, max_value=1e6))
def test_backoff_doubles_from_the_base_up_to_the_cap(failures: int, cap_s: float) -> None:
    """Each failure doubles the wait from 2 s, never past the cap, never overflowing."""
    delay = backoff_s(failures, cap_s=cap_s)
    assert 0 < delay <= cap_s
    if failures <= 0:  # a negative count counts as none
        assert delay == min(BACKOFF_BASE_S, cap_s)
    else:
        assert delay == min(2 * backoff_s(failures - 1, cap_s=cap_s), cap_s)


def test_backoff_of_jobs_wait_and_the_scheduler() -> None:
    """`jobs wait` doubles from 2 s to 60 s; the scheduler's polls to 300 s."""
    assert [backoff_s(n, cap_s=60.0) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(10**9, cap_s=300.0) == 300.0
