"""A multi-tenant estate (`--tenants N`, `--lighthouse`) as a managed-service provider sees it.

Tokens from azure-identity's ClientSecretCredential for two tenants, over TLS to the emulator's own
authority; ARM answers each tenant only its own subscriptions (and, with Lighthouse, the delegated
ones) and a wrong tenant's token 401 `InvalidAuthenticationTokenTenant`, as real ARM does. The
same client id in two tenants is two principals with their own budgets.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from azure.identity.aio import ClientSecretCredential
from hypothesis import given
from hypothesis import strategies as st

from monitor.cli import main
from monitor.emulator import (
    PROFILES,
    Emulator,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.tenancy import (
    EXTRA_TENANT_IDS,
    MAX_TENANTS,
    Tenancy,
    principal_name,
    split_principal,
)

ARM_SCOPE = "https://management.azure.com/.default"
API = "api-version=2022-12-01"
HOME = WorldSettings().tenant_id
T1 = "00000000-0000-4000-8000-000000000001"
CLIENT = "msp-app"  # the same client id in both tenants: two service principals
WRONG_ISSUER = re.compile(
    r"^The access token is from the wrong issuer '(?P<issuer>[^']+)'\. It must match the tenant "
    r"'(?P<tenant>[^']+)' associated with this subscription\. Please use the authority \(URL\) "
    r"'(?P<authority>[^']+)' to get the token\. Note, if the subscription is transferred to "
    r"another tenant there is no impact to the services, but information about new tenant could "
    r"take time to propagate \(up to an hour\)\. If you just transferred your subscription and see "
    r"this error message, please try back later\.$"
)


def settings(*, tenants: int = 2, lighthouse: bool = False, **kw: Any) -> EmulatorSettings:
    return EmulatorSettings(
        world=WorldSettings(
            seed=5,
            subscriptions=4,
            vaults_per_subscription=1,
            profile=dataclasses.replace(PROFILES["demo"], history_s=120.0),
            **kw,
        ),
        tenants=tenants,
        lighthouse=lighthouse,
    )


@pytest.fixture(name="http")
def _http(tls_http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    return tls_http


async def sdk_token(emu: Emulator, tenant: str, ca_pem_path: str, client_id: str = CLIENT) -> str:
    """A token from azure-identity's ClientSecretCredential for `tenant` at the emulator."""
    async with ClientSecretCredential(
        tenant,
        client_id,
        emu.arm.settings.client_secret,
        authority=emu.url,
        connection_verify=ca_pem_path,
    ) as credential:
        with anyio.fail_after(10):
            return (await credential.get_token(ARM_SCOPE)).token


async def get(http: aiohttp.ClientSession, emu: Emulator, path: str, token: str) -> Any:
    async with http.get(
        f"{emu.url}{path}", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        body = await response.json(content_type=None)
        return response.status, response.headers, body


async def tenants(http: aiohttp.ClientSession, emu: Emulator) -> list[dict[str, Any]]:
    async with http.get(f"{emu.url}/_emulator/tenants") as response:
        assert response.status == 200
        rows: list[dict[str, Any]] = (await response.json())["tenants"]
        return rows


def subs_of(emu: Emulator, k: int, n: int) -> list[str]:
    return [s for i, s in enumerate(emu.world.subscriptions) if i % n == k]


# --------------------------------------------------------------------------- the pure mapping


@given(
    n=st.integers(1, MAX_TENANTS),
    count=st.integers(0, 30),
    lighthouse=st.booleans(),
)
def test_tenancy_partitions_subscriptions_round_robin(n: int, count: int, lighthouse: bool) -> None:
    """Subscription i is tenant i % N's; each tenant sees its own plus, under Lighthouse, tenant 0
    sees every one; the tenants endpoint's rows partition the subscriptions."""
    subs = {f"SUB-{i:03d}": object() for i in range(count)}
    tenancy = Tenancy(HOME, n, lighthouse, subs)
    ids = (HOME, *EXTRA_TENANT_IDS[: n - 1])
    assert tenancy.tenant_ids == ids
    for i, sub in enumerate(subs):
        home = ids[i % n]
        assert tenancy.home_of(sub) == tenancy.home_of(sub.lower()) == home
        delegated = (HOME,) if lighthouse and home != HOME else ()
        assert tenancy.delegated_to(sub) == delegated
        for t in ids:
            assert tenancy.may_read(t, sub) == (t == home or t in delegated or n == 1)
    rows = tenancy.as_json()["tenants"]
    assert isinstance(rows, list)
    assert [r["tenant_id"] for r in rows] == list(ids)
    assert sorted(s for r in rows for s in r["subscriptions"]) == sorted(subs)
    for t in ids:
        visible = tenancy.visible(t)
        expected = frozenset(s.lower() for s in subs if tenancy.may_read(t, s))
        assert visible == (None if n == 1 else expected)


@given(client=st.text(min_size=1).filter(lambda s: "@" not in s), k=st.integers(0, 7))
def test_principal_names_round_trip(client: str, k: int) -> None:
    """A principal is its client id in tenant 0 and `client@tenant` elsewhere, and splits back."""
    tenant = (HOME, *EXTRA_TENANT_IDS)[k]
    name = principal_name(client, tenant, HOME)
    assert (name == client) == (k == 0)
    assert split_principal(name, HOME) == (client, tenant)


def test_tenant_count_is_bounded() -> None:
    for n in (0, MAX_TENANTS + 1):
        with pytest.raises(ValueError, match="between 1 and 8"):
            Tenancy(HOME, n, False, {})


def test_extra_tenant_ids_are_fixed() -> None:
    assert tuple(f"00000000-0000-4000-8000-00000000000{k}" for k in range(1, 8)) == EXTRA_TENANT_IDS


# --------------------------------------------------------------------------- over HTTP


class TestTwoTenants:
    async def test_each_tenant_reads_its_own_and_is_refused_the_other(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        http: aiohttp.ClientSession,
    ) -> None:
        """A tenant-1 token reads tenant 1's subscription (200) and gets 401
        InvalidAuthenticationTokenTenant for tenant 0's, naming the right authority."""
        async with running_emulator(settings(), ssl_context=server_ssl_context) as emu:
            token0 = await sdk_token(emu, HOME, ca_pem_path)
            token1 = await sdk_token(emu, T1, ca_pem_path)
            own0, own1 = subs_of(emu, 0, 2)[0], subs_of(emu, 1, 2)[0]
            for token, own, other, other_tenant, me in (
                (token1, own1, own0, HOME, T1),
                (token0, own0, own1, T1, HOME),
            ):
                status, _, body = await get(http, emu, f"/subscriptions/{own}?{API}", token)
                assert status == 200, body
                assert body["tenantId"] == body["homeTenantId"] == me
                vaults = f"/subscriptions/{own}/providers/Microsoft.RecoveryServices/vaults?{API}"
                assert (await get(http, emu, vaults, token))[0] == 200
                for path in (
                    f"/subscriptions/{other}?{API}",
                    f"/subscriptions/{other}/providers/Microsoft.RecoveryServices/vaults?{API}",
                ):
                    status, headers, body = await get(http, emu, path, token)
                    assert status == 401
                    assert body["error"]["code"] == "InvalidAuthenticationTokenTenant"
                    m = WRONG_ISSUER.fullmatch(body["error"]["message"])
                    assert m is not None, body["error"]["message"]
                    assert m["issuer"] == f"{emu.url}/{me}/"
                    assert m["tenant"] == f"{emu.url}/{other_tenant}/"
                    assert m["authority"] == f"{emu.url}/{other_tenant}"
                    assert headers["WWW-Authenticate"] == (
                        f'Bearer authorization_uri="{emu.url}/{other_tenant}", '
                        'error="invalid_token", '
                        'error_description="The access token is from the wrong issuer."'
                    )
            # An unknown subscription is still a 404, whatever the tenant.
            status, _, body = await get(
                http, emu, f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}?{API}", token1
            )
            assert (status, body["error"]["code"]) == (404, "SubscriptionNotFound")

    async def test_listing_is_per_tenant_and_matches_the_tenants_endpoint(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        http: aiohttp.ClientSession,
    ) -> None:
        """Without Lighthouse each tenant lists exactly its subscriptions, none managed by
        another; /_emulator/tenants says the same."""
        async with running_emulator(settings(), ssl_context=server_ssl_context) as emu:
            rows = await tenants(http, emu)
            assert [r["tenant_id"] for r in rows] == list(emu.tenant_ids) == [HOME, T1]
            assert all(r["delegated_to"] == [] for r in rows)
            for k, row in enumerate(rows):
                assert row["subscriptions"] == subs_of(emu, k, 2)
                token = await sdk_token(emu, row["tenant_id"], ca_pem_path)
                status, _, body = await get(http, emu, f"/subscriptions?{API}", token)
                assert status == 200
                listed = body["value"]
                assert sorted(s["subscriptionId"] for s in listed) == sorted(row["subscriptions"])
                assert {s["tenantId"] for s in listed} == {row["tenant_id"]}
                assert {s["homeTenantId"] for s in listed} == {row["tenant_id"]}
                assert all(s["managedByTenants"] == [] for s in listed)

    async def test_lighthouse_delegates_every_customer_subscription_to_tenant_0(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        http: aiohttp.ClientSession,
    ) -> None:
        """With Lighthouse and three tenants, tenant 0's one credential lists and reads every
        subscription; the customers' carry managedByTenants [tenant 0] and their home tenant; a
        customer still reads only its own."""
        async with running_emulator(
            settings(tenants=3, lighthouse=True), ssl_context=server_ssl_context
        ) as emu:
            rows = await tenants(http, emu)
            t2 = EXTRA_TENANT_IDS[1]
            assert [r["tenant_id"] for r in rows] == [HOME, T1, t2]
            assert [r["delegated_to"] for r in rows] == [[], [HOME], [HOME]]
            home_of = {s: r["tenant_id"] for r in rows for s in r["subscriptions"]}
            token0 = await sdk_token(emu, HOME, ca_pem_path)
            status, _, body = await get(http, emu, f"/subscriptions?{API}", token0)
            assert status == 200
            listed = {s["subscriptionId"]: s for s in body["value"]}
            assert set(listed) == set(emu.world.subscriptions)
            for sub_id, row in listed.items():
                assert row["tenantId"] == row["homeTenantId"] == home_of[sub_id]
                managed = [] if home_of[sub_id] == HOME else [{"tenantId": HOME}]
                assert row["managedByTenants"] == managed
                status, _, one = await get(http, emu, f"/subscriptions/{sub_id}?{API}", token0)
                assert (status, one) == (200, row)
                vaults = f"/subscriptions/{sub_id}/providers/Microsoft.RecoveryServices/vaults"
                assert (await get(http, emu, f"{vaults}?{API}", token0))[0] == 200
            token2 = await sdk_token(emu, t2, ca_pem_path)
            status, _, body = await get(http, emu, f"/subscriptions?{API}", token2)
            assert sorted(s["subscriptionId"] for s in body["value"]) == sorted(
                rows[2]["subscriptions"]
            )
            assert all(s["managedByTenants"] == [{"tenantId": HOME}] for s in body["value"])
            status, _, body = await get(
                http, emu, f"/subscriptions/{rows[1]['subscriptions'][0]}?{API}", token2
            )
            assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationTokenTenant")


class TestTokens:
    async def test_token_endpoint_knows_the_tenants(
        self, server_ssl_context: ssl.SSLContext, http: aiohttp.ClientSession
    ) -> None:
        """`organizations` is tenant 0; a tenant beyond N is AADSTS90002; minted tokens take an
        optional tenant_id, and the static token is tenant 0's."""
        form = {
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": "emulator-secret",
            "scope": ARM_SCOPE,
        }
        async with running_emulator(settings(), ssl_context=server_ssl_context) as emu:
            sub1 = subs_of(emu, 1, 2)[0]
            async with http.post(f"{emu.url}/organizations/oauth2/v2.0/token", data=form) as r:
                assert r.status == 200
                token = (await r.json())["access_token"]
            assert (await get(http, emu, f"/subscriptions/{sub1}?{API}", token))[0] == 401
            assert (await get(http, emu, f"/subscriptions/{sub1}?{API}", emu.token))[0] == 401
            t2 = EXTRA_TENANT_IDS[1]
            async with http.post(f"{emu.url}/{t2}/oauth2/v2.0/token", data=form) as r:
                assert r.status == 400
                assert "AADSTS90002" in (await r.json())["error_description"]
            async with http.post(
                f"{emu.url}/_emulator/tokens", json={"principal": "minted", "tenant_id": T1}
            ) as r:
                assert r.status == 200
                minted = await r.json()
            assert minted["tenant_id"] == T1
            assert minted["arm_principal"] == f"minted@{T1}"
            assert (await get(http, emu, f"/subscriptions/{sub1}?{API}", minted["token"]))[0] == 200
            async with http.post(
                f"{emu.url}/_emulator/tokens", json={"principal": "x", "tenant_id": t2}
            ) as r:
                assert r.status == 400

    async def test_one_tenant_is_as_before(
        self, http: aiohttp.ClientSession, server_ssl_context: ssl.SSLContext
    ) -> None:
        """N = 1: one tenant holding every subscription, tenant 1's id unknown to AAD."""
        async with running_emulator(settings(tenants=1), ssl_context=server_ssl_context) as emu:
            assert await tenants(http, emu) == [
                {
                    "tenant_id": HOME,
                    "subscriptions": list(emu.world.subscriptions),
                    "delegated_to": [],
                }
            ]
            async with http.post(
                f"{emu.url}/{T1}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "a",
                    "client_secret": "emulator-secret",
                },
            ) as r:
                assert r.status == 400
            async with http.post(f"{emu.url}/_emulator/tokens", json={"principal": "m"}) as r:
                minted = await r.json()
            assert set(minted) == {"token", "principal"}
            assert (await get(http, emu, f"/subscriptions?{API}", minted["token"]))[0] == 200


class TestBudgets:
    async def test_same_client_id_in_two_tenants_has_two_budgets(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        http: aiohttp.ClientSession,
    ) -> None:
        """Under Lighthouse tenant 0's and tenant 1's principals of one client id both read a
        tenant-1 subscription: emptying one's bucket leaves the other's full (the global one is
        15x); tenant-scoped reads have a bucket per (principal, tenant) and their 429 names the
        token's tenant; the read log tells the two principals apart."""
        emu_settings = dataclasses.replace(
            settings(lighthouse=True),
            throttle=ThrottleSettings(reads_bucket=5, reads_per_s=0.001),
        )
        async with running_emulator(emu_settings, ssl_context=server_ssl_context) as emu:
            token0 = await sdk_token(emu, HOME, ca_pem_path)
            token1 = await sdk_token(emu, T1, ca_pem_path)
            sub1 = subs_of(emu, 1, 2)[0]
            path = f"/subscriptions/{sub1}/providers/Microsoft.RecoveryServices/vaults?{API}"
            statuses0 = [(await get(http, emu, path, token0))[0] for _ in range(6)]
            assert statuses0 == [200] * 5 + [429]
            status, headers, body = await get(http, emu, path, token0)
            assert body["error"]["code"] == "SubscriptionRequestsThrottled"
            assert f"actor '{CLIENT}'" in body["error"]["message"]
            statuses1 = []
            for _ in range(6):
                status, headers, body = await get(http, emu, path, token1)
                statuses1.append(status)
            assert statuses1 == [200] * 5 + [429]
            assert f"actor '{CLIENT}@{T1}'" in body["error"]["message"]
            # Tenant scope: tenant 1's principal empties its tenant bucket, tenant 0's is untouched.
            for _ in range(5):
                assert (await get(http, emu, f"/subscriptions?{API}", token1))[0] == 200
            status, headers, body = await get(http, emu, f"/subscriptions?{API}", token1)
            assert (status, body["error"]["code"]) == (429, "TenantRequestsThrottled")
            assert f"tenant '{T1}' actor '{CLIENT}@{T1}'" in body["error"]["message"]
            status, headers, _ = await get(http, emu, f"/subscriptions?{API}", token0)
            assert status == 200
            assert headers["x-ms-ratelimit-remaining-tenant-reads"] == "4"
            # The read log: one row per principal, told apart by tenant.
            for principal, tenant in ((CLIENT, HOME), (f"{CLIENT}@{T1}", T1)):
                async with http.get(
                    f"{emu.url}/_emulator/reads", params={"principal": principal}
                ) as r:
                    log = await r.json()
                outside = {o["scope"]: o for o in log["outside_vaults"]}
                assert outside[sub1]["served"] == 5
                assert outside[sub1]["throttled_429"] == (2 if principal == CLIENT else 1)
                assert outside[sub1]["tenant_id"] == tenant
                async with http.get(f"{emu.url}/_emulator/reads", params={"tenant": tenant}) as r:
                    by_tenant = await r.json()
                assert {o["principal"] for o in by_tenant["outside_vaults"]} == {principal}


class TestResourceGraph:
    async def test_queries_see_only_the_tokens_tenant(
        self,
        server_ssl_context: ssl.SSLContext,
        ca_pem_path: str,
        http: aiohttp.ClientSession,
    ) -> None:
        """An ARG query from tenant 1 returns only tenant 1's Backup vault jobs, even when it
        names tenant 0's subscriptions too; with Lighthouse tenant 0 sees every one."""
        query = (
            "RecoveryServicesResources\n"
            "| where type =~ 'microsoft.dataprotection/backupvaults/backupjobs'\n"
            "| project id, name, type, properties\n"
            "| order by id asc"
        )
        async with running_emulator(
            settings(lighthouse=True, backup_vaults_per_subscription=1),
            ssl_context=server_ssl_context,
        ) as emu:
            token0 = await sdk_token(emu, HOME, ca_pem_path)
            token1 = await sdk_token(emu, T1, ca_pem_path)
            url = f"{emu.url}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"
            seen: dict[str, set[str]] = {}
            for name, token, body in (
                ("t1", token1, {"query": query}),
                (
                    "t1-all",
                    token1,
                    {"query": query, "subscriptions": list(emu.world.subscriptions)},
                ),
                ("t0", token0, {"query": query}),
            ):
                async with http.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    assert r.status == 200
                    answer = await r.json()
                assert answer["count"] > 0
                seen[name] = {row["id"].split("/")[2].lower() for row in answer["data"]}
            t1_subs = {s.lower() for s in subs_of(emu, 1, 2)}
            assert seen["t1"] == seen["t1-all"] == t1_subs
            assert seen["t0"] == {s.lower() for s in emu.world.subscriptions}


# --------------------------------------------------------------------------- the command


@pytest.fixture
def three_tenant_emulator() -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "monitor", "emulator", "--port", "0"),
            *("--subscriptions", "3", "--vaults-per-subscription", "1"),
            *("--tenants", "3", "--lighthouse"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        yield orjson.loads(process.stdout.readline())
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


async def test_tenants_and_lighthouse_flags(three_tenant_emulator: dict[str, str]) -> None:
    """`--tenants 3 --lighthouse`: one subscription each, tenants 1 and 2 delegated to 0."""
    url = three_tenant_emulator["url"]
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_emulator/tenants") as r:
        body = await r.json()
    assert body["lighthouse"] is True
    assert [
        (t["tenant_id"], len(t["subscriptions"]), t["delegated_to"]) for t in body["tenants"]
    ] == [
        (three_tenant_emulator["tenant_id"], 1, []),
        (EXTRA_TENANT_IDS[0], 1, [HOME]),
        (EXTRA_TENANT_IDS[1], 1, [HOME]),
    ]


@pytest.mark.parametrize("value", ["0", "9", "two"])
def test_bad_tenants_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["emulator", "--tenants", value])
    assert exit_info.value.code == 2
    assert "--tenants" in capsys.readouterr().err
