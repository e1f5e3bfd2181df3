"""The demo's console lines and summary take every event type (item events too)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.commands.demo import describe, summarize
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
