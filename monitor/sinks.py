"""The line sinks: schema v1 events as JSON lines on stdout or appended to a file, and read back."""

# Rules:
# - Sinks do I/O only: the bytes they write are the outbox's lines (json) or
#   `monitor.events.encode_events`' (cloudevents), and what they read back is decoded there.
#   Nothing here knows the event's fields beyond its `event_id`.
# - A sink writes a whole batch and flushes before `deliver` returns, or raises
#   SinkError; the delivery worker moves the sink's cursor only after it returned.
# - A file sink's batch is all or nothing (truncated back on failure), and no event_id is
#   written twice by retries; what the file holds is read back at start (`delivered_ids`), so a
#   crash between a write and its cursor repeats nothing. A failed batch is counted through the
#   injected SinkObserver and logged once per problem. Sinks know nothing of Prometheus.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Final, Protocol, Self, TypeVar

import anyio
import anyio.to_thread
import structlog

from monitor.config import EventFormat
from monitor.config_sinks import FileSinkSettings, StdoutSinkSettings
from monitor.errors import SinkError, StartupError
from monitor.events import (
    decode_events,
    encode_events,
    event_id_of,
    read_recent_events,
)
from monitor.outbox import OutboxEvent

__all__ = [
    "FileSink",
    "SinkObserver",
    "StdoutSink",
    "build_line_sink",
]

_NEWLINE: Final = 0x0A
_T = TypeVar("_T")

log = structlog.get_logger("monitor.sinks")


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

    def __init__(self, name: str, format: EventFormat, observer: SinkObserver | None) -> None:
        self._name = name
        self._format: EventFormat = format
        self._observer = observer
        self._limiter = anyio.CapacityLimiter(1)
        self._reported: str | None = None  # the failure last logged; None while writes work
        self._failed_writes = 0  # batches failed since the last one written

    @property
    def name(self) -> str:
        """The sink's name (`[[sinks]] name`): its cursor's key."""
        return self._name

    async def recent_events(self) -> list[dict[str, Any]]:
        """The events the destination holds last (from earlier runs too), oldest first, as far
        as it can be read back; [] when it cannot."""
        raise NotImplementedError

    async def delivered_ids(self) -> set[str]:
        """See `OutboxSink.delivered_ids`: the ids of `recent_events`."""
        return {eid for e in await self.recent_events() if (eid := event_id_of(e)) is not None}

    def _lines(self, batch: Sequence[OutboxEvent]) -> list[tuple[str | None, bytes]]:
        """Each event's id and line in the sink's format (json: the outbox's line as it is)."""
        if self._format == "json":
            return [(e.event_id, e.line) for e in batch]
        return [(e.event_id, encode_events([e.event], format=self._format)) for e in batch]

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
        name: str = "default",
        format: EventFormat = "json",
        observer: SinkObserver | None = None,
    ) -> None:
        super().__init__(name, format, observer)
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
        """Read back only when the stream is a regular file (stdout redirected to a file, on
        Linux); [] for a pipe or a terminal, or on any error."""
        return await anyio.to_thread.run_sync(self._read_back, limiter=self._limiter)

    def _read_back(self) -> list[dict[str, Any]]:
        try:
            fd = self._stream.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            return read_recent_events(f"/proc/self/fd/{fd}")
        except (OSError, ValueError, io.UnsupportedOperation):
            return []

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """See `OutboxSink.deliver`: the batch's lines, written and flushed.

        Raises:
            SinkError: e.g. BrokenPipeError when the reader went away; counted and logged
                (`sink.write_failed`).
            RuntimeError: the sink was closed.
        """
        await self._write_lines(self._lines(batch))

    async def _write_lines(self, lines: list[tuple[str | None, bytes]]) -> None:
        if self._closed:
            raise RuntimeError("StdoutSink is closed")
        data = b"".join(line for _, line in lines)
        if data:
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
        name: str = "default",
        format: EventFormat = "json",
        fsync: bool = True,
        observer: SinkObserver | None = None,
    ) -> None:
        super().__init__(name, format, observer)
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
        """The events in the last `monitor.events.RECOVERY_BYTES` of the file.

        Raises:
            SinkError: the file cannot be read back.
        """
        try:
            return await anyio.to_thread.run_sync(
                read_recent_events, self._path, limiter=self._limiter
            )
        except OSError as exc:
            raise SinkError(f"cannot read back the events file {self._path}: {exc}") from exc

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """See `OutboxSink.deliver`; the file is fsynced when the sink was built with
        `fsync=True` (the default).

        All or nothing: when this raises, the file holds none of the batch's lines, or (when
        it could not be truncated back) the lines it holds are never written again.

        Raises:
            SinkError: the message names the file; counted and logged (`sink.write_failed`).
            RuntimeError: the sink is not open.
        """
        await self._append_lines(self._lines(batch))

    async def _append_lines(self, lines: list[tuple[str | None, bytes]]) -> None:
        file = self._file
        if file is None:
            raise RuntimeError(f"{self._path} is not open; use `async with FileSink`")
        if not lines:
            return
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
            eid
            for event in decode_events(complete.split(b"\n"))
            if (eid := event_id_of(event)) is not None
        }
        self._orphan_ids.update(found)
        self._unknown_from = None
        return {"offset": start, "bytes": len(tail), "events": len(found), "torn_bytes": torn}

    def _describe(self) -> str:
        return str(self._path)


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


def build_line_sink(
    settings: StdoutSinkSettings | FileSinkSettings, *, observer: SinkObserver | None = None
) -> StdoutSink | FileSink:
    """The stdout or file sink `settings` describe, not yet opened; open it with `async with`.

    `observer` (the daemon's `Metrics`) is told of every batch the sink fails to write.
    """
    if isinstance(settings, FileSinkSettings):
        return FileSink(
            settings.path, name=settings.name, format=settings.format, observer=observer
        )
    return StdoutSink(name=settings.name, format=settings.format, observer=observer)
