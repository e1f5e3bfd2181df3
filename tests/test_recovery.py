"""Rolling checkpoints forward to the events a crash left written but not checkpointed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from monitor.checkpoints import VaultCheckpoint
from monitor.core.diff import JobSnapshot
from monitor.core.jobs import JobKey, JobStatus
from monitor.events import read_recent_events, to_cloudevent
from monitor.recovery import roll_forward

VAULT = (
    "/Subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/"
    "Microsoft.RecoveryServices/vaults/v1"
)
KEY = VAULT.lower()
START = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)
LIFECYCLE = ["InProgress", "Cancelling", "Completed", "Failed", "Cancelled"]


def event(job: str, status: str, *, vault: str = VAULT) -> dict[str, Any]:
    """The fields of a schema v1 event that recovery reads (others are irrelevant to it)."""
    return {
        "schema_version": 1,
        "event": "backup_job.state_changed",
        "event_id": f"{job}-{status}",
        "time": "2026-11-25T10:00:05.000Z",
        "job": {"id": job, "status": status, "start_time": "2026-11-25T10:00:00.123Z"},
        "vault": {"id": vault, "name": vault.rsplit("/", 1)[-1]},
    }


def snap(job: str, status: str) -> JobSnapshot:
    return JobSnapshot(
        key=JobKey(vault_key=KEY, job_name=job.lower()), status=JobStatus.of(status), start_at=START
    )


def test_events_the_checkpoint_lacks_are_rolled_forward() -> None:
    """A job emitted after the last checkpoint takes the emitted status; its start comes along."""
    stored = {KEY: VaultCheckpoint(vault_key=KEY, jobs={}, polled_at=START)}
    recovered = roll_forward(stored, [event("J1", "InProgress"), event("J1", "Completed")])
    assert recovered.checkpoints[KEY].jobs == {snap("j1", "Completed").key: snap("j1", "Completed")}
    assert recovered.checkpoints[KEY].polled_at == START
    assert recovered.unsaved == {KEY: [snap("j1", "Completed")]}
    assert recovered.jobs == 1


def test_a_vault_only_the_events_know_gets_a_checkpoint_without_a_poll_time() -> None:
    """Killed before a vault's first checkpoint: its jobs are known, its first poll still first."""
    recovered = roll_forward({}, [event("J1", "Failed")])
    assert recovered.checkpoints[KEY].polled_at is None
    assert list(recovered.checkpoints[KEY].jobs.values()) == [snap("j1", "Failed")]


def test_a_terminal_status_is_never_rolled_back() -> None:
    """A terminal status checkpointed silently beats an older running status in the file."""
    stored = {
        KEY: VaultCheckpoint(
            vault_key=KEY,
            jobs={snap("j1", "Completed").key: snap("j1", "Completed")},
            polled_at=START,
        )
    }
    recovered = roll_forward(stored, [event("J1", "InProgress")])
    assert recovered.checkpoints == stored
    assert recovered.unsaved == {}


def test_what_is_not_a_readable_event_is_ignored() -> None:
    junk: list[dict[str, Any]] = [
        {},
        {"job": "x", "vault": {}},
        {"job": {"id": "J1"}, "vault": {"id": VAULT}},
        {"job": {"id": "", "status": "Completed"}, "vault": {"id": VAULT}},
        {
            **event("J2", "Completed"),
            "job": {"id": "J2", "status": "Completed", "start_time": "soon"},
        },
    ]
    recovered = roll_forward({}, junk)
    assert list(recovered.unsaved) == [KEY]
    assert [s.start_at for s in recovered.unsaved[KEY]] == [None]


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, len(LIFECYCLE) - 1)),
        max_size=30,
    ),
    st.integers(0, 30),
)
def test_each_job_ends_in_its_last_emitted_state(steps: list[tuple[str, int]], saved: int) -> None:
    """Emitted: every step in order; checkpointed: the first `saved` of them. Rolled forward,
    every job has its last emitted status, and exactly the jobs the store lags on are unsaved."""
    # Statuses only move forward along LIFECYCLE per job, as a job's do.
    emitted: list[tuple[str, str]] = []
    at: dict[str, int] = {}
    for job, index in steps:
        index = max(index, at.get(job, 0))
        at[job] = index
        emitted.append((job, LIFECYCLE[index]))
    stored_jobs: dict[JobKey, JobSnapshot] = {}
    for job, status in emitted[:saved]:
        stored_jobs[snap(job, status).key] = snap(job, status)
    stored = {KEY: VaultCheckpoint(vault_key=KEY, jobs=stored_jobs, polled_at=START)}
    recovered = roll_forward(stored, [event(job, status) for job, status in emitted])
    last = dict(emitted)
    jobs = recovered.checkpoints[KEY].jobs
    assert {k.job_name: s.status.value for k, s in jobs.items()} == last
    lagging = {
        j for j, status in last.items() if stored_jobs.get(snap(j, status).key) != snap(j, status)
    }
    assert {s.key.job_name for s in recovered.unsaved.get(KEY, [])} == lagging


def test_read_recent_events_skips_what_is_not_an_event(tmp_path: Path) -> None:
    """CloudEvents are unwrapped; a torn line, a foreign line and a blank one are skipped."""
    path = tmp_path / "events.jsonl"
    lines = [
        orjson.dumps(event("J1", "InProgress")),
        b'{"level": "info", "msg": "someone else\'s line"}',
        b"",
        orjson.dumps(to_cloudevent(event("J1", "Completed"))),
        orjson.dumps(event("J2", "Failed"))[:40],  # a write cut short by SIGKILL
    ]
    path.write_bytes(b"\n".join(lines))
    assert [(e["job"]["id"], e["job"]["status"]) for e in read_recent_events(path)] == [
        ("J1", "InProgress"),
        ("J1", "Completed"),
    ]


def test_read_recent_events_reads_only_the_end_of_a_long_file(tmp_path: Path) -> None:
    """Only the last `max_bytes` are read; the line the window cuts into is skipped."""
    path = tmp_path / "events.jsonl"
    rows = [orjson.dumps(event(f"J{i}", "Completed")) + b"\n" for i in range(100)]
    path.write_bytes(b"".join(rows))
    window = len(rows[-1]) * 3 + 10  # the last three lines and a part of the one before
    found = read_recent_events(path, max_bytes=window)
    assert [e["job"]["id"] for e in found] == ["J97", "J98", "J99"]


def test_read_recent_events_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    assert read_recent_events(path) == []
