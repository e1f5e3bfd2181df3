"""When to read next: `jobs wait`'s adaptive delays for a job and an operation, and the backoff."""

# Rules: nothing here awaits, sleeps or reads the clock; callers pass what they know.
#
# Why the job policy trusts the whole estimate: `az backup job wait` reads every 30 s, i.e.
# 1 + ⌈D/30⌉ reads for a job of D seconds, and answers up to 30 s late. A read that cannot end the
# wait is wasted, so while ARM gives `estimatedRemainingDuration` we sleep all of it plus a small
# margin (bounded to [MIN_DELAY_S, MAX_DELAY_S]): a job whose estimate holds costs one read per
# MAX_DELAY_S of its remaining time plus one, and is seen ending about END_MARGIN_S after it
# ends. Sleeping only a fraction of the estimate would spend a read that can only say
# "still running". When the estimate turns out optimistic (the job is still running at its
# estimated end), or ARM gives none while the job is Cancelling, delays restart short and double
# (2, 4, 8, … s). Without any estimate (job types other than VMs), the delay is a quarter of the
# job's age: short for a job that just started, long for one that has run for hours.
#
# `backoff_s` is the one backoff after failures in a row, for the scheduler's polls, discovery
# and `jobs wait`: it doubles from BACKOFF_BASE_S up to the caller's cap; callers that jitter it
# multiply by their own draw.

from __future__ import annotations

from typing import Final

from monitor.core.jobs import JobStatus

__all__ = [
    "BACKOFF_BASE_S",
    "END_MARGIN_S",
    "MAX_DELAY_S",
    "MIN_DELAY_S",
    "OPERATION_DEFAULT_DELAY_S",
    "OPERATION_MAX_DELAY_S",
    "backoff_s",
    "next_job_poll_s",
    "next_operation_poll_s",
]

MIN_DELAY_S: Final = 2.0
"""Never read one job more often than this."""
MAX_DELAY_S: Final = 60.0
"""Never leave a job unread longer than this: bounds the lag when an estimate is pessimistic."""
END_MARGIN_S: Final = 1.0
"""Read this long after the estimated end, so that the read lands after the job has ended."""
AGE_FRACTION: Final = 0.25
"""Without an estimate, wait this fraction of the job's age."""
OPERATION_DEFAULT_DELAY_S: Final = 3.0
"""Between two reads of an operation that gave no Retry-After (the CLI uses 5 s)."""
BACKOFF_BASE_S: Final = 2.0
"""The wait after a first failure; each further failure in a row doubles it, up to a cap."""
# 2 s · 2**20 is 24 days, past any cap; the exponent stops there so a count never overflows.
_MAX_DOUBLINGS: Final = 20
OPERATION_MIN_DELAY_S: Final = 1.0
OPERATION_MAX_DELAY_S: Final = 10.0
"""Retry-After of an operation is capped here: trigger-backup answers say 60 s, while the job
behind it exists within seconds (the operation is only the gate to the job id)."""


def next_job_poll_s(
    *,
    status: JobStatus,
    estimated_remaining_s: float | None,
    age_s: float | None,
    overdue_reads: int,
) -> float:
    """Seconds to wait before reading a non-terminal job again (see the module comment).

    Args:
        status: the job's status at the last read.
        estimated_remaining_s: `extendedInfo.estimatedRemainingDuration` at the last read, if given.
        age_s: how long the job has run (its `duration`, or now − start), if known.
        overdue_reads: consecutive reads that found the job still running although its estimate
            had run out (or found it Cancelling); 0 on the first such read's predecessor.

    Returns:
        A delay in [MIN_DELAY_S, MAX_DELAY_S].
    """
    if (
        status == JobStatus.IN_PROGRESS
        and estimated_remaining_s is not None
        and estimated_remaining_s > 0
        and overdue_reads == 0
    ):
        return _clamp(estimated_remaining_s + END_MARGIN_S, MIN_DELAY_S, MAX_DELAY_S)
    if overdue_reads > 0 or status == JobStatus.CANCELLING or estimated_remaining_s is not None:
        return _clamp(MIN_DELAY_S * 2.0 ** max(overdue_reads - 1, 0), MIN_DELAY_S, MAX_DELAY_S)
    if age_s is None:
        return MIN_DELAY_S
    return _clamp(AGE_FRACTION * age_s, MIN_DELAY_S, MAX_DELAY_S)


def next_operation_poll_s(retry_after_s: float | None) -> float:
    """Seconds to wait before reading a running async operation again.

    `Retry-After`, when ARM sent one, is honoured up to OPERATION_MAX_DELAY_S and no sooner than
    OPERATION_MIN_DELAY_S; without it, OPERATION_DEFAULT_DELAY_S.
    """
    if retry_after_s is None:
        return OPERATION_DEFAULT_DELAY_S
    return _clamp(retry_after_s, OPERATION_MIN_DELAY_S, OPERATION_MAX_DELAY_S)


def backoff_s(failures: int, *, cap_s: float, base_s: float = BACKOFF_BASE_S) -> float:
    """Seconds to wait after `failures` earlier failures in a row: `base_s` doubling, to `cap_s`.

    0 gives `base_s` (the wait after a first failure), 1 twice that, and so on; a negative count
    counts as 0. No jitter: a caller that spreads its retries multiplies by its own draw.
    """
    return min(cap_s, base_s * 2.0 ** min(max(failures, 0), _MAX_DOUBLINGS))


def _clamp(value: float, low: float, high: float) -> float:
    if value != value:  # NaN
        return low
    return min(max(value, low), high)
