"""Schema v1 events: rendering, the CloudEvents envelope, and the sinks that write JSON lines."""

# Rules:
# - The event is a public contract (DESIGN §5, docs/events.md, schema/backup_job_event.v1.json):
#   keys in the order written here, times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, nothing else.
# - A sink writes a whole batch and flushes before `emit` returns, or raises SinkError; the
#   caller checkpoints only after `emit` returned (emit-then-checkpoint: at-least-once).
# - Writes run in a worker thread behind a CapacityLimiter(1): a slow disk or a full pipe never
#   blocks the event loop, and batches never interleave.

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Protocol, Self

import anyio
import anyio.to_thread
import orjson

from monitor.config import EventFormat, EventsSettings
from monitor.core.diff import JobStateChanged, event_id
from monitor.core.jobs import BackupJob, JobDetails, JobStatus, VaultRef
from monitor.errors import SinkError, StartupError

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPE",
    "FileSink",
    "Sink",
    "StdoutSink",
    "build_sink",
    "cloudevent_schema",
    "encode_events",
    "event_schema",
    "format_event_time",
    "render_event",
    "render_job",
    "render_vault",
    "to_cloudevent",
]

EVENT_SCHEMA_VERSION: Final = 1
EVENT_TYPE: Final = "backup_job.state_changed"
_SCHEMA_DIR: Final = "schema"
_EVENT_SCHEMA_FILE: Final = "backup_job_event.v1.json"
_CLOUDEVENT_SCHEMA_FILE: Final = "backup_job_cloudevent.v1.json"
_LINE: Final = orjson.OPT_APPEND_NEWLINE
RECOVERY_BYTES: Final = 4 * 1024 * 1024
"""How much of an events file's end is read back at start (see `Sink.recent_events`): the
batches of the polls in flight at a crash are the last lines written, and far smaller."""


class Sink(Protocol):
    """Where events go; the scheduler emits each poll's events, then checkpoints."""

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        """Write every event as one JSON line (UTF-8, keys in order), then flush.

        An empty batch writes nothing. When this returns, the lines have left the process.

        Raises:
            SinkError: an event could not be serialised or written; some lines may have been
                written. The caller must not checkpoint the batch.
        """
        ...

    async def recent_events(self) -> list[dict[str, Any]]:
        """The events this sink wrote last (in earlier runs too), oldest first, as far as it can
        read them back; [] when it cannot (a pipe, a terminal).

        Read once at start: an event written just before a crash, whose checkpoint was never
        written, is then known as emitted and not emitted again.
        """
        ...

    async def aclose(self) -> None:
        """Flush and release the sink; idempotent."""
        ...


def read_recent_events(path: Path | str, max_bytes: int = RECOVERY_BYTES) -> list[dict[str, Any]]:
    """The events in the last `max_bytes` of a JSON-lines file, oldest first.

    CloudEvents are unwrapped to their `data`. Lines that are not events (a line cut by the start
    of the window or by a crash mid-write, a line some other writer added) are skipped.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        file.seek(start)
        lines = file.read().split(b"\n")
    if start > 0:
        lines = lines[1:]  # most likely a part of a line
    events: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and value.get("specversion") and "data" in value:
            value = value["data"]
        if isinstance(value, dict) and value.get("event") == EVENT_TYPE:
            events.append(value)
    return events


# --------------------------------------------------------------------------------------------
# Rendering


def format_event_time(moment: datetime) -> str:
    """An instant as the event's time format: UTC, milliseconds (truncated), `Z`.

    Raises:
        ValueError: `moment` is naive.
    """
    return _format(_truncated_utc(moment))


def render_job(
    job: BackupJob,
    *,
    details: JobDetails | None = None,
    previous_status: JobStatus | None = None,
) -> dict[str, object]:
    """Render a job as the event's `job` object (schema v1, `$defs/job`; see docs/events.md).

    `details`, when given, adds `errors`, `tasks` and `properties` (all three or none);
    `previous_status` is written canonically, or null. Known statuses are written in their
    canonical casing; times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, durations in seconds (ms precision).

    Raises:
        ValueError: `details` is about another job.
    """
    if details is not None and details.job.key != job.key:
        raise ValueError(f"render_job: details of {details.job.key} for job {job.key}")
    status = JobStatus.of(job.status.value)
    start = None if job.start_at is None else _truncated_utc(job.start_at)
    end = None if job.end_at is None else _truncated_utc(job.end_at)
    job_out: dict[str, object] = {
        "id": job.name,
        "resource_id": job.resource_id,
        "type": job.job_type,
        "operation": job.operation,
        "backup_management_type": job.backup_management_type,
        "entity": job.entity,
        "status": status.value,
        "previous_status": (
            None if previous_status is None else JobStatus.of(previous_status.value).value
        ),
        "outcome": status.outcome,
        "start_time": None if start is None else _format(start),
        "end_time": None if end is None else _format(end),
        "duration_s": _seconds(job.duration_s),
    }
    if details is not None:
        job_out["errors"] = [
            {"code": e.code, "message": e.message, "recommendations": list(e.recommendations)}
            for e in details.errors
        ]
        job_out["tasks"] = [
            {
                "name": t.name,
                "status": None if t.status is None else JobStatus.of(t.status.value).value,
                "duration_s": _seconds(t.duration_s),
            }
            for t in details.tasks
        ]
        job_out["properties"] = dict(details.property_bag)
    return job_out


def render_vault(vault: VaultRef) -> dict[str, object]:
    """Render a vault as the event's `vault` object (schema v1, `$defs/vault`)."""
    return {
        "id": vault.id,
        "name": vault.name,
        "resource_group": vault.resource_group,
        "subscription_id": vault.subscription_id,
        "location": vault.location,
    }


def render_event(
    change: JobStateChanged,
    *,
    vault: VaultRef,
    details: JobDetails | None,
    emitted_at: datetime,
) -> dict[str, object]:
    """Render one state change as a schema v1 event (see docs/events.md).

    Base job fields come from `change.job` (the list item that produced the change); `details`,
    when the job's details were fetched, adds `errors`, `tasks` and `properties`. Those three
    keys are omitted when `details` is None, so consumers can tell "not fetched" from "none".
    `detection_lag_s` is `time − end_time` for a terminal status, `time − start_time` for a first
    sighting of a non-terminal one, computed on the millisecond values written, and omitted
    otherwise or when that time is unknown.

    Raises:
        ValueError: `vault` is not the change's vault, `details` is about another job, or
            `emitted_at` is naive.
    """
    job = change.job
    if vault.key != change.vault_key:
        raise ValueError(f"render_event: vault {vault.key!r} is not {change.vault_key!r}")
    if details is not None and details.job.key != job.key:
        raise ValueError(f"render_event: details of {details.job.key} for job {job.key}")
    status = JobStatus.of(job.status.value)  # canonical casing for known statuses
    previous = change.previous_status
    emitted = _truncated_utc(emitted_at)
    start = None if job.start_at is None else _truncated_utc(job.start_at)
    end = None if job.end_at is None else _truncated_utc(job.end_at)
    job_out = render_job(job, details=details, previous_status=previous)

    event: dict[str, object] = {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": EVENT_TYPE,
        # The same hash as change.event_id, over the canonical status text that is emitted.
        "event_id": event_id(change.vault_key, job.name, status.value),
        "time": _format(emitted),
        "job": job_out,
        "vault": render_vault(vault),
    }
    reached = end if status.is_terminal else start if previous is None else None
    if reached is not None:
        event["detection_lag_s"] = round((emitted - reached).total_seconds(), 3)
    return event


def to_cloudevent(event: Mapping[str, object]) -> dict[str, object]:
    """Wrap a schema v1 event as a CloudEvents 1.0 structured-mode JSON event.

    `id` is the event_id, `source` the vault id, `subject` the job id, `type` and `time` the
    event's own; the event itself is `data` (`datacontenttype: application/json`).

    Raises:
        ValueError: `event` is not a rendered schema v1 event.
    """
    job, vault = event.get("job"), event.get("vault")
    if not isinstance(job, Mapping) or not isinstance(vault, Mapping):
        raise ValueError("to_cloudevent: not a schema v1 event (no job or vault object)")
    return {
        "specversion": "1.0",
        "id": event["event_id"],
        "source": vault["id"],
        "subject": job["id"],
        "type": event["event"],
        "time": event["time"],
        "datacontenttype": "application/json",
        "data": event,
    }


def encode_events(events: Sequence[Mapping[str, object]], *, format: EventFormat = "json") -> bytes:
    """Serialise events as JSON lines (`\\n`-terminated UTF-8), optionally as CloudEvents.

    Raises:
        SinkError: an event holds a value JSON cannot represent (or is not a v1 event, for
            cloudevents); nothing of the batch should be written.
    """
    try:
        if format == "cloudevents":
            return b"".join(orjson.dumps(to_cloudevent(e), option=_LINE) for e in events)
        return b"".join(orjson.dumps(e, option=_LINE) for e in events)
    except (TypeError, ValueError, KeyError) as exc:
        raise SinkError(f"cannot serialise an event: {exc}") from exc


def _truncated_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"event times must be timezone-aware, got naive {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    return utc - timedelta(microseconds=utc.microsecond % 1000)


def _format(utc: datetime) -> str:
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------------------------
# Schemas


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a schema v1 event, as shipped in the package."""
    return _read_schema(_EVENT_SCHEMA_FILE)


def cloudevent_schema() -> dict[str, Any]:
    """The JSON Schema of the CloudEvents envelope; its `data` refers to `event_schema()`'s $id."""
    return _read_schema(_CLOUDEVENT_SCHEMA_FILE)


def _read_schema(name: str) -> dict[str, Any]:
    data = (
        resources.files(__package__ or "monitor").joinpath(_SCHEMA_DIR).joinpath(name).read_bytes()
    )
    schema = orjson.loads(data)
    if not isinstance(schema, dict):  # pragma: no cover - the shipped files are objects
        raise TypeError(f"{name} is not a JSON object")
    return schema


# --------------------------------------------------------------------------------------------
# Sinks


class _LineWriter:
    """Write encoded batches to a binary stream in a worker thread, one batch at a time."""

    def __init__(self, format: EventFormat) -> None:
        self._format: EventFormat = format
        self._limiter = anyio.CapacityLimiter(1)

    async def _emit(self, stream: IO[bytes], events: Sequence[Mapping[str, object]]) -> None:
        if not events:
            return
        data = encode_events(events, format=self._format)
        # Not abandoned on cancellation: a batch is written whole before cancellation lands.
        await anyio.to_thread.run_sync(self._write, stream, data, limiter=self._limiter)

    def _write(self, stream: IO[bytes], data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                written = stream.write(view)
                if written is None:  # a non-blocking raw stream that would block
                    raise BlockingIOError("the stream would block")
                view = view[written:]
            stream.flush()
            self._after_flush(stream)
        except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
            raise SinkError(f"cannot write events to {self._describe()}: {exc}") from exc

    def _after_flush(self, stream: IO[bytes]) -> None:
        """Hook run after each flushed batch, in the worker thread."""

    def _describe(self) -> str:
        raise NotImplementedError


class StdoutSink(_LineWriter):
    """Events as JSON lines on standard output (or any binary stream), the default sink.

    The stream is resolved at construction (`sys.stdout.buffer`) and never closed by the sink:
    it belongs to the process. Each batch is written and flushed before `emit` returns; a pipe
    cannot be fsynced, so durability past that point is the log shipper's.
    """

    def __init__(self, stream: IO[bytes] | None = None, *, format: EventFormat = "json") -> None:
        super().__init__(format)
        self._stream: IO[bytes] = sys.stdout.buffer if stream is None else stream
        self._label = "standard output" if stream is None else repr(stream)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def recent_events(self) -> list[dict[str, Any]]:
        """See `Sink.recent_events`: read back only when the stream is a regular file (stdout
        redirected to a file, on Linux); [] for a pipe or a terminal, or on any error."""
        return await anyio.to_thread.run_sync(self._read_back, limiter=self._limiter)

    def _read_back(self) -> list[dict[str, Any]]:
        try:
            fd = self._stream.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            return read_recent_events(f"/proc/self/fd/{fd}")
        except (OSError, ValueError, io.UnsupportedOperation):
            return []

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        """See `Sink.emit`.

        Raises:
            SinkError: as `Sink.emit` (e.g. BrokenPipeError when the reader went away).
            RuntimeError: the sink was closed.
        """
        if self._closed:
            raise RuntimeError("StdoutSink is closed")
        await self._emit(self._stream, events)

    async def aclose(self) -> None:
        """Flush the stream (it stays open); idempotent. Flush errors are ignored."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            # Every batch was flushed when emitted; a failing flush here loses nothing.
            with contextlib.suppress(OSError, ValueError):
                await anyio.to_thread.run_sync(self._stream.flush, limiter=self._limiter)

    def _describe(self) -> str:
        return self._label


class FileSink(_LineWriter):
    """Events appended as JSON lines to a file; open it with `async with FileSink(path)`.

    The parent directory is created when missing. If the file ends in a torn line (a crash in
    the middle of a write), a newline is appended first so that the next event starts its own
    line. With `fsync=True` (the default) every batch is fsynced before `emit` returns, so an
    event is on disk before its checkpoint is written, even across a power loss.
    """

    def __init__(self, path: Path, *, format: EventFormat = "json", fsync: bool = True) -> None:
        super().__init__(format)
        self._path = Path(path)
        self._fsync = fsync
        self._file: IO[bytes] | None = None

    @property
    def path(self) -> Path:
        """The file events are appended to."""
        return self._path

    async def __aenter__(self) -> Self:
        """Open the file for appending.

        Raises:
            RuntimeError: the sink is already open.
            StartupError: the directory cannot be created or the file cannot be opened for
                appending; the message names the path.
        """
        if self._file is not None:
            raise RuntimeError(f"{self._path} is already open")
        self._file = await anyio.to_thread.run_sync(_open_append, self._path, limiter=self._limiter)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def recent_events(self) -> list[dict[str, Any]]:
        """See `Sink.recent_events`: the last `RECOVERY_BYTES` of the file.

        Raises:
            SinkError: the file cannot be read back.
        """
        try:
            return await anyio.to_thread.run_sync(
                read_recent_events, self._path, limiter=self._limiter
            )
        except OSError as exc:
            raise SinkError(f"cannot read back the events file {self._path}: {exc}") from exc

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        """See `Sink.emit`; also fsyncs the file when the sink was built with `fsync=True`.

        Raises:
            SinkError: as `Sink.emit`; the message names the file.
            RuntimeError: the sink is not open.
        """
        if self._file is None:
            raise RuntimeError(f"{self._path} is not open; use `async with FileSink`")
        await self._emit(self._file, events)

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        file, self._file = self._file, None
        if file is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close, limiter=self._limiter)

    def _after_flush(self, stream: IO[bytes]) -> None:
        if self._fsync:
            os.fsync(stream.fileno())

    def _describe(self) -> str:
        return str(self._path)


def _open_append(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("a+b")
    except OSError as exc:
        raise StartupError(f"cannot open the events file {path} for appending: {exc}") from exc
    try:
        if file.seek(0, os.SEEK_END) > 0:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                file.write(b"\n")  # end the torn line left by a crash mid-write
                file.flush()
    except OSError as exc:
        file.close()
        raise StartupError(f"cannot append to the events file {path}: {exc}") from exc
    return file


def build_sink(settings: EventsSettings) -> StdoutSink | FileSink:
    """The sink `[events]` asks for, not yet opened; open it with `async with`."""
    if settings.sink == "stdout":
        return StdoutSink(format=settings.format)
    return FileSink(settings.sink, format=settings.format)
