"""Reading a JSON-lines file's last events back: what the file sink holds at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from monitor.events import read_recent_events, to_cloudevent

VAULT = (
    "/Subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/"
    "Microsoft.RecoveryServices/vaults/v1"
)


def event(job: str, status: str, *, vault: str = VAULT) -> dict[str, Any]:
    """The fields of a schema v1 event that the read-back looks at (others are irrelevant)."""
    return {
        "schema_version": 1,
        "event": "backup_job.state_changed",
        "event_id": f"{job}-{status}",
        "time": "2026-11-25T10:00:05.000Z",
        "job": {"id": job, "status": status, "start_time": "2026-11-25T10:00:00.123Z"},
        "vault": {"id": vault, "name": vault.rsplit("/", 1)[-1]},
    }


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
