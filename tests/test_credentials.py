"""Credentials: built from settings, tokens cached, and secrets kept out of every text."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import (
    AzureCliCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)

from monitor.clock import SystemClock
from monitor.config import AzureSettings
from monitor.credentials import StaticTokenCredential, TokenCache, build_credential
from monitor.emulator import Emulator, running_emulator
from monitor.errors import ArmAuthError, StartupError
from tests.fakes import CountingCredential, FakeClock

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
        """A one-hour token is reused for 55 minutes, then refreshed."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        clock.advance(55 * 60 - 1)
        assert await tokens.token() == "a"
        clock.advance(1)
        assert await tokens.token() == "b"
        assert credential.calls == 2

    async def test_short_tokens_refresh_at_half_their_lifetime(self) -> None:
        """A 100-second token is refreshed after 50 seconds, not 5 minutes before expiry."""
        clock = FakeClock()
        credential = CountingCredential("a", "b", lifetime_s=100, clock=clock)
        tokens = TokenCache(credential, SCOPE, clock)
        assert await tokens.token() == "a"
        clock.advance(49)
        assert await tokens.token() == "a"
        clock.advance(1)
        assert await tokens.token() == "b"

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
