"""ArmClient against the emulator over real sockets: paging, auth, errors, origins, pacing, TLS."""

from __future__ import annotations

import ast
import asyncio.sslproto
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import anyio
import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from yarl import URL

import monitor.arm
import monitor.arm_answers
import monitor.arm_http
import monitor.arm_paging
from monitor.arm import ArmClient
from monitor.arm_http import (
    BodyCap,
    Origin,
    Sender,
    arm_origin,
    make_ssl_context,
    open_session,
    request_id,
)
from monitor.arm_observer import ArmCallKind, ArmObserver
from monitor.clock import SystemClock
from monitor.config import AzureSettings, BudgetSettings
from monitor.core.ids import check_path_segment
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.credentials import StaticTokenCredential, TokenCache, build_credential
from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.estate import Vault
from monitor.errors import (
    ArmAuthError,
    ArmError,
    ArmForbidden,
    ArmNotFound,
    ArmServerError,
    ArmThrottled,
    ArmTransportError,
    ConfigError,
    ForeignOriginError,
    ParseError,
)
from monitor.metrics import Metrics
from monitor.pacing import BudgetBook
from tests.core.strategies import segment_text
from tests.fakes import CountingCredential
from tests.test_credentials import SCOPE

PAGE_SIZE = 2
SETTINGS = EmulatorSettings(
    world=WorldSettings(seed=5, subscriptions=2, vaults_per_subscription=3),
    page_size=PAGE_SIZE,
    vault_page_size=2,
)


@dataclass
class Harness:
    """A client wired to an emulator, and what its session sent."""

    emu: Emulator
    client: ArmClient
    budgets: BudgetBook
    control: aiohttp.ClientSession
    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.control.post(self.emu.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def put_faults(self, **rates: float) -> None:
        async with self.control.put(self.emu.url + "/_emulator/faults", json=rates) as response:
            assert response.status == 200, await response.text()

    async def stats(self) -> Any:
        async with self.control.get(self.emu.url + "/_emulator/stats") as response:
            return await response.json()

    def vault(self, pick: Callable[[Vault], Any] = lambda v: len(v.jobs)) -> VaultRef:
        """The live vault that maximises `pick` (by default the one with the most jobs)."""
        world_vault = max((v for v in self.emu.world.vaults.values() if not v.deleted), key=pick)
        return parse_vault_id(world_vault.id, location=world_vault.location)


def _tracing(sent: list[tuple[str, dict[str, str]]]) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def on_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        sent.append((str(params.url), dict(params.headers)))

    trace.on_request_start.append(on_start)
    return trace


@asynccontextmanager
async def harness(
    ca_pem_path: str,
    server_ssl_context: ssl.SSLContext,
    *,
    settings: EmulatorSettings = SETTINGS,
    budget: BudgetSettings | None = None,
    credential: Any = None,
    ca_bundle: Path | bool | None = True,
    arm_endpoint: Callable[[Emulator], str] = lambda emu: emu.url + "/",
    observer: ArmObserver | None = None,
) -> AsyncIterator[Harness]:
    """An emulator over TLS and an ArmClient trusting its CA (unless `ca_bundle` says otherwise)."""
    bundle = Path(ca_pem_path) if ca_bundle is True else (ca_bundle or None)
    clock = SystemClock()
    control_ssl = ssl.create_default_context(cafile=ca_pem_path)
    async with (
        running_emulator(settings, ssl_context=server_ssl_context) as emu,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=control_ssl)) as control,
    ):
        azure = AzureSettings(
            arm_endpoint=arm_endpoint(emu),
            credential="static",
            static_token=emu.token,
            ca_bundle=bundle,
            request_timeout_s=5.0,
        )
        sent: list[tuple[str, dict[str, str]]] = []
        budgets = BudgetBook(budget or BudgetSettings(), clock=clock, rng=random.Random(3))
        async with open_session(
            azure, make_ssl_context(bundle), trace_configs=[_tracing(sent)]
        ) as session:
            tokens = TokenCache(credential or StaticTokenCredential(emu.token), SCOPE, clock)
            client = ArmClient(
                session=session,
                tokens=tokens,
                azure=azure,
                budgets=budgets,
                clock=clock,
                rng=random.Random(4),
                observer=observer,
            )
            yield Harness(emu=emu, client=client, budgets=budgets, control=control, sent=sent)


@pytest.fixture(name="h")
async def _h(ca_pem_path: str, server_ssl_context: ssl.SSLContext) -> AsyncIterator[Harness]:
    async with harness(ca_pem_path, server_ssl_context) as h:
        yield h


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """Neither the message nor the repr of `error` contains any of `secrets`."""
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(error)


def window(emu: Emulator) -> tuple[datetime, datetime]:
    """A one-hour window that ended two seconds ago, on whole seconds: its jobs cannot change."""
    end = (emu.world.now - timedelta(seconds=2)).replace(microsecond=0)
    return end - timedelta(hours=1), end


class TestDiscovery:
    async def test_list_subscriptions(self, h: Harness) -> None:
        """Every enabled subscription, lower-cased, read on the tenant budget."""
        with anyio.fail_after(5):
            subscriptions = await h.client.list_subscriptions()
        assert sorted(s.id for s in subscriptions) == sorted(
            s.lower() for s in h.emu.world.subscriptions
        )
        assert {s.tenant_id for s in subscriptions} == {h.emu.world.tenant_id}
        stats = await h.stats()
        assert stats["by_scope"]["tenant"]["requests"] == 1

    async def test_list_vaults_pages_through_every_vault(self, h: Harness) -> None:
        """Three vaults at two per page come back complete, with their locations."""
        sub = next(iter(h.emu.world.subscriptions.values()))
        with anyio.fail_after(5):
            vaults = await h.client.list_vaults(sub.id)
        assert {(v.key, v.location) for v in vaults} == {
            (v.key, v.location) for v in sub.vaults.values()
        }
        assert len(h.sent) == 2

    async def test_get_vault(self, h: Harness) -> None:
        """A vault read by id learns its location."""
        wanted = h.vault()
        with anyio.fail_after(5):
            got = await h.client.get_vault(
                wanted.id.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")
            )
        assert got.key == wanted.key
        assert got.location == wanted.location

    async def test_deleted_vault_is_not_found(self, h: Harness) -> None:
        """A vault deleted from the world is ArmNotFound, with ARM's code and request id."""
        vault = h.vault()
        async with h.control.delete(h.emu.url + "/_emulator/vaults", params={"id": vault.id}):
            pass
        start, end = window(h.emu)
        with anyio.fail_after(5), pytest.raises(ArmNotFound) as caught:
            await h.client.list_jobs(vault, start, end)
        assert caught.value.status == 404
        assert caught.value.code == "ResourceNotFound"
        assert caught.value.request_id
        with pytest.raises(ArmNotFound):
            await h.client.get_vault(vault.id)
        assert_no_secret(caught.value, h.emu.token)

    async def test_forbidden_vault(self, h: Harness) -> None:
        """A vault the identity may not read is ArmForbidden; other vaults still work."""
        vault = h.vault()
        other = h.vault(lambda v: (v.key != vault.key, len(v.jobs)))
        await h.post("/_emulator/vaults/forbid", {"id": vault.id, "forbidden": True})
        start, end = window(h.emu)
        with anyio.fail_after(5), pytest.raises(ArmForbidden) as caught:
            await h.client.list_jobs(vault, start, end)
        assert caught.value.code == "AuthorizationFailed"
        assert caught.value.correlation_id
        with anyio.fail_after(5):
            await h.client.list_jobs(other, start, end)


class TestRequestId:
    @given(st.integers(0, 2**128 - 1))
    def test_request_id_is_the_uuid4_of_its_bits(self, bits: int) -> None:
        """`request_id` formats 128 random bits exactly as `uuid.UUID(int=…, version=4)`."""
        assert request_id(bits) == str(uuid.UUID(int=bits, version=4))


class TestJobs:
    async def test_paging_returns_exactly_the_window(self, h: Harness) -> None:
        """Following ARM's nextLinks verbatim yields each job of the window exactly once."""
        vault = h.vault()
        start, end = window(h.emu)
        with anyio.fail_after(10):
            jobs = await h.client.list_jobs(vault, start, end)
        world_vault = h.emu.world.vaults[vault.key]
        expected = {j.name for j in world_vault.jobs if start <= j.start_at <= end}
        names = [j.name for j in jobs]
        assert len(names) == len(set(names)), "a job came back twice"
        assert set(names) == expected
        assert len(expected) > 2 * PAGE_SIZE, "the world is too small to need several pages"
        urls = [url for url, _ in h.sent]
        assert len(urls) == -(-len(expected) // PAGE_SIZE)
        first, *rest = urls
        assert "%24filter=" not in first
        assert "$filter=startTime%20eq%20%27" in first
        assert all("api-version=2017-07-01" in url and "%24skiptoken=" in url for url in rest)

    async def test_requests_carry_client_request_ids(self, h: Harness) -> None:
        """Each request has its own uuid4 x-ms-client-request-id and asks for it back."""
        start, end = window(h.emu)
        await h.client.list_jobs(h.vault(), start, end)
        ids = [headers["x-ms-client-request-id"] for _, headers in h.sent]
        assert len(set(ids)) == len(ids) > 1
        assert all(uuid.UUID(i).version == 4 for i in ids)
        assert all(headers["x-ms-return-client-request-id"] == "true" for _, headers in h.sent)

    async def test_get_job_details(self, h: Harness) -> None:
        """A finished job's details come back parsed; an unknown job is ArmNotFound."""
        vault = h.vault()
        world_vault = h.emu.world.vaults[vault.key]
        finished = next(j for j in world_vault.jobs if j.end_at is not None)
        with anyio.fail_after(5):
            details = await h.client.get_job(vault, finished.name)
        assert details.job.name == finished.name
        assert details.job.status.is_terminal
        with pytest.raises(ArmNotFound) as caught:
            await h.client.get_job(vault, str(uuid.UUID(int=7)))
        assert caught.value.code == "BMSUserErrorJobNotFound"

    async def test_unsafe_names_are_refused_before_sending(self, h: Harness) -> None:
        """A job name or subscription id that is not one safe path segment is a ParseError
        (not a ValueError that would escape a poll), and nothing is sent."""
        vault = h.vault()
        for name in ("evil/name", "..", "a?b", "../../../../etc/passwd", ""):
            with pytest.raises(ParseError, match="job name"):
                await h.client.get_job(vault, name)
        for sub in ("../../x", "abc", ""):
            with pytest.raises(ParseError, match="subscription id must be a GUID"):
                await h.client.list_vaults(sub)
        assert h.sent == []


class TestAuthentication:
    async def test_expired_token_is_refreshed_once(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """A 401 forces one token refresh and one retry, which succeeds."""
        credential = CountingCredential()
        async with harness(ca_pem_path, server_ssl_context, credential=credential) as h:
            minted = await h.post("/_emulator/tokens", {"principal": "app", "lifetime_s": -60})
            credential.tokens = [minted["token"], h.emu.token]
            with capture_logs() as logs, anyio.fail_after(5):
                subscriptions = await h.client.list_subscriptions()
        assert subscriptions
        assert credential.calls == 2
        assert len(h.sent) == 2
        (rejected,) = [e for e in logs if e["event"].startswith("arm.")]
        assert rejected["event"] == "arm.token_rejected"
        assert rejected["code"] == "ExpiredAuthenticationToken"

    async def test_bad_token_gives_up_after_two_attempts(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """A credential that keeps giving rejected tokens: ArmAuthError after exactly 2 tries."""
        credential = CountingCredential("emu1.e30.AAAA")
        async with harness(ca_pem_path, server_ssl_context, credential=credential) as h:
            with anyio.fail_after(5), pytest.raises(ArmAuthError) as caught:
                await h.client.list_vaults(next(iter(h.emu.world.subscriptions)))
        assert credential.calls == 2
        assert len(h.sent) == 2
        assert caught.value.status == 401
        assert caught.value.code == "InvalidAuthenticationToken"
        assert_no_secret(caught.value, "emu1.e30.AAAA")

    async def test_client_secret_credential_from_settings(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """build_credential's client-secret credential drives the client over TLS end to end."""
        async with harness(ca_pem_path, server_ssl_context) as h:
            secret = h.emu.arm.settings.client_secret
            azure = AzureSettings(
                arm_endpoint=h.emu.url + "/",
                authority=h.emu.url,
                credential="client_secret",
                tenant_id=h.emu.tenant_id,
                client_id="5f0e5c2a-1d3b-4c8e-9a7f-2b6d4e8f0a1c",
                client_secret=secret,
                ca_bundle=Path(ca_pem_path),
            )
            clock = SystemClock()
            async with (
                build_credential(azure) as credential,
                open_session(azure, make_ssl_context(azure.ca_bundle)) as session,
            ):
                tokens = TokenCache(credential, SCOPE, clock)
                client = ArmClient(
                    session=session,
                    tokens=tokens,
                    azure=azure,
                    budgets=BudgetBook(BudgetSettings(), clock=clock, rng=random.Random(1)),
                    clock=clock,
                    rng=random.Random(2),
                )
                with anyio.fail_after(10):
                    subscriptions = await client.list_subscriptions()
                token = await tokens.token()
            assert sorted(s.id for s in subscriptions) == sorted(
                s.lower() for s in h.emu.world.subscriptions
            )
            for text in (repr(client), repr(tokens), repr(credential)):
                assert secret not in text
                assert token not in text

    async def test_expired_token_fault_everywhere(self, h: Harness) -> None:
        """When ARM rejects every token, the error carries the code and request id."""
        await h.put_faults(expired_token=1.0)
        with anyio.fail_after(5), pytest.raises(ArmAuthError) as caught:
            await h.client.get_vault(h.vault().id)
        assert caught.value.code == "ExpiredAuthenticationToken"
        assert caught.value.request_id
        assert_no_secret(caught.value, h.emu.token)


class TestFaults:
    async def test_server_error(self, h: Harness) -> None:
        """A 5xx is ArmServerError with its status, ARM code and request id."""
        await h.put_faults(server_error=1.0)
        with anyio.fail_after(5), pytest.raises(ArmServerError) as caught:
            await h.client.list_subscriptions()
        error = caught.value
        assert error.status in (500, 503, 504)
        assert error.code in ("InternalServerError", "ServiceUnavailable", "GatewayTimeout")
        assert error.request_id
        assert error.request_id in str(error)
        assert_no_secret(error, h.emu.token)

    async def test_dropped_connection(self, h: Harness) -> None:
        """A connection closed without an answer is ArmTransportError with no status."""
        await h.put_faults(drop=1.0)
        with anyio.fail_after(5), pytest.raises(ArmTransportError) as caught:
            await h.client.list_subscriptions()
        assert caught.value.status is None
        assert caught.value.request_id is None
        assert isinstance(caught.value.__cause__, aiohttp.ClientError)
        assert_no_secret(caught.value, h.emu.token)

    async def test_truncated_body(self, h: Harness) -> None:
        """A body cut short of its Content-Length is ArmTransportError with the request id."""
        await h.put_faults(truncate=1.0)
        with anyio.fail_after(5), pytest.raises(ArmTransportError, match="broke off") as caught:
            await h.client.list_subscriptions()
        assert caught.value.status == 200
        assert caught.value.request_id
        assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)

    async def test_malformed_body(self, h: Harness) -> None:
        """A 200 whose body is an HTML page is ArmTransportError with the request id."""
        await h.put_faults(malformed=1.0)
        start, end = window(h.emu)
        with anyio.fail_after(5), pytest.raises(ArmTransportError, match="not JSON") as caught:
            await h.client.list_jobs(h.vault(), start, end)
        assert caught.value.status == 200
        assert caught.value.request_id
        assert caught.value.request_id in str(caught.value)
        assert_no_secret(caught.value, h.emu.token)


class TestOrigin:
    async def test_foreign_next_link_is_refused_before_sending(self, h: Harness) -> None:
        """A nextLink on another origin raises ForeignOriginError; the token never goes there."""
        await h.put_faults(foreign_next_link=1.0)
        start, end = window(h.emu)
        with anyio.fail_after(5), pytest.raises(ForeignOriginError) as caught:
            await h.client.list_jobs(h.vault(), start, end)
        message = str(caught.value)
        assert arm_origin(h.emu.foreign_url) in message
        assert arm_origin(h.emu.url) in message
        stats = await h.stats()
        assert stats["foreign_origin"]["tokens_received"] == 0
        assert stats["foreign_origin"]["requests"] == 0
        assert len(h.sent) == 1
        assert_no_secret(caught.value, h.emu.token)

    async def test_another_host_name_for_the_same_address_is_foreign(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """Configured as https://localhost, a nextLink on https://127.0.0.1 is refused."""
        async with harness(
            ca_pem_path,
            server_ssl_context,
            arm_endpoint=lambda emu: emu.url.replace("127.0.0.1", "LocalHost") + "/",
        ) as h:
            start, end = window(h.emu)
            with anyio.fail_after(5), pytest.raises(ForeignOriginError):
                await h.client.list_jobs(h.vault(), start, end)
            assert len(h.sent) == 1

    @pytest.mark.parametrize(
        ("a", "b", "same"),
        [
            ("https://management.azure.com:443/", "https://management.azure.com", True),
            ("https://Management.Azure.COM/x?y=1", "https://management.azure.com/", True),
            ("https://management.azure.com/", "http://management.azure.com/", False),
            ("https://management.azure.com/", "https://management.azure.com:8443/", False),
            ("https://management.azure.com/", "https://management.azure.com.evil.example/", False),
            ("http://127.0.0.1:80/", "http://127.0.0.1/", True),
        ],
    )
    def test_origin_comparison(self, a: str, b: str, same: bool) -> None:
        """Origins compare by scheme, case-insensitive host and effective port."""
        assert (arm_origin(a) == arm_origin(b)) is same

    def test_plain_http_off_loopback_is_refused(self) -> None:
        """An http endpoint that is not loopback (or not allowed) fails at construction."""
        for azure in (
            AzureSettings(arm_endpoint="http://management.azure.com/", allow_http_loopback=True),
            AzureSettings(arm_endpoint="http://127.0.0.1:9/", allow_http_loopback=False),
        ):
            with pytest.raises(ConfigError, match=r"azure\.arm_endpoint"):
                ArmClient(
                    session=None,  # type: ignore[arg-type]  # never touched: nothing is sent
                    tokens=None,  # type: ignore[arg-type]
                    azure=azure,
                    budgets=BudgetBook(BudgetSettings(), clock=SystemClock(), rng=random.Random()),
                    clock=SystemClock(),
                    rng=random.Random(),
                )

    async def test_plain_http_to_loopback_when_allowed(self) -> None:
        """With allow_http_loopback, a plain-http emulator on 127.0.0.1 works."""
        clock = SystemClock()
        async with running_emulator(SETTINGS) as emu:
            azure = AzureSettings(
                arm_endpoint=emu.url + "/",
                allow_http_loopback=True,
                credential="static",
                static_token=emu.token,
            )
            async with open_session(azure, make_ssl_context(None)) as session:
                client = ArmClient(
                    session=session,
                    tokens=TokenCache(StaticTokenCredential(emu.token), SCOPE, clock),
                    azure=azure,
                    budgets=BudgetBook(BudgetSettings(), clock=clock, rng=random.Random()),
                    clock=clock,
                    rng=random.Random(),
                )
                with anyio.fail_after(5):
                    assert await client.list_subscriptions()


class TestTls:
    async def test_system_store_does_not_trust_the_test_ca(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """Without the CA bundle the emulator's certificate is refused, and the error says so."""
        async with harness(ca_pem_path, server_ssl_context, ca_bundle=False) as h:
            with anyio.fail_after(5), pytest.raises(ArmTransportError) as caught:
                await h.client.list_subscriptions()
        assert "certificate" in str(caught.value)
        assert "azure.ca_bundle" in str(caught.value)

    async def test_a_tls_connection_reads_a_long_answer_through_a_small_buffer(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """open_session caps each TLS connection's read buffer (asyncio's 256 KiB per
        connection was 25 MiB at the scale point); an answer 12 times longer than the buffer
        still arrives whole, over one kept-alive connection."""
        body = bytes(range(256)) * (12 * monitor.arm_http.TLS_READ_BUFFER_BYTES // 256)

        async def answer(request: web.Request) -> web.Response:
            return web.Response(body=body)

        app = web.Application()
        app.router.add_get("/long", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context)
        await site.start()
        try:
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            azure = AzureSettings(
                arm_endpoint=f"https://127.0.0.1:{port}/",
                credential="static",
                static_token="t",
                ca_bundle=Path(ca_pem_path),
            )
            async with open_session(azure, make_ssl_context(azure.ca_bundle)) as session:
                for _ in range(2):
                    with anyio.fail_after(10):
                        async with session.get(f"https://127.0.0.1:{port}/long") as reply:
                            protocol = reply.connection.transport._ssl_protocol  # type: ignore[union-attr]
                            buffer = len(protocol._ssl_buffer)
                            assert await reply.read() == body
                    assert buffer <= monitor.arm_http.TLS_READ_BUFFER_BYTES
        finally:
            await runner.cleanup()
        assert asyncio.sslproto.SSLProtocol.max_size == monitor.arm_http.TLS_READ_BUFFER_BYTES

    def test_unreadable_ca_bundle(self, tmp_path: Path) -> None:
        """A CA bundle that is not PEM is a ConfigError naming azure.ca_bundle."""
        bad = tmp_path / "ca.pem"
        bad.write_text("not a certificate")
        with pytest.raises(ConfigError, match=r"azure\.ca_bundle"):
            make_ssl_context(bad)


class TestBudget:
    async def test_429_pauses_the_whole_subscription_and_logs_once(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """A 429 raises ArmThrottled, pauses that subscription for every caller, logs once."""
        settings = EmulatorSettings(
            world=WorldSettings(seed=5, subscriptions=2, vaults_per_subscription=3),
            throttle=ThrottleSettings(reads_bucket=3, reads_per_s=1),
        )
        budget = BudgetSettings(read_fraction=1.0, floor=0)
        async with harness(ca_pem_path, server_ssl_context, settings=settings, budget=budget) as h:
            sub_a, sub_b = sorted(h.emu.world.subscriptions)
            vault_ids = [v.id for v in h.emu.world.subscriptions[sub_a].vaults.values()]
            errors: list[ArmError] = []

            async def read(vault_id: str) -> None:
                try:
                    await h.client.get_vault(vault_id)
                except ArmThrottled as exc:
                    errors.append(exc)

            with capture_logs() as logs, anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    # Five reads: the budget's whole burst at read_fraction 1 (25/s × 0.2 s), so
                    # none waits in the budget; the emulator's bucket of 3 answers two with 429.
                    for vault_id in (vault_ids * 2)[: int(h.budgets.budget(sub_a).capacity)]:
                        tg.start_soon(read, vault_id)
            assert errors
            assert all(isinstance(e, ArmThrottled) and e.retry_after_s >= 1 for e in errors)
            throttled = [e for e in logs if e["event"] == "arm.throttled"]
            assert len(throttled) == 1
            assert throttled[0]["scope"] == sub_a.lower()
            assert h.budgets.throttle_count(sub_a) == 1

            # Another coroutine's read of the same subscription waits in the budget...
            before = (await h.stats())["by_scope"][sub_a]["requests"]
            with anyio.move_on_after(0.3) as scope:
                await h.client.list_vaults(sub_a)
            assert scope.cancelled_caught
            assert (await h.stats())["by_scope"][sub_a]["requests"] == before
            # ...while another subscription is not paused at all.
            with anyio.fail_after(2):
                await h.client.list_vaults(sub_b)

    @pytest.mark.long(seconds=11)
    async def test_a_burst_stays_inside_the_budget(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """Reads issued as fast as the client allows reach ARM at the budget's rate, no 429."""
        budget = BudgetSettings(read_fraction=0.5, reads_per_s=25.0)
        async with harness(ca_pem_path, server_ssl_context, budget=budget) as h:
            vault = h.vault()
            book = h.budgets.budget(vault.subscription_id)
            capacity, rate = book.capacity, book.rate_per_s
            assert capacity + rate * 10 == pytest.approx(125.0)  # 12.5/s over any 10 s
            reads = 140  # more than ten seconds' worth, so a whole 10 s window is measured
            remaining = list(range(reads))

            async def worker() -> None:
                while remaining:
                    remaining.pop()
                    await h.client.get_vault(vault.id)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(worker)
            stats = (await h.stats())["by_scope"][vault.subscription_id]
        assert stats["requests"] == reads
        assert stats["throttled_429"] == 0
        # At most capacity + rate·T reads in any T seconds (T = 1 and 10); one read of slack for
        # arrival jitter between the client's grant and the server's clock.
        assert stats["peak_per_s_1s"] <= capacity + rate + 1
        assert stats["peak_per_s_10s"] <= 12.5 + 0.1


@dataclass(frozen=True, slots=True)
class Observed:
    """One `arm_call_finished` report."""

    scope: str
    kind: ArmCallKind
    status: int | None
    duration_s: float
    headers: dict[str, str] | None
    retry_after_s: float | None


@dataclass
class Recorder:
    """An ArmObserver that keeps every report."""

    calls: list[Observed] = field(default_factory=list)

    def arm_call_finished(
        self,
        *,
        scope: str,
        kind: ArmCallKind,
        status: int | None,
        duration_s: float,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None,
    ) -> None:
        copied = None if headers is None else dict(headers)
        self.calls.append(Observed(scope, kind, status, duration_s, copied, retry_after_s))


class TestObserver:
    async def test_each_request_is_reported_once_with_its_kind_and_status(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """Every request sent is one report naming its scope, kind and status (None: no answer)."""
        recorder = Recorder()
        async with harness(ca_pem_path, server_ssl_context, observer=recorder) as h:

            async def reports(call: Callable[[], Awaitable[object]]) -> list[tuple[Any, ...]]:
                """(scope, kind, status) of what `call` reported; one per request it sent."""
                calls, sent = len(recorder.calls), len(h.sent)
                with anyio.fail_after(10), suppress(ArmError):
                    await call()
                new = recorder.calls[calls:]
                assert len(new) == len(h.sent) - sent
                assert all(c.duration_s >= 0 for c in new)
                return [(c.scope, c.kind, c.status) for c in new]

            vault = h.vault()
            sub = vault.subscription_id.lower()
            finished = next(j for j in h.emu.world.vaults[vault.key].jobs if j.end_at is not None)
            start, end = window(h.emu)
            operation = f"{h.emu.url}{vault.id}/backupOperations/nope?api-version=2021-12-01"

            assert await reports(h.client.list_subscriptions) == [
                ("tenant", "subscriptions_list", 200)
            ]
            assert (
                await reports(lambda: h.client.list_vaults(vault.subscription_id))
                == [(sub, "vaults_list", 200)] * 2
            )  # three vaults, two per page
            assert await reports(lambda: h.client.get_vault(vault.id)) == [(sub, "vault_get", 200)]
            pages = await reports(lambda: h.client.list_jobs(vault, start, end))
            assert len(pages) > 2
            assert pages == [(sub, "jobs_list", 200)] * len(pages)
            assert await reports(lambda: h.client.get_job(vault, finished.name)) == [
                (sub, "job_get", 200)
            ]
            assert await reports(lambda: h.client.get_job(vault, "nope")) == [(sub, "job_get", 404)]
            assert await reports(lambda: h.client.get_operation(operation)) == [(sub, "other", 404)]
            await h.put_faults(expired_token=1.0)
            assert (
                await reports(lambda: h.client.get_vault(vault.id)) == [(sub, "vault_get", 401)] * 2
            )  # refreshed once, rejected again
            await h.put_faults(expired_token=0.0, truncate=1.0)
            assert await reports(lambda: h.client.get_vault(vault.id)) == [
                (sub, "vault_get", 200)
            ]  # the body broke off after the status
            await h.put_faults(truncate=0.0, drop=1.0)
            assert await reports(lambda: h.client.get_vault(vault.id)) == [(sub, "vault_get", None)]
            assert recorder.calls[-1].headers is None
            assert len(recorder.calls) == len(h.sent)

    async def test_metrics_count_what_arm_served_and_the_429_with_its_retry_after(
        self, ca_pem_path: str, server_ssl_context: ssl.SSLContext
    ) -> None:
        """Metrics as the observer: ARM's request count, the 429, its Retry-After, the gauges."""
        settings = EmulatorSettings(
            world=WorldSettings(seed=5, subscriptions=2, vaults_per_subscription=3),
            throttle=ThrottleSettings(reads_bucket=3, reads_per_s=0.1),
        )
        budget = BudgetSettings(read_fraction=1.0, floor=0)
        registry = CollectorRegistry()
        async with harness(
            ca_pem_path,
            server_ssl_context,
            settings=settings,
            budget=budget,
            observer=Metrics(registry),
        ) as h:
            vault = h.vault()

            async def until_throttled() -> ArmThrottled:
                while True:
                    try:
                        await h.client.get_vault(vault.id)
                    except ArmThrottled as exc:
                        return exc

            with anyio.fail_after(10):
                throttled = await until_throttled()
            stats = (await h.stats())["by_scope"][vault.subscription_id]
        sub = vault.subscription_id.lower()

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(f"backup_monitor_{name}", labels)

        requests = {"subscription": sub, "kind": "vault_get"}
        assert value("arm_requests_total", **requests, status_class="2xx") == stats["served"]
        assert value("arm_requests_total", **requests, status_class="429") == 1
        assert stats["throttled_429"] == 1
        assert value("arm_throttled_total", subscription=sub) == 1
        pause = value("arm_throttle_pause_seconds_total", subscription=sub)
        assert pause == throttled.retry_after_s >= 1
        remaining = value("arm_ratelimit_remaining", subscription=sub, scope="subscription_reads")
        assert remaining == 0  # the emulator's per-principal bucket, empty at the 429
        shared = value(
            "arm_ratelimit_remaining", subscription=sub, scope="subscription_global_reads"
        )
        assert shared is not None
        assert shared > 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/subscriptions/x/resourceGroups/r"),
        ("DELETE", "/providers/Microsoft.ResourceGraph/resources"),
        ("POST", "/subscriptions/x/providers/Microsoft.RecoveryServices/vaults/v/backup"),
        ("PATCH", "/providers/Microsoft.ResourceGraph/resources"),
    ],
)
async def test_the_sender_refuses_every_write(method: str, path: str) -> None:
    """`Sender.send` sends GETs, and POSTs only to Resource Graph's query path; anything else
    is refused before a byte leaves (it never reaches its session, which here is None)."""
    clock = SystemClock()
    sender = Sender(
        session=cast(aiohttp.ClientSession, None),
        origin=Origin.of(URL("https://management.azure.com/")),
        budgets=BudgetBook(BudgetSettings(), clock=clock, rng=random.Random(1)),
        clock=clock,
        rng=random.Random(2),
        observer=None,
    )
    url = URL(f"https://management.azure.com{path}?api-version=1")
    cap = BodyCap(allowed=1024, key="k", setting=1024)
    with pytest.raises(ValueError, match="the monitor only reads"):
        await sender.send(method, url, "token", "tenant", ArmCallKind.OTHER, cap)


def test_the_client_only_ever_sends_get() -> None:
    """The ARM modules call no session method but `request`, which `Sender.send` guards (GETs,
    and Resource Graph's query POST): the monitor never writes to ARM."""
    modules = (monitor.arm, monitor.arm_http, monitor.arm_answers, monitor.arm_paging)
    trees = [ast.parse(Path(m.__file__ or "").read_text(encoding="utf-8")) for m in modules]
    session_calls = {
        node.func.attr
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_session"
    }
    assert session_calls == {"request"}


def _url_builder() -> ArmClient:
    """An ArmClient used only to build URLs: it is never asked to send, so it has no session."""
    clock = SystemClock()
    return ArmClient(
        session=cast(aiohttp.ClientSession, None),
        tokens=TokenCache(StaticTokenCredential("t"), SCOPE, clock),
        azure=AzureSettings(arm_endpoint="https://management.azure.com/"),
        budgets=BudgetBook(BudgetSettings(), clock=clock, rng=random.Random(1)),
        clock=clock,
        rng=random.Random(2),
    )


_BUILDER = _url_builder()
_VAULT = parse_vault_id(
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    "/providers/Microsoft.RecoveryServices/vaults/v1"
)


@settings(max_examples=500)
@given(segment_text)
@example(".")
@example("..")
@example("evil/name")
@example("%2e%2e")
@example("a;b")
@example("a?b#c")
def test_an_accepted_name_is_exactly_one_segment_of_the_url(name: str) -> None:
    """Whatever check_path_segment accepts, ArmClient's URL building puts into exactly one path
    segment that reads back as the name, and the query stays the api-version alone."""
    try:
        check_path_segment(name, "job name")
    except ParseError:
        return
    plain = _BUILDER._url(f"{_VAULT.id}/backupJobs/x", {"api-version": "2025-08-01"})
    built = _BUILDER._url(f"{_VAULT.id}/backupJobs/{name}", {"api-version": "2025-08-01"})
    for url in (built, URL(str(built)), URL(f"https://h{built.raw_path}?{built.raw_query_string}")):
        assert len(url.raw_parts) == len(plain.raw_parts)
        assert url.parts[-1] == name
        assert url.parts[:-1] == plain.parts[:-1]
        assert dict(url.query) == {"api-version": "2025-08-01"}
        assert url.fragment == ""
