"""The Azure Monitor Logs sink: each event as one row of a Log Analytics table, through the Logs
Ingestion API (`azure-monitor-ingestion`'s async client).

Rules:
- One row per event: flat columns for KQL (`ROW_COLUMNS`) and `Event`, the whole schema v1 event.
  `TimeGenerated` is the event's `time`; the service replaces a `TimeGenerated` more than 2 days
  old (or over a day ahead) with the time it received the row, so `EventTime` always keeps the
  event's own time and `TimeRestamped` says the row was sent out of that window.
- Each request's JSON is at most `max_request_bytes` (1,000,000: under the documented 1 MB of one
  call, whether that counts bytes as sent or unzipped). The sink chunks the batch itself, in order,
  and sends the chunks one at a time: the first that fails stops the batch, so what was delivered
  is always the batch's head (`DeliveryError.delivered`). A single event over the limit is refused
  before anything is sent for it, as permanent.
- The SDK never retries (`retry_total=0`) or follows redirects: the worker owns backoff. 429
  carries its `Retry-After`; 400 and 413 are permanent; 401 and 403 are retried but logged as a
  credential or role problem (Monitoring Metrics Publisher on the rule); 404 (unknown rule or
  stream) is retried, as a configuration error to be fixed, never a reason to drop events.
- TLS through an aiohttp session on the caller's `ssl.SSLContext`; the SDK is imported when the
  sink is opened, not at process start.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final

import anyio
import structlog

from monitor.config import AzureSettings, CloudName
from monitor.config_sinks import AzureMonitorLogsSinkSettings
from monitor.errors import DeliveryError
from monitor.outbox import OutboxEvent
from monitor.sink_http import RETRYABLE_STATUSES, open_sink_session, retry_after_s

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.monitor.ingestion.aio import LogsIngestionClient

    from monitor.clock import Clock

__all__ = [
    "MAX_REQUEST_BYTES",
    "MONITOR_AUDIENCES",
    "ROW_COLUMNS",
    "AzureMonitorLogsSink",
    "event_row",
    "monitor_audience",
]

log = structlog.get_logger("monitor.sinks_azure_logs")

MONITOR_AUDIENCES: Final[Mapping[CloudName, str]] = {
    "AzureCloud": "https://monitor.azure.com",
    "AzureUSGovernment": "https://monitor.azure.us",
    "AzureChinaCloud": "https://monitor.azure.cn",
}
"""The Logs Ingestion token audience of each cloud (Logs Ingestion API overview)."""

MAX_REQUEST_BYTES: Final = 1_000_000
"""Largest JSON body of one request, before gzip (the service's limit is 1 MB a call)."""

RESTAMP_PAST: Final = timedelta(days=2)
RESTAMP_FUTURE: Final = timedelta(days=1)
"""The service keeps a `TimeGenerated` within [received − 2 days, received + 1 day]."""

ROLE: Final = "Monitoring Metrics Publisher"

ROW_COLUMNS: Final = (
    "TimeGenerated",
    "EventTime",
    "TimeRestamped",
    "EventId",
    "EventType",
    "SchemaVersion",
    "JobId",
    "JobResourceId",
    "JobType",
    "Operation",
    "BackupManagementType",
    "Entity",
    "DatasourceType",
    "DatasourceName",
    "DatasourceId",
    "BackupInstance",
    "BackupInstanceId",
    "PolicyName",
    "Status",
    "PreviousStatus",
    "Outcome",
    "StartTime",
    "EndTime",
    "DurationSeconds",
    "ErrorCode",
    "ErrorMessage",
    "VaultId",
    "VaultName",
    "ResourceGroup",
    "SubscriptionId",
    "Location",
    "VaultKind",
    "VaultTenantId",
    "DetectionLagSeconds",
    "ProtectedItemId",
    "ItemName",
    "ProtectionState",
    "PreviousProtectionState",
    "HealthStatus",
    "PreviousHealthStatus",
    "LastBackupTime",
    "LastRecoveryPoint",
    "PolicyId",
    "RunDueTime",
    "RunDeadline",
    "RunKind",
    "PolicyTimeZone",
    "RpoAllowedSeconds",
    "RpoAgeSeconds",
    "RpoBreachedAt",
    "ElapsedSeconds",
    "ThresholdSeconds",
    "LongRunningReason",
    "MedianSeconds",
    "MedianSamples",
    "Event",
)
"""The columns of every row, in order (the stream declaration of docs/azure-monitor-logs)."""


def monitor_audience(settings: AzureMonitorLogsSinkSettings, azure: AzureSettings) -> str:
    """The audience tokens are asked for: `audience`, else that of `[azure] cloud`."""
    return (settings.audience or MONITOR_AUDIENCES[azure.cloud]).rstrip("/")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _object(event: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = event.get(key)
    return value if isinstance(value, Mapping) else {}


def event_row(event: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """The table row of one schema v1 event, as of `now` (whether it will be restamped).

    A job event fills the job's columns; an item event (no `job`) fills `Entity`,
    `BackupManagementType`, `DatasourceType`, `DatasourceId` and `PolicyName` from its `item`.
    Each type's own object fills its columns (`expected_run` the `Run…` ones, `rpo` the `Rpo…`
    ones, `protection` the protection states, `long_running` the thresholds); the rest are null.
    """
    job = _object(event, "job")
    vault = _object(event, "vault")
    item = _object(event, "item")
    run = _object(event, "expected_run")
    rpo = _object(event, "rpo")
    protection = _object(event, "protection")
    why = _object(event, "long_running")
    # The columns a job and an item share come from the job, else from the item.
    about = job or item
    errors = job.get("errors") or []
    first_error: Mapping[str, Any] = errors[0] if errors and isinstance(errors[0], dict) else {}
    time = event.get("time")
    moment = _parse_time(time)
    restamped = moment is not None and not (now - RESTAMP_PAST <= moment <= now + RESTAMP_FUTURE)
    return {
        "TimeGenerated": time,
        "EventTime": time,
        "TimeRestamped": restamped,
        "EventId": event.get("event_id"),
        "EventType": event.get("event"),
        "SchemaVersion": event.get("schema_version"),
        "JobId": job.get("id"),
        "JobResourceId": job.get("resource_id"),
        "JobType": job.get("type"),
        "Operation": job.get("operation"),
        "BackupManagementType": about.get("backup_management_type"),
        "Entity": job.get("entity") if job else item.get("friendly_name"),
        "DatasourceType": about.get("datasource_type"),
        "DatasourceName": job.get("datasource_name"),
        "DatasourceId": about.get("datasource_id"),
        "BackupInstance": job.get("backup_instance"),
        "BackupInstanceId": job.get("backup_instance_id"),
        "PolicyName": about.get("policy_name"),
        "Status": job.get("status"),
        "PreviousStatus": job.get("previous_status"),
        "Outcome": job.get("outcome"),
        "StartTime": job.get("start_time"),
        "EndTime": job.get("end_time"),
        "DurationSeconds": job.get("duration_s"),
        "ErrorCode": first_error.get("code"),
        "ErrorMessage": first_error.get("message"),
        "VaultId": vault.get("id"),
        "VaultName": vault.get("name"),
        "ResourceGroup": vault.get("resource_group"),
        "SubscriptionId": vault.get("subscription_id"),
        "Location": vault.get("location"),
        # An event written before Backup vaults has no kind: its vault is a Recovery Services one.
        "VaultKind": vault.get("kind") or "recovery_services",
        "VaultTenantId": vault.get("tenant_id"),
        "DetectionLagSeconds": event.get("detection_lag_s"),
        "ProtectedItemId": item.get("id") or job.get("protected_item_id"),
        "ItemName": item.get("name"),
        "ProtectionState": protection.get("state", item.get("protection_state")),
        "PreviousProtectionState": protection.get("previous_state"),
        "HealthStatus": protection.get("health", item.get("health_status")),
        "PreviousHealthStatus": protection.get("previous_health"),
        "LastBackupTime": item.get("last_backup_time"),
        "LastRecoveryPoint": rpo.get("last_recovery_point", item.get("last_recovery_point")),
        "PolicyId": run.get("policy_id", item.get("policy_id")),
        "RunDueTime": run.get("due_time"),
        "RunDeadline": run.get("deadline"),
        "RunKind": run.get("kind"),
        "PolicyTimeZone": run.get("time_zone"),
        "RpoAllowedSeconds": rpo.get("allowed_s"),
        "RpoAgeSeconds": rpo.get("age_s"),
        "RpoBreachedAt": rpo.get("breached_at"),
        "ElapsedSeconds": why.get("elapsed_s"),
        "ThresholdSeconds": why.get("threshold_s"),
        "LongRunningReason": why.get("reason"),
        "MedianSeconds": why.get("median_s"),
        "MedianSamples": why.get("samples"),
        "Event": dict(event),
    }


def _row_bytes(row: Mapping[str, Any]) -> int:
    # The SDK serialises with the stdlib's json.dumps (ASCII escapes and all); measure the same.
    return len(json.dumps(row).encode("utf-8"))


def chunk_rows(sizes: Sequence[int], max_bytes: int) -> list[tuple[int, int]]:
    """Split rows of these JSON sizes, in order, into `[start, end)` runs whose JSON arrays
    (`[a, b]`: brackets, and `, ` between rows) fit `max_bytes`. The first row too big on its own
    ends the split: neither it nor any row after it is in a run."""
    chunks: list[tuple[int, int]] = []
    start, used = 0, 2
    for i, size in enumerate(sizes):
        if size + 2 > max_bytes:
            if start < i:
                chunks.append((start, i))
            return chunks
        if i > start and used + 2 + size > max_bytes:
            chunks.append((start, i))
            start, used = i, 2
        used += size if i == start else size + 2
    if start < len(sizes):
        chunks.append((start, len(sizes)))
    return chunks


class AzureMonitorLogsSink:
    """Delivers batches as rows of one data collection rule's stream (an `OutboxSink`).

    Enter it with `async with` (or `open()` then `aclose()`): that builds the HTTP session and
    the SDK client. The credential stays the caller's: the sink never closes it.
    """

    kind: ClassVar[str] = "azure_monitor_logs"

    def __init__(
        self,
        settings: AzureMonitorLogsSinkSettings,
        *,
        credential: AsyncTokenCredential,
        azure: AzureSettings,
        ssl_context: ssl.SSLContext,
        clock: Clock,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        """Keep the settings; no I/O and no import of the SDK yet.

        `max_request_bytes` is for tests that need a request over the service's limit.
        """
        self._settings = settings
        self._credential = credential
        self._ssl_context = ssl_context
        self._clock = clock
        self._audience = monitor_audience(settings, azure)
        self._max_request_bytes = max_request_bytes
        self._problem: str | None = None  # the refusal last logged; None after a success
        self._stack: AsyncExitStack | None = None
        self._client: LogsIngestionClient | None = None

    def __repr__(self) -> str:
        return f"AzureMonitorLogsSink(name={self.name!r}, stream={self._settings.stream!r})"

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def audience(self) -> str:
        """The token audience (without `/.default`)."""
        return self._audience

    async def __aenter__(self) -> AzureMonitorLogsSink:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Build the aiohttp session and the SDK's async client; idempotent."""
        if self._client is not None:
            return
        # Imported here: azure-monitor-ingestion and azure-core's pipeline cost process start
        # time that a daemon without this sink should not pay.
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.monitor.ingestion.aio import LogsIngestionClient

        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(open_sink_session(self._ssl_context))
            timeout = self._settings.timeout_s
            transport = AioHttpTransport(
                session=session,
                session_owner=False,
                connection_timeout=timeout,
                read_timeout=timeout,
            )
            client = LogsIngestionClient(
                self._settings.endpoint,
                self._credential,
                transport=transport,
                credential_scopes=[f"{self._audience}/.default"],
                retry_total=0,
                permit_redirects=False,
            )
            await stack.enter_async_context(client)
            self._stack, self._client = stack.pop_all(), client

    async def aclose(self) -> None:
        """Close the client and its session; idempotent."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def delivered_ids(self) -> set[str]:
        """Always empty: a Log Analytics table is not read back (dedupe by EventId in KQL)."""
        return set()

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """Send `batch` as rows, chunk by chunk in order; see the module's rules.

        Raises:
            DeliveryError: `delivered` events at the head went through, the rest did not.
        """
        if self._client is None:
            raise DeliveryError(f"{self._what}: not opened (enter the sink with `async with`)")
        now = self._clock.utcnow()
        rows: list[MutableMapping[str, Any]] = [event_row(item.event, now=now) for item in batch]
        self._log_restamped(batch, rows)
        sizes = [_row_bytes(row) for row in rows]
        chunks = chunk_rows(sizes, self._max_request_bytes)
        for start, end in chunks:
            await self._upload(rows[start:end], delivered=start)
        done = chunks[-1][1] if chunks else 0
        if done < len(batch):
            big = batch[done]
            raise DeliveryError(
                f"{self._what}: event {big.event_id} is {sizes[done]} bytes as a row, over the "
                f"{self._max_request_bytes} bytes of one Logs Ingestion request; not sent",
                delivered=done,
                permanent=True,
            )

    @property
    def _what(self) -> str:
        return f"azure_monitor_logs sink {self.name!r}"

    def _log_restamped(
        self, batch: Sequence[OutboxEvent], rows: Sequence[Mapping[str, Any]]
    ) -> None:
        restamped = [i for i, row in enumerate(rows) if row["TimeRestamped"]]
        if restamped:
            first = restamped[0]
            log.warning(
                "sink.azure_monitor_logs.restamped",
                sink=self.name,
                events=len(restamped),
                first_event_id=batch[first].event_id,
                first_event_time=rows[first]["EventTime"],
                detail="TimeGenerated outside [now - 2 days, now + 1 day] is replaced by the "
                "time received; EventTime keeps the event's time (TimeRestamped = true)",
            )

    async def _upload(self, rows: list[MutableMapping[str, Any]], *, delivered: int) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.monitor.ingestion import LogsUploadError

        assert self._client is not None
        failures: list[Exception] = []

        async def on_error(failure: LogsUploadError) -> None:
            failures.append(failure.error)

        try:
            with anyio.fail_after(self._settings.timeout_s):
                await self._client.upload(
                    self._settings.rule_id, self._settings.stream, rows, on_error=on_error
                )
        except TimeoutError as exc:
            raise DeliveryError(
                f"{self._what}: no answer within {self._settings.timeout_s:g}s",
                delivered=delivered,
            ) from exc
        except AzureError as exc:  # raised outside a chunk's upload (never, as of 1.1.0)
            failures.append(exc)
        if not failures:
            self._problem = None
            return
        error = failures[0]
        status = error.status_code if isinstance(error, HttpResponseError) else None
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None) or {}
        raise self._refusal(error, status, headers, delivered) from error

    def _refusal(
        self, error: Exception, status: int | None, headers: Mapping[str, str], delivered: int
    ) -> DeliveryError:
        detail = " ".join(str(getattr(error, "message", None) or error).split())[:300]
        what = f"{self._what}: " + (f"HTTP {status}" if status else type(error).__name__)
        problem = f"{status}:{type(error).__name__}"
        first, self._problem = problem != self._problem, problem  # logged once per problem
        if status in (401, 403) or (status is None and "Authentication" in type(error).__name__):
            if first:
                log.error(
                    "sink.azure_monitor_logs.auth",
                    sink=self.name,
                    status=status,
                    audience=self._audience,
                    rule_id=self._settings.rule_id,
                    detail=detail,
                    hint=f"the principal needs the {ROLE} role on the data collection rule, "
                    f"and tokens for {self._audience}",
                )
            return DeliveryError(
                f"{what}: the credential or its role is refused (needs {ROLE} on data collection "
                f"rule {self._settings.rule_id}, audience {self._audience}): {detail}",
                delivered=delivered,
                status=status,
            )
        if status is None:
            return DeliveryError(f"{what}: {detail}", delivered=delivered)
        if status == 404 and first:
            log.error(
                "sink.azure_monitor_logs.not_found",
                sink=self.name,
                rule_id=self._settings.rule_id,
                stream=self._settings.stream,
                detail=detail,
            )
        retry = retry_after_s(headers.get("Retry-After"), self._clock.utcnow())
        retryable = status in RETRYABLE_STATUSES or status >= 500 or status == 404
        return DeliveryError(
            f"{what}: {detail}",
            delivered=delivered,
            retry_after_s=retry,
            permanent=not retryable,
            status=status,
        )
