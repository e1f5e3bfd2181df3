"""Credentials: built from settings, tokens cached, and secrets kept out of every text."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.identity.aio import (
    AzureCliCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.clock import SystemClock
from monitor.config import AzureSettings
from monitor.credentials import (
    REFRESH_RETRY_S,
    REFRESH_WINDOW_S,
    StaticTokenCredential,
    TokenCache,
    build_credential,
    refresh_due_at,
)
from monitor.emulator import Emulator, EmulatorSettings, running_emulator
from monitor.errors import ArmAuthError, StartupError
from tests.fakes import CountingCredential, FakeClock, TokenInfoCredential

SCOPE = "https://management.azure.com/.default"
APP_CLIENT_ID = "5f0e5c2a-1d3b-4c8e-9a7f-2b6d4e8f0a1c"


@pytest.fixture(name="tls_emu")
async def _tls_emu(server_ssl_context: ssl.SSLContext) -> AsyncIterator[Emulator]:
    async with running_emulator(ssl_context=server_ssl_context) as emu:
        yield emu


class TestStaticTokenCredential:
    async def test_returns_the_token_far_in_the_future(self) -> None:
        """The static credential returns its token with an expiry decades away."""
        credential = StaticTokenCredential("tok-123")
        async with credential:
            token = await credential.get_token(SCOPE)
        assert token.token == "tok-123"
        assert token.expires_on > SystemClock().utcnow().timestamp() + 50 * 365 * 86400

    def test_repr_hides_the_token(self) -> None:
        """The token never shows in the repr."""
        assert "tok-123" not in repr(StaticTokenCredential("tok-123"))

    def test_empty_token_is_refused(self) -> None:
        """An empty token is a programming error, caught at construction."""
        with pytest.raises(ValueError, match="empty"):
            StaticTokenCredential("")


class TestBuildCredential:
    def test_static(self) -> None:
        """credential = 'static' towards a loopback endpoint gives the static credential."""
        azure = AzureSettings(
            arm_endpoint="http://127.0.0.1:1/",
            allow_http_loopback=True,
            credential="static",
            static_token="tok",
        )
        assert isinstance(build_credential(azure), StaticTokenCredential)

    def test_static_refused_off_loopback(self) -> None:
        """A static token is never sent to a non-loopback ARM endpoint."""
        azure = AzureSettings(credential="static", static_token="sekrit-token")
        with pytest.raises(StartupError, match="loopback") as caught:
            build_credential(azure)
        assert "sekrit-token" not in str(caught.value)

    def test_client_secret_missing_fields(self) -> None:
        """A client-secret credential without its ids is a startup error naming them."""
        azure = AzureSettings(credential="client_secret", client_secret="s3cr3t-value")
        with pytest.raises(StartupError, match=r"tenant_id, azure\.client_id") as caught:
            build_credential(azure)
        assert "s3cr3t-value" not in str(caught.value)

    async def test_azure_cli_type(self) -> None:
        """credential = 'azure_cli' builds AzureCliCredential without running anything."""
        credential = build_credential(AzureSettings(credential="azure_cli"))
        async with credential:
            assert isinstance(credential, AzureCliCredential)

    async def test_workload_identity_reads_the_token_file_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Workload identity takes its token file from AZURE_FEDERATED_TOKEN_FILE."""
        token_file = tmp_path / "token"
        token_file.write_text("assertion")
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        azure = AzureSettings(
            credential="workload_identity",
            tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
            client_id=APP_CLIENT_ID,
        )
        credential = build_credential(azure)
        async with credential:
            assert isinstance(credential, WorkloadIdentityCredential)

    def test_workload_identity_without_token_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Workload identity with no token file is a startup error, not a crash."""
        monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
        azure = AzureSettings(
            credential="workload_identity",
            tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
            client_id=APP_CLIENT_ID,
        )
        with pytest.raises(StartupError, match="workload_identity"):
            build_credential(azure)

    async def test_client_secret_against_the_emulator_over_tls(
        self, tls_emu: Emulator, ca_pem_path: str
    ) -> None:
        """A client-secret credential built from settings gets a token ARM accepts, over TLS."""
        secret = tls_emu.arm.settings.client_secret
        azure = AzureSettings(
            arm_endpoint=tls_emu.url + "/",
            authority=tls_emu.url,
            credential="client_secret",
            tenant_id=tls_emu.tenant_id,
            client_id=APP_CLIENT_ID,
            client_secret=secret,
            ca_bundle=Path(ca_pem_path),
        )
        credential = build_credential(azure)
        assert isinstance(credential, ClientSecretCredential)
        assert secret not in repr(credential)
        async with (
            credential,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca_pem_path))
            ) as http,
        ):
            tokens = TokenCache(credential, SCOPE, SystemClock())
            with anyio.fail_after(10):
                token = await tokens.token()
            url = f"{tls_emu.url}/subscriptions?api-version=2022-12-01"
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
        stats = tls_emu.throttle.stats_json()
        by_principal = stats["by_principal"]
        assert isinstance(by_principal, list)
        assert [row["principal"] for row in by_principal] == [APP_CLIENT_ID]
        assert secret not in repr(tokens)
        assert token not in repr(tokens)

    async def test_wrong_client_secret_is_a_startup_error_without_the_secret(
        self, tls_emu: Emulator, ca_pem_path: str
    ) -> None:
        """A refused secret fails the first token: StartupError quoting AAD, not the secret."""
        azure = AzureSettings(
            authority=tls_emu.url,
            credential="client_secret",
            tenant_id=tls_emu.tenant_id,
            client_id=APP_CLIENT_ID,
            client_secret="not-the-secret-4711",
            ca_bundle=Path(ca_pem_path),
        )
        credential = build_credential(azure)
        async with credential:
            tokens = TokenCache(credential, SCOPE, SystemClock())
            with anyio.fail_after(10), pytest.raises(StartupError) as caught:
                await tokens.token()
        message = str(caught.value)
        assert "AADSTS7000215" in message
        assert "not-the-secret-4711" not in message
        assert "ClientSecretCredential" in message


class TestTokenCache:
    async def test_caches_until_five_minutes_before_expiry(self) -> None:
        """A one-hour token from get_token (no get_token_info) is reused for 55 minutes."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        clock.advance(55 * 60 - 1)
        assert await tokens.token() == "a"
        clock.advance(1)
        assert await tokens.token() == "b"
        assert credential.calls == 2

    async def test_a_token_due_on_arrival_is_asked_for_again_30_s_later(self) -> None:
        """A 100-second token (due at once by azure-core's rule) is reused for 30 s, not 0."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", lifetime_s=100, clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        clock.advance(REFRESH_RETRY_S - 1)
        assert await tokens.token() == "a"
        clock.advance(1)
        assert await tokens.token() == "b"

    async def test_a_very_short_token_is_asked_for_again_at_its_expiry(self) -> None:
        """A token of 10 s is kept until it expires: the retry delay never outlives a token."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", lifetime_s=10, clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        clock.advance(9.9)
        assert await tokens.token() == "a"
        clock.advance(0.1)
        assert await tokens.token() == "b"

    async def test_refresh_on_is_honoured(self) -> None:
        """A 24-hour token whose refresh_on is 12 hours away is refreshed then, not at 23:55."""
        clock = FakeClock()
        credential = TokenInfoCredential(lifetime_s=86400, refresh_in_s=43200, clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "token-1"
        clock.advance(43200 - 1)
        assert await tokens.token() == "token-1"
        clock.advance(1)
        assert await tokens.token() == "token-2"
        assert credential.calls == 2

    async def test_a_refresh_on_past_the_expiry_waits_for_the_expiry_only(self) -> None:
        """refresh_on later than expires_on: refreshed at expiry, as azure-core caps it."""
        clock = FakeClock()
        credential = TokenInfoCredential(lifetime_s=3600, refresh_in_s=7200, clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        await tokens.token()
        clock.advance(3599)
        assert await tokens.token() == "token-1"
        clock.advance(1)
        assert await tokens.token() == "token-2"

    async def test_the_static_credential_never_refreshes(self) -> None:
        """StaticTokenCredential's token (by get_token_info) is fetched once in ten years."""
        clock = FakeClock()
        tokens = TokenCache(StaticTokenCredential("tok-static"), SCOPE, clock)
        with capture_logs() as logs:
            for _ in range(10):
                assert await tokens.token() == "tok-static"
                clock.advance(365 * 86400)
        refreshes = [e for e in logs if e["event"] == "credential.token_refreshed"]
        assert len(refreshes) == 1
        assert refreshes[0]["refresh_on_given"] is False

    async def test_force_refresh(self) -> None:
        """force_refresh gets a new token even while the cached one is fresh."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        assert await tokens.token(force_refresh=True) == "b"
        assert credential.calls == 2

    @pytest.mark.parametrize("force", [False, True])
    async def test_concurrent_callers_share_one_refresh(self, force: bool) -> None:
        """Ten callers at once cause one credential call, forced or not."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        if force:
            await tokens.token()
        credential.gate = anyio.Event()
        got: list[str] = []

        async def ask() -> None:
            got.append(await tokens.token(force_refresh=force))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(ask)
                await anyio.wait_all_tasks_blocked()
                credential.gate.set()
        assert credential.calls == (2 if force else 1)
        assert set(got) == {"b" if force else "a"}

    async def test_a_rejected_token_is_not_refreshed_twice(self) -> None:
        """Two callers whose token ARM refused one after the other cause one refresh."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", "c", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        first = await tokens.token()
        assert await tokens.token(force_refresh=True, rejected=first) == "b"
        assert await tokens.token(force_refresh=True, rejected=first) == "b"
        assert credential.calls == 2
        assert await tokens.token(force_refresh=True, rejected="b") == "c"

    async def test_failure_before_any_token_is_a_startup_error(self) -> None:
        """No token ever: StartupError (exit code 3 territory)."""
        credential = CountingCredential("a")
        credential.fail_with = ClientAuthenticationError("AADSTS700016: app not found")
        tokens = TokenCache(credential, SCOPE, SystemClock())
        with pytest.raises(StartupError, match="AADSTS700016"):
            await tokens.token()

    async def test_failure_after_a_token_is_an_auth_error(self) -> None:
        """A refresh that fails once running is ArmAuthError; the old token is not leaked."""
        clock = FakeClock()
        credential = CountingCredential("tok-first", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        await tokens.token()
        credential.fail_with = OSError("token endpoint unreachable")
        with pytest.raises(ArmAuthError, match="OSError: token endpoint unreachable") as caught:
            await tokens.token(force_refresh=True)
        assert "tok-first" not in str(caught.value)
        assert caught.value.url == SCOPE


def _policy_asks_again(credential: TokenInfoCredential) -> bool:
    """Whether azure-core's own policy asks `credential` again on a second request."""
    policy = AsyncBearerTokenCredentialPolicy(credential, SCOPE)

    async def authorize() -> None:
        request = HttpRequest("GET", "https://management.azure.com/subscriptions")
        await policy.on_request(PipelineRequest(request, PipelineContext(None)))

    async def twice() -> None:
        await authorize()
        await authorize()

    before = credential.calls
    anyio.run(twice)
    return credential.calls - before == 2


def _cache_asks_again(lifetime_s: int, refresh_in_s: int | None, elapsed_s: int) -> bool:
    clock = FakeClock()
    credential = TokenInfoCredential(lifetime_s=lifetime_s, refresh_in_s=refresh_in_s, clock=clock)
    tokens = TokenCache(credential, SCOPE, clock)

    async def twice() -> None:
        await tokens.token()
        clock.advance(elapsed_s)
        await tokens.token()

    anyio.run(twice)
    return credential.calls == 2


# azure-core delays each refresh by a random 0..60 s (MAX_REFRESH_JITTER_SECONDS); ours does not.
JITTER_S = 60
# Real seconds that may pass between azure-core's two requests, and integer expiry times.
SLACK_S = 3


class TestAzureCoreTiming:
    """TokenCache refreshes when azure-core's AsyncBearerTokenCredentialPolicy would."""

    @settings(max_examples=300, deadline=None)
    @given(
        lifetime_s=st.integers(int(REFRESH_WINDOW_S) + 2 * SLACK_S, 2 * 86400),
        refresh_in_s=st.none() | st.integers(2 * SLACK_S, 3 * 86400),
        elapsed_s=st.integers(0, 3 * 86400),
    )
    @example(lifetime_s=3600, refresh_in_s=None, elapsed_s=3299)
    @example(lifetime_s=3600, refresh_in_s=None, elapsed_s=3361)
    @example(lifetime_s=86400, refresh_in_s=43200, elapsed_s=43261)
    @example(lifetime_s=3600, refresh_in_s=7200, elapsed_s=3601)
    def test_the_same_refreshes_as_azure_core(
        self, lifetime_s: int, refresh_in_s: int | None, elapsed_s: int
    ) -> None:
        """After `elapsed_s`, ours asks the credential again iff azure-core's policy does.

        azure-core reads the real clock, so its token is made `elapsed_s` older instead of
        time passing. Left out: the minute after our refresh time, where azure-core's random
        delay decides, and the seconds around each boundary.
        """
        due = refresh_due_at(obtained_at=0, expires_on=lifetime_s, refresh_on=refresh_in_s)
        assert 0 < due <= lifetime_s
        assume(not due - SLACK_S <= elapsed_s <= min(due + JITTER_S, lifetime_s) + SLACK_S)
        assume(abs(elapsed_s - lifetime_s) > SLACK_S)
        aged = TokenInfoCredential(
            lifetime_s=lifetime_s, refresh_in_s=refresh_in_s, age_s=elapsed_s
        )
        ours = _cache_asks_again(lifetime_s, refresh_in_s, elapsed_s)
        event(f"asks again: {ours}, refresh_on: {refresh_in_s is not None}")
        assert ours == _policy_asks_again(aged)

    @pytest.mark.parametrize(
        ("lifetime_s", "refresh_in_s"), [(120, None), (239, None), (3600, -70)]
    )
    def test_why_ours_a_token_due_on_arrival(
        self, lifetime_s: int, refresh_in_s: int | None
    ) -> None:
        """A token already due when it arrives: azure-core asks for every request, ours not.

        A token of under 4 minutes (the emulator's `--token-lifetime 120`), or a credential that
        kept a token whose refresh_on passed over a minute ago (azure-identity does when a
        refresh fails): azure-core's policy calls the credential again on each of 20 requests
        (even with its random delay of up to 60 s); TokenCache once in 30 s.
        """
        policy_credential = TokenInfoCredential(lifetime_s=lifetime_s, refresh_in_s=refresh_in_s)
        policy = AsyncBearerTokenCredentialPolicy(policy_credential, SCOPE)
        clock = FakeClock()
        ours = TokenInfoCredential(lifetime_s=lifetime_s, refresh_in_s=refresh_in_s, clock=clock)
        tokens = TokenCache(ours, SCOPE, clock)

        async def twenty_requests() -> None:
            for _ in range(20):
                request = HttpRequest("GET", "https://management.azure.com/subscriptions")
                await policy.on_request(PipelineRequest(request, PipelineContext(None)))
                await tokens.token()
                clock.advance(1)

        anyio.run(twenty_requests)
        assert policy_credential.calls == 20
        assert ours.calls == 1


class _TokenRequests:
    """Counts the POSTs to a token endpoint that an azure-identity credential makes."""

    def __init__(self) -> None:
        self.count = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._started)

    async def _started(
        self,
        session: aiohttp.ClientSession,
        context: object,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if params.method == "POST" and params.url.path.endswith("/oauth2/v2.0/token"):
            self.count += 1


@asynccontextmanager
async def _counted_credential(
    emu: Emulator, ca_pem_path: str, requests: _TokenRequests
) -> AsyncIterator[ClientSecretCredential]:
    context = ssl.create_default_context(cafile=ca_pem_path)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), trace_configs=[requests.trace]
    ) as session:
        transport = AioHttpTransport(session=session, session_owner=False)
        async with ClientSecretCredential(
            emu.tenant_id,
            APP_CLIENT_ID,
            emu.arm.settings.client_secret,
            authority=emu.url,
            connection_verify=ca_pem_path,
            transport=transport,
        ) as credential:
            yield credential


class TestRefreshAgainstTheEmulator:
    """azure-identity's ClientSecretCredential and MSAL's refresh_on, through TokenCache."""

    async def test_msal_refresh_on_for_a_long_token_is_used(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """A 2-hour token gets MSAL's refresh_on at half its life: refreshed in 1 h, not 1:55."""
        requests = _TokenRequests()
        settings_ = EmulatorSettings(token_lifetime_s=7200)
        async with (
            running_emulator(settings_, ssl_context=server_ssl_context) as emu,
            _counted_credential(emu, ca_pem_path, requests) as credential,
        ):
            tokens = TokenCache(credential, SCOPE, SystemClock())
            with capture_logs() as logs, anyio.fail_after(10):
                for _ in range(5):
                    await tokens.token()
        refreshed = [e for e in logs if e["event"] == "credential.token_refreshed"]
        assert len(refreshed) == 1
        assert refreshed[0]["refresh_on_given"] is True
        assert 3590 <= refreshed[0]["refresh_in_s"] <= 3600
        assert requests.count == 1

    async def test_a_short_token_is_refreshed_when_it_runs_out(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """`--token-lifetime 2`: one token request, then the second only when the first expired.

        In between, every call is served from the cache (azure-identity would not ask its
        endpoint again within 30 s of the last request while the token is valid).
        """
        requests = _TokenRequests()
        settings_ = EmulatorSettings(token_lifetime_s=2)
        clock = SystemClock()
        async with (
            running_emulator(settings_, ssl_context=server_ssl_context) as emu,
            _counted_credential(emu, ca_pem_path, requests) as credential,
        ):
            tokens = TokenCache(credential, SCOPE, clock)
            with anyio.fail_after(10):
                first = await tokens.token()
                started = clock.utcnow().timestamp()
                calls = 0
                while (token := await tokens.token()) == first:
                    calls += 1
                    assert requests.count == 1
                    await anyio.sleep(0.05)
                waited = clock.utcnow().timestamp() - started
        assert token != first
        assert requests.count == 2
        assert calls >= 5
        # The endpoint's expires_in of 2 s becomes a whole-second expires_on: 1 to 2 s away.
        assert 0.5 <= waited <= 5.0
