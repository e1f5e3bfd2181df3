"""The policies profile as the official SDKs read it: protected items, policies, instances.

If `azure-mgmt-recoveryservicesbackup` deserialises every item and policy into its typed models
with the values the world holds, the shapes match the service's own model of them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from datetime import UTC, datetime

import anyio
from azure.mgmt.dataprotection import models as dp_models
from azure.mgmt.dataprotection.aio import DataProtectionMgmtClient
from azure.mgmt.recoveryservicesbackup import models
from azure.mgmt.recoveryservicesbackup.aio import RecoveryServicesBackupClient

from monitor.emulator import PROFILES, EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator.clock import ManualClock
from tests.emulator.sdk import emulator_credential

ITEM_TYPES = {
    "vm": "Microsoft.Compute/virtualMachines",
    "sql": "AzureVmWorkloadSQLDatabase",
    "files": "AzureFileShareProtectedItem",
}
POLICY_MODELS: dict[str, tuple[type[models.ProtectionPolicy], type[models.SchedulePolicy]]] = {
    "VmDailyPacific": (models.AzureIaaSVMProtectionPolicy, models.SimpleSchedulePolicyV2),
    "VmWeeklyWEurope": (models.AzureIaaSVMProtectionPolicy, models.SimpleSchedulePolicy),
    "VmHourlyIndia": (models.AzureIaaSVMProtectionPolicy, models.SimpleSchedulePolicyV2),
    "FilesDailyAusEast": (models.AzureFileShareProtectionPolicy, models.SimpleSchedulePolicy),
}


async def test_sdk_reads_items_and_policies(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=5, subscriptions=1, vaults_per_subscription=2, profile=PROFILES["policies"]
        ),
        page_size=2,
    )
    clock = ManualClock(datetime(2026, 10, 20, tzinfo=UTC))
    async with (
        running_emulator(settings, ssl_context=server_ssl_context, clock=clock) as emu,
        emulator_credential(emu, "protection-app", ca_pem_path) as credential,
    ):
        (subscription,) = emu.world.subscriptions.values()
        typed = 0
        async with RecoveryServicesBackupClient(
            credential, subscription.id, base_url=emu.url, connection_verify=ca_pem_path
        ) as client:
            for vault in subscription.vaults.values():
                with anyio.fail_after(10):
                    rows = [
                        r
                        async for r in client.backup_protected_items.list(
                            vault.name, vault.resource_group
                        )
                    ]
                    vms = [
                        r
                        async for r in client.backup_protected_items.list(
                            vault.name,
                            vault.resource_group,
                            filter="backupManagementType eq 'AzureIaasVM'",
                        )
                    ]
                    policies = [
                        p
                        async for p in client.backup_policies.list(vault.name, vault.resource_group)
                    ]
                assert [r.name for r in rows] == [i.name for i in vault.items]
                assert len(vms) == sum(1 for i in vault.items if i.workload.value == "vm")
                for row, item in zip(rows, vault.items, strict=True):
                    props = row.properties
                    # This SDK types one discriminator level only: the second-level item types
                    # (Microsoft.Compute/virtualMachines, AzureVmWorkloadSQLDatabase) come back
                    # as their raw mapping. Either way the service's field names must be there.
                    data = props.as_dict() if isinstance(props, models.ProtectedItem) else props
                    assert isinstance(data, Mapping)
                    assert data["protectedItemType"] == ITEM_TYPES[item.workload.value]
                    assert data["friendlyName"] == item.entity
                    assert item.policy is not None
                    assert data["policyId"] == item.policy.id
                    assert data["protectionState"] == "Protected"
                    if isinstance(props, models.ProtectedItem):
                        assert props.last_recovery_point == item.last_recovery_point
                    typed += isinstance(props, models.ProtectedItem)
                by_name = {p.name: p.properties for p in policies}
                for name, (policy_model, schedule_model) in POLICY_MODELS.items():
                    policy = by_name[name]
                    assert isinstance(policy, policy_model)
                    schedule = getattr(policy, "schedule_policy", None)
                    assert isinstance(schedule, schedule_model)
                    assert getattr(policy, "time_zone", None)
                sql = by_name["SqlFullDailyLogHourly"]
                assert isinstance(sql, models.AzureVmWorkloadProtectionPolicy)
                assert sql.settings is not None
                assert sql.settings.time_zone == "Eastern Standard Time"
                assert sql.sub_protection_policy is not None
                log = sql.sub_protection_policy[1].schedule_policy
                assert isinstance(log, models.LogSchedulePolicy)
                assert log.schedule_frequency_in_mins == 60
    assert typed > 0  # file shares are typed: AzureFileshareProtectedItem


async def test_dataprotection_sdk_reads_instances_and_policies(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str
) -> None:
    """azure-mgmt-dataprotection reads the policies profile's backup instances and policies."""
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=4,
            subscriptions=1,
            vaults_per_subscription=1,
            profile=PROFILES["policies"],
            backup_vaults_per_subscription=3,
        ),
        page_size=2,
    )
    clock = ManualClock(datetime(2026, 10, 20, tzinfo=UTC))
    async with (
        running_emulator(settings, ssl_context=server_ssl_context, clock=clock) as emu,
        emulator_credential(emu, "protection-app", ca_pem_path) as credential,
    ):
        (subscription,) = emu.world.subscriptions.values()
        async with DataProtectionMgmtClient(
            credential, subscription.id, base_url=emu.url, connection_verify=ca_pem_path
        ) as client:
            for vault in emu.world.backup_vaults.vaults.values():
                with anyio.fail_after(10):
                    instances = [
                        i
                        async for i in client.backup_instances.list(
                            vault.resource_group, vault.name
                        )
                    ]
                    policies = [
                        p
                        async for p in client.backup_policies.list(vault.resource_group, vault.name)
                    ]
                assert [i.name for i in instances] == [i.id for i in vault.instances]
                for resource, instance in zip(instances, vault.instances, strict=True):
                    props = resource.properties
                    assert props is not None
                    assert props.friendly_name == instance.friendly_name
                    assert props.data_source_info.datasource_type == instance.datasource.type
                    assert props.policy_info.policy_id.endswith(f"/{instance.policy}")
                    assert props.current_protection_state == "ProtectionConfigured"
                assert {p.name for p in policies} == {i.policy for i in vault.instances}
                for policy in policies:
                    body = policy.properties
                    assert isinstance(body, dp_models.BackupPolicy)
                    rule = body.policy_rules[0]
                    assert isinstance(rule, dp_models.AzureBackupRule)
                    assert isinstance(rule.trigger, dp_models.ScheduleBasedTriggerContext)
                    (interval,) = rule.trigger.schedule.repeating_time_intervals
                    assert interval.startswith("R/2021-08-15T22:00:00+00:00/")
                    assert rule.trigger.schedule.time_zone == "UTC"
