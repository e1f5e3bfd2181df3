"""The demo's console lines and summary take every event type (item events too)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from monitor.commands.demo import describe, summarize
from monitor.core.diff import JobStateChanged
from monitor.core.jobs import JobStatus, parse_job_details
from monitor.core.vaults import parse_vault_id
from monitor.events import render_event
from tests import hostile_arm
from tests.test_item_events import long_running, missed, rendered


def test_item_events_get_a_line_of_their_own() -> None:
    for change in (missed(), long_running(), long_running(item=False)):
        event = rendered(change)
        line = describe(event)
        assert str(event["event"]).split(".", 1)[1] in line
        assert "v1" in line  # the vault's name


def test_the_summary_counts_item_events_apart_from_job_changes() -> None:
    events = [rendered(missed()), rendered(long_running())]
    lines = summarize(
        events,
        [],
        {"throttled_429": 0},
        cutoff_at=datetime(2026, 3, 30, tzinfo=UTC),
        duration_s=60,
        budget_per_s=12.5,
    )
    text = "\n".join(lines)
    assert "0 events" in text
    assert "1 backup_item.backup_missed" in text
    assert "1 backup_job.long_running" in text


def job_event(
    name: str, status: str, previous: JobStatus | None, *, ended_s_ago: float
) -> dict[str, Any]:
    """A `backup_job.state_changed` event of a job of vault v1 that ended `ended_s_ago`."""
    vault = parse_vault_id(hostile_arm.vault_id("v1"), location="westeurope")
    item = hostile_arm.job_item("v1", name, status=status, age_s=60 + ended_s_ago)
    job = parse_job_details(item, vault).job
    now = datetime.now(UTC)
    change = JobStateChanged(
        vault_key=vault.key, job=job, previous_status=previous, observed_at=now
    )
    event = render_event(change, vault=vault, details=None, emitted_at=now)
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(event))
    return loaded


def test_a_line_names_the_job_and_says_whether_its_lag_is_detection_or_backfill() -> None:
    """Each job line ends its job columns with the id's last 8 characters; a change seen
    happening says `lag N s`, a first sighting `first seen` (its lag is backfill); the
    summary's detection lag is exactly the lines' lags."""
    backfilled = job_event("00000000-0000-4000-8000-00000000beef", "Failed", None, ended_s_ago=3600)
    seen = job_event(
        "00000000-0000-4000-8000-00000000cafe",
        "Completed",
        JobStatus.IN_PROGRESS,
        ended_s_ago=3.2,
    )
    first, change = describe(backfilled), describe(seen)
    assert " 0000beef  " in first
    assert " 0000cafe  " in change
    assert first.endswith("new → Failed                 first seen")
    assert "lag" not in first
    lag = seen["detection_lag_s"]
    assert change.endswith(f"InProgress → Completed              lag {lag:5.1f} s")
    lines = summarize(
        [backfilled, seen],
        [],
        {},
        cutoff_at=datetime.now(UTC),
        duration_s=60,
        budget_per_s=12.5,
    )
    (lag_line,) = [line for line in lines if "detection lag" in line]
    assert f"mean {lag:.1f} s, p95 {lag:.1f} s over 1 jobs" in lag_line
    assert "first sightings are backfill, not counted" in lag_line


@given(
    previous=st.none() | st.sampled_from([JobStatus.IN_PROGRESS, JobStatus.CANCELLING]),
    status=st.sampled_from(["Completed", "Failed", "Cancelled", "InProgress"]),
    ended_s_ago=st.floats(0, 10**5),
)
def test_the_summary_counts_a_lag_exactly_when_its_line_prints_one(
    previous: JobStatus | None, status: str, ended_s_ago: float
) -> None:
    """A line says `lag` exactly for the events whose lag the summary averages."""
    event = job_event(
        "00000000-0000-4000-8000-000000000001", status, previous, ended_s_ago=ended_s_ago
    )
    lines = summarize(
        [event], [], {}, cutoff_at=datetime.now(UTC), duration_s=60, budget_per_s=12.5
    )
    counted = any("detection lag" in line for line in lines)
    assert (" lag " in describe(event)) == counted
    assert ("first seen" in describe(event)) == (previous is None)
