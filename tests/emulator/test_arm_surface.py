"""The emulator's ARM surface over real sockets: auth, paging, filters, throttling, faults."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import pytest

from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    FaultSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.clock import ManualClock
from monitor.emulator.estate import Vault
from monitor.emulator.identity import STATIC_PRINCIPAL

API = "api-version=2025-08-01"
WINDOW = "startTime eq '2020-01-01 12:00:00 AM' and endTime eq '2099-01-01 12:00:00 AM'"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    settings = EmulatorSettings(
        world=WorldSettings(seed=11, subscriptions=2, vaults_per_subscription=3),
        page_size=2,
        vault_page_size=2,
        operation_retry_after_s=1,
    )
    async with running_emulator(settings) as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def busiest(emu: Emulator) -> Vault:
    return max((v for v in emu.world.vaults.values() if not v.deleted), key=lambda v: len(v.jobs))


async def get(
    http: aiohttp.ClientSession, emu: Emulator, url: str, token: str | None = None
) -> tuple[int, Any, Any]:
    if not url.startswith("http"):
        url = emu.url + url
    headers = {"Authorization": f"Bearer {token or emu.token}"}
    async with http.get(url, headers=headers) as response:
        body = await response.json(content_type=None) if await response.read() else None
        return response.status, response.headers, body


async def control(
    http: aiohttp.ClientSession, emu: Emulator, method: str, path: str, **kw: Any
) -> Any:
    async with http.request(method, emu.url + path, **kw) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


class TestAuthentication:
    async def test_missing_token(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """No Authorization header: 401 AuthenticationFailed with WWW-Authenticate."""
        async with http.get(f"{emu.url}/subscriptions?{API}") as response:
            body = await response.json()
            assert response.status == 401
            assert body["error"]["code"] == "AuthenticationFailed"
            assert "WWW-Authenticate" in response.headers

    async def test_forged_token(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A token this emulator did not sign is InvalidAuthenticationToken."""
        status, _, body = await get(http, emu, f"/subscriptions?{API}", token="emu1.e30.AAAA")
        assert status == 401
        assert body["error"]["code"] == "InvalidAuthenticationToken"

    async def test_expired_token(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A token past its expiry is ExpiredAuthenticationToken, marked as a gateway failure."""
        minted = await control(
            http, emu, "POST", "/_emulator/tokens", json={"principal": "p", "lifetime_s": -1}
        )
        status, headers, body = await get(http, emu, f"/subscriptions?{API}", token=minted["token"])
        assert status == 401
        assert body["error"]["code"] == "ExpiredAuthenticationToken"
        assert headers["x-ms-failure-cause"] == "gateway"

    async def test_api_version_is_required(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A request without api-version is a 400 MissingApiVersionParameter."""
        status, _, body = await get(http, emu, "/subscriptions")
        assert status == 400
        assert body["error"]["code"] == "MissingApiVersionParameter"


class TestListing:
    async def test_subscriptions_are_tenant_reads(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """GET /subscriptions lists every subscription and spends the tenant bucket."""
        status, headers, body = await get(http, emu, f"/subscriptions?{API}")
        assert status == 200
        assert {s["subscriptionId"] for s in body["value"]} == set(emu.world.subscriptions)
        assert headers["x-ms-ratelimit-remaining-tenant-reads"] == "249"
        assert "x-ms-ratelimit-remaining-subscription-reads" not in headers

    async def test_vault_list_pages(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """The vault list pages through nextLink and yields every vault of the subscription."""
        sub = next(iter(emu.world.subscriptions.values()))
        url: str | None = (
            f"/subscriptions/{sub.id}/providers/Microsoft.RecoveryServices/vaults?{API}"
        )
        seen: list[str] = []
        pages = 0
        while url:
            status, _, body = await get(http, emu, url)
            assert status == 200
            seen += [v["id"].lower() for v in body["value"]]
            url = body.get("nextLink")
            pages += 1
        assert sorted(seen) == sorted(sub.vaults)
        assert pages == 2
        assert all(v["location"] for v in body["value"])

    async def test_jobs_page_through_next_link(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Following nextLink as given returns every job in the window once, newest first."""
        vault = busiest(emu)
        before = {j.name for j in vault.jobs}
        url: str | None = f"{vault.id}/backupJobs?{API}&$filter={WINDOW}"
        names: list[str] = []
        starts: list[str] = []
        links: list[str] = []
        while url:
            status, headers, body = await get(http, emu, url)
            assert status == 200
            assert "x-ms-ratelimit-remaining-subscription-reads" in headers
            names += [j["name"] for j in body["value"]]
            starts += [j["properties"]["startTime"] for j in body["value"]]
            url = body.get("nextLink")
            if url:
                links.append(url)
        assert len(names) == len(set(names))
        assert set(names) >= before
        assert set(names) <= {j.name for j in vault.jobs}
        assert starts == sorted(starts, reverse=True)
        assert len(links) >= 2
        for link in links:
            assert link.startswith(emu.url)
            assert "api-version=2017-07-01" in link
            assert "%24skiptoken=%3c%3fxml" in link
            assert "%24filter=startTime+eq+%27" in link
            assert not re.search(r"%[0-9A-F][A-F]|%[A-F][0-9]", link)  # escapes are lower-case

    async def test_window_bounds_start_times(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """startTime/endTime keep exactly the jobs that started inside the window."""
        vault = busiest(emu)
        pivot = vault.jobs[len(vault.jobs) // 2].start_at.replace(microsecond=0) + timedelta(
            seconds=1
        )
        when = pivot.strftime("%Y-%m-%d %I:%M:%S %p")
        url: str | None = (
            f"{vault.id}/backupJobs?{API}&$filter=startTime eq '{when}' and "
            "endTime eq '2099-01-01 12:00:00 AM'"
        )
        names: set[str] = set()
        while url:
            _, _, body = await get(http, emu, url)
            names |= {j["name"] for j in body["value"]}
            url = body.get("nextLink")
        expected = {j.name for j in vault.jobs if j.start_at >= pivot}
        assert names == expected

    async def test_equality_filters(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """status and jobId filters keep only matching jobs."""
        vault = busiest(emu)
        target = vault.jobs[0]
        _, _, body = await get(
            http, emu, f"{vault.id}/backupJobs?{API}&$filter=jobId eq '{target.name}'"
        )
        assert [j["name"] for j in body["value"]] == [target.name]
        _, _, body = await get(
            http, emu, f"{vault.id}/backupJobs?{API}&$filter=status eq '{target.status}'"
        )
        assert body["value"]
        assert all(j["properties"]["status"] == target.status for j in body["value"])

    @pytest.mark.parametrize(
        "flt",
        [
            "startTime eq '2026-11-25T10:00:00Z'",
            "startTime gt '2026-01-01 12:00:00 AM'",
            "foo eq 'x'",
        ],
    )
    async def test_bad_filter_is_bms_input_error(
        self, emu: Emulator, http: aiohttp.ClientSession, flt: str
    ) -> None:
        """ISO dates, other operators and unknown properties give 400 BMSUserErrorInvalidInput."""
        vault = busiest(emu)
        status, _, body = await get(http, emu, f"{vault.id}/backupJobs?{API}&$filter={flt}")
        assert status == 400
        assert body == {
            "error": {
                "code": "BMSUserErrorInvalidInput",
                "message": (
                    "Input provided for the call is invalid\r\nPlease check the required inputs"
                ),
                "target": None,
                "details": None,
                "innerError": None,
            }
        }

    async def test_job_details_by_its_own_id(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """The job id as listed (`/Subscriptions/`, any provider casing) GETs its details."""
        vault = busiest(emu)
        _, _, body = await get(http, emu, f"{vault.id}/backupJobs?{API}")
        job = body["value"][0]
        assert job["id"].startswith("/Subscriptions/")
        status, _, details = await get(http, emu, f"{job['id']}?{API}")
        assert status == 200
        assert details["name"] == job["name"]
        assert "extendedInfo" in details["properties"]
        status, _, body = await get(
            http, emu, f"{vault.id}/backupJobs/00000000-0000-0000-0000-000000000000?{API}"
        )
        assert status == 404


class TestEstateChanges:
    async def test_forbidden_and_deleted_vaults(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A forbidden vault answers 403 AuthorizationFailed, a deleted one 404; others are fine."""
        a, b, c = list(emu.world.vaults.values())[:3]
        await control(http, emu, "POST", "/_emulator/vaults/forbid", json={"id": a.id})
        await control(http, emu, "DELETE", "/_emulator/vaults", params={"id": b.id})
        status, _, body = await get(http, emu, f"{a.id}/backupJobs?{API}")
        assert status == 403
        assert body["error"]["code"] == "AuthorizationFailed"
        status, _, body = await get(http, emu, f"{b.id}/backupJobs?{API}")
        assert status == 404
        assert body["error"]["code"] == "ResourceNotFound"
        status, _, _ = await get(http, emu, f"{c.id}/backupJobs?{API}")
        assert status == 200

    async def test_added_vault_is_listed(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A vault added through the control API appears in its subscription's list."""
        sub = next(iter(emu.world.subscriptions))
        added = await control(
            http,
            emu,
            "POST",
            "/_emulator/vaults",
            json={"subscription_id": sub, "resource_group": "rg-x", "name": "rsv-added"},
        )
        status, _, body = await get(http, emu, f"{added['id']}?{API}")
        assert status == 200
        assert body["name"] == "rsv-added"

    async def test_trigger_backup_resolves_to_a_job(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """POST backup → 202 with operation URLs → Succeeded with the jobId of a running job."""
        vault = busiest(emu)
        _, _, items = await get(http, emu, f"{vault.id}/backupProtectedItems?{API}")
        item = items["value"][0]
        headers = {"Authorization": f"Bearer {emu.token}"}
        async with http.post(f"{emu.url}{item['id']}/backup?{API}", headers=headers) as response:
            assert response.status == 202
            operation = response.headers["Azure-AsyncOperation"]
            location = response.headers["Location"]
            assert response.headers["Retry-After"] == "1"
        assert "api-version=2016-12-01" in operation
        assert "/operationsStatus/" in operation
        assert "/operationResults/" in location
        status, _, _body = await get(http, emu, location)
        assert status == 202
        with anyio.fail_after(10):
            while True:
                status, _, op = await get(http, emu, operation)
                assert status == 200
                if op["status"] != "InProgress":
                    break
                await anyio.sleep(0.2)
        assert op["status"] == "Succeeded"
        assert op["properties"]["objectType"] == "OperationStatusJobExtendedInfo"
        status, _, job = await get(
            http, emu, f"{vault.id}/backupJobs/{op['properties']['jobId']}?{API}"
        )
        assert status == 200
        assert job["properties"]["status"] in ("InProgress", "Completed")
        status, _, _ = await get(http, emu, location)
        assert status == 204


class TestThrottling:
    async def test_429_after_the_bucket_and_refill(self, http: aiohttp.ClientSession) -> None:
        """Reading past the bucket gives 429 + Retry-After + the ARM body; the bucket refills."""
        settings = EmulatorSettings(
            world=WorldSettings(subscriptions=1, vaults_per_subscription=1),
            throttle=ThrottleSettings(reads_bucket=20, reads_per_s=10),
        )
        # The bucket's time stands still but when told: no refill between two reads, however
        # slow the machine (10 reads/s would refill one every 0.1 s).
        clock = ManualClock(datetime.now(UTC))
        async with running_emulator(settings, clock=clock) as emu:
            vault = next(iter(emu.world.vaults.values()))
            remaining = []
            for _ in range(20):
                status, headers, _ = await get(http, emu, f"{vault.id}?{API}")
                assert status == 200
                remaining.append(int(headers["x-ms-ratelimit-remaining-subscription-reads"]))
            assert remaining[0] == 19
            assert remaining[-1] <= 1
            assert remaining == sorted(remaining, reverse=True)
            status, headers, body = await get(http, emu, f"{vault.id}?{API}")
            assert status == 429
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["code"] == "SubscriptionRequestsThrottled"
            assert "Please try again after" in body["error"]["message"]
            clock.advance(0.5)
            status, headers, _ = await get(http, emu, f"{vault.id}?{API}")
            assert status == 200
            assert 2 <= int(headers["x-ms-ratelimit-remaining-subscription-reads"]) <= 5
            stats = await control(http, emu, "GET", "/_emulator/stats")
            row = stats["by_scope"][vault.subscription_id]
            assert row["throttled_429"] == 1
            assert row["requests"] == 22
            assert row["peak_per_s_1s"] >= 20


class TestFaults:
    async def set_faults(self, http: aiohttp.ClientSession, emu: Emulator, **rates: float) -> None:
        await control(http, emu, "PUT", "/_emulator/faults", json=rates)

    async def test_server_errors(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With server_error = 1 every ARM call is a 500, 503 or 504 with an ARM body."""
        await self.set_faults(http, emu, server_error=1.0)
        codes = set()
        for _ in range(12):
            status, _, body = await get(http, emu, f"/subscriptions?{API}")
            codes.add(status)
            assert body["error"]["code"] in (
                "InternalServerError",
                "ServiceUnavailable",
                "GatewayTimeout",
            )
        assert codes <= {500, 503, 504}
        assert len(codes) >= 2

    async def test_dropped_connection(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With drop = 1 the connection closes without an answer."""
        await self.set_faults(http, emu, drop=1.0)
        with pytest.raises(aiohttp.ClientError):
            await get(http, emu, f"/subscriptions?{API}")

    async def test_truncated_body(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With truncate = 1 the body stops short of its Content-Length."""
        await self.set_faults(http, emu, truncate=1.0)
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(http, emu, f"/subscriptions?{API}")

    async def test_malformed_body(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With malformed = 1 a 200 carries a body that is not JSON."""
        await self.set_faults(http, emu, malformed=1.0)
        async with http.get(
            f"{emu.url}/subscriptions?{API}", headers={"Authorization": f"Bearer {emu.token}"}
        ) as response:
            assert response.status == 200
            text = await response.text()
        assert text.startswith("<html>")

    async def test_expired_token_fault(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With expired_token = 1 a valid token is answered 401 ExpiredAuthenticationToken."""
        await self.set_faults(http, emu, expired_token=1.0)
        status, _, body = await get(http, emu, f"/subscriptions?{API}")
        assert status == 401
        assert body["error"]["code"] == "ExpiredAuthenticationToken"

    async def test_latency(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With latency = 1 answers come no sooner than latency_s."""
        await self.set_faults(http, emu, latency=1.0, latency_s=0.3)
        started = anyio.current_time()
        status, _, _ = await get(http, emu, f"/subscriptions?{API}")
        assert status == 200
        assert anyio.current_time() - started >= 0.3

    async def test_foreign_next_link_counts_tokens(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A foreign nextLink points at the second server, which counts tokens sent to it."""
        await self.set_faults(http, emu, foreign_next_link=1.0)
        vault = busiest(emu)
        _, _, body = await get(http, emu, f"{vault.id}/backupJobs?{API}")
        link = body["nextLink"]
        assert link.startswith(emu.foreign_url)
        assert not link.startswith(emu.url)
        await get(http, emu, link)  # a careless client sends its token there
        stats = await control(http, emu, "GET", "/_emulator/stats")
        assert stats["foreign_origin"]["tokens_received"] == 1
        assert stats["faults_injected"]["foreign_next_link"] >= 1

    async def test_bad_fault_settings_are_refused(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Unknown fault names and rates outside 0..1 are a 400 naming the problem."""
        for body in ({"nonsense": 0.1}, {"drop": 2}):
            async with http.put(f"{emu.url}/_emulator/faults", json=body) as response:
                assert response.status == 400
                assert (
                    "nonsense" in await response.text()
                    or "between 0 and 1" in await response.text()
                )

    async def test_faults_are_seeded(self, http: aiohttp.ClientSession) -> None:
        """Two emulators with one fault seed fail the same requests."""
        outcomes = []
        for _ in range(2):
            settings = EmulatorSettings(faults=FaultSettings(server_error=0.5))
            async with running_emulator(settings) as emu:
                outcomes.append(
                    [(await get(http, emu, f"/subscriptions?{API}"))[0] for _ in range(30)]
                )
        assert outcomes[0] == outcomes[1]
        assert 200 in outcomes[0]
        assert set(outcomes[0]) - {200}


class TestGroundTruth:
    async def test_transitions_cursor(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """/_emulator/transitions pages by cursor and matches the world's log."""
        first = await control(http, emu, "GET", "/_emulator/transitions", params={"limit": "5"})
        assert len(first["transitions"]) == 5
        assert first["next"] == 5
        rest = await control(http, emu, "GET", "/_emulator/transitions", params={"since": "5"})
        rows = first["transitions"] + rest["transitions"]
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0]["from"] is None
        assert rows[0]["to"] == "InProgress"
        assert rows[0]["at"].endswith("Z")
        assert len(rows) <= len(emu.world.transitions)

    async def test_read_log_splits_each_vaults_first_poll(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """/_emulator/reads counts a first poll from its first page up to the next first page."""
        vault = busiest(emu)
        other = (await control(http, emu, "POST", "/_emulator/tokens", json={"principal": "p2"}))[
            "token"
        ]
        assert (await get(http, emu, f"{vault.id}?{API}"))[0] == 200
        url: str | None = f"{vault.id}/backupJobs?{API}&$filter={WINDOW}"
        pages = 0
        while url:
            status, _, body = await get(http, emu, url)
            assert status == 200
            pages += 1
            url = body.get("nextLink")
        assert pages >= 2
        job = vault.jobs[0].name
        assert (await get(http, emu, f"{vault.id}/backupJobs/{job}?{API}"))[0] == 200
        # A second poll: its reads are not the first poll's.
        assert (await get(http, emu, f"{vault.id}/backupJobs?{API}&$filter={WINDOW}"))[0] == 200
        assert (await get(http, emu, f"{vault.id}/backupJobs/{job}?{API}"))[0] == 200
        vaults_url = f"/subscriptions/{vault.subscription_id}/providers/Microsoft.RecoveryServices"
        assert (await get(http, emu, f"{vaults_url}/vaults?{API}"))[0] == 200
        listed = await get(http, emu, f"{vault.id}/backupJobs?{API}&$filter={WINDOW}", other)
        assert listed[0] == 200

        log = await control(
            http, emu, "GET", "/_emulator/reads", params={"principal": STATIC_PRINCIPAL}
        )
        (row,) = log["vaults"]
        assert row["vault_id"] == vault.id
        assert row["subscription_id"] == vault.subscription_id
        assert row["served"] == 1 + pages + 1 + 2
        assert (row["before_first_poll"], row["lists"], row["pages"], row["jobs"]) == (
            1,
            2,
            pages + 1,
            2,
        )
        first = row["first_poll"]
        assert (first["reads"], first["pages"], first["jobs"]) == (pages + 1, pages, 1)
        assert first["started_at"] <= first["last_at"]
        assert log["outside_vaults"] == [
            {
                "principal": STATIC_PRINCIPAL,
                "scope": vault.subscription_id,
                "served": 1,
                "throttled_429": 0,
            }
        ]
        everyone = await control(http, emu, "GET", "/_emulator/reads")
        theirs = [r for r in everyone["vaults"] if r["principal"] == "p2"]
        assert [(r["served"], r["first_poll"]["reads"]) for r in theirs] == [(1, 1)]
        await control(http, emu, "POST", "/_emulator/stats/reset")
        assert await control(http, emu, "GET", "/_emulator/reads") == {
            "vaults": [],
            "outside_vaults": [],
        }

    async def test_read_log_counts_429s_apart(self, http: aiohttp.ClientSession) -> None:
        """A throttled GET is counted as a 429 of its vault, not as a read of its first poll."""
        settings = EmulatorSettings(
            world=WorldSettings(subscriptions=1, vaults_per_subscription=1),
            throttle=ThrottleSettings(reads_bucket=2, reads_per_s=0.01),
        )
        async with running_emulator(settings) as emu:
            vault = next(iter(emu.world.vaults.values()))
            statuses = [
                (await get(http, emu, f"{vault.id}/backupJobs?{API}&$filter={WINDOW}"))[0]
                for _ in range(3)
            ]
            assert statuses == [200, 200, 429]
            log = await control(http, emu, "GET", "/_emulator/reads")
            (row,) = log["vaults"]
            assert (row["served"], row["throttled_429"], row["lists"]) == (2, 1, 2)
            assert row["first_poll"]["reads"] == 1

    async def test_correlation_headers(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Every ARM answer has request, correlation and routing ids; the caller's id is echoed."""
        headers = {"Authorization": f"Bearer {emu.token}", "x-ms-correlation-request-id": "abc"}
        async with http.get(f"{emu.url}/subscriptions?{API}", headers=headers) as response:
            assert response.headers["x-ms-correlation-request-id"] == "abc"
            assert response.headers["x-ms-request-id"]
            assert re.fullmatch(
                r"[A-Z]+:\d{8}T\d{6}Z:[0-9a-f-]{36}", response.headers["x-ms-routing-request-id"]
            )
