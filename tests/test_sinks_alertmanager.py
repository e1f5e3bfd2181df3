"""Tests of the Alertmanager sink against a real Alertmanager, loopback stubs, and its mapping."""

from __future__ import annotations

import re
import ssl
import subprocess
import tomllib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings

from monitor.clock import SystemClock
from monitor.config_sinks import AlertmanagerSinkSettings, SinkFilter
from monitor.core.diff import JobStateChanged
from monitor.core.item_watch import (
    BackupMissed,
    LongRunning,
    ProtectionChanged,
    RpoBreached,
    RpoRestored,
)
from monitor.core.jobs import JobDetails, JobError, JobKey, JobStatus, JobTask
from monitor.core.schedule import ExpectedRun, RunKind
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.errors import ConfigError, DeliveryError
from monitor.events import encode_events, format_event_time, render_change, render_event
from monitor.outbox import OutboxEvent
from monitor.sink_http import open_sink_session
from monitor.sinks_alertmanager import (
    ALERT_NAMES,
    HOLD_S,
    JOB_LONG_RUNNING,
    OWN_LABELS,
    Alert,
    AlertmanagerSink,
    AlertOptions,
    alerts_of,
    portal_link,
)
from tests import test_item_events as ie
from tests.alertmanager import Alertmanager, _alertmanager, free_port
from tests.binaries import find_binary
from tests.core import payloads as p
from tests.fakes import BV_DISK_ID, rendered_backup_vault_job_event, rendered_job_event
from tests.test_sinks import changes, validate

__all__ = ["_alertmanager"]  # the `alertmanager` fixture

VAULT = parse_vault_id(p.VAULT_ID, location="westeurope")
BV_VAULT = parse_vault_id(
    f"/subscriptions/{p.SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/"
    "backupVaults/bv1",
    location="westeurope",
)
OTHER_VAULT = parse_vault_id(
    p.VAULT_ID.replace("/vaults/v1", "/vaults/v2").replace("rg-backup", "rg-other")
)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DAY_S = 86_400.0
BAD = ("failed", "cancelled", "succeeded_with_warnings")
STATUS_OF = {
    "succeeded": "Completed",
    "succeeded_with_warnings": "CompletedWithWarnings",
    "failed": "Failed",
    "cancelled": "Cancelled",
    None: "InProgress",
}


def now() -> datetime:
    """Real time: Alertmanager judges `endsAt` against its own clock."""
    return datetime.now(UTC).replace(microsecond=0)


def job_event(
    outcome: str | None,
    *,
    entity: str | None = "vm-web-01",
    operation: str = "Backup",
    job_type: str = "AzureIaaSVMJob",
    vault: VaultRef = VAULT,
    ended: datetime | None = None,
    error: JobError | None = None,
    name: str | None = None,
) -> dict[str, object]:
    """A schema v1 event of a job of `outcome` (None: still running), validated."""
    ended = ended or now()
    terminal = outcome is not None
    task = JobTask(
        name="Take Snapshot",
        status=JobStatus.of("Completed"),
        start_at=None,
        end_at=None,
        duration_s=42.0,
    )
    event = rendered_job_event(
        vault,
        name=name or str(uuid.uuid4()),
        status=STATUS_OF[outcome],
        start=ended - timedelta(minutes=20),
        end=ended if terminal else None,
        emitted_at=ended,
        entity=entity,
        operation=operation,
        job_type=job_type,
        duration="PT20M",
        errors=(() if error is None else (error,)) if terminal else None,
        tasks=(task,),
        property_bag={"VM Name": entity or ""},
    )
    validate(event)
    return event


VM_ERROR = JobError(
    code="UserErrorVmNotFound",
    message="The VM is not found.",
    title=None,
    recommendations=("Check the VM exists.", "Re-protect it."),
)


def outbox(events: Sequence[Mapping[str, object]], *, first_seq: int = 1) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            seq=first_seq + i,
            event_id=str(e["event_id"]),
            committed_at=now(),
            line=encode_events([e]),
        )
        for i, e in enumerate(events)
    ]


def sink_settings(url: str, **overrides: Any) -> AlertmanagerSinkSettings:
    return AlertmanagerSinkSettings(type="alertmanager", name="am", url=url, **overrides)


@asynccontextmanager
async def sink_at(url: str, **overrides: Any) -> AsyncIterator[AlertmanagerSink]:
    async with open_sink_session(ssl.create_default_context()) as session:
        sink = AlertmanagerSink(
            sink_settings(url, **overrides), session=session, clock=SystemClock()
        )
        try:
            yield sink
        finally:
            await sink.aclose()
            assert not session.closed  # the session is the caller's


async def listed(am: Alertmanager, *filters: str) -> list[dict[str, Any]]:
    """Alertmanager's active alerts, read off the event loop."""
    return await anyio.to_thread.run_sync(lambda: am.alerts(active=True, filters=filters))


async def received_resolved(am: Alertmanager) -> float:
    return await anyio.to_thread.run_sync(
        lambda: am.metric("alertmanager_alerts_received_total", status="resolved", version="v2")
    )


def expected_labels(event: Mapping[str, Any], outcome: str) -> dict[str, str]:
    """The label set the docs promise, computed apart from the sink (an oracle)."""
    job, vault = event["job"], event["vault"]
    labels = {
        "alertname": ALERT_NAMES[outcome],
        "subscription_id": vault["subscription_id"],
        "resource_group": vault["resource_group"],
        "vault": vault["name"],
        "vault_kind": vault.get("kind") or "recovery_services",
        "entity": job["entity"],
        "job_type": job["type"],
        "datasource_type": job.get("datasource_type"),
        "operation": job["operation"],
        "outcome": outcome,
    }
    return {k: v for k, v in labels.items() if v}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------------------------
# Against the real Alertmanager


class TestRealAlertmanager:
    """What a real Alertmanager holds after the sink posted."""

    async def test_failed_job_fires_with_labels_and_annotations(
        self, alertmanager: Alertmanager
    ) -> None:
        """A failed job becomes one active alert: labels, annotations, times and link."""
        ended = now() - timedelta(minutes=5)
        event = job_event("failed", ended=ended, error=VM_ERROR)
        async with sink_at(alertmanager.url, resolve_after_s=3600) as sink:
            await sink.deliver(outbox([event]))
        (alert,) = await listed(alertmanager)
        assert alert["labels"] == {
            "alertname": "BackupJobFailed",
            "subscription_id": p.SUB,
            "resource_group": "rg-backup",
            "vault": "v1",
            "vault_kind": "recovery_services",
            "entity": "vm-web-01",
            "job_type": "AzureIaaSVMJob",
            "operation": "Backup",
            "outcome": "failed",
        }
        job: Any = event["job"]
        annotations = alert["annotations"]
        assert annotations == {
            "summary": "Backup of vm-web-01 failed in vault v1",
            "description": annotations["description"],
            "error_code": "UserErrorVmNotFound",
            "error_message": "The VM is not found.",
            "recommendation": "Check the VM exists. Re-protect it.",
            "job_id": job["id"],
            "job_resource_id": job["resource_id"],
            "vault_id": p.VAULT_ID,
            "start_time": job["start_time"],
            "end_time": job["end_time"],
            "duration_s": "1200.0",
            "event_id": event["event_id"],
        }
        assert job["id"] in annotations["description"]
        assert "UserErrorVmNotFound: The VM is not found." in annotations["description"]
        assert parse(alert["startsAt"]) == ended
        assert parse(alert["endsAt"]) == ended + timedelta(seconds=3600)
        assert alert["generatorURL"] == f"https://portal.azure.com/#@/resource{p.VAULT_ID}/overview"
        assert alert["status"]["state"] in ("active", "unprocessed")

    async def test_backup_vault_job_fires_with_its_kind_and_datasource(
        self, alertmanager: Alertmanager
    ) -> None:
        """A failed Backup vault job: vault_kind and datasource_type labels; its datasource,
        backup instance and policy as annotations."""
        ended = now() - timedelta(minutes=5)
        event = rendered_backup_vault_job_event(
            BV_VAULT,
            name=str(uuid.uuid4()),
            status="Failed",
            start=ended - timedelta(minutes=3),
            end=ended,
            emitted_at=ended,
            errors=(VM_ERROR,),
        )
        validate(event)
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([event]))
        (alert,) = await listed(alertmanager, 'vault_kind="backup_vault"')
        assert alert["labels"] == {
            "alertname": "BackupJobFailed",
            "subscription_id": p.SUB,
            "resource_group": "rg-backup",
            "vault": "bv1",
            "vault_kind": "backup_vault",
            "entity": "disk-data-01",
            "job_type": "AzureBackupJob",
            "datasource_type": "Microsoft.Compute/disks",
            "operation": "Backup",
            "outcome": "failed",
        }
        job: Any = event["job"]
        annotations = alert["annotations"]
        assert annotations["summary"] == "Backup of disk-data-01 failed in vault bv1"
        assert annotations["datasource_id"] == BV_DISK_ID
        assert annotations["backup_instance"] == "disk-data-01"
        assert annotations["backup_instance_id"] == job["backup_instance_id"]
        assert annotations["policy_name"] == "policy-disks-daily"
        assert annotations["vault_id"] == BV_VAULT.id

    def test_event_from_before_backup_vaults_is_a_recovery_services_item(self) -> None:
        """An event of the outbox written before Backup vaults (no vault.kind, no datasource
        fields) gets the labels the same item's new events get."""
        event = job_event("failed", error=VM_ERROR)
        old = orjson.loads(orjson.dumps(event))
        del old["vault"]["kind"]
        for key in ("datasource_type", "datasource_name", "datasource_id", "backup_instance"):
            del old["job"][key]
        del old["job"]["backup_instance_id"], old["job"]["policy_name"]
        validate(old)
        assert [dict(a.labels) for a in alerts_of(old, OPTIONS)] == [
            dict(a.labels) for a in alerts_of(event, OPTIONS)
        ]

    async def test_reposting_a_batch_holds_each_alert_once(
        self, alertmanager: Alertmanager
    ) -> None:
        """The same batch posted twice: one alert per label set, the same times."""
        events = [
            job_event("failed", entity="vm-a"),
            job_event("cancelled", entity="vm-b"),
            job_event("succeeded_with_warnings", entity="vm-c", vault=OTHER_VAULT),
            job_event(None, entity="vm-d"),
        ]
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox(events))
            first = await listed(alertmanager)
            await sink.deliver(outbox(events))
        second = await listed(alertmanager)
        names = sorted((a["labels"]["alertname"], a["labels"]["entity"]) for a in second)
        assert names == [
            ("BackupJobCancelled", "vm-b"),
            ("BackupJobCompletedWithWarnings", "vm-c"),
            ("BackupJobFailed", "vm-a"),
        ]
        assert len({a["fingerprint"] for a in second}) == 3
        by_print = {a["fingerprint"]: (a["startsAt"], a["endsAt"]) for a in first}
        assert {a["fingerprint"]: (a["startsAt"], a["endsAt"]) for a in second} == by_print

    async def test_success_resolves_the_failure(self, alertmanager: Alertmanager) -> None:
        """A later success of the same item takes its failure off the active alerts; another
        item's failure stays."""
        failed = job_event("failed", ended=now() - timedelta(minutes=30))
        other = job_event("failed", entity="vm-other", ended=now() - timedelta(minutes=30))
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([failed, other]))
            assert len(await listed(alertmanager)) == 2
            resolved_before = await received_resolved(alertmanager)
            await sink.deliver(outbox([job_event("succeeded")], first_seq=3))
        (left,) = await listed(alertmanager)
        assert left["labels"]["entity"] == "vm-other"
        # One resolving alert per bad outcome, whether it fired or not, and the end of a
        # long-running job (every terminal job ends one, if there was one).
        assert await received_resolved(alertmanager) == resolved_before + 4

    async def test_resolving_an_unseen_label_set_then_failing(
        self, alertmanager: Alertmanager
    ) -> None:
        """Alertmanager takes a resolved alert it never saw (200, not listed); a later failure
        of that item fires."""
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([job_event("succeeded", ended=now() - timedelta(hours=1))]))
            assert await listed(alertmanager) == []
            assert await received_resolved(alertmanager) == 4
            await sink.deliver(outbox([job_event("failed")], first_seq=2))
        (alert,) = await listed(alertmanager)
        assert alert["labels"]["alertname"] == "BackupJobFailed"

    async def test_failure_after_a_resolution_fires_again(self, alertmanager: Alertmanager) -> None:
        """Fail, succeed, fail again: the item's failure alert is active again."""
        start = now() - timedelta(hours=2)
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([job_event("failed", ended=start)]))
            await sink.deliver(outbox([job_event("succeeded", ended=start + timedelta(hours=1))]))
            assert await listed(alertmanager) == []
            again = now()
            await sink.deliver(outbox([job_event("failed", ended=again)]))
        (alert,) = await listed(alertmanager)
        assert parse(alert["startsAt"]) == again

    async def test_ends_at_is_what_alertmanager_keeps(self, alertmanager: Alertmanager) -> None:
        """endsAt is the job's end plus resolve_after_s; an alert past it is never listed."""
        recent = now() - timedelta(minutes=1)
        old = now() - timedelta(hours=3)
        async with sink_at(alertmanager.url, resolve_after_s=2 * 3600) as sink:
            events = [job_event("failed", ended=recent), job_event("failed", entity="x", ended=old)]
            await sink.deliver(outbox(events))
        (alert,) = await listed(alertmanager)
        assert alert["labels"]["entity"] == "vm-web-01"
        assert parse(alert["endsAt"]) == recent + timedelta(hours=2)

    async def test_without_resolve_on_success_a_success_posts_nothing(
        self, alertmanager: Alertmanager
    ) -> None:
        """resolve_on_success = false: the failure stays active after a success, which only
        ends the item's long-running job alert (if there is one)."""
        async with sink_at(alertmanager.url, resolve_on_success=False) as sink:
            await sink.deliver(outbox([job_event("failed", ended=now() - timedelta(minutes=9))]))
            await sink.deliver(outbox([job_event("succeeded")], first_seq=2))
        assert len(await listed(alertmanager)) == 1
        # Both jobs ended: each resolves the item's long-running job alert, nothing else.
        assert await received_resolved(alertmanager) == 2

    async def test_warnings_resolve_a_failure_and_fire_their_own(
        self, alertmanager: Alertmanager
    ) -> None:
        """A job completed with warnings resolves the item's failure, and its warning fires."""
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([job_event("failed", ended=now() - timedelta(minutes=9))]))
            await sink.deliver(outbox([job_event("succeeded_with_warnings")], first_seq=2))
        (alert,) = await listed(alertmanager)
        assert alert["labels"]["alertname"] == "BackupJobCompletedWithWarnings"

    async def test_an_older_success_does_not_resolve_a_newer_failure(
        self, alertmanager: Alertmanager
    ) -> None:
        """Events newest first (as a poll lists them), in one batch or split over two: the
        failure that came last in time stays active."""
        late, early = now() - timedelta(minutes=1), now() - timedelta(minutes=30)
        async with sink_at(alertmanager.url) as sink:
            one = [
                job_event("failed", entity="a", ended=late),
                job_event("succeeded", entity="a", ended=early),
            ]
            await sink.deliver(outbox(one))
            await sink.deliver(outbox([job_event("failed", entity="b", ended=late)]))
            await sink.deliver(outbox([job_event("succeeded", entity="b", ended=early)]))
        alerts = await listed(alertmanager)
        assert sorted(a["labels"]["entity"] for a in alerts) == ["a", "b"]

    async def test_extra_labels_are_on_every_alert(self, alertmanager: Alertmanager) -> None:
        """`labels` from the settings are added to the sink's own."""
        extra = MappingProxyType({"team": "storage", "severity": "page"})
        async with sink_at(alertmanager.url, labels=extra) as sink:
            await sink.deliver(outbox([job_event("failed"), job_event("cancelled", entity="b")]))
        alerts = await listed(alertmanager, 'team="storage"')
        assert len(alerts) == 2
        for alert in alerts:
            # datasource_type is a Backup vault job's label only, protected_item an item's.
            assert set(alert["labels"]) == set(OWN_LABELS) - {
                "datasource_type",
                "protected_item",
            } | {
                "team",
                "severity",
            }
            assert alert["labels"]["severity"] == "page"

    async def test_empty_values_are_dropped_by_alertmanager(
        self, alertmanager: Alertmanager
    ) -> None:
        """Why the sink leaves out unknown labels: Alertmanager drops an empty value (an item
        without an entity or operation is labelled without them)."""
        event = job_event("failed", entity=None, operation="")
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([event]))
        (alert,) = await listed(alertmanager)
        assert "entity" not in alert["labels"]
        assert "operation" not in alert["labels"]
        assert alert["annotations"]["summary"] == "AzureIaaSVMJob of an item failed in vault v1"
        raw = [
            {
                "labels": {"alertname": "Probe", "empty": ""},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "2099-01-01T00:00:00Z",
            }
        ]
        request = urllib.request.Request(
            f"{alertmanager.url}/api/v2/alerts",
            data=orjson.dumps(raw),
            headers={"Content-Type": "application/json"},
        )
        await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(request, timeout=10).close())
        (probe,) = await listed(alertmanager, 'alertname="Probe"')
        assert probe["labels"] == {"alertname": "Probe"}


class TestNotifications:
    """What reaches a receiver routed by the real Alertmanager."""

    async def test_fire_then_resolve_reaches_a_webhook(self, tmp_path: Path) -> None:
        """A failure notifies `firing`, its success `resolved`; a resolution of an item that
        never fired notifies nothing (its first notification is a later firing)."""
        hook = Hook()

        async with serving(hook) as hook_url:
            am = Alertmanager(tmp_path / "am", webhook_url=hook_url)
            await anyio.to_thread.run_sync(am.start)
            try:
                async with sink_at(am.url) as sink:
                    await sink.deliver(outbox([job_event("succeeded", entity="never")]))
                    await sink.deliver(outbox([job_event("failed", entity="vm")], first_seq=2))
                    await hook.wait_for(("vm", "BackupJobFailed", "firing"))
                    await sink.deliver(outbox([job_event("succeeded", entity="vm")], first_seq=3))
                    await hook.wait_for(("vm", "BackupJobFailed", "resolved"))
                    await sink.deliver(outbox([job_event("failed", entity="never")], first_seq=4))
                    await hook.wait_for(("never", "BackupJobFailed", "firing"))
            finally:
                await anyio.to_thread.run_sync(am.stop)
        first_of_never = next(r for r in hook.received if r[0] == "never")
        assert first_of_never == ("never", "BackupJobFailed", "firing")
        assert [r for r in hook.received if r[0] == "vm"][:2] == [
            ("vm", "BackupJobFailed", "firing"),
            ("vm", "BackupJobFailed", "resolved"),
        ]


class Hook:
    """A webhook receiver: (its `key` label, by default entity; alertname; status) of every
    alert it was notified of."""

    def __init__(self, key: str = "entity") -> None:
        self.received: list[tuple[str, str, str]] = []
        self._key = key
        self._changed = anyio.Event()

    async def __call__(self, request: web.Request) -> web.Response:
        body = await request.json()
        for alert in body["alerts"]:
            labels = alert["labels"]
            self.received.append((labels[self._key], labels["alertname"], alert["status"]))
        self._changed.set()
        self._changed = anyio.Event()
        return web.Response()

    async def wait_for(self, wanted: tuple[str, str, str]) -> None:
        with anyio.fail_after(20):
            while wanted not in self.received:
                await self._changed.wait()


# --------------------------------------------------------------------------------------------
# Against loopback stubs


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve `handler` for every path on a free loopback port; yields its base URL."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Stub:
    """Answers every request with `status`; keeps what it was sent."""

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status, self.headers = status, dict(headers or {})
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    async def __call__(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            (
                request.method,
                request.path,
                dict(request.headers),
                orjson.loads(body) if body else None,
            )
        )
        return web.Response(
            status=self.status, text="stub says no" * (self.status >= 300), headers=self.headers
        )


class TestRequests:
    """What the sink sends, and what it makes of the answers."""

    async def test_one_post_per_batch(self) -> None:
        """A batch is one POST to /api/v2/alerts of a JSON array, in time order."""
        stub = Stub()
        early, late = now() - timedelta(hours=1), now()
        events = [
            job_event("failed", entity="a", ended=late),
            job_event("succeeded", entity="b", ended=early),
        ]
        async with serving(stub) as url, sink_at(url + "/") as sink:
            await sink.deliver(outbox(events))
        ((method, path, headers, body),) = stub.requests
        assert (method, path) == ("POST", "/api/v2/alerts")
        assert headers["Content-Type"] == "application/json"
        assert re.fullmatch(r"[0-9a-f]{32}", headers["Idempotency-Key"])
        assert [a["labels"]["alertname"] for a in body] == [
            "BackupJobLongRunning",
            "BackupJobFailed",
            "BackupJobCancelled",
            "BackupJobCompletedWithWarnings",
            "BackupJobLongRunning",
            "BackupJobFailed",
        ]
        assert [a["labels"]["entity"] for a in body] == ["b", "b", "b", "b", "a", "a"]
        assert all(a["startsAt"] == a["endsAt"] for a in body[:5])

    async def test_running_jobs_and_other_events_make_no_request(self) -> None:
        """In-progress events, unmapped event types and other schema versions pass through."""
        stub = Stub()
        running = job_event(None)
        # Deliberately not schema v1 job events: what a later schema or issue may put in the
        # outbox, which this sink has no mapping for.
        other_type = {**job_event("failed"), "event": "backup_item.future_thing"}
        other_version = {**job_event("failed"), "schema_version": 2}
        async with serving(stub) as url, sink_at(url) as sink:
            await sink.deliver(outbox([running, other_type, other_version]))
            assert await sink.delivered_ids() == set()
        assert stub.requests == []

    async def test_connection_refused_is_retryable(self) -> None:
        """Nobody listening: a retryable DeliveryError naming the sink, not the URL."""
        url = f"http://user:secret@127.0.0.1:{free_port()}"
        async with sink_at(url) as sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox([job_event("failed")]))
        error = caught.value
        assert (error.permanent, error.status, error.delivered) == (False, None, 0)
        assert "alertmanager am" in str(error)
        assert "secret" not in str(error)

    @pytest.mark.parametrize(
        ("status", "permanent", "retry_after"),
        [
            (500, False, None),
            (503, False, 7.0),
            (429, False, 7.0),
            (408, False, 7.0),
            (400, True, None),
            (422, True, None),
        ],
    )
    async def test_answers(self, status: int, permanent: bool, retry_after: float | None) -> None:
        """5xx, 408 and 429 retry (with Retry-After); another 4xx is permanent."""
        headers = {"Retry-After": "7"} if retry_after else {}
        stub = Stub(status, headers)
        async with serving(stub) as url, sink_at(url) as sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox([job_event("failed")]))
        error = caught.value
        assert (error.status, error.permanent, error.retry_after_s) == (
            status,
            permanent,
            retry_after,
        )
        assert len(stub.requests) == 1

    async def test_malformed_event_is_permanent_after_the_head(self) -> None:
        """An event without a job's shape: the alerts before it are posted, it is refused
        for what it is (delivered = its index)."""
        stub = Stub()
        broken = job_event("failed")
        broken["job"] = {"outcome": "failed"}
        async with serving(stub) as url, sink_at(url) as sink:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(outbox([job_event("failed"), broken, job_event("failed")]))
        assert (caught.value.delivered, caught.value.permanent) == (1, True)
        ((_, _, _, body),) = stub.requests
        assert [a["labels"]["alertname"] for a in body] == [
            "BackupJobLongRunning",
            "BackupJobFailed",
        ]


class TestConstruction:
    """Settings the sink refuses when it is built."""

    @pytest.mark.parametrize(
        ("labels", "problem"),
        [
            ({"bad-name": "x"}, "not a valid Alertmanager label name"),
            ({"0team": "x"}, "not a valid Alertmanager label name"),
            ({"": "x"}, "not a valid Alertmanager label name"),
            ({"__meta": "x"}, "reserved"),
            ({"vault": "mine"}, "the sink sets this label itself"),
            ({"alertname": "Mine"}, "the sink sets this label itself"),
            ({"team": ""}, "non-empty"),
        ],
    )
    async def test_bad_extra_labels(self, labels: dict[str, str], problem: str) -> None:
        """Each refusal names the label's key and the problem."""
        with pytest.raises(ConfigError) as caught:
            async with sink_at("http://127.0.0.1:9", labels=MappingProxyType(labels)):
                pass
        assert caught.value.key == f"sinks.am.labels.{next(iter(labels))}"
        assert problem in caught.value.problem

    @pytest.mark.parametrize(
        ("overrides", "key"),
        [
            ({"url": "ftp://am:21"}, "sinks.am.url"),
            ({"url": "alertmanager:9093"}, "sinks.am.url"),
            ({"generator_url": "portal"}, "sinks.am.generator_url"),
        ],
    )
    async def test_bad_urls(self, overrides: dict[str, str], key: str) -> None:
        """A URL that is not http(s) is refused, named by its key and never quoted."""
        url = overrides.pop("url", "http://127.0.0.1:9")
        with pytest.raises(ConfigError) as caught:
            async with sink_at(url, **overrides):
                pass
        assert caught.value.key == key
        assert url not in str(caught.value)


# --------------------------------------------------------------------------------------------
# The mapping, for any event


OPTIONS = AlertOptions(resolve_after_s=DAY_S, labels=MappingProxyType({"team": "t"}))


class TestMapping:
    """Properties of `alerts_of` over every renderable event."""

    @settings(max_examples=150, deadline=None)
    @given(case=changes())
    def test_labels_are_valid_and_a_function_of_the_item(
        self, case: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime]
    ) -> None:
        """Valid names, non-empty string values, the documented set; times in order."""
        change, vault, details, emitted_at = case
        event = render_event(change, vault=vault, details=details, emitted_at=emitted_at)
        validate(event)
        alerts = alerts_of(event, OPTIONS)
        outcome: Any = event["job"]["outcome"]  # type: ignore[index]
        wanted = {ALERT_NAMES[outcome]} if outcome in ALERT_NAMES else set()
        if outcome in ("succeeded", "succeeded_with_warnings"):
            wanted |= {ALERT_NAMES["failed"], ALERT_NAMES["cancelled"]}
        if outcome == "succeeded":
            wanted.add(ALERT_NAMES["succeeded_with_warnings"])
        if outcome is not None:
            wanted.add(JOB_LONG_RUNNING)  # every terminal job ends its long-running alert
        assert {a.labels["alertname"] for a in alerts} == wanted
        assert len(alerts) == len(wanted)
        for alert in alerts:
            for name, value in alert.labels.items():
                assert LABEL_NAME.fullmatch(name)
                assert isinstance(value, str)
                assert value
            assert all(isinstance(v, str) and v for v in alert.annotations.values())
            assert alert.starts_at <= alert.ends_at
            if alert.labels["alertname"] == JOB_LONG_RUNNING:
                item = expected_labels(event, "failed")
                del item["outcome"]
                assert dict(alert.labels) == {**item, "alertname": JOB_LONG_RUNNING, "team": "t"}
                assert alert.resolving
                continue
            bad = alert.labels["outcome"]
            assert dict(alert.labels) == {**expected_labels(event, bad), "team": "t"}
            assert alert.resolving == (bad != outcome)
            body = orjson.loads(orjson.dumps(alert.to_json()))
            assert set(body) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}

    @settings(max_examples=50, deadline=None)
    @given(case=changes(), other=changes())
    def test_what_is_not_the_item_changes_no_label(
        self,
        case: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime],
        other: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime],
    ) -> None:
        """Another job (id, times, errors, details) of the same item and outcome: same labels."""
        change, vault, details, emitted_at = case
        other_change, _, other_details, other_at = other
        event = render_event(change, vault=vault, details=details, emitted_at=emitted_at)
        twin_job = replace(
            other_change.job,
            key=JobKey(vault_key=vault.key, job_name=other_change.job.key.job_name),
            resource_id=f"{vault.id}/backupJobs/{other_change.job.name}",
            job_type=change.job.job_type,
            operation=change.job.operation,
            entity=change.job.entity,
            datasource_type=change.job.datasource_type,
            status=change.job.status,
        )
        twin_details = None if other_details is None else replace(other_details, job=twin_job)
        twin = render_event(
            replace(other_change, vault_key=vault.key, job=twin_job),
            vault=vault,
            details=twin_details,
            emitted_at=other_at,
        )
        validate(twin)
        labels = [dict(a.labels) for a in alerts_of(event, OPTIONS)]
        assert labels == [dict(a.labels) for a in alerts_of(twin, OPTIONS)]


@pytest.fixture(name="shared_alertmanager", scope="class")
def _shared_alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path_factory.mktemp("am")) as instance:
        yield instance


class TestAlertmanagerTakesEveryAlert:
    """The real Alertmanager accepts every alert the mapping makes."""

    @settings(max_examples=60, deadline=None)
    @given(case=changes())
    def test_accepted(
        self,
        shared_alertmanager: Alertmanager,
        case: tuple[JobStateChanged, VaultRef, JobDetails | None, datetime],
    ) -> None:
        """POST /api/v2/alerts answers 200 for the alerts of any event."""
        change, vault, details, emitted_at = case
        event = render_event(change, vault=vault, details=details, emitted_at=emitted_at)
        alerts: list[Alert] = alerts_of(event, OPTIONS)
        if not alerts:
            return
        request = urllib.request.Request(
            f"{shared_alertmanager.url}/api/v2/alerts",
            data=orjson.dumps([a.to_json() for a in alerts]),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


def test_portal_link() -> None:
    """The vault's page in the portal; a trailing slash of the base is not doubled."""
    assert portal_link("https://portal.azure.us/", "/subscriptions/s/x") == (
        "https://portal.azure.us/#@/resource/subscriptions/s/x/overview"
    )


# --------------------------------------------------------------------------------------------
# The docs


REPO = Path(__file__).resolve().parent.parent
DOCS_HEADING = '## Alertmanager (`type = "alertmanager"`)'


def docs_section() -> str:
    """The sink's section of docs/sinks.md."""
    text = (REPO / "docs" / "sinks.md").read_text(encoding="utf-8")
    assert DOCS_HEADING in text, f"no {DOCS_HEADING!r} in docs/sinks.md"
    section = text[text.index(DOCS_HEADING) + len(DOCS_HEADING) :]
    return section.split("\n## ", 1)[0]


class TestDocs:
    """The docs say what the code does."""

    def test_options_table_names_every_setting_with_its_default(self) -> None:
        """Every field of AlertmanagerSinkSettings is in the table, with its default."""
        options = docs_section().split("### Options", 1)[1].split("\n### ", 1)[0]
        documented = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", options, re.M))
        assert set(documented) == {f.name for f in fields(AlertmanagerSinkSettings)}
        defaults = sink_settings("http://am:9093")
        for name, default in documented.items():
            value = getattr(defaults, name)
            if name in ("type", "name", "url", "filter"):
                continue  # required, or described in words
            if value is None:
                assert default.startswith("none"), name
            elif isinstance(value, bool):
                assert default.startswith(f"`{str(value).lower()}`"), name
            elif isinstance(value, str):
                assert default.startswith(f'`"{value}"`'), name
            elif isinstance(value, Mapping):
                assert default.startswith("`{}`"), name
            else:
                assert float(default.split("`")[1]) == value, name

    def test_recipe_toml_builds_a_sink(self) -> None:
        """The recipe's [[sinks]] entry has only real keys, and builds a sink."""
        (block,) = re.findall(r"```toml\n(.*?)```", docs_section(), re.S)
        (entry,) = tomllib.loads(block)["sinks"]
        filter_ = SinkFilter(**{k: tuple(v) for k, v in entry.pop("filter").items()})
        entry["labels"] = MappingProxyType(entry["labels"])
        settings_ = AlertmanagerSinkSettings(**entry, filter=filter_)
        AlertOptions.of(settings_)

    def test_recipe_yaml_is_a_valid_alertmanager_config(self, tmp_path: Path) -> None:
        """`amtool check-config` accepts every YAML block of the section."""
        amtool = find_binary("amtool", package="prometheus-alertmanager")
        blocks = re.findall(r"```yaml\n(.*?)```", docs_section(), re.S)
        assert blocks
        for index, block in enumerate(blocks):
            path = tmp_path / f"recipe{index}.yml"
            path.write_text(block, encoding="utf-8")
            done = subprocess.run(
                [amtool, "check-config", str(path)], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert 'alertname=~"BackupJob.*"' in block


# --------------------------------------------------------------------------------------------
# Item events and long-running jobs


ITEM_LABELS = {
    "subscription_id": p.SUB,
    "resource_group": "rg-backup",
    "vault": "v1",
    "vault_kind": "recovery_services",
    "protected_item": ie.ITEM_ID.lower(),
}


def missed_event(*, deadline: datetime | None = None) -> dict[str, object]:
    """A missed run whose deadline passed `deadline` (default: a minute ago), validated."""
    deadline = deadline or now() - timedelta(minutes=1)
    change = BackupMissed(
        item=ie.make_item(),
        policy=ie.make_policy(),
        run=ExpectedRun(at=deadline - timedelta(hours=1), kind=RunKind.BACKUP),
        deadline=deadline,
    )
    return item_event(change, at=now())


def breach_event(*, breached_at: datetime, point: datetime | None = None) -> dict[str, object]:
    """An RPO breach of the item since `breached_at`."""
    point = point or breached_at - timedelta(hours=25)
    change = RpoBreached(
        item=ie.make_item(last_recovery_point=point),
        last_recovery_point=point,
        allowed_s=(breached_at - point).total_seconds(),
        breached_at=breached_at,
    )
    return item_event(change, at=now())


def restored_event(*, at: datetime | None = None) -> dict[str, object]:
    """The item's recovery point fresh again (a minute old)."""
    at = at or now()
    point = at - timedelta(minutes=1)
    change = RpoRestored(
        item=ie.make_item(last_recovery_point=point), last_recovery_point=point, allowed_s=90_000
    )
    return item_event(change, at=at)


def protection_event(
    state: str | None,
    health: str | None,
    *,
    previous: tuple[str | None, str | None] = ("Protected", "Passed"),
    seq: int = 1,
) -> dict[str, object]:
    """The item's protection changed to `state` / `health`."""
    change = ProtectionChanged(
        item=ie.make_item(state=state, health=health),
        previous_state=previous[0],
        previous_health=previous[1],
        seq=seq,
    )
    return item_event(change, at=now())


def long_running_event(
    *, at: datetime | None = None, entity: str = "vm-web-01"
) -> dict[str, object]:
    """A job of the item running for 25 hours."""
    at = at or now()
    job = replace(ie.running_job(start=at - timedelta(hours=25)), entity=entity)
    change = LongRunning(
        job=job,
        item=ie.make_item(),
        vault_key=VAULT.key,
        elapsed_s=25 * 3600.0,
        threshold_s=86_400.0,
        reason="absolute",
        median_s=None,
        samples=0,
    )
    return item_event(change, at=at)


def item_event(change: Any, *, at: datetime) -> dict[str, object]:
    event = render_change(change, vault=VAULT, emitted_at=at)
    validate(event)
    return event


def success_of_the_item(
    *, ended: datetime | None = None, item_id: str | None = ie.ITEM_ID
) -> dict[str, object]:
    """A successful job of the item, naming it (or not: `item_id` None)."""
    ended = ended or now()
    change, *_ = changes_of_job("Completed", ended)
    event = render_event(
        change, vault=VAULT, details=None, emitted_at=ended, protected_item_id=item_id
    )
    validate(event)
    return event


def changes_of_job(status: str, ended: datetime) -> list[JobStateChanged]:
    name = str(uuid.uuid4())
    job = replace(
        ie.running_job(start=ended - timedelta(minutes=20)),
        key=JobKey(vault_key=VAULT.key, job_name=name),
        name=name,
        resource_id=f"{VAULT.id}/backupJobs/{name}",
        status=JobStatus.of(status),
        end_at=ended,
        duration_raw="PT20M",
    )
    return [
        JobStateChanged(
            vault_key=VAULT.key, job=job, previous_status=JobStatus.IN_PROGRESS, observed_at=ended
        )
    ]


class TestItemAlerts:
    """Item events and long-running jobs in a real Alertmanager."""

    async def test_rpo_breach_holds_across_sink_restarts_until_restored(
        self, alertmanager: Alertmanager
    ) -> None:
        """A breach fires from its start and stays active past `resolve_after_s`, whatever the
        sink does meanwhile (closed, a new one started, other batches); the restore resolves it."""
        breached_at = now() - timedelta(hours=3)
        async with sink_at(alertmanager.url, resolve_after_s=3600) as sink:
            await sink.deliver(outbox([breach_event(breached_at=breached_at)]))
        (alert,) = await listed(alertmanager)
        assert alert["labels"] == {"alertname": "BackupRpoBreached", **ITEM_LABELS}
        assert parse(alert["startsAt"]) == breached_at
        assert parse(alert["endsAt"]) == breached_at + timedelta(seconds=HOLD_S)
        annotations = alert["annotations"]
        assert (
            annotations["summary"] == "The last recovery point of vm-web-01 is older than allowed"
        )
        assert annotations["item_id"] == ie.ITEM_ID
        assert annotations["breached_at"] == format_event_time(breached_at)
        async with sink_at(alertmanager.url, resolve_after_s=3600) as restarted:
            await restarted.deliver(outbox([job_event("succeeded"), missed_event()], first_seq=2))
            assert {a["labels"]["alertname"] for a in await listed(alertmanager)} == {
                "BackupRpoBreached",
                "BackupMissed",
            }
            await restarted.deliver(outbox([restored_event()], first_seq=4))
        assert [a["labels"]["alertname"] for a in await listed(alertmanager)] == ["BackupMissed"]

    async def test_missed_run_is_resolved_by_a_success_naming_the_item(
        self, alertmanager: Alertmanager
    ) -> None:
        """A missed run fires until `resolve_after_s` after its deadline; a success of a job
        that does not name its item leaves it; one that names it (in any casing) resolves it."""
        deadline = now() - timedelta(minutes=10)
        async with sink_at(alertmanager.url, resolve_after_s=7200) as sink:
            await sink.deliver(outbox([missed_event(deadline=deadline)]))
            (alert,) = await listed(alertmanager)
            assert alert["labels"] == {"alertname": "BackupMissed", **ITEM_LABELS}
            assert parse(alert["startsAt"]) == deadline
            assert parse(alert["endsAt"]) == deadline + timedelta(hours=2)
            assert alert["annotations"]["run_kind"] == "backup"
            assert alert["annotations"]["time_zone"] == ie.ZONE
            await sink.deliver(outbox([success_of_the_item(item_id=None)], first_seq=2))
            assert len(await listed(alertmanager)) == 1
            upper = success_of_the_item(item_id=ie.ITEM_ID.upper())
            await sink.deliver(outbox([upper], first_seq=3))
        assert await listed(alertmanager) == []

    async def test_protection_stopped_then_back(self, alertmanager: Alertmanager) -> None:
        """Stopped fires `BackupProtectionStopped` (not `...Error`); an error state fires
        `...Error` and ends the stop; back to Protected and healthy resolves both."""
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox([protection_event("ProtectionStopped", "Passed")]))
            (alert,) = await listed(alertmanager)
            assert alert["labels"] == {"alertname": "BackupProtectionStopped", **ITEM_LABELS}
            assert alert["annotations"]["protection_state"] == "ProtectionStopped"
            assert alert["annotations"]["previous_state"] == "Protected"
            error = protection_event("ProtectionError", "ActionRequired", seq=2)
            await sink.deliver(outbox([error], first_seq=2))
            (alert,) = await listed(alertmanager)
            assert alert["labels"]["alertname"] == "BackupProtectionError"
            await sink.deliver(
                outbox([protection_event("Protected", "Passed", seq=3)], first_seq=3)
            )
        assert await listed(alertmanager) == []

    async def test_long_running_job_until_it_ends(self, alertmanager: Alertmanager) -> None:
        """A long-running job fires on its item's job labels, held; the job's end resolves it
        (and its failure fires)."""
        async with sink_at(alertmanager.url, resolve_after_s=3600) as sink:
            await sink.deliver(outbox([long_running_event(at=now() - timedelta(hours=2))]))
            (alert,) = await listed(alertmanager)
            assert alert["labels"] == {
                "alertname": "BackupJobLongRunning",
                **{
                    k: v
                    for k, v in expected_labels(job_event("failed"), "failed").items()
                    if k not in ("alertname", "outcome")
                },
            }
            assert alert["annotations"]["reason"] == "absolute"
            assert alert["annotations"]["protected_item_id"] == ie.ITEM_ID
            await sink.deliver(outbox([job_event("failed")], first_seq=2))
        (alert,) = await listed(alertmanager)
        assert alert["labels"]["alertname"] == "BackupJobFailed"

    async def test_an_alertmanager_restart_forgets_a_held_breach(self, tmp_path: Path) -> None:
        """Measured, for docs/sinks.md: Alertmanager keeps alerts in memory only, so a restart
        of Alertmanager (not of the sink) loses a held breach until the next breach event."""
        with Alertmanager(tmp_path / "am") as am:
            async with sink_at(am.url) as sink:
                await sink.deliver(outbox([breach_event(breached_at=now() - timedelta(hours=1))]))
            assert len(await listed(am)) == 1
            await anyio.to_thread.run_sync(am.stop)
            await anyio.to_thread.run_sync(am.start)
            assert await listed(am) == []

    async def test_notifications_of_a_breach(self, tmp_path: Path) -> None:
        """A receiver is told the breach fired, and later that it resolved."""
        hook = Hook(key="vault")
        async with serving(hook) as hook_url:
            am = Alertmanager(tmp_path / "am", webhook_url=hook_url)
            await anyio.to_thread.run_sync(am.start)
            try:
                async with sink_at(am.url) as sink:
                    breach = breach_event(breached_at=now() - timedelta(minutes=5))
                    await sink.deliver(outbox([breach]))
                    await hook.wait_for(("v1", "BackupRpoBreached", "firing"))
                    await sink.deliver(outbox([restored_event()], first_seq=2))
                    await hook.wait_for(("v1", "BackupRpoBreached", "resolved"))
            finally:
                await anyio.to_thread.run_sync(am.stop)


class TestItemMapping:
    """`alerts_of` over item events."""

    @pytest.mark.parametrize(
        ("state", "health", "stopped", "error"),
        [
            ("Protected", "Passed", False, False),
            ("IRPending", "Passed", False, False),
            ("ProtectionConfigured", "ProtectionConfigured", False, False),
            ("ConfiguringProtection", "ConfiguringProtection", False, False),
            ("ProtectionConfigured", "ConfiguringProtectionFailed", False, True),
            ("protected", "ActionSuggested", False, False),
            ("Protected", "ActionRequired", False, True),
            ("ProtectionError", "Passed", False, True),
            ("ProtectionStopped", "Passed", True, False),
            ("ProtectionPaused", None, True, False),
            ("BackupsSuspended", "Invalid", True, False),
            ("SoftDeleted", "ProtectionStopped", True, False),
            (None, "ActionRequired", None, True),
            (None, "Passed", None, False),
            (None, None, None, None),
        ],
    )
    def test_protection(
        self, state: str | None, health: str | None, stopped: bool | None, error: bool | None
    ) -> None:
        """What fires (True), resolves (False) or is not posted (None) for each state/health."""
        alerts = alerts_of(protection_event(state, health), OPTIONS)
        posted = {a.labels["alertname"]: not a.resolving for a in alerts}
        wanted = {"BackupProtectionStopped": stopped, "BackupProtectionError": error}
        assert posted == {k: v for k, v in wanted.items() if v is not None}
        for alert in alerts:
            assert dict(alert.labels) == {
                "alertname": alert.labels["alertname"],
                **ITEM_LABELS,
                "team": "t",
            }

    @pytest.mark.parametrize("which", ["missed", "breach", "restored", "protection", "long"])
    def test_labels_never_hold_a_job_or_a_time(self, which: str) -> None:
        """Two events of the same item at other times, of other jobs: the same labels, valid,
        none of them a time or a job id."""
        first, second = now() - timedelta(hours=5), now() - timedelta(hours=1)
        make: dict[str, Callable[[datetime], dict[str, object]]] = {
            "missed": lambda t: missed_event(deadline=t),
            "breach": lambda t: breach_event(breached_at=t),
            "restored": lambda t: restored_event(at=t),
            "protection": lambda t: protection_event(
                "ProtectionStopped", None, seq=int(t.timestamp())
            ),
            "long": lambda t: long_running_event(at=t),
        }
        events = [make[which](first), make[which](second)]
        labels = [[dict(a.labels) for a in alerts_of(e, OPTIONS)] for e in events]
        assert labels[0] == labels[1]
        assert labels[0]
        texts = {str(v) for e in events for v in _leaves(e)}
        job_ids = {str(e["job"]["id"]) for e in events if "job" in e}  # type: ignore[index]
        for alert_labels in labels[0]:
            for name, value in alert_labels.items():
                assert LABEL_NAME.fullmatch(name)
                assert value
                assert value not in job_ids
                assert not re.search(r"\d{4}-\d{2}-\d{2}T", value)
            assert set(alert_labels) <= set(OWN_LABELS) | {"team"}
        assert texts  # the events did hold times

    def test_an_item_event_without_its_shape_is_refused(self) -> None:
        """A `backup_item.*` event missing its object raises, for the sink to refuse it."""
        event = missed_event()
        del event["expected_run"]
        with pytest.raises(KeyError):
            alerts_of(event, OPTIONS)


def _leaves(value: object) -> Iterator[object]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


class TestAlertmanagerTakesEveryItemAlert:
    """The real Alertmanager accepts the alerts of every item event type."""

    async def test_accepted(self, alertmanager: Alertmanager) -> None:
        """One POST of every new type's alerts answers 200 and lists them."""
        events = [
            missed_event(),
            breach_event(breached_at=now() - timedelta(hours=1)),
            protection_event("ProtectionError", "ActionRequired"),
            long_running_event(),
        ]
        async with sink_at(alertmanager.url) as sink:
            await sink.deliver(outbox(events))
        names = sorted(a["labels"]["alertname"] for a in await listed(alertmanager))
        assert names == [
            "BackupJobLongRunning",
            "BackupMissed",
            "BackupProtectionError",
            "BackupRpoBreached",
        ]
