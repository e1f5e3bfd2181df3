"""The emulator's Azure Resource Graph endpoint over real sockets, and the Backup vault history
seed.

The query the monitor sends returns the Backup vault jobs of the listed subscriptions, equal to
the ARM list's items; `$skipToken` pages give every row once while the world moves; staleness
hides young jobs and shows earlier statuses; the per-principal quota counts down to a 429;
queries outside the KQL subset get ARG's 400 shape.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from monitor.emulator import (
    PROFILES,
    Emulator,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.backup_vaults import (
    HISTORY_SPAN_S,
    RUNNING_STATUS,
    TERMINAL,
    BackupVault,
    BvJob,
)
from monitor.emulator.clock import ManualClock
from monitor.emulator.resource_graph import ResourceGraphSettings
from monitor.emulator.world import World, utc

ARG_URL = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"
JOB_TYPE = "microsoft.dataprotection/backupvaults/backupjobs"
SUPPORT = re.compile(
    r"^Please provide below info when asking for support: timestamp = "
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z, correlationId = [0-9a-f-]{36}\.$"
)
RESETS_AFTER = re.compile(r"^\d\d:\d\d:\d\d$")


def monitor_query(since: datetime) -> str:
    """The query the monitor sends, with a start-time cutoff."""
    return (
        "RecoveryServicesResources\n"
        "| where type =~ 'microsoft.dataprotection/backupvaults/backupjobs'\n"
        f"| where todatetime(properties.startTime) >= datetime({since:%Y-%m-%dT%H:%M:%S}Z)\n"
        "| project id, name, type, properties\n"
        "| order by id asc"
    )


def settings(
    *, staleness_s: float = 0.0, quota: int = 100_000, history: int = 0
) -> EmulatorSettings:
    return EmulatorSettings(
        world=WorldSettings(
            seed=4,
            subscriptions=2,
            vaults_per_subscription=1,
            backup_vaults_per_subscription=2,
            backup_vault_history_jobs=history,
            # Ten minutes of demo history: a few dozen jobs per Backup vault, some running.
            profile=dataclasses.replace(PROFILES["demo"], history_s=600.0),
        ),
        page_size=50,
        throttle=ThrottleSettings(reads_bucket=100_000, reads_per_s=10_000.0),
        resource_graph=ResourceGraphSettings(staleness_s=staleness_s, quota=quota),
    )


@pytest.fixture(name="clock")
def _clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture(name="emu")
async def _emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with running_emulator(settings(), clock=clock) as emulator:
        yield emulator


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def query(
    http: aiohttp.ClientSession,
    emu: Emulator,
    body: Any,
    *,
    token: str | None = None,
    url: str = ARG_URL,
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token or emu.token}"}
    async with http.post(emu.url + url, json=body, headers=headers) as response:
        return response.status, response.headers, await response.json(content_type=None)


async def arm_items(http: aiohttp.ClientSession, emu: Emulator, vault: BackupVault) -> list[Any]:
    """Every item of a Backup vault's ARM job list (all pages)."""
    rows: list[Any] = []
    url: str | None = f"{emu.url}{vault.id}/backupJobs?api-version=2026-06-01"
    while url is not None:
        async with http.get(url, headers={"Authorization": f"Bearer {emu.token}"}) as response:
            assert response.status == 200
            body = await response.json()
        rows += body["value"]
        url = body.get("nextLink")
    return rows


def parse_time(text: str) -> datetime:
    return datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def all_jobs(emu: Emulator) -> list[BvJob]:
    return [j for v in emu.world.backup_vaults.vaults.values() for j in v.jobs]


def subscription_ids(emu: Emulator) -> list[str]:
    return list(emu.world.subscriptions)


def median_start(emu: Emulator) -> datetime:
    starts = sorted(j.start_at for j in all_jobs(emu))
    return starts[len(starts) // 2].replace(microsecond=0)


async def all_rows(
    http: aiohttp.ClientSession, emu: Emulator, body: dict[str, Any], top: int
) -> list[list[Any]]:
    """Every page of a query, following `$skipToken`."""
    pages: list[list[Any]] = []
    token: str | None = None
    while True:
        options: dict[str, Any] = {"$top": top}
        if token is not None:
            options["$skipToken"] = token
        status, _, answer = await query(http, emu, {**body, "options": options})
        assert status == 200, answer
        assert answer["count"] == len(answer["data"]) <= top
        pages.append(answer["data"])
        token = answer.get("$skipToken")
        if token is None:
            return pages


class TestRows:
    async def test_the_monitor_query_returns_the_listed_subscriptions_jobs(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Exactly the Backup vault jobs started since the cutoff in the listed subscription, each
        with the ARM list item's id, name and properties, in id order."""
        sub, other = subscription_ids(emu)
        since = median_start(emu)
        status, headers, answer = await query(
            http, emu, {"subscriptions": [sub.upper()], "query": monitor_query(since)}
        )
        assert status == 200, answer
        assert emu.throttle.stats_json()["requests"] == 0  # ARM's read buckets are not charged
        expected: dict[str, Any] = {}
        for vault in emu.world.backup_vaults.by_subscription[sub.lower()]:
            for item in await arm_items(http, emu, vault):
                if parse_time(item["properties"]["startTime"]) >= since:
                    expected[item["id"]] = item
        assert expected, "the cutoff leaves no job: the world is too small"
        rows = answer["data"]
        assert [r["id"] for r in rows] == sorted(expected)
        for row in rows:
            item = expected[row["id"]]
            assert set(row) == {"id", "name", "type", "properties"}
            assert row["name"] == item["name"]
            assert row["type"] == JOB_TYPE
            assert row["properties"] == item["properties"]
        assert all(other not in r["id"] for r in rows)
        assert answer["totalRecords"] == answer["count"] == len(expected)
        assert answer["resultTruncated"] == "false"
        assert "$skipToken" not in answer
        assert answer["facets"] == []
        # ARG's quota headers, not ARM's subscription read buckets.
        assert headers["x-ms-user-quota-remaining"].isdigit()
        assert not any(h.lower().startswith("x-ms-ratelimit-remaining") for h in headers)

    async def test_columns_type_filters_and_order(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """`in~`, status filters, every projectable column, `desc`, and Recovery Services types
        (no rows)."""
        subs = subscription_ids(emu)
        text = (
            "recoveryservicesresources | where type in~ ('Microsoft.DataProtection/BackupVaults/"
            "backupJobs', 'x') | where properties.status in~ ('failed', 'FAILED')"
            " | project id, subscriptionId, resourceGroup, properties | order by id desc"
        )
        status, _, answer = await query(http, emu, {"subscriptions": subs, "query": text})
        assert status == 200, answer
        failed = {j.name for j in all_jobs(emu) if j.status == "Failed"}
        assert failed, "no failed job in the world"
        assert {r["properties"]["status"] for r in answer["data"]} == {"Failed"}
        assert {r["id"].rsplit("/", 1)[1] for r in answer["data"]} == failed
        ids = [r["id"] for r in answer["data"]]
        assert ids == sorted(ids, reverse=True)
        row = answer["data"][0]
        assert set(row) == {"id", "subscriptionId", "resourceGroup", "properties"}
        assert row["subscriptionId"] in subs
        assert f"/resourceGroups/{row['resourceGroup']}/" in row["id"]
        status, _, answer = await query(
            http,
            emu,
            {
                "subscriptions": subs,
                "query": "RecoveryServicesResources | where type =~ "
                "'microsoft.recoveryservices/vaults/backupjobs'",
            },
        )
        assert status == 200
        assert answer["data"] == []
        assert answer["totalRecords"] == 0

    async def test_table_format_and_default_scope(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """`resultFormat: table` gives columns and rows; no subscriptions means all of them."""
        status, _, answer = await query(
            http,
            emu,
            {
                "query": "RecoveryServicesResources | project id, name",
                "options": {"resultFormat": "table"},
            },
        )
        assert status == 200, answer
        assert answer["data"]["columns"] == [
            {"name": "id", "type": "string"},
            {"name": "name", "type": "string"},
        ]
        assert len(answer["data"]["rows"]) == answer["count"] == len(all_jobs(emu))


class TestPaging:
    async def test_skip_token_pages_give_every_row_once_while_the_world_moves(
        self, emu: Emulator, http: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        """$top 7: pages in id order, none repeated, every row of the first answer among them,
        though the clock moves between pages."""
        body = {"subscriptions": subscription_ids(emu), "query": monitor_query(median_start(emu))}
        _, _, whole = await query(http, emu, body)
        before = [r["id"] for r in whole["data"]]
        assert len(before) > 14
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            options: dict[str, Any] = {"$top": 7}
            if token:
                options["$skipToken"] = token
            status, _, answer = await query(http, emu, {**body, "options": options})
            assert status == 200, answer
            assert answer["count"] == len(answer["data"]) <= 7
            seen += [r["id"] for r in answer["data"]]
            pages += 1
            clock.advance(3.0)
            token = answer.get("$skipToken")
            if token is None:
                break
            assert answer["resultTruncated"] == "false"
        assert len(seen) == len(set(seen))
        assert seen == sorted(seen)
        assert set(before) <= set(seen)
        assert pages >= 3

    @pytest.mark.parametrize("direction", ["asc", "desc"])
    @pytest.mark.parametrize("status_filter", ["", "| where properties.status in~ ('failed')"])
    async def test_pages_in_either_order_equal_the_whole_answer(
        self, emu: Emulator, http: aiohttp.ClientSession, direction: str, status_filter: str
    ) -> None:
        """$top 5 pages, ascending or descending, with or without a status filter, are the
        one-page answer cut in pieces; `$skip` skips rows of the first page."""
        text = f"RecoveryServicesResources {status_filter} | order by id {direction}"
        body = {"subscriptions": subscription_ids(emu), "query": text}
        _, _, whole = await query(http, emu, body)
        ids = [r["id"] for r in whole["data"]]
        assert ids == sorted(ids, reverse=direction == "desc")
        assert whole["totalRecords"] == len(ids) > 5
        pages = await all_rows(http, emu, body, top=5)
        assert [r["id"] for page in pages for r in page] == ids
        assert len(pages) == -(-len(ids) // 5)
        _, _, skipped = await query(http, emu, {**body, "options": {"$skip": 3, "$top": 2}})
        assert [r["id"] for r in skipped["data"]] == ids[3:5]

    async def test_without_id_the_result_is_truncated(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Rows without `id` cannot be paged: `resultTruncated` is "true" and no token comes."""
        status, _, answer = await query(
            http,
            emu,
            {"query": "RecoveryServicesResources | project name", "options": {"$top": 3}},
        )
        assert status == 200
        assert answer["resultTruncated"] == "true"
        assert "$skipToken" not in answer
        assert answer["count"] == 3 < answer["totalRecords"]

    @pytest.mark.parametrize(
        "options",
        [
            {"$skipToken": "not-a-token"},
            {"$top": 1001},
            {"$top": 0},
            {"resultFormat": "csv"},
        ],
    )
    async def test_bad_options(
        self, emu: Emulator, http: aiohttp.ClientSession, options: dict[str, Any]
    ) -> None:
        """An invalid $skipToken, $top outside 1..1000, an unknown format: 400 BadRequest."""
        status, _, answer = await query(
            http, emu, {"query": "RecoveryServicesResources", "options": options}
        )
        assert status == 400
        assert answer["error"]["code"] == "BadRequest"
        assert SUPPORT.match(answer["error"]["message"])
        assert answer["error"]["details"][0]["code"]

    async def test_a_token_of_another_query_is_refused(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A $skipToken belongs to its query and scopes."""
        _, _, answer = await query(
            http, emu, {"query": "RecoveryServicesResources", "options": {"$top": 2}}
        )
        token = answer["$skipToken"]
        status, _, answer = await query(
            http,
            emu,
            {
                "query": "RecoveryServicesResources | order by id asc",
                "options": {"$skipToken": token},
            },
        )
        assert status == 400
        assert answer["error"]["details"][0]["code"] == "InvalidSkipToken"


class TestStaleness:
    async def test_rows_show_jobs_as_they_were(
        self, http: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        """With 60 s of staleness, jobs younger than that have no row and jobs finished since
        still show as running; 61 s later both catch up."""
        async with running_emulator(settings(staleness_s=60.0), clock=clock) as emu:
            body = {"subscriptions": subscription_ids(emu), "query": "RecoveryServicesResources"}
            now = clock.utcnow()
            view = now - timedelta(seconds=60)
            jobs = {j.name: j for j in all_jobs(emu)}
            young = {n for n, j in jobs.items() if j.start_at > view}
            just_done = {
                n
                for n, j in jobs.items()
                if j.end_at is not None and view < j.end_at and j.start_at <= view
            }
            assert young, "the world has no job younger than the staleness"
            assert just_done, "the world has no job that finished within the staleness"
            status, _, answer = await query(http, emu, body)
            assert status == 200
            rows = {r["name"]: r for r in answer["data"]}
            assert set(rows) == set(jobs) - young
            for name in just_done:
                p = rows[name]["properties"]
                vocabulary = jobs[name].vault.vocabulary
                assert p["status"] in (RUNNING_STATUS[vocabulary], "Cancelling")
                assert "endTime" not in p
                assert "errorDetails" not in p
                assert p["duration"] == "00:00:00"
                assert p["supportedActions"] == []
            for name, row in rows.items():
                job = jobs[name]
                if job.end_at is not None and job.end_at <= view:
                    assert row["properties"]["status"] == job.status
                    assert row["properties"]["status"] in TERMINAL
                    assert "endTime" in row["properties"]
            clock.advance(61.0)
            status, _, answer = await query(http, emu, body)
            names = {r["name"]: r for r in answer["data"]}
            assert young <= set(names)
            for name in just_done:
                assert names[name]["properties"]["status"] == jobs[name].status
                assert names[name]["properties"]["endTime"]


class TestQuota:
    async def test_quota_counts_down_then_429(
        self, http: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        """15 queries per 5 s per principal: the headers count down, the 16th gets a 429 with
        Retry-After; another principal has its own quota; after the window it resets."""
        async with running_emulator(settings(quota=15), clock=clock) as emu:
            body = {"query": "RecoveryServicesResources | project id", "options": {"$top": 1}}
            remaining = []
            for _ in range(15):
                status, headers, _ = await query(http, emu, body)
                assert status == 200
                remaining.append(int(headers["x-ms-user-quota-remaining"]))
                assert RESETS_AFTER.match(headers["x-ms-user-quota-resets-after"])
                clock.advance(0.1)
            assert remaining == list(range(14, -1, -1))
            status, headers, answer = await query(http, emu, body)
            assert status == 429
            assert headers["x-ms-user-quota-remaining"] == "0"
            assert headers["x-ms-user-quota-resets-after"] == "00:00:04"  # 3.5 s, rounded up
            assert headers["Retry-After"] == "4"
            assert answer["error"]["code"] == "RateLimiting"
            assert SUPPORT.match(answer["error"]["message"])
            async with http.post(
                emu.url + "/_emulator/tokens", json={"principal": "another-app"}
            ) as response:
                other = (await response.json())["token"]
            status, headers, _ = await query(http, emu, body, token=other)
            assert status == 200
            assert headers["x-ms-user-quota-remaining"] == "14"
            clock.advance(4.0)
            status, headers, _ = await query(http, emu, body)
            assert status == 200
            assert headers["x-ms-user-quota-remaining"] == "14"
            assert headers["x-ms-user-quota-resets-after"] == "00:00:05"
            async with http.get(emu.url + "/_emulator/stats") as response:
                stats = (await response.json())["resource_graph"]
            assert stats["requests"] == 18
            assert stats["throttled_429"] == 1
            async with http.get(emu.url + "/_emulator/reads") as response:
                reads = (await response.json())["outside_vaults"]
            assert {
                "principal": "emulator-static-user",
                "scope": "resourcegraph",
                "served": 16,
                "throttled_429": 1,
            } in reads


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "line", "column"),
        [
            ("Resources | where type =~ 'microsoft.compute/disks'", 1, 0),
            ("RecoveryServicesResources | take 5", 1, 28),
            ("RecoveryServicesResources | where type == 'x'", 1, 39),
            ("RecoveryServicesResources | where name =~ 'x'", 1, 34),
            ("RecoveryServicesResources | where type =~ 'unterminated", 1, 42),
            ("RecoveryServicesResources | project id, location", 1, 40),
            ("RecoveryServicesResources\n| project name\n| order by id asc", 3, 11),
            (
                "RecoveryServicesResources | where todatetime(properties.startTime) "
                ">= datetime(2026-12-01)",
                1,
                70,
            ),
        ],
    )
    async def test_outside_the_subset_is_arg_s_parser_failure(
        self, emu: Emulator, http: aiohttp.ClientSession, text: str, line: int, column: int
    ) -> None:
        """Another table, operator, column or literal, or a syntax error: ARG's 400 shape."""
        status, headers, answer = await query(http, emu, {"query": text})
        assert status == 400, answer
        error = answer["error"]
        assert error["code"] == "BadRequest"
        assert SUPPORT.match(error["message"])
        assert headers["x-ms-correlation-request-id"] in error["message"]
        invalid, failure = error["details"]
        assert invalid["code"] == "InvalidQuery"
        assert invalid["message"].startswith("Query is invalid.")
        assert failure["code"] == "ParserFailure"
        assert failure["line"] == line
        assert failure["characterPositionInLine"] == column
        assert failure["message"]

    @pytest.mark.parametrize(
        "body",
        [
            {"subscriptions": []},
            {"query": "  "},
            {"query": "RecoveryServicesResources", "managementGroups": ["mg-1"]},
            ["RecoveryServicesResources"],
        ],
    )
    async def test_bad_requests(
        self, emu: Emulator, http: aiohttp.ClientSession, body: Any
    ) -> None:
        """No query, management groups, a body that is no object: 400 BadRequest."""
        status, _, answer = await query(http, emu, body)
        assert status == 400
        assert answer["error"]["code"] == "BadRequest"

    async def test_api_versions_and_auth(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """2022-10-01 and 2021-03-01 work; another version is refused; no token is a 401."""
        body = {"query": "RecoveryServicesResources | project id"}
        for version in ("2022-10-01", "2021-03-01"):
            url = ARG_URL.replace("2024-04-01", version)
            status, _, _ = await query(http, emu, body, url=url)
            assert status == 200
        status, _, answer = await query(
            http, emu, body, url=ARG_URL.replace("2024-04-01", "2019-04-01")
        )
        assert status == 400
        assert answer["error"]["code"] == "InvalidApiVersionParameter"
        async with http.post(emu.url + ARG_URL, json=body) as response:
            assert response.status == 401


class TestHistorySeed:
    async def test_each_vault_starts_with_its_history(
        self, http: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        """40 finished jobs per vault, oldest first over the 13 days before the start, in the
        ARM list, the ground truth and ARG; the live jobs are those of a world without them."""
        async with running_emulator(settings(history=40), clock=clock) as emu:
            world = emu.world
            start = clock.utcnow() - timedelta(seconds=world.profile.history_s)
            statuses: set[str] = set()
            for vault in world.backup_vaults.vaults.values():
                seeded = vault.jobs[:40]
                assert all(j.start_at < start for j in seeded)
                assert all(j.start_at >= start - timedelta(seconds=HISTORY_SPAN_S) for j in seeded)
                assert all(j.is_terminal and j.end_at is not None for j in seeded)
                assert [j.start_at for j in seeded] == sorted(j.start_at for j in seeded)
                gaps = {
                    round((b.start_at - a.start_at).total_seconds())
                    for a, b in itertools.pairwise(seeded)
                }
                assert gaps == {round(HISTORY_SPAN_S / 40)}
                assert vault.jobs[40].start_at >= start
                items = await arm_items(http, emu, vault)
                assert [i["name"] for i in items[:40]] == [j.name for j in seeded]
                statuses |= {j.status for j in seeded}
            assert {"Failed"} < statuses
            assert statuses & {"Succeeded", "Completed"}
            async with http.get(
                emu.url + "/_emulator/transitions?kind=backup_vault&limit=100000"
            ) as response:
                truth = (await response.json())["transitions"]
            finished = {t["job_id"] for t in truth if t["to"] in TERMINAL}
            assert all(
                j.name in finished for v in world.backup_vaults.vaults.values() for j in v.jobs[:40]
            )
            ats = [datetime.fromisoformat(t["at"]) for t in truth]
            assert ats == sorted(ats)
            since = start - timedelta(days=14)
            _, _, answer = await query(http, emu, {"query": monitor_query(since)})
            assert answer["totalRecords"] == len(all_jobs(emu))
            plain = World(dataclasses.replace(settings().world), clock.utcnow())
            for vault in world.backup_vaults.vaults.values():
                other = plain.backup_vaults.vault(vault.id)
                assert other is not None
                assert [j.name for j in vault.jobs[40:]] == [j.name for j in other.jobs]

    def test_zero_draws_nothing(self) -> None:
        """The default is no history: the first job of each vault starts after the start."""
        assert WorldSettings().backup_vault_history_jobs == 0
        world = World(settings().world, utc(2026, 3, 1, 12))
        start = utc(2026, 3, 1, 12) - timedelta(seconds=world.profile.history_s)
        assert all(v.jobs[0].start_at >= start for v in world.backup_vaults.vaults.values())
