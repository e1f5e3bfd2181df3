"""Pure diff of a vault's job snapshots into typed state-change events."""

# Rule: nothing here awaits, sleeps or reads the clock; `observed_at` is an argument.

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, TypeAlias

from monitor.core.jobs import BackupJob, JobKey, JobStatus

__all__ = [
    "JobEvent",
    "JobSnapshot",
    "JobStateChanged",
    "JobTable",
    "apply",
    "diff_jobs",
    "event_id",
]


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


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
# The statuses an ended job is packed with, by position (the canonical objects only).
_ENDED: Final = (
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
_ENDED_CODE: Final = {id(status): code for code, status in enumerate(_ENDED)}


_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_GUID_LEN: Final = 36
_NO_CODES: Final = array("q")  # shared by every table with no ended job named by a GUID
_NO_ODD: Final[dict[str, int]] = {}  # shared, never written: a table builds its own


def _find(names: str, name: str) -> int:
    """The position of `name` among `names` (36-character GUIDs end to end), or -1. A match
    that is not on an entry's boundary (the end of one GUID and the start of the next) is not
    it: an entry matches only where it starts."""
    at = names.find(name)
    while at > 0 and at % _GUID_LEN:
        at = names.find(name, at + 1)
    return at // _GUID_LEN if at >= 0 else -1


class JobTable(Mapping[JobKey, JobSnapshot]):
    """The tracked jobs of one vault, as an immutable `Mapping[JobKey, JobSnapshot]` that holds
    an ended job in 44 bytes.

    Most of what the tracker keeps is ended jobs, kept until their start falls behind the
    lookback floor (180,000 of them at the 10,000-vault point). As snapshots, each cost a
    JobKey, a JobSnapshot and a datetime (152 bytes) besides its name (85). Here, an ended job
    of the table's vault (the vault of the first such job put in) with a canonical terminal
    status and a UTC start (or none) is one code, `start in microseconds << 3 | has start << 2
    | status` (any datetime's fits in 63 bits), in an `array("q")`. When its name is a
    lower-case GUID (as ARM names jobs, lower-cased by the parsers), the name is 36 characters
    of one string that holds them all end to end, in the codes' order (no object of its own; a
    look-up is a substring search); any other name maps to its code in a dict. Any other
    snapshot (a running job, another vault's key, another zone) is kept as it is. Reading gives
    back snapshots equal to those put in, made afresh for an ended job, with the same name;
    `status_of`, `ended_status`, `running` and `ended_before` answer without making any.
    """

    __slots__ = ("_codes", "_live", "_names", "_odd", "_vault_key")

    def __init__(self, snapshots: Iterable[JobSnapshot] = ()) -> None:
        self._vault_key: str | None = None
        self._names, self._codes, self._odd = "", _NO_CODES, _NO_ODD
        self._live: dict[JobKey, JobSnapshot] = {}
        self._build({}, snapshots, ())

    @classmethod
    def of(cls, jobs: Mapping[JobKey, JobSnapshot]) -> JobTable:
        """`jobs` as a table (a table is returned as it is)."""
        return jobs if isinstance(jobs, JobTable) else cls(jobs.values())

    def _build(
        self, ended: dict[str, int], put: Iterable[JobSnapshot], drop: Iterable[JobKey]
    ) -> None:
        """Fill this (new) table from `ended` (this vault's ended jobs by name, taken over) and
        `self._live`, with `put` added or replacing the snapshots of their keys, then `drop`
        removed."""
        live = self._live
        for snap in put:
            key, start = snap.key, snap.start_at
            code = _ENDED_CODE.get(id(snap.status))
            if code is not None and (start is None or start.tzinfo is UTC):
                if self._vault_key is None:
                    self._vault_key = key.vault_key
                if key.vault_key == self._vault_key:
                    if start is not None:
                        code |= ((start - _EPOCH) // _US) << 3 | 4
                    ended[key.job_name] = code
                    live.pop(key, None)
                    continue
            live[key] = snap
            if key.vault_key == self._vault_key:
                ended.pop(key.job_name, None)
        for key in drop:
            if live.pop(key, None) is None and key.vault_key == self._vault_key:
                ended.pop(key.job_name, None)
        guids: list[str] = []
        odd: dict[str, int] = {}
        for name, code in ended.items():
            if _GUID.fullmatch(name) is None:
                odd[name] = code
            else:
                guids.append(name)
        if guids:
            self._names = "".join(guids)
            self._codes = array("q", [ended[name] for name in guids])
        if odd:
            self._odd = odd

    def _ended(self) -> dict[str, int]:
        """This vault's ended jobs by name, as `_build` takes them (a new dict)."""
        ended = dict(self._named())
        ended.update(self._odd)
        return ended

    def _named(self) -> Iterator[tuple[str, int]]:
        """(name, code) of this vault's ended jobs named by GUIDs."""
        names, size = self._names, _GUID_LEN
        for at, code in enumerate(self._codes):
            yield names[at * size : (at + 1) * size], code

    def _code(self, job_name: str) -> int | None:
        """The code of this vault's ended job `job_name`, or None."""
        if len(job_name) == _GUID_LEN and self._names:
            at = _find(self._names, job_name)
            if at >= 0:
                return self._codes[at]
        return self._odd.get(job_name) if self._odd else None

    def replaced(self, put: Iterable[JobSnapshot], drop: Iterable[JobKey] = ()) -> JobTable:
        """A new table with `put` added or replacing the snapshots of their keys, then `drop`
        removed (absent keys are ignored); this one is left as it is."""
        copy = JobTable.__new__(JobTable)
        copy._vault_key = self._vault_key
        copy._names, copy._codes, copy._odd = "", _NO_CODES, _NO_ODD
        copy._live = dict(self._live)
        copy._build(self._ended(), put, drop)
        return copy

    def status_of(self, key: JobKey) -> JobStatus | None:
        """The status of `key`'s job, or None if it is not here."""
        if key.vault_key == self._vault_key:
            code = self._code(key.job_name)
            if code is not None:
                return _ENDED[code & 3]
        snap = self._live.get(key)
        return None if snap is None else snap.status

    def ended_status(self, job_name: str) -> JobStatus | None:
        """The terminal status of this vault's ended job `job_name` (lower-cased), or None: the
        `core.jobs.KnownEnded` a listing of the vault is parsed with. An ended job kept as a
        snapshot (another zone's start, another vault's key) answers None."""
        code = self._code(job_name)
        return None if code is None else _ENDED[code & 3]

    def running(self) -> Iterator[JobSnapshot]:
        """The snapshots of the jobs not in a terminal state."""
        return (s for s in self._live.values() if not s.status.is_terminal)

    def ended_before(self, floor: datetime) -> list[JobKey]:
        """The keys of the jobs in a terminal state that started before `floor` (aware)."""
        keys: list[JobKey] = []
        vault_key = self._vault_key
        if vault_key is not None and (self._codes or self._odd):
            limit = (floor - _EPOCH) // _US
            names, size = self._names, _GUID_LEN
            keys = [
                JobKey(vault_key=vault_key, job_name=names[at * size : (at + 1) * size])
                for at, code in enumerate(self._codes)
                if code & 4 and code >> 3 < limit
            ]
            keys += [
                JobKey(vault_key=vault_key, job_name=name)
                for name, code in self._odd.items()
                if code & 4 and code >> 3 < limit
            ]
        keys += [
            key
            for key, s in self._live.items()
            if s.status.is_terminal and s.start_at is not None and s.start_at < floor
        ]
        return keys

    def _snapshot(self, name: str, code: int) -> JobSnapshot:
        assert self._vault_key is not None
        start = _EPOCH + timedelta(microseconds=code >> 3) if code & 4 else None
        key = JobKey(vault_key=self._vault_key, job_name=name)
        return JobSnapshot(key=key, status=_ENDED[code & 3], start_at=start)

    def __getitem__(self, key: JobKey) -> JobSnapshot:
        if key.vault_key == self._vault_key:
            code = self._code(key.job_name)
            if code is not None:
                return self._snapshot(key.job_name, code)
        return self._live[key]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, JobKey):
            return False
        if key.vault_key == self._vault_key and self._code(key.job_name) is not None:
            return True
        return key in self._live

    def __iter__(self) -> Iterator[JobKey]:
        vault_key = self._vault_key
        if vault_key is not None:
            for name, _ in self._named():
                yield JobKey(vault_key=vault_key, job_name=name)
            for name in self._odd:
                yield JobKey(vault_key=vault_key, job_name=name)
        yield from self._live

    def __len__(self) -> int:
        return len(self._codes) + len(self._odd) + len(self._live)

    def __repr__(self) -> str:
        ended = len(self._codes) + len(self._odd)
        return f"JobTable({ended} ended, {len(self._live)} others)"


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
    status_of = before.status_of if isinstance(before, JobTable) else _status_in(before)
    for key, job in latest.items():
        known = status_of(key)
        if known is None:
            events.append(
                JobStateChanged(
                    vault_key=key.vault_key, job=job, previous_status=None, observed_at=observed_at
                )
            )
        elif known != job.status:
            events.append(
                JobStateChanged(
                    vault_key=key.vault_key,
                    job=job,
                    previous_status=known,
                    observed_at=observed_at,
                )
            )
    return events


def _status_in(jobs: Mapping[JobKey, JobSnapshot]) -> Callable[[JobKey], JobStatus | None]:
    def status_of(key: JobKey) -> JobStatus | None:
        snap = jobs.get(key)
        return None if snap is None else snap.status

    return status_of


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
