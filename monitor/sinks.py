"""Schema v1 events: rendering, the CloudEvents envelope, and the sinks that write JSON lines."""

# Rules:
# - The event is a public contract (DESIGN §5, docs/events.md, schema/backup_job_event.v1.json):
#   keys in the order written here, times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, nothing else.
# - A sink writes a whole batch and flushes before `emit` returns, or raises SinkError; the
#   caller checkpoints only after `emit` returned (emit-then-checkpoint: at-least-once).
# - A file sink's batch is all or nothing (truncated back on failure), and no event_id is
#   written twice by retries; a failed batch is counted through the injected SinkObserver and
#   logged once per problem. Sinks know nothing of Prometheus.
# - Writes run in a worker thread behind a CapacityLimiter(1): a slow disk or a full pipe never
#   blocks the event loop, and batches never interleave.

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Final, Protocol, Self, TypeVar

import anyio
import anyio.to_thread
import orjson
import structlog

from monitor.config import EventFormat, EventsSettings
from monitor.core.diff import JobStateChanged, event_id
from monitor.core.jobs import BackupJob, JobDetails, JobStatus, VaultRef
from monitor.errors import SinkError, StartupError

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPE",
    "FileSink",
    "Sink",
    "SinkObserver",
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
_NEWLINE: Final = 0x0A
_T = TypeVar("_T")
RECOVERY_BYTES: Final = 4 * 1024 * 1024
"""How much of an events file's end is read back at start (see `Sink.recent_events`): the
batches of the polls in flight at a crash are the last lines written, and far smaller."""

log = structlog.get_logger("monitor.sinks")


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
    return _events_in(lines)


def _events_in(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The schema v1 events among JSON lines, CloudEvents unwrapped; other lines skipped."""
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


class SinkObserver(Protocol):
    """Told of every batch a sink failed to write (`Metrics` is one); called on the event loop."""

    def sink_write_failed(self, sink: str) -> None:
        """A batch could not be written to the sink of kind `sink` (`file` or `stdout`)."""
        ...


class _WriteFailed(Exception):
    """Raised in the worker thread: what failed, and how much of the batch was taken back."""

    def __init__(
        self,
        error: OSError | ValueError,
        *,
        bytes_rolled_back: int = 0,
        rollback_error: OSError | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error, self.bytes_rolled_back = error, bytes_rolled_back
        self.rollback_error = rollback_error


class _LineWriter:
    """One batch at a time in a worker thread; failures counted, logged once per problem."""

    kind: ClassVar[str]
    """The `sink` label of `backup_monitor_sink_write_failures_total`."""

    def __init__(self, format: EventFormat, observer: SinkObserver | None) -> None:
        self._format: EventFormat = format
        self._observer = observer
        self._limiter = anyio.CapacityLimiter(1)
        self._reported: str | None = None  # the failure last logged; None while writes work
        self._failed_writes = 0  # batches failed since the last one written

    async def _run(self, write: Callable[[], _T]) -> _T:
        """Run `write` in the worker thread; a `_WriteFailed` becomes a counted SinkError.

        Not abandoned on cancellation: a batch is written (or rolled back) whole before
        cancellation lands.
        """
        try:
            result = await anyio.to_thread.run_sync(write, limiter=self._limiter)
        except _WriteFailed as failure:
            raise self._failed(failure) from failure.error
        if self._reported is not None:
            log.info(
                "sink.recovered",
                sink=self.kind,
                path=self._describe(),
                failed_writes=self._failed_writes,
            )
        self._reported, self._failed_writes = None, 0
        return result

    def _failed(self, failure: _WriteFailed) -> SinkError:
        self._failed_writes += 1
        if self._observer is not None:
            self._observer.sink_write_failed(self.kind)
        error, rollback_error = failure.error, failure.rollback_error
        message = f"cannot write events to {self._describe()}: {error}"
        if rollback_error is not None:
            message += f"; cannot roll the batch back: {rollback_error}"
        problem = f"{type(error).__name__}:{getattr(error, 'errno', None)}:{rollback_error!r}"
        if problem != self._reported:
            fields: dict[str, object] = {
                "sink": self.kind,
                "path": self._describe(),
                "error": str(error),
                "bytes_rolled_back": failure.bytes_rolled_back,
            }
            if rollback_error is not None:
                fields["rollback_error"] = str(rollback_error)
            log.warning("sink.write_failed", **fields)
            self._reported = problem
        return SinkError(message)

    def _describe(self) -> str:
        raise NotImplementedError


class StdoutSink(_LineWriter):
    """Events as JSON lines on standard output (or any binary stream), the default sink.

    The stream is resolved at construction (`sys.stdout.buffer`) and never closed by the sink:
    it belongs to the process. Each batch is written and flushed before `emit` returns; a pipe
    cannot be fsynced, so durability past that point is the log shipper's.

    A pipe cannot be rolled back either: a batch that fails half-way stays half-written, and the
    caller's retry writes it again whole (at-least-once; the repeats carry the same `event_id`).
    When the failure may have cut a line, the next batch starts with a newline, so the cut line
    never swallows the first event of the retry. Written through the stream's file descriptor
    when it has one, the sink knows exactly where a failure cut; without one (an in-memory
    stream) it assumes the worst, which can cost an empty line.
    """

    kind: ClassVar[str] = "stdout"

    def __init__(
        self,
        stream: IO[bytes] | None = None,
        *,
        format: EventFormat = "json",
        observer: SinkObserver | None = None,
    ) -> None:
        super().__init__(format, observer)
        self._stream: IO[bytes] = sys.stdout.buffer if stream is None else stream
        self._label = "standard output" if stream is None else repr(stream)
        self._closed = False
        self._line_open = False  # a failed write may have left a line without its newline

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
            SinkError: as `Sink.emit` (e.g. BrokenPipeError when the reader went away); counted
                and logged (`sink.write_failed`) unless the events could not be serialised.
            RuntimeError: the sink was closed.
        """
        if self._closed:
            raise RuntimeError("StdoutSink is closed")
        if not events:
            return
        data = encode_events(events, format=self._format)
        await self._run(functools.partial(self._write, data))

    async def aclose(self) -> None:
        """Flush the stream (it stays open); idempotent. Flush errors are ignored."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            # Every batch was flushed when emitted; a failing flush here loses nothing.
            with contextlib.suppress(OSError, ValueError):
                await anyio.to_thread.run_sync(self._stream.flush, limiter=self._limiter)

    def _write(self, data: bytes) -> None:
        if self._line_open:
            data = b"\n" + data
        try:
            fd: int | None = self._stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            fd = None
        written = 0
        try:
            self._stream.flush()  # nothing is pending (every batch was flushed); be sure
            view = memoryview(data)
            while view:
                if fd is None:
                    count = self._stream.write(view)
                    if count is None:  # a non-blocking raw stream that would block
                        raise BlockingIOError("the stream would block")
                else:
                    count = os.write(fd, view)
                written += count
                view = view[count:]
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
            if fd is None:
                self._line_open = True  # a buffered stream does not say how much got out
            elif written:
                self._line_open = data[written - 1] != _NEWLINE
            raise _WriteFailed(exc) from exc
        self._line_open = False

    def _describe(self) -> str:
        return self._label


class FileSink(_LineWriter):
    """Events appended as JSON lines to a file; open it with `async with FileSink(path)`.

    The parent directory is created when missing. If the file ends in a torn line (a crash in
    the middle of a write), a newline is appended first so that the next event starts its own
    line. With `fsync=True` (the default) every batch is fsynced before `emit` returns, so an
    event is on disk before its checkpoint is written, even across a power loss.

    A batch is all or nothing: when a write, or the fsync, fails (a full disk), the file is
    truncated back to where the batch began, so the caller's retry cannot duplicate a line.
    When even the truncate fails, what lies past that offset is unknown; the next `emit` reads
    it back (the file is the truth), removes a torn last line (or ends it, if the file cannot
    be cut), and writes only the events whose `event_id` is not in the file already.
    The sink must be the file's only writer (the state file's lock makes it so for the daemon).
    """

    kind: ClassVar[str] = "file"

    def __init__(
        self,
        path: Path,
        *,
        format: EventFormat = "json",
        fsync: bool = True,
        observer: SinkObserver | None = None,
    ) -> None:
        super().__init__(format, observer)
        self._path = Path(path)
        self._fsync = fsync
        self._file: IO[bytes] | None = None
        self._unknown_from: int | None = None  # a failed batch may have left bytes past here
        self._orphan_ids: set[str] = set()  # event_ids written by batches reported as failed

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

        All or nothing: when this raises, the file holds none of the batch's lines, or (when
        it could not be truncated back) the lines it holds are never written again.

        Raises:
            SinkError: as `Sink.emit`; the message names the file. Counted and logged
                (`sink.write_failed`) unless the events could not be serialised.
            RuntimeError: the sink is not open.
        """
        file = self._file
        if file is None:
            raise RuntimeError(f"{self._path} is not open; use `async with FileSink`")
        if not events:
            return
        lines = [(_event_id_of(e), encode_events([e], format=self._format)) for e in events]
        read_back, skipped = await self._run(functools.partial(self._append, file, lines))
        if read_back is not None:
            log.info("sink.tail_read_back", sink=self.kind, path=str(self._path), **read_back)
        if skipped:
            log.info("sink.already_written", sink=self.kind, path=str(self._path), events=skipped)

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        file, self._file = self._file, None
        if file is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close, limiter=self._limiter)

    def _append(
        self, file: IO[bytes], lines: list[tuple[str | None, bytes]]
    ) -> tuple[dict[str, int] | None, int]:
        """Write the lines not already in the file; (what a read-back found, lines skipped)."""
        read_back: dict[str, int] | None = None
        try:
            fd = file.fileno()
            if self._unknown_from is not None:
                read_back = self._read_back_tail(fd, self._unknown_from)
            data = b"".join(line for eid, line in lines if eid not in self._orphan_ids)
            skipped = sum(1 for eid, _ in lines if eid in self._orphan_ids)
            if not data:
                return read_back, skipped
            start = os.fstat(fd).st_size
        except (OSError, ValueError) as exc:  # ValueError: the file was closed
            raise _WriteFailed(exc) from exc
        written = 0
        try:
            view = memoryview(data)
            while view:
                count = os.write(fd, view)
                written += count
                view = view[count:]
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            raise self._roll_back(fd, start, written, exc) from exc
        return read_back, skipped

    def _roll_back(self, fd: int, start: int, written: int, error: OSError) -> _WriteFailed:
        """Truncate the file to `start`, where the failed batch began."""
        try:
            os.ftruncate(fd, start)
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            self._unknown_from = start
            return _WriteFailed(error, rollback_error=exc)
        return _WriteFailed(error, bytes_rolled_back=written)

    def _read_back_tail(self, fd: int, start: int) -> dict[str, int]:
        """Account for what failed batches left past `start`: their event ids become known."""
        end = os.fstat(fd).st_size
        chunks: list[bytes] = []
        offset = start
        while offset < end:
            chunk = os.pread(fd, min(end - offset, 1 << 20), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        tail = b"".join(chunks)
        complete = tail[: tail.rfind(b"\n") + 1]
        torn = len(tail) - len(complete)
        if torn:
            try:
                os.ftruncate(fd, start + len(complete))
            except OSError:
                # The file cannot be cut: end the torn line instead (readers skip it as not an
                # event, as after a crash); if it was a whole event short of its newline, it now
                # counts as written.
                if os.write(fd, b"\n") != 1:  # pragma: no cover - a 1-byte write is whole
                    raise OSError(errno.EIO, "short write ending a torn line") from None
                complete = tail + b"\n"
            if self._fsync:
                os.fsync(fd)
        found = {
            str(event["event_id"])
            for event in _events_in(complete.split(b"\n"))
            if isinstance(event.get("event_id"), str)
        }
        self._orphan_ids.update(found)
        self._unknown_from = None
        return {"offset": start, "bytes": len(tail), "events": len(found), "torn_bytes": torn}

    def _describe(self) -> str:
        return str(self._path)


def _event_id_of(event: Mapping[str, object]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _open_append(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a failed write leaves nothing in a Python buffer to be flushed later.
        file = path.open("a+b", buffering=0)
    except OSError as exc:
        raise StartupError(f"cannot open the events file {path} for appending: {exc}") from exc
    try:
        if file.seek(0, os.SEEK_END) > 0:
            file.seek(-1, os.SEEK_END)
            # End the torn line left by a crash mid-write.
            if file.read(1) != b"\n" and file.write(b"\n") != 1:
                raise OSError(errno.ENOSPC, "no space to end the torn last line")
    except OSError as exc:
        file.close()
        raise StartupError(f"cannot append to the events file {path}: {exc}") from exc
    return file


def build_sink(
    settings: EventsSettings, *, observer: SinkObserver | None = None
) -> StdoutSink | FileSink:
    """The sink `[events]` asks for, not yet opened; open it with `async with`.

    `observer` (the daemon's `Metrics`) is told of every batch the sink fails to write.
    """
    if settings.sink == "stdout":
        return StdoutSink(format=settings.format, observer=observer)
    return FileSink(settings.sink, format=settings.format, observer=observer)
