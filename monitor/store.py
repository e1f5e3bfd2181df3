"""The SQLite state file: each vault's checkpoint and the outbox of events, committed together;
one file per daemon, surviving restarts and SIGKILL. Also the factory that picks the store
`[state] path` asks for."""

# Rules:
# - A `save` (a poll's events into the outbox, and its checkpoint) is one SQLite transaction
#   (`BEGIN IMMEDIATE` … `COMMIT`), so after any crash a vault's state and its events are either
#   entirely as before the call or entirely as after it: an event is never emitted twice, and
#   never lost, by a crash between the two.
# - The outbox's tables and statements are in store_outbox.py; each sink's cursor moves in a
#   transaction of its own after the sink delivered.
# - Every sqlite3 call runs in a worker thread behind one CapacityLimiter(1), so the event loop
#   never blocks on the disk and the connection is never used by two threads at once.
# - One process owns a state file: the daemon's store holds an exclusive flock on `<file>.lock`
#   from before it opens the database until after it has closed it (`StateFileLock`).
# - Datetimes are stored as ISO 8601 UTC text with microseconds (`2026-11-25T10:00:00.000000Z`);
#   statuses as their string (canonical for known values) and read back with `JobStatus.of`.

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import anyio.to_thread

from monitor import store_outbox
from monitor.checkpoints import MemoryCheckpointStore, _utc, check_save, check_save_items
from monitor.config import StateSettings
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint
from monitor.errors import StartupError, StoreError
from monitor.outbox import EventLine, OutboxEvent, OutboxSignal, Pruned
from monitor.state_lock import StateFileLock
from monitor.store_outbox import OUTBOX_SCHEMA

__all__ = ["SCHEMA_VERSION", "SqliteCheckpointStore", "build_checkpoint_store"]

SCHEMA_VERSION: Final = 3
"""The `PRAGMA user_version` this code writes and understands: 1 had the checkpoints only,
2 adds the outbox, 3 the protected items' states (an older file is upgraded in place when
opened)."""

_T = TypeVar("_T")


_format_time = store_outbox.format_time


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


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

# One row per protected item watched (`item_watcher.py`): its state as JSON text, opaque here.
# Not tied to `vaults` by a foreign key: a vault's items may be read before its jobs are.
_ITEMS_TABLE: Final = """
    CREATE TABLE items (
        vault_key TEXT NOT NULL,
        item_key  TEXT NOT NULL,
        state     TEXT NOT NULL,
        PRIMARY KEY (vault_key, item_key)
    ) WITHOUT ROWID
    """

_SCHEMA: Final = (
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
    *OUTBOX_SCHEMA,
    _ITEMS_TABLE,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_UPGRADE_V1: Final = (*OUTBOX_SCHEMA, _ITEMS_TABLE, f"PRAGMA user_version = {SCHEMA_VERSION}")
_UPGRADE_V2: Final = (_ITEMS_TABLE, f"PRAGMA user_version = {SCHEMA_VERSION}")
_UPSERT_ITEM: Final = (
    "INSERT INTO items (vault_key, item_key, state) VALUES (?, ?, ?) "
    "ON CONFLICT (vault_key, item_key) DO UPDATE SET state = excluded.state"
)
_DELETE_ITEM: Final = "DELETE FROM items WHERE vault_key = ? AND item_key = ?"

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
        self._signal = OutboxSignal()
        self._last_seq = 0
        self._held = (0, 0)  # events in the outbox, their bytes
        self._last_committed = ""  # committed_at of the newest event: never goes back

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
        conn = await anyio.to_thread.run_sync(_open, self._path, self._lock, limiter=self._limiter)
        try:
            last, count, size, newest = await anyio.to_thread.run_sync(
                store_outbox.totals, conn, limiter=self._limiter
            )
        except sqlite3.Error as exc:
            await anyio.to_thread.run_sync(_close, conn, self._lock, limiter=self._limiter)
            raise StartupError(f"cannot read the outbox of {self._path}: {exc}") from exc
        self._conn, self._last_seq, self._held = conn, last, (count, size)
        self._last_committed = newest or ""
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
        events: Sequence[EventLine] = (),
        now: datetime | None = None,
    ) -> None:
        """See `CheckpointStore.save`.

        Raises:
            ValueError: as `CheckpointStore.save`; nothing is written.
            RuntimeError: the store is not open.
            StoreError: the transaction failed and was rolled back.
        """
        upserts, deletes, polled_at = check_save(vault_key, changed, removed, polled_at)
        # `now` is checked like polled_at: a naive one would be read as local time.
        at = _format_time(_utc(now or polled_at, "now"))
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

        def rows(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_VAULT, vault_row)
            conn.executemany(_UPSERT_JOB, job_rows)
            conn.executemany(_DELETE_JOB, delete_rows)

        await self._commit(events, at, rows)

    async def _commit(
        self,
        events: Sequence[EventLine],
        at: str,
        rows: Callable[[sqlite3.Connection], None],
    ) -> None:
        """One transaction: `events` into the outbox (committed at `at`, or later) and `rows`."""
        last: list[int] = []
        committed: list[str] = []

        def write(conn: sqlite3.Connection) -> None:
            def body() -> None:
                if events:
                    # Clamped here, under the limiter: saves in flight together commit in order.
                    committed.append(max(at, self._last_committed))
                    last.append(store_outbox.append(conn, events, committed[0]))
                rows(conn)

            _transaction(conn, body)
            if committed:
                self._last_committed = committed[0]

        await self._run(write)
        if last:
            count, size = self._held
            self._held = (count + len(events), size + sum(len(e.line) for e in events))
            self._last_seq = last[0]
            self._signal.notify()

    # ------------------------------------------------------------------------------ items

    async def load_items(self) -> dict[str, dict[str, str]]:
        """See `StateStore.load_items`.

        Raises:
            RuntimeError: the store is not open.
            StoreError: the state could not be read.
        """

        def read(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
            items: dict[str, dict[str, str]] = {}
            for vault_key, item_key, state in conn.execute(
                "SELECT vault_key, item_key, state FROM items"
            ):
                items.setdefault(vault_key, {})[item_key] = state
            return items

        return await self._run(read)

    async def save_items(
        self,
        vault_key: str,
        *,
        states: Mapping[str, str],
        removed: Sequence[str],
        events: Sequence[EventLine],
        now: datetime,
    ) -> None:
        """See `StateStore.save_items`.

        Raises:
            ValueError: a key is both saved and removed, or `now` is naive; nothing is written.
            RuntimeError: the store is not open.
            StoreError: the transaction failed and was rolled back.
        """
        check_save_items(states, removed)
        at = _format_time(_utc(now, "now"))
        upserts = [(vault_key, key, state) for key, state in states.items()]
        deletes = [(vault_key, key) for key in removed]

        def rows(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_ITEM, upserts)
            conn.executemany(_DELETE_ITEM, deletes)

        await self._commit(events, at, rows)

    # ------------------------------------------------------------------------------ outbox

    @property
    def last_seq(self) -> int:
        """See `Outbox.last_seq`."""
        return self._last_seq

    @property
    def size(self) -> tuple[int, int]:
        """See `Outbox.size`."""
        return self._held

    async def wait_beyond(self, seq: int) -> None:
        """See `Outbox.wait_beyond`."""
        await self._signal.wait_beyond(seq, lambda: self._last_seq)

    async def read(self, after: int, limit: int) -> list[OutboxEvent]:
        """See `Outbox.read`.

        Raises:
            RuntimeError: the store is not open.
            StoreError: the read failed.
        """
        return await self._run(lambda conn: store_outbox.read(conn, after, limit))

    async def cursors(self) -> dict[str, int]:
        """See `Outbox.cursors`."""
        return await self._run(store_outbox.cursors)

    async def advance(self, sink: str, seq: int) -> None:
        """See `Outbox.advance`."""
        await self._run(
            lambda conn: _transaction(conn, lambda: store_outbox.advance(conn, sink, seq))
        )

    async def prune(
        self,
        *,
        delivered: Mapping[str, int],
        reading: Mapping[str, int],
        older_than: datetime,
        max_bytes: int,
    ) -> Pruned:
        """See `Outbox.prune`."""
        result: list[tuple[Pruned, int]] = []

        def run(conn: sqlite3.Connection) -> None:
            result.append(
                store_outbox.prune(
                    conn,
                    total_bytes=self._held[1],
                    delivered=delivered,
                    reading=reading,
                    older_than=older_than,
                    max_bytes=max_bytes,
                )
            )

        await self._run(lambda conn: _transaction(conn, lambda: run(conn)))
        pruned, freed = result[0]
        count, size = self._held
        self._held = (count - pruned.removed, size - freed)
        return pruned

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
                    conn.execute("DELETE FROM items WHERE vault_key = ?", (vault_key,)),
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
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have created it meanwhile.
            match _check_version(conn, path):
                case 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                case 1:
                    for statement in _UPGRADE_V1:
                        conn.execute(statement)
                case 2:
                    for statement in _UPGRADE_V2:
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
