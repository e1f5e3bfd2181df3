"""Tests of the Resource Graph query and answer parser in monitor.core.resource_graph."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.jobs import JobKey, JobStatus
from monitor.core.resource_graph import (
    BACKUP_VAULT_JOBS_TYPE,
    MAX_ROWS_PER_PAGE,
    backup_vault_jobs_query,
    parse_backup_vault_jobs_answer,
    query_body,
)
from monitor.errors import ParseError
from tests.core import payloads as rs
from tests.core.strategies import json_values
from tests.core.test_dataprotection import BV_ID, JOB_ID_PREFIX, SUB, bv_job

OTHER_BV_ID = (
    f"/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.DataProtection/backupVaults/bv2"
)
GUID_A = "43252662-1b43-44fd-a856-0055665cb097"
GUID_B = "3e3ff0a4-7b8e-4bbf-a3f7-a2d3dfd1c6b5"
GUID_C = "0d3cd9fd-c2e4-4bba-b8e3-1b2c0eacbbc2"


def row(job: dict[str, Any]) -> dict[str, Any]:
    """A job as a Resource Graph row: the same fields, `type` lower-cased."""
    return {**job, "type": job["type"].lower()}


def answer(*rows: object, **fields: object) -> dict[str, Any]:
    """An `objectArray` answer holding `rows`, with top-level field overrides."""
    payload: dict[str, Any] = {
        "totalRecords": len(rows),
        "count": len(rows),
        "resultTruncated": "false",
        "data": list(rows),
        "facets": [],
    }
    payload.update(fields)
    return payload


ROW_A = row(bv_job(GUID_A, status="Succeeded", endTime="2021-03-17T03:10:03Z"))
ROW_B = row(bv_job(GUID_B, status="InProgress"))
ROW_OTHER = {
    **row(bv_job(GUID_C, status="Failed")),
    "id": f"{OTHER_BV_ID}/backupJobs/{GUID_C}",
}


class TestQuery:
    def test_exact_text(self) -> None:
        """The KQL filters the lower-cased type and the start time, projects and orders on id."""
        since = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)
        assert backup_vault_jobs_query(since) == (
            "RecoveryServicesResources\n"
            "| where type =~ 'microsoft.dataprotection/backupvaults/backupjobs'\n"
            "| where todatetime(properties.startTime) >= datetime(2026-11-25T10:00:05Z)\n"
            "| project id, name, type, properties\n"
            "| order by id asc"
        )

    def test_whole_seconds(self) -> None:
        """Microseconds are dropped (the moment rounds down, so the query reaches no later)."""
        since = datetime(2026, 11, 25, 10, 0, 5, 999_999, tzinfo=UTC)
        assert "datetime(2026-11-25T10:00:05Z)" in backup_vault_jobs_query(since)

    @pytest.mark.parametrize("hours", [-8, -3.5, 0, 5.75, 14])
    def test_utc_from_any_timezone(self, hours: float) -> None:
        """An aware time in any zone is sent as the same UTC moment."""
        zone = timezone(timedelta(hours=hours))
        since = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC).astimezone(zone)
        assert "datetime(2026-11-25T10:00:05Z)" in backup_vault_jobs_query(since)

    def test_naive_refused(self) -> None:
        """A naive time raises ValueError: its zone would be a guess."""
        with pytest.raises(ValueError, match="timezone-aware"):
            backup_vault_jobs_query(datetime(2026, 11, 25, 10, 0))  # noqa: DTZ001 - the point

    def test_type_constant_is_lower_case(self) -> None:
        """Resource Graph lower-cases `type`; the constant matches what it stores."""
        assert BACKUP_VAULT_JOBS_TYPE.islower()

    def test_body_first_page(self) -> None:
        """The first page asks for objectArray rows, at most MAX_ROWS_PER_PAGE, no skip token."""
        body = query_body("Q", [SUB], skip_token=None)
        assert body == {
            "subscriptions": [SUB],
            "query": "Q",
            "options": {"$top": MAX_ROWS_PER_PAGE, "resultFormat": "objectArray"},
        }

    def test_body_next_page(self) -> None:
        """A later page carries the previous page's `$skipToken` and the given `$top`."""
        body = query_body("Q", [SUB, "s2"], skip_token="tok==", top=10)
        assert body["options"] == {"$top": 10, "resultFormat": "objectArray", "$skipToken": "tok=="}
        assert body["subscriptions"] == [SUB, "s2"]


class TestAnswer:
    def test_rows_of_several_vaults(self) -> None:
        """Each row's job is keyed to the vault its id names, provisional, with its status."""
        page = parse_backup_vault_jobs_answer(answer(ROW_A, ROW_B, ROW_OTHER))
        assert page.skipped == ()
        assert [job.key for job in page.jobs] == [
            JobKey(vault_key=BV_ID.lower(), job_name=GUID_A),
            JobKey(vault_key=BV_ID.lower(), job_name=GUID_B),
            JobKey(vault_key=OTHER_BV_ID.lower(), job_name=GUID_C),
        ]
        assert [job.status for job in page.jobs] == [
            JobStatus.COMPLETED,
            JobStatus.IN_PROGRESS,
            JobStatus.FAILED,
        ]
        assert all(job.provisional for job in page.jobs)
        assert page.jobs[0].resource_id == f"{JOB_ID_PREFIX}/backupJobs/{GUID_A}"
        assert (page.skip_token, page.total_records, page.truncated) == (None, 3, False)

    def test_type_in_any_casing(self) -> None:
        """The lower-cased type of a row and ARM's own casing both parse."""
        arm_cased = bv_job(GUID_A)
        lowered = row(arm_cased)
        assert lowered["type"] == BACKUP_VAULT_JOBS_TYPE
        page = parse_backup_vault_jobs_answer(answer(arm_cased, lowered))
        assert len(page.jobs) == 2
        assert page.skipped == ()

    @pytest.mark.parametrize(
        ("raw", "cut"),
        [
            ("true", True),
            ("false", False),
            ("True", True),
            ("FALSE", False),
            (True, True),
            (False, False),
        ],
    )
    def test_result_truncated(self, raw: object, cut: bool) -> None:
        """`resultTruncated` is a string ("true"/"false", any casing) or a bool."""
        assert parse_backup_vault_jobs_answer(answer(resultTruncated=raw)).truncated is cut

    def test_result_truncated_absent(self) -> None:
        """No `resultTruncated` means not truncated."""
        payload = answer()
        del payload["resultTruncated"]
        assert parse_backup_vault_jobs_answer(payload).truncated is False

    def test_skip_token_and_total(self) -> None:
        """`$skipToken` says where the next page starts; `totalRecords` is kept."""
        page = parse_backup_vault_jobs_answer(
            answer(ROW_A, **{"$skipToken": "ew0K", "totalRecords": 2500})
        )
        assert (page.skip_token, page.total_records) == ("ew0K", 2500)

    def test_empty_skip_token_is_the_last_page(self) -> None:
        """An empty `$skipToken` is no next page."""
        assert parse_backup_vault_jobs_answer(answer(**{"$skipToken": ""})).skip_token is None

    def test_no_total(self) -> None:
        """A missing `totalRecords` is None."""
        payload = answer(ROW_A)
        del payload["totalRecords"]
        assert parse_backup_vault_jobs_answer(payload).total_records is None

    @pytest.mark.parametrize(
        ("bad", "path"),
        [
            ("row", "data[1]"),
            ({k: v for k, v in ROW_B.items() if k != "id"}, "data[1].id"),
            ({**ROW_B, "id": 7}, "data[1].id"),
            ({**ROW_B, "id": f"{rs.VAULT_ID}/backupJobs/{GUID_B}"}, "data[1].id"),
            ({**ROW_B, "id": f"{BV_ID}/backupInstances/{GUID_B}"}, "data[1].id"),
            ({**ROW_B, "id": f"/subscriptions/{SUB}/backupJobs/{GUID_B}"}, "data[1].id"),
            ({**ROW_B, "name": ""}, "data[1].name"),
            ({**ROW_B, "name": "a/b"}, "data[1].name"),
            ({**ROW_B, "name": 3}, "data[1].name"),
            ({**ROW_B, "type": "microsoft.recoveryservices/vaults/backupjobs"}, "data[1].type"),
            (
                {**ROW_B, "properties": {**ROW_B["properties"], "status": ""}},
                "data[1].properties.status",
            ),
            (
                {**ROW_B, "properties": {**ROW_B["properties"], "status": 1}},
                "data[1].properties.status",
            ),
            ({**ROW_B, "properties": "x"}, "data[1].properties"),
        ],
        ids=[
            "not-object",
            "id-missing",
            "id-not-string",
            "recovery-services-job",
            "not-a-job",
            "no-vault",
            "name-empty",
            "name-unsafe",
            "name-not-string",
            "type-other",
            "status-empty",
            "status-not-string",
            "properties-not-object",
        ],
    )
    def test_malformed_row_skipped_with_its_path(self, bad: object, path: str) -> None:
        """A row that is not a Backup vault job is skipped under its path; the others parse."""
        page = parse_backup_vault_jobs_answer(answer(ROW_A, bad, ROW_OTHER))
        assert [job.name for job in page.jobs] == [GUID_A, GUID_C]
        (skipped,) = page.skipped
        assert skipped.path == path, skipped

    def test_recovery_services_job_named_as_such(self) -> None:
        """A Recovery Services job's row says it is not a Backup vault's job."""
        bad = {**ROW_B, "id": f"{rs.VAULT_ID}/backupJobs/{GUID_B}"}
        (skipped,) = parse_backup_vault_jobs_answer(answer(bad)).skipped
        assert "not a Backup vault's job" in skipped.problem

    @pytest.mark.parametrize(
        ("payload", "path"),
        [
            ([], ""),
            ("x", ""),
            (None, ""),
            ({"data": {"columns": [{"name": "id"}], "rows": [["x"]]}}, "data"),
            ({"data": {"rows": []}}, "data"),
            ({"count": 0}, "data"),
            ({"data": "x"}, "data"),
            (answer(**{"$skipToken": 5}), "$skipToken"),
            (answer(**{"$skipToken": ["t"]}), "$skipToken"),
            (answer(totalRecords=-1), "totalRecords"),
            (answer(totalRecords="3"), "totalRecords"),
            (answer(totalRecords=True), "totalRecords"),
            (answer(totalRecords=1.0), "totalRecords"),
            (answer(resultTruncated="yes"), "resultTruncated"),
            (answer(resultTruncated=1), "resultTruncated"),
            (answer(resultTruncated=None), "resultTruncated"),
        ],
    )
    def test_malformed_answer_names_its_path(self, payload: object, path: str) -> None:
        """A malformed answer raises ParseError at the field that is wrong."""
        with pytest.raises(ParseError) as caught:
            parse_backup_vault_jobs_answer(payload)
        assert caught.value.path == path

    def test_table_format_says_so(self) -> None:
        """A `table`-format answer is named as such (the query asks for objectArray)."""
        with pytest.raises(ParseError, match="table-format"):
            parse_backup_vault_jobs_answer({"data": {"columns": [], "rows": []}})

    def test_payload_not_changed(self) -> None:
        """Parsing leaves the decoded payload as it was."""
        payload = answer(ROW_A, ROW_B, "x")
        before = copy.deepcopy(payload)
        parse_backup_vault_jobs_answer(payload)
        assert payload == before


row_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(
            [
                f"{JOB_ID_PREFIX}/backupJobs/x",
                f"{OTHER_BV_ID}/backupjobs/y",
                f"{rs.VAULT_ID}/backupJobs/z",
                f"{BV_ID}/backupJobs/",
                "/backupJobs/x",
            ]
        )
        | json_values,
        "name": st.sampled_from(["x", "y", ""]) | json_values,
        "type": st.just(BACKUP_VAULT_JOBS_TYPE) | json_values,
        "properties": st.dictionaries(
            st.sampled_from(list(ROW_A["properties"])), json_values, max_size=6
        ).map(lambda extra: {**ROW_A["properties"], **extra})
        | json_values,
    },
)
answer_like = st.fixed_dictionaries(
    {"data": st.lists(row_like | json_values, max_size=4) | json_values},
    optional={
        "$skipToken": st.none() | st.text(max_size=5) | json_values,
        "totalRecords": st.integers(-2, 10**6) | json_values,
        "resultTruncated": st.sampled_from(["true", "false", "TRUE", True, False]) | json_values,
        "count": json_values,
    },
)


class TestNeverCrash:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_values | answer_like)
    def test_answer(self, payload: Any) -> None:
        """Any JSON payload parses or raises ParseError; every row is a job or skipped."""
        try:
            page = parse_backup_vault_jobs_answer(payload)
        except ParseError as exc:
            top_level = ("", "data", "$skipToken", "totalRecords", "resultTruncated")
            assert exc.path in top_level  # noqa: PT017 - a fuzz case, not one expected raise
            return
        assert len(page.jobs) + len(page.skipped) == len(payload["data"])
        assert all(skipped.path.startswith("data[") for skipped in page.skipped)
        for job in page.jobs:
            assert job.provisional
            assert job.key.vault_key in (BV_ID.lower(), OTHER_BV_ID.lower())
            job.duration_s  # noqa: B018 - parsing on access must not raise either
