"""VaultDiscovery on its own: what a failed read keeps, shard ownership, include/exclude."""

from __future__ import annotations

import dataclasses
import random

import pytest

from monitor.clock import SystemClock
from monitor.config import ShardSettings
from monitor.core.shard import owner
from monitor.discovery import VaultDiscovery
from monitor.errors import ArmError, StartupError
from tests.test_scheduler import SUB_A, SUB_B, ScriptedSource, server_error, settings, vault_ref


def discovery(source: ScriptedSource, **options: object) -> VaultDiscovery:
    return VaultDiscovery(source, settings(discovery=options), SystemClock(), random.Random(1))


async def test_a_failed_vault_listing_keeps_the_known_vaults_of_that_subscription() -> None:
    """A 503 on one subscription's vault list: its vaults in `known` stay, the other is listed."""
    a, b = vault_ref(SUB_A, "va"), vault_ref(SUB_B, "vb")
    source = ScriptedSource([a, b])
    source.discovery_failures[SUB_B] = [server_error()]
    found = await discovery(source).discover({a.key: a, b.key: b}, first=False)
    assert sorted(v.key for v in found.vaults) == sorted([a.key, b.key])
    assert found.reached
    assert found.retry_soon


async def test_a_failed_subscription_list_lists_the_known_subscriptions() -> None:
    """After start, a 503 on the subscription list lists only the subscriptions of `known`."""
    a, b = vault_ref(SUB_A, "va"), vault_ref(SUB_B, "vb")
    source = ScriptedSource([a, b])
    source.discovery_failures["*"] = [server_error()]
    found = await discovery(source).discover({a.key: a}, first=False)
    assert [v.key for v in found.vaults] == [a.key]
    assert ("vaults", SUB_B) not in source.calls


async def test_discover_once_names_the_failure_when_nothing_reached_arm() -> None:
    """One try: a 503 on the subscription list is StartupError naming it, with no retry."""
    source = ScriptedSource([vault_ref(SUB_A, "va")])
    source.discovery_failures["*"] = [server_error(), server_error()]
    with pytest.raises(StartupError, match="ARM unreachable: no discovery call succeeded: 503"):
        await discovery(source).discover_once()
    assert source.calls == [("subscriptions", "*")]


@pytest.mark.parametrize("index", [0, 1])
async def test_a_shard_lists_only_the_subscriptions_it_owns(index: int) -> None:
    """With two shards, each lists exactly the subscriptions rendezvous hashing gives it."""
    a, b = vault_ref(SUB_A, "va"), vault_ref(SUB_B, "vb")
    source = ScriptedSource([a, b])
    sharded = dataclasses.replace(settings(), shard=ShardSettings(index=index, count=2))
    found = await VaultDiscovery(source, sharded, SystemClock(), random.Random(1)).discover_once()
    owned = {s for s in (SUB_A, SUB_B) if owner(s, 2) == index}
    assert {v.subscription_id for v in found} == owned
    assert {sub for kind, sub in source.calls if kind == "vaults"} == owned


async def test_include_and_exclude_globs_match_the_name_or_the_id() -> None:
    """`include` keeps matches by name (any case) or id; `exclude` then removes its matches."""
    vaults = [vault_ref(SUB_A, n) for n in ("prod-1", "Prod-2", "dev-1")]
    source = ScriptedSource(vaults)
    found = await discovery(source, include=["prod-*"], exclude=["*/vaults/prod-2"]).discover_once()
    assert [v.name for v in found] == ["prod-1"]


async def test_an_unregistered_provider_means_no_vaults_of_that_kind() -> None:
    """A subscription that never registered Microsoft.DataProtection answers its Backup vault
    list with MissingSubscriptionRegistration: no Backup vaults there, nothing failed, and its
    Recovery Services vaults are watched as ever."""
    a = vault_ref(SUB_A, "va")
    source = ScriptedSource([a])
    refused = ArmError(
        "409 MissingSubscriptionRegistration",
        url=f"/subscriptions/{SUB_A}/providers/Microsoft.DataProtection/backupVaults",
        status=409,
        code="MissingSubscriptionRegistration",
    )
    source.discovery_failures[f"{SUB_A}/backup_vault"] = [refused, refused]
    found = await discovery(source, subscriptions=[SUB_A]).discover({}, first=True)
    assert [v.key for v in found.vaults] == [a.key]
    assert found.reached
    assert found.failures == ()
