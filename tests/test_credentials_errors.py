"""Credential errors: azure-identity's whole diagnostic reaches the user, with secrets redacted."""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from azure.identity.aio import (
    ChainedTokenCredential,
    ClientSecretCredential,
    EnvironmentCredential,
    WorkloadIdentityCredential,
)
from hypothesis import assume, example, given
from hypothesis import strategies as st

from monitor.clock import SystemClock
from monitor.config import AzureSettings
from monitor.credentials import (
    MAX_DETAIL_CHARS,
    TokenCache,
    credential_secrets,
    redact_secrets,
    upstream_detail,
)
from monitor.emulator import Emulator, running_emulator
from monitor.errors import ArmAuthError, StartupError
from tests.fakes import CountingCredential, FakeClock

SCOPE = "https://management.azure.com/.default"
APP_CLIENT_ID = "5f0e5c2a-1d3b-4c8e-9a7f-2b6d4e8f0a1c"
WRONG_SECRET = "wR0ng~s3cret.Value-4711"
# What azure-identity's EnvironmentCredential and WorkloadIdentityCredential read.
IDENTITY_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)
# What redact_secrets looks for; text without any of these (and no given secret) is left alone.
MARKERS = (
    "eyj",
    "bearer",
    "client_secret",
    "client_assertion",
    "access_token",
    "refresh_token",
    "id_token",
)
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(name="tls_emu")
async def _tls_emu(server_ssl_context: ssl.SSLContext) -> AsyncIterator[Emulator]:
    async with running_emulator(ssl_context=server_ssl_context) as emu:
        yield emu


@pytest.fixture(name="no_identity_env")
def _no_identity_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No azure-identity variable set: EnvironmentCredential is unavailable, and says why."""
    for name in IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _without_markers(text: str) -> bool:
    lowered = text.lower()
    return not any(marker in lowered for marker in MARKERS)


jwt_like = st.builds(
    lambda a, b, c: f"eyJ{a}.{b}.{c}",
    st.text(TOKEN_CHARS, min_size=6, max_size=60),
    st.text(TOKEN_CHARS, min_size=1, max_size=200),
    st.text(TOKEN_CHARS, max_size=80),
)


class TestRedactSecrets:
    @given(
        before=st.text(),
        secret=st.text(min_size=8, max_size=60),
        after=st.text(),
        others=st.lists(st.text(max_size=20), max_size=3),
    )
    @example(before="Bearer xyz", secret="Bearer *", after="*", others=[])
    @example(before="abcd", secret="abcd***abcd", after="***abcd", others=["abcd***a"])
    def test_a_given_secret_never_survives(
        self, before: str, secret: str, after: str, others: list[str]
    ) -> None:
        """A configured secret embedded anywhere in any text is gone from the result."""
        redacted = redact_secrets(before + secret + after, [*others, secret])
        assert secret not in redacted

    @given(before=st.text(), token=jwt_like, after=st.text())
    def test_a_jwt_never_survives(self, before: str, token: str, after: str) -> None:
        """Anything shaped like a JWT (an access token, a client assertion) is replaced."""
        redacted = redact_secrets(f"{before} {token} {after}")
        assert token not in redacted

    @given(
        before=st.text(),
        field=st.sampled_from(
            [
                "client_secret=",
                "client_assertion=",
                "Authorization: Bearer ",
                '"access_token": "',
                "refresh_token=",
            ]
        ),
        value=st.text(TOKEN_CHARS + ".~", min_size=20, max_size=80),
        after=st.text(),
    )
    def test_a_credential_field_never_survives(
        self, before: str, field: str, value: str, after: str
    ) -> None:
        """The value of a form field, JSON field or header that carries a credential is replaced."""
        assume(value not in before and value not in after)
        redacted = redact_secrets(f"{before} {field}{value}&{after}")
        assert value not in redacted

    @given(text=st.text().filter(_without_markers), secrets=st.lists(st.text(min_size=1)))
    def test_text_without_secrets_is_unchanged(self, text: str, secrets: list[str]) -> None:
        """Text that shows no credential and none of the given secrets comes back as it was."""
        absent = [s for s in secrets if s not in text]
        assert redact_secrets(text, absent) == text

    def test_short_secrets_are_not_replaced_literally(self) -> None:
        """A secret of fewer than 8 characters (a test's static token "t") leaves text alone."""
        assert redact_secrets("the token endpoint", ["t"]) == "the token endpoint"

    def test_a_real_diagnostic_keeps_its_words(self) -> None:
        """azure-core's sentence about bearer tokens over HTTP is not mistaken for a token."""
        text = "Bearer token authentication is not permitted for non-TLS protected URLs."
        assert redact_secrets(text) == text


class TestUpstreamDetail:
    def test_every_line_is_kept(self) -> None:
        """A chained credential's list of attempts keeps each of its lines."""
        text = (
            "ChainedTokenCredential failed to retrieve a token.\nAttempted credentials:\n"
            "\tEnvironmentCredential: unavailable\n\tWorkloadIdentityCredential: no file"
        )
        assert upstream_detail(RuntimeError(text)) == text

    def test_a_long_message_is_cut_with_a_note(self) -> None:
        """Past MAX_DETAIL_CHARS the message is cut and says how much was cut."""
        detail = upstream_detail(RuntimeError("x" * (MAX_DETAIL_CHARS + 123)))
        assert detail == "x" * MAX_DETAIL_CHARS + "… (123 more characters cut)"

    def test_secrets_are_redacted_before_the_cut(self) -> None:
        """A secret straddling the cut is redacted whole, never left half visible."""
        secret = "S3cretValueOfForty-Characters-0123456789"
        text = "x" * (MAX_DETAIL_CHARS - 20) + secret
        detail = upstream_detail(RuntimeError(text), [secret])
        assert secret[:20] not in detail
        assert detail.endswith("***")

    def test_an_empty_message_names_the_type(self) -> None:
        """An exception without a message is named by its type."""
        assert upstream_detail(TimeoutError()) == "TimeoutError"


class TestDiagnosticsFromAzureIdentity:
    async def test_a_chain_lists_every_credential_it_tried(
        self, tls_emu: Emulator, ca_pem_path: str, no_identity_env: pytest.MonkeyPatch
    ) -> None:
        """Environment (unavailable) then a wrong client secret: both lines, no secret."""
        chain = ChainedTokenCredential(
            EnvironmentCredential(),
            ClientSecretCredential(
                tls_emu.tenant_id,
                APP_CLIENT_ID,
                WRONG_SECRET,
                authority=tls_emu.url,
                connection_verify=ca_pem_path,
            ),
        )
        async with chain:
            tokens = TokenCache(chain, SCOPE, SystemClock(), secrets=[WRONG_SECRET])
            with anyio.fail_after(10), pytest.raises(StartupError) as caught:
                await tokens.token()
        message = str(caught.value)
        lines = message.splitlines()
        assert lines[0].startswith("ChainedTokenCredential could not get a token for")
        assert "Attempted credentials:" in lines
        assert any(
            line.startswith(
                "\tEnvironmentCredential: EnvironmentCredential authentication unavailable"
            )
            for line in lines
        ), lines
        assert any(
            line.startswith("\tClientSecretCredential:") and "AADSTS7000215" in line
            for line in lines
        ), lines
        # The token endpoint's JSON answer (its error codes, trace id) is a line of its own.
        assert any(line.startswith("Content: {") and "7000215" in line for line in lines)
        assert WRONG_SECRET not in message

    async def test_a_missing_token_file_is_listed_with_the_chain(
        self,
        tls_emu: Emulator,
        ca_pem_path: str,
        no_identity_env: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """Environment (unavailable) then workload identity without its file: both lines."""
        missing = tmp_path / "no-such-token"
        chain = ChainedTokenCredential(
            EnvironmentCredential(),
            WorkloadIdentityCredential(
                tenant_id=tls_emu.tenant_id,
                client_id=APP_CLIENT_ID,
                token_file_path=str(missing),
                authority=tls_emu.url,
                connection_verify=ca_pem_path,
            ),
        )
        async with chain:
            tokens = TokenCache(chain, SCOPE, SystemClock())
            with anyio.fail_after(10), pytest.raises(StartupError) as caught:
                await tokens.token()
        lines = str(caught.value).splitlines()
        assert any(line.startswith("\tEnvironmentCredential: ") for line in lines), lines
        assert (
            f"\tWorkloadIdentityCredential: [Errno 2] No such file or directory: '{missing}'"
            in (lines)
        )

    async def test_a_failed_refresh_keeps_the_whole_diagnostic(self) -> None:
        """Once running, a refresh failure is ArmAuthError with every line, tokens redacted."""
        clock = FakeClock()
        credential = CountingCredential("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", clock=clock)
        tokens = TokenCache(credential, SCOPE, clock, name="credential 'contoso'")
        first = await tokens.token()
        credential.fail_with = OSError(
            f"token endpoint unreachable\nwhile refreshing {first}\nclient_assertion=abc.def.ghi"
        )
        with pytest.raises(ArmAuthError) as caught:
            await tokens.token(force_refresh=True)
        message = str(caught.value)
        assert message.startswith("credential 'contoso' could not get a token for")
        assert message.splitlines()[1:] == ["while refreshing ***", "client_assertion=***"]
        assert first not in message


def _config(emu: Emulator, tmp_path: Path, ca_pem_path: str) -> Path:
    config = tmp_path / "monitor.toml"
    config.write_text(
        "[azure]\n"
        f'arm_endpoint = "{emu.url}/"\n'
        f'authority = "{emu.url}"\n'
        'credential = "client_secret"\n'
        f'tenant_id = "{emu.tenant_id}"\n'
        f'client_id = "{APP_CLIENT_ID}"\n'
        f'ca_bundle = "{ca_pem_path}"\n'
        "request_timeout_s = 5\n"
        "[state]\n"
        f'path = "{tmp_path / "state.sqlite"}"\n'
    )
    return config


async def test_the_exit_message_shows_every_line_indented(
    tls_emu: Emulator, ca_pem_path: str, tmp_path: Path
) -> None:
    """`check-config` with a wrong client secret exits 3; AAD's answer follows, indented."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_MONITOR_")}
    env["BACKUP_MONITOR_AZURE__CLIENT_SECRET"] = WRONG_SECRET
    config = _config(tls_emu, tmp_path, ca_pem_path)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "monitor", "check-config", "--config", str(config)],
            env=env,
            check=False,
        )
    stderr = result.stderr.decode()
    assert result.returncode == 3, stderr
    ours = [line for line in stderr.splitlines() if not line.startswith("{")]
    start = next(i for i, line in enumerate(ours) if line.startswith("backup-monitor: startup"))
    first, rest = ours[start], ours[start + 1 :]
    assert "ClientSecretCredential could not get a token" in first
    assert "AADSTS7000215" in first
    assert rest, stderr
    assert all(line.startswith("    ") for line in rest), rest
    assert any(line.startswith("    Content: {") and "trace_id" in line for line in rest), rest
    assert WRONG_SECRET not in stderr


def test_credential_secrets_names_what_is_configured() -> None:
    """The client secret and the static token are the secrets a message must not show."""
    azure = AzureSettings(client_secret="c" * 40, static_token="t" * 12)
    assert credential_secrets(azure) == ("c" * 40, "t" * 12)
    assert credential_secrets(AzureSettings()) == ()
