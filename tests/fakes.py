"""Test doubles for the injected seams: a virtual-time clock, scripted token credentials
(azure-core's `get_token` and `get_token_info` protocols), and a job's empty details."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.lowlevel
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from monitor.clock import Clock, SystemClock
from monitor.core.diff import JobStateChanged
from monitor.core.jobs import BackupJob, JobDetails, JobError, JobKey, JobStatus, JobTask
from monitor.core.vaults import VaultRef
from monitor.events import render_event

EPOCH = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


class FakeClock:
    """A `Clock` whose time only moves when a test advances it or somebody sleeps.

    `sleep(s)` advances virtual time by `s` (negative counts as 0) and then yields once with
    `anyio.lowlevel.checkpoint()`, so it never blocks for real and stays cancellable. Sleepers
    do not wait for one another: two tasks that each sleep 5 s advance the clock by 10 s. Use it
    where one task owns the passage of time, or drive time from the test with `advance`.
    """

    def __init__(self, *, start_at: datetime = EPOCH, monotonic_s: float = 1000.0) -> None:
        if start_at.utcoffset() != timedelta(0):
            raise ValueError("start_at must be UTC-aware")
        self._start_at = start_at
        self._origin_s = monotonic_s
        self._elapsed_s = 0.0
        self.sleeps: list[float] = []
        """Every duration passed to `sleep`, in call order."""

    def monotonic(self) -> float:
        """Virtual seconds: the starting value plus everything advanced so far."""
        return self._origin_s + self._elapsed_s

    def utcnow(self) -> datetime:
        """The starting instant plus everything advanced so far, UTC-aware."""
        return self._start_at + timedelta(seconds=self._elapsed_s)

    def advance(self, seconds: float) -> None:
        """Move virtual time forward; time never moves backwards."""
        if seconds < 0:
            raise ValueError(f"cannot go back in time ({seconds} s)")
        self._elapsed_s += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance virtual time by `seconds` and yield to the event loop once."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()

    def deadline_after(self, seconds: float) -> float:
        """A deadline on the event loop's own clock: this clock's time does not drive it."""
        return anyio.current_time() + seconds


class CountingCredential:
    """Returns the next of `tokens` on each call (the last one forever), counting the calls."""

    def __init__(
        self, *tokens: str, lifetime_s: float = 3600.0, clock: Clock | None = None
    ) -> None:
        self.tokens = list(tokens)
        """What successive calls return; the last one repeats."""
        self.lifetime_s = lifetime_s
        self.clock = clock or SystemClock()
        self.calls = 0
        """How many times get_token was called."""
        self.fail_with: Exception | None = None
        """When set, get_token raises it."""
        self.gate: anyio.Event | None = None
        """When set, get_token waits for it before answering."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        token = self.tokens[min(self.calls, len(self.tokens)) - 1]
        expires_on = int(self.clock.utcnow().timestamp() + self.lifetime_s)
        return AccessToken(token, expires_on)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> CountingCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


class TokenInfoCredential:
    """azure-core's `AsyncSupportsTokenInfo`: token N on call N, with a chosen `refresh_on`.

    Each token expires `lifetime_s` after the call that made it; `refresh_in_s` (None: no
    `refresh_on`) says when it should be refreshed, relative to that call. Times come from
    `clock`; `age_s` makes each token look that much older than the call (its expiry and
    refresh_on moved back), for checking a cache that reads the real time.
    """

    def __init__(
        self,
        *,
        lifetime_s: float = 3600.0,
        refresh_in_s: float | None = None,
        clock: Clock | None = None,
        age_s: float = 0.0,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.refresh_in_s = refresh_in_s
        self.clock = clock or SystemClock()
        self.age_s = age_s
        self.calls = 0
        """How many times get_token_info was called."""

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        self.calls += 1
        born = self.clock.utcnow().timestamp() - self.age_s
        refresh_on = None if self.refresh_in_s is None else int(born + self.refresh_in_s)
        return AccessTokenInfo(
            f"token-{self.calls}", int(born + self.lifetime_s), refresh_on=refresh_on
        )

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> TokenInfoCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


def bare_details(job: BackupJob, **property_bag: str) -> JobDetails:
    """What a job's direct read returns when it has no errors, tasks or progress."""
    return JobDetails(
        job=job,
        errors=(),
        tasks=(),
        property_bag=property_bag,
        progress_percentage=None,
        estimated_remaining_s=None,
        dynamic_error_message=None,
    )


def rendered_job_event(
    vault: VaultRef,
    *,
    name: str,
    status: str,
    start: datetime,
    end: datetime | None,
    emitted_at: datetime,
    entity: str | None = "vm-web-01",
    operation: str = "Backup",
    job_type: str = "AzureIaaSVMJob",
    duration: str | None = None,
    errors: tuple[JobError, ...] | None = None,
    tasks: tuple[JobTask, ...] = (),
    property_bag: dict[str, str] | None = None,
    backup_management_type: str = "AzureIaasVM",
    backup_vault_fields: dict[str, Any] | None = None,
) -> dict[str, object]:
    """The schema v1 event of one job reaching `status` (first seen if it is not terminal):
    rendered by `monitor.events.render_event`; with details when `errors` is given.
    `backup_vault_fields` sets BackupJob's Backup vault fields (`datasource_type`, ...)."""
    job_status = JobStatus.of(status)
    job = BackupJob(
        key=JobKey(vault_key=vault.key, job_name=name.lower()),
        name=name,
        resource_id=f"{vault.id}/backupJobs/{name}",
        job_type=job_type,
        operation=operation,
        backup_management_type=backup_management_type,
        entity=entity,
        status=job_status,
        start_at=start,
        end_at=end,
        duration_raw=duration,
        actions=(),
        activity_id=None,
        properties={},
    )
    if backup_vault_fields:
        job = dataclasses.replace(job, **backup_vault_fields)
    details = None
    if errors is not None:
        details = JobDetails(
            job=job,
            errors=errors,
            tasks=tasks,
            property_bag=dict(property_bag or {}),
            progress_percentage=None,
            estimated_remaining_s=None,
            dynamic_error_message=None,
        )
    change = JobStateChanged(
        vault_key=vault.key,
        job=job,
        previous_status=JobStatus.of("InProgress") if job_status.is_terminal else None,
        observed_at=emitted_at,
    )
    return render_event(change, vault=vault, details=details, emitted_at=emitted_at)


BV_DISK_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-disks/providers/"
    "Microsoft.Compute/disks/disk-data-01"
)


def rendered_backup_vault_job_event(
    vault: VaultRef,
    *,
    name: str,
    status: str,
    start: datetime,
    end: datetime | None,
    emitted_at: datetime,
    datasource_type: str = "Microsoft.Compute/disks",
    datasource_name: str = "disk-data-01",
    backup_instance: str = "disk-data-01",
    policy_name: str | None = "policy-disks-daily",
    operation: str = "Backup",
    errors: tuple[JobError, ...] | None = None,
    tasks: tuple[JobTask, ...] = (),
) -> dict[str, object]:
    """The schema v1 event of one Backup vault job (`vault` must be a Backup vault), shaped as
    `monitor.core.dataprotection` parses one: job type AzureBackupJob, management type
    AzureBackupVault, entity the datasource name."""
    instance_id = f"{vault.id}/backupInstances/{backup_instance}-instance"
    return rendered_job_event(
        vault,
        name=name,
        status=status,
        start=start,
        end=end,
        emitted_at=emitted_at,
        entity=datasource_name,
        operation=operation,
        job_type="AzureBackupJob",
        errors=errors,
        tasks=tasks,
        backup_management_type="AzureBackupVault",
        backup_vault_fields={
            "datasource_type": datasource_type,
            "datasource_name": datasource_name,
            "datasource_id": BV_DISK_ID,
            "backup_instance": backup_instance,
            "backup_instance_id": instance_id,
            "policy_name": policy_name,
        },
    )
