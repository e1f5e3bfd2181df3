"""The policies profile over real sockets: schedule-made jobs, item state, controls, ground truth.

The world runs on a ManualClock moved by the tests; expectations come from `zoneinfo` and from
hand-computed instants, never from the emulator's own schedule code.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from monitor.emulator import (
    PROFILES,
    Emulator,
    EmulatorSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.clock import ManualClock
from monitor.emulator.estate import ProtectedItem, Vault

API = "api-version=2025-08-01"
WINDOW = "startTime eq '2020-01-01 12:00:00 AM' and endTime eq '2099-01-01 12:00:00 AM'"
START = datetime(2026, 9, 30, tzinfo=UTC)
TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


def z(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def arm_time(at: str) -> datetime:
    return datetime.fromisoformat(at[:26].rstrip("Z") + "+00:00")


def settings(**world: Any) -> EmulatorSettings:
    base: dict[str, Any] = {
        "seed": 5,
        "subscriptions": 1,
        "vaults_per_subscription": 3,
        "profile": PROFILES["policies"],
    }
    return EmulatorSettings(world=WorldSettings(**(base | world)), page_size=200)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with running_emulator(settings(), clock=clock) as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, emu: Emulator, url: str) -> tuple[int, Any, Any]:
    if not url.startswith("http"):
        url = emu.url + url
    async with http.get(url, headers={"Authorization": f"Bearer {emu.token}"}) as response:
        return response.status, response.headers, await response.json(content_type=None)


async def post(
    http: aiohttp.ClientSession, emu: Emulator, path: str, body: object
) -> tuple[int, Any]:
    async with http.post(emu.url + path, json=body) as response:
        text = await response.text()
        return response.status, (await response.json() if response.status < 300 else text)


async def expected(http: aiohttp.ClientSession, emu: Emulator) -> list[dict[str, Any]]:
    """Every row of /_emulator/expected, by cursor in small pages (the cursor contract)."""
    rows: list[dict[str, Any]] = []
    since = 0
    while True:
        async with http.get(f"{emu.url}/_emulator/expected?since={since}&limit=97") as response:
            body = await response.json()
        rows += body["runs"]
        if not body["runs"]:
            assert body["next"] == since
            return rows
        assert [r["seq"] for r in body["runs"]] == list(range(since + 1, body["next"] + 1))
        since = body["next"]


async def jobs(http: aiohttp.ClientSession, emu: Emulator, vault: Vault) -> list[dict[str, Any]]:
    url: str | None = f"{vault.id}/backupJobs?{API}&$filter={WINDOW}"
    out: list[dict[str, Any]] = []
    while url:
        status, _, page = await get(http, emu, url)
        assert status == 200
        out += page["value"]
        url = page.get("nextLink")
    return out


async def items(http: aiohttp.ClientSession, emu: Emulator, vault: Vault) -> list[dict[str, Any]]:
    url: str | None = f"{vault.id}/backupProtectedItems?{API}"
    out: list[dict[str, Any]] = []
    while url:
        status, _, page = await get(http, emu, url)
        assert status == 200, page
        out += page["value"]
        url = page.get("nextLink")
    return out


def all_items(emu: Emulator) -> list[ProtectedItem]:
    return [i for v in emu.world.vaults.values() for i in v.items]


def by_policy(emu: Emulator, name: str) -> list[ProtectedItem]:
    found = [i for i in all_items(emu) if i.policy is not None and i.policy.name == name]
    assert found, f"seed 5 has no item on {name}"
    return found


def advance(emu: Emulator, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)


def local_daily(zone: str, hour: int, minute: int, first: datetime, last: datetime) -> list[str]:
    """Daily local times as UTC, with zoneinfo directly (fold=0; no gaps on these days)."""
    out, day = [], first
    while day <= last:
        local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))
        out.append(local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        day += timedelta(days=1)
    return out


class TestScheduleMadeJobs:
    async def test_runs_land_at_the_right_instants_across_dst(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        """Over October 2026 (AUS Eastern springs forward 10-04, W. Europe falls back 10-25,
        Pacific 11-01) every policy's runs are where zoneinfo and the hand-made list say."""
        advance(emu, clock, (z("2026-11-03T12:00:00Z") - START).total_seconds())
        rows = await expected(http, emu)
        dues: dict[str, list[str]] = {}
        for r in rows:
            dues.setdefault(r["item_id"].lower(), []).append(r["due"])
        first, last = datetime(2026, 10, 1), datetime(2026, 11, 2)  # noqa: DTZ001 (local days)
        for item in by_policy(emu, "VmDailyPacific"):
            got = [d for d in dues[item.id.lower()] if "2026-10-01" <= d < "2026-11-03"]
            assert got == local_daily("America/Los_Angeles", 1, 30, first, last)
            assert "2026-11-01T08:30:00Z" in got
            assert "2026-11-01T09:30:00Z" not in got
        for item in by_policy(emu, "VmWeeklyWEurope"):
            got = [d for d in dues[item.id.lower()] if "2026-10-20" <= d < "2026-11-02"]
            assert got == [
                "2026-10-21T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-28T01:30:00Z",
                "2026-11-01T01:30:00Z",
            ]
        for item in by_policy(emu, "FilesDailyAusEast"):
            got = [d for d in dues[item.id.lower()] if "2026-10-02" <= d < "2026-10-05"]
            assert got == ["2026-10-02T16:30:00Z", "2026-10-03T16:00:00Z", "2026-10-04T15:30:00Z"]
        for item in by_policy(emu, "VmHourlyIndia"):
            got = [d for d in dues[item.id.lower()] if d.startswith("2026-10-15")]
            assert got == [f"2026-10-15T{h}:30:00Z" for h in ("00", "04", "08", "12")]
        for item in by_policy(emu, "SqlFullDailyLogHourly"):
            mine = [r for r in rows if r["item_id"] == item.id]
            full = [r["due"] for r in mine if r["kind"] == "full" and r["due"] >= "2026-10-31"]
            assert full[:3] == [
                "2026-10-31T03:00:00Z",
                "2026-11-01T03:00:00Z",
                "2026-11-02T04:00:00Z",
            ]
            logs = [
                r["due"] for r in mine if r["kind"] == "log" and r["due"].startswith("2026-10-20")
            ]
            assert logs == [f"2026-10-20T{h:02d}:00:00Z" for h in range(24)]
        assert [r["due"] for r in rows] == sorted(r["due"] for r in rows)

    async def test_each_run_made_its_job_within_300_s(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        """A run's job_id names a job of the item that started 0-300 s after the due time, with
        the operation of its kind; every scheduled job belongs to one run."""
        advance(emu, clock, 3 * 86400)
        rows = [r for r in await expected(http, emu) if r["job_id"] is not None]
        listed = {}
        for vault in emu.world.vaults.values():
            for job in await jobs(http, emu, vault):
                listed[job["name"]] = job
        operations = {"backup": "Backup", "full": "Backup (Full)", "log": "Backup (Log)"}
        now = emu.world.now
        checked = 0
        for r in rows:
            due = z(r["due"])
            if now - due < timedelta(seconds=300) or now - due > timedelta(days=6):
                continue  # not started yet, or pruned by retention
            job = listed[r["job_id"]]
            started = arm_time(job["properties"]["startTime"])
            assert due <= started <= due + timedelta(seconds=300)
            assert job["properties"]["operation"] == operations[r["kind"]]
            item = emu.world.item(r["item_id"])
            assert job["properties"]["entityFriendlyName"] == item.entity
            checked += 1
        assert checked > 100
        run_jobs = {r["job_id"] for r in rows}
        scheduled = {
            n for n, j in listed.items() if j["properties"]["operation"].startswith("Backup")
        }
        assert scheduled <= run_jobs

    async def test_durations_are_realistic(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        """VM backups run 20-90 min, log backups 1-5 min."""
        advance(emu, clock, 86400)
        for vault in emu.world.vaults.values():
            for job in vault.jobs:
                if job.item is None or job.outcome == "Cancelled":
                    continue
                if job.operation == "Backup (Log)":
                    assert 60 <= job.duration_s <= 300
                elif job.item.workload.value == "vm":
                    assert 1200 <= job.duration_s <= 5400


class TestSkipRate:
    async def test_skipped_runs_make_no_job_and_are_listed(
        self, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        """With --skip-rate 0.3 about 30 % of runs say skipped "skip_rate", have no job_id, and
        no job of their item starts in their 300-s window."""
        async with running_emulator(settings(skip_rate=0.3), clock=clock) as emu:
            clock.advance(2 * 86400)
            rows = await expected(http, emu)
            skipped = [r for r in rows if r["skipped"] == "skip_rate"]
            assert 0.2 < len(skipped) / len(rows) < 0.4
            assert all(r["job_id"] is None for r in skipped)
            assert all(r["job_id"] is not None for r in rows if r["skipped"] is None)
            operations = {"backup": "Backup", "full": "Backup (Full)", "log": "Backup (Log)"}
            for r in skipped:
                item, due = emu.world.item(r["item_id"]), z(r["due"])
                assert not [
                    j
                    for j in item.vault.jobs
                    if j.item is item
                    and j.operation == operations[r["kind"]]
                    and due <= j.start_at <= due + timedelta(seconds=300)
                ]

    async def test_the_same_seed_skips_the_same_runs(self, http: aiohttp.ClientSession) -> None:
        """Two emulators of one seed and skip rate list identical runs."""
        seen = []
        for _ in range(2):
            clock = ManualClock(START)
            async with running_emulator(settings(skip_rate=0.25), clock=clock) as emu:
                clock.advance(86400)
                seen.append(await expected(http, emu))
        assert seen[0] == seen[1]
        assert any(r["skipped"] for r in seen[0])


class TestControls:
    async def test_skip_stops_jobs_silently_and_resumes(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        item = by_policy(emu, "SqlFullDailyLogHourly")[0]
        status, body = await post(
            http, emu, "/_emulator/items/skip", {"id": item.id.upper(), "skip": True}
        )
        assert status == 200
        assert body["skip"] is True
        mark = emu.world.now + timedelta(seconds=300)  # a run due earlier may still start
        clock.advance(6 * 3600)
        rows = [r for r in await expected(http, emu) if r["item_id"] == item.id]
        recent = [r for r in rows if z(r["due"]) > mark - timedelta(seconds=300)]
        assert len(recent) >= 5
        assert all(r["skipped"] == "skip_control" and r["job_id"] is None for r in recent)
        assert not [j for j in item.vault.jobs if j.item is item and j.start_at > mark]
        listed = {i["id"]: i for i in await items(http, emu, item.vault)}
        assert listed[item.id]["properties"]["protectionState"] == "Protected"
        await post(http, emu, "/_emulator/items/skip", {"id": item.id, "skip": False})
        resumed = emu.world.now
        clock.advance(2 * 3600)
        rows = [r for r in await expected(http, emu) if r["item_id"] == item.id]
        assert [r["skipped"] for r in rows if z(r["due"]) > resumed] == [None, None]
        assert [j for j in item.vault.jobs if j.item is item and j.start_at > resumed]

    async def test_hang_keeps_jobs_running_until_released(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        item = by_policy(emu, "SqlFullDailyLogHourly")[0]
        status, _ = await post(http, emu, "/_emulator/items/hang", {"id": item.id, "hang": True})
        assert status == 200
        clock.advance(4 * 3600)
        await expected(http, emu)  # advances the world
        mine = {
            j["name"]: j
            for j in await jobs(http, emu, item.vault)
            if j["properties"]["entityFriendlyName"] == item.entity
        }
        hung = [j for j in mine.values() if j["properties"]["status"] == "InProgress"]
        assert len(hung) >= 3  # the hourly log backups started while hung
        await post(http, emu, "/_emulator/items/hang", {"id": item.id, "hang": False})
        clock.advance(1)
        after = {j["name"]: j for j in await jobs(http, emu, item.vault)}
        assert all(after[j["name"]]["properties"]["status"] in TERMINAL for j in hung)

    async def test_protection_stop_drops_the_policy_and_the_runs(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        item = by_policy(emu, "VmHourlyIndia")[0]
        status, body = await post(
            http, emu, "/_emulator/items/protection", {"id": item.id, "state": "ProtectionStopped"}
        )
        assert status == 200
        assert body["protection_state"] == "ProtectionStopped"
        stopped_at = emu.world.now
        clock.advance(2 * 86400)
        row = {i["id"]: i for i in await items(http, emu, item.vault)}[item.id]["properties"]
        assert row["protectionState"] == "ProtectionStopped"
        assert "policyId" not in row
        assert "policyName" not in row
        rows = [r for r in await expected(http, emu) if r["item_id"] == item.id]
        assert not [r for r in rows if z(r["due"]) > stopped_at]
        assert not [
            j
            for j in item.vault.jobs
            if j.item is item and j.start_at > stopped_at + timedelta(seconds=300)
        ]
        await post(http, emu, "/_emulator/items/protection", {"id": item.id, "state": "Protected"})
        clock.advance(86400)
        rows = [r for r in await expected(http, emu) if r["item_id"] == item.id]
        assert len([r for r in rows if z(r["due"]) > stopped_at]) == 4
        row = {i["id"]: i for i in await items(http, emu, item.vault)}[item.id]["properties"]
        assert row["policyName"] == "VmHourlyIndia"

    @pytest.mark.parametrize(
        ("path", "body", "status", "text"),
        [
            ("/_emulator/items/skip", {"skip": True}, 400, "id"),
            ("/_emulator/items/skip", {"id": "ID", "skip": "yes"}, 400, "skip must be a bool"),
            ("/_emulator/items/hang", {"id": "ID"}, 400, "hang must be a bool"),
            ("/_emulator/items/protection", {"id": "ID", "state": "Paused"}, 400, "state must be"),
            ("/_emulator/items/protection", {"id": "ID", "state": 3}, 400, "state must be a str"),
            ("/_emulator/items/skip", {"id": "/nope", "skip": True}, 404, "no protected item"),
            ("/_emulator/items/hang", [1], 400, "JSON object"),
        ],
    )
    async def test_bad_bodies(
        self,
        emu: Emulator,
        http: aiohttp.ClientSession,
        path: str,
        body: object,
        status: int,
        text: str,
    ) -> None:
        item = all_items(emu)[0]
        if isinstance(body, dict) and body.get("id") == "ID":
            body = {**body, "id": item.id}
        got, reply = await post(http, emu, path, body)
        assert got == status
        assert text in reply


class TestItemsAndPolicies:
    async def test_backup_state_follows_the_jobs(
        self, emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        """lastBackupTime/Status: the latest backup job that ended; lastRecoveryPoint: the end
        of the latest succeeded non-log backup (checked against the jobs ARM lists)."""
        clock.advance(2 * 86400)
        checked = 0
        for vault in emu.world.vaults.values():
            listed = await jobs(http, emu, vault)
            for row in await items(http, emu, vault):
                p = row["properties"]
                mine = [
                    j["properties"]
                    for j in listed
                    if j["properties"]["entityFriendlyName"] == p["friendlyName"]
                    and j["properties"]["operation"].startswith("Backup")
                    and j["properties"]["status"] in TERMINAL
                ]
                ended = max(mine, key=lambda j: arm_time(j["endTime"]))
                assert p["lastBackupTime"] == ended["startTime"]
                assert p["lastBackupStatus"] == ended["status"]
                good = [
                    j
                    for j in mine
                    if j["status"] in ("Completed", "CompletedWithWarnings")
                    and j["operation"] != "Backup (Log)"
                ]
                if good:
                    assert (
                        p["lastRecoveryPoint"]
                        == max(good, key=lambda j: arm_time(j["endTime"]))["endTime"]
                    )
                    checked += 1
                assert p["policyId"].startswith(vault.id + "/backupPolicies/")
                assert p["protectionState"] == "Protected"
        assert checked >= 10

    async def test_items_are_paged_and_filtered(
        self, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        small = EmulatorSettings(world=settings().world, page_size=2)
        async with running_emulator(small, clock=clock) as emu:
            vault = max(emu.world.vaults.values(), key=lambda v: len(v.items))
            assert len(vault.items) > 2
            url: str | None = f"{vault.id}/backupProtectedItems?{API}"
            pages, seen = 0, []
            while url:
                status, _, page = await get(http, emu, url)
                assert status == 200
                assert len(page["value"]) <= 2
                seen += [r["id"] for r in page["value"]]
                url = page.get("nextLink")
                if url:
                    assert "%24skipToken=" in url
                    assert url.startswith(emu.url)
                pages += 1
            assert seen == [i.id for i in vault.items]
            assert pages == (len(vault.items) + 1) // 2
            flt = "$filter=backupManagementType eq 'AzureIaasVM'"
            url = f"{vault.id}/backupProtectedItems?{API}&{flt}"
            vms, links = [], []
            while url:
                _, _, page = await get(http, emu, url)
                vms += page["value"]
                url = page.get("nextLink")
                links.append(url)
            assert [r["id"] for r in vms] == [i.id for i in vault.items if i.workload.value == "vm"]
            assert all("%24filter=backupManagementType" in link for link in links[:-1])
            status, _, body = await get(
                http, emu, f"{vault.id}/backupProtectedItems?{API}&$filter=name eq 'x'"
            )
            assert status == 400
            assert body["error"]["code"] == "BMSUserErrorInvalidInput"

    async def test_policies_list(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        vault = next(iter(emu.world.vaults.values()))
        status, _, body = await get(http, emu, f"{vault.id}/backupPolicies?{API}")
        assert status == 200
        policies = {p["name"]: p for p in body["value"]}
        assert set(policies) == {
            "VmDailyPacific",
            "VmWeeklyWEurope",
            "VmHourlyIndia",
            "FilesDailyAusEast",
            "SqlFullDailyLogHourly",
        }
        daily = policies["VmDailyPacific"]["properties"]
        assert daily["timeZone"] == "Pacific Standard Time"
        assert daily["schedulePolicy"]["schedulePolicyType"] == "SimpleSchedulePolicyV2"
        assert daily["schedulePolicy"]["dailySchedule"]["scheduleRunTimes"] == [
            "2021-08-15T01:30:00Z"
        ]
        weekly = policies["VmWeeklyWEurope"]["properties"]["schedulePolicy"]
        assert weekly["scheduleRunFrequency"] == "Weekly"
        assert weekly["scheduleRunDays"] == ["Wednesday", "Sunday"]
        hourly = policies["VmHourlyIndia"]["properties"]["schedulePolicy"]["hourlySchedule"]
        assert hourly == {
            "interval": 4,
            "scheduleWindowStartTime": "2021-08-15T06:00:00Z",
            "scheduleWindowDuration": 16,
        }
        sql = policies["SqlFullDailyLogHourly"]["properties"]
        assert sql["settings"]["timeZone"] == "Eastern Standard Time"
        assert [s["policyType"] for s in sql["subProtectionPolicy"]] == ["Full", "Log"]
        assert sql["subProtectionPolicy"][1]["schedulePolicy"]["scheduleFrequencyInMins"] == 60
        counts = sum(p["properties"]["protectedItemsCount"] for p in body["value"])
        assert counts == len(vault.items)
        one = policies["VmDailyPacific"]["id"]
        status, _, single = await get(http, emu, f"{one}?{API}")
        assert status == 200
        assert single == policies["VmDailyPacific"]
        status, _, _ = await get(http, emu, f"{vault.id}/backupPolicies/nope?{API}")
        assert status == 404

    async def test_other_profiles_have_no_policies(self, http: aiohttp.ClientSession) -> None:
        plain = EmulatorSettings(
            world=WorldSettings(seed=2, subscriptions=1, vaults_per_subscription=2)
        )
        async with running_emulator(plain) as emu:
            vault = next(iter(emu.world.vaults.values()))
            rows = await items(http, emu, vault)
            assert rows
            assert all("policyId" not in r["properties"] for r in rows)
            assert all("policyName" not in r["properties"] for r in rows)
            _, _, body = await get(http, emu, f"{vault.id}/backupPolicies?{API}")
            assert body == {"value": []}
            assert await expected(http, emu) == []

    async def test_deleted_and_forbidden_vaults(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        a, b = list(emu.world.vaults.values())[:2]
        async with http.post(f"{emu.url}/_emulator/vaults/forbid", json={"id": a.id}) as r:
            assert r.status == 200
        async with http.delete(f"{emu.url}/_emulator/vaults", params={"id": b.id}) as r:
            assert r.status == 204
        for path in ("backupProtectedItems", "backupPolicies"):
            status, _, body = await get(http, emu, f"{a.id}/{path}?{API}")
            assert status == 403
            assert body["error"]["code"] == "AuthorizationFailed"
            status, _, body = await get(http, emu, f"{b.id}/{path}?{API}")
            assert status == 404


class TestProtectedItemsThrottle:
    async def test_per_action_limit_spares_the_read_bucket(
        self, clock: ManualClock, http: aiohttp.ClientSession
    ) -> None:
        limited = EmulatorSettings(
            world=settings().world, protected_items_limit=3, protected_items_window_s=60.0
        )
        async with running_emulator(limited, clock=clock) as emu:
            vault = next(iter(emu.world.vaults.values()))
            header = "x-ms-ratelimit-remaining-subscription-reads"
            _, h, _ = await get(http, emu, f"{vault.id}/backupJobs?{API}")
            first = int(h[header])
            for _ in range(3):
                status, _, _ = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
                assert status == 200
            status, h, body = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
            assert status == 429
            assert h["Retry-After"] == "60"
            assert body["error"]["code"] == "ResourceRequestsThrottled"
            assert re.fullmatch(
                r"Number of requests for action 'Microsoft\.RecoveryServices/vaults/backupFabrics"
                r"/protectionContainers/protectedItems/read' exceeded the limit of '3' for time "
                r"interval '00:01:00'\. Please try again after '60' seconds\.",
                body["error"]["message"],
            )
            status, h, _ = await get(http, emu, f"{vault.id}/backupJobs?{API}")
            assert status == 200
            assert int(h[header]) == first - 4  # three item reads and this one; not the 429
            clock.advance(20)
            status, h, _ = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
            assert status == 429
            assert h["Retry-After"] == "40"
            clock.advance(41)
            status, _, _ = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
            assert status == 200

    async def test_settable_at_runtime(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        vault = next(iter(emu.world.vaults.values()))
        async with http.put(
            f"{emu.url}/_emulator/throttle/protected-items", json={"limit": 1, "window_s": 3600}
        ) as r:
            assert r.status == 200
            assert (await r.json())["limit"] == 1
        assert (await get(http, emu, f"{vault.id}/backupProtectedItems?{API}"))[0] == 200
        status, h, _ = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
        assert status == 429
        assert h["Retry-After"] == "3600"
        assert (await get(http, emu, f"{vault.id}/backupPolicies?{API}"))[0] == 200
        async with http.put(
            f"{emu.url}/_emulator/throttle/protected-items", json={"limit": -1}
        ) as r:
            assert r.status == 400
        async with http.put(
            f"{emu.url}/_emulator/throttle/protected-items", json={"limit": 0}
        ) as r:
            assert r.status == 200
        assert (await get(http, emu, f"{vault.id}/backupProtectedItems?{API}"))[0] == 200
