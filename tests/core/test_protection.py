"""Protected items, backup instances and policies of both kinds of vault, from their list pages.

The samples follow the REST specs' examples (Recovery Services `AzureIaasVm/
BackupProtectedItems_List.json`, `V2Policy/v2-List-Policies.json`, `AzureWorkload/
BackupPolicies_List.json`; Data Protection `BackupInstances_List.json` and
`BackupPolicies_List.json`); the fuzz tests put one arbitrary item among good ones.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.dataprotection import parse_backup_vault_job_item
from monitor.core.jobs import BackupJob, parse_jobs_page
from monitor.core.protection import (
    ItemIndex,
    ProtectedItem,
    parse_backup_instances_page,
    parse_data_protection_policies_page,
    parse_policies_page,
    parse_protected_items_page,
)
from monitor.core.schedule import Repeating, RunKind, expected_runs
from monitor.core.vaults import VaultKind, parse_vault_id
from monitor.errors import ParseError
from tests.core.strategies import json_values

SUB = "00000000-0000-0000-0000-000000000000"
RS_VAULT = parse_vault_id(
    f"/Subscriptions/{SUB}/resourceGroups/SwaggerTestRg/providers/"
    "Microsoft.RecoveryServices/vaults/NetSDKTestRsVault"
)
BV_VAULT = parse_vault_id(
    f"/subscriptions/{SUB}/resourceGroups/000pikumar/providers/"
    "Microsoft.DataProtection/BackupVaults/PratikPrivatePreviewVault1"
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


CONTAINER = "iaasvmcontainerv2;netsdktestrg;netvmtestv2vm1"
RS_ITEM: dict[str, Any] = {  # AzureIaasVm/BackupProtectedItems_List.json
    "id": f"/Subscriptions/{SUB}/resourceGroups/SwaggerTestRg/providers/"
    "Microsoft.RecoveryServices/vaults/NetSDKTestRsVault/backupFabrics/Azure/"
    f"protectionContainers/IaasVMContainer;{CONTAINER}/protectedItems/VM;{CONTAINER}",
    "name": f"VM;{CONTAINER}",
    "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems",
    "properties": {
        "protectedItemType": "Microsoft.Compute/virtualMachines",
        "friendlyName": "netvmtestv2vm1",
        "virtualMachineId": f"/subscriptions/{SUB}/resourceGroups/netsdktestrg/providers/"
        "Microsoft.Compute/virtualMachines/netvmtestv2vm1",
        "protectionStatus": "Healthy",
        "protectionState": "Protected",
        "healthStatus": "Passed",
        "lastBackupStatus": "Completed",
        "lastBackupTime": "2017-08-09T09:55:36.5588866Z",
        "protectedItemDataId": "17592741727863",
        "backupManagementType": "AzureIaasVM",
        "workloadType": "VM",
        "containerName": f"iaasvmcontainerv2;{CONTAINER}",
        "sourceResourceId": f"/subscriptions/{SUB}/resourceGroups/netsdktestrg/providers/"
        "Microsoft.Compute/virtualMachines/netvmtestv2vm1",
        "policyId": f"/Subscriptions/{SUB}/resourceGroups/SwaggerTestRg/providers/"
        "Microsoft.RecoveryServices/vaults/NetSDKTestRsVault/backupPolicies/DefaultPolicy",
        "policyName": "DefaultPolicy",
        "lastRecoveryPoint": "2017-08-09T09:56:54.9434132Z",
    },
}
BV_INSTANCE: dict[str, Any] = {  # Data Protection BackupInstances_List.json
    "id": f"/subscriptions/{SUB}/resourceGroups/000pikumar/providers/"
    "Microsoft.DataProtection/BackupVaults/PratikPrivatePreviewVault1/backupInstances/testInstance1",
    "name": "testInstance1",
    "type": "Microsoft.DataProtection/backupVaults/backupInstances",
    "properties": {
        "dataSourceInfo": {
            "datasourceType": "Microsoft.DBforPostgreSQL/servers/databases",
            "objectType": "Datasource",
            "resourceID": f"/subscriptions/{SUB}/resourceGroups/viveksipgtest/providers/"
            "Microsoft.DBforPostgreSQL/servers/viveksipgtest/databases/testdb",
            "resourceLocation": "",
            "resourceName": "testdb",
            "resourceType": "Microsoft.DBforPostgreSQL/servers/databases",
            "resourceUri": "",
        },
        "friendlyName": "harshitbi2",
        "objectType": "BackupInstance",
        "policyInfo": {
            "policyId": f"/subscriptions/{SUB}/resourceGroups/000pikumar/providers/"
            "Microsoft.DataProtection/BackupVaults/PratikPrivatePreviewVault1/backupPolicies/"
            "PratikPolicy1",
        },
        "protectionStatus": {"status": "ProtectionConfigured"},
        "currentProtectionState": "ProtectionConfigured",
        "provisioningState": "Succeeded",
    },
}
RS_POLICY_ENHANCED: dict[str, Any] = {  # V2Policy/v2-List-Policies.json
    "id": f"/Subscriptions/{SUB}/resourceGroups/SwaggerTestRg/providers/"
    "Microsoft.RecoveryServices/vaults/NetSDKTestRsVault/backupPolicies/v2-daily-sample",
    "name": "v2-daily-sample",
    "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
    "properties": {
        "backupManagementType": "AzureIaasVM",
        "policyType": "V2",
        "instantRpRetentionRangeInDays": 30,
        "schedulePolicy": {
            "schedulePolicyType": "SimpleSchedulePolicyV2",
            "scheduleRunFrequency": "Daily",
            "dailySchedule": {"scheduleRunTimes": ["2018-01-24T10:00:00Z"]},
        },
        "timeZone": "Pacific Standard Time",
        "protectedItemsCount": 0,
    },
}
RS_POLICY_WORKLOAD: dict[str, Any] = {  # AzureWorkload/BackupPolicies_List.json
    "id": f"/Subscriptions/{SUB}/resourceGroups/SwaggerTestRg/providers/"
    "Microsoft.RecoveryServices/vaults/NetSDKTestRsVault/backupPolicies/HourlyLogBackup",
    "name": "HourlyLogBackup",
    "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
    "properties": {
        "backupManagementType": "AzureWorkload",
        "workLoadType": "SQLDataBase",
        "settings": {"timeZone": "UTC", "issqlcompression": False},
        "subProtectionPolicy": [
            {
                "policyType": "Full",
                "schedulePolicy": {
                    "schedulePolicyType": "SimpleSchedulePolicy",
                    "scheduleRunFrequency": "Daily",
                    "scheduleRunTimes": ["2017-12-05T19:00:00Z"],
                    "scheduleWeeklyFrequency": 0,
                },
            },
            {
                "policyType": "Log",
                "schedulePolicy": {
                    "schedulePolicyType": "LogSchedulePolicy",
                    "scheduleFrequencyInMins": 60,
                },
            },
        ],
        "protectedItemsCount": 0,
    },
}
RS_POLICY_SQL: dict[str, Any] = {  # an AzureSql policy: retention only, no schedule
    "id": f"{RS_VAULT.id}/backupPolicies/sqlpolicy",
    "name": "sqlpolicy",
    "properties": {
        "backupManagementType": "AzureSql",
        "retentionPolicy": {"retentionPolicyType": "SimpleRetentionPolicy"},
    },
}


def bv_policy(
    *intervals: str, zone: str | None = None, name: str = "OSSDBPolicy"
) -> dict[str, Any]:
    """Data Protection BackupPolicies_List.json's shape: a backup rule and a retention rule."""
    schedule: dict[str, Any] = {"repeatingTimeIntervals": list(intervals)}
    if zone is not None:
        schedule["timeZone"] = zone
    return {
        "id": f"{BV_VAULT.id}/backupPolicies/{name}",
        "name": name,
        "type": "Microsoft.DataProtection/backupVaults/backupPolicies",
        "properties": {
            "datasourceTypes": ["OssDB"],
            "objectType": "BackupPolicy",
            "policyRules": [
                {
                    "backupParameters": {"backupType": "Full", "objectType": "AzureBackupParams"},
                    "dataStore": {"dataStoreType": "VaultStore", "objectType": "DataStoreInfoBase"},
                    "name": "BackupWeekly",
                    "objectType": "AzureBackupRule",
                    "trigger": {
                        "objectType": "ScheduleBasedTriggerContext",
                        "schedule": schedule,
                        "taggingCriteria": [],
                    },
                },
                {
                    "isDefault": True,
                    "lifecycles": [],
                    "name": "Default",
                    "objectType": "AzureRetentionRule",
                },
            ],
        },
    }


def page(*items: object, next_link: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": list(items)}
    if next_link is not None:
        body["nextLink"] = next_link
    return body


# --------------------------------------------------------------------------------------------
# Items


class TestProtectedItems:
    def test_the_spec_example(self) -> None:
        """Every field of the IaaS VM item, the times as UTC, the vault's key and kind."""
        result = parse_protected_items_page(page(RS_ITEM, next_link="https://next"), RS_VAULT)
        assert result.next_link == "https://next"
        assert result.skipped == ()
        (item,) = result.items
        assert item.id == RS_ITEM["id"]
        assert item.vault_key == RS_VAULT.key
        assert item.kind is VaultKind.RECOVERY_SERVICES
        assert item.name == f"VM;{CONTAINER}"
        assert item.friendly_name == "netvmtestv2vm1"
        assert item.datasource_type == "VM"
        assert item.datasource_id is not None
        assert item.datasource_id.endswith("/virtualMachines/netvmtestv2vm1")
        assert item.backup_management_type == "AzureIaasVM"
        assert item.policy_name == "DefaultPolicy"
        assert item.policy_key is not None
        assert item.policy_key.endswith("/backuppolicies/defaultpolicy")
        assert item.protection_state == "Protected"
        assert item.health_status == "Passed"
        assert item.last_backup_time == datetime(2017, 8, 9, 9, 55, 36, 558886, tzinfo=UTC)
        assert item.last_recovery_point == datetime(2017, 8, 9, 9, 56, 54, 943413, tzinfo=UTC)

    def test_fallbacks_and_sentinels(self) -> None:
        """No workloadType: protectedItemType; no policyName: the policy id's last segment;
        an empty policyId is no policy; a 0001 date is unset."""
        raw = copy.deepcopy(RS_ITEM)
        props = raw["properties"]
        del props["workloadType"], props["policyName"]
        props["lastRecoveryPoint"] = "0001-01-01T00:00:00Z"
        (item,) = parse_protected_items_page(page(raw), RS_VAULT).items
        assert item.datasource_type == "Microsoft.Compute/virtualMachines"
        assert item.policy_name == "DefaultPolicy"
        assert item.last_recovery_point is None
        props["policyId"] = ""
        (item,) = parse_protected_items_page(page(raw), RS_VAULT).items
        assert item.policy_id is None
        assert item.policy_name is None

    def test_an_item_of_another_vault_is_skipped(self) -> None:
        """The id must lie inside the vault (any casing); the page keeps the others."""
        foreign = copy.deepcopy(RS_ITEM)
        foreign["id"] = foreign["id"].replace("NetSDKTestRsVault", "OtherVault")
        lower = copy.deepcopy(RS_ITEM)
        lower["id"] = lower["id"].lower()
        result = parse_protected_items_page(page(foreign, lower), RS_VAULT)
        assert [item.id for item in result.items] == [lower["id"]]
        (message,) = result.skipped
        assert str(message).startswith("value[0].id: not inside the vault")

    @pytest.mark.parametrize(
        ("field", "value", "path"),
        [
            ("lastRecoveryPoint", "yesterday", "value[1].properties.lastRecoveryPoint"),
            ("lastBackupTime", 17, "value[1].properties.lastBackupTime"),
            ("friendlyName", ["x"], "value[1].properties.friendlyName"),
            ("protectionState", 3, "value[1].properties.protectionState"),
        ],
    )
    def test_bad_fields_name_their_path(self, field: str, value: object, path: str) -> None:
        """A bad field skips its item with the JSON path in the message."""
        bad = copy.deepcopy(RS_ITEM)
        bad["properties"][field] = value
        result = parse_protected_items_page(page(RS_ITEM, bad), RS_VAULT)
        assert len(result.items) == 1
        (message,) = result.skipped
        assert str(message).startswith(f"{path}: ")

    @pytest.mark.parametrize("payload", [None, [], {"value": {}}, {"value": [], "nextLink": 3}])
    def test_a_page_that_is_no_page_raises(self, payload: object) -> None:
        """Only the page's own shape raises."""
        with pytest.raises(ParseError):
            parse_protected_items_page(payload, RS_VAULT)

    @FUZZ
    @given(bad=json_values, where=st.integers(0, 2), properties=st.booleans())
    def test_one_bad_item_never_spoils_the_page(
        self, bad: object, where: int, properties: bool
    ) -> None:
        """Arbitrary JSON as an item (or as its properties) is read or skipped, never raised."""
        item = copy.deepcopy(RS_ITEM)
        if properties:
            item["properties"] = bad
            bad = item
        items: list[object] = [RS_ITEM, RS_ITEM]
        items.insert(where, bad)
        result = parse_protected_items_page(page(*items), RS_VAULT)
        assert len(result.items) + len(result.skipped) == 3
        assert len(result.items) >= 2


class TestBackupInstances:
    def test_the_spec_example(self) -> None:
        """The instance's datasource, policy and states."""
        (item,) = parse_backup_instances_page(page(BV_INSTANCE), BV_VAULT).items
        assert item.kind is VaultKind.BACKUP_VAULT
        assert item.name == "testInstance1"
        assert item.friendly_name == "harshitbi2"
        assert item.datasource_type == "Microsoft.DBforPostgreSQL/servers/databases"
        assert item.datasource_id is not None
        assert item.datasource_id.endswith("/databases/testdb")
        assert item.policy_name == "PratikPolicy1"
        assert item.protection_state == "ProtectionConfigured"
        assert item.health_status == "ProtectionConfigured"
        assert item.backup_management_type is None
        assert item.last_recovery_point is None

    def test_resource_id_in_either_spelling(self) -> None:
        """Some answers say `resourceId`."""
        raw = copy.deepcopy(BV_INSTANCE)
        source = raw["properties"]["dataSourceInfo"]
        source["resourceId"] = source.pop("resourceID")
        (item,) = parse_backup_instances_page(page(raw), BV_VAULT).items
        assert item.datasource_id == source["resourceId"]

    def test_a_bad_nested_object_names_its_path(self) -> None:
        """`policyInfo` that is not an object skips the instance."""
        raw = copy.deepcopy(BV_INSTANCE)
        raw["properties"]["policyInfo"] = "PratikPolicy1"
        result = parse_backup_instances_page(page(raw, BV_INSTANCE), BV_VAULT)
        assert len(result.items) == 1
        assert str(result.skipped[0]).startswith("value[0].properties.policyInfo: ")

    @FUZZ
    @given(
        bad=json_values,
        field=st.sampled_from(
            [
                "dataSourceInfo",
                "policyInfo",
                "protectionStatus",
                "friendlyName",
                "currentProtectionState",
            ]
        ),
    )
    def test_one_bad_field_never_spoils_the_page(self, bad: object, field: str) -> None:
        """Arbitrary JSON in a field is read or skipped, never raised."""
        raw = copy.deepcopy(BV_INSTANCE)
        raw["properties"][field] = bad
        result = parse_backup_instances_page(page(BV_INSTANCE, raw), BV_VAULT)
        assert len(result.items) + len(result.skipped) == 2


# --------------------------------------------------------------------------------------------
# Policies


class TestRecoveryServicesPolicies:
    def test_the_spec_examples(self) -> None:
        """The enhanced daily policy and the workload policy; AzureSql is kept without one."""
        result = parse_policies_page(
            page(RS_POLICY_ENHANCED, RS_POLICY_WORKLOAD, RS_POLICY_SQL), RS_VAULT
        )
        assert result.skipped == ()
        enhanced, workload, sql = result.policies
        assert enhanced.name == "v2-daily-sample"
        assert enhanced.key == RS_POLICY_ENHANCED["id"].lower()
        assert enhanced.schedule is not None
        assert enhanced.schedule.zone.key == "America/Los_Angeles"
        assert enhanced.problem is None
        assert workload.schedule is not None
        assert [part.kind for part in workload.schedule.parts] == [RunKind.FULL, RunKind.LOG]
        assert sql.schedule is None
        assert sql.problem == "no backup schedule (AzureSql)"

    def test_an_unreadable_schedule_is_kept_with_its_problem(self) -> None:
        """An unknown zone: the policy stays, schedule None, the problem names the path."""
        raw = copy.deepcopy(RS_POLICY_ENHANCED)
        raw["properties"]["timeZone"] = "Atlantis Standard Time"
        (policy,) = parse_policies_page(page(raw), RS_VAULT).policies
        assert policy.schedule is None
        assert policy.problem is not None
        assert policy.problem.startswith("properties.timeZone: unknown Windows time zone")

    def test_a_foreign_policy_is_skipped(self) -> None:
        """A policy id outside the vault is no policy of it."""
        raw = copy.deepcopy(RS_POLICY_ENHANCED)
        raw["id"] = raw["id"].replace("NetSDKTestRsVault", "Elsewhere")
        result = parse_policies_page(page(raw, {"name": "x"}), RS_VAULT)
        assert result.policies == ()
        assert [m.path for m in result.skipped] == ["value[0].id", "value[1].id"]

    @FUZZ
    @given(bad=json_values)
    def test_arbitrary_properties_keep_the_policy(self, bad: object) -> None:
        """Whatever `properties` holds, the policy is kept; without a schedule, with a problem."""
        raw = copy.deepcopy(RS_POLICY_ENHANCED)
        raw["properties"] = bad
        (policy,) = parse_policies_page(page(raw), RS_VAULT).policies
        assert (policy.schedule is None) == (policy.problem is not None)


class TestDataProtectionPolicies:
    def test_the_spec_shapes(self) -> None:
        """PT4H, P1D and P1W rules; an absent zone is UTC."""
        raw = [
            bv_policy("R/2021-08-15T22:00:00+00:00/PT4H", name="hourly"),
            bv_policy("R/2021-08-15T06:30:00+00:00/P1D", zone="W. Europe Standard Time", name="d"),
            bv_policy("R/2019-11-20T08:00:00-08:00/P1W", zone="Pacific Standard Time", name="w"),
        ]
        hourly, daily, weekly = parse_data_protection_policies_page(page(*raw), BV_VAULT).policies
        assert hourly.schedule is not None
        assert hourly.schedule.zone.key == "Etc/UTC"
        (part,) = hourly.schedule.parts
        assert part.kind is RunKind.BACKUP
        assert part.cadence == Repeating(utc(2021, 8, 15, 22), timedelta(hours=4))
        assert daily.schedule is not None
        assert daily.schedule.zone.key == "Europe/Berlin"
        runs = expected_runs(daily.schedule, utc(2026, 1, 10), utc(2026, 1, 11))
        assert [r.at for r in runs] == [utc(2026, 1, 10, 5, 30)]  # 06:30 local, as written
        assert weekly.schedule is not None
        assert weekly.schedule.parts[0].interval == timedelta(weeks=1)

    def test_with_a_zone_the_written_time_is_its_wall_clock(self) -> None:
        """A Bicep sample's 23:30+01:00 in W. Europe runs at 23:30 local, summer (CEST) or not;
        without a zone, the written instant."""
        raw = bv_policy("R/2022-05-31T23:30:00+01:00/P1D", zone="W. Europe Standard Time")
        (policy,) = parse_data_protection_policies_page(page(raw), BV_VAULT).policies
        assert policy.schedule is not None
        summer = expected_runs(policy.schedule, utc(2026, 6, 1), utc(2026, 6, 2))
        winter = expected_runs(policy.schedule, utc(2026, 12, 1), utc(2026, 12, 2))
        assert [r.at for r in summer + winter] == [
            utc(2026, 6, 1, 21, 30),
            utc(2026, 12, 1, 22, 30),
        ]
        raw = bv_policy("R/2022-05-31T23:30:00+01:00/P1D")
        (policy,) = parse_data_protection_policies_page(page(raw), BV_VAULT).policies
        assert policy.schedule is not None
        runs = expected_runs(policy.schedule, utc(2026, 6, 1), utc(2026, 6, 2))
        assert [r.at for r in runs] == [utc(2026, 6, 1, 22, 30)]

    def test_several_intervals_are_several_parts(self) -> None:
        """A weekly rule on two days lists two intervals."""
        raw = bv_policy("R/2021-08-16T02:00:00+00:00/P1W", "R/2021-08-19T02:00:00+00:00/P1W")
        (policy,) = parse_data_protection_policies_page(page(raw), BV_VAULT).policies
        assert policy.schedule is not None
        assert len(policy.schedule.parts) == 2

    def test_no_scheduled_rule_is_kept_with_a_problem(self) -> None:
        """An ad-hoc trigger, or retention rules only: no schedule."""
        raw = bv_policy("R/2021-08-15T22:00:00+00:00/PT4H")
        raw["properties"]["policyRules"][0]["trigger"] = {"objectType": "AdhocBasedTriggerContext"}
        (policy,) = parse_data_protection_policies_page(page(raw), BV_VAULT).policies
        assert policy.schedule is None
        assert policy.problem == "no scheduled backup rule"

    @pytest.mark.parametrize(
        ("edit", "path"),
        [
            (
                lambda r: r["properties"]["policyRules"][0]["trigger"]["schedule"].update(
                    repeatingTimeIntervals=["every day"]
                ),
                "properties.policyRules[0].trigger.schedule.repeatingTimeIntervals[0]",
            ),
            (
                lambda r: r["properties"]["policyRules"][0]["trigger"]["schedule"].update(
                    repeatingTimeIntervals=[]
                ),
                "properties.policyRules[0].trigger.schedule.repeatingTimeIntervals",
            ),
            (
                lambda r: r["properties"]["policyRules"][0]["trigger"]["schedule"].update(
                    timeZone="Nowhere Time"
                ),
                "properties.policyRules[0].trigger.schedule.timeZone",
            ),
            (lambda r: r["properties"].update(policyRules=None), "properties.policyRules"),
        ],
    )
    def test_unreadable_schedules_name_their_path(self, edit: Any, path: str) -> None:
        """The policy is kept; its problem starts with the JSON path."""
        raw = bv_policy("R/2021-08-15T22:00:00+00:00/PT4H")
        edit(raw)
        (policy,) = parse_data_protection_policies_page(page(raw), BV_VAULT).policies
        assert policy.schedule is None
        assert policy.problem is not None
        assert policy.problem.startswith(f"{path}: ")

    @FUZZ
    @given(bad=json_values, where=st.sampled_from(["rule", "trigger", "schedule", "intervals"]))
    def test_arbitrary_rules_keep_the_policy(self, bad: object, where: str) -> None:
        """Arbitrary JSON anywhere in a rule: the policy is kept, schedule or problem."""
        raw = bv_policy("R/2021-08-15T22:00:00+00:00/PT4H")
        rule = raw["properties"]["policyRules"][0]
        if where == "rule":
            raw["properties"]["policyRules"][0] = bad
        elif where == "trigger":
            rule["trigger"] = bad
        elif where == "schedule":
            rule["trigger"]["schedule"] = bad
        else:
            rule["trigger"]["schedule"]["repeatingTimeIntervals"] = bad
        result = parse_data_protection_policies_page(
            page(raw, bv_policy("R/2021-08-15T22:00:00Z/P1D", name="ok")), BV_VAULT
        )
        first, second = result.policies
        assert (first.schedule is None) == (first.problem is not None)
        assert second.schedule is not None
        assert isinstance(second.schedule.parts[0].cadence, Repeating)


# --------------------------------------------------------------------------------------------
# Jobs to items


def rs_job(name: str, entity: str, management: str = "AzureIaasVM", **extra: str) -> BackupJob:
    body = {
        "id": f"{RS_VAULT.id}/backupJobs/{name}",
        "name": name,
        "properties": {
            "jobType": "AzureIaaSVMJob",
            "operation": "Backup",
            "status": "Completed",
            "entityFriendlyName": entity,
            "backupManagementType": management,
            **extra,
        },
    }
    (job,) = parse_jobs_page(page(body), RS_VAULT).jobs
    return job


def bv_job(name: str, instance_id: str) -> BackupJob:
    return parse_backup_vault_job_item(
        {
            "id": f"{BV_VAULT.id}/backupJobs/{name}",
            "name": name,
            "properties": {
                "operation": "ScheduledBackup",
                "status": "Started",
                "backupInstanceId": instance_id,
            },
        },
        BV_VAULT.key,
    )


class TestItemIndex:
    def rs_items(self) -> list[ProtectedItem]:
        return list(parse_protected_items_page(page(RS_ITEM), RS_VAULT).items)

    def test_recovery_services_jobs_by_management_type_and_entity(self) -> None:
        """(backupManagementType, entityFriendlyName), without regard to case."""
        (item,) = self.rs_items()
        index = ItemIndex.of([item])
        assert index.item_for(rs_job("a", "NETVMTESTV2VM1", "azureiaasvm")) == item
        assert index.item_for(rs_job("b", "netvmtestv2vm1", "AzureWorkload")) is None
        assert index.item_for(rs_job("c", "othervm")) is None

    def test_ambiguous_entities_match_nothing(self) -> None:
        """Two items with the same friendly name and management type: no match."""
        (item,) = self.rs_items()
        twin = copy.deepcopy(RS_ITEM)
        twin["id"] = twin["id"].replace("netvmtestv2vm1", "twin")
        (other,) = parse_protected_items_page(page(twin), RS_VAULT).items
        index = ItemIndex([item, other])
        assert index.item_for(rs_job("a", "netvmtestv2vm1")) is None

    def test_twins_are_told_apart_by_their_container(self) -> None:
        """File shares of one name in two storage accounts: the job's `storageAccountName`
        names the container (a whole `;` part: `stdb01` is not `stdb010000`)."""
        base = f"{RS_VAULT.id}/backupFabrics/Azure/protectionContainers"
        shares = []
        for account in ("stdb01", "stdb010000"):
            raw = copy.deepcopy(RS_ITEM)
            raw["id"] = (
                f"{base}/StorageContainer;Storage;rg;{account}/protectedItems/AzureFileShare;db"
            )
            raw["properties"] |= {
                "friendlyName": "share-db",
                "backupManagementType": "AzureStorage",
            }
            (share,) = parse_protected_items_page(page(raw), RS_VAULT).items
            shares.append(share)
        index = ItemIndex(shares)
        for account, share in zip(("stdb01", "stdb010000"), shares, strict=True):
            job = rs_job("a", "share-db", "AzureStorage", storageAccountName=account)
            assert index.item_for(job) == share
        assert index.item_for(rs_job("b", "share-db", "AzureStorage")) is None
        other = rs_job("c", "share-db", "AzureStorage", storageAccountName="db01")
        assert index.item_for(other) is None

    def test_backup_vault_jobs_by_instance_id(self) -> None:
        """`backupInstanceId`, without regard to case."""
        (item,) = parse_backup_instances_page(page(BV_INSTANCE), BV_VAULT).items
        index = ItemIndex.of([item])
        assert index.item_for(bv_job("j1", item.id.upper())) == item
        assert index.item_for(bv_job("j2", item.id.replace("testInstance1", "x"))) is None
