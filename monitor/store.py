"""Checkpoints of what the monitor has seen per vault: the protocol, in-memory and SQLite stores."""

# Rules:
# - A `save` is one atomic transaction: after any crash, a vault's state is either entirely the
#   state before the call or entirely the state after it.
# - Every sqlite3 call runs in a worker thread behind one CapacityLimiter(1), so the event loop
#   never blocks on the disk and the connection is never used by two threads at once.
# - One process owns a state file: the daemon's store holds an exclusive flock on `<file>.lock`
#   from before it opens the database until after it has closed it (`StateFileLock`).
# - Datetimes are stored as ISO 8601 UTC text with microseconds (`2026-11-25T10:00:00.000000Z`);
#   statuses as their string (canonical for known values) and read back with `JobStatus.of`.

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

import anyio
import anyio.to_thread

from monitor.config import StateSettings
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint
from monitor.errors import StartupError, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "SqliteCheckpointStore",
    "StateFileLock",
    "build_checkpoint_store",
]

SCHEMA_VERSION: Final = 1
"""The `PRAGMA user_version` this code writes and understands."""

_T = TypeVar("_T")


class CheckpointStore(Protocol):
    """Where the scheduler keeps per-vault job state between polls and across restarts."""

    async def load(self) -> dict[str, VaultCheckpoint]:
        """Every vault's state, keyed by vault key; vaults never saved (or forgotten) are absent.

        Raises:
            StoreError: the state could not be read.
        """
        ...

    async def save(
        self,
        vault_key: str,
        *,
        changed: Sequence[JobSnapshot],
        removed: Sequence[JobKey],
        polled_at: datetime,
    ) -> None:
        """One poll of a vault, atomically: upsert `changed`, delete `removed`, set `polled_at`.

        Idempotent: saving the same arguments twice leaves the same state. A snapshot listed
        twice in `changed` counts once, the last one winning. Removing an unknown key is a no-op.

        Raises:
            ValueError: a key belongs to another vault, a key is both changed and removed, or a
                datetime is naive; nothing is written.
            StoreError: the write failed; nothing is written.
        """
        ...

    async def forget(self, vault_key: str) -> None:
        """Drop everything remembered about a vault (it disappeared); unknown vaults are a no-op.

        Raises:
            StoreError: the write failed; nothing is changed.
        """
        ...


# --------------------------------------------------------------------------------------------
# Shared validation and encoding


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _checked(
    vault_key: str,
    changed: Sequence[JobSnapshot],
    removed: Sequence[JobKey],
    polled_at: datetime,
) -> tuple[dict[JobKey, JobSnapshot], set[JobKey], datetime]:
    """Validate a save's arguments and normalise them (UTC datetimes, canonical statuses)."""
    upserts: dict[JobKey, JobSnapshot] = {}
    for snap in changed:
        if snap.key.vault_key != vault_key:
            raise ValueError(f"snapshot {snap.key} does not belong to vault {vault_key!r}")
        upserts[snap.key] = JobSnapshot(
            key=snap.key,
            status=JobStatus.of(snap.status.value),
            start_at=None if snap.start_at is None else _utc(snap.start_at, "start_at"),
        )
    deletes = set(removed)
    for key in deletes:
        if key.vault_key != vault_key:
            raise ValueError(f"removed key {key} does not belong to vault {vault_key!r}")
    both = deletes.intersection(upserts)
    if both:
        raise ValueError(f"keys both changed and removed: {sorted(k.job_name for k in both)}")
    return upserts, deletes, _utc(polled_at, "polled_at")


def _format_time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}Z"


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


# --------------------------------------------------------------------------------------------
# In memory


class MemoryCheckpointStore:
    """A `CheckpointStore` in a dict: for tests and `[state] path = ":memory:"`.

    It has the same semantics as the SQLite store (validation, normalisation, idempotence) and
    nothing survives the process. It needs no opening; `async with` is accepted for symmetry.
    """

    def __init__(self) -> None:
        self._vaults: dict[str, tuple[dict[JobKey, JobSnapshot], datetime | None]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; the state stays readable."""

    async def load(self) -> dict[str, VaultCheckpoint]:
        """Copies of every vault's state (mutating them does not change the store)."""
        return {
            key: VaultCheckpoint(vault_key=key, jobs=dict(jobs), polled_at=polled_at)
            for key, (jobs, polled_at) in self._vaults.items()
        }

    async def save(
        self,
        vault_key: str,
        *,
        changed: Sequence[JobSnapshot],
        removed: Sequence[JobKey],
        polled_at: datetime,
    ) -> None:
        """See `CheckpointStore.save`.

        Raises:
            ValueError: as `CheckpointStore.save`; nothing is changed.
        """
        upserts, deletes, polled_at = _checked(vault_key, changed, removed, polled_at)
        jobs = dict(self._vaults.get(vault_key, ({}, None))[0])
        jobs.update(upserts)
        for key in deletes:
            jobs.pop(key, None)
        self._vaults[vault_key] = (jobs, polled_at)

    async def forget(self, vault_key: str) -> None:
        """See `CheckpointStore.forget`."""
        self._vaults.pop(vault_key, None)


# --------------------------------------------------------------------------------------------
# SQLite

# Durability: journal_mode=WAL with synchronous=NORMAL. SQLite's documentation (pragma.html,
# "synchronous") says WAL mode is always consistent with NORMAL, and that transactions are
# durable across *application* crashes regardless of the synchronous setting: a commit has
# reached the WAL file through write(2) before COMMIT returns, and the OS keeps it when the
# process is SIGKILLed. What NORMAL gives up is durability across an OS crash or power loss:
# the last commits may roll back (the database stays consistent). For us that only means
# re-emitting events the sinks already wrote (at-least-once; consumers dedupe on event_id),
# never losing one, so FULL's fsync on every commit would buy nothing we need.
_PRAGMAS: Final = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)

_SCHEMA_V1: Final = (
    """
    CREATE TABLE vaults (
        key       TEXT PRIMARY KEY NOT NULL,
        polled_at TEXT
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE jobs (
        vault_key TEXT NOT NULL REFERENCES vaults (key) ON DELETE CASCADE,
        job_name  TEXT NOT NULL,
        status    TEXT NOT NULL,
        start_at  TEXT,
        PRIMARY KEY (vault_key, job_name)
    ) WITHOUT ROWID
    """,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_UPSERT_VAULT: Final = (
    "INSERT INTO vaults (key, polled_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET polled_at = excluded.polled_at"
)
_UPSERT_JOB: Final = (
    "INSERT INTO jobs (vault_key, job_name, status, start_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (vault_key, job_name) DO UPDATE "
    "SET status = excluded.status, start_at = excluded.start_at"
)
_DELETE_JOB: Final = "DELETE FROM jobs WHERE vault_key = ? AND job_name = ?"


class StateFileLock:
    """An exclusive `flock` on `<state file>.lock`: one process at a time owns a state file.

    The kernel drops the lock when its holder ends, however it ends (SIGTERM, SIGKILL, OOM
    kill), so it is never stale and needs no clean-up. The lock file itself stays: deleting it
    would let a process that opened the old file and one that created a new one both hold "the"
    lock. After locking, the holder writes its PID into the file so that the next process can
    name it. The methods do blocking I/O: call them from a worker thread.
    """

    def __init__(self, state_path: Path) -> None:
        self._state_path = Path(state_path)
        self._path = self._state_path.with_name(self._state_path.name + ".lock")
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file, next to the state file."""
        return self._path

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or fail; the state file's directory must exist.

        Raises:
            RuntimeError: this object already holds the lock.
            StartupError: another process holds it (the message names the state file, the
                holder's PID as it wrote it, and the lock file), or the lock file cannot be
                opened, locked or written.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self._path} is already held by this process")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(
                f"cannot open the lock file {self._path} of the state file {self._state_path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise StartupError(
                f"state file {self._state_path} is in use by another backup-monitor "
                f"(pid {holder}; lock {self._path}); stop that process or give this one its "
                "own [state] path"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(
                f"cannot lock {self._path} for the state file {self._state_path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StartupError(
                f"cannot write the lock file {self._path}: {exc.strerror or exc}"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file and drop the lock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # name no PID once the holder has gone
        except OSError:
            pass  # the PID stays behind; the next holder overwrites it
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


def _holder_pid(fd: int) -> str:
    """The PID the holder wrote into the lock file, or "unknown" in the moment between its
    flock and its write (or its release and its exit)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


class SqliteCheckpointStore:
    """A `CheckpointStore` in one SQLite file; survives restarts and SIGKILL at any moment.

    Use it as `async with SqliteCheckpointStore(path) as store:`; the constructor does no I/O.
    Opening creates the parent directory and the schema when the file is new, and refuses a
    file written by a newer version (or a SQLite file that is not ours) without touching it.

    With `exclusive=True` (the daemon) the store holds a `StateFileLock` while it is open, so
    a second process on the same file fails to open it instead of emitting every event again.
    `exclusive=False` opens the file beside its owner (`check-config`), without the lock.
    """

    def __init__(self, path: Path, *, exclusive: bool = True) -> None:
        self._path = Path(path)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self._lock = StateFileLock(self._path) if exclusive else None

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def lock_path(self) -> Path | None:
        """The lock file this store holds while open; None when not exclusive."""
        return None if self._lock is None else self._lock.path

    async def __aenter__(self) -> Self:
        """Open (and if needed create) the state file; when exclusive, lock it first.

        Raises:
            RuntimeError: the store is already open.
            StartupError: another process holds the state file's lock (the message names the
                file and the holder's PID), the directory cannot be created, the file cannot be
                opened, is not a SQLite database, is not a backup-job-monitor state file, or has
                a newer schema version; the message names the file (and the versions).
        """
        if self._conn is not None:
            raise RuntimeError(f"{self._path} is already open")
        self._conn = await anyio.to_thread.run_sync(
            _open, self._path, self._lock, limiter=self._limiter
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (checkpointing the WAL into the main file), then release the
        lock, so the next owner finds the file whole; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close, conn, self._lock, limiter=self._limiter)

    async def load(self) -> dict[str, VaultCheckpoint]:
        """See `CheckpointStore.load`.

        Raises:
            RuntimeError: the store is not open.
            StoreError: the read failed or a stored value is corrupt.
        """
        return await self._run(_load)

    async def save(
        self,
        vault_key: str,
        *,
        changed: Sequence[JobSnapshot],
        removed: Sequence[JobKey],
        polled_at: datetime,
    ) -> None:
        """See `CheckpointStore.save`.

        Raises:
            ValueError: as `CheckpointStore.save`; nothing is written.
            RuntimeError: the store is not open.
            StoreError: the transaction failed and was rolled back.
        """
        upserts, deletes, polled_at = _checked(vault_key, changed, removed, polled_at)
        job_rows = [
            (
                vault_key,
                snap.key.job_name,
                snap.status.value,
                None if snap.start_at is None else _format_time(snap.start_at),
            )
            for snap in upserts.values()
        ]
        delete_rows = [(vault_key, key.job_name) for key in deletes]
        vault_row = (vault_key, _format_time(polled_at))

        def write(conn: sqlite3.Connection) -> None:
            _transaction(
                conn,
                lambda: (
                    conn.execute(_UPSERT_VAULT, vault_row),
                    conn.executemany(_UPSERT_JOB, job_rows),
                    conn.executemany(_DELETE_JOB, delete_rows),
                ),
            )

        await self._run(write)

    async def forget(self, vault_key: str) -> None:
        """See `CheckpointStore.forget`.

        Raises:
            RuntimeError: the store is not open.
            StoreError: the transaction failed and was rolled back.
        """

        def delete(conn: sqlite3.Connection) -> None:
            _transaction(
                conn,
                lambda: (
                    conn.execute("DELETE FROM jobs WHERE vault_key = ?", (vault_key,)),
                    conn.execute("DELETE FROM vaults WHERE key = ?", (vault_key,)),
                ),
            )

        await self._run(delete)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"{self._path} is not open; use `async with SqliteCheckpointStore`")
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from exc


def _open(path: Path, lock: StateFileLock | None) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the state directory {path.parent}: {exc.strerror or exc}"
        ) from exc
    if lock is not None:
        lock.acquire()  # before SQLite touches the file: the owner may be writing it
    try:
        return _connect(path)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StartupError(f"cannot open the state file {path}: {exc}") from exc
    try:
        _prepare(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StartupError(f"cannot open the state file {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: sqlite3.Connection, lock: StateFileLock | None) -> None:
    try:
        conn.close()
    finally:
        if lock is not None:
            lock.release()


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    # Read the version before anything writes to the file (journal_mode=WAL rewrites its header).
    version = _check_version(conn, path)
    # WAL lets `load` read while a save is pending and makes each commit one append. If the
    # filesystem cannot do WAL, SQLite keeps its rollback journal, which is just as atomic.
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    if version == 0:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have created it meanwhile.
            if _check_version(conn, path) == 0:
                for statement in _SCHEMA_V1:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StartupError(
            f"the state file {path} has schema version {version}, newer than version "
            f"{SCHEMA_VERSION} that this backup-monitor understands; upgrade backup-monitor "
            "or point [state] path at another file (the file was not modified)"
        )
    if version == 0:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        if tables:
            raise StartupError(
                f"the state file {path} is a SQLite database but not a backup-monitor state "
                f"file (schema version 0 with tables {', '.join(tables)}); it was not modified"
            )
    return version


def _transaction(conn: sqlite3.Connection, body: Callable[[], object]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _load(conn: sqlite3.Connection) -> dict[str, VaultCheckpoint]:
    # One read transaction, so vaults and jobs come from the same committed state.
    conn.execute("BEGIN")
    try:
        vaults = conn.execute("SELECT key, polled_at FROM vaults").fetchall()
        rows = conn.execute("SELECT vault_key, job_name, status, start_at FROM jobs").fetchall()
    finally:
        conn.execute("COMMIT")
    jobs: dict[str, dict[JobKey, JobSnapshot]] = {key: {} for key, _ in vaults}
    try:
        for vault_key, job_name, status, start_at in rows:
            key = JobKey(vault_key=vault_key, job_name=job_name)
            jobs.setdefault(vault_key, {})[key] = JobSnapshot(
                key=key, status=JobStatus.of(status), start_at=_parse_time(start_at)
            )
        return {
            key: VaultCheckpoint(vault_key=key, jobs=jobs[key], polled_at=_parse_time(polled_at))
            for key, polled_at in vaults
        }
    except (TypeError, ValueError, AttributeError) as exc:
        raise sqlite3.DataError(f"corrupt checkpoint row: {exc}") from exc


def build_checkpoint_store(
    settings: StateSettings, *, exclusive: bool = True
) -> MemoryCheckpointStore | SqliteCheckpointStore:
    """The store `[state] path` asks for, not yet opened; open it with `async with`.

    `exclusive` (SQLite only; `:memory:` is private to the process anyway): hold the state
    file's lock while open. Only the daemon's own store should.
    """
    if settings.path == ":memory:":
        return MemoryCheckpointStore()
    return SqliteCheckpointStore(settings.path, exclusive=exclusive)
