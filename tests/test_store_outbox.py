"""The outbox of both state stores: events commit with their checkpoint, seqs, reads, cursors,
prune and retention, sizes, the schema 1 upgrade; and a property that the two stores agree."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from monitor.checkpoints import MemoryCheckpointStore, StateStore
from monitor.core.diff import JobSnapshot, JobStateChanged
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint
from monitor.errors import StartupError, StoreError
from monitor.events import event_schema, render_event
from monitor.outbox import EventLine
from monitor.store import SCHEMA_VERSION, SqliteCheckpointStore
from tests.test_scheduler import SUB_A, job, vault_ref

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
VAULT = vault_ref(SUB_A, "vault-a")
V1 = VAULT.key
_VALIDATOR = Draft202012Validator(
    event_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
)


def rendered(name: str, status: str = "InProgress", *, at: datetime = AT) -> dict[str, object]:
    """A schema v1 event of job `name` first seen with `status`, validated."""
    change = JobStateChanged(
        vault_key=VAULT.key,
        job=job(VAULT, name, status, start=at - timedelta(minutes=5)),
        previous_status=None,
        observed_at=at,
    )
    event = render_event(change, vault=VAULT, details=None, emitted_at=at)
    _VALIDATOR.validate(orjson.loads(orjson.dumps(event)))
    return event


_LINES: dict[int, EventLine] = {}


def line(n: int) -> EventLine:
    """The line of the `n`th test event (cached: rendering is the slow part)."""
    if n not in _LINES:
        _LINES[n] = EventLine.of(rendered(f"job-{n}"))
    return _LINES[n]


def snap(name: str, status: str = "InProgress") -> JobSnapshot:
    return JobSnapshot(
        key=JobKey(vault_key=V1, job_name=name), status=JobStatus.of(status), start_at=AT
    )


async def save(
    store: StateStore, events: Sequence[EventLine], *, now: datetime = AT, name: str = "a"
) -> None:
    await store.save(V1, changed=[snap(name)], removed=[], polled_at=now, events=events, now=now)


def far_future() -> datetime:
    """An `older_than` that keeps everything (retention by age off)."""
    return AT - timedelta(days=3650)


BIG = 1 << 40


async def prune(
    store: StateStore,
    delivered: dict[str, int],
    reading: dict[str, int] | None = None,
    *,
    older_than: datetime | None = None,
    max_bytes: int = BIG,
) -> Any:
    return await store.prune(
        delivered=delivered,
        reading=delivered if reading is None else reading,
        older_than=far_future() if older_than is None else older_than,
        max_bytes=max_bytes,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """Each implementation, opened."""
    if request.param == "memory":
        async with MemoryCheckpointStore() as memory:
            yield memory
    else:
        async with SqliteCheckpointStore(tmp_path / "monitor.sqlite") as sqlite:
            yield sqlite


async def seqs(store: StateStore) -> list[int]:
    return [e.seq for e in await store.read(0, 1_000_000)]


class TestCommit:
    """Events commit with their checkpoint, or neither does."""

    async def test_events_commit_with_the_checkpoint(self, store: StateStore) -> None:
        """One save: the checkpoint loads back and the events read back in order, as given."""
        events = [line(1), line(2), line(3)]
        await save(store, events)
        assert await store.load() == {
            V1: VaultCheckpoint(vault_key=V1, jobs={snap("a").key: snap("a")}, polled_at=AT)
        }
        read = await store.read(0, 10)
        assert [(e.event_id, e.line) for e in read] == [(e.event_id, e.line) for e in events]
        assert [e.seq for e in read] == [1, 2, 3]
        assert all(e.committed_at == AT for e in read)
        assert read[1].event["event_id"] == events[1].event_id
        assert store.last_seq == 3
        assert store.size == (3, sum(len(e.line) for e in events))

    async def test_a_refused_save_commits_neither(self, store: StateStore) -> None:
        """A ValueError from check_save (a key of another vault) writes no event, no state."""
        await save(store, [line(1)])
        foreign = JobSnapshot(
            key=JobKey(vault_key="other", job_name="x"), status=JobStatus.of("Failed"), start_at=AT
        )
        with pytest.raises(ValueError, match="does not belong"):
            await store.save(
                V1, changed=[foreign], removed=[], polled_at=AT + timedelta(1), events=[line(2)]
            )
        assert await seqs(store) == [1]
        assert store.last_seq == 1
        assert store.size == (1, len(line(1).line))
        assert (await store.load())[V1].polled_at == AT

    async def test_a_naive_now_is_refused_and_commits_neither(self, store: StateStore) -> None:
        """`now` must be aware like every datetime of a save; the refusal changes nothing."""
        with pytest.raises(ValueError, match="naive"):
            await store.save(
                V1,
                changed=[snap("a")],
                removed=[],
                polled_at=AT,
                events=[line(1)],
                now=datetime(2026, 11, 25, 10, 0),  # noqa: DTZ001 - naive on purpose
            )
        assert await store.load() == {}
        assert await seqs(store) == []
        assert store.size == (0, 0)


class TestSqliteFailures:
    """A save that SQLite itself fails is rolled back whole: the events with the checkpoint."""

    async def test_a_failing_statement_after_the_events_rolls_them_back(
        self, tmp_path: Path
    ) -> None:
        """A trigger that aborts the job upsert (run after the outbox insert) leaves neither."""
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await save(store, [line(1)])
            other = sqlite3.connect(path)
            other.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON jobs "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
            other.commit()
            with pytest.raises(StoreError, match="refused by the test"):
                await save(store, [line(2), line(3)], name="b", now=AT + timedelta(hours=1))
            assert await seqs(store) == [1]
            assert store.last_seq == 1
            assert store.size == (1, len(line(1).line))
            assert (await store.load())[V1].polled_at == AT
            other.execute("DROP TRIGGER refuse")
            other.commit()
            other.close()
            await save(store, [line(4)], name="b")
            assert [e.event_id for e in await store.read(0, 10)] == [
                line(1).event_id,
                line(4).event_id,
            ]
        async with SqliteCheckpointStore(path) as store:
            assert store.size == (2, len(line(1).line) + len(line(4).line))

    async def test_a_locked_database_fails_the_save_whole(self, tmp_path: Path) -> None:
        """Another connection holds the write lock past the busy timeout: StoreError, nothing
        written; once it lets go the next save commits."""
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await save(store, [line(1)])
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            try:
                with pytest.raises(StoreError, match="locked"):
                    await save(store, [line(2)], name="b", now=AT + timedelta(hours=1))
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert await seqs(store) == [1]
            assert store.size == (1, len(line(1).line))
            assert set((await store.load())[V1].jobs) == {snap("a").key}


class TestSeqs:
    """Seqs strictly increase and are never reused."""

    async def test_seqs_increase_across_saves(self, store: StateStore) -> None:
        for n in range(5):
            await save(store, [line(2 * n), line(2 * n + 1)])
        assert await seqs(store) == list(range(1, 11))
        assert store.last_seq == 10

    async def test_a_save_without_events_takes_no_seq(self, store: StateStore) -> None:
        await save(store, [line(1)])
        await save(store, [])
        await save(store, [line(2)])
        assert await seqs(store) == [1, 2]

    async def test_seqs_are_not_reused_after_prune_emptied_the_outbox(
        self, store: StateStore
    ) -> None:
        await save(store, [line(1), line(2), line(3)])
        pruned = await prune(store, {"s": 3})
        assert (pruned.floor, pruned.removed) == (3, 3)
        assert await seqs(store) == []
        assert store.size == (0, 0)
        assert store.last_seq == 3
        await save(store, [line(4)])
        assert await seqs(store) == [4]

    async def test_seqs_are_not_reused_across_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await save(store, [line(1), line(2)])
            await prune(store, {"s": 2})
            assert await seqs(store) == []
        async with SqliteCheckpointStore(path) as store:
            assert store.last_seq == 2
            assert store.size == (0, 0)
            await save(store, [line(3)])
            assert await seqs(store) == [3]
        async with SqliteCheckpointStore(path) as store:
            assert store.last_seq == 3
            assert store.size == (1, len(line(3).line))


class TestRead:
    async def test_read_after_and_limit(self, store: StateStore) -> None:
        await save(store, [line(n) for n in range(6)])
        assert [e.seq for e in await store.read(0, 2)] == [1, 2]
        assert [e.seq for e in await store.read(2, 3)] == [3, 4, 5]
        assert [e.seq for e in await store.read(5, 10)] == [6]
        assert await store.read(6, 10) == []
        assert await store.read(100, 10) == []

    async def test_read_after_a_pruned_seq(self, store: StateStore) -> None:
        """A cursor below the floor reads from the first event kept."""
        await save(store, [line(n) for n in range(4)])
        await prune(store, {"s": 2})
        assert [e.seq for e in await store.read(0, 10)] == [3, 4]
        assert [e.seq for e in await store.read(1, 1)] == [3]


class TestCursors:
    async def test_advance_never_moves_back(self, store: StateStore) -> None:
        assert await store.cursors() == {}
        await store.advance("a", 5)
        await store.advance("b", 0)
        await store.advance("a", 3)
        await store.advance("b", 2)
        assert await store.cursors() == {"a": 5, "b": 2}
        await store.advance("a", 7)
        assert await store.cursors() == {"a": 7, "b": 2}

    async def test_cursors_survive_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await store.advance("a", 5)
        async with SqliteCheckpointStore(path) as store:
            await store.advance("a", 1)
            assert await store.cursors() == {"a": 5}


class TestPrune:
    async def test_deletes_what_every_sink_delivered(self, store: StateStore) -> None:
        await save(store, [line(n) for n in range(6)])
        pruned = await prune(store, {"a": 4, "b": 2})
        assert (pruned.floor, pruned.removed, dict(pruned.dropped)) == (2, 2, {})
        assert await seqs(store) == [3, 4, 5, 6]
        assert await store.cursors() == {}  # nothing moved: no sink was behind retention
        pruned = await prune(store, {"a": 4, "b": 2})
        assert pruned.removed == 0

    async def test_no_sinks_deletes_nothing(self, store: StateStore) -> None:
        await save(store, [line(1)])
        pruned = await prune(store, {})
        assert (pruned.floor, pruned.removed) == (0, 0)
        assert await seqs(store) == [1]

    async def test_max_age_drops_old_events_and_moves_lagging_cursors(
        self, store: StateStore
    ) -> None:
        """Events committed before `older_than` go; a sink behind them is moved to the floor and
        told how many it had not read; one ahead is not moved back nor counted."""
        await save(store, [line(1), line(2)], now=AT)
        await save(store, [line(3), line(4)], now=AT + timedelta(hours=1))
        await save(store, [line(5)], now=AT + timedelta(hours=2))
        await store.advance("behind", 1)
        await store.advance("ahead", 4)
        pruned = await prune(
            store,
            {"behind": 1, "ahead": 4},
            {"behind": 1, "ahead": 4},
            older_than=AT + timedelta(hours=1, minutes=30),
        )
        assert pruned.floor == 4
        assert pruned.removed == 4
        assert dict(pruned.dropped) == {"behind": 3}
        assert await store.cursors() == {"behind": 4, "ahead": 4}
        assert await seqs(store) == [5]
        assert store.size == (1, len(line(5).line))

    async def test_dropped_counts_only_events_above_reading(self, store: StateStore) -> None:
        """Events a sink has read (in flight) are not counted as dropped, though its cursor is
        below them; its cursor still moves to the floor."""
        await save(store, [line(n) for n in range(5)], now=AT)
        await save(store, [line(9)], now=AT + timedelta(hours=2))
        pruned = await prune(
            store,
            {"slow": 1, "reader": 1, "unread": 0},
            {"slow": 1, "reader": 3, "unread": 0},
            older_than=AT + timedelta(hours=1),
        )
        assert pruned.floor == 5
        assert dict(pruned.dropped) == {"slow": 4, "reader": 2, "unread": 5}
        assert await store.cursors() == {"slow": 5, "reader": 5, "unread": 5}

    async def test_max_bytes_drops_the_oldest(self, store: StateStore) -> None:
        events = [line(n) for n in range(5)]
        await save(store, events)
        sizes = [len(e.line) for e in events]
        keep = sum(sizes[-2:])  # room for exactly the two newest
        pruned = await prune(store, {"s": 0}, max_bytes=keep)
        assert pruned.floor == 3
        assert pruned.removed == 3
        assert dict(pruned.dropped) == {"s": 3}
        assert await seqs(store) == [4, 5]
        assert store.size == (2, keep)
        assert (await store.cursors())["s"] == 3
        pruned = await prune(store, {"s": 3}, max_bytes=keep - 1)
        assert pruned.floor == 4
        assert dict(pruned.dropped) == {"s": 1}
        assert store.size == (1, sizes[-1])

    async def test_retention_scans_past_one_chunk(self, store: StateStore) -> None:
        """More old events than one scan of the SQLite store reads (1000): all of them go."""
        old = [line(100 + n) for n in range(1100)]
        await save(store, old, now=AT)
        await save(store, [line(9)], now=AT + timedelta(hours=2))
        pruned = await prune(store, {"s": 0}, older_than=AT + timedelta(hours=1))
        assert (pruned.floor, pruned.removed, dict(pruned.dropped)) == (1100, 1100, {"s": 1100})
        assert await seqs(store) == [1101]
        assert store.size == (1, len(line(9).line))

    async def test_size_stays_right_across_saves_prunes_and_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        events = [line(n) for n in range(8)]
        sizes = [len(e.line) for e in events]
        async with SqliteCheckpointStore(path) as store:
            await save(store, events[:5])
            await prune(store, {"s": 2})
            assert store.size == (3, sum(sizes[2:5]))
        async with SqliteCheckpointStore(path) as store:
            assert store.size == (3, sum(sizes[2:5]))
            await save(store, events[5:])
            assert store.size == (6, sum(sizes[2:]))
            await prune(store, {"s": 7})
            assert store.size == (1, sizes[7])
        async with SqliteCheckpointStore(path) as store:
            assert store.size == (1, sizes[7])


class TestCommittedAt:
    async def test_committed_at_never_decreases(self, store: StateStore) -> None:
        """A `now` that goes back commits at the newest time already given."""
        await save(store, [line(1)], now=AT + timedelta(hours=1))
        await save(store, [line(2)], now=AT)
        await save(store, [line(3)], now=AT + timedelta(hours=2))
        times = [e.committed_at for e in await store.read(0, 10)]
        assert times == [AT + timedelta(hours=1), AT + timedelta(hours=1), AT + timedelta(hours=2)]

    async def test_committed_at_never_decreases_after_prune_emptied_it(
        self, store: StateStore
    ) -> None:
        await save(store, [line(1)], now=AT + timedelta(hours=1))
        await prune(store, {"s": 1})
        await save(store, [line(2)], now=AT)
        (event,) = await store.read(0, 10)
        assert event.committed_at == AT + timedelta(hours=1)

    async def test_committed_at_never_decreases_across_concurrent_saves(
        self, store: StateStore
    ) -> None:
        """Two vaults' saves in flight at once, the second with an earlier `now` (the wall clock
        stepped back): the later seqs are not committed earlier."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: save(store, [line(1)], now=AT + timedelta(hours=1)))
            tg.start_soon(lambda: save(store, [line(2)], now=AT, name="b"))
        events = await store.read(0, 10)
        assert [e.event_id for e in events] == [line(1).event_id, line(2).event_id]
        assert [e.committed_at for e in events] == [AT + timedelta(hours=1)] * 2
        await save(store, [line(3)], now=AT)
        assert (await store.read(2, 1))[0].committed_at == AT + timedelta(hours=1)

    async def test_now_defaults_to_polled_at(self, store: StateStore) -> None:
        await store.save(V1, changed=[], removed=[], polled_at=AT, events=[line(1)])
        (event,) = await store.read(0, 1)
        assert event.committed_at == AT


# -------------------------------------------------------------------------------- schema 1

_SCHEMA_V1 = (
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
    "PRAGMA user_version = 1",
)


def write_v1(path: Path) -> None:
    """A state file as schema version 1 wrote it (git show 2bd1ad4:monitor/store.py)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute("INSERT INTO vaults VALUES (?, ?)", (V1, "2026-11-25T10:00:00.000000Z"))
    conn.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?)",
        (V1, "a", "InProgress", "2026-11-25T10:00:00.000000Z"),
    )
    conn.close()


class TestSchema:
    async def test_a_v1_file_is_upgraded_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        write_v1(path)
        async with SqliteCheckpointStore(path) as store:
            assert await store.load() == {
                V1: VaultCheckpoint(vault_key=V1, jobs={snap("a").key: snap("a")}, polled_at=AT)
            }
            assert store.last_seq == 0
            assert store.size == (0, 0)
            assert await store.cursors() == {}
            await save(store, [line(1)], name="b")
            await store.advance("s", 1)
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()
        async with SqliteCheckpointStore(path) as store:
            assert set((await store.load())[V1].jobs) == {snap("a").key, snap("b").key}
            assert await seqs(store) == [1]
            assert await store.cursors() == {"s": 1}

    async def test_a_newer_version_is_refused_untouched(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        write_v1(path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        before = path.read_bytes()
        with pytest.raises(StartupError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            async with SqliteCheckpointStore(path):
                pass
        assert path.read_bytes() == before


# ---------------------------------------------------------------------- the stores agree

SINKS = ("a", "b")
_op = st.one_of(
    st.tuples(
        st.just("save"), st.integers(0, 4), st.integers(-3, 3)
    ),  # events, hours from the last now
    st.tuples(st.just("advance"), st.sampled_from(SINKS), st.integers(0, 30)),
    st.tuples(
        st.just("prune"),
        st.integers(0, 6),  # older_than: hours after AT
        st.sampled_from([BIG, 4000, 1500, 0]),
        st.integers(0, 3),  # how far `reading` is ahead of the cursor
    ),
)


async def _state(store: StateStore) -> tuple[object, ...]:
    events = [(e.seq, e.event_id, e.committed_at, e.line) for e in await store.read(0, 10_000)]
    return events, await store.cursors(), store.size, store.last_seq, await store.load()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_op, max_size=25))
def test_random_operations_keep_the_stores_equivalent(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    """Any sequence of save/advance/prune leaves both stores with the same reads, cursors,
    sizes, last seq and checkpoints, and every prune answers the same."""
    path = tmp_path_factory.mktemp("equiv") / "monitor.sqlite"

    async def run() -> None:
        memory = MemoryCheckpointStore()
        async with SqliteCheckpointStore(path) as sqlite:
            stores: tuple[StateStore, StateStore] = (memory, sqlite)
            now, n = AT, 0
            for op in ops:
                match op:
                    case ("save", count, hours):
                        now += timedelta(hours=hours)
                        events = [line(n + i) for i in range(count)]
                        n += count
                        for s in stores:
                            await save(s, events, now=now)
                    case ("advance", sink, seq):
                        for s in stores:
                            await s.advance(sink, seq)
                    case ("prune", hours, max_bytes, ahead):
                        cursors = await memory.cursors()
                        delivered = {k: cursors.get(k, 0) for k in SINKS}
                        reading = {k: v + ahead for k, v in delivered.items()}
                        answers = [
                            await s.prune(
                                delivered=delivered,
                                reading=reading,
                                older_than=AT + timedelta(hours=hours),
                                max_bytes=max_bytes,
                            )
                            for s in stores
                        ]
                        assert answers[0] == answers[1]
                assert await _state(memory) == await _state(sqlite), op
                got = await seqs(memory)
                assert got == sorted(set(got))
                times = [e.committed_at for e in await memory.read(0, 10_000)]
                assert times == sorted(times)

    anyio.run(run)
