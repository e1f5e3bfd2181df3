"""Tests of the Backup vault (Microsoft.DataProtection) job parsers in monitor.core.dataprotection.

The payloads are adapted from the REST spec's examples (Azure/azure-rest-api-specs,
`specification/dataprotection/.../stable/2025-09-01/examples/JobCRUD/ListJobs.json` and
`GetJob.json`): same field names and casing, other datasource types and statuses filled in.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from monitor.core.dataprotection import (
    BACKUP_VAULT_JOB_TYPE,
    BACKUP_VAULT_MANAGEMENT_TYPE,
    job_status,
    parse_backup_vault_job,
    parse_backup_vault_jobs_page,
)
from monitor.core.diff import JobSnapshot, diff_jobs
from monitor.core.jobs import BackupJob, JobAction, JobStatus, parse_jobs_page
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.core.wire import parse_duration_s
from monitor.errors import ParseError
from monitor.events import event_schema, render_event
from tests.core import payloads as rs
from tests.core.strategies import json_values

SUB = "62b829ee-7936-40c9-a1c9-47a93f9f3965"
# The examples' own casing: `Backupvaults` in job ids, `backupVaults` elsewhere.
_RG = f"/subscriptions/{SUB}/resourceGroups/BugBash1/providers/Microsoft.DataProtection"
BV_ID = f"{_RG}/backupVaults/bv1"
JOB_ID_PREFIX = f"{_RG}/Backupvaults/bv1"
VAULT = VaultRef(
    id=BV_ID, key=BV_ID.lower(), subscription_id=SUB, resource_group="BugBash1", name="bv1"
)
RESOURCE_TYPE = "Microsoft.DataProtection/Backupvaults/backupJobs"
VAULT_RS = parse_vault_id(rs.VAULT_ID)
EVENT_VALIDATOR = Draft202012Validator(
    event_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bv_job(
    guid: str,
    status: str = "Started",
    datasource_type: str = "Microsoft.DBforPostgreSQL/servers/databases",
    datasource_name: str = "bugbashdb2",
    **properties: Any,
) -> dict[str, Any]:
    """A `backupJobs` item shaped like the spec's ListJobs example, with `properties` overrides."""
    props: dict[str, Any] = {
        "activityID": "c4344fb4-7c11-43a4-8307-7ae7c7fb09b9",
        "backupInstanceFriendlyName": f"server1\\{datasource_name}",
        "backupInstanceId": f"{BV_ID}/backupInstances/28460a9d-707a-45f3-ace6-b16284c2900e",
        "dataSourceId": f"/subscriptions/{SUB}/resourceGroups/src/providers/{datasource_type}/x",
        "dataSourceLocation": "centraluseuap",
        "dataSourceName": datasource_name,
        "dataSourceSetName": "server1",
        "dataSourceType": datasource_type,
        "duration": "00:00:00",
        "isUserTriggered": False,
        "operation": "Backup",
        "operationCategory": "Backup",
        "policyId": f"{BV_ID}/backupPolicies/dailypolicy",
        "policyName": "dailypolicy",
        "progressEnabled": False,
        "sourceResourceGroup": "src",
        "sourceSubscriptionID": SUB,
        "startTime": "2021-03-17T03:00:03.7604146Z",
        "status": status,
        "subscriptionId": SUB,
        "supportedActions": [],
        "vaultName": "bv1",
    }
    props.update(properties)
    for key in [k for k, v in props.items() if v is _ABSENT]:
        del props[key]
    return {
        "name": guid,
        "type": RESOURCE_TYPE,
        "id": f"{JOB_ID_PREFIX}/backupJobs/{guid}",
        "properties": props,
    }


_ABSENT: Any = object()  # a property override that removes the property

DISK_SUCCEEDED = bv_job(
    "43252662-1b43-44fd-a856-0055665cb097",
    status="Succeeded",
    datasource_type="Microsoft.Compute/disks",
    datasource_name="disk-os-01",
    activityID=(
        "94052cf1-a47f-4c1b-93e7-79e07b2bd008-Tue Mar 17 2021 11:11:48 GMT+0530"
        " (India Standard Time)-Ibz"
    ),
    startTime="2021-03-17T11:11:50.5595259Z",
    duration="00:02:11.9724387",
    endTime="2021-03-17T11:14:02.5319646Z",
    isUserTriggered=True,
    supportedActions=[""],
)
BLOB_RUNNING = bv_job(
    "8989416e-7573-4836-8cf1-0e90954f1002",
    status="InProgress",
    datasource_type="Microsoft.Storage/storageAccounts/blobServices",
    datasource_name="stacct01",
    duration="PT2M3S",
    endTime=None,
)
PG_STARTED = bv_job("3c60cb49-63e8-4b21-b9bd-26277b3fdfae")
MYSQL_FAILED = bv_job(
    "ad218c05-242a-47c2-b7b7-c16bd0f8870c",
    status="Failed",
    datasource_type="Microsoft.DBforMySQL/flexibleServers",
    datasource_name="mysql-flex-01",
    duration="1.02:03:04",
    endTime="2021-03-18T05:03:07Z",
    supportedActions=["Retriable"],
    errorDetails=[
        {
            "code": "UserErrorMySQLServerNotReachable",
            "message": "The server is not reachable.",
            "target": "mysql-flex-01",
            "recommendedAction": ["Check the firewall rules.", ""],
            "isRetryable": True,
            "isUserError": True,
        }
    ],
)
AKS_RESTORE_WARNINGS = bv_job(
    "0b8f7a35-3e38-4bd4-9e0c-4b1f7f2f0c01",
    status="CompletedWithWarnings",
    datasource_type="Microsoft.ContainerService/managedClusters",
    datasource_name="aks-prod",
    operation="Restore",
    operationCategory="Restore",
    duration="PT1H0.5S",
    endTime="2021-03-18T06:00:00.5Z",
    restoreType="AlternateLocation",
)
PG_FLEX_CANCELLED = bv_job(
    "5d2b8c11-1a22-4b33-8c44-5d6e7f801234",
    status="Cancelled",
    datasource_type="Microsoft.DBforPostgreSQL/flexibleServers",
    datasource_name="pg-flex-01",
    operation=_ABSENT,
    operationCategory="Backup",
    endTime="2021-03-18T07:00:00Z",
)
DISK_PAUSED = bv_job(
    "6e3c9d22-2b33-4c44-9d55-6e7f80912345",
    status="Paused",
    datasource_type="Microsoft.Compute/disks",
    datasource_name="disk-data-02",
)
# Only what an item needs: everything optional absent.
MINIMAL = {
    "name": "7f4dae33-3c44-4d55-ae66-7f8091a23456",
    "id": f"{JOB_ID_PREFIX}/backupJobs/7f4dae33-3c44-4d55-ae66-7f8091a23456",
    "properties": {"status": "Completed"},
}
ALL_ITEMS = [
    DISK_SUCCEEDED,
    BLOB_RUNNING,
    PG_STARTED,
    MYSQL_FAILED,
    AKS_RESTORE_WARNINGS,
    PG_FLEX_CANCELLED,
    DISK_PAUSED,
    MINIMAL,
]

GET_JOB = bv_job(
    "3c60cb49-63e8-4b21-b9bd-26277b3fdfae",
    extendedInfo={
        "additionalDetails": {
            "PolicyRuleName": "BackupWeekly",
            "RetentionTag": "Default",
            "TaskId": "c4344fb4-7c11-43a4-8307-7ae7c7fb09b9",
        },
        "subTasks": [
            {"taskId": 1, "taskName": "Trigger Backup", "taskStatus": "Started"},
            {
                "taskId": 2,
                "taskName": "Transfer Data",
                "taskStatus": "Succeeded",
                "taskProgress": "100",
                "duration": "00:01:02.5",
            },
        ],
        "dataTransferredInBytes": 1024,
    },
)


def page(*items: dict[str, Any], next_link: object = None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": [copy.deepcopy(i) for i in items]}
    if next_link is not None:
        body["nextLink"] = next_link
    return body


def only_job(item: dict[str, Any]) -> BackupJob:
    parsed = parse_backup_vault_jobs_page(page(item), VAULT)
    assert parsed.skipped == ()
    assert len(parsed.jobs) == 1
    return parsed.jobs[0]


class TestExamples:
    def test_disk_succeeded_timespan(self) -> None:
        job = only_job(DISK_SUCCEEDED)
        assert job.name == "43252662-1b43-44fd-a856-0055665cb097"
        assert job.key.vault_key == VAULT.key
        assert job.key.job_name == job.name
        assert job.resource_id == DISK_SUCCEEDED["id"]
        assert job.job_type == BACKUP_VAULT_JOB_TYPE == "AzureBackupJob"
        assert job.backup_management_type == BACKUP_VAULT_MANAGEMENT_TYPE == "AzureBackupVault"
        assert job.operation == "Backup"
        assert job.entity == "disk-os-01"
        assert job.status is JobStatus.COMPLETED
        assert job.status.outcome == "succeeded"
        assert job.start_at == datetime(2021, 3, 17, 11, 11, 50, 559525, tzinfo=UTC)
        assert job.end_at == datetime(2021, 3, 17, 11, 14, 2, 531964, tzinfo=UTC)
        assert job.duration_raw == "00:02:11.9724387"
        assert job.duration_s == pytest.approx(131.9724387)
        assert job.actions == ()  # [""] drops its empty string
        assert job.activity_id is not None
        assert job.activity_id.endswith("-Ibz")
        assert job.datasource_type == "Microsoft.Compute/disks"
        assert job.datasource_name == "disk-os-01"
        assert job.backup_instance == "server1\\disk-os-01"
        assert job.backup_instance_id is not None
        assert job.backup_instance_id.endswith(
            "/backupInstances/28460a9d-707a-45f3-ace6-b16284c2900e"
        )
        assert job.datasource_id is not None
        assert "Microsoft.Compute/disks" in job.datasource_id
        assert job.policy_name == "dailypolicy"
        assert job.properties["sourceSubscriptionID"] == SUB  # unknown properties are kept

    def test_blob_running_iso_duration_null_end(self) -> None:
        job = only_job(BLOB_RUNNING)
        assert job.status is JobStatus.IN_PROGRESS
        assert not job.status.is_terminal
        assert job.end_at is None
        assert job.duration_s == 123.0
        assert job.datasource_type == "Microsoft.Storage/storageAccounts/blobServices"

    def test_postgres_started_is_in_progress(self) -> None:
        job = only_job(PG_STARTED)
        assert job.status is JobStatus.IN_PROGRESS
        assert job.duration_s == 0.0
        assert job.datasource_type == "Microsoft.DBforPostgreSQL/servers/databases"

    def test_mysql_failed_days_timespan(self) -> None:
        job = only_job(MYSQL_FAILED)
        assert job.status is JobStatus.FAILED
        assert job.status.outcome == "failed"
        assert job.duration_s == 93784.0
        assert job.actions == (JobAction.RETRIABLE,)
        assert job.entity == "mysql-flex-01"

    def test_aks_restore(self) -> None:
        job = only_job(AKS_RESTORE_WARNINGS)
        assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
        assert job.operation == "Restore"
        assert job.duration_s == pytest.approx(3600.5)
        assert job.datasource_type == "Microsoft.ContainerService/managedClusters"
        assert job.properties["restoreType"] == "AlternateLocation"

    def test_operation_falls_back_to_its_category(self) -> None:
        job = only_job(PG_FLEX_CANCELLED)
        assert job.operation == "Backup"
        assert job.status is JobStatus.CANCELLED

    def test_paused_is_kept_unknown_and_not_terminal(self) -> None:
        job = only_job(DISK_PAUSED)
        assert job.status == JobStatus.of("Paused")
        assert str(job.status) == "Paused"
        assert not job.status.is_terminal
        assert job.status.outcome is None

    def test_minimal_item(self) -> None:
        job = only_job(MINIMAL)
        assert job.status is JobStatus.COMPLETED
        assert job.operation == ""
        assert job.entity is None
        assert job.start_at is None
        assert job.end_at is None
        assert job.duration_raw is None
        assert job.duration_s is None
        assert job.actions == ()
        assert job.activity_id is None
        assert job.datasource_type is job.policy_name is job.backup_instance is None
        assert job.job_type == BACKUP_VAULT_JOB_TYPE

    def test_entity_falls_back_to_the_instance_name(self) -> None:
        job = only_job(bv_job("8a5ebf44-4d55-4e66-bf77-8091a2b34567", dataSourceName=_ABSENT))
        assert job.entity == "server1\\bugbashdb2"

    def test_whole_page_and_next_link(self) -> None:
        link = "https://management.azure.com/x?api-version=2025-09-01&skiptoken=abc"
        parsed = parse_backup_vault_jobs_page(page(*ALL_ITEMS, next_link=link), VAULT)
        assert parsed.skipped == ()
        assert [j.name for j in parsed.jobs] == [i["name"] for i in ALL_ITEMS]
        assert parsed.next_link == link
        assert parsed.has_next_page

    def test_rs_snapshots_are_unchanged(self) -> None:
        """Recovery Services jobs still leave the Backup vault fields None."""
        job = parse_jobs_page(rs.page(rs.IAAS_COMPLETED), VAULT_RS).jobs[0]
        assert job.datasource_type is job.datasource_name is job.datasource_id is None
        assert job.backup_instance is job.backup_instance_id is job.policy_name is None

    def test_tracker_diff_sees_a_state_change(self) -> None:
        """The snapshots feed core.diff like Recovery Services ones."""
        before = only_job(PG_STARTED)
        after = only_job(
            bv_job(PG_STARTED["name"], status="Succeeded", endTime="2021-03-17T04:00:00Z")
        )
        moment = datetime(2021, 3, 17, 4, 0, tzinfo=UTC)
        (first,) = diff_jobs({}, [before], moment)
        assert first.is_first_sighting
        known = {before.key: JobSnapshot.of(before)}
        assert diff_jobs(known, [before], moment) == []
        (event,) = diff_jobs(known, [after], moment)
        assert event.previous_status is JobStatus.IN_PROGRESS
        assert event.status is JobStatus.COMPLETED


class TestStatus:
    @pytest.mark.parametrize(
        ("raw", "want"),
        [
            ("Started", JobStatus.IN_PROGRESS),
            ("started", JobStatus.IN_PROGRESS),
            ("InProgress", JobStatus.IN_PROGRESS),
            ("Succeeded", JobStatus.COMPLETED),
            ("SUCCEEDED", JobStatus.COMPLETED),
            ("Completed", JobStatus.COMPLETED),
            ("Failed", JobStatus.FAILED),
            ("Cancelled", JobStatus.CANCELLED),
            ("CompletedWithWarnings", JobStatus.COMPLETED_WITH_WARNINGS),
            ("Cancelling", JobStatus.CANCELLING),
        ],
    )
    def test_both_vocabularies(self, raw: str, want: JobStatus) -> None:
        assert job_status(raw) is want

    @pytest.mark.parametrize("raw", ["Paused", "Queued", "Canceled"])
    def test_unknown_kept_verbatim(self, raw: str) -> None:
        status = job_status(raw)
        assert not status.is_known
        assert status.value == raw


class TestMalformedItems:
    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda i: i.pop("name"), "name"),
            (lambda i: i.update(name=""), "name"),
            (lambda i: i.update(name="a/b"), "name"),
            (lambda i: i.pop("id"), "id"),
            (lambda i: i.update(id=i["id"].replace("bv1", "bv2")), "id"),
            (lambda i: i.update(id=f"{rs.VAULT_ID}/backupJobs/{i['name']}"), "id"),
            (lambda i: i.update(type="Microsoft.RecoveryServices/vaults/backupJobs"), "type"),
            (lambda i: i.update(type=3), "type"),
            (lambda i: i.update(properties=[]), "properties"),
            (lambda i: i["properties"].pop("status"), "properties.status"),
            (lambda i: i["properties"].update(status=1), "properties.status"),
            (lambda i: i["properties"].update(startTime="yesterday"), "properties.startTime"),
            (lambda i: i["properties"].update(endTime=5), "properties.endTime"),
            (lambda i: i["properties"].update(duration=12), "properties.duration"),
            (lambda i: i["properties"].update(supportedActions="x"), "properties.supportedActions"),
            (
                lambda i: i["properties"].update(supportedActions=[1]),
                "properties.supportedActions[0]",
            ),
            (lambda i: i["properties"].update(dataSourceType=[]), "properties.dataSourceType"),
            (lambda i: i["properties"].update(operation={}), "properties.operation"),
            (lambda i: i["properties"].update(activityID=7), "properties.activityID"),
        ],
    )
    def test_item_skipped_with_path_rest_kept(self, mutate: Any, path: str) -> None:
        bad = copy.deepcopy(PG_STARTED)
        mutate(bad)
        parsed = parse_backup_vault_jobs_page(page(DISK_SUCCEEDED, bad, MYSQL_FAILED), VAULT)
        assert [e.path for e in parsed.skipped] == [f"value[1].{path}"]
        assert [j.name for j in parsed.jobs] == [DISK_SUCCEEDED["name"], MYSQL_FAILED["name"]]

    def test_non_object_item(self) -> None:
        parsed = parse_backup_vault_jobs_page(page(DISK_SUCCEEDED) | {"value": [3]}, VAULT)
        assert [e.path for e in parsed.skipped] == ["value[0]"]

    def test_type_and_id_in_any_casing_are_kept(self) -> None:
        item = copy.deepcopy(PG_STARTED)
        item["type"] = RESOURCE_TYPE.upper()
        item["id"] = item["id"].upper().replace("BACKUPJOBS/", "backupJobs/")
        assert only_job(item).status is JobStatus.IN_PROGRESS

    def test_missing_type_is_accepted(self) -> None:
        item = copy.deepcopy(PG_STARTED)
        del item["type"]
        only_job(item)

    def test_garbage_duration_is_none_not_an_error(self) -> None:
        assert only_job(bv_job(PG_STARTED["name"], duration="soon")).duration_s is None

    @pytest.mark.parametrize(
        "payload",
        [None, [], "x", {}, {"value": {}}, {"value": [], "nextLink": 3}],
    )
    def test_bad_page_raises(self, payload: object) -> None:
        with pytest.raises(ParseError):
            parse_backup_vault_jobs_page(payload, VAULT)


class TestJobRead:
    def test_get_job_example(self) -> None:
        details = parse_backup_vault_job(copy.deepcopy(GET_JOB), VAULT)
        assert details.skipped == ()
        assert details.job.name == "3c60cb49-63e8-4b21-b9bd-26277b3fdfae"
        assert details.job.status is JobStatus.IN_PROGRESS
        assert [(t.name, t.status) for t in details.tasks] == [
            ("Trigger Backup", JobStatus.IN_PROGRESS),
            ("Transfer Data", JobStatus.COMPLETED),
        ]
        assert details.tasks[0].duration_s is None
        assert details.tasks[0].progress_percentage is None
        assert details.tasks[1].duration_s == 62.5
        assert details.tasks[1].progress_percentage == 100.0
        assert details.property_bag == {
            "PolicyRuleName": "BackupWeekly",
            "RetentionTag": "Default",
            "TaskId": "c4344fb4-7c11-43a4-8307-7ae7c7fb09b9",
        }
        assert details.errors == ()
        assert details.progress_percentage is details.estimated_remaining_s is None

    def test_errors(self) -> None:
        details = parse_backup_vault_job(copy.deepcopy(MYSQL_FAILED), VAULT)
        (error,) = details.errors
        assert error.code == "UserErrorMySQLServerNotReachable"
        assert error.message == "The server is not reachable."
        assert error.recommendations == ("Check the firewall rules.",)
        assert error.additional_details == "mysql-flex-01"
        assert details.tasks == ()
        assert details.property_bag == {}

    def test_malformed_parts_are_dropped_with_their_path(self) -> None:
        item = copy.deepcopy(GET_JOB)
        props = item["properties"]
        props["errorDetails"] = [{"code": 5}, "x", {"message": "ok", "recommendedAction": 3}]
        props["extendedInfo"]["subTasks"].append({"taskId": 3})
        props["extendedInfo"]["subTasks"].append({"taskName": "t", "taskStatus": 1})
        props["extendedInfo"]["additionalDetails"]["n"] = 4
        details = parse_backup_vault_job(item, VAULT)
        assert [e.path for e in details.skipped] == [
            "properties.errorDetails[0].code",
            "properties.errorDetails[1]",
            "properties.errorDetails[2].recommendedAction",
            "properties.extendedInfo.subTasks[2].taskName",
            "properties.extendedInfo.subTasks[3].taskStatus",
            "properties.extendedInfo.additionalDetails['n']",
        ]
        assert len(details.tasks) == 2

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda p: p.update(errorDetails={}), "properties.errorDetails"),
            (lambda p: p.update(extendedInfo=[]), "properties.extendedInfo"),
            (lambda p: p["extendedInfo"].update(subTasks={}), "properties.extendedInfo.subTasks"),
            (
                lambda p: p["extendedInfo"].update(additionalDetails=[]),
                "properties.extendedInfo.additionalDetails",
            ),
        ],
    )
    def test_wrong_shapes_are_reported(self, mutate: Any, path: str) -> None:
        item = copy.deepcopy(GET_JOB)
        mutate(item["properties"])
        assert [e.path for e in parse_backup_vault_job(item, VAULT).skipped] == [path]

    def test_malformed_job_raises_with_path(self) -> None:
        item = copy.deepcopy(GET_JOB)
        item["properties"]["status"] = None
        with pytest.raises(ParseError) as info:
            parse_backup_vault_job(item, VAULT)
        assert info.value.path == "properties.status"


class TestDurations:
    @pytest.mark.parametrize(
        ("timespan", "iso"),
        [
            ("00:02:03.1234567", "PT2M3.1234567S"),
            ("1.02:03:04", "P1DT2H3M4S"),
            ("00:00:00", "PT0S"),
            ("23:59:59", "PT23H59M59S"),
        ],
    )
    def test_forms_agree(self, timespan: str, iso: str) -> None:
        assert parse_duration_s(timespan) == pytest.approx(parse_duration_s(iso))

    @given(
        st.integers(0, 9999),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 9_999_999),
    )
    def test_timespan_and_iso_agree(self, d: int, h: int, m: int, s: int, ticks: int) -> None:
        timespan = f"{d}.{h:02d}:{m:02d}:{s:02d}.{ticks:07d}"
        iso = f"P{d}DT{h}H{m}M{s}.{ticks:07d}S"
        want = d * 86400 + h * 3600 + m * 60 + s + ticks / 10**7
        assert parse_duration_s(timespan) == pytest.approx(want)
        assert parse_duration_s(iso) == pytest.approx(want)
        job = only_job(bv_job(PG_STARTED["name"], duration=timespan))
        assert job.duration_s == pytest.approx(want)


def _set_path(doc: Any, path: list[Any], value: Any) -> Any:
    """`doc` with the value at `path` (keys and indexes, wrapped to fit) replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and doc:
        key = sorted(doc)[head % len(doc)] if isinstance(head, int) else head
        doc[key] = _set_path(doc.get(key), rest, value)
    elif isinstance(doc, list) and doc:
        index = head % len(doc) if isinstance(head, int) else 0
        doc[index] = _set_path(doc[index], rest, value)
    return doc


_STEPS = st.integers(min_value=0, max_value=40) | st.sampled_from(["properties", "extendedInfo"])
mutated_pages = st.builds(
    lambda items, path, value: _set_path(page(*items), path, value),
    st.lists(st.sampled_from([*ALL_ITEMS, GET_JOB]), min_size=1, max_size=4),
    st.lists(_STEPS, max_size=5),
    json_values,
)
mutated_jobs = st.builds(
    lambda item, path, value: _set_path(copy.deepcopy(item), path, value),
    st.sampled_from([*ALL_ITEMS, GET_JOB]),
    st.lists(_STEPS, max_size=5),
    json_values,
)
# Job-shaped JSON: the right keys with arbitrary values, so the parser reaches inner branches.
_KEYS = st.sampled_from(sorted({k for i in [*ALL_ITEMS, GET_JOB] for k in i["properties"]}))
job_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just(f"{JOB_ID_PREFIX}/backupJobs/x") | json_values,
        "name": st.just("x") | json_values,
        "type": st.just(RESOURCE_TYPE) | json_values,
        "properties": st.dictionaries(_KEYS, json_values, max_size=8) | json_values,
    },
)


class TestNeverCrash:
    """Whatever ARM answers, parsing raises ParseError or returns; it never raises anything else."""

    @FUZZ
    @given(json_values | mutated_pages | st.lists(job_like, max_size=4).map(lambda v: {"value": v}))
    def test_page(self, payload: Any) -> None:
        try:
            result = parse_backup_vault_jobs_page(payload, VAULT)
        except ParseError:
            return
        for skipped in result.skipped:
            assert isinstance(skipped, ParseError)
            assert skipped.path.startswith("value[")
        assert len(result.jobs) + len(result.skipped) == len(payload["value"])
        for job in result.jobs:
            assert job.key.vault_key == VAULT.key
            assert job.job_type == BACKUP_VAULT_JOB_TYPE

    @FUZZ
    @given(json_values | mutated_jobs | job_like)
    def test_job_read(self, payload: Any) -> None:
        try:
            details = parse_backup_vault_job(payload, VAULT)
        except ParseError:
            return
        assert all(isinstance(e, ParseError) for e in details.skipped)
        details.job.duration_s  # noqa: B018 - parsing on access must not raise either


class TestRoundTrip:
    @given(
        guid=st.uuids().map(str),
        status=st.sampled_from(
            ["Started", "Succeeded", "InProgress", "Completed", "Failed", "Cancelled", "Paused"]
        ),
        datasource=st.sampled_from(
            [
                "Microsoft.Compute/disks",
                "Microsoft.Storage/storageAccounts/blobServices",
                "Microsoft.DBforPostgreSQL/servers/databases",
                "Microsoft.DBforMySQL/flexibleServers",
                "Microsoft.ContainerService/managedClusters",
            ]
        ),
        name=st.text(min_size=1, max_size=20),
        seconds=st.integers(0, 10**6),
        start=st.datetimes(
            min_value=datetime(2002, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
            max_value=datetime(2100, 1, 1),  # noqa: DTZ001
            timezones=st.just(UTC),
        ),
        ended=st.booleans(),
    )
    def test_key_fields(
        self,
        guid: str,
        status: str,
        datasource: str,
        name: str,
        seconds: int,
        start: datetime,
        ended: bool,
    ) -> None:
        """Every parsed job gives back the fields it was built from."""
        d, rem = divmod(seconds, 86400)
        timespan = f"{d}.{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}"
        end = start.isoformat() if ended else None
        item = bv_job(
            guid.upper(),
            status=status,
            datasource_type=datasource,
            datasource_name=name,
            duration=timespan,
            startTime=start.isoformat().replace("+00:00", "Z"),
            endTime=end,
        )
        job = only_job(item)
        assert job.name == guid.upper()
        assert job.key.job_name == guid.lower()
        assert job.resource_id == item["id"]
        assert job.status == job_status(status)
        assert job.entity == name == job.datasource_name
        assert job.datasource_type == datasource
        assert job.start_at == start
        assert job.end_at == (start if ended else None)
        assert job.duration_s == seconds
        assert job.properties == item["properties"]


class TestEvents:
    """A Backup vault job renders to a schema v1 event like a Recovery Services one."""

    @pytest.mark.parametrize("item", [*ALL_ITEMS, GET_JOB], ids=lambda i: str(i["name"])[:8])
    def test_rendered_events_validate(self, item: dict[str, Any]) -> None:
        details = parse_backup_vault_job(copy.deepcopy(item), VAULT)
        moment = datetime(2021, 3, 18, 8, 0, tzinfo=UTC)
        (change,) = diff_jobs({}, [details.job], moment)
        for with_details in (None, details):
            event = render_event(change, vault=VAULT, details=with_details, emitted_at=moment)
            EVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(event)))
            job = event["job"]
            assert isinstance(job, dict)
            assert job["type"] == BACKUP_VAULT_JOB_TYPE
            assert job["backup_management_type"] == BACKUP_VAULT_MANAGEMENT_TYPE
            assert job["status"] == details.job.status.value
