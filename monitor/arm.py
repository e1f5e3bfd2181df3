"""ArmClient: paced, origin-pinned, read-only calls to Azure Resource Manager over aiohttp."""

# Rules:
# - This is the only module that catches aiohttp exceptions; each one is re-raised as an
#   ArmError subclass `from` the original.
# - Only GET is ever sent (`_send` has no other verb): the monitor never writes to ARM.
# - The bearer token goes only to the configured ARM origin; every URL (ours and ARM's
#   nextLinks) is checked before anything is sent.
# - Every request spends one read of its scope's budget first, and every response's headers
#   (any status) are fed back to that budget.
# - Every request that left the process is reported once to the ArmObserver, if one is given,
#   with the kind its caller knew (never re-derived from the URL), answered or not.
# - A response's Retry-After is parsed once, in `_send`; the budget, the errors, the operation
#   replies and the observer all get those seconds.
# - Nothing ARM sends is read without a bound: each answer stops at azure.max_response_bytes
#   (checked while reading), each list call at azure.max_list_pages pages and
#   azure.max_list_bytes bytes; passing one raises ArmLimitExceeded naming the key.

from __future__ import annotations

import random
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
import orjson
import structlog
from multidict import CIMultiDictProxy
from yarl import URL

from monitor import __version__
from monitor.clock import Clock
from monitor.config import AzureSettings, is_loopback_host
from monitor.core.budget import parse_retry_after
from monitor.core.ids import check_path_segment, check_subscription_id
from monitor.core.jobs import BackupJob, JobDetails, parse_job_details, parse_jobs_page
from monitor.core.json_depth import MAX_DEPTH, is_too_deep, loads_bounded
from monitor.core.vaults import (
    VaultRef,
    parse_subscriptions_page,
    parse_vault_id,
    parse_vaults_page,
)
from monitor.core.wire import build_jobs_filter
from monitor.credentials import TokenCache
from monitor.errors import (
    ArmAuthError,
    ArmError,
    ArmForbidden,
    ArmLimitExceeded,
    ArmNotFound,
    ArmServerError,
    ArmThrottled,
    ArmTransportError,
    ConfigError,
    ForeignOriginError,
    ParseError,
)
from monitor.pacing import BudgetBook, scope_of_path

__all__ = [
    "ArmCallKind",
    "ArmClient",
    "ArmObserver",
    "OperationReply",
    "arm_origin",
    "make_ssl_context",
    "open_session",
]

log = structlog.get_logger(__name__)

USER_AGENT: Final = f"backup-job-monitor/{__version__}"
CONNECTION_LIMIT: Final = 100
DNS_CACHE_TTL_S: Final = 300
# ARM messages quoted in our errors are cut to this many characters.
_MAX_MESSAGE: Final = 300
# Characters left as they are in a resource-id path; everything else is percent-encoded once.
_PATH_SAFE: Final = "/()!$&'*+,;=:@-._~"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class ArmCallKind(StrEnum):
    """What one ARM request reads, as its caller knew it (the `kind` an ArmObserver is told)."""

    SUBSCRIPTIONS_LIST = "subscriptions_list"
    """A page of `GET /subscriptions` (tenant-scoped)."""
    VAULTS_LIST = "vaults_list"
    """A page of a subscription's Recovery Services vaults."""
    VAULT_GET = "vault_get"
    """One vault."""
    JOBS_LIST = "jobs_list"
    """A page of a vault's backup jobs (the first or a nextLink)."""
    JOB_GET = "job_get"
    """One backup job with its details."""
    OTHER = "other"
    """Anything else (an async-operation URL)."""


class ArmObserver(Protocol):
    """Told of every request an ArmClient sent, once each, when it ended (metrics).

    Called synchronously on the event loop: it must be quick and must not raise.
    """

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
        """One request ended.

        Args:
            scope: its budget scope: the lower-cased subscription id, or `"tenant"`.
            kind: what it read.
            status: the HTTP status, or None when no answer came (connection failure, timeout
                or cancellation before the headers).
            duration_s: from sending to the end of the body (or the failure), on the client's
                clock.
            headers: the response headers (None without an answer).
            retry_after_s: the answer's `Retry-After` in seconds, when present and readable.
        """


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
    """
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


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: URL) -> _Origin:
        scheme = url.scheme.lower()
        host = (url.host or "").lower().rstrip(".")
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme)
        return cls(scheme, host, port)

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
    return str(_Origin.of(URL(url)))


@dataclass(frozen=True, slots=True)
class _Answer:
    """What `_send` got back: any status, the headers, the body and its parsed Retry-After."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    retry_after_s: float | None


@dataclass(frozen=True, slots=True)
class _Reply:
    """A 2xx answer: its decoded JSON, its size and where it came from."""

    payload: object
    url: URL
    status: int
    request_id: str | None
    correlation_id: str | None
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _BodyCap:
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


class _Page(Protocol):
    @property
    def skipped(self) -> tuple[ParseError, ...]: ...

    @property
    def next_link(self) -> str | None: ...


_P = TypeVar("_P", bound=_Page)


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationReply:
    """ARM's 2xx answer to a GET of an async-operation URL (see `ArmClient.get_operation`).

    Attributes:
        status: 200, 201, 202 or 204 (202: the operation still runs).
        payload: the decoded JSON body, or None when the body was empty.
        retry_after_s: the `Retry-After` header in seconds, when present and readable.
        location: the `Location` header verbatim, when present (not checked here: it is a URL
            like any other and goes through `get_operation`'s origin check if followed).
        request_id: `x-ms-request-id`, when present.
    """

    status: int
    payload: object
    retry_after_s: float | None
    location: str | None
    request_id: str | None


class ArmClient:
    """Read-only Azure Resource Manager client for Recovery Services vaults and backup jobs.

    Its public methods are the `JobSource` protocol the scheduler polls through. Every request
    is one read of its scope's budget (a subscription, or the tenant for `list_subscriptions`);
    a 429 pauses that whole scope for every caller and is raised, never retried here.

    Args:
        session: an open session from `open_session` (the caller owns and closes it).
        tokens: the ARM token cache.
        azure: endpoint, api-versions and transport settings.
        budgets: the shared read budgets.
        clock: times each request, for the messages of transport errors and the observer's
            durations (the budgets wait on their own clock, normally the same one).
        rng: draws `x-ms-client-request-id` values.
        observer: told of every request sent (kind, status, duration); None reports nothing.

    Raises:
        ConfigError: (`azure.arm_endpoint`) the endpoint is not https, or plain http to a
            non-loopback host or without `allow_http_loopback`.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        azure: AzureSettings,
        budgets: BudgetBook,
        clock: Clock,
        rng: random.Random,
        observer: ArmObserver | None = None,
    ) -> None:
        endpoint = URL(azure.arm_endpoint)
        origin = _Origin.of(endpoint)
        if not endpoint.is_absolute() or not self._scheme_allowed(origin, azure):
            raise ConfigError(
                "azure.arm_endpoint",
                "must be https, or http to a loopback host with azure.allow_http_loopback = "
                f"true, got {azure.arm_endpoint!r}",
            )
        self._session = session
        self._tokens = tokens
        self._azure = azure
        self._budgets = budgets
        self._clock = clock
        self._rng = rng
        self._observer = observer
        self._origin = origin
        self._base = azure.arm_endpoint.rstrip("/")
        self._response_cap = _BodyCap(
            allowed=azure.max_response_bytes,
            key="azure.max_response_bytes",
            setting=azure.max_response_bytes,
        )
        # Decoding around a too-deep value is pure Python (seconds for tens of MiB): one at a
        # time, off the event loop.
        self._deep_json = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"ArmClient(origin={str(self._origin)!r})"

    # ------------------------------------------------------------------ JobSource

    async def list_subscriptions(self) -> list[str]:
        """Every subscription the identity can see, except Disabled and Deleted ones.

        Tenant-scoped (`GET /subscriptions`), paged; ids are lower-cased, each listed once. An
        item whose id is not a GUID is logged (`arm.subscription_skipped`, with its JSON path)
        and skipped.

        Raises:
            ArmError: any subclass, as mapped by the status (see the module rules);
                ForeignOriginError when a nextLink leaves the ARM origin.
        """
        url = self._url("/subscriptions", {"api-version": self._azure.subscriptions_api_version})
        ids: dict[str, None] = {}
        pages = await self._paged(
            url,
            ArmCallKind.SUBSCRIPTIONS_LIST,
            parse_subscriptions_page,
            "arm.subscription_skipped",
        )
        for page in pages:
            ids.update(dict.fromkeys(page.ids))
        return list(ids)

    async def list_vaults(self, subscription_id: str) -> list[VaultRef]:
        """Every Recovery Services vault in a subscription, with its location.

        Paged; an item that is not a vault, or whose id holds a name that is not one safe URL
        path segment, is logged (`arm.vault_skipped`, with its JSON path) and skipped.

        Raises:
            ParseError: `subscription_id` is not a GUID (nothing is sent).
            ArmNotFound: the subscription does not exist (or is not visible).
            ArmError: any other subclass, as mapped by the status.
        """
        check_subscription_id(subscription_id, path="subscription_id")
        url = self._url(
            f"/subscriptions/{subscription_id}/providers/Microsoft.RecoveryServices/vaults",
            {"api-version": self._azure.vaults_api_version},
        )
        pages = await self._paged(
            url,
            ArmCallKind.VAULTS_LIST,
            parse_vaults_page,
            "arm.vault_skipped",
            subscription=subscription_id,
        )
        return [vault for page in pages for vault in page.vaults]

    async def get_vault(self, vault_id: str) -> VaultRef:
        """Read one vault to learn its location (and that it still exists).

        Raises:
            ParseError: `vault_id` is not a vault resource id (nothing is sent).
            ArmNotFound: the vault or its subscription is gone.
            ArmForbidden: the identity may not read it.
            ArmTransportError: the answer is not a vault.
            ArmError: any other subclass, as mapped by the status.
        """
        wanted = parse_vault_id(vault_id)
        reply = await self._get(
            self._url(wanted.id, {"api-version": self._azure.vaults_api_version}),
            ArmCallKind.VAULT_GET,
        )
        payload = reply.payload
        try:
            if not isinstance(payload, dict):
                raise ParseError("", f"expected an object, got {type(payload).__name__}")
            location = payload.get("location")
            if location is not None and not isinstance(location, str):
                raise ParseError("location", "expected a string")
            got = payload.get("id")
            resource_id = got if isinstance(got, str) and got.lower() == wanted.key else wanted.id
            return parse_vault_id(resource_id, location=location)
        except ParseError as exc:
            raise self._shape_error(reply, "a vault", exc) from exc

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]:
        """The vault's jobs that started in [start_at, end_at], following every nextLink.

        The `$filter` is percent-encoded once; ARM's nextLinks are followed exactly as given.
        Each page is one read of the subscription's budget. A malformed job is logged
        (`arm.job_skipped`, with the vault and its JSON path) and skipped; it never fails the
        vault. Jobs come in ARM's order (newest first), as listed.

        Raises:
            ValueError: a naive datetime, or `end_at` before `start_at` (nothing is sent).
            ArmNotFound: the vault is gone. ArmForbidden: the identity may not read its jobs.
            ArmThrottled: the subscription's budget is paused for `retry_after_s`.
            ForeignOriginError: a nextLink points outside the ARM origin (nothing sent there).
            ArmError: any other subclass, as mapped by the status.
        """
        url = self._url(
            f"{vault.id}/backupJobs",
            {
                "api-version": self._azure.api_version,
                "$filter": build_jobs_filter(start_at, end_at),
            },
        )
        pages = await self._paged(
            url,
            ArmCallKind.JOBS_LIST,
            lambda p: parse_jobs_page(p, vault),
            "arm.job_skipped",
            vault=vault.id,
        )
        return [job for page in pages for job in page.jobs]

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails:
        """One job with its error details, tasks and property bag.

        Raises:
            ParseError: `job_name` is not one safe URL path segment (nothing is sent). The
                parsers and the command line refuse such names before they get here.
            ArmNotFound: the job or the vault is gone.
            ArmTransportError: the answer is not a job (the message names the JSON path).
            ArmError: any other subclass, as mapped by the status.
        """
        check_path_segment(job_name, "job name", path="job_name")
        reply = await self._get(
            self._url(
                f"{vault.id}/backupJobs/{job_name}", {"api-version": self._azure.api_version}
            ),
            ArmCallKind.JOB_GET,
        )
        try:
            details = parse_job_details(reply.payload, vault)
        except ParseError as exc:
            raise self._shape_error(reply, "a backup job", exc) from exc
        for skipped in details.skipped:
            log.warning(
                "arm.job_detail_skipped",
                vault=vault.id,
                job=job_name,
                path=skipped.path,
                problem=skipped.problem,
            )
        return details

    async def get_operation(self, url: str) -> OperationReply:
        """GET an async-operation URL exactly as ARM gave it (`Azure-AsyncOperation`/`Location`).

        The URL's origin is checked before anything is sent (the token goes only to the
        configured ARM origin); the read is paced by the budget of the subscription in its path,
        and a 401 refreshes the token once, as for every other read. Any 2xx is returned, with
        an empty body as `payload=None`; other statuses raise as for every other read.

        Raises:
            ValueError: `url` is not an absolute URL (nothing is sent).
            ForeignOriginError: `url` is outside the configured ARM origin (nothing is sent).
            ArmNotFound, ArmForbidden, ArmThrottled, ArmServerError, ArmAuthError: as mapped
                from the status.
            ArmTransportError: no answer, or a non-empty 2xx body that is not JSON.
        """
        target = URL(url, encoded=True)
        if not target.is_absolute():
            raise ValueError(f"an operation URL must be absolute, got {url!r}")
        self._check_origin(target, referrer=None)
        scope = scope_of_path(target.path)
        rejected: str | None = None
        for attempt in (1, 2):
            await self._budgets.acquire(scope)
            token = await self._tokens.token(force_refresh=attempt > 1, rejected=rejected)
            answer = await self._send(target, token, scope, ArmCallKind.OTHER)
            if answer.status == 401 and attempt == 1:
                rejected = token
                continue
            if 200 <= answer.status < 300 and not answer.body.strip():
                payload: object = None
            else:
                payload = (await self._reply(target, scope, answer)).payload
            return OperationReply(
                status=answer.status,
                payload=payload,
                retry_after_s=answer.retry_after_s,
                location=answer.headers.get("Location"),
                request_id=answer.headers.get("x-ms-request-id"),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def rate_per_s(self, subscription_id: str) -> float:
        """The read rate the subscription's budget grants now (for the planner)."""
        return self._budgets.rate_per_s(subscription_id)

    # ------------------------------------------------------------------ URLs

    @staticmethod
    def _scheme_allowed(origin: _Origin, azure: AzureSettings) -> bool:
        if origin.scheme == "https":
            return bool(origin.host)
        return (
            origin.scheme == "http" and azure.allow_http_loopback and is_loopback_host(origin.host)
        )

    def _url(self, path: str, query: Mapping[str, str]) -> URL:
        """An ARM URL from a resource path and query, each percent-encoded exactly once."""
        # quote(safe="") gives %20 for spaces and %27 for quotes, as ARM's own clients send.
        encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in query.items())
        return URL(f"{self._base}{quote(path, safe=_PATH_SAFE)}?{encoded}", encoded=True)

    def _next_url(self, current: URL, next_link: str) -> URL:
        """The URL of a nextLink, exactly as ARM wrote it (relative links resolve on `current`)."""
        link = URL(next_link, encoded=True)
        return link if link.is_absolute() else current.join(link)

    def _check_origin(self, url: URL, *, referrer: URL | None) -> None:
        origin = _Origin.of(url)
        # The configured origin passed _scheme_allowed in __init__, so equality is enough.
        if origin == self._origin and url.user is None and url.password is None:
            return
        via = f" (nextLink of GET {referrer})" if referrer is not None else ""
        refused = f"{origin}" if url.user is None else f"{origin} with user info"
        raise ForeignOriginError(
            f"refused to send the ARM token to {refused}{via}: only the configured ARM "
            f"origin {self._origin} is trusted",
            url=str(url),
        )

    # ------------------------------------------------------------------ requests

    async def _paged(
        self,
        url: URL,
        kind: ArmCallKind,
        parse: Callable[[object], _P],
        skipped_event: str,
        **context: str,
    ) -> list[_P]:
        """Every page from `url` on, parsed; follows nextLink until there is none.

        Each item a parser skipped is logged as `skipped_event` with `context`, the page
        number and the item's JSON path.

        Raises:
            ArmLimitExceeded: the call would read more than `azure.max_list_pages` pages or
                `azure.max_list_bytes` bytes (nothing more is requested or read).
        """
        first = url
        pages: list[_P] = []
        read = 0
        seen = {str(url)}
        referrer: URL | None = None
        while True:
            body_cap = self._list_cap(first, read, pages)
            reply = await self._get(url, kind, referrer=referrer, cap=body_cap)
            read += reply.size
            try:
                page = parse(reply.payload)
            except ParseError as exc:
                raise self._shape_error(reply, "a list page", exc) from exc
            for skipped in page.skipped:
                log.warning(
                    skipped_event,
                    **context,
                    page=len(pages),
                    path=skipped.path,
                    problem=skipped.problem,
                )
            pages.append(page)
            if not page.next_link:
                return pages
            for cap, limit, used, what in (
                ("max_list_pages", self._azure.max_list_pages, len(pages), f"{len(pages)} pages"),
                ("max_list_bytes", self._azure.max_list_bytes, read, f"{read} bytes"),
            ):
                if used >= limit:
                    over = "" if cap == "max_list_pages" else f" over {len(pages)} pages"
                    raise ArmLimitExceeded(
                        f"stopped paging GET {first}: {what} read{over}, the cap azure.{cap} "
                        f"(ARM still sent a nextLink)",
                        url=str(url),
                        cap=f"azure.{cap}",
                        limit=limit,
                        status=reply.status,
                        request_id=reply.request_id,
                        correlation_id=reply.correlation_id,
                    )
            referrer, url = url, self._next_url(url, page.next_link)
            if str(url) in seen:
                raise ArmTransportError(
                    f"ARM's nextLink repeats an earlier page; stopped paging (GET {referrer})",
                    url=str(url),
                    status=reply.status,
                    request_id=reply.request_id,
                    correlation_id=reply.correlation_id,
                )
            seen.add(str(url))

    def _list_cap(self, first: URL, read: int, pages: Sequence[object]) -> _BodyCap:
        """The cap on the next page of a list call that has read `read` bytes so far."""
        left = self._azure.max_list_bytes - read
        if left >= self._response_cap.allowed:
            return self._response_cap
        return _BodyCap(
            allowed=left,
            key="azure.max_list_bytes",
            setting=self._azure.max_list_bytes,
            listing=first,
            read=read,
            pages=len(pages),
        )

    async def _get(
        self,
        url: URL,
        kind: ArmCallKind,
        *,
        referrer: URL | None = None,
        cap: _BodyCap | None = None,
    ) -> _Reply:
        """GET `url` as ARM JSON: origin check, budget, token, one retry after a 401."""
        self._check_origin(url, referrer=referrer)
        scope = scope_of_path(url.path)
        rejected: str | None = None
        for attempt in (1, 2):
            await self._budgets.acquire(scope)
            token = await self._tokens.token(force_refresh=attempt > 1, rejected=rejected)
            answer = await self._send(url, token, scope, kind, cap)
            if answer.status == 401 and attempt == 1:
                code, _ = _arm_error(answer.body)
                log.info(
                    "arm.token_rejected",
                    url=str(url),
                    code=code,
                    request_id=answer.headers.get("x-ms-request-id"),
                )
                rejected = token
                continue
            return await self._reply(url, scope, answer)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        url: URL,
        token: str,
        scope: str,
        kind: ArmCallKind,
        cap: _BodyCap | None = None,
    ) -> _Answer:
        """One GET; the only place a request leaves the process. Any status is returned.

        The body is read up to `cap` (by default `azure.max_response_bytes`): a Content-Length
        above it is refused before reading, and a chunked or compressed body is read in chunks
        and cut off once it passes the cap; either way the connection is dropped. However it
        ends, the request is reported once to the observer as `kind`.

        Raises:
            ArmLimitExceeded: the body is bigger than `cap`.
            ArmTransportError: no answer, or the body broke off.
        """
        request_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "x-ms-client-request-id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            "x-ms-return-client-request-id": "true",
        }
        started = self._clock.monotonic()
        status: int | None = None
        headers: CIMultiDictProxy[str] | None = None
        retry_after_s: float | None = None
        try:
            async with self._session.get(
                url, headers=request_headers, allow_redirects=False
            ) as response:
                status, headers = response.status, response.headers
                retry_after_s = parse_retry_after(headers.get("Retry-After"))
                # Fed before the body is read, so a truncated answer still paces the scope.
                self._budgets.observe(scope, headers)
                try:
                    body = await _read_body(response, url, cap or self._response_cap)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise ArmTransportError(
                        f"ARM's answer to GET {url} broke off after "
                        f"{self._clock.monotonic() - started:.1f} s: {_describe(exc)}",
                        url=str(url),
                        status=response.status,
                        request_id=response.headers.get("x-ms-request-id"),
                        correlation_id=response.headers.get("x-ms-correlation-request-id"),
                    ) from exc
                return _Answer(status, headers, body, retry_after_s)
        except ArmError:
            raise
        except aiohttp.ClientSSLError as exc:
            raise ArmTransportError(
                f"TLS to {self._origin} failed (certificate not trusted? set azure.ca_bundle "
                f"for a private CA): GET {url}: {_describe(exc)}",
                url=str(url),
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ArmTransportError(
                f"no answer from ARM to GET {url} after {self._clock.monotonic() - started:.1f} s: "
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

    async def _reply(self, url: URL, scope: str, answer: _Answer) -> _Reply:
        """Decode a 2xx answer, or raise the ArmError its status maps to."""
        status, headers, body = answer.status, answer.headers, answer.body
        ids = {
            "request_id": headers.get("x-ms-request-id"),
            "correlation_id": headers.get("x-ms-correlation-request-id"),
        }
        if 200 <= status < 300:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                problem: orjson.JSONDecodeError | None = exc
                if is_too_deep(exc):
                    payload, problem = await self._decode_too_deep(url, body, ids)
                if problem is not None:
                    kind = headers.get("Content-Type", "no content type")
                    deep = "nested deeper than 1024 levels, and " if problem is not exc else ""
                    raise ArmTransportError(
                        f"ARM answered {status} to GET {url} with a body that is {deep}not JSON "
                        f"({kind}, {len(body)} bytes; request id {ids['request_id']})",
                        url=str(url),
                        status=status,
                        **ids,
                    ) from problem
            return _Reply(payload=payload, url=url, status=status, size=len(body), **ids)
        code, message = _arm_error(body)
        request_id, correlation_id = ids["request_id"], ids["correlation_id"]
        text = (
            f"ARM answered {status} {code or '(no code)'} to GET {url}: "
            f"{message or '(no message)'} (request id {request_id})"
        )
        if status == 429:
            asked = answer.retry_after_s
            retry_after_s = self._budgets.default_retry_after_s(scope) if asked is None else asked
            if self._budgets.throttled(scope, asked):
                log.warning(
                    "arm.throttled",
                    scope=scope,
                    retry_after_s=retry_after_s,
                    code=code,
                    url=str(url),
                    request_id=request_id,
                )
            raise ArmThrottled(
                text,
                url=str(url),
                retry_after_s=retry_after_s,
                code=code,
                request_id=request_id,
                correlation_id=correlation_id,
            )
        error: type[ArmError] = ArmError
        if status == 401:
            error, text = ArmAuthError, text + "; the token was refreshed once already"
        elif status == 403:
            error = ArmForbidden
        elif status == 404:
            error = ArmNotFound
        elif status >= 500:
            error = ArmServerError
        raise error(
            text,
            url=str(url),
            status=status,
            code=code,
            request_id=request_id,
            correlation_id=correlation_id,
        )

    async def _decode_too_deep(
        self, url: URL, body: bytes, ids: Mapping[str, str | None]
    ) -> tuple[object, orjson.JSONDecodeError | None]:
        """Decode a body orjson refused as too deep, each too-deep value replaced by null.

        The parsers then keep or skip the items that held one by their own rules; the
        replaced values are logged once per answer (`arm.json_too_deep`, with their paths).
        Returns the payload, or the decode error when the rest is not JSON either.
        """
        try:
            bounded = await anyio.to_thread.run_sync(
                loads_bounded, body, limiter=self._deep_json, abandon_on_cancel=True
            )
        except orjson.JSONDecodeError as exc:
            return None, exc
        log.warning(
            "arm.json_too_deep",
            url=str(url),
            max_depth=MAX_DEPTH,
            replaced=bounded.removed_count,
            paths=list(bounded.removed),
            request_id=ids["request_id"],
        )
        return bounded.value, None

    def _shape_error(self, reply: _Reply, what: str, exc: ParseError) -> ArmTransportError:
        return ArmTransportError(
            f"ARM answered GET {reply.url} with JSON that is not {what}: {exc} "
            f"(request id {reply.request_id})",
            url=str(reply.url),
            status=reply.status,
            request_id=reply.request_id,
            correlation_id=reply.correlation_id,
        )


async def _read_body(response: aiohttp.ClientResponse, url: URL, cap: _BodyCap) -> bytes:
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


def _arm_error(body: bytes) -> tuple[str | None, str | None]:
    """ARM's error code and message from `{error:{code,message}}` or a bare `{code,message}`.

    An empty, HTML or otherwise unexpected body gives (None, None).
    """
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    inner = doc.get("error")
    if isinstance(inner, dict):
        doc = inner
    code, message = doc.get("code"), doc.get("message")
    if isinstance(message, str) and len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else None,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
