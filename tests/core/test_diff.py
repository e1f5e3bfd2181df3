"""Tests of the pure job diff in monitor.core.diff."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import assert_never

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.diff import JobEvent, JobSnapshot, JobStateChanged, apply, diff_jobs, event_id
from monitor.core.jobs import BackupJob, JobKey, JobStatus, parse_jobs_page
from monitor.core.vaults import parse_vault_id
from tests.core import payloads as p

VAULT = parse_vault_id(p.VAULT_ID)
AT = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
STATUSES = [
    "InProgress",
    "Cancelling",
    "Completed",
    "CompletedWithWarnings",
    "Failed",
    "Cancelled",
    "completed",
    "FAILED",
    "Paused",
    "paused",
]


def job(guid: str, status: str) -> BackupJob:
    (parsed,) = parse_jobs_page(p.page(p.job_item(guid, status=status)), VAULT).jobs
    return parsed


def snapshots(*jobs: BackupJob) -> dict[JobKey, JobSnapshot]:
    return {j.key: JobSnapshot.of(j) for j in jobs}


class TestDiff:
    def test_first_sighting(self) -> None:
        """A job never seen before yields one event with previous_status None."""
        (event,) = diff_jobs({}, [job("a", "InProgress")], AT)
        assert event.previous_status is None
        assert event.is_first_sighting
        assert event.status is JobStatus.IN_PROGRESS
        assert event.observed_at == AT
        assert event.vault_key == VAULT.key

    def test_change(self) -> None:
        """A status change yields one event carrying the old status."""
        before = snapshots(job("a", "InProgress"))
        (event,) = diff_jobs(before, [job("A", "Failed")], AT)
        assert event.previous_status is JobStatus.IN_PROGRESS
        assert event.status is JobStatus.FAILED
        assert event.job.name == "A"

    def test_case_only_change_is_no_change(self) -> None:
        """Statuses differing only in case are the same status."""
        before = snapshots(job("a", "Paused"))
        assert diff_jobs(before, [job("a", "PAUSED")], AT) == []

    def test_vanished_job_is_silent(self) -> None:
        """A job missing from the new list is not a change (the window moved on)."""
        assert diff_jobs(snapshots(job("a", "InProgress")), [], AT) == []

    def test_duplicate_listing_last_wins(self) -> None:
        """A job listed twice yields one event, for its last occurrence."""
        events = diff_jobs(
            {}, [job("a", "InProgress"), job("b", "Failed"), job("a", "Completed")], AT
        )
        assert [(e.job.name, str(e.status)) for e in events] == [
            ("a", "Completed"),
            ("b", "Failed"),
        ]

    def test_exhaustive_match(self) -> None:
        """Consumers can match the closed union exhaustively."""
        for event in diff_jobs({}, [job("a", "Failed")], AT):
            match event:
                case JobStateChanged(previous_status=None):
                    assert event.kind == "backup_job.state_changed"
                case JobStateChanged():
                    raise AssertionError("not a first sighting")
                case _:
                    assert_never(event)


class TestEventId:
    def test_documented_bytes(self) -> None:
        """event_id hashes lower(vault)|lower(job)|status in UTF-8 and keeps 32 hex chars."""
        expected = hashlib.sha256(
            f"{p.VAULT_ID.lower()}|7ddead57-x|Completed".encode()
        ).hexdigest()[:32]
        assert event_id(p.VAULT_ID, "7DDEAD57-X", JobStatus.COMPLETED) == expected
        assert event_id(p.VAULT_ID, "7DDEAD57-X", "Completed") == expected
        assert len(expected) == 32
        assert int(expected, 16) >= 0

    def test_event_property_matches(self) -> None:
        """An event's id is independent of the id casing ARM used."""
        (event,) = diff_jobs({}, [job("ABC", "completed")], AT)
        assert event.event_id == event_id(p.VAULT_ID_LOWER_PROVIDER, "abc", "Completed")

    def test_differs_by_status(self) -> None:
        """Two transitions of one job have different ids."""
        assert event_id("v", "j", "InProgress") != event_id("v", "j", "Completed")


jobs_lists = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "D", "d", "e"]), st.sampled_from(STATUSES)),
    max_size=10,
)


def build(pairs: list[tuple[str, str]]) -> list[BackupJob]:
    return [job(guid, status) for guid, status in pairs]


class TestDiffProperties:
    @settings(max_examples=150, deadline=None)
    @given(jobs_lists, jobs_lists)
    def test_replay_turns_before_into_after(
        self, old: list[tuple[str, str]], new: list[tuple[str, str]]
    ) -> None:
        """apply(before, diff(before, after)) has the statuses of before updated by after."""
        before = snapshots(*build(old))
        after = build(new)
        events: list[JobEvent] = diff_jobs(before, after, AT)
        replayed = apply(before, events)
        expected = {k: s.status for k, s in before.items()}
        expected.update({j.key: j.status for j in after})
        assert {k: s.status for k, s in replayed.items()} == expected
        assert diff_jobs(replayed, after, AT) == []

    @settings(max_examples=150, deadline=None)
    @given(jobs_lists, jobs_lists)
    def test_events_only_for_changes_at_most_one_per_job(
        self, old: list[tuple[str, str]], new: list[tuple[str, str]]
    ) -> None:
        """Every event is a real change, and no job gets two events from one diff."""
        before = snapshots(*build(old))
        events = diff_jobs(before, build(new), AT)
        keys = [e.job.key for e in events]
        assert len(keys) == len(set(keys))
        for event in events:
            known = before.get(event.job.key)
            assert event.previous_status == (None if known is None else known.status)
            assert event.previous_status != event.status
