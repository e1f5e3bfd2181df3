"""Backup vaults' instances and Data Protection policies over real sockets.

In the policies profile each instance's jobs start exactly on its policy's repeating interval
(checked here against instants computed by hand); in the other profiles the instances are listed
and no policy is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import aiohttp
import pytest

from monitor.emulator import PROFILES, Emulator, EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator.clock import ManualClock

API = "api-version=2025-09-01"


def arm_time(at: str) -> datetime:
    return datetime.fromisoformat(at[:26].rstrip("Z") + "+00:00")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def listing(http: aiohttp.ClientSession, emu: Emulator, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    next_url: str | None = emu.url + url
    while next_url:
        async with http.get(next_url, headers={"Authorization": f"Bearer {emu.token}"}) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        out += page["value"]
        next_url = page.get("nextLink")
    return out


async def test_policies_profile_instances_follow_their_policy(
    http: aiohttp.ClientSession,
) -> None:
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=4,
            subscriptions=1,
            vaults_per_subscription=1,
            profile=PROFILES["policies"],
            backup_vaults_per_subscription=4,
        ),
        page_size=2,
    )
    clock = ManualClock(datetime(2026, 10, 20, 5, 17, tzinfo=UTC))
    async with running_emulator(settings, clock=clock) as emu:
        vaults = list(emu.world.backup_vaults.vaults.values())
        kinds_seen = set()
        for vault in vaults:
            instances = await listing(http, emu, f"{vault.id}/backupInstances?{API}")
            assert [i["name"] for i in instances] == [i.id for i in vault.instances]
            policies = {
                p["id"]: p["properties"]
                for p in await listing(http, emu, f"{vault.id}/backupPolicies?{API}")
            }
            jobs = await listing(http, emu, f"{vault.id}/backupJobs?{API}")
            for row in instances:
                props = row["properties"]
                assert row["type"] == "Microsoft.DataProtection/backupVaults/backupInstances"
                assert props["currentProtectionState"] == "ProtectionConfigured"
                assert props["protectionStatus"]["status"] == "ProtectionConfigured"
                policy = policies[props["policyInfo"]["policyId"]]
                ds_type = props["dataSourceInfo"]["datasourceType"]
                assert policy["datasourceTypes"] == [ds_type]
                schedule = policy["policyRules"][0]["trigger"]["schedule"]
                assert schedule["timeZone"] == "UTC"
                (interval,) = schedule["repeatingTimeIntervals"]
                disk = ds_type == "Microsoft.Compute/disks"
                assert interval == (
                    "R/2021-08-15T22:00:00+00:00/PT4H"
                    if disk
                    else "R/2021-08-15T22:00:00+00:00/P1D"
                )
                kinds_seen.add(disk)
                starts = sorted(
                    arm_time(j["properties"]["startTime"])
                    for j in jobs
                    if j["properties"]["backupInstanceId"] == row["id"]
                )
                assert starts
                hours = {2, 6, 10, 14, 18, 22} if disk else {22}
                assert all(s.hour in hours and s.minute == s.second == 0 for s in starts)
                step = timedelta(hours=4 if disk else 24)
                assert all(b - a == step for a, b in pairwise(starts))
                assert all(
                    j["properties"]["operation"] == "Backup"
                    for j in jobs
                    if j["properties"]["backupInstanceId"] == row["id"]
                )
        assert kinds_seen == {True, False}


async def test_other_profiles_list_instances_but_no_policies(
    http: aiohttp.ClientSession,
) -> None:
    settings = EmulatorSettings(
        world=WorldSettings(seed=2, subscriptions=1, backup_vaults_per_subscription=1)
    )
    async with running_emulator(settings) as emu:
        (vault,) = emu.world.backup_vaults.vaults.values()
        instances = await listing(http, emu, f"{vault.id}/backupInstances?{API}")
        assert len(instances) == len(vault.instances)
        assert all(i["properties"]["policyInfo"]["policyId"].endswith("-daily") for i in instances)
        assert await listing(http, emu, f"{vault.id}/backupPolicies?{API}") == []
        async with http.get(
            f"{emu.url}{vault.id}x/backupInstances?{API}",
            headers={"Authorization": f"Bearer {emu.token}"},
        ) as r:
            assert r.status == 404
