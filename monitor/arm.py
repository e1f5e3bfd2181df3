"""ArmClient: paced, origin-pinned, read-only calls to Azure Resource Manager over aiohttp."""

# Rules:
# - The HTTP is arm_http's (TLS, origin pinning, the one GET, the caps on each answer) and the
#   meaning of an answer arm_answers' (JSON, the error of each status); this module decides
#   what to read, in what order, and how often.
# - The bearer token goes only to the configured ARM origin; every URL (ours and ARM's
#   nextLinks) is checked before anything is sent.
# - Every request spends one read of its scope's budget first; a 401 refreshes the token and
#   is retried once; a 429 pauses the scope for every caller and is raised, never retried here.
# - Every request is reported to the ArmObserver with the kind its caller knew (ArmCallKind).
# - Nothing ARM sends is read without a bound: each answer stops at azure.max_response_bytes,
#   each list call at azure.max_list_pages pages and azure.max_list_bytes bytes; passing one
#   raises ArmLimitExceeded naming the key.

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

import aiohttp
import anyio
import orjson
import structlog
from yarl import URL

from monitor.arm_answers import (
    Reply,
    arm_error,
    decode_reply,
    error_text,
    shape_error,
    status_error,
)
from monitor.arm_http import Answer, BodyCap, Sender, pin_origin
from monitor.arm_observer import ArmCallKind, ArmObserver
from monitor.arm_paging import P, read_pages
from monitor.arm_quiet_pages import QuietPages
from monitor.clock import Clock
from monitor.config import AzureSettings
from monitor.core.budget import USER_QUOTA_RESETS_AFTER, parse_hms
from monitor.core.dataprotection import parse_backup_vault_job, parse_backup_vault_jobs_page
from monitor.core.ids import check_path_segment, check_subscription_id
from monitor.core.jobs import (
    BackupJob,
    JobDetails,
    JobsPage,
    KnownEnded,
    jobs_of,
    listed_jobs,
    parse_job_details,
    parse_jobs_page,
)
from monitor.core.protection import (
    BackupPolicy,
    ProtectedItem,
    parse_backup_instances_page,
    parse_data_protection_policies_page,
    parse_policies_page,
    parse_protected_items_page,
)
from monitor.core.resource_graph import GraphJobsPage, parse_backup_vault_jobs_answer, query_body
from monitor.core.vaults import (
    SubscriptionRef,
    VaultKind,
    VaultRef,
    parse_subscriptions_page,
    parse_vault_id,
    parse_vaults_page,
)
from monitor.core.wire import encoded_jobs_filter, percent_encoded
from monitor.credentials import TokenCache
from monitor.errors import (
    ArmAuthError,
    ArmThrottled,
    ParseError,
    StartupError,
)
from monitor.pacing import RESOURCE_GRAPH_SCOPE, BudgetBook, action_scope, scope_of_path
from monitor.principals import Principal, Principals

__all__ = ["ArmClient", "OperationReply"]

log = structlog.get_logger(__name__)

# Characters left as they are in a resource-id path; everything else is percent-encoded once.
_PATH_SAFE: Final = "/()!$&'*+,;=:@-._~"
PER_ACTION_THROTTLE: Final = "ResourceRequestsThrottled"
"""The error code of a resource provider's per-action limit (Recovery Services: "Number of
requests for action '...protectedItems/read' exceeded the limit of '50' for time interval
'00:05:00'", with a Retry-After of minutes)."""
_ITEMS_ACTION: Final = "protectedItems/read"
_POLICIES_ACTION: Final = "backupPolicies/read"
Decode: TypeAlias = Callable[[URL, Answer], Awaitable[Reply]]
"""What reads a 2xx answer into a Reply (`arm_answers.decode_reply`, or a listing's own)."""


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
    """Read-only Azure Resource Manager client for vaults of both kinds and their backup jobs.

    Recovery Services vaults (`Microsoft.RecoveryServices`) and Backup vaults
    (`Microsoft.DataProtection`) are read through the same calls; `VaultRef.kind` picks the
    api-version and the parser. Resource Graph queries (`query_backup_vault_jobs`) are paced
    by their own quota's budget (`RESOURCE_GRAPH_SCOPE`).

    Its public methods are the `JobSource` protocol the scheduler polls through. Every request
    is one read of its scope's budget (a subscription, or the tenant for `list_subscriptions`);
    a 429 pauses that whole scope for every caller and is raised, never retried here.

    Args:
        session: an open session from `arm_http.open_session` (the caller owns and closes it).
        tokens: the ARM token cache, or every principal's (`principals.Principals`): each
            request carries the token of its subscription's principal.
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
        tokens: TokenCache | Principals,
        azure: AzureSettings,
        budgets: BudgetBook,
        clock: Clock,
        rng: random.Random,
        observer: ArmObserver | None = None,
    ) -> None:
        origin = pin_origin(azure)
        self._principals = tokens if isinstance(tokens, Principals) else Principals.single(tokens)
        self._azure = azure
        self._budgets = budgets
        self._origin = origin
        self._sender = Sender(
            session=session,
            origin=origin,
            budgets=budgets,
            clock=clock,
            rng=rng,
            observer=observer,
        )
        self._base = azure.arm_endpoint.rstrip("/")
        self._response_cap = BodyCap(
            allowed=azure.max_response_bytes,
            key="azure.max_response_bytes",
            setting=azure.max_response_bytes,
        )
        # Decoding around a too-deep value is pure Python (seconds for tens of MiB): one at a
        # time, off the event loop.
        self._deep_json = anyio.CapacityLimiter(1)
        self._quiet_pages = QuietPages()

    def __repr__(self) -> str:
        return f"ArmClient(origin={str(self._origin)!r})"

    # ------------------------------------------------------------------ JobSource

    async def list_subscriptions(self, principal: Principal | None = None) -> list[SubscriptionRef]:
        """Every subscription `principal` (None: the default one) can see, except Disabled
        and Deleted ones, each with its home tenant.

        Tenant-scoped (`GET /subscriptions`, the principal's tenant budget), paged; ids are
        lower-cased, each listed once. An item whose id is not a GUID is logged
        (`arm.subscription_skipped`, with its JSON path) and skipped.

        Raises:
            ArmError: any subclass, as mapped by the status (see arm_answers);
                ForeignOriginError when a nextLink leaves the ARM origin.
        """
        who = principal or self._principals.default
        url = self._url("/subscriptions", {"api-version": self._azure.subscriptions_api_version})
        found: dict[str, SubscriptionRef] = {}
        pages = await self._paged(
            url,
            ArmCallKind.SUBSCRIPTIONS_LIST,
            parse_subscriptions_page,
            "arm.subscription_skipped",
            scope=self._principals.tenant_scope(who),
        )
        for page in pages:
            for sub in page.subscriptions:
                found.setdefault(sub.id, sub)
        return list(found.values())

    @property
    def principals(self) -> Principals:
        """Who signs in for which subscription."""
        return self._principals

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]:
        """Every vault of `kind` in a subscription, with its location.

        Paged; an item that is not a vault of that kind, or whose id holds a name that is not
        one safe URL path segment, is logged (`arm.vault_skipped`, with its JSON path) and
        skipped.

        Raises:
            ParseError: `subscription_id` is not a GUID (nothing is sent).
            ArmNotFound: the subscription does not exist (or is not visible).
            ArmError: any other subclass, as mapped by the status.
        """
        check_subscription_id(subscription_id, path="subscription_id")
        url = self._url(
            f"/subscriptions/{subscription_id}/providers/{kind.resource_type}",
            {"api-version": self._vaults_version(kind)},
        )
        pages = await self._paged(
            url,
            ArmCallKind.VAULTS_LIST,
            lambda payload: parse_vaults_page(payload, kind),
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
            self._url(wanted.id, {"api-version": self._vaults_version(wanted.kind)}),
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
            raise shape_error(reply, "a vault", exc) from exc

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        """The vault's jobs that started in [start_at, end_at], following every nextLink.

        The `$filter` is percent-encoded once; ARM's nextLinks are followed exactly as given.
        Each page is one read of the subscription's budget. A malformed job is logged
        (`arm.job_skipped`, with the vault and its JSON path) and skipped; it never fails the
        vault. Jobs come in ARM's order (newest first), as listed.

        A Backup vault's list has no filter: its whole history is read (`list_all_jobs`) and
        cut to the window here (a job without a start time is kept).

        `known` (Recovery Services vaults; ignored for a Backup vault): the caller's ended
        jobs. A job it gives with the very status listed is left out, unparsed: nothing of it
        is new to the caller (`core.jobs.parse_jobs_page`, `listed_jobs`). An answer with the
        bytes of the vault's last one that left every job out, given an equal `known`, is not
        even decoded (`arm_quiet_pages`): a `known` must answer the same for as long as it lives.

        Raises:
            ValueError: a naive datetime, or `end_at` before `start_at` (nothing is sent).
            ArmNotFound: the vault is gone. ArmForbidden: the identity may not read its jobs.
            ArmThrottled: the subscription's budget is paused for `retry_after_s`.
            ForeignOriginError: a nextLink points outside the ARM origin (nothing sent there).
            ArmError: any other subclass, as mapped by the status.
        """
        if vault.kind is VaultKind.BACKUP_VAULT:
            if start_at.tzinfo is None or end_at.tzinfo is None or end_at < start_at:
                raise ValueError("list_jobs: aware datetimes, end_at not before start_at")
            return [
                job
                for job in await self.list_all_jobs(vault)
                if job.start_at is None or start_at <= job.start_at <= end_at
            ]
        url = self._url(
            f"{vault.id}/backupJobs",
            {"api-version": self._azure.api_version},
            encoded_filter=encoded_jobs_filter(start_at, end_at),
        )
        if known is None:
            return jobs_of(await self._job_pages(vault, url, parse_jobs_page))
        payloads: list[object] = []

        def parse(payload: object, vault: VaultRef) -> JobsPage:
            payloads.append(payload)
            return parse_jobs_page(payload, vault, known)

        # An answer with the bytes of the vault's last quiet one is not decoded (arm_quiet_pages).
        listing = self._quiet_pages.listing(vault.key, known, self._deep_json)
        pages = await self._job_pages(vault, url, parse, decode=listing.decode)
        listing.finished(pages)
        return listed_jobs(pages, lambda index: parse_jobs_page(payloads[index], vault))

    def forget_vault(self, vault_key: str) -> None:
        """The vault is no longer watched: what the client keeps of it (its last quiet job-list
        answer, `arm_quiet_pages`) goes. Nothing is sent."""
        self._quiet_pages.forget(vault_key)

    async def list_all_jobs(self, vault: VaultRef) -> list[BackupJob]:
        """Every job of a Backup vault, as its unfiltered list gives them (oldest first).

        Reads in proportion to the vault's history: one read per page, within
        `azure.max_list_pages` and `azure.max_list_bytes`.

        Raises:
            ValueError: `vault` is not a Backup vault (a Recovery Services list needs a window).
            ArmNotFound, ArmForbidden, ArmThrottled, ForeignOriginError, ArmError: as
                `list_jobs`.
        """
        if vault.kind is not VaultKind.BACKUP_VAULT:
            raise ValueError(f"list_all_jobs: {vault.id} is not a Backup vault")
        url = self._url(
            f"{vault.id}/backupJobs", {"api-version": self._azure.dataprotection_api_version}
        )
        return jobs_of(await self._job_pages(vault, url, parse_backup_vault_jobs_page))

    async def _job_pages(
        self,
        vault: VaultRef,
        url: URL,
        parse: Callable[[object, VaultRef], JobsPage],
        *,
        decode: Decode | None = None,
    ) -> list[JobsPage]:
        """Every page of a job list from `url` on, each parsed for `vault` (each 2xx answer
        read by `decode`, if given)."""
        return await self._paged(
            url,
            ArmCallKind.JOBS_LIST,
            lambda p: parse(p, vault),
            "arm.job_skipped",
            decode=decode,
            vault=vault.id,
        )

    async def query_backup_vault_jobs(
        self, query: str, subscriptions: list[str], skip_token: str | None
    ) -> GraphJobsPage:
        """One page of a Resource Graph query for Backup vault jobs (`core.resource_graph`).

        A POST to `/providers/Microsoft.ResourceGraph/resources`, paced by the Resource Graph
        quota's own budget (`RESOURCE_GRAPH_SCOPE`, fed `x-ms-user-quota-remaining` and
        `-resets-after`), never a subscription's. The query is sent as the principal of
        `subscriptions[0]`: the caller batches only subscriptions of one principal. A row
        that is not a Backup vault job is logged (`arm.graph_row_skipped`) and skipped.

        Raises:
            ArmThrottled: the quota is spent (its `retry_after_s` from `Retry-After` or
                `x-ms-user-quota-resets-after`); the Resource Graph budget is paused.
            ArmTransportError: the answer is not a query result (the message names the path).
            ArmError: any other subclass, as mapped by the status (400: the query was refused).
        """
        url = self._url(
            "/providers/Microsoft.ResourceGraph/resources",
            {"api-version": self._azure.resource_graph_api_version},
        )
        body = orjson.dumps(query_body(query, subscriptions, skip_token=skip_token))
        principal = self._principals.of_subscription(subscriptions[0])
        scope = self._principals.graph_scope(principal)
        reply = await self._send("POST", url, ArmCallKind.GRAPH_QUERY, scope=scope, body=body)
        try:
            page = parse_backup_vault_jobs_answer(reply.payload)
        except ParseError as exc:
            raise shape_error(reply, "a Resource Graph answer", exc) from exc
        for skipped in page.skipped:
            log.warning("arm.graph_row_skipped", path=skipped.path, problem=skipped.problem)
        return page

    async def list_protected_items(self, vault: VaultRef) -> list[ProtectedItem]:
        """The vault's protected items (Recovery Services `backupProtectedItems`) or backup
        instances (Backup vault `backupInstances`), following every nextLink.

        Each page is one read of the subscription's budget. A Recovery Services
        `ResourceRequestsThrottled` 429 (the per-action limit of `protectedItems/read`) pauses
        these reads of the subscription alone (`pacing.action_scope`), never its job reads;
        while paused, this raises at once without sending. A malformed item is logged
        (`arm.item_skipped`) and skipped.

        Raises:
            ArmNotFound: the vault is gone. ArmForbidden: the identity may not read its items.
            ArmThrottled: the subscription's budget, or this action, is paused.
            ForeignOriginError, ArmError: as `list_jobs`.
        """
        if vault.kind is VaultKind.BACKUP_VAULT:
            url = self._url(
                f"{vault.id}/backupInstances",
                {"api-version": self._azure.dataprotection_api_version},
            )
            parse = parse_backup_instances_page
        else:
            url = self._url(
                f"{vault.id}/backupProtectedItems", {"api-version": self._azure.api_version}
            )
            parse = parse_protected_items_page
        action = action_scope(vault.subscription_id, _ITEMS_ACTION)
        pages = await self._paged(
            url,
            ArmCallKind.ITEMS_LIST,
            lambda p: parse(p, vault),
            "arm.item_skipped",
            action=action,
            vault=vault.id,
        )
        return [item for page in pages for item in page.items]

    async def list_policies(self, vault: VaultRef) -> list[BackupPolicy]:
        """The vault's backup policies (either kind), following every nextLink.

        A policy whose schedule cannot be read is kept (its `problem` says why); an item that
        is not a policy is logged (`arm.policy_skipped`) and skipped. Per-action throttles
        pause these reads alone, as for `list_protected_items`.

        Raises:
            ArmNotFound, ArmForbidden, ArmThrottled, ForeignOriginError, ArmError: as
                `list_protected_items`.
        """
        if vault.kind is VaultKind.BACKUP_VAULT:
            version = self._azure.dataprotection_api_version
            parse = parse_data_protection_policies_page
        else:
            version = self._azure.api_version
            parse = parse_policies_page
        url = self._url(f"{vault.id}/backupPolicies", {"api-version": version})
        pages = await self._paged(
            url,
            ArmCallKind.POLICIES_LIST,
            lambda p: parse(p, vault),
            "arm.policy_skipped",
            action=action_scope(vault.subscription_id, _POLICIES_ACTION),
            vault=vault.id,
        )
        return [policy for page in pages for policy in page.policies]

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
        backup_vault = vault.kind is VaultKind.BACKUP_VAULT
        version = (
            self._azure.dataprotection_api_version if backup_vault else self._azure.api_version
        )
        reply = await self._get(
            self._url(f"{vault.id}/backupJobs/{job_name}", {"api-version": version}),
            ArmCallKind.JOB_GET,
        )
        try:
            if backup_vault:
                details = parse_backup_vault_job(reply.payload, vault)
            else:
                details = parse_job_details(reply.payload, vault)
        except ParseError as exc:
            raise shape_error(reply, "a backup job", exc) from exc
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
        self._origin.check(target, referrer=None)
        scope = scope_of_path(target.path)
        rejected: str | None = None
        for attempt in (1, 2):
            await self._budgets.acquire(scope)
            token = await self._token(scope, force_refresh=attempt > 1, rejected=rejected)
            answer = await self._sender.get(
                target, token, scope, ArmCallKind.OTHER, self._response_cap
            )
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

    # ------------------------------------------------------------------ URLs

    async def _token(self, scope: str, *, force_refresh: bool, rejected: str | None) -> str:
        """A token of `scope`'s principal. A principal that never signed in (its credential
        failed at start while another's worked) fails this one request, as ARM's 401 would:
        the reads of the other principals go on.

        Raises:
            ArmAuthError: the principal's credential gives no token; `url` is the scope.
        """
        principal = self._principals.principal_for(scope)
        assert principal.tokens is not None  # every principal of a client has its cache
        try:
            return await principal.tokens.token(force_refresh=force_refresh, rejected=rejected)
        except StartupError as exc:
            raise ArmAuthError(str(exc), url=scope) from exc

    def _vaults_version(self, kind: VaultKind) -> str:
        if kind is VaultKind.BACKUP_VAULT:
            return self._azure.dataprotection_api_version
        return self._azure.vaults_api_version

    def _url(
        self, path: str, query: Mapping[str, str], *, encoded_filter: str | None = None
    ) -> URL:
        """An ARM URL from a resource path and query, each percent-encoded exactly once;
        `encoded_filter`, a `$filter` value already encoded (`encoded_jobs_filter`), goes last."""
        # quote(safe="") gives %20 for spaces and %27 for quotes, as ARM's own clients send.
        encoded = "&".join(
            f"{percent_encoded(k, '$')}={percent_encoded(v)}" for k, v in query.items()
        )
        if encoded_filter is not None:
            encoded += f"&$filter={encoded_filter}"
        return URL(f"{self._base}{percent_encoded(path, _PATH_SAFE)}?{encoded}", encoded=True)

    # ------------------------------------------------------------------ requests

    async def _paged(
        self,
        url: URL,
        kind: ArmCallKind,
        parse: Callable[[object], P],
        skipped_event: str,
        *,
        action: str | None = None,
        scope: str | None = None,
        decode: Decode | None = None,
        **context: str,
    ) -> list[P]:
        """Every page from `url` on, each read as `kind` (see `read_pages`), `action` being
        the per-action pause scope of its reads (None: only the subscription's), `scope` the
        budget scope (None: the path's), `decode` what reads each 2xx answer (None:
        `decode_reply`)."""

        async def get(page_url: URL, referrer: URL | None, cap: BodyCap) -> Reply:
            return await self._send(
                "GET",
                page_url,
                kind,
                referrer=referrer,
                cap=cap,
                action=action,
                scope=scope,
                decode=decode,
            )

        return await read_pages(
            get,
            url,
            parse,
            azure=self._azure,
            response_cap=self._response_cap,
            skipped_event=skipped_event,
            context=context,
        )

    async def _get(
        self,
        url: URL,
        kind: ArmCallKind,
        *,
        referrer: URL | None = None,
        cap: BodyCap | None = None,
    ) -> Reply:
        """GET `url` as ARM JSON: origin check, budget, token, one retry after a 401."""
        return await self._send("GET", url, kind, referrer=referrer, cap=cap)

    async def _send(
        self,
        method: str,
        url: URL,
        kind: ArmCallKind,
        *,
        referrer: URL | None = None,
        cap: BodyCap | None = None,
        scope: str | None = None,
        body: bytes | None = None,
        action: str | None = None,
        decode: Decode | None = None,
    ) -> Reply:
        """One request as ARM JSON: origin check, the action's pause (`action`, if any),
        budget (of `scope`, else the path's), token, one retry after a 401; a 2xx answer read
        by `decode` (None: `decode_reply`)."""
        self._origin.check(url, referrer=referrer)
        scope = scope or scope_of_path(url.path)
        if action is not None and (left := self._budgets.action_pause_s(action)):
            raise ArmThrottled(
                f"{url}: {action} is paused for {left:.0f} s after a per-action throttle",
                url=str(url),
                retry_after_s=left,
                code=PER_ACTION_THROTTLE,
                request_id=None,
                correlation_id=None,
            )
        rejected: str | None = None
        for attempt in (1, 2):
            await self._budgets.acquire(scope)
            token = await self._token(scope, force_refresh=attempt > 1, rejected=rejected)
            answer = await self._sender.send(
                method, url, token, scope, kind, cap or self._response_cap, body
            )
            if answer.status == 401 and attempt == 1:
                code, _ = arm_error(answer.body)
                log.info(
                    "arm.token_rejected",
                    url=str(url),
                    code=code,
                    request_id=answer.headers.get("x-ms-request-id"),
                )
                rejected = token
                continue
            return await self._reply(url, scope, answer, action=action, decode=decode)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reply(
        self,
        url: URL,
        scope: str,
        answer: Answer,
        *,
        action: str | None = None,
        decode: Decode | None = None,
    ) -> Reply:
        """Decode a 2xx answer (by `decode`, if given), or raise the ArmError its status maps
        to."""
        if 200 <= answer.status < 300:
            if decode is not None:
                return await decode(url, answer)
            return await decode_reply(url, answer, self._deep_json)
        code, message = arm_error(answer.body)
        if answer.status != 429:
            raise status_error(url, answer, code, message)
        request_id = answer.headers.get("x-ms-request-id")
        asked = answer.retry_after_s
        if asked is None and scope.partition(":")[0] == RESOURCE_GRAPH_SCOPE:
            asked = parse_hms(answer.headers.get(USER_QUOTA_RESETS_AFTER))
        retry_after_s = self._budgets.default_retry_after_s(scope) if asked is None else asked
        if action is not None and code == PER_ACTION_THROTTLE:
            # A resource provider's limit on this one action: the subscription's other reads
            # (job polling) go on.
            if self._budgets.pause_action(action, asked):
                log.warning(
                    "arm.action_throttled",
                    action=action,
                    retry_after_s=retry_after_s,
                    url=str(url),
                    request_id=request_id,
                )
        elif self._budgets.throttled(scope, asked):
            log.warning(
                "arm.throttled",
                scope=scope,
                retry_after_s=retry_after_s,
                code=code,
                url=str(url),
                request_id=request_id,
            )
        raise ArmThrottled(
            error_text(url, answer, code, message),
            url=str(url),
            retry_after_s=retry_after_s,
            code=code,
            request_id=request_id,
            correlation_id=answer.headers.get("x-ms-correlation-request-id"),
        )
