"""The backup RP's `$filter` grammar and `$skiptoken` form, as the emulator's server reads them.

Grammar: `<prop> eq '<value>'` clauses joined by ` and `. Times are UTC in the form
`yyyy-MM-dd hh:mm:ss AM|PM`; the spec's own examples write midnight as `00:00:00 AM`, which the
service accepts, so we do too. `startTime` and `endTime` bound the window of job start times.
This module shares no code with the client's filter builder on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from monitor.emulator.estate import Job

CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+'([^']*)'\s*", re.I)
TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) (AM|PM)", re.I)
PROPS = {
    "starttime": "start_at",
    "endtime": "end_at",
    "status": "status",
    "backupmanagementtype": "backup_management_type",
    "operation": "operation",
    "jobid": "job_id",
}


class FilterError(ValueError):
    """The `$filter` or `$skiptoken` cannot be read; the server answers 400."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """A parsed `$filter`: the start-time window and the equality conditions."""

    start_at: datetime | None = None
    end_at: datetime | None = None
    status: str | None = None
    backup_management_type: str | None = None
    operation: str | None = None
    job_id: str | None = None

    def matches(self, job: Job) -> bool:
        """Whether `job` passes every equality condition (the window is applied separately)."""
        if self.status is not None and job.status.lower() != self.status:
            return False
        if self.backup_management_type is not None and (
            (job.backup_management_type or "").lower() != self.backup_management_type
        ):
            return False
        if self.operation is not None and job.operation.split(" ")[0].lower() != self.operation:
            return False
        return self.job_id is None or job.name.lower() == self.job_id


def parse_time(text: str) -> datetime:
    """Read `yyyy-MM-dd hh:mm:ss AM|PM` (UTC); hour 00 is accepted as 12.

    Raises:
        FilterError: any other form, ISO 8601 included.
    """
    m = TIME.fullmatch(text.strip())
    if m is None:
        raise FilterError(f"bad time {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if hour > 12:
        raise FilterError(f"hour {hour} on a 12-hour clock")
    hour = hour % 12 + (12 if m.group(7).upper() == "PM" else 0)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise FilterError(str(exc)) from exc


def parse_filter(text: str | None) -> JobQuery:
    """Parse a `$filter` value; None or empty means no condition.

    Raises:
        FilterError: unknown property, an operator other than `eq`, a bad time, or end < start.
    """
    if not text or not text.strip():
        return JobQuery()
    values: dict[str, object] = {}
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.I):
        m = CLAUSE.fullmatch(clause)
        if m is None:
            raise FilterError(f"bad clause {clause!r}")
        prop = PROPS.get(m.group(1).lower())
        if prop is None:
            raise FilterError(f"unknown property {m.group(1)!r}")
        value = m.group(2)
        values[prop] = parse_time(value) if prop in ("start_at", "end_at") else value.lower()
    query = JobQuery(**values)  # type: ignore[arg-type]
    if query.start_at and query.end_at and query.end_at < query.start_at:
        raise FilterError("endTime is before startTime")
    return query


def encode_skiptoken(vault_name: str, ordinal: int) -> str:
    """An Azure-Table-style continuation token naming the next job to return."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><ContinuationToken><Version>2.0</Version>'
        "<Type>Table</Type>"
        f"<NextPartitionKey>1!{len(vault_name) + 4}!{quote(vault_name.upper())}--"
        "</NextPartitionKey>"
        f"<NextRowKey>1!20!{ordinal:020d}</NextRowKey>"
        "<TargetLocation>Primary</TargetLocation></ContinuationToken>"
    )


ROW_KEY = re.compile(r"<NextRowKey>1!20!(\d{20})</NextRowKey>")


def decode_skiptoken(token: str | None) -> int | None:
    """The ordinal a skiptoken points at, or None for the first page.

    Accepts the token once-decoded (as sent) or still percent-encoded (as some SDKs re-encode it).

    Raises:
        FilterError: the token is not one of ours.
    """
    if not token:
        return None
    m = ROW_KEY.search(token) or ROW_KEY.search(unquote(token))
    if m is None:
        raise FilterError("bad skiptoken")
    return int(m.group(1))
