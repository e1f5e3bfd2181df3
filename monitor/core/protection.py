"""Protected items and backup policies of both kinds of vault, from their ARM list pages.

A Recovery Services vault lists `backupProtectedItems` and `backupPolicies`; a Backup vault
(Microsoft.DataProtection) lists `backupInstances` and `backupPolicies`. Each page parser
returns the items it could read and, for each it could not, a message naming the JSON path
and what is wrong; one bad item never spoils its page.

Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.core.schedule import Schedule
from monitor.core.vaults import VaultKind, VaultRef
from monitor.errors import ParseError

__all__ = [
    "BackupPolicy",
    "ItemsPage",
    "PoliciesPage",
    "ProtectedItem",
    "parse_backup_instances_page",
    "parse_data_protection_policies_page",
    "parse_policies_page",
    "parse_protected_items_page",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectedItem:
    """One protected item (Recovery Services) or backup instance (Backup vault).

    Attributes:
        id: the item's ARM resource id, as ARM wrote it.
        vault_key: the lower-cased id of its vault.
        kind: the kind of its vault.
        name: the last segment of `id` (`VM;iaasvmcontainerv2;rg;vm`, or the instance name).
        friendly_name: `properties.friendlyName`; what the item's jobs call their entity.
        datasource_type: Recovery Services `workloadType` (VM, SQLDataBase, AzureFileShare …);
            Backup vault `dataSourceInfo.datasourceType` (Microsoft.Compute/disks …).
        datasource_id: `sourceResourceId` / `dataSourceInfo.resourceID`.
        backup_management_type: Recovery Services only (AzureIaasVM, AzureWorkload …).
        policy_id: the id of the policy it follows (None: no policy, e.g. protection stopped).
        policy_name: `policyName`, or the last segment of `policy_id`.
        protection_state: `protectionState` / `currentProtectionState`, verbatim.
        health_status: `healthStatus` / `protectionStatus.status`, verbatim.
        last_backup_time: `lastBackupTime` (Recovery Services only).
        last_recovery_point: `lastRecoveryPoint` (Recovery Services only).
    """

    id: str
    vault_key: str
    kind: VaultKind
    name: str
    friendly_name: str | None
    datasource_type: str | None
    datasource_id: str | None
    backup_management_type: str | None
    policy_id: str | None
    policy_name: str | None
    protection_state: str | None
    health_status: str | None
    last_backup_time: datetime | None
    last_recovery_point: datetime | None

    @property
    def key(self) -> str:
        """The lower-cased id."""
        return self.id.lower()

    @property
    def policy_key(self) -> str | None:
        """The lower-cased policy id, or None."""
        return None if self.policy_id is None else self.policy_id.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupPolicy:
    """One backup policy and the schedule read from it.

    Attributes:
        id: the policy's ARM resource id.
        vault_key: the lower-cased id of its vault.
        name: its name.
        schedule: its schedule; None when it has none we can read (`problem` says why).
        problem: why `schedule` is None (a policy without a schedule, such as an on-demand or
            AzureSql policy, or one we cannot read: an unknown zone, a bad time); None otherwise.
    """

    id: str
    vault_key: str
    name: str
    schedule: Schedule | None
    problem: str | None = None

    @property
    def key(self) -> str:
        """The lower-cased id."""
        return self.id.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemsPage:
    """One page of protected items: those read, the next page's link, and what was skipped."""

    items: tuple[ProtectedItem, ...]
    next_link: str | None
    skipped: tuple[ParseError, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PoliciesPage:
    """One page of policies: those read, the next page's link, and what was skipped.

    A policy whose schedule cannot be read is *not* skipped: it is in `policies` with its
    `problem`. Skipped are items that are not policies at all (no id, a foreign vault's id).
    """

    policies: tuple[BackupPolicy, ...]
    next_link: str | None
    skipped: tuple[ParseError, ...] = ()


def parse_protected_items_page(payload: object, vault: VaultRef) -> ItemsPage:
    """A Recovery Services `backupProtectedItems` page.

    Raises:
        ParseError: the page itself is not a list page (not an object, `value` not a list).
    """
    raise NotImplementedError


def parse_backup_instances_page(payload: object, vault: VaultRef) -> ItemsPage:
    """A Backup vault `backupInstances` page.

    Raises:
        ParseError: the page itself is not a list page.
    """
    raise NotImplementedError


def parse_policies_page(payload: object, vault: VaultRef) -> PoliciesPage:
    """A Recovery Services `backupPolicies` page (schedules through `core.schedule`).

    Raises:
        ParseError: the page itself is not a list page.
    """
    raise NotImplementedError


def parse_data_protection_policies_page(payload: object, vault: VaultRef) -> PoliciesPage:
    """A Backup vault `backupPolicies` page (repeating ISO 8601 intervals of its backup rules).

    Raises:
        ParseError: the page itself is not a list page.
    """
    raise NotImplementedError
