"""Tests of the ARM payload parsers and value types in monitor.core (jobs, vaults, ids, wire)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.ids import MAX_SEGMENT_CHARS, check_path_segment, check_subscription_id
from monitor.core.jobs import (
    BackupJob,
    JobAction,
    JobKey,
    JobStatus,
    parse_job_details,
    parse_jobs_page,
)
from monitor.core.vaults import (
    VaultKind,
    parse_subscriptions_page,
    parse_vault_id,
    parse_vaults_page,
)
from monitor.core.wire import (
    build_jobs_filter,
    encoded_jobs_filter,
    format_filter_time,
    parse_arm_time,
    parse_duration_s,
    percent_encoded,
)
from monitor.errors import ParseError
from tests.core import payloads as p
from tests.core.strategies import UNSAFE_SEGMENT_CHARS, job_like, json_values, segment_text

VAULT = parse_vault_id(p.VAULT_ID)


def only_job(item: dict[str, Any]) -> BackupJob:
    parsed = parse_jobs_page(p.page(item), VAULT)
    assert parsed.skipped == ()
    (job,) = parsed.jobs
    return job


class TestVaultIds:
    def test_capital_subscriptions_and_provider_casing(self) -> None:
        """`/Subscriptions/` and any provider casing parse to the same key; `id` stays verbatim."""
        upper = parse_vault_id(p.VAULT_ID)
        lower = parse_vault_id(p.VAULT_ID_LOWER_PROVIDER)
        assert upper.id == p.VAULT_ID
        assert upper.key == lower.key == p.VAULT_ID.lower()
        assert (upper.subscription_id, upper.resource_group, upper.name) == (
            p.SUB,
            "rg-backup",
            "v1",
        )

    @pytest.mark.parametrize(
        ("resource_id", "problem"),
        [
            ("", "segments"),
            (p.VAULT_ID + "/backupJobs/x", "segments"),
            (p.VAULT_ID.replace("vaults", "backupVaults"), "RecoveryServices/backupVaults"),
            (p.VAULT_ID.replace("Microsoft.RecoveryServices", "Microsoft.DataProtection"), "Micro"),
            (p.VAULT_ID.replace("resourceGroups", "resourcegroupz"), "resourcegroups"),
            (p.VAULT_ID.replace("/Subscriptions/", "/Subs/"), "subscriptions"),
            (p.VAULT_ID.replace(p.SUB, ""), "subscription id"),
            ("subscriptions" + p.VAULT_ID, "segments"),
            (p.VAULT_ID.replace(p.SUB, "abc"), "subscription id must be a GUID, got 'abc'"),
            (p.VAULT_ID.replace(p.SUB, ".."), "subscription id must be a GUID"),
            (p.VAULT_ID.replace("rg-backup", ".."), "resource group is a dot segment"),
            (p.VAULT_ID.replace("rg-backup", " rg"), "resource group has leading or trailing"),
            (p.VAULT_ID.replace("/v1", "/.."), "vault name is a dot segment"),
            (p.VAULT_ID.replace("/v1", "/v?1"), "vault name holds '?' (U+003F)"),
            (p.VAULT_ID.replace("/v1", "/v#1"), "vault name holds '#'"),
            (p.VAULT_ID.replace("/v1", "/v%2F1"), "vault name holds '%'"),
            (p.VAULT_ID.replace("/v1", "/v\\1"), "vault name holds '\\\\'"),
            (p.VAULT_ID.replace("/v1", "/v\n1"), "vault name holds '\\n' (U+000A)"),
            (p.VAULT_ID.replace("/v1", "/" + "v" * 261), "261 characters long"),
        ],
    )
    def test_bad_ids_name_the_problem(self, resource_id: str, problem: str) -> None:
        """A malformed vault id raises ParseError naming the offending part."""
        with pytest.raises(ParseError) as info:
            parse_vault_id(resource_id)
        assert info.value.path == "resource_id"
        assert problem in info.value.problem

    def test_vault_page(self) -> None:
        """A vault list page yields refs with location, skips non-vaults, keeps nextLink."""
        payload = {
            "value": [
                {
                    "id": p.VAULT_ID,
                    "name": "v1",
                    "location": "westeurope",
                    "type": "Microsoft.RecoveryServices/vaults",
                },
                {
                    "id": p.VAULT_ID_LOWER_PROVIDER.replace("/v1", "/v2"),
                    "type": "microsoft.recoveryservices/vaults",
                },
                {"id": "/bogus", "type": "Microsoft.RecoveryServices/vaults"},
                {"id": p.VAULT_ID, "type": "Microsoft.DataProtection/backupVaults"},
                "nope",
            ],
            "nextLink": p.NEXT_LINK,
        }
        page = parse_vaults_page(payload)
        assert [v.name for v in page.vaults] == ["v1", "v2"]
        assert page.vaults[0].location == "westeurope"
        assert page.vaults[1].location is None
        assert [e.path for e in page.skipped] == ["value[2].id", "value[3].type", "value[4]"]
        assert page.next_link == p.NEXT_LINK
        assert page.has_next_page

    def test_hostile_vault_names_are_skipped_with_their_path(self) -> None:
        """A listed vault whose name is not one safe path segment is skipped as `value[i].id`."""
        names = ["v1", "..", ".", "a?b", "a#b", "a\\b", "a\nb", "a%2Fb", "x" * 5000, "\u202ev"]
        payload = {
            "value": [
                {
                    "id": p.VAULT_ID.replace("/v1", f"/{n}"),
                    "type": "Microsoft.RecoveryServices/vaults",
                }
                for n in names
            ]
            + [
                {
                    "id": p.VAULT_ID.replace("/v1", "/a/b"),
                    "type": "Microsoft.RecoveryServices/vaults",
                }
            ]
        }
        page = parse_vaults_page(payload)
        assert [v.name for v in page.vaults] == ["v1"]
        assert [e.path for e in page.skipped] == [
            f"value[{i}].id" for i in range(1, len(names) + 1)
        ]
        assert "segments" in page.skipped[-1].problem


BV_RG = f"/subscriptions/{p.SUB}/resourceGroups/rg-bv/providers"
BV_ID = f"{BV_RG}/Microsoft.DataProtection/backupVaults/bv1"


class TestBackupVaultIds:
    @pytest.mark.parametrize(
        "resource_id",
        [
            BV_ID,
            BV_ID.replace("/subscriptions/", "/Subscriptions/"),
            BV_ID.replace(
                "Microsoft.DataProtection/backupVaults", "microsoft.dataprotection/backupvaults"
            ),
            BV_ID.replace(
                "Microsoft.DataProtection/backupVaults", "MICROSOFT.DATAPROTECTION/BACKUPVAULTS"
            ),
            BV_ID.replace("backupVaults", "Backupvaults"),
            BV_ID.replace("resourceGroups", "resourcegroups").replace("providers", "Providers"),
        ],
    )
    def test_any_casing(self, resource_id: str) -> None:
        """A Backup vault id in any casing of its fixed segments: kind BACKUP_VAULT, key lower."""
        vault = parse_vault_id(resource_id, location="westeurope")
        assert vault.kind is VaultKind.BACKUP_VAULT
        assert vault.id == resource_id
        assert vault.key == BV_ID.lower()
        assert (vault.subscription_id, vault.resource_group, vault.name, vault.location) == (
            p.SUB,
            "rg-bv",
            "bv1",
            "westeurope",
        )

    def test_recovery_services_kind(self) -> None:
        """A Recovery Services vault id is of kind RECOVERY_SERVICES (also the default)."""
        assert parse_vault_id(p.VAULT_ID).kind is VaultKind.RECOVERY_SERVICES
        assert parse_vault_id(p.VAULT_ID_LOWER_PROVIDER).kind is VaultKind.RECOVERY_SERVICES

    @pytest.mark.parametrize(
        "resource_id",
        [
            f"{BV_RG}/Microsoft.DataProtection/vaults/bv1",
            f"{BV_RG}/Microsoft.RecoveryServices/backupVaults/bv1",
            f"{BV_RG}/Microsoft.DataProtection/backupVault/bv1",
            f"{BV_RG}/Microsoft.DataProtection/backupVaults/bv1/backupJobs/j",
            f"{BV_RG}/Microsoft.DataProtection/backupVaults/..",
        ],
    )
    def test_mixed_or_malformed_refused(self, resource_id: str) -> None:
        """A namespace with the other kind's segment, or a malformed Backup vault id, is refused."""
        with pytest.raises(ParseError) as info:
            parse_vault_id(resource_id)
        assert info.value.path == "resource_id"

    def test_kind_names(self) -> None:
        """Each kind names its provider namespace, segment, resource type and event value."""
        assert VaultKind.BACKUP_VAULT.resource_type == "Microsoft.DataProtection/backupVaults"
        assert VaultKind.RECOVERY_SERVICES.resource_type == "Microsoft.RecoveryServices/vaults"
        assert (VaultKind.BACKUP_VAULT.namespace, VaultKind.BACKUP_VAULT.vaults_segment) == (
            "Microsoft.DataProtection",
            "backupVaults",
        )
        assert [k.value for k in VaultKind] == ["recovery_services", "backup_vault"]

    def test_backup_vaults_page_skips_recovery_services(self) -> None:
        """With kind BACKUP_VAULT, Backup vaults parse and Recovery Services items are skipped."""
        payload = {
            "value": [
                {
                    "id": BV_ID,
                    "name": "bv1",
                    "location": "westeurope",
                    "type": "Microsoft.DataProtection/backupVaults",
                },
                {
                    "id": BV_ID.replace("bv1", "bv2").lower(),
                    "type": "microsoft.dataprotection/backupvaults",
                },
                {"id": BV_ID.replace("bv1", "bv3")},
                {"id": p.VAULT_ID, "type": "Microsoft.RecoveryServices/vaults"},
                {"id": p.VAULT_ID},
                {"id": p.VAULT_ID, "type": "Microsoft.DataProtection/backupVaults"},
            ]
        }
        page = parse_vaults_page(payload, VaultKind.BACKUP_VAULT)
        assert [v.name for v in page.vaults] == ["bv1", "bv2", "bv3"]
        assert all(v.kind is VaultKind.BACKUP_VAULT for v in page.vaults)
        assert page.vaults[0].location == "westeurope"
        assert [e.path for e in page.skipped] == ["value[3].type", "value[4].id", "value[5].id"]
        assert "Microsoft.DataProtection/backupVaults" in page.skipped[0].problem

    def test_recovery_services_page_skips_backup_vaults(self) -> None:
        """With the default kind, Backup vault items are skipped (by type, else by id)."""
        payload = {
            "value": [
                {"id": p.VAULT_ID, "type": "Microsoft.RecoveryServices/vaults"},
                {"id": BV_ID, "type": "Microsoft.DataProtection/backupVaults"},
                {"id": BV_ID},
                {"id": BV_ID, "type": "Microsoft.RecoveryServices/vaults"},
            ]
        }
        for page in (
            parse_vaults_page(payload),
            parse_vaults_page(payload, VaultKind.RECOVERY_SERVICES),
        ):
            assert [v.name for v in page.vaults] == ["v1"]
            assert page.vaults[0].kind is VaultKind.RECOVERY_SERVICES
            assert [e.path for e in page.skipped] == ["value[1].type", "value[2].id", "value[3].id"]

    @settings(max_examples=200)
    @given(
        st.fixed_dictionaries(
            {
                "value": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "id": st.sampled_from([BV_ID, p.VAULT_ID, BV_ID.lower()]) | json_values,
                            "type": st.sampled_from(
                                [
                                    "Microsoft.DataProtection/backupVaults",
                                    "Microsoft.RecoveryServices/vaults",
                                ]
                            )
                            | json_values,
                            "location": json_values,
                        },
                    )
                    | json_values,
                    max_size=4,
                )
            },
            optional={"nextLink": json_values},
        )
        | json_values,
        st.sampled_from(list(VaultKind)),
    )
    def test_any_page_of_either_kind(self, payload: Any, kind: VaultKind) -> None:
        """Any payload parses or raises ParseError; every vault parsed is of the kind asked."""
        with contextlib.suppress(ParseError):
            page = parse_vaults_page(payload, kind)
            assert all(v.kind is kind for v in page.vaults)
            assert len(page.vaults) + len(page.skipped) == len(payload["value"])


class TestSubscriptionsPage:
    def test_states_that_can_still_be_read_are_kept(self) -> None:
        """Enabled, Warned and PastDue subscriptions are kept; Disabled and Deleted are not."""
        payload = {
            "value": [
                {"subscriptionId": f"0000000{n}-0000-0000-0000-000000000000", "state": state}
                for n, state in enumerate(["Enabled", "Warned", "PastDue", "Disabled", "Deleted"])
            ]
            + [{"id": "/subscriptions/00000009-0000-0000-0000-000000000000"}]
        }
        page = parse_subscriptions_page(payload)
        assert [s[:8] for s in page.ids] == ["00000000", "00000001", "00000002", "00000009"]
        assert page.skipped == ()
        assert page.next_link is None

    def test_ids_that_are_not_guids_are_skipped_with_their_path(self) -> None:
        """A subscription id that is not a GUID never reaches a URL: skipped with its JSON path."""
        guid = "0000000A-0000-0000-0000-00000000000B"
        payload = {
            "value": [
                {"subscriptionId": "../../x"},
                {"subscriptionId": "abc"},
                {"subscriptionId": 7},
                {"subscriptionId": f" {guid}"},
                {"id": "/subscriptions/not-a-guid"},
                {"id": "/subscriptions/a/b"},
                {},
                "nope",
                {"subscriptionId": guid, "state": "Enabled"},
            ],
            "nextLink": p.NEXT_LINK,
        }
        page = parse_subscriptions_page(payload)
        assert page.ids == (guid.lower(),)
        assert [e.path for e in page.skipped] == [
            "value[0].subscriptionId",
            "value[1].subscriptionId",
            "value[2].subscriptionId",
            "value[3].subscriptionId",
            "value[4].id",
            "value[5].subscriptionId",
            "value[6].subscriptionId",
            "value[7]",
        ]
        assert "must be a GUID, got '../../x'" in page.skipped[0].problem
        assert page.next_link == p.NEXT_LINK

    @pytest.mark.parametrize("payload", [None, [], {"value": {}}, {"value": [], "nextLink": 3}])
    def test_bad_page_raises(self, payload: object) -> None:
        """A payload that is not an object with a list `value` (or a bad nextLink) raises."""
        with pytest.raises(ParseError):
            parse_subscriptions_page(payload)


class TestPathSegments:
    @pytest.mark.parametrize(
        "value",
        [
            "7ddead57-0000-4000-8000-000000000001",
            "a;b",  # Backup's container and item names hold ';'
            "IaasVMContainer;iaasvmcontainerv2;rg;vm1",
            "rg(prod)_1.2",
            "...",
            "a b",
            "גיבוי-יומי",  # right-to-left letters are letters
            "نسخة احتياطية",
            "バックアップ",
            "x" * MAX_SEGMENT_CHARS,
        ],
    )
    def test_accepted(self, value: str) -> None:
        """GUIDs, ARM's names and letters of any script (right-to-left too) are accepted as is."""
        assert check_path_segment(value, "job name") is value

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("", "job name is empty: ''"),
            (".", "job name is a dot segment: '.'"),
            ("..", "job name is a dot segment: '..'"),
            (" a", "job name has leading or trailing whitespace"),
            ("a\u3000", "job name has leading or trailing whitespace"),
            ("\n", "job name has leading or trailing whitespace"),
            ("x" * 5000, f"job name is 5000 characters long, more than {MAX_SEGMENT_CHARS}"),
            ("evil/name", "job name holds '/' (U+002F), which a path segment cannot hold"),
            ("a\u202eb", "job name holds '\\u202e' (U+202E)"),
            ("\uff0e\uff0e", "normalises (NFKC) to the dot segment '..'"),
            ("a\uff0fb", "normalises (NFKC) to a value that holds '/'"),
            ("\u2100", "normalises (NFKC) to a value that holds '/'"),  # ℀ is a/c
        ],
    )
    def test_refused_with_the_problem_named(self, value: str, problem: str) -> None:
        """A refused value raises ParseError at the given path, naming what is wrong with it."""
        with pytest.raises(ParseError) as info:
            check_path_segment(value, "job name", path="name")
        assert info.value.path == "name"
        assert problem in info.value.problem

    @pytest.mark.parametrize("value", [None, 7, ["a"], {"a": 1}, True])
    def test_non_strings_are_refused(self, value: object) -> None:
        """Anything but a string is refused, naming its type."""
        with pytest.raises(ParseError, match=type(value).__name__):
            check_path_segment(value, "job name")

    @settings(max_examples=500)
    @given(segment_text)
    def test_accepted_values_hold_nothing_a_path_reads(self, value: str) -> None:
        """Whatever is accepted is non-empty, bounded, not a dot segment, unpadded, and holds no
        separator, escape, control or format character, also after NFKC normalisation."""
        problem: str | None = None
        try:
            check_path_segment(value, "job name")
        except ParseError as exc:
            problem = exc.problem
        if problem is not None:
            assert problem.startswith("job name ")
            return
        assert 0 < len(value) <= MAX_SEGMENT_CHARS
        assert value.strip() == value
        for form in (value, unicodedata.normalize("NFKC", value)):
            assert form not in (".", "..")
            assert not set(form) & {"/", "\\", "?", "#", "%"}
        assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value)

    @settings(max_examples=300)
    @given(
        st.text(alphabet=st.characters(categories=["L", "N"]), min_size=2, max_size=200),
        st.sampled_from(UNSAFE_SEGMENT_CHARS),
        st.data(),
    )
    def test_one_unsafe_character_anywhere_inside_is_named(
        self, letters: str, bad: str, data: st.DataObject
    ) -> None:
        """Letters and digits of any script pass; one unsafe character put inside them fails,
        and the message names its code point."""
        assert check_path_segment(letters, "vault name") == letters
        at = data.draw(st.integers(min_value=1, max_value=len(letters) - 1))
        with pytest.raises(ParseError) as info:
            check_path_segment(letters[:at] + bad + letters[at:], "vault name")
        assert f"(U+{ord(bad):04X})" in info.value.problem

    @pytest.mark.parametrize(
        "value", ["", "abc", "../../x", "00000000-0000-0000-0000-00000000000", " " + p.SUB, None]
    )
    def test_subscription_ids_must_be_guids(self, value: object) -> None:
        """A subscription id is a GUID, nothing else; the message quotes what was given."""
        with pytest.raises(ParseError, match="subscription id must be a GUID, got "):
            check_subscription_id(value)
        assert check_subscription_id(p.SUB.upper()) == p.SUB.upper()


class TestJobTypes:
    def test_iaas_vm_job(self) -> None:
        """AzureIaaSVMJob: base fields, ISO duration, 7 fractional digits, lower-cased key."""
        job = only_job(p.IAAS_COMPLETED)
        assert job.key == JobKey(
            vault_key=VAULT.key, job_name="7ddead57-0000-4000-8000-000000000001"
        )
        assert job.name == "7DDEAD57-0000-4000-8000-000000000001"
        assert job.resource_id.startswith("/Subscriptions/")
        assert job.job_type == "AzureIaaSVMJob"
        assert job.status is JobStatus.COMPLETED
        assert job.start_at == datetime(2026, 11, 25, 10, 3, 17, 123456, tzinfo=UTC)
        assert job.end_at == datetime(2026, 11, 25, 10, 23, 40, 213126, tzinfo=UTC)
        assert job.duration_raw == "PT12.4272909S"
        assert job.duration_s == pytest.approx(12.4272909)
        assert job.actions == ()
        assert job.entity == "vm-web-01"
        assert job.backup_management_type == "AzureIaasVM"
        assert job.properties["virtualMachineVersion"] == "Compute"

    def test_iaas_vm_job_v2_running(self) -> None:
        """AzureIaaSVMJobV2: TimeSpan duration, int actionsInfo, sentinel endTime → None."""
        job = only_job(p.IAAS_V2_RUNNING)
        assert job.job_type == "AzureIaaSVMJobV2"
        assert job.status is JobStatus.IN_PROGRESS
        assert job.end_at is None
        assert job.duration_s == pytest.approx(20 * 60 + 23.0896697)
        assert job.actions == (JobAction.CANCELLABLE,)
        assert not job.status.is_terminal
        assert job.status.outcome is None

    def test_workload_job(self) -> None:
        """AzureWorkloadJob: free-text operation, string actions, failed outcome."""
        job = only_job(p.WORKLOAD_FAILED)
        assert job.operation == "Backup (Full)"
        assert job.actions == ("Retriable",)
        assert job.status.outcome == "failed"
        assert job.duration_s == pytest.approx(193.6439467)

    def test_storage_job(self) -> None:
        """AzureStorageJob: an explicit +00:00 offset parses to UTC."""
        job = only_job(p.STORAGE_WARNINGS)
        assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
        assert job.status.outcome == "succeeded_with_warnings"
        assert job.end_at == datetime(2026, 11, 25, 10, 5, tzinfo=UTC)

    def test_mab_job(self) -> None:
        """MabJob: TimeSpan with a day part; the 2001-01-01 sentinel means unset."""
        job = only_job(p.MAB_CANCELLED)
        assert job.status is JobStatus.CANCELLED
        assert job.status.outcome == "cancelled"
        assert job.end_at is None
        assert job.duration_s == pytest.approx(86400 + 2 * 3600 + 3 * 60 + 4.5)

    def test_dpm_job(self) -> None:
        """DpmJob: Cancelling is not terminal; mixed int/string actions normalise."""
        job = only_job(p.DPM_CANCELLING)
        assert job.status is JobStatus.CANCELLING
        assert not job.status.is_terminal
        assert job.actions == ("Invalid", "Cancellable", "Retriable")
        assert job.duration_s == pytest.approx(26 * 3600)

    def test_vault_job(self) -> None:
        """VaultJob: lower-case status canonicalises; null optional fields give None."""
        job = only_job(p.VAULT_JOB)
        assert job.status is JobStatus.COMPLETED
        assert str(job.status) == "Completed"
        assert job.entity is None
        assert job.backup_management_type is None
        assert job.duration_s == 0.0

    def test_unknown_type_kept(self) -> None:
        """An unknown jobType keeps base fields, raw properties and unknown actions/status."""
        job = only_job(p.UNKNOWN_TYPE)
        assert job.job_type == "AzureFutureJob"
        assert job.status.value == "Paused"
        assert not job.status.is_known
        assert not job.status.is_terminal
        assert job.status.outcome is None
        assert job.actions == ("7", "Frobnicate")
        assert job.duration_s == 4 * 7 * 86400
        assert job.properties["futureField"] == {"nested": [1, 2]}

    def test_whole_page(self) -> None:
        """Every job type on one page parses; nextLink comes back verbatim."""
        parsed = parse_jobs_page(p.page(*p.ALL_ITEMS, next_link=p.NEXT_LINK), VAULT)
        assert len(parsed.jobs) == len(p.ALL_ITEMS)
        assert parsed.skipped == ()
        assert parsed.next_link == p.NEXT_LINK
        assert parsed.has_next_page


class TestJobStatus:
    @pytest.mark.parametrize("raw", ["Cancelled", "cancelled", "CANCELLED"])
    def test_cancelled_any_case(self, raw: str) -> None:
        """Cancelled in any casing is the interned terminal status."""
        assert JobStatus.of(raw) is JobStatus.CANCELLED
        assert JobStatus.of(raw).is_terminal

    def test_canceled_one_l_is_unknown(self) -> None:
        """`Canceled` (async-operation spelling) is not the job status; it passes through."""
        status = JobStatus.of("Canceled")
        assert status != JobStatus.CANCELLED
        assert status.value == "Canceled"
        assert not status.is_terminal

    def test_unknown_compares_case_insensitively(self) -> None:
        """Unknown statuses pass through unchanged yet compare and hash case-insensitively."""
        a, b = JobStatus.of("Succeeded"), JobStatus.of("succeeded")
        assert (a.value, b.value) == ("Succeeded", "succeeded")
        assert a == b
        assert hash(a) == hash(b)
        assert a != "Succeeded"

    def test_immutable(self) -> None:
        """A status cannot be changed in place."""
        with pytest.raises(AttributeError):
            JobStatus.FAILED.value = "x"
        with pytest.raises(AttributeError):
            JobStatus.FAILED.is_terminal = False

    @given(
        raw=st.one_of(
            st.text(max_size=30),
            st.sampled_from(["completed", "COMPLETEDWITHWARNINGS", "Failed", "cAnCeLlEd"]),
        )
    )
    def test_terminal_exactly_when_it_has_an_outcome(self, raw: str) -> None:
        """Any text, known or not, in any casing: terminal iff it is one of the four outcomes."""
        status = JobStatus.of(raw)
        assert status.is_terminal == (status.outcome is not None)
        four = {"completed", "completedwithwarnings", "failed", "cancelled"}
        assert status.is_terminal == (raw.lower() in four)

    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            (JobStatus.IN_PROGRESS, None),
            (JobStatus.CANCELLING, None),
            (JobStatus.INVALID, None),
            (JobStatus.COMPLETED, "succeeded"),
            (JobStatus.COMPLETED_WITH_WARNINGS, "succeeded_with_warnings"),
            (JobStatus.FAILED, "failed"),
            (JobStatus.CANCELLED, "cancelled"),
        ],
    )
    def test_outcomes(self, status: JobStatus, outcome: str | None) -> None:
        """Each known status maps to its documented outcome; terminal iff it has one."""
        assert status.outcome == outcome
        assert status.is_terminal == (outcome is not None)
        assert status.is_known


class TestMalformedItems:
    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda i: i["properties"].pop("status"), "properties.status"),
            (lambda i: i["properties"].update(status=3), "properties.status"),
            (lambda i: i["properties"].update(status=""), "properties.status"),
            (lambda i: i["properties"].pop("jobType"), "properties.jobType"),
            (lambda i: i.pop("name"), "name"),
            (lambda i: i.update(id=None), "id"),
            (lambda i: i.update(properties=[]), "properties"),
            (lambda i: i["properties"].update(startTime="yesterday"), "properties.startTime"),
            (lambda i: i["properties"].update(endTime=17), "properties.endTime"),
            (lambda i: i["properties"].update(actionsInfo=[1, None]), "properties.actionsInfo[1]"),
            (lambda i: i["properties"].update(actionsInfo=[True]), "properties.actionsInfo[0]"),
            (lambda i: i["properties"].update(actionsInfo="1"), "properties.actionsInfo"),
            (lambda i: i["properties"].update(duration=12.5), "properties.duration"),
            (lambda i: i["properties"].update(operation=["Backup"]), "properties.operation"),
            (
                lambda i: i["properties"].update(entityFriendlyName=1),
                "properties.entityFriendlyName",
            ),
        ],
    )
    def test_item_skipped_with_path(self, mutate: Any, path: str) -> None:
        """A malformed item is skipped with its JSON path; its neighbours still parse."""
        body = p.page(p.IAAS_COMPLETED, p.IAAS_V2_RUNNING, p.WORKLOAD_FAILED, p.VAULT_JOB)
        mutate(body["value"][3])
        parsed = parse_jobs_page(body, VAULT)
        assert len(parsed.jobs) == 3
        (error,) = parsed.skipped
        assert error.path == f"value[3].{path}"

    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            ("evil/name", "holds '/'"),
            ("..", "dot segment"),
            (".", "dot segment"),
            ("a?b", "holds '?'"),
            ("a#b", "holds '#'"),
            ("a\\b", "holds '\\\\'"),
            ("a%2e", "holds '%'"),
            ("a\nb", "holds '\\n'"),
            ("a\x00b", "holds '\\x00'"),
            ("a\u2028b", "holds '\\u2028'"),
            ("a\u202eb", "holds '\\u202e'"),
            (" a", "whitespace"),
            ("x" * 5000, "5000 characters long"),
        ],
    )
    def test_unsafe_job_name_skipped_with_path(self, name: str, problem: str) -> None:
        """A job whose name cannot be one URL path segment is skipped as `value[i].name`."""
        hostile = p.job_item("x", status="Completed")
        hostile["name"] = name
        parsed = parse_jobs_page(p.page(p.IAAS_COMPLETED, hostile, p.WORKLOAD_FAILED), VAULT)
        assert [j.name for j in parsed.jobs] == [
            p.IAAS_COMPLETED["name"],
            p.WORKLOAD_FAILED["name"],
        ]
        (error,) = parsed.skipped
        assert error.path == "value[1].name"
        assert error.problem.startswith("job name ")
        assert problem in error.problem

    @pytest.mark.parametrize("name", ["a;b", "גיבוי", "ジョブ", "a b", "x" * MAX_SEGMENT_CHARS])
    def test_unusual_but_safe_job_names_are_kept(self, name: str) -> None:
        """';', spaces and letters of any script (right-to-left too) are kept verbatim."""
        item = p.job_item(name, status="Completed")
        job = only_job(item)
        assert job.name == name
        assert job.key.job_name == name.lower()

    @pytest.mark.parametrize(
        "resource_id",
        [
            p.VAULT_ID.replace("/v1", "/v2") + "/backupJobs/x",
            p.VAULT_ID + "/backupJobsX/x",
            p.VAULT_ID,
            "/x",
            "",
        ],
    )
    def test_job_of_another_vault_is_skipped(self, resource_id: str) -> None:
        """A job whose `id` is not under `{vault}/backupJobs/` is skipped as `value[i].id`."""
        item = p.job_item("x")
        item["id"] = resource_id
        parsed = parse_jobs_page(p.page(item, p.IAAS_COMPLETED), VAULT)
        assert len(parsed.jobs) == 1
        (error,) = parsed.skipped
        assert error.path == "value[0].id"
        assert "not a job of the vault" in error.problem

    def test_job_id_in_any_casing_of_its_vault_is_kept(self) -> None:
        """The vault prefix of a job's `id` is compared case-insensitively."""
        item = p.job_item("x")
        item["id"] = item["id"].lower().replace("/subscriptions/", "/SUBSCRIPTIONS/")
        assert only_job(item).resource_id == item["id"]

    def test_non_object_item(self) -> None:
        """A non-object item is skipped with the bare index as path."""
        parsed = parse_jobs_page({"value": [None, p.IAAS_COMPLETED]}, VAULT)
        assert [e.path for e in parsed.skipped] == ["value[0]"]
        assert len(parsed.jobs) == 1

    def test_garbage_duration_is_none_not_an_error(self) -> None:
        """An unparseable duration string keeps the job, with the raw text and no seconds."""
        job = only_job(p.job_item("x", duration="about an hour"))
        assert job.duration_raw == "about an hour"
        assert job.duration_s is None

    @pytest.mark.parametrize(
        "payload", [None, [], {"value": {}}, {"values": []}, "x", {"value": None}]
    )
    def test_bad_page_raises(self, payload: object) -> None:
        """A payload that is not an object with a list `value` raises ParseError."""
        with pytest.raises(ParseError):
            parse_jobs_page(payload, VAULT)

    @pytest.mark.parametrize(
        ("link", "expected"), [(None, None), ("", None), (p.NEXT_LINK, p.NEXT_LINK)]
    )
    def test_next_link_absent_null_or_empty(self, link: object, expected: str | None) -> None:
        """nextLink absent, null or empty means the last page; otherwise it is verbatim."""
        body: dict[str, Any] = {"value": []}
        if link is not None:
            body["nextLink"] = link
        assert parse_jobs_page(body, VAULT).next_link == expected
        assert parse_jobs_page({"value": [], "nextLink": None}, VAULT).next_link is None

    def test_next_link_not_a_string(self) -> None:
        """A non-string nextLink fails the page: following it would be guesswork."""
        with pytest.raises(ParseError) as info:
            parse_jobs_page({"value": [], "nextLink": 5}, VAULT)
        assert info.value.path == "nextLink"


class TestDetails:
    def test_iaas_details(self) -> None:
        """Details carry normalised errors (int code → str), tasks with sentinels, extended info."""
        details = parse_job_details(p.IAAS_DETAILS, VAULT)
        assert details.job.status is JobStatus.FAILED
        assert details.job.duration_s == pytest.approx(20 * 60 + 23.0896697)
        (error,) = details.errors
        assert error.code == "400026"
        assert error.title == "Could not communicate with the VM agent"
        assert error.message is not None
        assert error.message.startswith("VM agent")
        assert error.recommendations == ("Ensure the VM agent is running.", "Check network.")
        snapshot, transfer = details.tasks
        assert snapshot.name == "Take Snapshot"
        assert snapshot.status is JobStatus.COMPLETED
        assert snapshot.duration_s == 42.0
        assert snapshot.progress_percentage == 100.0
        assert transfer.status == JobStatus.of("notstarted")
        assert transfer.start_at is None
        assert transfer.end_at is None
        assert details.property_bag == {"VM Name": "vm-web-01", "Backup Size": "2332 MB"}
        assert details.progress_percentage == 42.5
        assert details.estimated_remaining_s == 300.0
        assert details.dynamic_error_message == "Snapshot failed."
        assert details.skipped == ()

    def test_workload_error_shape(self) -> None:
        """AzureWorkloadErrorInfo keeps additionalDetails; an empty title stays empty."""
        details = parse_job_details(p.WORKLOAD_FAILED, VAULT)
        (error,) = details.errors
        assert error.code == "510008"
        assert error.additional_details == "SQL error 945"
        assert details.tasks == ()
        assert details.property_bag == {}

    @pytest.mark.parametrize(
        "info",
        [
            {"errorString": "MARS agent failed", "recommendations": ["Reinstall"]},  # Mab/Dpm
            {
                "errorCode": "UserErrorVmNotFound",
                "errorString": "MARS agent failed",
            },  # Vault/Storage
        ],
    )
    def test_other_error_shapes(self, info: dict[str, Any]) -> None:
        """DpmErrorInfo/MabErrorInfo (no code) and string-coded shapes normalise alike."""
        item = p.job_item("e", job_type="MabJob", status="Failed", errorDetails=[info])
        (error,) = parse_job_details(item, VAULT).errors
        assert error.message == "MARS agent failed"
        assert error.code == info.get("errorCode")
        assert error.title is None

    def test_malformed_entries_dropped_with_path(self) -> None:
        """Bad error and task entries are dropped and reported; the job survives."""
        item = p.job_item(
            "e",
            status="Failed",
            errorDetails=[{"errorCode": True}, "x", {"errorString": "ok"}],
            extendedInfo={
                "tasksList": [{"status": "Completed"}, {"taskId": "T", "startTime": "never"}],
                "propertyBag": {"a": "b", "n": 1, "z": None},
                "progressPercentage": "12",
                "estimatedRemainingDuration": "unknown",
            },
        )
        with pytest.raises(ParseError) as info:
            parse_job_details(item, VAULT)
        assert info.value.path == "properties.extendedInfo.progressPercentage"
        del item["properties"]["extendedInfo"]["progressPercentage"]
        details = parse_job_details(item, VAULT)
        assert [e.message for e in details.errors] == ["ok"]
        assert details.tasks == ()
        assert details.property_bag == {"a": "b"}
        assert details.estimated_remaining_s is None
        assert [e.path for e in details.skipped] == [
            "properties.errorDetails[0].errorCode",
            "properties.errorDetails[1]",
            "properties.extendedInfo.tasksList[0].taskId",
            "properties.extendedInfo.tasksList[1].startTime",
            "properties.extendedInfo.propertyBag['n']",
        ]

    def test_estimated_remaining_iso(self) -> None:
        """estimatedRemainingDuration may be ISO 8601 too."""
        item = p.job_item("e", extendedInfo={"estimatedRemainingDuration": "PT5M"})
        assert parse_job_details(item, VAULT).estimated_remaining_s == 300.0

    def test_malformed_job_raises(self) -> None:
        """A details payload without a status raises ParseError naming the field."""
        item = p.job_item("e")
        del item["properties"]["status"]
        with pytest.raises(ParseError) as info:
            parse_job_details(item, VAULT)
        assert info.value.path == "properties.status"


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("PT12.4272909S", 12.4272909),
            ("PT0S", 0.0),
            ("P1DT2H", 93600.0),
            ("P4W", 2419200.0),
            ("PT1H2M3.5S", 3723.5),
            ("-PT1S", -1.0),
            ("PT0,5S", 0.5),
            ("P0Y0M1D", 86400.0),
            ("00:20:23.0896697", 1223.0896697),
            ("1.02:03:04.5", 93784.5),
            ("-00:00:01", -1.0),
            ("00:00:00", 0.0),
            ("23:59:59.9999999", 86399.9999999),
            ("10.00:00:00", 864000.0),
        ],
    )
    def test_known_forms(self, text: str, seconds: float) -> None:
        """Both ISO 8601 and .NET TimeSpan forms parse to seconds."""
        assert parse_duration_s(text) == pytest.approx(seconds, abs=1e-7)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "P",
            "PT",
            "P1DT",
            "P1Y",
            "P2M",
            "1:2:3",
            "24:00:00",
            "00:60:00",
            "00:00:00.12345678",
            "9" * 400 + ".00:00:00",
            "P" + "9" * 400 + "D",
            "PT" + "9" * 5000 + "S",
            "12 minutes",
            "PT-1S",
            "PTS",
            "00:00",
            "NaN",
        ],
    )
    def test_garbage_is_none(self, text: str) -> None:
        """Anything that is not a duration gives None, never an exception."""
        assert parse_duration_s(text) is None

    @given(
        days=st.integers(0, 400),
        hours=st.integers(0, 23),
        minutes=st.integers(0, 59),
        seconds=st.integers(0, 59),
        ticks=st.integers(0, 9_999_999),
        negative=st.booleans(),
    )
    def test_timespan_round_trip(
        self, days: int, hours: int, minutes: int, seconds: int, ticks: int, negative: bool
    ) -> None:
        """A generated .NET "c" TimeSpan parses back to its value."""
        day_part = f"{days}." if days else ""
        text = f"{'-' if negative else ''}{day_part}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if ticks:
            text += f".{ticks:07d}"
        expected = days * 86400 + hours * 3600 + minutes * 60 + seconds + ticks / 1e7
        parsed = parse_duration_s(text)
        assert parsed is not None
        assert math.isclose(parsed, -expected if negative else expected, abs_tol=1e-6)

    @given(
        weeks=st.none() | st.integers(0, 10),
        days=st.none() | st.integers(0, 400),
        hours=st.none() | st.integers(0, 100),
        minutes=st.none() | st.integers(0, 100),
        seconds=st.none() | st.decimals(0, 100_000, places=7),
        negative=st.booleans(),
    )
    def test_iso_round_trip(
        self,
        weeks: int | None,
        days: int | None,
        hours: int | None,
        minutes: int | None,
        seconds: Any,
        negative: bool,
    ) -> None:
        """A generated ISO 8601 duration parses back to its value."""
        date = "".join(f"{v}{u}" for v, u in ((weeks, "W"), (days, "D")) if v is not None)
        time = "".join(
            f"{v}{u}"
            for v, u in (
                (hours, "H"),
                (minutes, "M"),
                (None if seconds is None else format(seconds, "f"), "S"),
            )
            if v is not None
        )
        text = f"{'-' if negative else ''}P{date}{'T' + time if time else ''}"
        parsed = parse_duration_s(text)
        if not date and not time:
            assert parsed is None
            return
        expected = (
            (weeks or 0) * 604800
            + (days or 0) * 86400
            + (hours or 0) * 3600
            + (minutes or 0) * 60
            + float(seconds or 0)
        )
        assert parsed is not None
        assert math.isclose(
            parsed, -expected if negative else expected, rel_tol=1e-12, abs_tol=1e-6
        )

    @given(st.text(max_size=30) | json_values)
    def test_never_raises(self, text: Any) -> None:
        """parse_duration_s returns a float or None for any input."""
        assert parse_duration_s(text) is None or isinstance(parse_duration_s(text), float)


class TestTimes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-25T10:23:17Z", datetime(2026, 11, 25, 10, 23, 17, tzinfo=UTC)),
            (
                "2026-11-25T10:23:17.1234567Z",
                datetime(2026, 11, 25, 10, 23, 17, 123456, tzinfo=UTC),
            ),
            ("2026-11-25T10:23:17.1Z", datetime(2026, 11, 25, 10, 23, 17, 100000, tzinfo=UTC)),
            ("2026-11-25T11:23:17+01:00", datetime(2026, 11, 25, 10, 23, 17, tzinfo=UTC)),
            ("2026-11-25T10:23:17", datetime(2026, 11, 25, 10, 23, 17, tzinfo=UTC)),
            ("0001-01-01T00:00:00Z", None),
            ("0001-01-01T00:00:00.00000Z", None),
            ("2001-01-01T00:00:00Z", None),
        ],
    )
    def test_forms_and_sentinels(self, text: str, expected: datetime | None) -> None:
        """ARM times parse to aware UTC; sentinel years give None."""
        parsed = parse_arm_time(text)
        assert parsed == expected
        if parsed is not None:
            assert parsed.utcoffset() == timedelta(0)

    def test_garbage_raises_parse_error(self) -> None:
        """A string that is no date-time raises ParseError named by `path`."""
        with pytest.raises(ParseError) as info:
            parse_arm_time("soon", path="properties.endTime")
        assert info.value.path == "properties.endTime"


class TestFilter:
    @pytest.mark.parametrize(
        ("moment", "text"),
        [
            (datetime(2019, 5, 20, 13, 38, 4, tzinfo=UTC), "2019-05-20 01:38:04 PM"),
            (datetime(2016, 1, 1, 0, 0, 0, tzinfo=UTC), "2016-01-01 12:00:00 AM"),
            (datetime(2016, 1, 1, 12, 0, 0, tzinfo=UTC), "2016-01-01 12:00:00 PM"),
            (datetime(2016, 1, 1, 11, 59, 59, 999999, tzinfo=UTC), "2016-01-01 11:59:59 AM"),
            (
                datetime(2016, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
                "2015-12-31 11:00:00 PM",
            ),
        ],
    )
    def test_format(self, moment: datetime, text: str) -> None:
        """Filter times are UTC, 12-hour, en-US AM/PM, midnight as 12 AM."""
        assert format_filter_time(moment) == text

    def test_naive_rejected(self) -> None:
        """A naive datetime is refused rather than guessed."""
        with pytest.raises(ValueError, match="aware"):
            format_filter_time(datetime(2020, 1, 1))  # noqa: DTZ001

    def test_filter(self) -> None:
        """The job filter joins the two eq clauses with ` and `, quoting with single quotes."""
        start = datetime(2019, 5, 20, 13, 38, 4, tzinfo=UTC)
        assert build_jobs_filter(start, start + timedelta(days=1)) == (
            "startTime eq '2019-05-20 01:38:04 PM' and endTime eq '2019-05-21 01:38:04 PM'"
        )
        with pytest.raises(ValueError, match="before"):
            build_jobs_filter(start, start - timedelta(seconds=1))

    @given(
        start=st.datetimes(
            min_value=datetime(2000, 1, 1),  # noqa: DTZ001 (the bounds of an aware strategy)
            max_value=datetime(2100, 1, 1),  # noqa: DTZ001
            timezones=st.timezones(),
        ),
        length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
    )
    def test_encoded_filter_is_the_filter_quoted(self, start: datetime, length: timedelta) -> None:
        """The list URL's `$filter` value is the filter as `quote(safe="")` encodes it."""
        end = start + length
        assert encoded_jobs_filter(start, end) == quote(build_jobs_filter(start, end), safe="")

    @given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(["UTC", "Asia/Tokyo"]))
    def test_a_utc_moment_formats_as_the_same_moment_in_any_zone(
        self, moment: datetime, zone: str
    ) -> None:
        """`datetime.UTC` moments (the poll step's) skip the conversion; the text is the same."""
        assert format_filter_time(moment) == format_filter_time(moment.astimezone(ZoneInfo(zone)))

    @given(
        st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("/$:%-_.~ ")),
        st.sampled_from(["", "$", "/()!$&'*+,;=:@-._~", "é/"]),
    )
    def test_percent_encoded_is_quote(self, text: str, safe: str) -> None:
        """Every URL's path and query go through `percent_encoded`: it is `quote`, whatever
        the text (what quote leaves as it is is returned at once)."""
        assert percent_encoded(text, safe) == quote(text, safe=safe)

    def test_encoded_filter_refuses_what_the_filter_refuses(self) -> None:
        """A naive time or a window that ends before it starts is refused, not encoded."""
        start = datetime(2019, 5, 20, 13, 38, 4, tzinfo=UTC)
        with pytest.raises(ValueError, match="before"):
            encoded_jobs_filter(start, start - timedelta(seconds=1))
        with pytest.raises(ValueError, match="aware"):
            encoded_jobs_filter(datetime(2020, 1, 1), start)  # noqa: DTZ001


class TestNeverRaisesButParseError:
    @settings(max_examples=300)
    @given(json_values)
    def test_jobs_page_arbitrary_json(self, payload: Any) -> None:
        """parse_jobs_page raises nothing but ParseError on arbitrary JSON."""
        with contextlib.suppress(ParseError):
            parse_jobs_page(payload, VAULT)

    @settings(max_examples=300)
    @given(st.lists(job_like | json_values, max_size=5), st.none() | json_values)
    def test_jobs_page_job_like_items(self, items: list[Any], next_link: Any) -> None:
        """Job-shaped items with arbitrary values are either parsed or skipped, never raised."""
        if next_link is not None and not isinstance(next_link, str):
            with pytest.raises(ParseError, match=r"^nextLink: "):
                parse_jobs_page({"value": items, "nextLink": next_link}, VAULT)
            return
        parsed = parse_jobs_page({"value": items, "nextLink": next_link}, VAULT)
        assert len(parsed.jobs) + len(parsed.skipped) == len(items)
        for job in parsed.jobs:
            assert job.duration_s is None or isinstance(job.duration_s, float)

    @settings(max_examples=200)
    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(["InProgress", "Completed", "Paused", "failed"]),
                "operation": st.none() | st.sampled_from(["Backup", ""]),
                "startTime": st.none() | st.sampled_from(["2026-11-25T10:03:17Z", "0001-01-01"]),
                "endTime": st.none() | st.sampled_from(["2026-11-25T11:00:00+02:00"]),
                "duration": st.none() | st.sampled_from(["PT12.4S", "00:20:23.0896697"]),
                "actionsInfo": st.none() | st.lists(st.sampled_from([1, "cancellable", 7])),
                "entityFriendlyName": st.none() | st.text(max_size=5),
                "backupManagementType": st.none() | st.text(max_size=5),
                "activityId": st.none() | st.text(max_size=5),
            },
        )
    )
    def test_parsed_job_is_the_dataclass_built(self, props: dict[str, Any]) -> None:
        """The parser builds jobs through the slots' descriptors (the hot path): every field,
        those not compared included, is what the dataclass's own constructor gives."""
        job = only_job(p.job_item("7ddead57-0000-4000-8000-00000000000a", **props))
        fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(BackupJob)}
        fields["key"] = JobKey(vault_key=job.key.vault_key, job_name=job.key.job_name)
        built = BackupJob(**fields)
        for name, value in fields.items():
            assert getattr(built, name) == value, name
        assert built == job
        assert hash(built) == hash(job)
        assert (job.datasource_type, job.policy_name, job.provisional) == (None, None, False)
        assert job.key == JobKey(
            vault_key=VAULT.key, job_name="7ddead57-0000-4000-8000-00000000000a"
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.name = "x"  # type: ignore[misc]

    @settings(max_examples=300)
    @given(job_like | json_values)
    def test_details_arbitrary_json(self, payload: Any) -> None:
        """parse_job_details raises nothing but ParseError on arbitrary JSON."""
        with contextlib.suppress(ParseError):
            parse_job_details(payload, VAULT)

    @settings(max_examples=200)
    @given(json_values)
    def test_vaults_page_and_ids(self, payload: Any) -> None:
        """parse_vaults_page and parse_vault_id raise nothing but ParseError."""
        for parse in (parse_vaults_page, parse_vault_id):
            with contextlib.suppress(ParseError):
                parse(payload)
