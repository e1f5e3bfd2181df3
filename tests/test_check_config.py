"""`check-config`'s report (`render_check`): the text and the JSON object say the same."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from monitor.commands.check_config import render_check
from monitor.config_parse import parse_settings
from monitor.core.vaults import VaultRef, parse_vault_id

SETTINGS = parse_settings(
    {
        "azure": {
            "credential": "static",
            "static_token": "t",
            "arm_endpoint": "http://127.0.0.1:1/",
            "allow_http_loopback": True,
        }
    }
)
PROVIDERS = (
    "Microsoft.RecoveryServices/vaults",
    "Microsoft.DataProtection/backupVaults",
)


@st.composite
def vaults(draw: st.DrawFn) -> VaultRef:
    sub = f"00000000-0000-4000-8000-{draw(st.integers(0, 3)):012d}"
    group = draw(st.sampled_from(["rg-a", "rg-b"]))
    name = f"{draw(st.sampled_from(['rsv', 'bv', 'vault-prod']))}-{draw(st.integers(0, 99))}"
    provider = draw(st.sampled_from(PROVIDERS))
    location = draw(st.none() | st.sampled_from(["westeurope", "eastus"]))
    return parse_vault_id(
        f"/subscriptions/{sub}/resourceGroups/{group}/providers/{provider}/{name}",
        location=location,
    )


@given(st.lists(vaults(), max_size=12, unique_by=lambda v: v.key))
def test_text_and_json_name_the_same_vaults_and_counts(found: list[VaultRef]) -> None:
    """Every vault is one text line and one JSON entry, in the same order, and the counts of
    each kind add up to the total the text line gives."""
    report = orjson.loads(render_check(found, SETTINGS, "json"))
    lines = render_check(found, SETTINGS, "text").splitlines()
    assert report["vault_count"] == len(found) == sum(report["vault_counts"].values())
    counts = report["vault_counts"]
    assert (
        f"{len(found)} vaults would be watched ({counts['recovery_services']} "
        f"recovery_services, {counts['backup_vault']} backup_vault)"
    ) in lines
    vault_lines = lines[1 : 1 + len(found)]
    for entry, line in zip(report["vaults"], vault_lines, strict=True):
        assert line.startswith(entry["subscription_id"])
        assert line.split()[3] == entry["name"]
        assert line.endswith(entry["location"] or "-")
    assert [e["id"] for e in report["vaults"]] == sorted(
        (v.id for v in found), key=lambda i: i.lower()
    )
    assert (f"backup vault jobs from {report['backup_vault_jobs_from']}" in lines) == (
        counts["backup_vault"] > 0
    )
