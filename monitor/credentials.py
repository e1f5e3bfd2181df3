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
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from monitor.config import is_loopback_host
from monitor.errors import ArmAuthError, StartupError

if TYPE_CHECKING:
    from types import TracebackType

    from azure.core.credentials_async import AsyncTokenCredential

    from monitor.clock import Clock
    from monitor.config import AzureSettings

__all__ = [
    "MAX_DETAIL_CHARS",
    "StaticTokenCredential",
    "TokenCache",
    "build_credential",
    "credential_secrets",
    "redact_secrets",
    "upstream_detail",
]

log = structlog.get_logger(__name__)

# A token is refreshed this long before it expires, or at half its lifetime if that is sooner.
REFRESH_MARGIN_S: Final = 300.0
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
    """An `AsyncTokenCredential` that always returns one fixed bearer token.

    For the emulator and tests only: the configuration refuses `credential = 'static'` unless
    the ARM endpoint is a loopback host. Its repr never shows the token.
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


class TokenCache:
    """Caches one scope's ARM access token and refreshes it before it expires.

    A token is reused until `REFRESH_MARGIN_S` (5 minutes) before it expires, or until half its
    lifetime has passed if that is sooner. Concurrent callers share one refresh (an anyio lock).
    The cache never logs or shows the token; its repr names the scope only.

    Args:
        credential: an open `AsyncTokenCredential` (the caller owns and closes it).
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
        credential: AsyncTokenCredential,
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

    async def _refresh(self) -> str:
        now = self._clock.utcnow().timestamp()
        try:
            access = await self._credential.get_token(self._scope)
        except Exception as exc:
            raise self._failure(exc) from exc
        if not isinstance(access.token, str) or not access.token:
            raise self._failure(None)
        lifetime = max(0.0, float(access.expires_on) - now)
        self._token = access.token
        self._secrets.add(access.token)
        self._refresh_at = float(access.expires_on) - min(REFRESH_MARGIN_S, lifetime / 2)
        self._generation += 1
        log.debug(
            "credential.token_refreshed",
            scope=self._scope,
            expires_in_s=round(lifetime),
            refresh_in_s=round(self._refresh_at - now),
        )
        return access.token

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
