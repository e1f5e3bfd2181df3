"""Pure diff of a vault's job snapshots into typed state-change events."""

# Rule: nothing here awaits, sleeps or reads the clock; `observed_at` is an argument.

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeAlias

from monitor.core.jobs import BackupJob, JobKey, JobStatus

__all__ = ["JobEvent", "JobSnapshot", "JobStateChanged", "apply", "diff_jobs", "event_id"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSnapshot:
    """What the monitor remembers of a job between polls: its identity, status and start."""

    key: JobKey
    status: JobStatus
    start_at: datetime | None = None

    @classmethod
    def of(cls, job: BackupJob) -> JobSnapshot:
        """The snapshot of a parsed job."""
        return cls(key=job.key, status=job.status, start_at=job.start_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStateChanged:
    """A job was seen for the first time (`previous_status` None) or with a different status."""

    kind: ClassVar[str] = "backup_job.state_changed"

    vault_key: str
    job: BackupJob
    previous_status: JobStatus | None
    observed_at: datetime

    @property
    def status(self) -> JobStatus:
        """The status the job has now."""
        return self.job.status

    @property
    def is_first_sighting(self) -> bool:
        """True when the monitor had never seen this job before."""
        return self.previous_status is None

    @property
    def event_id(self) -> str:
        """The stable id of this transition; see `event_id()`."""
        return event_id(self.vault_key, self.job.name, self.job.status)


# A closed union: consumers `match` on it and end with `assert_never`.
JobEvent: TypeAlias = JobStateChanged


def diff_jobs(
    before: Mapping[JobKey, JobSnapshot],
    after: Iterable[BackupJob],
    observed_at: datetime,
) -> list[JobEvent]:
    """Compare what was known with what a poll returned; one event per changed job.

    A job absent from `before` yields an event with `previous_status=None`; a job whose status
    differs (case-insensitively) yields one with the old status; an unchanged job yields nothing.
    Jobs in `before` that are absent from `after` yield nothing: a sliding window drops old jobs,
    so absence is not a change. A job listed twice in `after` (overlapping pages) yields at most
    one event, for its last occurrence. Events come in the order the jobs were first listed.
    """
    latest: dict[JobKey, BackupJob] = {}
    for job in after:
        latest[job.key] = job
    events: list[JobEvent] = []
    for key, job in latest.items():
        known = before.get(key)
        if known is None:
            events.append(
                JobStateChanged(
                    vault_key=key.vault_key, job=job, previous_status=None, observed_at=observed_at
                )
            )
        elif known.status != job.status:
            events.append(
                JobStateChanged(
                    vault_key=key.vault_key,
                    job=job,
                    previous_status=known.status,
                    observed_at=observed_at,
                )
            )
    return events


def apply(
    before: Mapping[JobKey, JobSnapshot], events: Iterable[JobEvent]
) -> dict[JobKey, JobSnapshot]:
    """Replay events onto a snapshot map: the state to checkpoint after emitting them.

    Returns a new dict; `before` is not modified. For every key, the result's status equals the
    status of the job in the `after` that produced the events, or the old status for jobs that
    produced none (they did not change).
    """
    result = dict(before)
    for event in events:
        result[event.job.key] = JobSnapshot.of(event.job)
    return result


def event_id(vault_id: str, job_id: str, status: JobStatus | str) -> str:
    """The stable id of one transition: 32 hex chars of a SHA-256.

    The bytes hashed are the UTF-8 encoding of
    `vault_id.lower() + "|" + job_id.lower() + "|" + status`, where `status` is the status
    string as emitted (canonical PascalCase for known values, e.g. `Completed`; verbatim for
    unknown ones). `job_id` is the job's name (its GUID), not its resource id. The result is the
    first 32 characters of the lower-case hex digest (128 bits).
    """
    text = f"{vault_id.lower()}|{job_id.lower()}|{status}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
