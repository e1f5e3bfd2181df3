"""Tests of the pure job diff in monitor.core.diff."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import assert_never

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.diff import (
    JobEvent,
    JobSnapshot,
    JobStateChanged,
    JobTable,
    apply,
    diff_jobs,
    event_id,
)
from monitor.core.jobs import (
    BackupJob,
    JobKey,
    JobsPage,
    JobStatus,
    jobs_of,
    listed_jobs,
    parse_jobs_page,
)
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


# ---------------------------------------------------------------------------- JobTable

TABLE_VAULTS = ["/subscriptions/s/resourcegroups/r/providers/x/vaults/v1", "/v2"]
TABLE_STATUSES = [
    JobStatus.IN_PROGRESS,
    JobStatus.CANCELLING,
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus("completed"),  # terminal, not the canonical object: kept as a snapshot
    JobStatus.of("Paused"),
]
# Names of both kinds a table keeps: lower-case GUIDs (packed end to end in one string) and
# anything else (an upper-case GUID, one of another length, a plain word, near-GUIDs).
TABLE_NAMES = [
    "a",
    "b",
    "c",
    "00000000-0000-4000-8000-000000000000",
    "7ddead57-0000-4000-8000-000000000001",
    "7ddead57-0000-4000-8000-000000000002",
    "ffffffff-ffff-4fff-bfff-ffffffffffff",
    "7DDEAD57-0000-4000-8000-000000000001",
    "7ddead57-0000-4000-8000-0000000000011",
    "7ddead57-0000-4000-8000_000000000001",
    "+ddead57-0000-4000-8000-000000000001",
    "7ddead57-0000-4000-8000-00000000000g",
    "7dDead57-0000-4000-8000-000000000001",
    " ddead57-0000-4000-8000-000000000001",
]
table_keys = st.builds(
    lambda vault, name: JobKey(vault_key=vault, job_name=name),
    st.sampled_from(TABLE_VAULTS),
    st.sampled_from(TABLE_NAMES),
)
# Whole and fractional seconds, before 1970 too; UTC, another zone, naive, or none.
table_starts = st.none() | st.builds(
    lambda us, zone: datetime(2026, 12, 3, tzinfo=zone) + timedelta(microseconds=us),
    st.integers(-(2 * 10**16), 10**12) | st.sampled_from([0, 1, -1, 999_999]),
    st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(0), "Z")]),
)
table_snapshots = st.builds(
    lambda key, status, start: JobSnapshot(key=key, status=status, start_at=start),
    table_keys,
    st.sampled_from(TABLE_STATUSES),
    table_starts,
)
table_steps = st.lists(
    st.tuples(st.lists(table_snapshots, max_size=6), st.lists(table_keys, max_size=3)),
    max_size=6,
)


class TestJobTable:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(table_snapshots, max_size=8), table_steps, table_keys, table_starts)
    def test_a_table_reads_as_the_dict_it_replaces(
        self,
        first: list[JobSnapshot],
        steps: list[tuple[list[JobSnapshot], list[JobKey]]],
        probe: JobKey,
        floor: datetime | None,
    ) -> None:
        """After any puts and drops, a table holds exactly what a dict of the same snapshots
        would (equal snapshots, with the same status objects and start instants), and its
        shortcuts agree with that dict; the table each step started from is left as it was."""
        table = JobTable(first)
        model = {s.key: s for s in first}
        for put, drop in steps:
            before, before_model = table, dict(model)
            table = table.replaced(put, drop)
            for snap in put:
                model[snap.key] = snap
            for key in drop:
                model.pop(key, None)
            assert dict(before.items()) == before_model
        assert dict(table.items()) == model
        assert len(table) == len(model)
        assert set(table) == set(model)
        for key, snap in model.items():
            got = table[key]
            assert got == snap
            assert got.status is snap.status
            assert got.start_at == snap.start_at
            assert table.status_of(key) is snap.status
            assert key in table
        canonical = {id(s) for s in TABLE_STATUSES[2:6]}
        for key, snap in model.items():
            if key.vault_key == table._vault_key:  # the table's vault: its ended jobs by name
                start = snap.start_at
                packed = id(snap.status) in canonical and (start is None or start.tzinfo is UTC)
                assert table.ended_status(key.job_name) is (snap.status if packed else None)
        assert (probe in table) == (probe in model)
        assert table.status_of(probe) == (model[probe].status if probe in model else None)
        assert table.get(probe) == model.get(probe)
        assert sorted(s.key.job_name + s.key.vault_key for s in table.running()) == sorted(
            k.job_name + k.vault_key for k, s in model.items() if not s.status.is_terminal
        )
        floor = AT if floor is None else floor.astimezone(UTC)
        assert set(table.ended_before(floor)) == {
            k
            for k, s in model.items()
            if s.status.is_terminal and s.start_at is not None and s.start_at < floor
        }

    @settings(max_examples=100, deadline=None)
    @given(jobs_lists, jobs_lists)
    def test_diff_against_a_table_is_the_diff_against_its_dict(
        self, old: list[tuple[str, str]], new: list[tuple[str, str]]
    ) -> None:
        """diff_jobs reads a table's statuses without making snapshots: same events."""
        before = snapshots(*build(old))
        after = build(new)
        assert diff_jobs(JobTable.of(before), after, AT) == diff_jobs(before, after, AT)

    def test_ended_jobs_named_by_guids_are_packed_and_read_back_as_named(self) -> None:
        """Lower-case GUID names go into one string end to end, any other into the dict; each
        reads back as the very characters put in, and `ended_status` finds each."""
        vault = TABLE_VAULTS[0]
        start = datetime(2026, 12, 3, tzinfo=UTC)
        snaps = [
            JobSnapshot(
                key=JobKey(vault_key=vault, job_name=n), status=JobStatus.FAILED, start_at=start
            )
            for n in TABLE_NAMES
        ]
        table = JobTable(snaps)
        guids, others = TABLE_NAMES[3:7], [*TABLE_NAMES[:3], *TABLE_NAMES[7:]]
        assert len(table._codes) == len(guids)
        assert list(table._odd) == others
        assert [k.job_name for k in table] == guids + others
        # 36 characters across two packed names: found in the string, but not where a name
        # starts, so it is no name of the table.
        straddle = table._names[18:54]
        assert straddle in table._names
        assert table.ended_status(straddle) is None
        for name in TABLE_NAMES:
            assert table.ended_status(name) is JobStatus.FAILED
        assert table.ended_status("7ddead57-0000-4000-8000-000000000003") is None
        assert table.ended_status("7ddead57-0000-4000-8000-00000000000") is None
        emptied = table.replaced((), [s.key for s in snaps])
        assert len(emptied) == 0
        assert emptied.ended_status(TABLE_NAMES[4]) is None
        assert len(table) == len(TABLE_NAMES)

    def test_an_ended_job_is_packed_with_its_start(self) -> None:
        """Ended jobs of the table's vault with a UTC start are packed; others are not."""
        start = datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC)
        keys = [JobKey(vault_key=TABLE_VAULTS[0], job_name=n) for n in "abc"]
        table = JobTable(
            [
                JobSnapshot(key=keys[0], status=JobStatus.COMPLETED, start_at=start),
                JobSnapshot(key=keys[1], status=JobStatus.FAILED, start_at=None),
                JobSnapshot(key=keys[2], status=JobStatus.IN_PROGRESS, start_at=start),
            ]
        )
        assert repr(table) == "JobTable(2 ended, 1 others)"
        assert table[keys[0]].start_at == start
        assert table.ended_before(start + timedelta(microseconds=1)) == [keys[0]]
        assert table.ended_before(start) == []


# A listing for TestKnownEndedListing: few names (so that jobs repeat, across pages and within
# one), in several spellings; statuses as ARM spells them and not; ids of the vault or not.
_NAMES = [f"7ddead57-0000-4000-8000-00000000000{i}" for i in range(4)]
_LISTED_STATUS = [*STATUSES, "Invalid", 7, None]
_OTHER_VAULT_ID = p.VAULT_ID[:-2] + "v2"
_listed_item = st.builds(
    lambda name, upper, status, other_vault, start, malformed: {
        "id": f"{_OTHER_VAULT_ID if other_vault else p.VAULT_ID}/backupJobs/{name}",
        "name": name.upper() if upper else name,
        "properties": {
            k: v
            for k, v in p.job_item(name, status=status, startTime=start)["properties"].items()
            if not (malformed and k == "jobType")
        },
    },
    st.sampled_from([*_NAMES, "7ddead57-İ"]),
    st.booleans(),
    st.sampled_from(_LISTED_STATUS),
    st.booleans(),
    st.sampled_from(["2026-11-25T10:03:17Z", "2026-11-25T09:00:00Z", "yesterday"]),
    st.booleans(),
)
_known_jobs = st.dictionaries(
    st.sampled_from([n.lower() for n in _NAMES]),
    st.tuples(
        st.sampled_from(STATUSES),
        st.sampled_from(
            [None, AT - timedelta(hours=1), AT.astimezone(timezone(timedelta(hours=2)))]
        ),
    ),
)


class TestKnownEndedListing:
    @settings(max_examples=500)
    @given(
        st.lists(st.lists(_listed_item, max_size=5), min_size=1, max_size=3),
        _known_jobs,
    )
    def test_a_listing_parsed_with_what_is_known_diffs_as_a_full_parse(
        self, pages: list[list[dict[str, object]]], known: dict[str, tuple[str, datetime | None]]
    ) -> None:
        """Ended jobs left out of a listing as known (`parse_jobs_page(known=)`, joined by
        `listed_jobs`) change nothing: the same events, in the same order, as the full parse,
        whatever repeats, spellings, foreign ids and malformed items the listing holds."""
        table = JobTable(
            JobSnapshot(
                key=JobKey(vault_key=VAULT.key, job_name=name),
                status=JobStatus.of(status),
                start_at=start,
            )
            for name, (status, start) in known.items()
        )
        payloads = [p.page(*items) for items in pages]
        full = jobs_of([parse_jobs_page(page, VAULT) for page in payloads])
        fast_pages = [parse_jobs_page(page, VAULT, table.ended_status) for page in payloads]
        fast = listed_jobs(fast_pages, lambda i: parse_jobs_page(payloads[i], VAULT))
        assert diff_jobs(table, fast, AT) == diff_jobs(table, full, AT)
        for page, items in zip(fast_pages, pages, strict=True):
            assert len(page.jobs) + len(page.skipped) + len(page.unchanged) == len(items)
            for name in page.unchanged:  # only what the table holds as ended, never another
                assert table.ended_status(name) is not None

    def test_an_unchanged_ended_job_is_not_parsed(self) -> None:
        """The steady poll's page: every ended job known with its status is left out."""
        done = job(_NAMES[0], "Completed")
        table = JobTable([JobSnapshot.of(done), JobSnapshot.of(job(_NAMES[1], "InProgress"))])
        page = parse_jobs_page(
            p.page(
                p.job_item(_NAMES[0].upper(), status="Completed"),
                p.job_item(_NAMES[1], status="InProgress"),  # running: always parsed
                p.job_item(_NAMES[2], status="Failed"),  # not known
            ),
            VAULT,
            table.ended_status,
        )
        assert page.unchanged == (_NAMES[0],)
        assert [j.name for j in page.jobs] == [_NAMES[1], _NAMES[2]]
        assert table.ended_status(_NAMES[1]) is None

    def test_a_job_listed_twice_with_another_status_is_parsed_in_full(self) -> None:
        """A page boundary that moved lists a known ended job again, once with another status:
        the whole listing is parsed again, so its last occurrence counts, as without `known`."""
        table = JobTable([JobSnapshot.of(job(_NAMES[0], "Completed"))])
        payloads = [
            p.page(p.job_item(_NAMES[0], status="Failed")),
            p.page(p.job_item(_NAMES[0], status="Completed")),
        ]
        fast_pages = [parse_jobs_page(page, VAULT, table.ended_status) for page in payloads]
        assert [page.unchanged for page in fast_pages] == [(), (_NAMES[0],)]
        reparsed: list[int] = []

        def reparse(i: int) -> JobsPage:
            reparsed.append(i)
            return parse_jobs_page(payloads[i], VAULT)

        listed = listed_jobs(fast_pages, reparse)
        assert reparsed == [0, 1]
        assert [str(j.status) for j in listed] == ["Failed", "Completed"]
        assert diff_jobs(table, listed, AT) == []
