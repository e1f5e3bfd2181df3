"""The Azure Monitor Logs sink through the real azure-monitor-ingestion client, against the
emulator's Logs Ingestion endpoint over TLS on loopback; and its pure parts (rows, chunking)."""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from azure.core.credentials_async import AsyncTokenCredential
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.config import AzureSettings
from monitor.config_sinks import AzureMonitorLogsSinkSettings
from monitor.core.dataprotection import parse_backup_vault_job
from monitor.core.diff import diff_jobs
from monitor.core.item_watch import BackupMissed, ProtectionChanged, RpoBreached, RpoRestored
from monitor.core.jobs import parse_job_details, parse_jobs_page
from monitor.core.schedule import ExpectedRun, RunKind
from monitor.credentials import build_credential
from monitor.emulator import Emulator, EmulatorSettings, running_emulator
from monitor.emulator.ingestion import EMULATOR_RULE_ID, EMULATOR_STREAM, IngestionSettings
from monitor.errors import DeliveryError
from monitor.events import render_change, render_event
from monitor.outbox import OutboxEvent
from monitor.sinks_azure_logs import (
    MAX_REQUEST_BYTES,
    ROW_COLUMNS,
    AzureMonitorLogsSink,
    chunk_rows,
    event_row,
    monitor_audience,
)
from tests import test_item_events as ie
from tests.core import payloads as p
from tests.fakes import FakeClock
from tests.test_sinks import (
    BV_DISK,
    BV_FAILED_JOB,
    BV_VAULT,
    EMITTED_AT,
    PRE_BACKUP_VAULT_LINE,
    REPO,
    VAULT,
    validate,
)

APP_CLIENT_ID = "0b7c6d2e-3f4a-4b5c-8d9e-1f2a3b4c5d6e"


# --------------------------------------------------------------------------------------------
# Events


def rendered_events(emitted_at: datetime = EMITTED_AT) -> list[dict[str, Any]]:
    """Schema-valid events of every job type of the payloads, a failed Backup vault job, and
    (last) a failed Recovery Services job with its details."""
    page = parse_jobs_page(p.page(*p.ALL_ITEMS), VAULT)
    events = [
        render_event(change, vault=VAULT, details=None, emitted_at=emitted_at)
        for change in diff_jobs({}, list(page.jobs), emitted_at)
    ]
    bv_details = parse_backup_vault_job(BV_FAILED_JOB, BV_VAULT)
    (bv_change,) = diff_jobs({}, [bv_details.job], emitted_at)
    events.append(
        render_event(bv_change, vault=BV_VAULT, details=bv_details, emitted_at=emitted_at)
    )
    details = parse_job_details(p.IAAS_DETAILS, VAULT)
    (change,) = diff_jobs({}, [details.job], emitted_at)
    events.append(render_event(change, vault=VAULT, details=details, emitted_at=emitted_at))
    for event in events:
        validate(event)
    return events


def huge_event(size: int) -> dict[str, Any]:
    """The failed job's event with an error message of `size` characters (still schema v1)."""
    event = rendered_events()[-1]
    event["job"]["errors"][0]["message"] = "x" * size
    validate(event)
    return event


def outbox(events: list[dict[str, Any]]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            seq=i + 1,
            event_id=str(e["event_id"]),
            committed_at=EMITTED_AT,
            line=orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE),
        )
        for i, e in enumerate(events)
    ]


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(name="emu")
async def _emu(server_ssl_context: ssl.SSLContext) -> AsyncIterator[Emulator]:
    settings = EmulatorSettings(ingestion=IngestionSettings(retry_after_s=17))
    async with running_emulator(settings, ssl_context=server_ssl_context) as emulator:
        yield emulator


@pytest.fixture(name="azure")
def _azure(emu: Emulator, ca_pem_path: str) -> AzureSettings:
    return AzureSettings(
        arm_endpoint=emu.url + "/",
        authority=emu.url,
        credential="client_secret",
        tenant_id=emu.tenant_id,
        client_id=APP_CLIENT_ID,
        client_secret=emu.arm.settings.client_secret,
        ca_bundle=Path(ca_pem_path),
    )


@pytest.fixture(name="credential")
async def _credential(azure: AzureSettings) -> AsyncIterator[AsyncTokenCredential]:
    """The daemon's own credential kind: a client secret, from the emulator's token endpoint."""
    credential = build_credential(azure)
    async with credential:
        yield credential


@pytest.fixture(name="http")
def _http(tls_http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    return tls_http


def settings_for(emu: Emulator, **changes: Any) -> AzureMonitorLogsSinkSettings:
    fields: dict[str, Any] = {"name": "law", "endpoint": emu.url, "rule_id": EMULATOR_RULE_ID}
    return AzureMonitorLogsSinkSettings(type="azure_monitor_logs", **(fields | changes))


def make_sink(
    emu: Emulator,
    credential: AsyncTokenCredential,
    azure: AzureSettings,
    ssl_context: ssl.SSLContext,
    *,
    now: datetime = EMITTED_AT + timedelta(minutes=1),
    max_request_bytes: int = MAX_REQUEST_BYTES,
    **changes: Any,
) -> AzureMonitorLogsSink:
    return AzureMonitorLogsSink(
        settings_for(emu, **changes),
        credential=credential,
        azure=azure,
        ssl_context=ssl_context,
        clock=FakeClock(start_at=now),
        max_request_bytes=max_request_bytes,
    )


async def received(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, Any]:
    async with http.get(f"{emu.url}/_emulator/ingestion/rows") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def rows_of(truth: Mapping[str, Any]) -> list[dict[str, Any]]:
    streams = truth["streams"]
    if not streams:
        return []
    (stream,) = streams
    assert (stream["rule_id"], stream["stream"]) == (EMULATOR_RULE_ID, EMULATOR_STREAM)
    rows: list[dict[str, Any]] = stream["rows"]
    return rows


# --------------------------------------------------------------------------------------------
# Through the SDK, against the emulator


class TestDelivery:
    """Batches reach the emulator as rows, and its refusals become the right DeliveryError."""

    async def test_rows_arrive_with_their_columns(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """Each event is one row: flat KQL columns, TimeGenerated its time, Event the whole."""
        events = rendered_events()
        async with make_sink(emu, credential, azure, client_ssl_context) as sink:
            await sink.deliver(outbox(events))
            assert await sink.delivered_ids() == set()
        rows = rows_of(await received(http, emu))
        assert [r["EventId"] for r in rows] == [e["event_id"] for e in events]
        for row, event in zip(rows, events, strict=True):
            assert list(row) == list(ROW_COLUMNS)
            assert row["Event"] == event
            assert row["TimeGenerated"] == row["EventTime"] == event["time"]
            assert row["TimeRestamped"] is False
            assert row["JobId"] == event["job"]["id"]
            assert row["Status"] == event["job"]["status"]
            assert row["VaultName"] == event["vault"]["name"]
            assert row["SubscriptionId"] == event["vault"]["subscription_id"]
        bv = rows[-2]
        assert bv["VaultKind"] == "backup_vault"
        assert (bv["JobType"], bv["BackupManagementType"]) == ("AzureBackupJob", "AzureBackupVault")
        assert (bv["DatasourceType"], bv["DatasourceId"]) == ("Microsoft.Compute/disks", BV_DISK)
        assert (bv["BackupInstance"], bv["PolicyName"]) == ("disk-data-01", "policy-disks-daily")
        assert bv["ErrorCode"] == "UserErrorDiskSnapshotFailed"
        failed = rows[-1]
        assert failed["VaultKind"] == "recovery_services"
        assert failed["DatasourceType"] is failed["PolicyName"] is None
        assert (failed["ErrorCode"], failed["Outcome"]) == ("400026", "failed")
        assert failed["ErrorMessage"].startswith("VM agent is unable")
        assert failed["DurationSeconds"] == 1223.09
        assert failed["DetectionLagSeconds"] == events[-1]["detection_lag_s"]

    async def test_a_big_batch_goes_in_several_requests_each_under_the_limit(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """Three rows of ~400 kB (the message is in ErrorMessage and in Event) go as two
        requests, in order, none refused."""
        events = [huge_event(200_000) for _ in range(3)]
        async with make_sink(emu, credential, azure, client_ssl_context) as sink:
            await sink.deliver(outbox(events))
        truth = await received(http, emu)
        assert (truth["requests"], truth["refused"]) == (2, {})
        assert len(rows_of(truth)) == 3

    async def test_a_429_carries_its_retry_after(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """A throttled request is a retryable DeliveryError with the service's Retry-After;
        the SDK does not retry it by itself, and the next delivery goes through."""
        async with http.put(
            f"{emu.url}/_emulator/ingestion/faults", json={"throttle_next": 1}
        ) as response:
            assert response.status == 200
        batch = outbox(rendered_events()[:2])
        async with make_sink(emu, credential, azure, client_ssl_context) as sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(batch)
            assert caught.value.status == 429
            assert caught.value.retry_after_s == 17
            assert (caught.value.delivered, caught.value.permanent) == (0, False)
            assert (await received(http, emu))["requests"] == 1
            await sink.deliver(batch)
        assert len(rows_of(await received(http, emu))) == 2

    async def test_a_413_of_one_event_is_permanent(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """An event the service refuses as too large is permanent; the head before it counts."""
        events = [*rendered_events()[:2], huge_event(550_000)]  # a row of ~1.1 MB
        # A limit the big row fits alone, past the service's: it goes out in a request of its own.
        alone = len(json.dumps([event_row(events[-1], now=EMITTED_AT)]).encode())
        sink = make_sink(emu, credential, azure, client_ssl_context, max_request_bytes=alone)
        async with sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox(events))
        assert caught.value.status == 413
        assert caught.value.permanent is True
        assert caught.value.delivered == 2
        assert "ContentLengthLimitExceeded" in str(caught.value)
        truth = await received(http, emu)
        assert truth["refused"] == {"413": 1}
        assert [r["EventId"] for r in rows_of(truth)] == [e["event_id"] for e in events[:2]]

    async def test_an_event_over_the_limit_is_refused_before_it_is_sent(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """With the default limit, an over-size event is permanent and never goes out; the
        events before it are delivered and those after it wait for the worker's split."""
        events = rendered_events()[:3]
        events.insert(1, huge_event(MAX_REQUEST_BYTES))
        async with make_sink(emu, credential, azure, client_ssl_context) as sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox(events))
        assert (caught.value.delivered, caught.value.permanent) == (1, True)
        assert caught.value.status is None
        assert str(events[1]["event_id"]) in str(caught.value)
        truth = await received(http, emu)
        assert (truth["requests"], truth["refused"]) == (1, {})
        assert [r["EventId"] for r in rows_of(truth)] == [events[0]["event_id"]]

    async def test_a_token_for_the_wrong_audience_is_refused_and_names_the_role(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """Tokens for another cloud's audience get 401: retryable, logged as a role problem."""
        sink = make_sink(
            emu, credential, azure, client_ssl_context, audience="https://monitor.azure.us"
        )
        assert sink.audience == "https://monitor.azure.us"
        with capture_logs() as logs:
            async with sink:
                for _ in range(3):  # the worker's retries: the role problem is logged once
                    with pytest.raises(DeliveryError) as caught:
                        await sink.deliver(outbox(rendered_events()[:1]))
        assert (caught.value.status, caught.value.permanent) == (401, False)
        assert "Monitoring Metrics Publisher" in str(caught.value)
        assert emu.arm.settings.client_secret not in str(caught.value)
        (entry,) = [e for e in logs if e["event"] == "sink.azure_monitor_logs.auth"]
        assert entry["log_level"] == "error"
        assert "Monitoring Metrics Publisher" in entry["hint"]
        assert rows_of(await received(http, emu)) == []

    async def test_an_unknown_stream_is_retried_not_dropped(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
    ) -> None:
        """A 404 (rule or stream not deployed) is a configuration error: never permanent."""
        sink = make_sink(emu, credential, azure, client_ssl_context, stream="Custom-Nope_CL")
        async with sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox(rendered_events()[:1]))
        assert (caught.value.status, caught.value.permanent) == (404, False)
        assert "Custom-Nope_CL" in str(caught.value)

    async def test_a_three_day_old_event_carries_the_restamp_flag(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """An event 3 days old is still delivered, flagged TimeRestamped, logged once a batch."""
        old = rendered_events(EMITTED_AT - timedelta(days=3))[:2]
        fresh = rendered_events()[2:3]
        with capture_logs() as logs:
            async with make_sink(emu, credential, azure, client_ssl_context) as sink:
                await sink.deliver(outbox([*old, fresh[0]]))
        rows = rows_of(await received(http, emu))
        assert [r["TimeRestamped"] for r in rows] == [True, True, False]
        assert rows[0]["EventTime"] == old[0]["time"]
        (entry,) = [e for e in logs if e["event"] == "sink.azure_monitor_logs.restamped"]
        assert (entry["events"], entry["first_event_id"]) == (2, old[0]["event_id"])

    async def test_no_answer_is_retryable(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
    ) -> None:
        """A port where nothing listens is a retryable DeliveryError without a status."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        sink = AzureMonitorLogsSink(
            settings_for(emu, endpoint=f"https://127.0.0.1:{port}"),
            credential=credential,
            azure=azure,
            ssl_context=client_ssl_context,
            clock=FakeClock(start_at=EMITTED_AT),
        )
        async with sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox(rendered_events()[:1]))
        assert (caught.value.status, caught.value.permanent) == (None, False)
        assert caught.value.delivered == 0

    async def test_not_opened_is_refused(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
    ) -> None:
        """deliver before open, or after aclose, names the sink; aclose is idempotent."""
        sink = make_sink(emu, credential, azure, client_ssl_context)
        with pytest.raises(DeliveryError, match="'law': not opened"):
            await sink.deliver(outbox(rendered_events()[:1]))
        await sink.open()
        await sink.aclose()
        await sink.aclose()
        with pytest.raises(DeliveryError, match="not opened"):
            await sink.deliver(outbox(rendered_events()[:1]))


# --------------------------------------------------------------------------------------------
# The pure parts


class TestRows:
    """Rows and the audience, without the network."""

    @pytest.mark.parametrize(
        ("cloud", "audience"),
        [
            ("AzureCloud", "https://monitor.azure.com"),
            ("AzureUSGovernment", "https://monitor.azure.us"),
            ("AzureChinaCloud", "https://monitor.azure.cn"),
        ],
    )
    def test_audience_follows_the_cloud(self, cloud: Any, audience: str) -> None:
        """Each cloud has its monitor audience; `audience` overrides it."""
        settings = AzureMonitorLogsSinkSettings(
            type="azure_monitor_logs", name="x", endpoint="https://e", rule_id="dcr-1"
        )
        assert monitor_audience(settings, AzureSettings(cloud=cloud)) == audience
        own = AzureMonitorLogsSinkSettings(
            type="azure_monitor_logs",
            name="x",
            endpoint="https://e",
            rule_id="dcr-1",
            audience="https://example.test/",
        )
        assert monitor_audience(own, AzureSettings(cloud=cloud)) == "https://example.test"

    @pytest.mark.parametrize(
        ("age", "restamped"),
        [
            (timedelta(days=2) - timedelta(seconds=1), False),
            (timedelta(days=2) + timedelta(seconds=1), True),
            (-timedelta(hours=23), False),
            (-timedelta(days=1, seconds=1), True),
        ],
    )
    def test_the_restamp_window(self, age: timedelta, restamped: bool) -> None:
        """TimeRestamped is set outside [now - 2 days, now + 1 day]."""
        event = rendered_events()[0]
        now = EMITTED_AT.replace(microsecond=604_000) + age
        assert event_row(event, now=now)["TimeRestamped"] is restamped

    @given(
        sizes=st.lists(st.integers(min_value=1, max_value=120), max_size=40),
        limit=st.integers(min_value=3, max_value=300),
    )
    def test_chunks_are_the_contiguous_head_and_each_fits(
        self, sizes: list[int], limit: int
    ) -> None:
        """Chunks cover the rows from 0 up to the first too-big row, in order, each fitting."""
        chunks = chunk_rows(sizes, limit)
        too_big = next((i for i, s in enumerate(sizes) if s + 2 > limit), len(sizes))
        covered = [i for start, end in chunks for i in range(start, end)]
        assert covered == list(range(too_big))
        for start, end in chunks:
            assert end > start
            assert sum(sizes[start:end]) + 2 * (end - start - 1) + 2 <= limit
        for (_, end), (start, _) in itertools.pairwise(chunks):
            assert end == start

    def test_an_event_from_before_backup_vaults(self) -> None:
        """An outbox event written before Backup vaults: VaultKind recovery_services (the only
        kind there was), the datasource columns null."""
        row = event_row(orjson.loads(PRE_BACKUP_VAULT_LINE), now=EMITTED_AT)
        assert list(row) == list(ROW_COLUMNS)
        assert row["VaultKind"] == "recovery_services"
        assert row["DatasourceType"] is row["DatasourceId"] is row["BackupInstance"] is None
        assert row["Entity"] == "vm-web-01"

    def test_chunk_sizes_are_the_json_the_sdk_sends(self) -> None:
        """The measured size of a chunk is exactly the stdlib JSON of its array."""
        rows = [event_row(e, now=EMITTED_AT) for e in rendered_events()]
        sizes = [len(json.dumps(r).encode()) for r in rows]
        exact = len(json.dumps(rows).encode())
        assert chunk_rows(sizes, exact) == [(0, len(rows))]
        assert len(chunk_rows(sizes, exact - 1)) == 2


class TestShipped:
    """The shipped rule template matches the rows, and the SDK stays out of process start."""

    def test_the_rule_template_declares_every_column_of_a_row(self) -> None:
        """docs/azure-monitor-logs/dcr.json: table, stream and destination agree with the sink."""
        template = json.loads((REPO / "docs" / "azure-monitor-logs" / "dcr.json").read_text())
        table, rule, role = template["resources"]
        assert template["variables"]["tableName"] == "BackupJobMonitor_CL"
        assert table["properties"]["schema"]["name"] == "[variables('tableName')]"
        table_columns = [c["name"] for c in table["properties"]["schema"]["columns"]]
        stream = rule["properties"]["streamDeclarations"][EMULATOR_STREAM]
        assert [c["name"] for c in stream["columns"]] == list(ROW_COLUMNS) == table_columns
        (flow,) = rule["properties"]["dataFlows"]
        assert flow["transformKql"] == "source"
        assert flow["streams"] == [EMULATOR_STREAM] == [flow["outputStream"]]
        assert rule["kind"] == "Direct"
        assert (
            "3913510d-42f4-4e42-8a64-420c390055eb"
            in template["variables"]["monitoringMetricsPublisher"]
        )
        assert role["type"] == "Microsoft.Authorization/roleAssignments"
        assert AzureMonitorLogsSinkSettings.__dataclass_fields__["stream"].default == (
            EMULATOR_STREAM
        )

    def test_importing_the_sink_does_not_import_the_sdk(self) -> None:
        """azure.monitor.ingestion and azure.core's pipeline are imported when a sink opens."""
        code = (
            "import sys, monitor.sinks_azure_logs\n"
            "print(sorted(m for m in sys.modules if m.startswith('azure.monitor')))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        )
        assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Item events and long-running jobs


def item_events() -> dict[str, dict[str, Any]]:
    """One valid event of each new type (times near `EMITTED_AT`, so not restamped)."""
    at = EMITTED_AT
    point = at - timedelta(hours=30)
    item = replace(ie.make_item(), last_recovery_point=point, last_backup_time=point)
    run_at = at - timedelta(hours=2)
    changes: dict[str, Any] = {
        "missed": BackupMissed(
            item=item,
            policy=ie.make_policy(),
            run=ExpectedRun(at=run_at, kind=RunKind.BACKUP),
            deadline=run_at + timedelta(hours=1),
        ),
        "breached": RpoBreached(
            item=item,
            last_recovery_point=point,
            allowed_s=90_000.0,
            breached_at=point + timedelta(seconds=90_000),
        ),
        "restored": RpoRestored(item=item, last_recovery_point=point, allowed_s=90_000.0),
        "protection": ProtectionChanged(
            item=replace(item, protection_state="ProtectionStopped", health_status="Passed"),
            previous_state="Protected",
            previous_health="ActionRequired",
            seq=4,
        ),
        "long_running": replace(ie.long_running(reason="median"), item=item),
        "long_running_alone": ie.long_running(item=False),
    }
    events = {
        key: render_change(change, vault=VAULT, emitted_at=at) for key, change in changes.items()
    }
    for event in events.values():
        validate(event)
    return events


DCR_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None,
    "real": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "dynamic": lambda v: isinstance(v, dict),
}


class TestItemRows:
    """The rows of item events and long-running jobs."""

    def test_missed_run(self) -> None:
        """The run's columns, the item in the shared ones, no job."""
        event = item_events()["missed"]
        row = event_row(event, now=EMITTED_AT)
        assert list(row) == list(ROW_COLUMNS)
        run = event["expected_run"]
        assert (row["EventType"], row["EventId"]) == (
            "backup_item.backup_missed",
            event["event_id"],
        )
        assert (row["RunDueTime"], row["RunDeadline"]) == (run["due_time"], run["deadline"])
        assert (row["RunKind"], row["PolicyTimeZone"]) == ("backup", ie.ZONE)
        assert (row["PolicyId"], row["PolicyName"]) == (ie.POLICY_ID, "daily-2200")
        assert (row["ProtectedItemId"], row["ItemName"]) == (ie.ITEM_ID, ie.ITEM_NAME)
        assert (row["Entity"], row["DatasourceType"]) == ("vm-web-01", "VM")
        assert row["BackupManagementType"] == "AzureIaasVM"
        assert (row["ProtectionState"], row["HealthStatus"]) == ("Protected", "Passed")
        assert row["LastRecoveryPoint"] == event["item"]["last_recovery_point"]
        assert row["JobId"] is row["Status"] is row["RpoAgeSeconds"] is None
        assert row["DetectionLagSeconds"] == event["detection_lag_s"] == 3600.0
        assert row["Event"] == event

    def test_rpo(self) -> None:
        """A breach and a restore fill the RPO columns; only the breach has its time."""
        events = item_events()
        breach = event_row(events["breached"], now=EMITTED_AT)
        restored = event_row(events["restored"], now=EMITTED_AT)
        assert breach["RpoAllowedSeconds"] == restored["RpoAllowedSeconds"] == 90_000.0
        assert breach["RpoAgeSeconds"] == restored["RpoAgeSeconds"] == 30 * 3600.0
        assert breach["RpoBreachedAt"] == events["breached"]["rpo"]["breached_at"]
        assert restored["RpoBreachedAt"] is None
        assert breach["LastRecoveryPoint"] == events["breached"]["rpo"]["last_recovery_point"]

    def test_protection(self) -> None:
        """The new and previous state and health."""
        row = event_row(item_events()["protection"], now=EMITTED_AT)
        assert (row["ProtectionState"], row["PreviousProtectionState"]) == (
            "ProtectionStopped",
            "Protected",
        )
        assert (row["HealthStatus"], row["PreviousHealthStatus"]) == ("Passed", "ActionRequired")

    def test_long_running(self) -> None:
        """The job's columns, its item, and why it is long-running; without an item, the
        item's columns are null."""
        events = item_events()
        row = event_row(events["long_running"], now=EMITTED_AT)
        job = events["long_running"]["job"]
        assert (row["JobId"], row["Status"], row["Entity"]) == (
            job["id"],
            "InProgress",
            "vm-web-01",
        )
        assert (row["ProtectedItemId"], row["ItemName"]) == (ie.ITEM_ID, ie.ITEM_NAME)
        assert (row["ElapsedSeconds"], row["ThresholdSeconds"]) == (90_306.123, 86_400.0)
        assert (row["LongRunningReason"], row["MedianSeconds"], row["MedianSamples"]) == (
            "median",
            3000.0,
            7,
        )
        alone = event_row(events["long_running_alone"], now=EMITTED_AT)
        assert alone["ProtectedItemId"] is alone["ItemName"] is alone["LastRecoveryPoint"] is None
        assert alone["JobId"] == job["id"]

    def test_a_job_event_names_its_item(self) -> None:
        """`job.protected_item_id` of a job event is its `ProtectedItemId`."""
        (change,) = diff_jobs({}, [parse_job_details(p.IAAS_DETAILS, VAULT).job], EMITTED_AT)
        event = render_event(
            change, vault=VAULT, details=None, emitted_at=EMITTED_AT, protected_item_id=ie.ITEM_ID
        )
        validate(event)
        assert event_row(event, now=EMITTED_AT)["ProtectedItemId"] == ie.ITEM_ID
        assert event_row(rendered_events()[-1], now=EMITTED_AT)["ProtectedItemId"] is None

    def test_every_value_has_its_columns_type(self) -> None:
        """Every row of every type holds, in each column, null or a value of the type the
        shipped rule declares for it."""
        template = json.loads((REPO / "docs" / "azure-monitor-logs" / "dcr.json").read_text())
        stream = template["resources"][1]["properties"]["streamDeclarations"][EMULATOR_STREAM]
        types = {c["name"]: c["type"] for c in stream["columns"]}
        events = [*rendered_events(), *item_events().values()]
        filled: set[str] = set()
        for event in events:
            for column, value in event_row(event, now=EMITTED_AT).items():
                if value is not None:
                    filled.add(column)
                    assert DCR_TYPES[types[column]](value), (column, value)
        # Each column is filled by some event (these job events are all first sightings).
        assert filled | {"PreviousStatus"} == set(ROW_COLUMNS)

    async def test_item_rows_arrive(
        self,
        emu: Emulator,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        client_ssl_context: ssl.SSLContext,
        http: aiohttp.ClientSession,
    ) -> None:
        """The new types go through the Logs Ingestion API like job events."""
        events = list(item_events().values())
        async with make_sink(emu, credential, azure, client_ssl_context) as sink:
            await sink.deliver(outbox(events))
        rows = rows_of(await received(http, emu))
        assert [r["EventType"] for r in rows] == [e["event"] for e in events]
        assert [r["Event"] for r in rows] == events
