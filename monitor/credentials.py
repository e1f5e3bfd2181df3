"""Azure credentials for ARM: choosing one from settings, and caching its bearer tokens."""

# Rules:
# - A secret (client secret, static token, access token) never appears in a repr, a log entry or
#   an exception message: every upstream message goes through `redact_secrets` first.
# - An upstream diagnostic is kept whole (every line, up to `MAX_DETAIL_CHARS`): azure-identity's
#   chained credentials list each credential they tried, and why it failed, on its own line.
# - Nothing here talks to ARM; `arm.py` asks `TokenCache` for tokens.

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import structlog
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.credentials_async import AsyncSupportsTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from monitor.config import is_loopback_host
from monitor.errors import ArmAuthError, StartupError

if TYPE_CHECKING:
    from types import TracebackType

    from azure.core.credentials import TokenRequestOptions
    from azure.core.credentials_async import AsyncTokenCredential, AsyncTokenProvider

    from monitor.clock import Clock
    from monitor.config import AzureSettings

__all__ = [
    "MAX_DETAIL_CHARS",
    "REFRESH_RETRY_S",
    "REFRESH_WINDOW_S",
    "StaticTokenCredential",
    "TokenCache",
    "build_credential",
    "credential_secrets",
    "redact_secrets",
    "refresh_due_at",
    "upstream_detail",
]

log = structlog.get_logger(__name__)

# A token without a refresh_on is refreshed this long before it expires: azure-core's
# BearerTokenCredentialPolicy's window (DEFAULT_REFRESH_WINDOW_SECONDS in azure-core 1.41).
REFRESH_WINDOW_S: Final = 300.0
# A token that is already due when it arrives is asked for again no sooner than this (but at its
# expiry at the latest): azure-identity's credentials do not ask their token endpoint again within
# 30 s of their last request unless the token has expired (DEFAULT_TOKEN_REFRESH_RETRY_DELAY).
REFRESH_RETRY_S: Final = 30.0
# StaticTokenCredential's tokens "expire" at 2100-01-01T00:00:00Z, so TokenCache never refreshes.
_STATIC_EXPIRES_ON: Final = 4_102_444_800
# An upstream diagnostic is kept whole up to this many characters (after redaction), then cut with
# a note of how much was cut: room for DefaultAzureCredential's list of every credential it tried.
MAX_DETAIL_CHARS: Final = 4000
# A configured secret shorter than this is not replaced where it occurs in a message: replacing
# every "t" of a test's static token "t" would garble the message and protect nothing.
_MIN_LITERAL_SECRET: Final = 8
_REDACTED: Final = "***"
# What looks like a credential in free text: a JWT (every Entra ID access token and client
# assertion), the value after "Bearer", and the value of a form or JSON field that carries one.
_SECRET_PATTERNS: Final = (
    (re.compile(r"eyJ[A-Za-z0-9_\-]{6,}(?:\.[A-Za-z0-9_\-]*)*"), _REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{20,}"), r"\1" + _REDACTED),
    (
        re.compile(
            r"(?i)\b((?:client_secret|client_assertion|access_token|refresh_token|id_token)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]+"
        ),
        r"\1" + _REDACTED,
    ),
)


class StaticTokenCredential:
    """An `AsyncTokenCredential` (and `AsyncSupportsTokenInfo`) that returns one fixed token.

    For the emulator and tests only: the configuration refuses `credential = 'static'` unless
    the ARM endpoint is a loopback host. Its tokens carry no `refresh_on` and expire in 2100,
    so `TokenCache` never refreshes them. Its repr never shows the token.
    """

    __slots__ = ("_expires_on", "_token")

    def __init__(self, token: str, *, expires_on: int | None = None) -> None:
        """Wrap `token`; `expires_on` (Unix time) defaults to 2100-01-01.

        Raises:
            ValueError: the token is empty.
        """
        if not token:
            raise ValueError("StaticTokenCredential: the token must not be empty")
        self._token = token
        self._expires_on = _STATIC_EXPIRES_ON if expires_on is None else expires_on

    def __repr__(self) -> str:
        return "StaticTokenCredential(token='***')"

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """The fixed token, whatever the scopes."""
        return AccessToken(self._token, self._expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        """The fixed token, whatever the scopes and options; no `refresh_on`."""
        return AccessTokenInfo(self._token, self._expires_on)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


def build_credential(azure: AzureSettings) -> AsyncTokenCredential:
    """Build the credential that `azure.credential` names; does no I/O.

    - `default`: `DefaultAzureCredential(authority=<host of azure.authority>)`, with
      `managed_identity_client_id=azure.client_id` when a client id is set.
    - `managed_identity`: `ManagedIdentityCredential(client_id=azure.client_id)` (None: the
      system-assigned identity).
    - `workload_identity`: `WorkloadIdentityCredential(tenant_id=…, client_id=…,
      authority=azure.authority)`; the token file comes from `AZURE_FEDERATED_TOKEN_FILE`, and
      unset ids from `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` (azure-identity reads them itself).
    - `client_secret`: `ClientSecretCredential(tenant_id, client_id, client_secret,
      authority=azure.authority)`.
    - `azure_cli`: `AzureCliCredential(tenant_id=azure.tenant_id)`.
    - `static`: `StaticTokenCredential(azure.static_token)`, only towards a loopback ARM endpoint.

    When `azure.ca_bundle` is set, the credentials that call an HTTPS token endpoint (default,
    workload identity, client secret) verify it against that PEM file (`connection_verify`).
    The caller owns the credential and closes it (`async with credential:`).

    Raises:
        StartupError: a setting the chosen credential needs is missing or rejected by
            azure-identity (e.g. workload identity without a token file); the message names it
            and never contains a secret.
    """
    kind = azure.credential
    verify: dict[str, Any] = {}
    if azure.ca_bundle is not None:
        verify["connection_verify"] = str(azure.ca_bundle)
    try:
        if kind == "static":
            if not azure.static_token:
                raise StartupError(
                    "azure.static_token is required when azure.credential = 'static'"
                )
            if not is_loopback_host(urlsplit(azure.arm_endpoint).hostname or ""):
                raise StartupError(
                    "azure.credential = 'static' is refused unless azure.arm_endpoint is loopback"
                )
            return StaticTokenCredential(azure.static_token)
        # Imported here, not at the top: about 0.25 s of every process start, which the static
        # credential (the emulator's, and every test daemon's) does not need.
        from azure.identity.aio import (
            AzureCliCredential,
            ClientSecretCredential,
            DefaultAzureCredential,
            ManagedIdentityCredential,
            WorkloadIdentityCredential,
        )

        if kind == "client_secret":
            tenant_id, client_id, secret = azure.tenant_id, azure.client_id, azure.client_secret
            if not tenant_id or not client_id or not secret:
                missing = [
                    k for k in ("tenant_id", "client_id", "client_secret") if not getattr(azure, k)
                ]
                raise StartupError(
                    f"azure.credential = 'client_secret' needs azure.{', azure.'.join(missing)}"
                )
            return ClientSecretCredential(
                tenant_id,
                client_id,
                secret,
                authority=azure.authority,
                **verify,
            )
        if kind == "managed_identity":
            return ManagedIdentityCredential(client_id=azure.client_id)
        if kind == "workload_identity":
            return WorkloadIdentityCredential(
                tenant_id=azure.tenant_id,
                client_id=azure.client_id,
                authority=azure.authority,
                **verify,
            )
        if kind == "azure_cli":
            return AzureCliCredential(tenant_id=azure.tenant_id or "")
        extra: dict[str, Any] = dict(verify)
        if azure.client_id:
            extra["managed_identity_client_id"] = azure.client_id
        return DefaultAzureCredential(authority=_host_of(azure.authority), **extra)
    except ValueError as exc:
        # azure-identity validates its arguments in constructors; its messages name the
        # argument, never its value.
        raise StartupError(
            f"azure.credential = {kind!r}: cannot build the credential: "
            f"{upstream_detail(exc, credential_secrets(azure))}"
        ) from exc


def _host_of(authority: str) -> str:
    rest = authority.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def credential_secrets(azure: AzureSettings) -> tuple[str, ...]:
    """The configured secrets (client secret, static token) that a message must never show.

    Pass them to `TokenCache(secrets=...)`; `redact_secrets` replaces them where they occur.
    """
    return tuple(s for s in (azure.client_secret, azure.static_token) if s)


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential it shows replaced by `***`.

    Replaced: anything that looks like a JWT (`eyJ…`: access tokens, client assertions), the
    value after `Bearer ` (20 characters or more, as tokens are), the values of
    `client_secret`, `client_assertion`, `access_token`, `refresh_token` and `id_token` fields
    (`name=value` in a form, `"name": "value"` in JSON), and each of `secrets` of 8 characters
    or more wherever it occurs. Text showing none of these is returned unchanged.
    """
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    # Literal secrets last, each until it no longer occurs: a replacement above (or of another
    # secret) may have joined the two halves of one.
    literal = sorted({s for s in secrets if len(s) >= _MIN_LITERAL_SECRET}, key=len, reverse=True)
    changed = True
    while changed:
        changed = False
        for secret in literal:
            if secret in text:
                text, changed = text.replace(secret, _REDACTED), True
    return text


def upstream_detail(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """An upstream error's whole message, every line of it, redacted and capped.

    The message (its type's name when it is empty) goes through `redact_secrets`; past
    `MAX_DETAIL_CHARS` it is cut, with a note of how many characters were cut.
    """
    text = str(exc).strip() or type(exc).__name__
    text = redact_secrets(text, secrets)
    if len(text) <= MAX_DETAIL_CHARS:
        return text
    return f"{text[:MAX_DETAIL_CHARS]}… ({len(text) - MAX_DETAIL_CHARS} more characters cut)"


def refresh_due_at(*, obtained_at: float, expires_on: float, refresh_on: float | None) -> float:
    """When a token obtained at `obtained_at` (Unix time) should be replaced (Unix time).

    azure-core's `BearerTokenCredentialPolicy` timing, without its random delay of up to 60 s:
    at `refresh_on` when the credential gave one (MSAL's, from the token endpoint's `refresh_in`
    or half the lifetime of tokens of 2 h or more), never after `expires_on`; else
    `REFRESH_WINDOW_S` before `expires_on`. One addition: a token that is already due when it
    arrives (a lifetime under 5 minutes; a credential that kept its cached token because its
    refresh failed) is due again `REFRESH_RETRY_S` later, or at its expiry if that is sooner,
    where azure-core's policy would ask the credential again on every request.
    """
    if refresh_on is not None:
        due = min(float(refresh_on), expires_on)
    else:
        due = expires_on - REFRESH_WINDOW_S
    if due <= obtained_at:
        due = obtained_at + min(REFRESH_RETRY_S, max(0.0, expires_on - obtained_at))
    return due


class TokenCache:
    """Caches one scope's ARM access token and refreshes it when azure-core would.

    Each refresh asks the credential for `get_token_info` when it has it (azure-core's
    `AsyncSupportsTokenInfo`, as every azure-identity credential and `StaticTokenCredential`
    do), which carries MSAL's `refresh_on`, else for `get_token`. The token is reused until
    `refresh_due_at` says otherwise: azure-core's timing, read from the injected clock.
    azure-core has no public function for that decision (its policy keeps it in private code
    that reads `time.time()`), so it is written here; tests/test_credentials.py checks it
    against azure-core's own `AsyncBearerTokenCredentialPolicy`, and shows the one addition.

    Concurrent callers share one refresh (an anyio lock). The cache never logs or shows the
    token; its repr names the scope only.

    Args:
        credential: an open `AsyncTokenCredential` or `AsyncSupportsTokenInfo` (the caller owns
            and closes it).
        scope: the token scope, e.g. `https://management.azure.com/.default`.
        clock: the wall clock that expiry times are compared with.
        secrets: configured secrets (`credential_secrets(azure)`) that an error message must
            never show; a `StaticTokenCredential`'s token and the tokens this cache holds are
            always hidden too.
        name: what the error messages call the credential, e.g. `credential 'contoso'`;
            the credential's class name when None.
    """

    __slots__ = (
        "_clock",
        "_credential",
        "_generation",
        "_lock",
        "_name",
        "_refresh_at",
        "_scope",
        "_secrets",
        "_token",
    )

    def __init__(
        self,
        credential: AsyncTokenProvider,
        scope: str,
        clock: Clock,
        *,
        secrets: Iterable[str] = (),
        name: str | None = None,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._refresh_at = -math.inf
        self._generation = 0
        self._name = name
        hidden = set(secrets)
        if isinstance(credential, StaticTokenCredential):
            hidden.add(credential._token)
        self._secrets = hidden

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "empty"
        return f"TokenCache(scope={self._scope!r}, {state})"

    @property
    def scope(self) -> str:
        """The scope tokens are requested for."""
        return self._scope

    async def token(self, *, force_refresh: bool = False, rejected: str | None = None) -> str:
        """A valid bearer token for the scope, from the cache when it is still fresh.

        Args:
            force_refresh: get a new token even if the cached one looks valid (after ARM
                answered 401). Callers that force a refresh at the same time share one.
            rejected: with `force_refresh`, the token ARM refused; when the cache already
                holds a different fresh token (another caller refreshed since), that one is
                returned instead of refreshing again.

        Raises:
            StartupError: the credential failed before it ever gave a token (no usable
                credential: the daemon cannot start).
            ArmAuthError: the credential failed to refresh a token it gave before; `url` is
                the token scope. Either message carries the credential's whole diagnostic
                (every line, redacted, at most `MAX_DETAIL_CHARS`), never a secret or a token.
        """
        seen = self._generation
        cached = self._usable(force_refresh, rejected)
        if cached is not None:
            return cached
        async with self._lock:
            # Another caller refreshed while this one waited for the lock: use its token.
            cached = self._token if self._generation != seen else None
            cached = cached or self._usable(force_refresh, rejected)
            if cached is not None:
                return cached
            return await self._refresh()

    def _usable(self, force_refresh: bool, rejected: str | None) -> str | None:
        """The cached token if it may be returned without a refresh, else None."""
        token = self._token
        if token is None or self._clock.utcnow().timestamp() >= self._refresh_at:
            return None
        if force_refresh and (rejected is None or token == rejected):
            return None
        return token

    async def _fetch(self) -> tuple[str, float, float | None]:
        """The credential's token, its expiry and its refresh_on (None: not given)."""
        credential = self._credential
        if isinstance(credential, AsyncSupportsTokenInfo):
            info = await credential.get_token_info(self._scope)
            return info.token, float(info.expires_on), info.refresh_on
        access: AccessToken = await credential.get_token(self._scope)
        return access.token, float(access.expires_on), None

    async def _refresh(self) -> str:
        now = self._clock.utcnow().timestamp()
        try:
            token, expires_on, refresh_on = await self._fetch()
        except Exception as exc:
            raise self._failure(exc) from exc
        if not isinstance(token, str) or not token:
            raise self._failure(None)
        renewed = token != self._token
        self._token = token
        self._secrets.add(token)
        self._refresh_at = refresh_due_at(
            obtained_at=now, expires_on=expires_on, refresh_on=refresh_on
        )
        self._generation += 1
        log.debug(
            "credential.token_refreshed",
            scope=self._scope,
            renewed=renewed,
            expires_in_s=round(expires_on - now),
            refresh_on_given=refresh_on is not None,
            refresh_in_s=round(self._refresh_at - now),
        )
        return token

    def _failure(self, exc: Exception | None) -> StartupError | ArmAuthError:
        credential = self._name or type(self._credential).__name__
        if exc is None:
            detail = "it returned an empty token"
        elif isinstance(exc, ClientAuthenticationError):
            detail = f"authentication failed: {upstream_detail(exc, self._secrets)}"
        else:
            detail = f"{type(exc).__name__}: {upstream_detail(exc, self._secrets)}"
        message = f"{credential} could not get a token for {self._scope}: {detail}"
        if self._generation == 0:
            return StartupError(message)
        return ArmAuthError(message, url=self._scope)
