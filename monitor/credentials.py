"""Azure credentials for ARM: choosing one from settings, and caching its bearer tokens."""

# Rule: a secret (client secret, static token, access token) never appears in a repr, a log
# entry or an exception message. Nothing here talks to ARM; `arm.py` asks `TokenCache` for tokens.

from __future__ import annotations

import math
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

__all__ = ["StaticTokenCredential", "TokenCache", "build_credential"]

log = structlog.get_logger(__name__)

# A token is refreshed this long before it expires, or at half its lifetime if that is sooner.
REFRESH_MARGIN_S: Final = 300.0
# StaticTokenCredential's tokens "expire" at 2100-01-01T00:00:00Z, so TokenCache never refreshes.
_STATIC_EXPIRES_ON: Final = 4_102_444_800
# An upstream error message is cut to this many characters before it goes into ours.
_MAX_DETAIL: Final = 300


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
            f"azure.credential = {kind!r}: cannot build the credential: {_detail(exc)}"
        ) from exc


def _host_of(authority: str) -> str:
    rest = authority.split("://", 1)[-1]
    return rest.split("/", 1)[0]


class TokenCache:
    """Caches one scope's ARM access token and refreshes it before it expires.

    A token is reused until `REFRESH_MARGIN_S` (5 minutes) before it expires, or until half its
    lifetime has passed if that is sooner. Concurrent callers share one refresh (an anyio lock).
    The cache never logs or shows the token; its repr names the scope only.

    Args:
        credential: an open `AsyncTokenCredential` (the caller owns and closes it).
        scope: the token scope, e.g. `https://management.azure.com/.default`.
        clock: the wall clock that expiry times are compared with.
    """

    __slots__ = ("_clock", "_credential", "_generation", "_lock", "_refresh_at", "_scope", "_token")

    def __init__(self, credential: AsyncTokenCredential, scope: str, clock: Clock) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._refresh_at = -math.inf
        self._generation = 0

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
                the token scope. Neither message contains a secret or a token.
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
        credential = type(self._credential).__name__
        if exc is None:
            detail = "it returned an empty token"
        elif isinstance(exc, ClientAuthenticationError):
            detail = f"authentication failed: {_detail(exc)}"
        else:
            detail = f"{type(exc).__name__}: {_detail(exc)}"
        message = f"{credential} could not get a token for {self._scope}: {detail}"
        if self._generation == 0:
            return StartupError(message)
        return ArmAuthError(message, url=self._scope)


def _detail(exc: BaseException) -> str:
    """The first line of an upstream error message, cut short."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
