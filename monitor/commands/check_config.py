"""`check-config`'s report of what the daemon would watch: text for a person, or one JSON object.

The report is built from what start-up found (the discovered vaults) and the settings alone, so
the same function renders a real run and a test's vaults; `run.check` does the I/O.
"""

# Rules:
# - Pure: no I/O here. Secrets never appear: sinks are described by `describe_sink`, which leaves
#   a webhook's URL out; the settings' secrets (a static token, a client secret) are not read.
# - Every vault entry of the JSON report comes from `vault_entry`, so a key added there appears
#   in every entry. Keys are only ever added to the JSON shape (docs/operations.md documents it).

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal

from monitor.commands.console import to_pretty_json
from monitor.config import Settings
from monitor.core.vaults import VaultKind, VaultRef
from monitor.sink_factory import describe_sink

__all__ = [
    "CHECK_OUTPUTS",
    "CheckOutput",
    "check_report",
    "render_check",
    "vault_entry",
]

CheckOutput = Literal["text", "json"]
CHECK_OUTPUTS: Final[tuple[CheckOutput, ...]] = ("text", "json")
"""`check-config --output` values."""

_KIND_TAGS: Final = {VaultKind.RECOVERY_SERVICES: "rs", VaultKind.BACKUP_VAULT: "bv"}


def vault_entry(vault: VaultRef) -> dict[str, object]:
    """One vault of the JSON report: where it is and what it is (the text line's fields, its
    subscription's tenant, and its resource id)."""
    return {
        "subscription_id": vault.subscription_id,
        "kind": vault.kind.value,
        "resource_group": vault.resource_group,
        "name": vault.name,
        "location": vault.location,
        "tenant_id": vault.tenant_id,
        "id": vault.id,
    }


def _sorted(vaults: Iterable[VaultRef]) -> list[VaultRef]:
    return sorted(vaults, key=lambda v: v.key)


def check_report(vaults: Sequence[VaultRef], settings: Settings) -> dict[str, object]:
    """The JSON report: the configuration was valid and a token was obtained (else there is no
    report: the exit code says why), the ARM endpoint, every vault that would be watched (by
    resource id, lower-cased, as the text lists them), the count of each kind, where Backup
    vault jobs are read from, and every sink."""
    counts: dict[str, int] = {kind.value: 0 for kind in VaultKind}
    for vault in vaults:
        counts[vault.kind.value] += 1
    return {
        "config_valid": True,
        "authenticated": True,
        "arm_endpoint": settings.azure.arm_endpoint,
        "vaults": [vault_entry(v) for v in _sorted(vaults)],
        "vault_count": len(vaults),
        "vault_counts": counts,
        "backup_vault_jobs_from": settings.backup_vaults.jobs_from,
        "sinks": [
            {
                "name": entry.name,
                "type": entry.type,
                "description": describe_sink(entry),
                "filtered": not entry.filter.passes_all,
            }
            for entry in settings.delivery_sinks
        ],
    }


def _text_lines(vaults: Sequence[VaultRef], settings: Settings) -> list[str]:
    lines = [f"authenticated against {settings.azure.arm_endpoint}"]
    lines.extend(
        f"{vault.subscription_id}  {_KIND_TAGS[vault.kind]}  {vault.resource_group:<24} "
        f"{vault.name:<28} {vault.location or '-'}"
        for vault in _sorted(vaults)
    )
    kinds = ", ".join(f"{sum(v.kind is kind for v in vaults)} {kind.value}" for kind in VaultKind)
    lines.append(f"{len(vaults)} vaults would be watched ({kinds})")
    if any(v.kind is VaultKind.BACKUP_VAULT for v in vaults):
        lines.append(f"backup vault jobs from {settings.backup_vaults.jobs_from}")
    lines.extend(f"sink {describe_sink(entry)}" for entry in settings.delivery_sinks)
    return lines


def render_check(vaults: Sequence[VaultRef], settings: Settings, output: CheckOutput) -> str:
    """The report after the `configuration is valid` line (text), or the whole JSON object
    (json); newline-terminated."""
    if output == "json":
        return to_pretty_json(check_report(vaults, settings)) + "\n"
    return "".join(line + "\n" for line in _text_lines(vaults, settings))
