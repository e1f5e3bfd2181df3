"""Protected items' states in the state file: saved with their events in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.checkpoints import MemoryCheckpointStore, StateStore
from monitor.store import SCHEMA_VERSION, SqliteCheckpointStore
from tests.test_scheduler import SUB_A, vault_ref
from tests.test_store_outbox import AT, V1, line, save, seqs, write_v1

V2 = vault_ref(SUB_A, "vault-b").key


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryCheckpointStore()
        return
    async with SqliteCheckpointStore(tmp_path / "monitor.sqlite") as opened:
        yield opened


class TestItems:
    async def test_states_and_events_commit_together(self, store: StateStore) -> None:
        await store.save_items(
            V1, states={"a": '{"n": 1}', "b": '{"n": 2}'}, removed=[], events=[line(1)], now=AT
        )
        assert await store.load_items() == {V1: {"a": '{"n": 1}', "b": '{"n": 2}'}}
        assert await seqs(store) == [1]
        assert store.last_seq == 1

    async def test_upsert_and_remove(self, store: StateStore) -> None:
        await store.save_items(V1, states={"a": "1", "b": "2"}, removed=[], events=[], now=AT)
        await store.save_items(V1, states={"a": "3"}, removed=["b", "unknown"], events=[], now=AT)
        await store.save_items(V2, states={"a": "9"}, removed=[], events=[], now=AT)
        assert await store.load_items() == {V1: {"a": "3"}, V2: {"a": "9"}}

    async def test_a_key_both_saved_and_removed_is_refused(self, store: StateStore) -> None:
        with pytest.raises(ValueError, match="both saved and removed"):
            await store.save_items(V1, states={"a": "1"}, removed=["a"], events=[], now=AT)
        assert await store.load_items() == {}

    async def test_a_naive_time_is_refused_and_nothing_is_written(self, store: StateStore) -> None:
        with pytest.raises(ValueError, match="naive"):
            await store.save_items(
                V1, states={"a": "1"}, removed=[], events=[line(1)], now=AT.replace(tzinfo=None)
            )
        assert (await store.load_items(), store.last_seq) == ({}, 0)

    async def test_forget_drops_the_items_too(self, store: StateStore) -> None:
        await save(store, [])
        await store.save_items(V1, states={"a": "1"}, removed=[], events=[], now=AT)
        await store.forget(V1)
        assert (await store.load_items(), await store.load()) == ({}, {})

    async def test_item_events_share_the_outbox_order(self, store: StateStore) -> None:
        await save(store, [line(1)])
        await store.save_items(V1, states={"a": "1"}, removed=[], events=[line(2)], now=AT)
        await save(store, [line(3)])
        assert [e.event_id for e in await store.read(0, 10)] == [
            line(1).event_id,
            line(2).event_id,
            line(3).event_id,
        ]


class TestSqliteItems:
    async def test_states_survive_a_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as first:
            await first.save_items(V1, states={"a": "1"}, removed=[], events=[line(1)], now=AT)
        async with SqliteCheckpointStore(path) as second:
            assert await second.load_items() == {V1: {"a": "1"}}
            assert await seqs(second) == [1]

    async def test_a_v1_file_gains_the_items_table(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        write_v1(path)
        async with SqliteCheckpointStore(path) as store:
            await store.save_items(V1, states={"a": "1"}, removed=[], events=[], now=AT)
            assert V1 in await store.load()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()

    async def test_a_v2_file_is_upgraded_keeping_its_outbox(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await save(store, [line(1)])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("DROP TABLE items")
        conn.execute("PRAGMA user_version = 2")
        conn.close()
        async with SqliteCheckpointStore(path) as store:
            assert await seqs(store) == [1]
            assert await store.load_items() == {}
            await store.save_items(V1, states={"a": "1"}, removed=[], events=[line(2)], now=AT)
            assert await seqs(store) == [1, 2]

    async def test_a_failed_commit_writes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await store.save_items(V1, states={"a": "1"}, removed=[], events=[], now=AT)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
            conn.close()
            with pytest.raises(Exception, match="no"):
                await store.save_items(V1, states={"a": "2"}, removed=[], events=[line(1)], now=AT)
            assert await store.load_items() == {V1: {"a": "1"}}
            assert store.last_seq == 0


_KEYS = st.sampled_from(["a", "b", "c"])
_OPS = st.lists(
    st.tuples(
        st.sampled_from([V1, V2]),
        st.dictionaries(_KEYS, st.text(min_size=1, max_size=4), max_size=3),
        st.lists(_KEYS, max_size=2),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=_OPS)
def test_memory_and_sqlite_agree(
    operations: list[tuple[str, dict[str, str], list[str]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Any sequence of saves leaves both stores with the same item states."""

    async def play() -> None:
        directory = tmp_path_factory.mktemp("items")
        memory = MemoryCheckpointStore()
        async with SqliteCheckpointStore(directory / "monitor.sqlite") as sqlite:
            for vault, states, removed in operations:
                removed = [key for key in removed if key not in states]
                for target in (memory, sqlite):
                    await target.save_items(
                        vault, states=states, removed=removed, events=[], now=AT
                    )
            assert await memory.load_items() == await sqlite.load_items()

    anyio.run(play)
