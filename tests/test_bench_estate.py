"""bench/estate.py's judge: job state changes against the world's transitions, other event
types (item events, long-running jobs) counted apart, never as wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bench import estate
from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus

VAULT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v"
AT = datetime(2026, 1, 1, tzinfo=UTC)


def transition(job: str, to: str, at: str) -> dict[str, str]:
    return {"vault_id": VAULT, "job_id": job, "to": to, "at": at}


def change(job: str, status: str, time: str) -> dict[str, Any]:
    return {
        "event": "backup_job.state_changed",
        "event_id": event_id(VAULT, job, JobStatus.of(status)),
        "time": time,
        "job": {"status": status},
    }


def test_other_event_types_are_counted_apart() -> None:
    truth = [
        transition("j1", "InProgress", "2026-01-01T00:00:00Z"),
        transition("j1", "Completed", "2026-01-01T00:01:00Z"),
        transition("j2", "Failed", "2026-01-01T00:02:00Z"),
    ]
    events: list[dict[str, Any]] = [
        change("j1", "Completed", "2026-01-01T00:01:05Z"),
        change("jx", "Failed", "2026-01-01T00:03:00Z"),  # never happened: wrong
        {**change("j1", "InProgress", "2026-01-01T00:00:30Z"), "event": "backup_job.long_running"},
        {"event": "backup_item.protection_changed", "event_id": "p", "time": "2026-01-01T00:04Z"},
    ]
    verdict = estate.judge(
        events,
        truth,
        vaults={VAULT.lower()},
        lag_from=AT,
        cutoff=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
    )
    assert (verdict.missed, verdict.duplicates, verdict.wrong) == (1, 0, 1)
    assert verdict.others == {"backup_job.long_running": 1, "backup_item.protection_changed": 1}
    assert verdict.lags == [5.0]
