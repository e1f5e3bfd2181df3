"""Protected items and backup policies of both kinds of vault, from their ARM list pages.

A Recovery Services vault lists `backupProtectedItems` and `backupPolicies`; a Backup vault
(Microsoft.DataProtection) lists `backupInstances` and `backupPolicies`. Each page parser
returns the items it could read and, for each it could not, a message naming the JSON path
and what is wrong; one bad item never spoils its page.

What the parsers rely on (the REST specs' examples: Recovery Services
`AzureIaasVm/BackupProtectedItems_List.json`, `V2Policy/v2-List-Policies.json`,
`AzureWorkload/BackupPolicies_List.json`; Data Protection `BackupInstances_List.json` and
`BackupPolicies_List.json`):

- Every item must have a string `id` inside its vault (the vault's id, compared without regard
  to case, then `/`); anything else is skipped. `name` is the item's `name`, or the last segment
  of its `id`.
- Recovery Services items: `properties.friendlyName`, `workloadType` (or `protectedItemType`
  when absent), `backupManagementType`, `sourceResourceId`, `policyId` (empty = none),
  `policyName` (or the last segment of `policyId`), `protectionState`, `healthStatus`,
  `lastBackupTime` and `lastRecoveryPoint` (ARM date-times; years before 2002 mean unset, as
  for jobs).
- Backup instances: `properties.friendlyName`, `dataSourceInfo.datasourceType` and
  `dataSourceInfo.resourceID` (`resourceId` in some answers), `policyInfo.policyId`,
  `currentProtectionState`, `protectionStatus.status`.
- Recovery Services policies: `properties` through `schedule.parse_policy_schedule`.
- Data Protection policies: the `policyRules[]` whose `objectType` is `AzureBackupRule` and
  whose `trigger.objectType` is `ScheduleBasedTriggerContext` give one `Repeating` part of kind
  BACKUP per entry of `trigger.schedule.repeatingTimeIntervals`, in `trigger.schedule.timeZone`
  (a Windows zone ID; absent means UTC; every rule must name the same zone; with a zone, the
  intervals' start times are its wall clock: see `schedule.parse_repeating_interval`).
  Ad-hoc triggers and retention rules carry no schedule.
- A policy whose schedule cannot be read, or that has none, is kept with `schedule` None and
  `problem` saying why.

`ItemIndex` finds the item a job belongs to: a Backup vault job by its `backupInstanceId`, a
Recovery Services job by (`backupManagementType`, `entityFriendlyName`), both compared without
regard to case; a job that fits no item, or more than one, belongs to none.

Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias, TypeVar
from zoneinfo import ZoneInfo

from monitor.core.jobs import BackupJob
from monitor.core.schedule import (
    RunKind,
    Schedule,
    SubSchedule,
    parse_policy_schedule,
    parse_repeating_interval,
    windows_zone,
)
from monitor.core.vaults import VaultKind, VaultRef
from monitor.core.wire import excerpt, nested, opt_str, page_items, time_field
from monitor.errors import ParseError

__all__ = [
    "BackupPolicy",
    "ItemIndex",
    "ItemsPage",
    "PoliciesPage",
    "ProtectedItem",
    "parse_backup_instances_page",
    "parse_data_protection_policies_page",
    "parse_policies_page",
    "parse_protected_items_page",
]


_Key = TypeVar("_Key")


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


_ItemParser: TypeAlias = Callable[[object, VaultRef], ProtectedItem]
_ScheduleReader: TypeAlias = Callable[[dict[str, object]], tuple[Schedule | None, str | None]]


def parse_protected_items_page(payload: object, vault: VaultRef) -> ItemsPage:
    """A Recovery Services `backupProtectedItems` page.

    Raises:
        ParseError: the page itself is not a list page (not an object, `value` not a list).
    """
    return _items_page(payload, vault, _rs_item)


def parse_backup_instances_page(payload: object, vault: VaultRef) -> ItemsPage:
    """A Backup vault `backupInstances` page.

    Raises:
        ParseError: the page itself is not a list page.
    """
    return _items_page(payload, vault, _bv_instance)


def parse_policies_page(payload: object, vault: VaultRef) -> PoliciesPage:
    """A Recovery Services `backupPolicies` page (schedules through `core.schedule`).

    Raises:
        ParseError: the page itself is not a list page.
    """
    return _policies_page(payload, vault, _rs_schedule)


def parse_data_protection_policies_page(payload: object, vault: VaultRef) -> PoliciesPage:
    """A Backup vault `backupPolicies` page (repeating ISO 8601 intervals of its backup rules).

    Raises:
        ParseError: the page itself is not a list page.
    """
    return _policies_page(payload, vault, _bv_schedule)


# --------------------------------------------------------------------------------------------
# Items


def _items_page(payload: object, vault: VaultRef, parse: _ItemParser) -> ItemsPage:
    raw_items, next_link = page_items(payload)
    items: list[ProtectedItem] = []
    skipped: list[ParseError] = []
    for index, raw in enumerate(raw_items):
        try:
            items.append(parse(raw, vault))
        except ParseError as exc:
            skipped.append(nested(f"value[{index}]", exc))
    return ItemsPage(items=tuple(items), next_link=next_link, skipped=tuple(skipped))


def _identity(raw: object, vault: VaultRef) -> tuple[str, str, dict[str, object]]:
    """(id, name, properties) of an item of `vault`, checked."""
    resource_id, name, props = _id_and_name(raw, vault)
    if not isinstance(props, dict):
        raise ParseError("properties", "missing or not an object")
    return resource_id, name, props


def _id_and_name(raw: object, vault: VaultRef) -> tuple[str, str, object]:
    """(id, name, the raw properties) of an item of `vault`, its id and name checked."""
    if not isinstance(raw, dict):
        raise ParseError("", f"expected an object, got {type(raw).__name__}")
    resource_id = raw.get("id")
    if not isinstance(resource_id, str) or not resource_id:
        raise ParseError("id", "missing, empty or not a string")
    prefix = vault.key + "/"
    if resource_id[: len(prefix)].lower() != prefix or len(resource_id) == len(prefix):
        raise ParseError("id", f"not inside the vault {vault.key}: {excerpt(resource_id)}")
    name = raw.get("name")
    if name is None:
        name = resource_id.rstrip("/").rsplit("/", 1)[-1]
    elif not isinstance(name, str):
        raise ParseError("name", f"not a string: {type(name).__name__}")
    return resource_id, name, raw.get("properties")


def _opt_time(obj: dict[str, object], name: str, prefix: str) -> datetime | None:
    value = obj.get(name)
    return None if value is None else time_field(value, prefix + name)


def _last_segment(resource_id: str | None) -> str | None:
    if not resource_id:
        return None
    return resource_id.rstrip("/").rsplit("/", 1)[-1] or None


def _shared(value: str | None) -> str | None:
    """An enum-like value (a state, a status, a type) as one string shared by every item that
    has it (`sys.intern`): each item's state keeps its protection state and health, and a
    parsed answer gives each item its own copy (about 60 bytes each, 10,000s of items)."""
    return None if value is None else sys.intern(value)


def _rs_item(raw: object, vault: VaultRef) -> ProtectedItem:
    resource_id, name, props = _identity(raw, vault)
    at = "properties."
    workload = opt_str(props, "workloadType", at) or opt_str(props, "protectedItemType", at)
    policy_id = opt_str(props, "policyId", at) or None
    policy_name = opt_str(props, "policyName", at) or _last_segment(policy_id)
    return ProtectedItem(
        id=resource_id,
        vault_key=vault.key,
        kind=vault.kind,
        name=name,
        friendly_name=opt_str(props, "friendlyName", at),
        datasource_type=_shared(workload),
        datasource_id=opt_str(props, "sourceResourceId", at),
        backup_management_type=_shared(opt_str(props, "backupManagementType", at)),
        policy_id=policy_id,
        policy_name=policy_name,
        protection_state=_shared(opt_str(props, "protectionState", at)),
        health_status=_shared(opt_str(props, "healthStatus", at)),
        last_backup_time=_opt_time(props, "lastBackupTime", at),
        last_recovery_point=_opt_time(props, "lastRecoveryPoint", at),
    )


def _sub_object(obj: dict[str, object], name: str, path: str) -> dict[str, object]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{path}{name}", f"not an object: {type(value).__name__}")
    return value


def _bv_instance(raw: object, vault: VaultRef) -> ProtectedItem:
    resource_id, name, props = _identity(raw, vault)
    at = "properties."
    source = _sub_object(props, "dataSourceInfo", at)
    source_at = f"{at}dataSourceInfo."
    source_id = opt_str(source, "resourceID", source_at) or opt_str(source, "resourceId", source_at)
    policy = _sub_object(props, "policyInfo", at)
    policy_id = opt_str(policy, "policyId", f"{at}policyInfo.") or None
    status = _sub_object(props, "protectionStatus", at)
    return ProtectedItem(
        id=resource_id,
        vault_key=vault.key,
        kind=vault.kind,
        name=name,
        friendly_name=opt_str(props, "friendlyName", at),
        datasource_type=_shared(opt_str(source, "datasourceType", source_at)),
        datasource_id=source_id,
        backup_management_type=None,
        policy_id=policy_id,
        policy_name=_last_segment(policy_id),
        protection_state=_shared(opt_str(props, "currentProtectionState", at)),
        health_status=_shared(opt_str(status, "status", f"{at}protectionStatus.")),
        last_backup_time=None,
        last_recovery_point=None,
    )


# --------------------------------------------------------------------------------------------
# Policies


def _policies_page(payload: object, vault: VaultRef, read: _ScheduleReader) -> PoliciesPage:
    raw_items, next_link = page_items(payload)
    policies: list[BackupPolicy] = []
    skipped: list[ParseError] = []
    for index, raw in enumerate(raw_items):
        try:
            resource_id, name, props = _id_and_name(raw, vault)
        except ParseError as exc:
            skipped.append(nested(f"value[{index}]", exc))
            continue
        schedule: Schedule | None = None
        problem: str | None
        if not isinstance(props, dict):
            problem = "properties: missing or not an object"
        else:
            try:
                schedule, problem = read(props)
            except ParseError as exc:
                schedule, problem = None, str(exc)
        if schedule is not None and not schedule.parts:
            schedule, problem = None, problem or "no backup schedule"
        policies.append(
            BackupPolicy(
                id=resource_id,
                vault_key=vault.key,
                name=name,
                schedule=schedule,
                problem=None if schedule is not None else problem,
            )
        )
    return PoliciesPage(policies=tuple(policies), next_link=next_link, skipped=tuple(skipped))


def _rs_schedule(props: dict[str, object]) -> tuple[Schedule | None, str | None]:
    schedule = parse_policy_schedule(props, path="properties")
    if not schedule.parts:
        kind = props.get("backupManagementType")
        what = f" ({kind})" if isinstance(kind, str) else ""
        return None, f"no backup schedule{what}"
    return schedule, None


_AZURE_BACKUP_RULE: Final = "azurebackuprule"
_SCHEDULE_TRIGGER: Final = "schedulebasedtriggercontext"


def _bv_schedule(props: dict[str, object]) -> tuple[Schedule | None, str | None]:
    path = "properties.policyRules"
    rules = props.get("policyRules")
    if not isinstance(rules, list):
        raise ParseError(path, "missing or not a list")
    parts: list[SubSchedule] = []
    zone_name: str | None = None
    zone: ZoneInfo | None = None
    for index, rule in enumerate(rules):
        at = f"{path}[{index}]"
        if not isinstance(rule, dict):
            raise ParseError(at, f"not an object: {type(rule).__name__}")
        kind = rule.get("objectType")
        if not isinstance(kind, str) or kind.lower() != _AZURE_BACKUP_RULE:
            continue
        trigger = _sub_object(rule, "trigger", f"{at}.")
        trigger_kind = trigger.get("objectType")
        if not isinstance(trigger_kind, str) or trigger_kind.lower() != _SCHEDULE_TRIGGER:
            continue
        schedule = _sub_object(trigger, "schedule", f"{at}.trigger.")
        where = f"{at}.trigger.schedule"
        given = opt_str(schedule, "timeZone", f"{where}.")
        name = given or "UTC"
        if zone_name is not None and name.casefold() != zone_name.casefold():
            raise ParseError(
                f"{where}.timeZone", f"rules in two zones: {excerpt(zone_name)}, {excerpt(name)}"
            )
        zone_name = name
        zone = windows_zone(name, path=f"{where}.timeZone")
        intervals = schedule.get("repeatingTimeIntervals")
        if not isinstance(intervals, list) or not intervals:
            raise ParseError(f"{where}.repeatingTimeIntervals", "missing, empty or not a list")
        for number, text in enumerate(intervals):
            cadence = parse_repeating_interval(
                text,
                zone=zone if given else None,
                path=f"{where}.repeatingTimeIntervals[{number}]",
            )
            parts.append(SubSchedule(RunKind.BACKUP, cadence))
    if zone_name is None or zone is None:
        return None, "no scheduled backup rule"
    return Schedule(time_zone=zone_name, zone=zone, parts=tuple(parts)), None


# --------------------------------------------------------------------------------------------
# Jobs to items


class ItemIndex:
    """The items of one vault, looked up by what their jobs say of them.

    `ItemIndex(items)` (or `ItemIndex.of(items)`). Recovery Services jobs name their item by
    (backup management type, `entityFriendlyName`), which two items can share (file shares of
    one name in two storage accounts); such a job is then matched by what it says of its
    container (`containerName`, `storageAccountName`, `mabServerName`, `dpmServerName`) against
    the candidates' container segment of their ids. A job that still fits none or several
    finds nothing.
    """

    __slots__ = ("_by_entity", "_by_instance")

    def __init__(self, items: Iterable[ProtectedItem] = ()) -> None:
        """Index `items`: Backup vault instances by id and name, Recovery Services items by
        (backup management type, friendly name), all without regard to case."""
        self._by_instance: dict[str, ProtectedItem | None] = {}
        # backup management type -> friendly name -> items, both casefolded: nested and of
        # tuples, not keyed by pairs into lists (the index is kept between rounds: ~100 bytes
        # an item less).
        self._by_entity: dict[str, dict[str, tuple[ProtectedItem, ...]]] = {}
        for item in items:
            if item.kind is VaultKind.BACKUP_VAULT:
                for key in {item.key, item.name.lower()}:
                    _put(self._by_instance, key, item)
            elif item.backup_management_type is not None and item.friendly_name is not None:
                kind = sys.intern(item.backup_management_type.casefold())
                named = self._by_entity.setdefault(kind, {})
                entity = _folded(item.friendly_name)
                found = named.get(entity, ())
                if item not in found:
                    named[entity] = (*found, item)

    @classmethod
    def of(cls, items: Iterable[ProtectedItem]) -> ItemIndex:
        """The index of `items`."""
        return cls(items)

    def item_for(self, job: BackupJob) -> ProtectedItem | None:
        """The item `job` belongs to, or None when none fits or more than one does."""
        if job.backup_instance_id is not None:
            return self._by_instance.get(job.backup_instance_id.rstrip("/").lower())
        if job.backup_management_type is None or job.entity is None:
            return None
        named = self._by_entity.get(job.backup_management_type.casefold())
        found = None if named is None else named.get(job.entity.casefold())
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        hints = [
            value.casefold()
            for key in _CONTAINER_HINTS
            if isinstance(value := job.properties.get(key), str) and value
        ]
        fitting = [item for item in found if any(_names(_container_of(item), h) for h in hints)]
        return fitting[0] if len(fitting) == 1 else None


_CONTAINER_HINTS: Final = ("containerName", "storageAccountName", "mabServerName", "dpmServerName")


def _names(container: str, hint: str) -> bool:
    """Whether `hint`'s `;`-separated parts end `container`'s ("stdb01" names
    "storagecontainer;storage;rg;stdb01", not "...;stdb010000")."""
    parts, tail = container.split(";"), hint.split(";")
    return len(tail) <= len(parts) and parts[-len(tail) :] == tail


def _container_of(item: ProtectedItem) -> str:
    """The protection container segment of a Recovery Services item's id, lower-cased."""
    lowered = item.key
    start = lowered.find("/protectioncontainers/")
    if start < 0:
        return ""
    rest = lowered[start + len("/protectioncontainers/") :]
    return rest.split("/", 1)[0]


def _folded(text: str) -> str:
    """`text.casefold()`, or `text` itself when that is the same: the index is kept between
    rounds, and most friendly names are lower-case already."""
    folded = text.casefold()
    return text if folded == text else folded


def _put(table: dict[_Key, ProtectedItem | None], key: _Key, item: ProtectedItem) -> None:
    if key in table and (table[key] is None or table[key] != item):
        table[key] = None
    else:
        table[key] = item
