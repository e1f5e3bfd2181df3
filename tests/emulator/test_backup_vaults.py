"""Backup vaults (Microsoft.DataProtection) in the emulator: opt-in, over real sockets.

The default world must be exactly the world of before (pinned digests, computed on the emulator
before Backup vaults existed); with Backup vaults on, the Recovery Services world is unchanged
and the Data Protection routes serve the shapes of the spec examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.emulator import (
    PROFILES,
    Emulator,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.backup_vaults import DATASOURCES, BackupVault, format_timespan
from monitor.emulator.clock import ManualClock
from monitor.emulator.world import World, utc

API = "api-version=2026-06-01"
PAGE_SIZE = 4
TIMESPAN = re.compile(r"^(\d+\.)?\d{2}:\d{2}:\d{2}(\.\d{7})?$")
EXAMPLE_STATUSES = {"Started", "Succeeded", "Failed"}
DOC_STATUSES = {
    "InProgress",
    "Completed",
    "CompletedWithWarnings",
    "Failed",
    "Cancelling",
    "Cancelled",
}

# sha256 of the world's vaults and transitions, computed with the emulator as it was before
# Backup vaults existed (commit 732b067): the default world must never change.
DEFAULT_DIGEST = (2456, "4793b069dc18af00fcceb1440e26e1db07c9c1866edb4c77c2af747a592a0b39")
ESTATE_SETTINGS = WorldSettings(
    seed=5, subscriptions=3, vaults_per_subscription=4, profile=PROFILES["estate"], time_scale=60
)
ESTATE_DIGEST = (1763, "5d5c947fbe7df08c0d7587888739abccd8276e641c19a71a14e98bf61058dbd6")

SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=3,
        subscriptions=2,
        vaults_per_subscription=2,
        backup_vaults_per_subscription=2,
        # Ten minutes of demo history: a few dozen jobs per Backup vault, some still running.
        profile=dataclasses.replace(PROFILES["demo"], history_s=600.0),
    ),
    page_size=PAGE_SIZE,
    throttle=ThrottleSettings(reads_bucket=100_000, reads_per_s=10_000.0),
)


def rs_digest(settings: WorldSettings) -> tuple[int, str]:
    """The Recovery Services world's vaults and transitions over a fixed half hour, hashed."""
    world = World(settings, utc(2026, 3, 1, 12))
    world.advance(utc(2026, 3, 1, 12, 30))
    h = hashlib.sha256()
    for v in sorted(world.vaults.values(), key=lambda v: v.key):
        h.update(f"{v.id}|{v.location}|{v.provider_casing}|{len(v.items)}\n".encode())
    for t in world.transitions:
        h.update(
            f"{t.seq}|{t.vault_id}|{t.job_id}|{t.job_type}|{t.operation}|{t.from_status}"
            f"|{t.to_status}|{t.at.isoformat()}\n".encode()
        )
    return len(world.transitions), h.hexdigest()


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    # A manual clock: the world stands still between requests, so a listing can be compared.
    async with running_emulator(SETTINGS, clock=ManualClock(datetime.now(UTC))) as emulator:
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


async def all_pages(
    http: aiohttp.ClientSession, emu: Emulator, url: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every row of a paged list, following `nextLink`, and the nextLinks followed."""
    rows: list[dict[str, Any]] = []
    links: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        status, _, body = await get(http, emu, next_url)
        assert status == 200, body
        assert len(body["value"]) <= PAGE_SIZE
        rows += body["value"]
        next_url = body.get("nextLink")
        if next_url is not None:
            links.append(next_url)
    return rows, links


def vaults_of(emu: Emulator) -> list[BackupVault]:
    return sorted(emu.world.backup_vaults.vaults.values(), key=lambda v: v.key)


class TestDefaultWorldUnchanged:
    def test_default_world_is_the_world_of_before(self) -> None:
        """With the new setting at its default, the world's vaults and transitions are as pinned."""
        assert WorldSettings().backup_vaults_per_subscription == 0
        assert rs_digest(WorldSettings()) == DEFAULT_DIGEST
        assert rs_digest(ESTATE_SETTINGS) == ESTATE_DIGEST

    def test_backup_vaults_leave_recovery_services_unchanged(self) -> None:
        """Backup vaults draw from their own streams: the Recovery Services world is the same."""
        assert rs_digest(WorldSettings(backup_vaults_per_subscription=3)) == DEFAULT_DIGEST
        on = dataclasses.replace(ESTATE_SETTINGS, backup_vaults_per_subscription=2)
        assert rs_digest(on) == ESTATE_DIGEST

    def test_default_world_has_no_backup_vaults(self) -> None:
        world = World(WorldSettings(), utc(2026, 3, 1, 12))
        assert world.backup_vaults.vaults == {}
        assert world.backup_vaults.transitions == []

    async def test_default_ground_truth_routes_are_as_before(
        self, http: aiohttp.ClientSession
    ) -> None:
        """No `backup_vaults` in the world summary, no `vault_kind` in the transitions, an
        empty Backup vault list and Backup vault transitions."""
        async with running_emulator(EmulatorSettings()) as emu:
            _, _, summary = await get(http, emu, "/_emulator/world")
            assert set(summary) == {"tenant_id", "now", "subscriptions"}
            _, _, truth = await get(http, emu, "/_emulator/transitions")
            assert truth["transitions"]
            assert all(
                set(row)
                == {"seq", "vault_id", "job_id", "job_type", "operation", "from", "to", "at"}
                for row in truth["transitions"]
            )
            _, _, bv_truth = await get(http, emu, "/_emulator/transitions?kind=backup_vault")
            assert bv_truth == {"transitions": [], "next": 0}
            sub = next(iter(emu.world.subscriptions))
            status, _, body = await get(
                http,
                emu,
                f"/subscriptions/{sub}/providers/Microsoft.DataProtection/backupVaults?{API}",
            )
            assert (status, body) == (200, {"value": []})


class TestVaults:
    async def test_list_per_subscription_and_resource_group(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        for sub in emu.world.subscriptions:
            status, _, body = await get(
                http,
                emu,
                f"/subscriptions/{sub}/providers/Microsoft.DataProtection/backupVaults?{API}",
            )
            assert status == 200
            mine = [v for v in vaults_of(emu) if v.subscription_id == sub]
            assert [row["name"] for row in body["value"]] == [v.name for v in mine]
            for row in body["value"]:
                assert row["type"] == "Microsoft.DataProtection/BackupVaults"
                assert "/providers/Microsoft.DataProtection/BackupVaults/" in row["id"]
                assert row["properties"]["provisioningState"] == "Succeeded"
            vault = mine[0]
            status, _, body = await get(
                http,
                emu,
                f"/subscriptions/{sub}/resourceGroups/{vault.resource_group}"
                f"/providers/Microsoft.DataProtection/backupVaults?{API}",
            )
            assert status == 200
            assert vault.name in [row["name"] for row in body["value"]]
            assert {row["id"].split("/")[4] for row in body["value"]} == {vault.resource_group}

    async def test_get_vault_any_casing(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        vault = vaults_of(emu)[0]
        status, _, body = await get(http, emu, f"{vault.id.upper()}?{API}")
        assert status == 200
        assert body["name"] == vault.name
        assert body["location"] == vault.location

    async def test_not_found(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        vault = vaults_of(emu)[0]
        missing = vault.id.rsplit("/", 1)[0] + "/no-such-vault"
        for url in (missing, f"{missing}/backupJobs", f"{missing}/backupJobs/x"):
            status, _, body = await get(http, emu, f"{url}?{API}")
            assert status == 404
            assert body["error"]["code"] == "ResourceNotFound"
            assert "no-such-vault" in body["error"]["message"]
        status, _, body = await get(http, emu, f"{vault.id}/backupJobs/no-such-job?{API}")
        assert status == 404
        assert "no-such-job" in body["error"]["message"]
        status, _, body = await get(
            http,
            emu,
            "/subscriptions/00000000-0000-0000-0000-000000000000/providers/"
            f"Microsoft.DataProtection/backupVaults?{API}",
        )
        assert status == 404
        assert body["error"]["code"] == "SubscriptionNotFound"

    async def test_needs_a_token(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        vault = vaults_of(emu)[0]
        async with http.get(f"{emu.url}{vault.id}/backupJobs?{API}") as response:
            assert response.status == 401


class TestJobs:
    async def test_whole_history_oldest_first_by_next_link(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Every retained job, in start order, once each, `PAGE_SIZE` a page, by `nextLink`."""
        for vault in vaults_of(emu):
            rows, links = await all_pages(http, emu, f"{vault.id}/backupJobs?{API}")
            assert [row["name"] for row in rows] == [job.name for job in vault.jobs]
            assert len(vault.jobs) > PAGE_SIZE
            assert len(links) == math.ceil(len(vault.jobs) / PAGE_SIZE) - 1
            starts = [row["properties"]["startTime"] for row in rows]
            assert starts == sorted(starts)
            for link in links:
                assert link.startswith(emu.url)
                assert "api-version=2026-06-01" in link

    async def test_filter_is_ignored(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """The API declares no `$filter`: one sent anyway changes nothing (nor does `$top`)."""
        vault = vaults_of(emu)[0]
        plain, _ = await all_pages(http, emu, f"{vault.id}/backupJobs?{API}")
        filtered, _ = await all_pages(
            http,
            emu,
            f"{vault.id}/backupJobs?{API}&$filter=status eq 'Failed'&$top=1",
        )
        assert filtered == plain

    async def test_job_shape(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """The flat schema of the examples: type casing, capital IDs, TimeSpan durations."""
        seen_running = seen_failed = 0
        for vault in vaults_of(emu):
            rows, _ = await all_pages(http, emu, f"{vault.id}/backupJobs?{API}")
            for row in rows:
                job = vault.jobs_by_name[row["name"]]
                assert row["type"] == "Microsoft.DataProtection/Backupvaults/backupJobs"
                assert (
                    f"/providers/Microsoft.DataProtection/Backupvaults/{vault.name}/" in row["id"]
                )
                p = row["properties"]
                assert "jobType" not in p
                assert p["activityID"] == job.activity_id
                assert p["sourceSubscriptionID"] == vault.subscription_id
                assert p["dataSourceType"] == job.instance.datasource.type
                assert p["dataSourceId"] == job.instance.data_source_id
                assert p["vaultName"] == vault.name
                assert p["status"] == job.status
                assert TIMESPAN.match(p["duration"]), p["duration"]
                assert "extendedInfo" not in p
                if job.end_at is None:
                    seen_running += 1
                    assert p["duration"] == "00:00:00"
                    assert "endTime" not in p
                    assert p["supportedActions"] == []
                else:
                    assert p["endTime"] > p["startTime"]
                    assert p["duration"] != "00:00:00"
                    assert p["supportedActions"] == [""]
                if job.status == "Failed":
                    seen_failed += 1
                    (error,) = p["errorDetails"]
                    assert error["code"]
                    assert error["message"]
                    assert error["recommendedAction"]
                else:
                    assert "errorDetails" not in p
        assert seen_running > 0
        assert seen_failed > 0

    async def test_get_one_job_with_sub_tasks(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        for vault in vaults_of(emu):
            for job in (vault.jobs[0], vault.jobs[-1]):
                status, _, body = await get(http, emu, f"{vault.id}/backupJobs/{job.name}?{API}")
                assert status == 200
                assert body["name"] == job.name
                assert body["type"] == "Microsoft.DataProtection/Backupvaults/backupJobs"
                info = body["properties"]["extendedInfo"]
                assert info["additionalDetails"]["TaskId"] == job.activity_id
                tasks = info["subTasks"]
                assert [t["taskId"] for t in tasks] == list(range(1, len(tasks) + 1))
                assert all(isinstance(t["taskName"], str) for t in tasks)
                assert all(t["taskStatus"] for t in tasks)

    async def test_statuses_of_both_vocabularies(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Each vault speaks the examples' or the doc's vocabulary; both appear in the estate."""
        by_vocabulary: dict[str, set[str]] = {"examples": set(), "doc": set()}
        for vault in vaults_of(emu):
            rows, _ = await all_pages(http, emu, f"{vault.id}/backupJobs?{API}")
            by_vocabulary[vault.vocabulary] |= {row["properties"]["status"] for row in rows}
        assert by_vocabulary["examples"] <= EXAMPLE_STATUSES
        assert {"Started", "Succeeded"} <= by_vocabulary["examples"]
        assert by_vocabulary["doc"] <= DOC_STATUSES
        assert {"InProgress", "Completed"} <= by_vocabulary["doc"]

    async def test_every_datasource_type(self, emu: Emulator) -> None:
        kinds = {i.datasource.type for v in vaults_of(emu) for i in v.instances}
        assert kinds == {d.type for d in DATASOURCES}

    async def test_reads_are_throttled_and_logged_as_rs_reads(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Same throttle headers as every ARM read; the read log counts polls and pages."""
        vault = vaults_of(emu)[0]
        _, headers, _ = await get(http, emu, f"{vault.id}/backupJobs?{API}")
        assert "x-ms-ratelimit-remaining-subscription-reads" in headers
        await all_pages(http, emu, f"{vault.id}/backupJobs?{API}")
        await get(http, emu, f"{vault.id}/backupJobs/{vault.jobs[0].name}?{API}")
        _, _, log = await get(http, emu, "/_emulator/reads")
        (row,) = [r for r in log["vaults"] if r["vault_id"].lower() == vault.key]
        pages = math.ceil(len(vault.jobs) / PAGE_SIZE)
        assert (row["lists"], row["pages"], row["jobs"]) == (2, 1 + pages, 1)
        assert row["subscription_id"] == vault.subscription_id


class TestGroundTruth:
    async def test_backup_vault_transitions(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        world = emu.world
        _, _, first = await get(http, emu, "/_emulator/transitions?kind=backup_vault&limit=5")
        _, _, rest = await get(
            http, emu, f"/_emulator/transitions?kind=backup_vault&since={first['next']}"
        )
        rows = first["transitions"] + rest["transitions"]
        assert [r["seq"] for r in rows] == list(range(1, len(world.backup_vaults.transitions) + 1))
        assert {r["vault_kind"] for r in rows} == {"backup_vault"}
        assert {r["vault_id"].lower() for r in rows} == {v.key for v in vaults_of(emu)}
        for row in rows:
            vault = world.backup_vaults.vault(row["vault_id"])
            assert vault is not None
            job = vault.jobs_by_name.get(row["job_id"])
            if job is not None:
                assert row["datasource_type"] == job.instance.datasource.type
        # The default stream is the Recovery Services one, as before.
        _, _, rs = await get(http, emu, "/_emulator/transitions")
        assert len(rs["transitions"]) == len(world.transitions)
        assert all("vault_kind" not in r for r in rs["transitions"])
        assert {r["vault_id"].lower() for r in rs["transitions"]} <= set(world.vaults)

    async def test_unknown_kind_is_refused(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        async with http.get(f"{emu.url}/_emulator/transitions?kind=everything") as response:
            assert response.status == 400
            assert "everything" in await response.text()

    async def test_world_summary_lists_backup_vaults(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        _, _, summary = await get(http, emu, "/_emulator/world")
        assert [v["id"] for v in summary["backup_vaults"]] == [v.id for v in vaults_of(emu)]
        assert {v["vocabulary"] for v in summary["backup_vaults"]} == {"examples", "doc"}

    def test_deterministic(self) -> None:
        """Equal settings and times give equal Backup vault jobs and transitions."""
        at = utc(2026, 3, 1, 12)
        a, b = World(SETTINGS.world, at), World(SETTINGS.world, at)
        for w in (a, b):
            w.advance(utc(2026, 3, 1, 12, 10))
        assert [dataclasses.astuple(t) for t in a.backup_vaults.transitions] == [
            dataclasses.astuple(t) for t in b.backup_vaults.transitions
        ]
        assert a.backup_vaults.transitions


def _timespan_ticks(text: str) -> int:
    """.NET TimeSpan text (`[d.]hh:mm:ss[.fffffff]`) as 100 ns ticks."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{2}):(\d{2}):(\d{2})(?:\.(\d{7}))?", text)
    assert m is not None, text
    days, hours, minutes, seconds, fraction = m.groups()
    whole = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
    return whole * 10_000_000 + int(fraction or 0)


@given(st.integers(min_value=0, max_value=40 * 86400 * 10_000_000))
def test_timespan_text_is_the_duration(ticks: int) -> None:
    """Any duration, written as .NET TimeSpan text, reads back to the same 100 ns ticks."""
    text = format_timespan(ticks / 10_000_000)
    assert TIMESPAN.match(text), text
    assert _timespan_ticks(text) == ticks
