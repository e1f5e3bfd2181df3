"""Tests of the checkpoint stores: one contract suite over both, then SQLite's own promises."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.checkpoints import CheckpointStore, MemoryCheckpointStore
from monitor.config import StateSettings
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.core.tracker import VaultCheckpoint
from monitor.errors import StartupError, StoreError
from monitor.state_lock import StateFileLock
from monitor.store import SCHEMA_VERSION, SqliteCheckpointStore, build_checkpoint_store
from tests import store_crash_child as child

REPO = Path(__file__).resolve().parent.parent
V1 = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.recoveryservices/vaults/v1"
V2 = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.recoveryservices/vaults/v2"
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def snap(
    name: str, status: str = "InProgress", *, vault: str = V1, start_at: datetime | None = AT
) -> JobSnapshot:
    return JobSnapshot(
        key=JobKey(vault_key=vault, job_name=name), status=JobStatus.of(status), start_at=start_at
    )


def key(name: str, vault: str = V1) -> JobKey:
    return JobKey(vault_key=vault, job_name=name)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """Each implementation, opened."""
    if request.param == "memory":
        async with MemoryCheckpointStore() as memory:
            yield memory
    else:
        async with SqliteCheckpointStore(tmp_path / "state" / "monitor.sqlite") as sqlite:
            yield sqlite


class TestContract:
    """What every CheckpointStore promises."""

    async def test_new_store_is_empty(self, store: CheckpointStore) -> None:
        """A store nobody saved to loads as an empty dict."""
        assert await store.load() == {}

    async def test_round_trip(self, store: CheckpointStore) -> None:
        """Saved snapshots load back equal: known, unknown and start-less ones."""
        changed = [snap("a"), snap("b", "Paused"), snap("c", "Completed", start_at=None)]
        await store.save(V1, changed=changed, removed=[], polled_at=AT)
        assert await store.load() == {
            V1: VaultCheckpoint(vault_key=V1, jobs={s.key: s for s in changed}, polled_at=AT)
        }

    async def test_loaded_values_are_canonical_and_utc(self, store: CheckpointStore) -> None:
        """Statuses come back canonical (interned) and datetimes in UTC."""
        plus2 = timezone(timedelta(hours=2))
        await store.save(
            V1,
            changed=[snap("a", "completed", start_at=AT.astimezone(plus2))],
            removed=[],
            polled_at=AT.astimezone(plus2),
        )
        checkpoint = (await store.load())[V1]
        (loaded,) = checkpoint.jobs.values()
        assert loaded.status is JobStatus.COMPLETED
        assert loaded.start_at == AT
        assert loaded.start_at.tzinfo is UTC
        assert checkpoint.polled_at == AT
        assert checkpoint.polled_at.tzinfo is UTC

    async def test_microseconds_survive(self, store: CheckpointStore) -> None:
        """Datetimes keep microsecond precision."""
        precise = AT.replace(microsecond=123456)
        await store.save(V1, changed=[snap("a", start_at=precise)], removed=[], polled_at=precise)
        checkpoint = (await store.load())[V1]
        assert checkpoint.polled_at == precise
        assert checkpoint.jobs[key("a")].start_at == precise

    async def test_upsert_replaces_status(self, store: CheckpointStore) -> None:
        """Saving a known job again replaces its status and start."""
        await store.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
        later = AT + timedelta(minutes=1)
        await store.save(
            V1, changed=[snap("a", "Failed", start_at=later)], removed=[], polled_at=later
        )
        jobs = (await store.load())[V1].jobs
        assert jobs == {key("a"): snap("a", "Failed", start_at=later)}

    async def test_removed_keys_disappear(self, store: CheckpointStore) -> None:
        """Removed keys are gone; the others stay; removing an unknown key is a no-op."""
        await store.save(V1, changed=[snap("a"), snap("b")], removed=[], polled_at=AT)
        await store.save(V1, changed=[], removed=[key("a"), key("zzz")], polled_at=AT)
        assert set((await store.load())[V1].jobs) == {key("b")}

    async def test_polled_at_updates(self, store: CheckpointStore) -> None:
        """Every save sets polled_at, even one that changes no job."""
        await store.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
        later = AT + timedelta(seconds=15)
        await store.save(V1, changed=[], removed=[], polled_at=later)
        checkpoint = (await store.load())[V1]
        assert checkpoint.polled_at == later
        assert set(checkpoint.jobs) == {key("a")}

    async def test_empty_save_records_the_vault(self, store: CheckpointStore) -> None:
        """A vault polled with no jobs is still remembered, with its polled_at."""
        await store.save(V1, changed=[], removed=[], polled_at=AT)
        assert await store.load() == {V1: VaultCheckpoint(vault_key=V1, jobs={}, polled_at=AT)}

    async def test_idempotent(self, store: CheckpointStore) -> None:
        """The same save twice leaves the same state as once."""
        changed, removed = [snap("a"), snap("b", "Failed")], [key("c")]
        await store.save(V1, changed=changed, removed=removed, polled_at=AT)
        once = await store.load()
        await store.save(V1, changed=changed, removed=removed, polled_at=AT)
        assert await store.load() == once

    async def test_duplicate_in_changed_last_wins(self, store: CheckpointStore) -> None:
        """A job listed twice in one save keeps its last snapshot."""
        await store.save(V1, changed=[snap("a"), snap("a", "Failed")], removed=[], polled_at=AT)
        assert (await store.load())[V1].jobs[key("a")].status is JobStatus.FAILED

    async def test_vaults_are_isolated(self, store: CheckpointStore) -> None:
        """Saving or forgetting one vault never touches another."""
        await store.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
        await store.save(V2, changed=[snap("a", vault=V2)], removed=[], polled_at=AT)
        await store.save(V1, changed=[], removed=[key("a")], polled_at=AT)
        state = await store.load()
        assert state[V1].jobs == {}
        assert set(state[V2].jobs) == {key("a", V2)}
        await store.forget(V2)
        assert set(await store.load()) == {V1}

    async def test_forget(self, store: CheckpointStore) -> None:
        """A forgotten vault is absent; forgetting an unknown vault is a no-op."""
        await store.save(V1, changed=[snap("a"), snap("b")], removed=[], polled_at=AT)
        await store.forget(V1)
        await store.forget(V2)
        assert await store.load() == {}
        await store.save(V1, changed=[], removed=[], polled_at=AT)
        assert (await store.load())[V1].jobs == {}

    async def test_load_returns_copies(self, store: CheckpointStore) -> None:
        """Mutating a loaded mapping does not change the store."""
        await store.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
        state = await store.load()
        jobs = state[V1].jobs
        assert isinstance(jobs, dict)
        jobs.clear()
        del state[V1]
        assert set((await store.load())[V1].jobs) == {key("a")}

    @pytest.mark.parametrize(
        ("changed", "removed", "polled_at", "match"),
        [
            ([snap("a", vault=V2)], [], AT, "does not belong"),
            ([], [key("a", V2)], AT, "does not belong"),
            ([snap("a")], [key("a")], AT, "both changed and removed"),
            ([snap("a")], [], AT.replace(tzinfo=None), "polled_at must be timezone-aware"),
            ([snap("a", start_at=AT.replace(tzinfo=None))], [], AT, "start_at must be"),
        ],
        ids=["foreign-change", "foreign-removal", "overlap", "naive-polled", "naive-start"],
    )
    async def test_invalid_save_writes_nothing(
        self,
        store: CheckpointStore,
        changed: list[JobSnapshot],
        removed: list[JobKey],
        polled_at: datetime,
        match: str,
    ) -> None:
        """Invalid arguments raise ValueError and leave the state as it was."""
        await store.save(V1, changed=[snap("b")], removed=[], polled_at=AT)
        before = await store.load()
        with pytest.raises(ValueError, match=match):
            await store.save(V1, changed=changed, removed=removed, polled_at=polled_at)
        assert await store.load() == before

    async def test_concurrent_saves_all_land(self, store: CheckpointStore) -> None:
        """Saves from many tasks at once are serialised, none lost."""
        vaults = [f"{V1}-{i}" for i in range(20)]
        async with anyio.create_task_group() as tg:
            for vault in vaults:
                tg.start_soon(
                    lambda v: store.save(v, changed=[snap("a", vault=v)], removed=[], polled_at=AT),
                    vault,
                )
        state = await store.load()
        assert set(state) == set(vaults)
        assert all(set(c.jobs) == {key("a", v)} for v, c in state.items())


class TestSqlite:
    """SQLite's own promises: persistence, schema versions, clear startup errors."""

    async def test_reopen_sees_the_data(self, tmp_path: Path) -> None:
        """State saved before closing is loaded after reopening, in a fresh directory tree."""
        path = tmp_path / "deep" / "er" / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await store.save(V1, changed=[snap("a"), snap("b", "Failed")], removed=[], polled_at=AT)
            before = await store.load()
        async with SqliteCheckpointStore(path) as store:
            assert await store.load() == before

    async def test_file_is_wal_and_versioned(self, tmp_path: Path) -> None:
        """A new file is in WAL mode, at the current schema version."""
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path):
            pass
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()

    async def test_newer_schema_is_refused_untouched(self, tmp_path: Path) -> None:
        """A file from a newer version fails with both versions and the path; bytes unchanged."""
        path = tmp_path / "monitor.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(StartupError) as info:
            async with SqliteCheckpointStore(path):
                pass
        message = str(info.value)
        assert str(path) in message
        assert f"version {SCHEMA_VERSION + 1}" in message
        assert f"version {SCHEMA_VERSION} " in message
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

    async def test_foreign_database_is_refused_untouched(self, tmp_path: Path) -> None:
        """A SQLite file with someone else's tables (version 0) is not adopted."""
        path = tmp_path / "other.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE jobs (anything)")
        conn.commit()
        conn.close()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(StartupError, match="not a backup-monitor state file"):
            async with SqliteCheckpointStore(path):
                pass
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite fails at startup naming the file."""
        path = tmp_path / "monitor.sqlite"
        path.write_bytes(b"certainly not a database" * 100)
        with pytest.raises(StartupError, match=str(path)):
            async with SqliteCheckpointStore(path):
                pass

    async def test_uncreatable_directory(self, tmp_path: Path) -> None:
        """A parent that cannot be created fails at startup naming it (works as root too)."""
        blocker = tmp_path / "file"
        blocker.write_text("a file where a directory should be")
        path = blocker / "state" / "monitor.sqlite"
        with pytest.raises(StartupError, match=f"cannot create the state directory {path.parent}"):
            async with SqliteCheckpointStore(path):
                pass

    async def test_corrupt_row_is_a_store_error(self, tmp_path: Path) -> None:
        """A stored value that does not parse raises StoreError, not a bare ValueError."""
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as store:
            await store.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE jobs SET start_at = 'yesterday'")
        conn.commit()
        conn.close()
        async with SqliteCheckpointStore(path) as store:
            with pytest.raises(StoreError, match="corrupt checkpoint row"):
                await store.load()

    async def test_use_outside_async_with(self, tmp_path: Path) -> None:
        """The constructor does no I/O; use before opening or twice-opening is an error."""
        path = tmp_path / "monitor.sqlite"
        store = SqliteCheckpointStore(path)
        assert not path.exists()
        with pytest.raises(RuntimeError, match="not open"):
            await store.load()
        async with store:
            with pytest.raises(RuntimeError, match="already open"):
                await store.__aenter__()
        await store.aclose()  # idempotent

    async def test_second_store_on_the_same_file_is_refused(self, tmp_path: Path) -> None:
        """While one store holds the file, another fails naming the file, PID and lock file;
        closing the first releases the lock and empties the lock file."""
        path = tmp_path / "monitor.sqlite"
        async with SqliteCheckpointStore(path) as owner:
            await owner.save(V1, changed=[snap("a")], removed=[], polled_at=AT)
            lock = path.with_name("monitor.sqlite.lock")
            assert owner.lock_path == lock
            assert lock.read_text() == f"{os.getpid()}\n"
            second = SqliteCheckpointStore(path)
            with pytest.raises(StartupError) as info:
                await second.__aenter__()
            assert str(info.value) == (
                f"state file {path} is in use by another backup-monitor (pid {os.getpid()}; "
                f"lock {lock}); stop that process or give this one its own [state] path"
            )
            with pytest.raises(RuntimeError, match="not open"):
                await second.load()
            async with SqliteCheckpointStore(path, exclusive=False) as beside:  # check-config
                assert beside.lock_path is None
                assert set(await beside.load()) == {V1}
            assert await owner.load()  # the refused and the unlocked store left it intact
        assert lock.read_text() == ""
        async with SqliteCheckpointStore(path) as next_owner:
            assert set(await next_owner.load()) == {V1}
            assert lock.read_text() == f"{os.getpid()}\n"

    async def test_a_failed_open_releases_the_lock(self, tmp_path: Path) -> None:
        """A state file refused at open (not SQLite) does not keep its lock held."""
        path = tmp_path / "monitor.sqlite"
        path.write_bytes(b"certainly not a database" * 100)
        for _ in range(2):  # the second attempt fails the same way, not with "in use"
            with pytest.raises(StartupError, match="cannot open the state file"):
                async with SqliteCheckpointStore(path):
                    pass

    def test_lock_of_a_killed_holder_is_not_stale(self, tmp_path: Path) -> None:
        """A holder SIGKILLed with the lock held leaves no lock behind; its PID is replaced."""
        path = tmp_path / "monitor.sqlite"
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from monitor.state_lock import StateFileLock\n"
            "lock = StateFileLock(Path(sys.argv[1]))\n"
            "lock.acquire()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"locked\n"
            with pytest.raises(
                StartupError, match=f"in use by another backup-monitor \\(pid {holder.pid};"
            ):
                anyio.run(_load, path)
        finally:
            holder.kill()
            holder.communicate(timeout=10)
        lock = StateFileLock(path)
        lock.acquire()
        try:
            assert lock.held
            assert lock.path.read_text() == f"{os.getpid()}\n"
        finally:
            lock.release()
        assert not lock.held

    def test_build_checkpoint_store(self, tmp_path: Path) -> None:
        """`:memory:` builds the memory store, a path the SQLite one (unopened)."""
        assert isinstance(
            build_checkpoint_store(StateSettings(path=":memory:")), MemoryCheckpointStore
        )
        built = build_checkpoint_store(StateSettings(path=tmp_path / "x.sqlite"))
        assert isinstance(built, SqliteCheckpointStore)
        assert built.path == tmp_path / "x.sqlite"
        assert built.lock_path == tmp_path / "x.sqlite.lock"
        assert not built.path.exists()
        unlocked = build_checkpoint_store(
            StateSettings(path=tmp_path / "x.sqlite"), exclusive=False
        )
        assert isinstance(unlocked, SqliteCheckpointStore)
        assert unlocked.lock_path is None


def test_sigkill_at_any_moment_leaves_a_whole_generation(tmp_path: Path) -> None:
    """A process SIGKILLed mid-save leaves every vault at exactly one committed generation.

    The child saves 3 vaults × 200 jobs per generation in a tight loop and reports each commit;
    it is killed eight times. After each kill, every vault must hold one generation entirely
    (atomicity), at least the last one reported and at most the one in flight (durability
    across a process crash).
    """
    path = tmp_path / "monitor.sqlite"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    code = "from tests.store_crash_child import main; main()"
    previous: dict[str, int] = {}
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            proc.wait(5)
            pytest.fail(f"child died: {proc.stderr.read().decode() if proc.stderr else ''}")
        anyio.run(anyio.sleep, rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        committed: dict[str, int] = {}
        for line in (first + out).decode().splitlines(keepends=True):
            if line.endswith("\n"):
                index, generation = map(int, line.split())
                committed[child.VAULTS[index]] = generation
        state = anyio.run(_load, path)
        in_flight = max(previous.values(), default=-1) + 1
        for vault in child.VAULTS:
            context = f"seed {seed}, round {round_}, {vault}: reported {committed.get(vault)}"
            if vault not in state:
                assert vault not in committed, context
                assert vault not in previous, context
                continue
            generation = child.generation_of(state[vault])
            if vault in committed:
                allowed: set[int | None] = {committed[vault], committed[vault] + 1}
            else:  # killed before this vault's first save of the round returned
                allowed = {previous.get(vault), in_flight}
            assert generation in allowed, f"{context}, loaded {generation}"
            previous[vault] = generation


async def _load(path: Path) -> dict[str, VaultCheckpoint]:
    async with SqliteCheckpointStore(path) as store:
        return await store.load()


# --------------------------------------------------------------------------------------------
# Memory and SQLite agree on any sequence of operations


@dataclass(frozen=True)
class Save:
    vault: str
    changed: list[tuple[str, str, datetime | None]]
    removed: list[str]
    polled_at: datetime


@dataclass(frozen=True)
class Forget:
    vault: str


VAULT_KEYS = st.sampled_from(["v0", "v1", "v2"])
NAMES = st.sampled_from(["a", "b", "c", "d"])
STATUSES = st.sampled_from(["InProgress", "Completed", "completed", "Failed", "Paused", "PAUSED"])
TIMES = st.datetimes(
    min_value=datetime(2002, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
)
OPERATIONS = st.lists(
    st.builds(
        Save,
        vault=VAULT_KEYS,
        changed=st.lists(st.tuples(NAMES, STATUSES, st.none() | TIMES), max_size=4),
        removed=st.lists(NAMES, max_size=3),
        polled_at=TIMES,
    )
    | st.builds(Forget, vault=VAULT_KEYS),
    max_size=8,
)


async def _apply(store: CheckpointStore, op: Save | Forget) -> str | None:
    """Apply one operation; return the name of the error it raised, if any."""
    try:
        if isinstance(op, Forget):
            await store.forget(op.vault)
        else:
            await store.save(
                op.vault,
                changed=[
                    JobSnapshot(key=key(n, op.vault), status=JobStatus.of(s), start_at=t)
                    for n, s, t in op.changed
                ],
                removed=[key(n, op.vault) for n in op.removed],
                polled_at=op.polled_at,
            )
    except ValueError as exc:
        return type(exc).__name__
    return None


async def _agree(operations: list[Save | Forget], directory: Path) -> None:
    memory = MemoryCheckpointStore()
    async with SqliteCheckpointStore(directory / "monitor.sqlite") as sqlite:
        for op in operations:
            assert await _apply(memory, op) == await _apply(sqlite, op), op
            assert await memory.load() == await sqlite.load(), op


@settings(max_examples=40, deadline=None)
@given(operations=OPERATIONS)
def test_memory_and_sqlite_agree(operations: list[Save | Forget]) -> None:
    """Any sequence of saves and forgets loads the same from both implementations."""
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(_agree, operations, Path(directory))
