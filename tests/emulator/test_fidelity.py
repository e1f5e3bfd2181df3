"""The emulator as Microsoft's own Python SDKs see it: the backup client and azure-identity.

If the official client reads every job the emulator serves — every job type, across pages, with
details — as the world holds it, the emulator's wire shapes are at least as faithful as the SDK's
model of the service, and a wire mistake cannot hide behind our own client reading it back.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from azure.mgmt.recoveryservicesbackup import models
from azure.mgmt.recoveryservicesbackup.aio import RecoveryServicesBackupClient

from monitor.emulator import (
    PROFILES,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.catalogue import CANCELLED, FAILED, IN_PROGRESS, TERMINAL
from monitor.emulator.estate import Job
from monitor.emulator.runner import Emulator
from monitor.emulator.wire import job_json
from monitor.emulator.world import World
from tests.emulator.sdk import emulator_credential

ARM_SCOPE = "https://management.azure.com/.default"
PAGE_SIZE = 5
MI_CLIENT_ID = "mi-client"
APP_CLIENT_ID = "fidelity-app"

JOB_MODELS = (
    models.AzureIaaSVMJob,
    models.AzureIaaSVMJobV2,
    models.AzureWorkloadJob,
    models.AzureStorageJob,
    models.MabJob,
    models.DpmJob,
    models.VaultJob,
)
MODEL_BY_JOB_TYPE = {cls.__name__: cls for cls in JOB_MODELS}
TASK_MODELS = (models.AzureIaaSVMJobTaskDetails, models.MabJobTaskDetails, models.DpmJobTaskDetails)
CANCELLABLE_TYPES = {"AzureIaaSVMJob", "AzureIaaSVMJobV2", "AzureWorkloadJob", "AzureStorageJob"}
# What a running job reports as its end time (azure-api.md b.5): absent, or a sentinel.
MIN_VALUE = datetime(1, 1, 1, tzinfo=UTC)
RUNNING_END_TIME = {
    "AzureStorageJob": MIN_VALUE,
    "MabJob": datetime(2001, 1, 1, tzinfo=UTC),
    "DpmJob": datetime(2001, 1, 1, tzinfo=UTC),
    "VaultJob": datetime(2001, 1, 1, tzinfo=UTC),
}
ONE_US = timedelta(microseconds=1)

FIDELITY_SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=1,
        subscriptions=1,
        vaults_per_subscription=4,
        # Six minutes of demo history: ~85 jobs over four vaults, every job type among them, a
        # finished failure of every type (so every errorDetails shape), and a few still running.
        # The world runs relative to its creation, so this holds whenever the test runs.
        profile=dataclasses.replace(PROFILES["demo"], history_s=360.0),
        # The SDK reads `duration` with isodate, which knows only ISO 8601; real responses also
        # carry .NET TimeSpan text ("00:20:23.0896697"), which the SDK hands back as a raw str
        # (see test_sdk_returns_timespan_durations_as_raw_text). ISO only here, to compare values.
        timespan_duration_rate=0.0,
    ),
    page_size=PAGE_SIZE,
    # A few hundred reads in a few seconds; throttling is tested elsewhere, not here.
    throttle=ThrottleSettings(reads_bucket=100_000, reads_per_s=10_000.0),
)


def _filter_time(at: datetime) -> str:
    """A `$filter` time in the backup RP's form, `yyyy-MM-dd hh:mm:ss AM|PM` (UTC)."""
    hour = at.hour % 12 or 12
    return f"{at:%Y-%m-%d} {hour:02d}:{at:%M:%S} {'PM' if at.hour >= 12 else 'AM'}"


def _statuses_of(world: World, job: Job) -> set[str]:
    """Every status the world has given `job` so far."""
    return {t.to_status for t in world.transitions if t.job_id == job.name}


def _expected_actions(job_type: str, status: str) -> list[int]:
    """`actionsInfo` as the service writes it: integers, 1 = Cancellable, 2 = Retriable."""
    if status == IN_PROGRESS and job_type in CANCELLABLE_TYPES:
        return [1]
    return [2] if status == FAILED else []


def _assert_job(resource: models.JobResource, job: Job, world: World, *, details: bool) -> None:
    """Assert the SDK's reading of one job equals the world's job (strictly once terminal)."""
    vault = job.vault
    assert resource.name == job.name
    assert resource.type == "Microsoft.RecoveryServices/vaults/backupJobs"
    assert resource.id is not None
    assert resource.id.startswith("/Subscriptions/")
    assert resource.id.lower() == f"{vault.id}/backupJobs/{job.name}".lower()
    p = resource.properties
    assert type(p) is MODEL_BY_JOB_TYPE[job.job_type]
    assert isinstance(p, JOB_MODELS)
    assert p.job_type == job.job_type
    assert p.entity_friendly_name == job.entity
    assert p.operation == job.operation
    assert p.backup_management_type == job.backup_management_type
    assert p.activity_id == job.activity_id
    assert p.start_time == job.start_at
    _assert_type_fields(p, job)
    status = p.status
    assert status is not None
    # Typed list[str | JobSupportedAction], but the wire's integers come through untouched.
    actions: object = p.actions_info
    assert actions == _expected_actions(job.job_type, status)
    assert isinstance(p.duration, timedelta)
    if status in TERMINAL:
        # Terminal statuses never change, so the world's job is exactly what was rendered.
        assert job.status == status
        assert job.end_at is not None
        assert p.end_time == job.end_at
        assert abs(p.duration - (job.end_at - job.start_at)) <= ONE_US
    else:
        # Still running when rendered; the world may have moved on since, so check loosely.
        assert status in _statuses_of(world, job)
        assert p.end_time == RUNNING_END_TIME.get(job.job_type)
        assert timedelta(0) <= p.duration <= world.now - job.start_at + ONE_US
    if details:
        _assert_error_details(p, job, status)
        _assert_extended_info(p, job, status, world)


def _assert_type_fields(p: Any, job: Job) -> None:
    """Assert the fields only one job type has."""
    extra = job.extra
    if isinstance(p, models.AzureIaaSVMJob):
        assert p.virtual_machine_version == "Compute"
        assert p.container_name == extra["containerName"]
        assert p.is_user_triggered is job.is_user_triggered
    elif isinstance(p, models.AzureIaaSVMJobV2):
        assert p.virtual_machine_version == "Compute"
        assert p.container_name == extra["containerName"]
    elif isinstance(p, models.AzureWorkloadJob):
        assert p.workload_type == extra["workloadType"]
    elif isinstance(p, models.AzureStorageJob):
        assert p.storage_account_name == extra["storageAccountName"]
        assert p.storage_account_version == extra["storageAccountVersion"]
        assert p.is_user_triggered is job.is_user_triggered
    elif isinstance(p, models.MabJob):
        assert p.mab_server_name == extra["mabServerName"]
        assert p.mab_server_type == extra["mabServerType"]
        assert p.workload_type == extra["workloadType"]
    elif isinstance(p, models.DpmJob):
        assert p.dpm_server_name == extra["dpmServerName"]
        assert p.container_name == extra["containerName"]
        assert p.container_type == extra["containerType"]
        assert p.workload_type == extra["workloadType"]
    else:
        assert isinstance(p, models.VaultJob)


def _assert_error_details(p: Any, job: Job, status: str) -> None:
    """Assert `errorDetails`: one entry in the job type's own error shape, for failed jobs only."""
    if status != FAILED:
        assert not p.error_details
        return
    err = job.error
    assert err is not None
    (detail,) = p.error_details
    assert detail.error_string == err.message
    assert detail.recommendations == list(err.recommendations)
    if isinstance(detail, models.AzureIaaSVMErrorInfo | models.AzureWorkloadErrorInfo):
        assert (detail.error_code, detail.error_title) == (err.code, err.title)
    elif isinstance(detail, models.AzureStorageErrorInfo | models.VaultJobErrorInfo):
        assert detail.error_code == err.code
    else:
        # MAB and DPM errors carry no code at all.
        assert isinstance(detail, models.MabErrorInfo | models.DpmErrorInfo)


def _assert_extended_info(p: Any, job: Job, status: str, world: World) -> None:
    """Assert `extendedInfo`: the property bag names the job's entity, tasks match its status."""
    info = p.extended_info
    assert info is not None
    bag = info.property_bag
    assert isinstance(bag, dict)
    match job.job_type:
        case "AzureIaaSVMJob" | "AzureIaaSVMJobV2":
            assert bag["VM Name"] == job.entity
        case "AzureWorkloadJob":
            assert (bag["Database Name"], bag["Protected Server"]) == (
                job.entity,
                job.extra["host"],
            )
        case "AzureStorageJob":
            assert (bag["File Share Name"], bag["Storage Account Name"]) == (
                job.entity,
                job.extra["storageAccountName"],
            )
        case "MabJob" | "DpmJob":
            assert bag["Data Transferred"].endswith(" MB")
        case _:
            assert bag["Vault Name"] == job.vault.name
    raw: dict[str, Any] = {}
    if status in TERMINAL:
        # Terminal renderings are cached on the job: `raw` is exactly what was sent.
        raw = job_json(job, world.now, details=True)["properties"]["extendedInfo"]
        assert bag == raw["propertyBag"]
    if isinstance(info, models.VaultJobExtendedInfo):
        assert job.job_type == "VaultJob"
        return
    if status == FAILED:
        assert job.error is not None
        assert info.dynamic_error_message == job.error.message
    tasks = info.tasks_list
    assert tasks
    statuses = [t.status for t in tasks]
    if status in TERMINAL:
        assert [(t.task_id, t.status) for t in tasks] == [
            (r["taskId"], r["status"]) for r in raw["tasksList"]
        ]
    if status == CANCELLED:
        assert set(statuses) <= {"Completed", "Cancelled", "NotStarted"}
    elif status == FAILED:
        assert statuses == ["Completed"] * (len(tasks) - 1) + ["Failed"]
    elif status in TERMINAL:
        assert set(statuses) == {"Completed"}
    else:
        assert set(statuses) <= {"Completed", "InProgress", "NotStarted", "Cancelled"}
    for task in tasks:
        if not isinstance(task, TASK_MODELS):
            continue
        assert isinstance(task.duration, timedelta)
        if task.status == "NotStarted":
            assert task.start_time == MIN_VALUE
        else:
            assert task.start_time is not None
            assert task.start_time >= job.start_at
        if status in TERMINAL and status != CANCELLED:
            assert job.end_at is not None
            assert task.end_time is not None
            assert task.end_time <= job.end_at + ONE_US


async def test_sdk_reads_every_job_type_as_the_world_has_it(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    """The official async client lists and reads every job of every type as the world has it."""
    async with (
        running_emulator(FIDELITY_SETTINGS, ssl_context=server_ssl_context) as emu,
        emulator_credential(emu, APP_CLIENT_ID, ca_pem_path) as credential,
    ):
        world = emu.world
        (subscription,) = world.subscriptions.values()
        # A window that ended before the first request: the set of jobs in it cannot change.
        window_end = (world.now - timedelta(seconds=2)).replace(microsecond=0)
        window_start = window_end - timedelta(hours=1)
        query = (
            f"startTime eq '{_filter_time(window_start)}' "
            f"and endTime eq '{_filter_time(window_end)}'"
        )
        types_seen: set[str] = set()
        failed_types: set[str] = set()
        running_seen = 0
        async with RecoveryServicesBackupClient(
            credential, subscription.id, base_url=emu.url, connection_verify=ca_pem_path
        ) as client:
            for vault in sorted(subscription.vaults.values(), key=lambda v: v.key):
                listed: list[models.JobResource] = []
                pages = 0
                with anyio.fail_after(10):
                    paged = client.backup_jobs.list(vault.name, vault.resource_group, filter=query)
                    async for page in paged.by_page():
                        rows = [row async for row in page]
                        assert 0 < len(rows) <= PAGE_SIZE
                        listed.extend(rows)
                        pages += 1
                lo, hi = world.jobs_in_window(vault, window_start, window_end)
                expected = [job.name for job in reversed(vault.jobs[lo:hi])]
                # All of the window's jobs, newest first, once each, although the SDK rewrote
                # every nextLink (its own api-version, the skiptoken encoded again).
                assert [row.name for row in listed] == expected
                assert len(expected) > PAGE_SIZE
                assert pages == math.ceil(len(expected) / PAGE_SIZE)
                for row in listed:
                    assert row.name is not None
                    job = vault.jobs_by_name[row.name.lower()]
                    _assert_job(row, job, world, details=False)
                    with anyio.fail_after(5):
                        detail = await client.job_details.get(
                            vault.name, vault.resource_group, row.name
                        )
                    _assert_job(detail, job, world, details=True)
                    assert detail.properties is not None
                    status = detail.properties.status
                    types_seen.add(job.job_type)
                    if status == FAILED:
                        failed_types.add(job.job_type)
                    running_seen += status not in TERMINAL
    assert types_seen == set(MODEL_BY_JOB_TYPE)
    assert failed_types == set(MODEL_BY_JOB_TYPE)
    assert running_seen > 0


async def test_sdk_returns_timespan_durations_as_raw_text(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    """The SDK cannot read .NET TimeSpan durations: `duration` comes back as the raw string."""
    settings = dataclasses.replace(
        FIDELITY_SETTINGS,
        world=dataclasses.replace(
            FIDELITY_SETTINGS.world, vaults_per_subscription=1, timespan_duration_rate=1.0
        ),
    )
    async with (
        running_emulator(settings, ssl_context=server_ssl_context) as emu,
        emulator_credential(emu, APP_CLIENT_ID, ca_pem_path) as credential,
    ):
        (subscription,) = emu.world.subscriptions.values()
        (vault,) = subscription.vaults.values()
        async with RecoveryServicesBackupClient(
            credential, subscription.id, base_url=emu.url, connection_verify=ca_pem_path
        ) as client:
            with anyio.fail_after(5):
                rows = [
                    row async for row in client.backup_jobs.list(vault.name, vault.resource_group)
                ]
    terminal = [row for row in rows if row.properties and row.properties.status in TERMINAL]
    assert terminal
    for row in terminal:
        p = row.properties
        assert isinstance(p, JOB_MODELS)
        # Typed `timedelta`, yet the lazy model falls back to the wire text when isodate fails.
        duration: object = p.duration
        assert isinstance(duration, str)
        assert duration.count(":") == 2


# ---------------------------------------------------------------------- azure-identity


async def _principals(session: aiohttp.ClientSession, emu: Emulator) -> set[str]:
    """The principals the emulator has counted ARM requests for."""
    async with session.get(f"{emu.url}/_emulator/stats") as resp:
        assert resp.status == 200
        stats = await resp.json()
    return {row["principal"] for row in stats["by_principal"]}


async def _assert_token_accepted(emu: Emulator, token: str, principal: str, **session: Any) -> None:
    """Assert ARM answers 200 with `token` and counts the request for `principal`."""
    async with aiohttp.ClientSession(**session) as http:
        with anyio.fail_after(5):
            async with http.get(
                f"{emu.url}/subscriptions",
                params={"api-version": "2022-12-01"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            assert len(body["value"]) == len(emu.world.subscriptions)
            assert principal in await _principals(http, emu)


class TestClientSecretCredential:
    """azure-identity's async ClientSecretCredential against the emulator's token endpoint."""

    async def test_token_is_accepted_and_maps_to_the_client_id(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        client_ssl_context: ssl.SSLContext,
    ) -> None:
        """A token from the emulator's authority over TLS is accepted by ARM as the client id."""
        async with (
            running_emulator(ssl_context=server_ssl_context) as emu,
            ClientSecretCredential(
                emu.tenant_id,
                APP_CLIENT_ID,
                emu.arm.settings.client_secret,
                authority=emu.url,
                connection_verify=ca_pem_path,
            ) as credential,
        ):
            with anyio.fail_after(5):
                token = await credential.get_token(ARM_SCOPE)
            assert token.expires_on > datetime.now(UTC).timestamp() + 600
            await _assert_token_accepted(
                emu,
                token.token,
                APP_CLIENT_ID,
                connector=aiohttp.TCPConnector(ssl=client_ssl_context),
            )

    async def test_wrong_secret_is_refused(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """A wrong client secret fails with ClientAuthenticationError carrying AAD's error."""
        async with (
            running_emulator(ssl_context=server_ssl_context) as emu,
            ClientSecretCredential(
                emu.tenant_id,
                APP_CLIENT_ID,
                "not-the-secret",
                authority=emu.url,
                connection_verify=ca_pem_path,
            ) as credential,
        ):
            with (
                anyio.fail_after(5),
                pytest.raises(ClientAuthenticationError, match="AADSTS7000215"),
            ):
                await credential.get_token(ARM_SCOPE)


@pytest.fixture
def app_service_identity_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment where only App Service managed identity is configured."""
    for name in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class TestManagedIdentityCredential:
    """azure-identity's async ManagedIdentityCredential against the App Service MI endpoint."""

    async def test_token_is_accepted_and_maps_to_the_client_id(
        self, app_service_identity_env: pytest.MonkeyPatch
    ) -> None:
        """A user-assigned identity's token, fetched over plain HTTP as on App Service, works."""
        async with running_emulator() as emu:
            app_service_identity_env.setenv("IDENTITY_ENDPOINT", f"{emu.url}/msi/token")
            app_service_identity_env.setenv("IDENTITY_HEADER", emu.arm.settings.identity_header)
            async with ManagedIdentityCredential(client_id=MI_CLIENT_ID) as credential:
                with anyio.fail_after(5):
                    token = await credential.get_token(ARM_SCOPE)
            await _assert_token_accepted(emu, token.token, MI_CLIENT_ID)

    async def test_wrong_identity_header_is_refused(
        self, app_service_identity_env: pytest.MonkeyPatch
    ) -> None:
        """A wrong X-IDENTITY-HEADER fails with ClientAuthenticationError."""
        async with running_emulator() as emu:
            app_service_identity_env.setenv("IDENTITY_ENDPOINT", f"{emu.url}/msi/token")
            app_service_identity_env.setenv("IDENTITY_HEADER", "not-the-header")
            async with ManagedIdentityCredential(client_id=MI_CLIENT_ID) as credential:
                with (
                    anyio.fail_after(5),
                    pytest.raises(ClientAuthenticationError, match="X-IDENTITY-HEADER"),
                ):
                    await credential.get_token(ARM_SCOPE)
