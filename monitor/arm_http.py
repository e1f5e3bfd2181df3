"""The HTTP under ArmClient: TLS, the session, origin pinning, one bounded request (`Sender`)."""

# Rules:
# - This is the only module that catches aiohttp exceptions; each one is re-raised as an
#   ArmError subclass `from` the original.
# - Only reads are sent: GETs, and the POST of a Resource Graph query (`READ_ONLY_POSTS`, the
#   one path a POST may go to); the monitor never writes to ARM.
# - The bearer token goes only to the pinned ARM origin (`pin_origin`, `Origin.check`).
# - Every response's headers (any status) are fed to the scope's budget before its body is read.
# - Every request that left the process is reported once to the ArmObserver, if one is given,
#   with the kind its caller knew (never re-derived from the URL), answered or not.
# - A response's Retry-After is parsed once, in `Sender.get`; the budget, the errors, the
#   operation replies and the observer all get those seconds.
# - No answer is read without a bound: `Sender.get` stops at its BodyCap (checked while
#   reading) and raises ArmLimitExceeded naming the setting.

from __future__ import annotations

import asyncio.sslproto
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from monitor import __version__
from monitor.arm_observer import ArmCallKind, ArmObserver
from monitor.clock import Clock
from monitor.config import AzureSettings, is_loopback_host
from monitor.core.budget import parse_retry_after
from monitor.errors import (
    ArmError,
    ArmLimitExceeded,
    ArmTransportError,
    ConfigError,
    ForeignOriginError,
)
from monitor.pacing import BudgetBook

__all__ = [
    "Answer",
    "BodyCap",
    "Origin",
    "Sender",
    "arm_origin",
    "cap_tls_read_buffer",
    "make_ssl_context",
    "open_session",
    "pin_origin",
    "request_id",
]

USER_AGENT: Final = f"backup-job-monitor/{__version__}"
CONNECTION_LIMIT: Final = 100
TLS_READ_BUFFER_BYTES: Final = 32 * 1024
"""The read buffer of one TLS connection (see `cap_tls_read_buffer`)."""
DNS_CACHE_TTL_S: Final = 300
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def make_ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A client TLS context: the system's CAs, plus those in `ca_bundle` when given.

    Raises:
        ConfigError: (`azure.ca_bundle`) the file cannot be read or holds no PEM certificate.
    """
    ctx = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("azure.ca_bundle", f"cannot load {str(ca_bundle)!r}: {exc}") from exc
    return ctx


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def cap_tls_read_buffer(size: int = TLS_READ_BUFFER_BYTES) -> None:
    """Give each TLS connection opened from now on a read buffer of at most `size` bytes.

    asyncio's TLS protocol (`asyncio.sslproto.SSLProtocol.max_size`, 256 KiB) allocates that
    much per connection, zero-filled, when it connects: 25 MiB resident over the session's
    `CONNECTION_LIMIT` connections, most of the 10,000-vault point's growth since 2026-11-25
    (docs/benchmarks.md). The buffer only bounds how many encrypted bytes one socket read
    takes; a TLS record is at most 16 KiB, so a longer answer is read in a few more loop
    iterations, and no answer is cut. Process-wide (a class attribute): it also applies to the
    sinks' HTTPS connections; it never raises the size.
    """
    protocol = asyncio.sslproto.SSLProtocol
    if getattr(protocol, "max_size", 0) > size:
        protocol.max_size = size


def open_session(
    azure: AzureSettings,
    ssl_context: ssl.SSLContext,
    *,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> aiohttp.ClientSession:
    """A ClientSession for ArmClient; the caller enters it with `async with` and closes it.

    TLS is verified with `ssl_context` (see `make_ssl_context`); each request may take
    `azure.request_timeout_s` in total; statuses are never raised, ArmClient maps them.
    `trace_configs` are aiohttp request hooks (tests); ArmClient's `observer` reports calls.
    Each TLS connection gets a small read buffer (`cap_tls_read_buffer`).
    """
    cap_tls_read_buffer()
    connector = aiohttp.TCPConnector(
        ssl=ssl_context, limit=CONNECTION_LIMIT, ttl_dns_cache=DNS_CACHE_TTL_S
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=azure.request_timeout_s),
        json_serialize=_json_dumps,
        raise_for_status=False,
        trace_configs=list(trace_configs) or None,
    )


# --------------------------------------------------------------------------------------------
# Origins


@dataclass(frozen=True, slots=True)
class Origin:
    """`scheme://host[:port]` of a URL, lower-cased, the default port filled in."""

    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: URL) -> Origin:
        """The origin of `url`."""
        scheme = url.scheme.lower()
        host = (url.host or "").lower().rstrip(".")
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme)
        return cls(scheme, host, port)

    def check(self, url: URL, *, referrer: URL | None) -> None:
        """Refuse `url` unless it is on this (pinned) origin and carries no user info.

        Raises:
            ForeignOriginError: it is not; the message names `referrer` (the page whose
                nextLink it was), when given.
        """
        # The common case without building an Origin: yarl's scheme and host are lower-cased
        # and its port filled in for http(s); anything else is normalised by `of` below.
        if (
            url.host == self.host
            and url.port == self.port
            and url.scheme == self.scheme
            and url.user is None
            and url.password is None
        ):
            return
        origin = Origin.of(url)
        # The pinned origin passed pin_origin's scheme check, so equality is enough.
        if origin == self and url.user is None and url.password is None:
            return
        via = f" (nextLink of GET {referrer})" if referrer is not None else ""
        refused = f"{origin}" if url.user is None else f"{origin} with user info"
        raise ForeignOriginError(
            f"refused to send the ARM token to {refused}{via}: only the configured ARM "
            f"origin {self} is trusted",
            url=str(url),
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS.get(self.scheme):
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


def arm_origin(url: str) -> str:
    """The origin of `url` as ArmClient compares it: `scheme://host[:port]`, lower-cased.

    The port is omitted when it is the scheme's default, so `https://management.azure.com:443`
    and `https://Management.Azure.com/x` have the same origin.
    """
    return str(Origin.of(URL(url)))


def pin_origin(azure: AzureSettings) -> Origin:
    """The origin of `azure.arm_endpoint`: the only one the token is ever sent to.

    Raises:
        ConfigError: (`azure.arm_endpoint`) the endpoint is not https, or plain http to a
            non-loopback host or without `allow_http_loopback`.
    """
    endpoint = URL(azure.arm_endpoint)
    origin = Origin.of(endpoint)
    if origin.scheme == "https":
        allowed = bool(origin.host)
    else:
        allowed = (
            origin.scheme == "http" and azure.allow_http_loopback and is_loopback_host(origin.host)
        )
    if not endpoint.is_absolute() or not allowed:
        raise ConfigError(
            "azure.arm_endpoint",
            "must be https, or http to a loopback host with azure.allow_http_loopback = "
            f"true, got {azure.arm_endpoint!r}",
        )
    return origin


# --------------------------------------------------------------------------------------------
# One GET


class Answer(NamedTuple):
    """What `Sender.get` got back: any status, the headers, the body and its parsed Retry-After.

    A named tuple, not a frozen dataclass: one is made for every request, and a tuple is built
    in C (a frozen dataclass sets each field through `object.__setattr__`)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    retry_after_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyCap:
    """How many bytes the next answer may have, and the setting that says so.

    For a page of a list call whose remaining `azure.max_list_bytes` is less than
    `azure.max_response_bytes`, the list's cap binds: `listing` is the list's first URL,
    `read` and `pages` what the call read before this page.
    """

    allowed: int
    key: str
    setting: int
    listing: URL | None = None
    read: int = 0
    pages: int = 0

    def exceeded(
        self, url: URL, got: int, *, declared: bool, response: aiohttp.ClientResponse
    ) -> ArmLimitExceeded:
        """The error for an answer of `got` bytes (its Content-Length when `declared`)."""
        size = f"its Content-Length is {got} bytes" if declared else f"{got} bytes read so far"
        if self.listing is None:
            text = (
                f"stopped reading ARM's answer to GET {url}: {size}, more than the cap "
                f"{self.key} ({self.setting} bytes)"
            )
        else:
            text = (
                f"stopped paging GET {self.listing}: page {self.pages + 1} ({size}) takes the "
                f"list past the cap {self.key} ({self.setting} bytes; {self.read} bytes read "
                f"over {self.pages} pages before it)"
            )
        return ArmLimitExceeded(
            text,
            url=str(url),
            cap=self.key,
            limit=self.setting,
            status=response.status,
            request_id=response.headers.get("x-ms-request-id"),
            correlation_id=response.headers.get("x-ms-correlation-request-id"),
        )


READ_ONLY_POSTS: Final = frozenset({"/providers/microsoft.resourcegraph/resources"})
"""Lower-cased paths a POST may go to: queries, which read and change nothing."""


class Sender:
    """Sends ArmClient's GETs: the only place a request leaves the process.

    Args:
        session: an open session from `open_session`.
        origin: the pinned ARM origin (for the message of a TLS failure).
        budgets: fed every answer's headers.
        clock: times each request.
        rng: draws `x-ms-client-request-id` values.
        observer: told of every request sent; None reports nothing.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        origin: Origin,
        budgets: BudgetBook,
        clock: Clock,
        rng: random.Random,
        observer: ArmObserver | None,
    ) -> None:
        self._session = session
        self._origin = origin
        self._budgets = budgets
        self._clock = clock
        self._rng = rng
        self._observer = observer

    async def get(
        self, url: URL, token: str, scope: str, kind: ArmCallKind, cap: BodyCap
    ) -> Answer:
        """One GET of `url` with `token`, paced as `scope`; any status is returned (`send`)."""
        return await self.send("GET", url, token, scope, kind, cap)

    async def send(
        self,
        method: str,
        url: URL,
        token: str,
        scope: str,
        kind: ArmCallKind,
        cap: BodyCap,
        body: bytes | None = None,
    ) -> Answer:
        """One request of `url` with `token`, paced as `scope`; any status is returned.

        `body`, when given, is sent as `application/json` (a Resource Graph query's POST).

        The body is read up to `cap`: a Content-Length above it is refused before reading,
        and a chunked or compressed body is read in chunks and cut off once it passes the
        cap; either way the connection is dropped. However it ends, the request is reported
        once to the observer as `kind`.

        Raises:
            ArmLimitExceeded: the body is bigger than `cap`.
            ArmTransportError: no answer, or the body broke off.
        """
        request_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "x-ms-client-request-id": request_id(self._rng.getrandbits(128)),
            "x-ms-return-client-request-id": "true",
        }
        if method != "GET" and (method != "POST" or url.path.lower() not in READ_ONLY_POSTS):
            raise ValueError(f"refused to send {method} {url}: the monitor only reads")
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        started = self._clock.monotonic()
        status: int | None = None
        headers: CIMultiDictProxy[str] | None = None
        retry_after_s: float | None = None
        try:
            async with self._session.request(
                method, url, headers=request_headers, data=body, allow_redirects=False
            ) as response:
                status, headers = response.status, response.headers
                retry_after_s = parse_retry_after(headers.get("Retry-After"))
                # Fed before the body is read, so a truncated answer still paces the scope.
                self._budgets.observe(scope, headers)
                try:
                    body = await _read_body(response, url, cap)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise ArmTransportError(
                        f"ARM's answer to {method} {url} broke off after "
                        f"{self._clock.monotonic() - started:.1f} s: {_describe(exc)}",
                        url=str(url),
                        status=response.status,
                        request_id=response.headers.get("x-ms-request-id"),
                        correlation_id=response.headers.get("x-ms-correlation-request-id"),
                    ) from exc
                return Answer(status, headers, body, retry_after_s)
        except ArmError:
            raise
        except aiohttp.ClientSSLError as exc:
            raise ArmTransportError(
                f"TLS to {self._origin} failed (certificate not trusted? set azure.ca_bundle "
                f"for a private CA): {method} {url}: {_describe(exc)}",
                url=str(url),
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ArmTransportError(
                f"no answer from ARM to {method} {url} after "
                f"{self._clock.monotonic() - started:.1f} s: "
                f"{_describe(exc)}",
                url=str(url),
            ) from exc
        finally:
            if self._observer is not None:
                self._observer.arm_call_finished(
                    scope=scope,
                    kind=kind,
                    status=status,
                    duration_s=self._clock.monotonic() - started,
                    headers=headers,
                    retry_after_s=retry_after_s,
                )


_UUID4_CLEAR: Final = ~((0xC000 << 48) | (0xF000 << 64))  # the variant and version bits
_UUID4_SET: Final = (0x8000 << 48) | (0x4000 << 64)  # RFC 4122 variant, version 4


def request_id(bits: int) -> str:
    """`str(uuid.UUID(int=bits, version=4))` for 128 random bits, formatted directly (half
    the cost of building a UUID; one is made for every request)."""
    h = f"{(bits & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


async def _read_body(response: aiohttp.ClientResponse, url: URL, cap: BodyCap) -> bytes:
    """The body of `response`, at most `cap.allowed` bytes (decoded, when compressed).

    Raises:
        ArmLimitExceeded: the body is bigger; the connection is dropped, not read to its end.
    """
    length = response.content_length
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if length is not None and encoding == "identity":
        # The common case: one read of a size known and allowed up front.
        if length > cap.allowed:
            _drop(response)
            raise cap.exceeded(url, length, declared=True, response=response)
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap.allowed:
            _drop(response)
            raise cap.exceeded(url, size, declared=False, response=response)
        chunks.append(chunk)
    return b"".join(chunks)


def _drop(response: aiohttp.ClientResponse) -> None:
    """Drop the connection of `response` now, without reading the rest of its body.

    Aborted rather than closed: a TLS close waits (in the background, up to asyncio's shutdown
    timeout) for the server's answer to close_notify, from a server already misbehaving.
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()
    response.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
