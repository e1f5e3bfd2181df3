"""Tests of event rendering against the shipped schema, the CloudEvents envelope and the sinks."""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import hashlib
import io
import os
import tomllib
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource
from structlog.testing import capture_logs

from monitor.config import EventsSettings, Settings
from monitor.core.dataprotection import parse_backup_vault_job
from monitor.core.diff import JobStateChanged, diff_jobs, event_id
from monitor.core.jobs import (
    BackupJob,
    JobDetails,
    JobError,
    JobKey,
    JobStatus,
    JobTask,
    parse_job_details,
    parse_jobs_page,
)
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.errors import SinkError, StartupError
from monitor.events import (
    EmittedEvent,
    cloudevent_schema,
    encode_events,
    event_schema,
    format_event_time,
    render_event,
    to_cloudevent,
)
from monitor.metrics import Metrics
from monitor.outbox import EventLine, OutboxEvent
from monitor.sinks import FileSink, StdoutSink, build_line_sink
from tests.core import payloads as p
from tests.tmpfs import PAGE, fill, mounted_tmpfs, set_append_only

REPO = Path(__file__).resolve().parent.parent
EVENT_SCHEMA = event_schema()
REGISTRY: Registry[Any] = Registry().with_resource(
    EVENT_SCHEMA["$id"], Resource.from_contents(EVENT_SCHEMA)
)
EVENT_VALIDATOR = Draft202012Validator(
    EVENT_SCHEMA, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
)
CLOUDEVENT_VALIDATOR = Draft202012Validator(
    cloudevent_schema(), registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
)
TOP_KEYS = ["schema_version", "event", "event_id", "time", "job", "vault"]
JOB_KEYS = [
    "id",
    "resource_id",
    "type",
    "operation",
    "backup_management_type",
    "entity",
    "status",
    "previous_status",
    "outcome",
    "start_time",
    "end_time",
    "duration_s",
    "datasource_type",
    "datasource_name",
    "datasource_id",
    "backup_instance",
    "backup_instance_id",
    "policy_name",
    "protected_item_id",
]
VAULT_KEYS = ["id", "name", "resource_group", "subscription_id", "location", "kind", "tenant_id"]
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DETAIL_KEYS = ["errors", "tasks", "properties"]
VAULT = dataclasses.replace(parse_vault_id(p.VAULT_ID, location="westeurope"), tenant_id=TENANT)
EMITTED_AT = datetime(2026, 11, 25, 10, 23, 42, 604_999, tzinfo=UTC)

BV_VAULT_ID = (
    f"/subscriptions/{p.SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/"
    "backupVaults/bv1"
)
BV_VAULT = dataclasses.replace(parse_vault_id(BV_VAULT_ID, location="westeurope"), tenant_id=TENANT)
BV_DISK = f"/subscriptions/{p.SUB}/resourceGroups/rg-disks/providers/Microsoft.Compute/disks/d1"
BV_JOB_NAME = "43252662-1b43-44fd-a856-0055665cb097"
BV_FAILED_JOB: dict[str, Any] = {
    # The spec's GetJob example's shape (Microsoft.DataProtection, AzureBackupJobResource).
    "id": f"{BV_VAULT_ID}/backupJobs/{BV_JOB_NAME}",
    "name": BV_JOB_NAME,
    "type": "Microsoft.DataProtection/Backupvaults/backupJobs",
    "properties": {
        "activityID": "94052cf1-a47f-4c1b-93e7-79e07b2bd008",
        "backupInstanceFriendlyName": "disk-data-01",
        "backupInstanceId": f"{BV_VAULT_ID}/backupInstances/disk-data-01-bi",
        "dataSourceId": BV_DISK,
        "dataSourceName": "disk-data-01",
        "dataSourceType": "Microsoft.Compute/disks",
        "duration": "00:02:11.9724387",
        "endTime": "2026-11-25T10:02:15.5319646Z",
        "operation": "Backup",
        "operationCategory": "Backup",
        "policyName": "policy-disks-daily",
        "startTime": "2026-11-25T10:00:03.7604146Z",
        "status": "Failed",
        "supportedActions": [""],
        "errorDetails": [
            {
                "code": "UserErrorDiskSnapshotFailed",
                "message": "The snapshot of the disk could not be taken.",
                "recommendedAction": ["Check the snapshot resource group's permissions."],
            }
        ],
        "extendedInfo": {
            "additionalDetails": {"SnapshotResourceGroup": "rg-snapshots"},
            "subTasks": [
                {"taskId": 1, "taskName": "Take snapshot", "taskStatus": "Failed"},
                {"taskId": 2, "taskName": "Transfer data", "taskStatus": "Succeeded"},
            ],
        },
    },
}
# docs/events.md's sample line as it was before Backup vaults: no vault.kind, no datasource.
PRE_BACKUP_VAULT_LINE = (
    b'{"schema_version":1,"event":"backup_job.state_changed",'
    b'"event_id":"4a336806dd7189b715c4c68cbe1b6fdd","time":"2026-11-25T10:23:42.604Z",'
    b'"job":{"id":"7ddead57-0000-4000-8000-000000000009","resource_id":"/subscriptions/'
    b"00000000-0000-0000-0000-000000000001/resourceGroups/rg-backup/providers/"
    b'Microsoft.RecoveryServices/vaults/v1/backupJobs/7ddead57-0000-4000-8000-000000000009",'
    b'"type":"AzureIaaSVMJob","operation":"Backup","backup_management_type":"AzureIaasVM",'
    b'"entity":"vm-web-01","status":"Failed","previous_status":"InProgress","outcome":"failed",'
    b'"start_time":"2026-11-25T10:03:17.123Z","end_time":"2026-11-25T10:23:40.000Z",'
    b'"duration_s":1223.09,"errors":[{"code":"400026","message":"VM agent is unable to '
    b'communicate with the Azure Backup Service.","recommendations":["Ensure the VM agent is '
    b'running.","Check network."]}],"tasks":[{"name":"Take Snapshot","status":"Completed",'
    b'"duration_s":42.0}],"properties":{"VM Name":"vm-web-01"}},'
    b'"vault":{"id":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/'
    b'rg-backup/providers/Microsoft.RecoveryServices/vaults/v1","name":"v1",'
    b'"resource_group":"rg-backup","subscription_id":"00000000-0000-0000-0000-000000000001",'
    b'"location":"westeurope"},"detection_lag_s":2.604}'
)


def backup_vault_event() -> dict[str, object]:
    """The rendered event of BV_FAILED_JOB with its details."""
    details = parse_backup_vault_job(BV_FAILED_JOB, BV_VAULT)
    (change,) = diff_jobs({}, [details.job], EMITTED_AT)
    return render_event(change, vault=BV_VAULT, details=details, emitted_at=EMITTED_AT)


def validate(event: dict[str, object]) -> None:
    """Validate through a JSON round trip, as a consumer would see the line."""
    EVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(event)))


# --------------------------------------------------------------------------------------------
# Strategies over the core types

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)
vaults = st.builds(
    lambda sub, rg, name, casing, location: parse_vault_id(
        f"/{casing[0]}/{sub}/resourceGroups/{rg}/providers/{casing[1]}/{name}",
        location=location,
    ),
    sub=st.uuids().map(str),
    rg=NAMES,
    name=NAMES,
    casing=st.sampled_from(
        [
            ("subscriptions", "Microsoft.RecoveryServices/vaults"),
            ("Subscriptions", "microsoft.recoveryservices/vaults"),
            ("subscriptions", "Microsoft.DataProtection/backupVaults"),
            ("Subscriptions", "microsoft.dataprotection/BackupVaults"),
        ]
    ),
    location=st.none() | st.sampled_from(["westeurope", "eastus2"]),
)
STATUS_TEXT = st.sampled_from(
    [
        "InProgress",
        "Cancelling",
        "Completed",
        "CompletedWithWarnings",
        "Failed",
        "Cancelled",
        "Invalid",
        "completed",
        "FAILED",
        "Paused",
        "NotStarted",
    ]
)
# Both the canonicalising constructor and a verbatim wrap (a caller that skipped JobStatus.of).
statuses = STATUS_TEXT.flatmap(lambda s: st.sampled_from([JobStatus.of(s), JobStatus(s)]))
times = st.datetimes(
    min_value=datetime(2002, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
DURATIONS = st.sampled_from(
    [None, "PT12.4272909S", "00:20:23.0896697", "1.02:03:04.5", "P1DT2H", "x"]
)
texts = st.text(max_size=20)


@st.composite
def changes(draw: st.DrawFn) -> tuple[JobStateChanged, VaultRef, JobDetails | None, datetime]:
    vault = draw(vaults)
    name = draw(st.uuids().map(str) | NAMES)
    job = BackupJob(
        key=JobKey(vault_key=vault.key, job_name=name.lower()),
        name=name,
        resource_id=f"{vault.id}/backupJobs/{name}",
        job_type=draw(st.sampled_from(["AzureIaaSVMJob", "AzureWorkloadJob", "AzureFutureJob"])),
        operation=draw(st.sampled_from(["", "Backup", "Backup (Full)"]) | texts),
        backup_management_type=draw(st.none() | st.sampled_from(["AzureIaasVM", "MAB"])),
        entity=draw(st.none() | texts),
        status=draw(statuses),
        start_at=draw(st.none() | times),
        end_at=draw(st.none() | times),
        duration_raw=draw(DURATIONS),
        actions=(),
        activity_id=None,
        properties={},
        datasource_type=draw(st.none() | st.sampled_from(["Microsoft.Compute/disks"]) | texts),
        datasource_name=draw(st.none() | texts),
        datasource_id=draw(st.none() | texts),
        backup_instance=draw(st.none() | texts),
        backup_instance_id=draw(st.none() | texts),
        policy_name=draw(st.none() | texts),
    )
    change = JobStateChanged(
        vault_key=vault.key,
        job=job,
        previous_status=draw(st.none() | statuses),
        observed_at=draw(times),
    )
    details = draw(
        st.none()
        | st.builds(
            JobDetails,
            job=st.just(job),
            errors=st.lists(
                st.builds(
                    JobError,
                    code=st.none() | texts,
                    message=st.none() | texts,
                    title=st.none() | texts,
                    recommendations=st.lists(texts, max_size=3).map(tuple),
                ),
                max_size=3,
            ).map(tuple),
            tasks=st.lists(
                st.builds(
                    JobTask,
                    name=texts,
                    status=st.none() | statuses,
                    start_at=st.none() | times,
                    end_at=st.none() | times,
                    duration_s=st.none()
                    | st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
                ),
                max_size=3,
            ).map(tuple),
            property_bag=st.dictionaries(texts, texts, max_size=4),
            progress_percentage=st.none(),
            estimated_remaining_s=st.none(),
            dynamic_error_message=st.none(),
        )
    )
    return change, vault, details, draw(times)


def parse_time(text: object) -> datetime:
    assert isinstance(text, str)
    return datetime.fromisoformat(text)


class TestRenderedEvents:
    """Every rendered event keeps the schema v1 contract."""

    @settings(max_examples=300, deadline=None)
    @given(case=changes())
    def test_contract(
        self, case: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime]
    ) -> None:
        """Valid against the shipped schema, keys in order, id by formula, lag by the rules."""
        change, vault, details, emitted_at = case
        event = render_event(change, vault=vault, details=details, emitted_at=emitted_at)
        validate(event)
        line = orjson.dumps(event)
        assert orjson.loads(line) == event
        assert b"\n" not in line

        has_lag = "detection_lag_s" in event
        assert list(event) == TOP_KEYS + (["detection_lag_s"] if has_lag else [])
        job = event["job"]
        assert isinstance(job, dict)
        assert list(job) == JOB_KEYS + (DETAIL_KEYS if details is not None else [])
        vault_out = event["vault"]
        assert isinstance(vault_out, dict)
        assert list(vault_out) == VAULT_KEYS
        assert vault_out["kind"] == vault.kind.value

        status = job["status"]
        assert status == JobStatus.of(change.job.status.value).value
        text = f"{vault.id.lower()}|{change.job.name.lower()}|{status}"
        assert event["event_id"] == hashlib.sha256(text.encode()).hexdigest()[:32]

        time = parse_time(event["time"])
        assert timedelta(0) <= emitted_at - time < timedelta(milliseconds=1)
        terminal = change.job.status.is_terminal
        if terminal and job["end_time"] is not None:
            reached: datetime | None = parse_time(job["end_time"])
        elif not terminal and change.previous_status is None and job["start_time"] is not None:
            reached = parse_time(job["start_time"])
        else:
            reached = None
        if reached is None:
            assert not has_lag
        else:
            assert event["detection_lag_s"] == round((time - reached).total_seconds(), 3)

        envelope = to_cloudevent(event)
        CLOUDEVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(envelope)))
        assert envelope["id"] == event["event_id"]
        assert envelope["source"] == vault.id
        assert envelope["subject"] == change.job.name
        assert envelope["time"] == event["time"]
        assert envelope["data"] is event

    @settings(max_examples=100, deadline=None)
    @given(case=changes())
    def test_emitted_event_is_what_the_event_says(
        self, case: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime]
    ) -> None:
        """EmittedEvent.of gives a rendered event's canonical status and its lag, or None."""
        change, vault, details, emitted_at = case
        event = render_event(change, vault=vault, details=details, emitted_at=emitted_at)
        emitted = EmittedEvent.of(event)
        job = event["job"]
        assert isinstance(job, dict)
        assert emitted.status == JobStatus.of(change.job.status.value)
        assert emitted.status.value == job["status"]
        assert emitted.detection_lag_s == event.get("detection_lag_s")

    def test_failed_job_with_details(self) -> None:
        """A parsed failed job with details renders the fields DESIGN §5 shows."""
        details = parse_job_details(p.IAAS_DETAILS, VAULT)
        (change,) = diff_jobs({}, [details.job], EMITTED_AT)
        event = render_event(change, vault=VAULT, details=details, emitted_at=EMITTED_AT)
        validate(event)
        assert event["time"] == "2026-11-25T10:23:42.604Z"
        assert event["event_id"] == change.event_id
        assert event["job"] == {
            "id": "7ddead57-0000-4000-8000-000000000009",
            "resource_id": f"{p.VAULT_ID}/backupJobs/7ddead57-0000-4000-8000-000000000009",
            "type": "AzureIaaSVMJob",
            "operation": "Backup",
            "backup_management_type": "AzureIaasVM",
            "entity": "vm-web-01",
            "status": "Failed",
            "previous_status": None,
            "outcome": "failed",
            "start_time": "2026-11-25T10:03:17.123Z",
            "end_time": "2026-11-25T10:23:40.000Z",
            "duration_s": 1223.09,
            "datasource_type": None,
            "datasource_name": None,
            "datasource_id": None,
            "backup_instance": None,
            "backup_instance_id": None,
            "policy_name": None,
            "protected_item_id": None,
            "errors": [
                {
                    "code": "400026",
                    "message": "VM agent is unable to communicate with the Azure Backup Service.",
                    "recommendations": ["Ensure the VM agent is running.", "Check network."],
                }
            ],
            "tasks": [
                {"name": "Take Snapshot", "status": "Completed", "duration_s": 42.0},
                {"name": "Transfer data to vault", "status": "NotStarted", "duration_s": 0.0},
            ],
            "properties": {"VM Name": "vm-web-01", "Backup Size": "2332 MB"},
        }
        assert event["vault"] == {
            "id": p.VAULT_ID,
            "name": "v1",
            "resource_group": "rg-backup",
            "subscription_id": p.SUB,
            "location": "westeurope",
            "kind": "recovery_services",
            "tenant_id": TENANT,
        }
        assert event["detection_lag_s"] == 2.604

    def test_backup_vault_job_with_details(self) -> None:
        """A parsed Backup vault job renders its kind, datasource, instance and policy, its
        errorDetails as errors and its subTasks as tasks; Succeeded is written Completed."""
        details = parse_backup_vault_job(BV_FAILED_JOB, BV_VAULT)
        (change,) = diff_jobs({}, [details.job], EMITTED_AT)
        event = render_event(change, vault=BV_VAULT, details=details, emitted_at=EMITTED_AT)
        validate(event)
        CLOUDEVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(to_cloudevent(event))))
        job = event["job"]
        assert isinstance(job, dict)
        assert list(job) == JOB_KEYS + DETAIL_KEYS
        assert {k: job[k] for k in JOB_KEYS[:12] if k not in ("id", "resource_id")} == {
            "type": "AzureBackupJob",
            "operation": "Backup",
            "backup_management_type": "AzureBackupVault",
            "entity": "disk-data-01",
            "status": "Failed",
            "previous_status": None,
            "outcome": "failed",
            "start_time": "2026-11-25T10:00:03.760Z",
            "end_time": "2026-11-25T10:02:15.531Z",
            "duration_s": 131.972,
        }
        assert {k: job[k] for k in JOB_KEYS[12:18]} == {
            "datasource_type": "Microsoft.Compute/disks",
            "datasource_name": "disk-data-01",
            "datasource_id": BV_DISK,
            "backup_instance": "disk-data-01",
            "backup_instance_id": f"{BV_VAULT_ID}/backupInstances/disk-data-01-bi",
            "policy_name": "policy-disks-daily",
        }
        assert job["errors"] == [
            {
                "code": "UserErrorDiskSnapshotFailed",
                "message": "The snapshot of the disk could not be taken.",
                "recommendations": ["Check the snapshot resource group's permissions."],
            }
        ]
        assert job["tasks"] == [
            {"name": "Take snapshot", "status": "Failed", "duration_s": None},
            {"name": "Transfer data", "status": "Completed", "duration_s": None},
        ]
        assert job["properties"] == {"SnapshotResourceGroup": "rg-snapshots"}
        vault = event["vault"]
        assert isinstance(vault, dict)
        assert vault["kind"] == "backup_vault"
        assert list(vault) == VAULT_KEYS
        text = f"{BV_VAULT_ID.lower()}|{job['id']}|Failed"
        assert event["event_id"] == hashlib.sha256(text.encode()).hexdigest()[:32]

    def test_backup_vault_status_words(self) -> None:
        """Started is written InProgress (a first sighting) and Succeeded Completed."""
        for raw, written, outcome in (
            ("Started", "InProgress", None),
            ("Succeeded", "Completed", "succeeded"),
        ):
            item = {**BV_FAILED_JOB, "properties": {**BV_FAILED_JOB["properties"], "status": raw}}
            job = parse_backup_vault_job(item, BV_VAULT).job
            (change,) = diff_jobs({}, [job], EMITTED_AT)
            event = render_event(change, vault=BV_VAULT, details=None, emitted_at=EMITTED_AT)
            validate(event)
            job_out = event["job"]
            assert isinstance(job_out, dict)
            assert (job_out["status"], job_out["outcome"]) == (written, outcome)

    def test_running_first_sighting_lag_from_start(self) -> None:
        """A job first seen running gets lag from its start; no details keys."""
        (job,) = parse_jobs_page(p.page(p.IAAS_V2_RUNNING), VAULT).jobs
        (change,) = diff_jobs({}, [job], EMITTED_AT)
        event = render_event(change, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        validate(event)
        job_out = event["job"]
        assert isinstance(job_out, dict)
        assert job_out["outcome"] is None
        assert job_out["end_time"] is None  # the 0001-01-01 sentinel
        assert not set(DETAIL_KEYS) & set(job_out)
        assert event["detection_lag_s"] == round(20 * 60 + 25.481, 3)

    def test_seen_before_and_still_running_has_no_lag(self) -> None:
        """InProgress → Cancelling: ARM does not say when, so the lag is omitted."""
        (job,) = parse_jobs_page(p.page(p.DPM_CANCELLING), VAULT).jobs
        change = JobStateChanged(
            vault_key=VAULT.key,
            job=job,
            previous_status=JobStatus.IN_PROGRESS,
            observed_at=EMITTED_AT,
        )
        event = render_event(change, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        validate(event)
        assert "detection_lag_s" not in event

    def test_terminal_without_end_time_has_no_lag(self) -> None:
        """A cancelled job whose end time is a sentinel has no lag."""
        (job,) = parse_jobs_page(p.page(p.MAB_CANCELLED), VAULT).jobs
        (change,) = diff_jobs({}, [job], EMITTED_AT)
        event = render_event(change, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        validate(event)
        assert "detection_lag_s" not in event

    def test_every_core_payload_renders_valid(self) -> None:
        """Each job type and trap from the core payloads renders a valid event."""
        jobs = parse_jobs_page(p.page(*p.ALL_ITEMS), VAULT).jobs
        for change in diff_jobs({}, jobs, EMITTED_AT):
            validate(render_event(change, vault=VAULT, details=None, emitted_at=EMITTED_AT))

    def test_mismatches_are_refused(self) -> None:
        """Another vault, another job's details or a naive time raise ValueError."""
        (job,) = parse_jobs_page(p.page(p.IAAS_COMPLETED), VAULT).jobs
        (change,) = diff_jobs({}, [job], EMITTED_AT)
        other_vault = parse_vault_id(p.VAULT_ID.replace("/v1", "/v2"))
        with pytest.raises(ValueError, match="vault"):
            render_event(change, vault=other_vault, details=None, emitted_at=EMITTED_AT)
        details = parse_job_details(p.IAAS_DETAILS, VAULT)
        with pytest.raises(ValueError, match="details"):
            render_event(change, vault=VAULT, details=details, emitted_at=EMITTED_AT)
        with pytest.raises(ValueError, match="naive"):
            render_event(
                change, vault=VAULT, details=None, emitted_at=EMITTED_AT.replace(tzinfo=None)
            )

    def test_event_id_matches_core(self) -> None:
        """The rendered id is core's event_id over the vault id, job name and status."""
        (job,) = parse_jobs_page(p.page(p.WORKLOAD_FAILED), VAULT).jobs
        (change,) = diff_jobs({}, [job], EMITTED_AT)
        event = render_event(change, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        assert event["event_id"] == event_id(VAULT.id, job.name, "Failed") == change.event_id

    @pytest.mark.parametrize(
        ("moment", "text"),
        [
            (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
            (datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
            (
                datetime(2026, 1, 2, 0, 30, 0, 1000, tzinfo=timezone(timedelta(hours=1))),
                "2026-01-01T23:30:00.001Z",
            ),
        ],
    )
    def test_format_event_time(self, moment: datetime, text: str) -> None:
        """Times are UTC with milliseconds, truncated, never rounded into the next second."""
        assert format_event_time(moment) == text


class TestSchemaFiles:
    """The shipped schemas are valid, packaged, and reject what the contract forbids."""

    def test_schemas_are_valid_2020_12(self) -> None:
        """Both files are valid draft 2020-12 schemas."""
        Draft202012Validator.check_schema(event_schema())
        Draft202012Validator.check_schema(cloudevent_schema())

    def test_schemas_are_package_data(self) -> None:
        """pyproject's package-data ships every schema file in a wheel."""
        config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        patterns = config["tool"]["setuptools"]["package-data"]["monitor"]
        shipped = sorted((REPO / "monitor" / "schema").glob("*.json"))
        assert len(shipped) == 2
        for path in shipped:
            relative = path.relative_to(REPO / "monitor").as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative

    def test_returns_fresh_copies(self) -> None:
        """Callers may mutate the schema they get."""
        event_schema()["title"] = "changed"
        assert event_schema()["title"] != "changed"

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda e: e.update(extra=1),
            lambda e: e["job"].update(extra=1),
            lambda e: e["vault"].update(extra=1),
            lambda e: e.update(event_id="XYZ"),
            lambda e: e.update(time="2026-11-25T10:23:42Z"),
            lambda e: e["job"].update(outcome="succeeded"),
            lambda e: e["job"].update(status="Completed"),
            lambda e: e["job"].pop("tasks"),
            lambda e: e["job"].pop("previous_status"),
            lambda e: e.update(schema_version=2),
        ],
        ids=[
            "top-extra",
            "job-extra",
            "vault-extra",
            "event-id",
            "time-no-ms",
            "outcome-for-failed",
            "completed-failed-outcome",
            "partial-details",
            "missing-required",
            "version",
        ],
    )
    def test_rejects(self, mutate: Any) -> None:
        """The schema catches shapes the contract forbids."""
        details = parse_job_details(p.IAAS_DETAILS, VAULT)
        (change,) = diff_jobs({}, [details.job], EMITTED_AT)
        event = orjson.loads(
            orjson.dumps(render_event(change, vault=VAULT, details=details, emitted_at=EMITTED_AT))
        )
        EVENT_VALIDATOR.validate(event)
        mutate(event)
        assert not EVENT_VALIDATOR.is_valid(event)

    def test_event_from_before_backup_vaults_still_validates(self) -> None:
        """A v1 event written before Backup vaults (no vault.kind, no datasource fields) is still
        valid, bare and as a CloudEvent: the new fields are additive and not required."""
        old = orjson.loads(PRE_BACKUP_VAULT_LINE)
        assert "kind" not in old["vault"]
        assert "datasource_type" not in old["job"]
        EVENT_VALIDATOR.validate(old)
        CLOUDEVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(to_cloudevent(old))))

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda e: e["vault"].update(kind="RecoveryServices"),
            lambda e: e["vault"].update(kind=None),
            lambda e: e["job"].update(datasource_type=1),
            lambda e: e["job"].update(policy_name=["p"]),
        ],
        ids=["kind-unknown", "kind-null", "datasource-type-int", "policy-list"],
    )
    def test_rejects_bad_backup_vault_fields(self, mutate: Any) -> None:
        """vault.kind is one of the two kinds; the datasource fields are strings or null."""
        event = orjson.loads(orjson.dumps(backup_vault_event()))
        EVENT_VALIDATOR.validate(event)
        mutate(event)
        assert not EVENT_VALIDATOR.is_valid(event)

    def test_docs_backup_vault_sample_is_valid(self) -> None:
        """The Backup vault sample in docs/events.md validates and has the documented keys."""
        text = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
        start = text.index("<!-- sample-event-backup-vault -->")
        line = text[start:].split("```json\n", 1)[1].split("\n```", 1)[0]
        assert "\n" not in line
        sample = orjson.loads(line)
        EVENT_VALIDATOR.validate(sample)
        assert list(sample["job"]) == JOB_KEYS + DETAIL_KEYS
        assert list(sample["vault"]) == VAULT_KEYS
        assert sample["vault"]["kind"] == "backup_vault"
        assert sample["job"]["backup_management_type"] == "AzureBackupVault"

    def test_docs_sample_line_is_valid(self) -> None:
        """The sample event in docs/events.md validates and has the documented key order."""
        text = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
        start = text.index("<!-- sample-event -->")
        line = text[start:].split("```json\n", 1)[1].split("\n```", 1)[0]
        assert "\n" not in line
        sample = orjson.loads(line)
        EVENT_VALIDATOR.validate(sample)
        assert list(sample) == [*TOP_KEYS, "detection_lag_s"]
        assert list(sample["job"]) == JOB_KEYS + DETAIL_KEYS
        assert list(sample["vault"]) == VAULT_KEYS


# --------------------------------------------------------------------------------------------
# Sinks


def as_outbox(events: Sequence[Mapping[str, object]]) -> list[OutboxEvent]:
    """Rendered events as the outbox hands them to a sink (seqs from 1)."""
    return [
        OutboxEvent(seq, line.event_id, EMITTED_AT, line.line)
        for seq, line in enumerate((EventLine.of(e) for e in events), start=1)
    ]


def sample_events(count: int) -> list[dict[str, object]]:
    jobs = parse_jobs_page(p.page(*p.ALL_ITEMS), VAULT).jobs
    changes_ = diff_jobs({}, jobs, EMITTED_AT)
    events = [
        render_event(c, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        for c in changes_ * (count // len(changes_) + 1)
    ]
    return events[:count]


class BrokenStream(io.BytesIO):
    def write(self, data: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class TestStdoutSink:
    """StdoutSink writes one flushed line per event."""

    async def test_one_line_per_event(self) -> None:
        """Each event is one line, in order, equal to the event."""
        stream = io.BytesIO()
        events = sample_events(5)
        async with StdoutSink(stream) as sink:
            await sink.deliver(as_outbox(events))
            await sink.deliver(as_outbox([]))
        lines = stream.getvalue().split(b"\n")
        assert lines[-1] == b""
        assert [orjson.loads(line) for line in lines[:-1]] == events
        assert all(line.startswith(b'{"schema_version":1,"event":') for line in lines[:-1])

    async def test_real_pipe(self) -> None:
        """Through an OS pipe, the reader sees exactly the lines, flushed per batch."""
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
            sink = StdoutSink(writer)
            await sink.deliver(as_outbox(sample_events(3)))
            # Flushed by emit: the lines are readable before anything is closed.
            data = b""
            with anyio.fail_after(5):
                while data.count(b"\n") < 3:
                    data += await anyio.to_thread.run_sync(os.read, reader.fileno(), 65536)
            await sink.aclose()
        assert data.count(b"\n") == 3
        assert [orjson.loads(line) for line in data.splitlines()] == sample_events(3)

    async def test_reads_back_a_regular_file_it_writes_to(self, tmp_path: Path) -> None:
        """Redirected to a file (as `> events.jsonl` does), what it wrote is read back, earlier
        runs' lines included, CloudEvents unwrapped."""
        path = tmp_path / "out.jsonl"
        path.write_bytes(encode_events(sample_events(2)))
        with path.open("ab") as stream:
            sink = StdoutSink(stream, format="cloudevents")
            await sink.deliver(as_outbox(sample_events(3)[2:]))
            assert await sink.recent_events() == sample_events(3)

    async def test_reads_back_nothing_from_a_pipe_or_a_memory_stream(self) -> None:
        """A pipe cannot be read back (and a stream without a descriptor neither): []."""
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb") as writer:
            sink = StdoutSink(writer)
            await sink.deliver(as_outbox(sample_events(1)))
            assert await sink.recent_events() == []
        assert await StdoutSink(io.BytesIO()).recent_events() == []

    async def test_default_is_stdout(self, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        """Without a stream, events go to sys.stdout.buffer."""
        sink = StdoutSink()
        await sink.deliver(as_outbox(sample_events(2)))
        await sink.aclose()
        assert capsysbinary.readouterr().out.count(b"\n") == 2

    async def test_cloudevents_format(self) -> None:
        """`format='cloudevents'` writes valid envelopes around the events."""
        stream = io.BytesIO()
        events = sample_events(3)
        await StdoutSink(stream, format="cloudevents").deliver(as_outbox(events))
        envelopes = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        for envelope, event in zip(envelopes, events, strict=True):
            CLOUDEVENT_VALIDATOR.validate(envelope)
            assert envelope["data"] == event
        assert list(envelopes[0]) == [
            "specversion",
            "id",
            "source",
            "subject",
            "type",
            "time",
            "datacontenttype",
            "data",
        ]

    async def test_write_failure_raises_sink_error(self) -> None:
        """A stream that fails makes emit raise SinkError (so nothing is checkpointed)."""
        sink = StdoutSink(BrokenStream())
        with pytest.raises(SinkError, match="Broken pipe") as info:
            await sink.deliver(as_outbox(sample_events(1)))
        assert isinstance(info.value.__cause__, BrokenPipeError)

    async def test_closed_stream_raises_sink_error(self) -> None:
        """Writing to a closed stream is a SinkError too."""
        stream = io.BytesIO()
        stream.close()
        with pytest.raises(SinkError):
            await StdoutSink(stream).deliver(as_outbox(sample_events(1)))

    async def test_unserialisable_event(self) -> None:
        """An event JSON cannot hold is refused before it reaches the outbox (or a sink)."""
        with pytest.raises(SinkError, match="serialise"):
            EventLine.of({"event_id": "x", "bad": {1, 2}})

    async def test_emit_after_close(self) -> None:
        """A closed sink refuses to deliver; closing twice is fine."""
        sink = StdoutSink(io.BytesIO())
        await sink.aclose()
        await sink.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await sink.deliver(as_outbox(sample_events(1)))

    async def test_encode_events_matches_sink(self) -> None:
        """encode_events gives the bytes the sink writes (the outbox's lines, as they are)."""
        stream = io.BytesIO()
        events = sample_events(4)
        await StdoutSink(stream).deliver(as_outbox(events))
        assert stream.getvalue() == encode_events(events)


class TestFileSink:
    """FileSink appends lines durably and survives reopening."""

    async def test_appends_and_survives_reopen(self, tmp_path: Path) -> None:
        """Two sessions append; the file holds both batches in order, in a new directory."""
        path = tmp_path / "events" / "out.jsonl"
        first, second = sample_events(3), sample_events(5)[3:]
        async with FileSink(path) as sink:
            await sink.deliver(as_outbox(first))
        async with FileSink(path, fsync=False) as sink:
            await sink.deliver(as_outbox(second))
        lines = path.read_bytes().splitlines()
        assert [orjson.loads(line) for line in lines] == first + second

    async def test_torn_last_line_is_terminated(self, tmp_path: Path) -> None:
        """A line torn by a crash is ended, so the next event starts on its own line."""
        path = tmp_path / "out.jsonl"
        path.write_bytes(b'{"schema_version":1,"ev')
        async with FileSink(path) as sink:
            await sink.deliver(as_outbox(sample_events(1)))
        torn, good = path.read_bytes().splitlines()
        assert torn == b'{"schema_version":1,"ev'
        assert orjson.loads(good) == sample_events(1)[0]

    async def test_reads_back_what_it_wrote_past_a_torn_line(self, tmp_path: Path) -> None:
        """`recent_events` gives the file's events, the torn line of a crash skipped."""
        path = tmp_path / "out.jsonl"
        path.write_bytes(encode_events(sample_events(1)) + b'{"schema_version":1,"ev')
        async with FileSink(path) as sink:
            await sink.deliver(as_outbox(sample_events(3)[1:]))
            assert await sink.recent_events() == sample_events(3)

    async def test_a_file_that_cannot_be_read_back_is_a_sink_error(self, tmp_path: Path) -> None:
        """Removed under the sink (so it cannot be read back): SinkError naming the file."""
        path = tmp_path / "out.jsonl"
        async with FileSink(path) as sink:
            path.unlink()
            with pytest.raises(SinkError, match="cannot read back the events file"):
                await sink.recent_events()

    async def test_unopenable_path(self, tmp_path: Path) -> None:
        """A path under a regular file fails at startup naming the path."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        path = blocker / "events.jsonl"
        with pytest.raises(StartupError, match=str(path)):
            async with FileSink(path):
                pass

    async def test_use_outside_async_with(self, tmp_path: Path) -> None:
        """The constructor does no I/O; emit before opening is an error."""
        path = tmp_path / "out.jsonl"
        sink = FileSink(path)
        assert not path.exists()
        with pytest.raises(RuntimeError, match="not open"):
            await sink.deliver(as_outbox(sample_events(1)))
        async with sink:
            with pytest.raises(RuntimeError, match="already open"):
                await sink.__aenter__()

    def test_build_sink(self, tmp_path: Path) -> None:
        """`[events] sink` picks stdout or a file, named `default`, with the configured format."""
        (only,) = Settings().delivery_sinks
        stdout = build_line_sink(only)  # type: ignore[arg-type]
        assert isinstance(stdout, StdoutSink)
        assert stdout.name == "default"
        events = EventsSettings(sink=tmp_path / "e.jsonl", format="cloudevents")
        (only,) = Settings(events=events).delivery_sinks
        built = build_line_sink(only)  # type: ignore[arg-type]
        assert isinstance(built, FileSink)
        assert (built.path, built.name) == (tmp_path / "e.jsonl", "default")
        assert not built.path.exists()


# --------------------------------------------------------------------------------------------
# Full disks: a real 64 KiB tmpfs, filled with a ballast file and freed


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of this test's own (skipped where mounting is not permitted)."""
    with mounted_tmpfs(tmp_path / "volume", size="64k") as where:
        yield where


def distinct_events(count: int) -> list[dict[str, object]]:
    """`count` events of distinct jobs (so distinct event_ids), rendered as the daemon does."""
    items = [
        p.job_item(f"7ddead57-0000-4000-8000-{i:012d}", status="Completed") for i in range(count)
    ]
    jobs = parse_jobs_page(p.page(*items), VAULT).jobs
    return [
        render_event(c, vault=VAULT, details=None, emitted_at=EMITTED_AT)
        for c in diff_jobs({}, jobs, EMITTED_AT)
    ]


def read_lines(path: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The file's event lines, and its lines that are not JSON."""
    events: list[dict[str, Any]] = []
    others: list[bytes] = []
    for line in path.read_bytes().splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            others.append(line)
    return events, others


def failures(registry: CollectorRegistry, sink: str) -> float | None:
    return registry.get_sample_value("backup_monitor_sink_write_failures_total", {"sink": sink})


def named(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [row for row in logs if row["event"] == event]


class CuttingStream(io.BytesIO):
    """Takes half of the first write, then fails as a full disk would."""

    cut = True

    def write(self, data: Any) -> int:
        if self.cut:
            self.cut = False
            super().write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


class TestFullDisk:
    """A batch is all or nothing in a file; retries never write an event_id twice."""

    async def test_a_batch_cut_by_a_full_disk_is_rolled_back(self, volume: Path) -> None:
        """A batch the disk cuts is truncated away, counted, logged once; once space is back the
        retry writes it whole, each event once."""
        path = volume / "events.jsonl"
        events = distinct_events(30)
        first, batch = events[:5], events[5:]
        registry = CollectorRegistry()
        async with FileSink(path, observer=Metrics(registry)) as sink:
            await sink.deliver(as_outbox(first))
            before = path.read_bytes()
            ballast = fill(volume, leave_pages=1)
            room = PAGE + (-len(before)) % PAGE  # one free page and the rest of the last one
            assert len(encode_events(batch)) > room  # the disk cuts the batch
            with capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises(SinkError, match="No space left on device"):
                        await sink.deliver(as_outbox(batch))
                    assert path.read_bytes() == before
                ballast.unlink()
                await sink.deliver(as_outbox(batch))
        assert path.read_bytes() == before + encode_events(batch)
        assert [r["bytes_rolled_back"] for r in named(logs, "sink.write_failed")] == [room]
        failed = named(logs, "sink.write_failed")[0]
        assert (failed["sink"], failed["path"], failed["log_level"]) == (
            "file",
            str(path),
            "warning",
        )
        assert "rollback_error" not in failed
        assert [r["failed_writes"] for r in named(logs, "sink.recovered")] == [2]
        assert failures(registry, "file") == 2
        assert failures(registry, "stdout") == 0

    async def test_a_batch_that_cannot_be_cut_back_is_never_written_twice(
        self, volume: Path
    ) -> None:
        """Append-only file (truncate refused) on a full disk: the cut batch stays; the retry
        reads it back, ends its torn line, and writes only the events not there yet."""
        path = volume / "events.jsonl"
        path.touch()
        set_append_only(path, True)
        events = distinct_events(33)
        first, batch, fresh = events[:5], events[5:30], events[30:]
        registry = CollectorRegistry()
        try:
            async with FileSink(path, observer=Metrics(registry)) as sink:
                await sink.deliver(as_outbox(first))
                before = len(path.read_bytes())
                ballast = fill(volume, leave_pages=1)
                with capture_logs() as logs:
                    with pytest.raises(SinkError, match="cannot roll the batch back"):
                        await sink.deliver(as_outbox(batch))
                    left = path.read_bytes()[before:]
                    assert 0 < len(left) < len(encode_events(batch))
                    ballast.unlink()
                    # The worker's retry, and another vault's news.
                    await sink.deliver(as_outbox(batch + fresh))
        finally:
            set_append_only(path, False)
        written, others = read_lines(path)
        assert written == first + batch + fresh  # in order, each event once
        torn = len(left) - (left.rfind(b"\n") + 1)
        assert others == ([left[-torn:]] if torn else [])
        failed = named(logs, "sink.write_failed")
        assert len(failed) == 1
        assert failed[0]["bytes_rolled_back"] == 0
        assert "Operation not permitted" in failed[0]["rollback_error"]
        whole = left.count(b"\n")
        assert [(r["events"], r["torn_bytes"]) for r in named(logs, "sink.tail_read_back")] == [
            (whole, torn)
        ]
        assert [r["events"] for r in named(logs, "sink.already_written")] == [whole]
        assert failures(registry, "file") == 1

    async def test_an_event_cut_just_before_its_newline_counts_as_written(
        self, volume: Path
    ) -> None:
        """The disk fills one byte short of an event's newline and the file cannot be cut: the
        newline that ends it makes it a written event, so the retry does not write it again."""
        path = volume / "events.jsonl"
        batch = distinct_events(3)
        line = encode_events(batch[:1])
        # A line that is no event, sized so that the first page has room for `line` minus "\n".
        path.write_bytes(b"#" * (PAGE - len(line)) + b"\n")
        set_append_only(path, True)
        try:
            async with FileSink(path) as sink:
                ballast = fill(volume)
                with capture_logs() as logs:
                    with pytest.raises(SinkError, match="No space left on device"):
                        await sink.deliver(as_outbox(batch))
                    assert path.read_bytes()[PAGE - len(line) + 1 :] == line[:-1]
                    ballast.unlink()
                    await sink.deliver(as_outbox(batch))
        finally:
            set_append_only(path, False)
        written, others = read_lines(path)
        assert written == batch
        assert others == [b"#" * (PAGE - len(line))]
        assert [(r["events"], r["torn_bytes"]) for r in named(logs, "sink.tail_read_back")] == [
            (1, len(line) - 1)
        ]
        assert [r["events"] for r in named(logs, "sink.already_written")] == [1]

    async def test_stdout_into_a_full_file_repeats_the_cut_lines_intact(self, volume: Path) -> None:
        """Stdout cannot roll back: the cut batch's whole lines come again (same event_id), the
        cut line is ended, and every event of the retry is intact; counted and logged once."""
        path = volume / "out.jsonl"
        events = distinct_events(30)
        first, batch = events[:5], events[5:]
        registry = CollectorRegistry()
        with path.open("ab") as stream:
            sink = StdoutSink(stream, observer=Metrics(registry))
            await sink.deliver(as_outbox(first))
            ballast = fill(volume, leave_pages=1)
            with capture_logs() as logs:
                with pytest.raises(SinkError, match="No space left on device"):
                    await sink.deliver(as_outbox(batch))
                cut = path.read_bytes()[len(encode_events(first)) :]
                ballast.unlink()
                await sink.deliver(as_outbox(batch))
                await sink.aclose()
        written, others = read_lines(path)
        whole = cut.count(b"\n")
        assert written == first + batch[:whole] + batch
        assert others == ([cut[cut.rfind(b"\n") + 1 :]] if not cut.endswith(b"\n") else [])
        assert max(Counter(e["event_id"] for e in written).values()) == 2
        failed = named(logs, "sink.write_failed")
        assert [(r["sink"], r["bytes_rolled_back"]) for r in failed] == [("stdout", 0)]
        assert len(named(logs, "sink.recovered")) == 1
        assert failures(registry, "stdout") == 1

    async def test_a_stream_without_a_descriptor_starts_the_retry_on_a_new_line(self) -> None:
        """An in-memory stream cut half-way: the retry starts with a newline, so the cut line
        cannot swallow its first event."""
        stream = CuttingStream()
        batch = distinct_events(3)
        sink = StdoutSink(stream)
        with pytest.raises(SinkError, match="No space left on device"):
            await sink.deliver(as_outbox(batch))
        half = stream.getvalue()
        await sink.deliver(as_outbox(batch))
        assert stream.getvalue() == half + b"\n" + encode_events(batch)
