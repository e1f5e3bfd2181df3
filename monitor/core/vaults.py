"""Vaults of both kinds and subscriptions: VaultRef, vault ids, and their ARM list pages.

Two kinds of vault hold Azure Backup jobs: Recovery Services vaults
(`Microsoft.RecoveryServices/vaults`: VMs, SQL, SAP HANA, Azure Files, MARS, DPM/MABS) and
Backup vaults (`Microsoft.DataProtection/backupVaults`: disks, blobs, PostgreSQL, MySQL, AKS,
Data Lake). A `VaultRef` says which (`kind`); everything else about a vault is the same.
"""

# Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON (dicts, lists,
# str, int, float, bool, None) and raise only ParseError.

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from monitor.core.ids import check_path_segment, check_subscription_id, is_guid
from monitor.core.wire import excerpt, nested, opt_str, page_items
from monitor.errors import ParseError

__all__ = [
    "SubscriptionRef",
    "SubscriptionsPage",
    "VaultKind",
    "VaultRef",
    "VaultsPage",
    "parse_subscriptions_page",
    "parse_vault_id",
    "parse_vaults_page",
]


class VaultKind(StrEnum):
    """Which kind of vault; the value is what events carry in `vault.kind`."""

    RECOVERY_SERVICES = "recovery_services"
    """`Microsoft.RecoveryServices/vaults`."""
    BACKUP_VAULT = "backup_vault"
    """`Microsoft.DataProtection/backupVaults`."""

    @property
    def namespace(self) -> str:
        """The resource provider's namespace, as ARM spells it in paths."""
        return _NAMESPACES[self][0]

    @property
    def vaults_segment(self) -> str:
        """The vault type's path segment, as ARM spells it."""
        return _NAMESPACES[self][1]

    @property
    def resource_type(self) -> str:
        """`{namespace}/{segment}`, e.g. `Microsoft.DataProtection/backupVaults`."""
        return f"{self.namespace}/{self.vaults_segment}"


_NAMESPACES: Final = {
    VaultKind.RECOVERY_SERVICES: ("Microsoft.RecoveryServices", "vaults"),
    VaultKind.BACKUP_VAULT: ("Microsoft.DataProtection", "backupVaults"),
}
_KIND_OF_SEGMENTS: Final = {
    (namespace.lower(), segment.lower()): kind for kind, (namespace, segment) in _NAMESPACES.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultRef:
    """A vault of either kind (`kind`: Recovery Services or Backup vault).

    `id` is the resource id exactly as ARM or the configuration gave it; `key` is its lower-cased
    form, the identity to compare, hash and store (ARM mixes `/Subscriptions/` and
    `/subscriptions/`, `Microsoft.RecoveryServices` and `microsoft.recoveryservices`).
    """

    id: str
    key: str
    subscription_id: str
    resource_group: str
    name: str
    location: str | None = None
    kind: VaultKind = VaultKind.RECOVERY_SERVICES
    tenant_id: str | None = None
    """The Entra tenant of the vault's subscription, from the subscription list (None: not
    known). Discovery sets it; ARM's vault reads do not carry it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultsPage:
    """One page of an ARM vault list: the vaults, the items skipped as malformed, the next link."""

    vaults: tuple[VaultRef, ...]
    skipped: tuple[ParseError, ...]
    next_link: str | None

    @property
    def has_next_page(self) -> bool:
        """True when ARM gave a `nextLink` to follow."""
        return self.next_link is not None


_VAULT_ID_SHAPE: Final = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name} "
    "or .../providers/Microsoft.DataProtection/backupVaults/{name}"
)


def parse_vault_id(resource_id: str, *, location: str | None = None) -> VaultRef:
    """Parse a vault resource id of either kind, accepting any casing of its fixed segments.

    Args:
        resource_id: e.g. `/Subscriptions/{sub}/resourceGroups/{rg}/providers/
            microsoft.recoveryservices/vaults/{name}` (a Recovery Services vault) or
            `.../providers/Microsoft.DataProtection/backupVaults/{name}` (a Backup vault);
            kept verbatim in `VaultRef.id`.
        location: the vault's region, when the caller knows it.

    Raises:
        ParseError: (path `resource_id`) the id is not a string or not a vault id: a fixed
            segment is wrong, the subscription id is not a GUID, or the resource group or the
            vault name is not one safe path segment (`check_path_segment`); the message names
            the segment that is wrong.
    """
    if not isinstance(resource_id, str):
        raise ParseError("resource_id", f"expected a string, got {type(resource_id).__name__}")
    parts = resource_id.split("/")
    if len(parts) != 9 or parts[0] != "":
        raise ParseError(
            "resource_id", f"expected {_VAULT_ID_SHAPE}, got {len(parts) - 1} segments"
        )
    _, subs, sub, rgs, rg, providers, namespace, vaults, name = parts
    for got, want in ((subs, "subscriptions"), (rgs, "resourcegroups"), (providers, "providers")):
        if got.lower() != want:
            raise ParseError("resource_id", f"expected segment {want!r}, got {excerpt(got)}")
    kind = _KIND_OF_SEGMENTS.get((namespace.lower(), vaults.lower()))
    if kind is None:
        raise ParseError(
            "resource_id",
            "expected Microsoft.RecoveryServices/vaults or Microsoft.DataProtection/backupVaults, "
            f"got {excerpt(f'{namespace}/{vaults}')}",
        )
    check_subscription_id(sub, path="resource_id")
    check_path_segment(rg, "resource group", path="resource_id")
    check_path_segment(name, "vault name", path="resource_id")
    return VaultRef(
        id=resource_id,
        key=resource_id.lower(),
        subscription_id=sub,
        resource_group=rg,
        name=name,
        location=location,
        kind=kind,
    )


def parse_vaults_page(payload: object, kind: VaultKind = VaultKind.RECOVERY_SERVICES) -> VaultsPage:
    """Parse one page of `GET .../providers/Microsoft.RecoveryServices/vaults` (or, with `kind`
    `BACKUP_VAULT`, of `.../providers/Microsoft.DataProtection/backupVaults`).

    Items that are not vaults of that kind (bad id, wrong `type`) are skipped and reported in
    `skipped` with their JSON path; they never fail the page.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is not a
            string.
    """
    items, next_link = page_items(payload)
    vaults: list[VaultRef] = []
    skipped: list[ParseError] = []
    for index, item in enumerate(items):
        try:
            vaults.append(_parse_vault_item(item, kind))
        except ParseError as exc:
            skipped.append(nested(f"value[{index}]", exc))
    return VaultsPage(vaults=tuple(vaults), skipped=tuple(skipped), next_link=next_link)


def _parse_vault_item(item: object, kind: VaultKind) -> VaultRef:
    if not isinstance(item, dict):
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    given = item.get("type")
    if given is not None and (
        not isinstance(given, str) or given.lower() != kind.resource_type.lower()
    ):
        raise ParseError("type", f"not a {kind.resource_type}: {excerpt(given)}")
    location = opt_str(item, "location")
    resource_id = item.get("id")
    if not isinstance(resource_id, str):
        raise ParseError("id", "missing or not a string")
    try:
        vault = parse_vault_id(resource_id, location=location)
    except ParseError as exc:
        raise ParseError("id", exc.problem) from None
    if vault.kind is not kind:
        raise ParseError("id", f"not a {kind.resource_type} id: {excerpt(resource_id)}")
    return vault


# --------------------------------------------------------------------------------------------
# Subscriptions


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionRef:
    """A readable subscription of `GET /subscriptions`: its lower-cased id and its home tenant
    (`tenantId`, lower-cased; None when the item gives none a GUID)."""

    id: str
    tenant_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionsPage:
    """One page of `GET /subscriptions`: readable subscriptions, skipped items, next link."""

    subscriptions: tuple[SubscriptionRef, ...]
    skipped: tuple[ParseError, ...]
    next_link: str | None

    @property
    def ids(self) -> tuple[str, ...]:
        """The readable subscriptions' ids, lower-cased, in page order."""
        return tuple(s.id for s in self.subscriptions)

    @property
    def has_next_page(self) -> bool:
        """True when ARM gave a `nextLink` to follow."""
        return self.next_link is not None


# Warned and PastDue subscriptions are still readable; only these cannot be read.
_UNREADABLE_STATES: Final = frozenset({"disabled", "deleted"})


def parse_subscriptions_page(payload: object) -> SubscriptionsPage:
    """Parse one page of `GET /subscriptions`.

    An item's id is its `subscriptionId`, or, when that is absent or empty, the last segment of
    its `id` (`/subscriptions/{id}`). An item that is not an object, or whose id is not a GUID
    (`check_subscription_id`), is skipped and reported in `skipped` with its JSON path, e.g.
    `value[2].subscriptionId`. Disabled and Deleted subscriptions are left out without a word.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    items, next_link = page_items(payload)
    subs: list[SubscriptionRef] = []
    skipped: list[ParseError] = []
    for index, item in enumerate(items):
        try:
            sub = _parse_subscription_item(item)
        except ParseError as exc:
            skipped.append(nested(f"value[{index}]", exc))
            continue
        if sub is not None:
            subs.append(sub)
    return SubscriptionsPage(subscriptions=tuple(subs), skipped=tuple(skipped), next_link=next_link)


def _parse_subscription_item(item: object) -> SubscriptionRef | None:
    """The item's subscription; None for a subscription that cannot be read. A `tenantId` that
    is not a GUID string is taken as unknown (None), never as a reason to skip the item."""
    if not isinstance(item, dict):
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    given = item.get("subscriptionId")
    if given is not None and given != "":
        sub = check_subscription_id(given, path="subscriptionId")
    else:
        whole = item.get("id")
        parts = whole.split("/") if isinstance(whole, str) else []
        if len(parts) != 3 or parts[0] != "" or parts[1].lower() != "subscriptions":
            raise ParseError("subscriptionId", "missing, and no /subscriptions/{id} in id")
        sub = check_subscription_id(parts[2], path="id")
    state = item.get("state")
    if isinstance(state, str) and state.lower() in _UNREADABLE_STATES:
        return None
    tenant = item.get("tenantId")
    tenant_id = tenant.lower() if is_guid(tenant) else None
    return SubscriptionRef(id=sub.lower(), tenant_id=tenant_id)
