"""The outbox's two tables in the SQLite state file, and the statements over them.

Called by `store.SqliteCheckpointStore` in its worker thread, on its one connection; every
function here is synchronous and runs inside a transaction the caller opened, except where its
docstring says it opens its own.
"""

# Rules:
# - `seq` is AUTOINCREMENT: it is never reused, even after every row was deleted, so a sink's
#   cursor can never point past events committed later.
# - `committed_at` never decreases along `seq` (the store clamps it), so retention by age can
#   stop at the first event young enough.

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from monitor.outbox import EventLine, OutboxEvent, Pruned, retention_floor

__all__ = [
    "OUTBOX_SCHEMA",
    "advance",
    "append",
    "cursors",
    "format_time",
    "prune",
    "read",
    "totals",
]

OUTBOX_SCHEMA: Final = (
    """
    CREATE TABLE outbox (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id     TEXT NOT NULL,
        committed_at TEXT NOT NULL,
        line         BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY NOT NULL,
        seq  INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)
"""Added by schema version 2."""

_SCAN_CHUNK: Final = 1000


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds: sorts as text in time order."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}Z"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def totals(conn: sqlite3.Connection) -> tuple[int, int, int, str | None]:
    """(last seq ever given, events held, their bytes, the newest committed_at) at open."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    last = int(row[0]) if row else 0
    count, size = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(line)), 0) FROM outbox"
    ).fetchone()
    newest = conn.execute("SELECT committed_at FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
    return last, int(count), int(size), None if newest is None else str(newest[0])


def append(conn: sqlite3.Connection, events: Sequence[EventLine], committed_at: str) -> int:
    """Insert `events` in order; returns the seq of the last one."""
    conn.executemany(
        "INSERT INTO outbox (event_id, committed_at, line) VALUES (?, ?, ?)",
        [(e.event_id, committed_at, e.line) for e in events],
    )
    (last,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(last)


def read(conn: sqlite3.Connection, after: int, limit: int) -> list[OutboxEvent]:
    """Up to `limit` events after seq `after`, oldest first (one statement: no transaction)."""
    rows = conn.execute(
        "SELECT seq, event_id, committed_at, line FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()
    return [
        OutboxEvent(seq=seq, event_id=eid, committed_at=_parse_time(at), line=bytes(line))
        for seq, eid, at, line in rows
    ]


def cursors(conn: sqlite3.Connection) -> dict[str, int]:
    """Every sink's cursor."""
    return {sink: int(seq) for sink, seq in conn.execute("SELECT sink, seq FROM sink_cursors")}


def advance(conn: sqlite3.Connection, sink: str, seq: int) -> None:
    """Move a cursor forward (never back)."""
    conn.execute(
        "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?) "
        "ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        (sink, seq),
    )


def _oldest_first(conn: sqlite3.Connection) -> Iterator[tuple[int, datetime, int]]:
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, committed_at, length(line) FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, _SCAN_CHUNK),
        ).fetchall()
        if not rows:
            return
        for seq, at, size in rows:
            yield int(seq), _parse_time(at), int(size)
        after = int(rows[-1][0])


def prune(
    conn: sqlite3.Connection,
    *,
    total_bytes: int,
    delivered: Mapping[str, int],
    reading: Mapping[str, int],
    older_than: datetime,
    max_bytes: int,
) -> tuple[Pruned, int]:
    """See `Outbox.prune`; returns what was removed and the bytes it freed."""
    floor = retention_floor(
        _oldest_first(conn), total_bytes=total_bytes, older_than=older_than, max_bytes=max_bytes
    )
    dropped: dict[str, int] = {}
    for sink, position in reading.items():
        if position < floor:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE seq > ? AND seq <= ?", (position, floor)
            ).fetchone()
            if count:
                dropped[sink] = int(count)
        if delivered.get(sink, 0) < floor:
            advance(conn, sink, floor)
    cut = max([floor, min(delivered.values(), default=0)])
    removed, freed = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(line)), 0) FROM outbox WHERE seq <= ?", (cut,)
    ).fetchone()
    if removed:
        conn.execute("DELETE FROM outbox WHERE seq <= ?", (cut,))
    return Pruned(floor=cut, removed=int(removed), dropped=dropped), int(freed)
