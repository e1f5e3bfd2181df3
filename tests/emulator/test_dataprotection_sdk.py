"""The emulator's Backup vaults as Microsoft's own Data Protection SDK sees them.

`azure-mgmt-dataprotection` (generated from the TypeSpec, api-version 2026-06-01 by default)
lists the Backup vaults of a subscription, every job of each vault across every page, and gets
single jobs, with the flat `AzureBackupJob` fields deserialized as the world holds them. Pointed
at the emulator as tests/emulator/test_fidelity.py points the Recovery Services SDK: HTTPS with
the test CA, azure-identity's ClientSecretCredential against the emulator's token endpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import ssl
from datetime import UTC, datetime

import anyio
from azure.mgmt.dataprotection import models
from azure.mgmt.dataprotection.aio import DataProtectionMgmtClient

from monitor.emulator import (
    PROFILES,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.backup_vaults import DATASOURCES, TERMINAL, BackupVault, BvJob
from monitor.emulator.clock import ManualClock
from monitor.emulator.world import World
from tests.emulator.sdk import emulator_credential

APP_CLIENT_ID = "dataprotection-fidelity-app"
PAGE_SIZE = 5
TIMESPAN = re.compile(r"^(\d+\.)?\d{2}:\d{2}:\d{2}(\.\d{7})?$")

SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=2,
        subscriptions=1,
        vaults_per_subscription=1,
        # Four Backup vaults (8 to 12 instances): both status vocabularies, every datasource
        # type among them.
        backup_vaults_per_subscription=4,
        profile=dataclasses.replace(PROFILES["demo"], history_s=360.0),
    ),
    page_size=PAGE_SIZE,
    throttle=ThrottleSettings(reads_bucket=100_000, reads_per_s=10_000.0),
)


def _statuses_of(world: World, job: BvJob) -> set[str]:
    return {t.to_status for t in world.backup_vaults.transitions if t.job_id == job.name}


def _assert_job(resource: models.AzureBackupJobResource, job: BvJob, world: World) -> None:
    """The SDK's reading of one job equals the world's job (strictly once terminal)."""
    assert resource.name == job.name
    assert resource.type == "Microsoft.DataProtection/Backupvaults/backupJobs"
    p = resource.properties
    assert p is not None
    assert p.activity_id == job.activity_id
    assert p.data_source_type == job.instance.datasource.type
    assert p.data_source_id == job.instance.data_source_id
    assert p.data_source_name == job.instance.data_source_name
    assert p.backup_instance_friendly_name == job.instance.friendly_name
    assert p.source_subscription_id == job.vault.subscription_id
    assert p.vault_name == job.vault.name
    assert p.operation == job.operation
    assert isinstance(p.start_time, datetime)
    assert p.start_time == job.start_at
    assert isinstance(p.duration, str)
    assert TIMESPAN.match(p.duration), p.duration
    assert isinstance(p.is_user_triggered, bool)
    if p.status in TERMINAL:
        assert job.status == p.status
        assert p.end_time == job.end_at
    else:
        assert p.status in _statuses_of(world, job)
        assert p.end_time is None
        assert p.duration == "00:00:00"
    if p.status == "Failed":
        assert p.error_details
        assert job.error is not None
        assert p.error_details[0].code == job.error[0]
        assert p.error_details[0].recommended_action == [job.error[2]]


async def test_sdk_lists_backup_vaults_and_every_job(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    """The official async client lists the vaults, all their jobs page by page, and gets jobs."""
    async with (
        # A manual clock: the world stands still, so the run is the same every time (the world
        # is a pure function of its seed and the time since its creation).
        running_emulator(
            SETTINGS, ssl_context=server_ssl_context, clock=ManualClock(datetime.now(UTC))
        ) as emu,
        emulator_credential(emu, APP_CLIENT_ID, ca_pem_path) as credential,
    ):
        world = emu.world
        (subscription,) = world.subscriptions.values()
        statuses: set[str] = set()
        datasources: set[str] = set()
        async with DataProtectionMgmtClient(
            credential, subscription.id, base_url=emu.url, connection_verify=ca_pem_path
        ) as client:
            with anyio.fail_after(10):
                vaults = [v async for v in client.backup_vaults.get_in_subscription()]
            expected: list[BackupVault] = sorted(
                world.backup_vaults.by_subscription[subscription.id.lower()], key=lambda v: v.key
            )
            assert [v.name for v in vaults] == [v.name for v in expected]
            for resource, vault in zip(vaults, expected, strict=True):
                assert resource.type == "Microsoft.DataProtection/BackupVaults"
                assert resource.location == vault.location
                assert resource.properties is not None
                assert resource.properties.provisioning_state == "Succeeded"
                assert resource.id is not None
                assert resource.id.lower() == vault.key
                with anyio.fail_after(5):
                    got = await client.backup_vaults.get(vault.resource_group, vault.name)
                assert got.name == vault.name
                # Every job, page after page: the SDK rewrites each nextLink's api-version.
                names_before = [job.name for job in vault.jobs]
                listed: list[models.AzureBackupJobResource] = []
                pages = 0
                with anyio.fail_after(10):
                    paged = client.jobs.list(vault.resource_group, vault.name)
                    async for page in paged.by_page():
                        rows = [row async for row in page]
                        assert 0 < len(rows) <= PAGE_SIZE
                        listed.extend(rows)
                        pages += 1
                names = [row.name for row in listed]
                # The whole history, oldest first, once each.
                assert names == names_before
                assert len(listed) > PAGE_SIZE
                assert pages == math.ceil(len(listed) / PAGE_SIZE)
                for row in listed:
                    assert row.name is not None
                    _assert_job(row, vault.jobs_by_name[row.name], world)
                    assert row.properties is not None
                    statuses.add(row.properties.status)
                    datasources.add(row.properties.data_source_type)
                one = listed[-1]
                assert one.name is not None
                with anyio.fail_after(5):
                    detail = await client.jobs.get(vault.resource_group, vault.name, one.name)
                _assert_job(detail, vault.jobs_by_name[one.name], world)
                assert detail.properties is not None
                info = detail.properties.extended_info
                assert info is not None
                assert info.sub_tasks
                assert all(isinstance(task.task_id, int) for task in info.sub_tasks)
                assert all(task.task_status for task in info.sub_tasks)
    # Both vocabularies, running and finished, and failures.
    assert {"Started", "Succeeded", "InProgress", "Completed", "Failed"} <= statuses
    assert datasources == {d.type for d in DATASOURCES}
