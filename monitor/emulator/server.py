"""The emulator's HTTP surface: ARM + Recovery Services, token endpoints, and `/_emulator`.

Every ARM request goes through one pipeline, in ARM's order: correlation ids, authentication,
api-version, routing, throttling, injected faults, then the handler. ARM paths are matched
case-insensitively, as ARM does (`/Subscriptions/` and `microsoft.recoveryservices` both work).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import orjson
from aiohttp import web

from monitor.emulator import filters
from monitor.emulator.clock import WorldClock
from monitor.emulator.estate import Job, ProtectedItem, Vault
from monitor.emulator.faults import Fault, FaultInjector, FaultSettings
from monitor.emulator.identity import TokenIssuer
from monitor.emulator.reads import ReadKind, ReadLog
from monitor.emulator.throttle import Throttle, ThrottleSettings, Verdict
from monitor.emulator.wire import (
    JSON,
    error_json,
    job_json,
    operation_status_json,
    subscription_json,
    vault_json,
)
from monitor.emulator.world import World, WorldSettings

NEXT_LINK_API_VERSION = "2017-07-01"  # what the backup RP writes into nextLink, whatever was asked
OPERATION_API_VERSION = "2016-12-01"
STATIC_PRINCIPAL = "emulator-static-user"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything an emulator run is made of.

    Attributes:
        page_size: jobs per `backupJobs` page.
        vault_page_size: vaults per vault-list page (ARM pages these at 200).
        token_lifetime_s: lifetime of tokens from the token and managed-identity endpoints.
        client_secret: the secret every client id must present at the token endpoint.
        identity_header: the `X-IDENTITY-HEADER` value the managed-identity endpoint expects.
        operation_retry_after_s: `Retry-After` on trigger-backup 202s (the real service says 60).
        fault_seed: seed of the fault stream (the world has its own).
    """

    world: WorldSettings = field(default_factory=WorldSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    page_size: int = 20
    vault_page_size: int = 200
    token_lifetime_s: float = 3600.0
    client_secret: str = field(default="emulator-secret", repr=False)
    identity_header: str = field(default="emulator-identity-header", repr=False)
    operation_retry_after_s: int = 60
    fault_seed: int = 7


class ArmReply(Exception):
    """Raised inside a handler to answer with an ARM error right away."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass(slots=True)
class Reply:
    """What a handler returns: status, JSON body (or None) and extra headers."""

    status: int
    body: JSON | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Call:
    """One ARM request as the handlers see it."""

    request: web.Request
    params: dict[str, str]  # query parameters, names lower-cased
    match: dict[str, str]
    principal: str
    now: datetime


Handler = Callable[["ArmSurface", Call], Awaitable[Reply]]

SUB = r"/subscriptions/(?P<sub>[^/]+)"
VAULT = (
    SUB
    + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.recoveryservices/vaults/(?P<vault>[^/]+)"
)
ITEM = (
    VAULT + r"/backupfabrics/(?P<fabric>[^/]+)/protectioncontainers/(?P<container>[^/]+)"
    r"/protecteditems/(?P<item>[^/]+)"
)


@dataclass(slots=True)
class ForeignOrigin:
    """What the foreign origin saw: every request, and how many carried a bearer token."""

    requests: int = 0
    tokens_received: int = 0
    url: str = ""


class ArmSurface:
    """The emulator's request handling; owns the world, throttle, faults and token issuer."""

    def __init__(self, settings: EmulatorSettings, clock: WorldClock) -> None:
        self.settings = settings
        self.clock = clock
        self.world = World(settings.world, clock.utcnow())
        self.throttle = Throttle(settings.throttle)
        self.faults = FaultInjector(settings.faults, settings.fault_seed)
        self.issuer = TokenIssuer(settings.world.tenant_id)
        self.foreign = ForeignOrigin()
        self.reads = ReadLog()
        self.base_url = ""  # set once the server is bound
        self.static_token = self.issuer.issue(
            STATIC_PRINCIPAL, expires_at=clock.utcnow().timestamp() + 10 * 365 * 86400
        )
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/subscriptions", re.I), ArmSurface._subscriptions),
            ("GET", re.compile(SUB, re.I), ArmSurface._subscription),
            (
                "GET",
                re.compile(SUB + r"/providers/microsoft\.recoveryservices/vaults", re.I),
                ArmSurface._vaults,
            ),
            (
                "GET",
                re.compile(
                    SUB
                    + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.recoveryservices/vaults",
                    re.I,
                ),
                ArmSurface._vaults,
            ),
            ("GET", re.compile(VAULT, re.I), ArmSurface._vault),
            ("GET", re.compile(VAULT + r"/backupjobs", re.I), ArmSurface._jobs),
            ("GET", re.compile(VAULT + r"/backupjobs/(?P<job>[^/]+)", re.I), ArmSurface._job),
            ("GET", re.compile(VAULT + r"/backupprotecteditems", re.I), ArmSurface._items),
            ("POST", re.compile(ITEM + r"/backup", re.I), ArmSurface._trigger_backup),
            (
                "GET",
                re.compile(ITEM + r"/operationsstatus/(?P<op>[^/]+)", re.I),
                ArmSurface._operation_status,
            ),
            (
                "GET",
                re.compile(ITEM + r"/operationresults/(?P<op>[^/]+)", re.I),
                ArmSurface._operation_result,
            ),
            (
                "GET",
                re.compile(VAULT + r"/backupoperations/(?P<op>[^/]+)", re.I),
                ArmSurface._operation_status,
            ),
        ]

    # ------------------------------------------------------------------ the ARM pipeline

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one ARM request."""
        headers = self._correlation_headers(request)
        try:
            return await self._pipeline(request, headers)
        except ArmReply as reply:
            headers.update(reply.headers)
            if reply.status == 401:
                headers["WWW-Authenticate"] = (
                    f'Bearer authorization_uri="{self.base_url}/{self.world.tenant_id}", '
                    'error="invalid_token", error_description="The authentication failed"'
                )
                headers["x-ms-failure-cause"] = "gateway"
            return _json_response(reply.status, error_json(reply.code, reply.message), headers)

    async def _pipeline(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        now_mono, now = self.clock.monotonic(), self.clock.utcnow()
        check = self.issuer.check(request.headers.get("Authorization"), now=now.timestamp())
        if check.principal is None:
            raise ArmReply(401, check.error_code or "", check.error_message or "")
        params = {k.lower(): v for k, v in request.query.items()}
        if "api-version" not in params:
            raise ArmReply(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        path = request.path.rstrip("/") or "/"
        route = self._route(request.method, path)
        match = route[1] if route else {}
        scope = match.get("sub", "tenant")
        verdict = self.throttle.check(
            scope=scope,
            principal=check.principal,
            kind="writes" if request.method == "POST" else "reads",
            now=now_mono,
            wall=now.timestamp(),
        )
        headers.update(verdict.headers)
        if request.method == "GET":
            self._log_read(route, params, scope, check.principal, verdict.allowed, now)
        if not verdict.allowed:
            raise self._throttled(verdict, scope, check.principal)
        faults = self.faults
        if faults.draw(Fault.EXPIRED_TOKEN):
            raise ArmReply(
                401,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            )
        if faults.draw(Fault.LATENCY):
            await asyncio.sleep(faults.settings.latency_s)
        if faults.draw(Fault.DROP):
            return _drop(request)
        if faults.draw(Fault.SERVER_ERROR):
            raise _server_error(faults.server_status(), headers)
        if route is None:
            raise ArmReply(
                404,
                "InvalidResourceType",
                f"The resource type could not be found for path '{request.path}'.",
            )
        self.world.advance(now)
        call = Call(request=request, params=params, match=match, principal=check.principal, now=now)
        reply = await route[0](self, call)
        headers.update(reply.headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        if faults.draw(Fault.MALFORMED):
            return web.Response(
                status=reply.status,
                body=b"<html><body>Bad Gateway</body></html>",
                headers={**headers, "Content-Type": "application/json; charset=utf-8"},
            )
        if faults.draw(Fault.TRUNCATE):
            return await _truncated(request, reply.status, orjson.dumps(reply.body), headers)
        return _json_response(reply.status, reply.body, headers)

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for verb, pattern, handler in self._routes:
            m = pattern.fullmatch(path)
            if m is not None and verb == method:
                return handler, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _log_read(
        self,
        route: tuple[Handler, dict[str, str]] | None,
        params: dict[str, str],
        scope: str,
        principal: str,
        served: bool,
        now: datetime,
    ) -> None:
        """Count a GET in the read log, against its vault when its path names one."""
        handler, match = route if route is not None else (None, {})
        vault_key = None
        if "vault" in match:
            vault_key = (
                f"/subscriptions/{match['sub']}/resourcegroups/{match['rg']}"
                f"/providers/microsoft.recoveryservices/vaults/{match['vault']}"
            ).lower()
        if handler is ArmSurface._jobs:
            kind = ReadKind.NEXT_PAGE if "$skiptoken" in params else ReadKind.FIRST_PAGE
        elif handler is ArmSurface._job:
            kind = ReadKind.JOB
        else:
            kind = ReadKind.OTHER
        self.reads.record(
            principal=principal,
            scope=scope,
            vault_key=vault_key,
            kind=kind,
            served=served,
            at=now,
        )

    def _correlation_headers(self, request: web.Request) -> dict[str, str]:
        request_id = str(uuid.uuid4())
        now = self.clock.utcnow()
        return {
            "x-ms-request-id": request_id,
            "x-ms-correlation-request-id": request.headers.get(
                "x-ms-correlation-request-id", request_id
            ),
            "x-ms-routing-request-id": f"WESTEUROPE:{now:%Y%m%dT%H%M%SZ}:{request_id}",
            "Cache-Control": "no-cache",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        }

    def _throttled(self, verdict: Verdict, scope: str, principal: str) -> ArmReply:
        seconds = verdict.retry_after_s
        if scope == "tenant":
            message = (
                f"Number of 'read' requests for tenant '{self.world.tenant_id}' actor "
                f"'{principal}' exceeded. Please try again after '{seconds}' seconds after "
                "additional tokens are available. Refer to https://aka.ms/arm-throttling"
            )
            return ArmReply(429, "TenantRequestsThrottled", message, {"Retry-After": str(seconds)})
        message = (
            f"Number of 'read' requests for subscription '{scope}' actor '{principal}' exceeded. "
            f"Please try again after '{seconds}' seconds after additional tokens are available. "
            "Refer to https://aka.ms/arm-throttling"
        )
        return ArmReply(
            429, "SubscriptionRequestsThrottled", message, {"Retry-After": str(seconds)}
        )

    # ------------------------------------------------------------------ lookups

    def _subscription_or_404(self, sub_id: str) -> None:
        if sub_id.lower() not in {s.lower() for s in self.world.subscriptions}:
            raise ArmReply(
                404, "SubscriptionNotFound", f"The subscription '{sub_id}' could not be found."
            )

    def _vault_or_error(self, call: Call, action: str) -> Vault:
        m = call.match
        self._subscription_or_404(m["sub"])
        vault_id = (
            f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}"
            f"/providers/Microsoft.RecoveryServices/vaults/{m['vault']}"
        )
        vault = self.world.live_vault(vault_id)
        if vault is None:
            raise ArmReply(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.RecoveryServices/vaults/{m['vault']}' under resource "
                f"group '{m['rg']}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        if vault.forbidden:
            raise ArmReply(
                403,
                "AuthorizationFailed",
                f"The client '{call.principal}' with object id '{call.principal}' does not have "
                f"authorization to perform action '{action}' over scope '{vault.id}' or the scope "
                "is invalid. If access was recently granted, please refresh your credentials.",
            )
        return vault

    def _item_or_404(self, vault: Vault, call: Call) -> ProtectedItem:
        container, name = call.match["container"].lower(), call.match["item"].lower()
        for item in vault.items:
            if item.container.lower() == container and item.name.lower() == name:
                return item
        raise ArmReply(
            404,
            "BMSUserErrorObjectNotFound",
            f"Item not found: container '{call.match['container']}', item '{call.match['item']}'.",
        )

    # ------------------------------------------------------------------ paging

    def _next_link(self, request: web.Request, params: dict[str, str], token: str) -> str:
        base = self.foreign.url if self.faults.draw(Fault.FOREIGN_NEXT_LINK) else self.base_url
        query = f"api-version={NEXT_LINK_API_VERSION}"
        if "$filter" in params:
            query += f"&%24filter={_arm_quote(params['$filter'])}"
        query += f"&%24skiptoken={_arm_quote(token)}"
        return f"{base}{request.path}?{query}"

    def _page(self, call: Call, rows: list[JSON]) -> Reply:
        """An offset-paged list of `rows` (vaults, subscriptions, items)."""
        start = _decode_offset(call.params.get("$skiptoken"))
        size = self.settings.vault_page_size
        body: JSON = {"value": rows[start : start + size]}
        if start + size < len(rows):
            body["nextLink"] = self._next_link(
                call.request, call.params, _encode_offset(start + size)
            )
        return Reply(200, body)

    # ------------------------------------------------------------------ handlers

    async def _subscriptions(self, call: Call) -> Reply:
        subs = sorted(self.world.subscriptions.values(), key=lambda s: s.id)
        return self._page(call, [subscription_json(s, self.world.tenant_id) for s in subs])

    async def _subscription(self, call: Call) -> Reply:
        self._subscription_or_404(call.match["sub"])
        sub = next(
            s
            for s in self.world.subscriptions.values()
            if s.id.lower() == call.match["sub"].lower()
        )
        return Reply(200, subscription_json(sub, self.world.tenant_id))

    async def _vaults(self, call: Call) -> Reply:
        self._subscription_or_404(call.match["sub"])
        sub = next(
            s
            for s in self.world.subscriptions.values()
            if s.id.lower() == call.match["sub"].lower()
        )
        rg = call.match.get("rg", "").lower()
        vaults = sorted(
            (v for v in sub.vaults.values() if not rg or v.resource_group.lower() == rg),
            key=lambda v: v.key,
        )
        return self._page(call, [vault_json(v) for v in vaults])

    async def _vault(self, call: Call) -> Reply:
        vault = self._vault_or_error(call, "Microsoft.RecoveryServices/vaults/read")
        return Reply(200, vault_json(vault))

    async def _items(self, call: Call) -> Reply:
        vault = self._vault_or_error(
            call, "Microsoft.RecoveryServices/vaults/backupProtectedItems/read"
        )
        return self._page(call, [_item_json(vault, item) for item in vault.items])

    async def _jobs(self, call: Call) -> Reply:
        vault = self._vault_or_error(call, "Microsoft.RecoveryServices/vaults/backupJobs/read")
        try:
            query = filters.parse_filter(call.params.get("$filter"))
            position = filters.decode_skiptoken(call.params.get("$skiptoken"))
        except filters.FilterError as exc:
            raise ArmReply(
                400,
                "BMSUserErrorInvalidInput",
                "Input provided for the call is invalid\r\nPlease check the required inputs",
            ) from exc
        lo, hi = self.world.jobs_in_window(vault, query.start_at, query.end_at)
        # Newest first; `position` is the ordinal of the next job to return, going down.
        top = hi - 1 if position is None else min(hi - 1, position - vault.pruned)
        page: list[Job] = []
        nxt: Job | None = None
        jobs = vault.jobs
        for index in range(top, lo - 1, -1):
            job = jobs[index]
            if not query.matches(job):
                continue
            if len(page) == self.settings.page_size:
                nxt = job
                break
            page.append(job)
        now = call.now
        body: JSON = {"value": [job_json(j, now, details=False) for j in page]}
        if nxt is not None:
            token = filters.encode_skiptoken(vault.name, nxt.ordinal)
            body["nextLink"] = self._next_link(call.request, call.params, token)
        return Reply(200, body)

    async def _job(self, call: Call) -> Reply:
        vault = self._vault_or_error(call, "Microsoft.RecoveryServices/vaults/backupJobs/read")
        job = vault.jobs_by_name.get(call.match["job"].lower())
        if job is None:
            raise ArmReply(
                404,
                "BMSUserErrorJobNotFound",
                f"Job '{call.match['job']}' was not found in vault '{vault.name}'.",
            )
        return Reply(200, job_json(job, call.now, details=True))

    async def _trigger_backup(self, call: Call) -> Reply:
        vault = self._vault_or_error(
            call,
            "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action",
        )
        item = self._item_or_404(vault, call)
        op = self.world.trigger_backup(vault, item)
        base = (
            f"{self.base_url}/Subscriptions/{vault.subscription_id}/resourceGroups/"
            f"{vault.resource_group}/providers/Microsoft.RecoveryServices/vaults/{vault.name}"
            f"/backupFabrics/{call.match['fabric']}/protectionContainers/{item.container}"
            f"/protectedItems/{item.name}"
        )
        version = f"api-version={OPERATION_API_VERSION}"
        headers = {
            "Azure-AsyncOperation": f"{base}/operationsStatus/{op.id}?{version}",
            "Location": f"{base}/operationResults/{op.id}?{version}",
            "Retry-After": str(self.settings.operation_retry_after_s),
            "x-ms-ratelimit-remaining-subscription-resource-requests": "149",
        }
        return Reply(202, None, headers)

    async def _operation_status(self, call: Call) -> Reply:
        vault = self._vault_or_error(
            call, "Microsoft.RecoveryServices/vaults/backupOperations/read"
        )
        op = self.world.operations.get(call.match["op"].lower())
        if op is None or op.vault is not vault:
            raise ArmReply(
                404, "BMSUserErrorOperationNotFound", f"Operation '{call.match['op']}' not found."
            )
        return Reply(200, operation_status_json(op, call.now))

    async def _operation_result(self, call: Call) -> Reply:
        vault = self._vault_or_error(
            call, "Microsoft.RecoveryServices/vaults/backupOperationResults/read"
        )
        op = self.world.operations.get(call.match["op"].lower())
        if op is None or op.vault is not vault:
            raise ArmReply(
                404, "BMSUserErrorOperationNotFound", f"Operation '{call.match['op']}' not found."
            )
        if op.job is None:
            return Reply(
                202,
                None,
                {
                    "Location": f"{self.base_url}{call.request.path_qs}",
                    "Retry-After": str(self.settings.operation_retry_after_s),
                },
            )
        return Reply(204, None)


ITEM_TYPE = "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems"


def _item_json(vault: Vault, item: ProtectedItem) -> JSON:
    kinds = {
        "vm": ("Microsoft.Compute/virtualMachines", "VM"),
        "sql": ("AzureVmWorkloadSQLDatabase", "SQLDataBase"),
        "files": ("AzureFileShareProtectedItem", "AzureFileShare"),
        "mab": ("MabFileFolderProtectedItem", "FileFolder"),
        "dpm": ("DPMProtectedItem", "FileFolder"),
    }
    item_type, workload = kinds[item.workload.value]
    return {
        "id": f"{vault.id}/backupFabrics/Azure/protectionContainers/{item.container}"
        f"/protectedItems/{item.name}",
        "name": item.name,
        "type": ITEM_TYPE,
        "properties": {
            "protectedItemType": item_type,
            "friendlyName": item.entity,
            "containerName": item.container,
            "backupManagementType": item.backup_management_type,
            "workloadType": workload,
            "lastBackupTime": "2001-01-01T00:00:00Z",
        },
    }


def _arm_quote(value: str) -> str:
    """Encode a query value as the backup RP does: `+` for spaces, lower-case `%xx` escapes."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(value, safe=""))


def _encode_offset(offset: int) -> str:
    return f"o{offset}"


def _decode_offset(token: str | None) -> int:
    if not token:
        return 0
    text = token if token.startswith("o") else unquote_plus(token)
    if not text.startswith("o") or not text[1:].isdigit():
        raise ArmReply(400, "InvalidSkipToken", "The $skiptoken value is invalid.")
    return int(text[1:])


def _json_response(status: int, body: JSON, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )


def _server_error(status: int, headers: dict[str, str]) -> ArmReply:
    tracking = headers["x-ms-request-id"]
    if status == 504:
        return ArmReply(
            504,
            "GatewayTimeout",
            "The gateway did not receive a response from 'Microsoft.RecoveryServices' within the "
            "specified time period.",
        )
    if status == 503:
        return ArmReply(
            503,
            "ServiceUnavailable",
            "The service is currently unavailable. Please retry the request later.",
            {"Retry-After": "5"},
        )
    return ArmReply(
        500,
        "InternalServerError",
        f"Encountered internal server error. Diagnostic information: tracking id '{tracking}'.",
    )


def _drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


async def _truncated(
    request: web.Request, status: int, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=status, headers={**headers, "Content-Type": "application/json; charset=utf-8"}
    )
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.abort()
    return response


# ---------------------------------------------------------------------- outside ARM


class ControlSurface:
    """Token endpoints and the `/_emulator` ground truth and control API (no throttling)."""

    def __init__(self, arm: ArmSurface) -> None:
        self.arm = arm

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/{tenant}/oauth2/v2.0/token", self.token),
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            web.get("/msi/token", self.managed_identity_token),
            web.get("/_emulator/transitions", self.transitions),
            web.get("/_emulator/stats", self.stats),
            web.post("/_emulator/stats/reset", self.reset_stats),
            web.get("/_emulator/reads", self.read_log),
            web.get("/_emulator/world", self.world_summary),
            web.post("/_emulator/vaults", self.add_vault),
            web.delete("/_emulator/vaults", self.delete_vault),
            web.post("/_emulator/vaults/forbid", self.forbid_vault),
            web.get("/_emulator/faults", self.get_faults),
            web.put("/_emulator/faults", self.put_faults),
            web.post("/_emulator/tokens", self.mint_token),
        ]

    def _now(self) -> datetime:
        now = self.arm.clock.utcnow()
        self.arm.world.advance(now)
        return now

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    # -------------------------------------------------------------- tokens

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        if tenant.lower() not in (self.arm.world.tenant_id, "organizations"):
            return _aad_error(
                400,
                "invalid_request",
                f"AADSTS90002: Tenant '{tenant}' not found.",
            )
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", "AADSTS70003: grant_type unsupported.")
        client_id = str(form.get("client_id", ""))
        secret, assertion = form.get("client_secret"), form.get("client_assertion")
        if not client_id:
            return _aad_error(400, "invalid_request", "AADSTS900144: 'client_id' is missing.")
        if assertion is None and secret != self.arm.settings.client_secret:
            return _aad_error(
                401,
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided for app '{client_id}'.",
            )
        lifetime = int(self.arm.settings.token_lifetime_s)
        token = self.arm.issuer.issue(
            client_id,
            expires_at=self.arm.clock.utcnow().timestamp() + lifetime,
            audience=str(form.get("scope", "")),
        )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }
        )

    async def openid_configuration(self, request: web.Request) -> web.Response:
        base = f"{self.arm.base_url}/{request.match_info['tenant']}"
        return web.json_response(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "token"],
                "tenant_region_scope": "EU",
            }
        )

    async def managed_identity_token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.arm.settings.identity_header:
            return web.json_response(
                {
                    "statusCode": 401,
                    "message": "Unauthorized: X-IDENTITY-HEADER is missing or wrong.",
                },
                status=401,
            )
        resource = request.query.get("resource")
        if not resource:
            return web.json_response(
                {"error": "invalid_request", "error_description": "resource is required"},
                status=400,
            )
        principal = request.query.get("client_id") or "system-assigned-identity"
        lifetime = int(self.arm.settings.token_lifetime_s)
        expires_on = int(self.arm.clock.utcnow().timestamp()) + lifetime
        return web.json_response(
            {
                "access_token": self.arm.issuer.issue(
                    principal, expires_at=expires_on, audience=resource
                ),
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal,
            }
        )

    async def mint_token(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        principal = str(body.get("principal", STATIC_PRINCIPAL))
        lifetime = body.get("lifetime_s", self.arm.settings.token_lifetime_s)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
            raise web.HTTPBadRequest(text="lifetime_s must be a number")
        token = self.arm.issuer.issue(
            principal, expires_at=self.arm.clock.utcnow().timestamp() + float(lifetime)
        )
        return web.json_response({"token": token, "principal": principal})

    # -------------------------------------------------------------- ground truth

    async def transitions(self, request: web.Request) -> web.Response:
        self._now()
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since and limit must be integers") from exc
        rows = self.arm.world.transitions_since(max(since, 0), max(1, min(limit, 100_000)))
        return _raw_json(
            {
                "transitions": [
                    {
                        "seq": t.seq,
                        "vault_id": t.vault_id,
                        "job_id": t.job_id,
                        "job_type": t.job_type,
                        "operation": t.operation,
                        "from": t.from_status,
                        "to": t.to_status,
                        "at": t.at,
                    }
                    for t in rows
                ],
                "next": rows[-1].seq if rows else max(since, 0),
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        self._now()
        return _raw_json(
            {
                **self.arm.throttle.stats_json(),
                "faults_injected": self.arm.faults.injected,
                "foreign_origin": {
                    "url": self.arm.foreign.url,
                    "requests": self.arm.foreign.requests,
                    "tokens_received": self.arm.foreign.tokens_received,
                },
                "transitions": len(self.arm.world.transitions),
            }
        )

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.arm.throttle.reset_stats()
        self.arm.reads.reset()
        return web.json_response({"reset": True})

    async def read_log(self, request: web.Request) -> web.Response:
        """Reads per (principal, vault), each vault's first poll, and reads outside vaults.

        `?principal=P` keeps only that principal's rows.
        """
        wanted = request.query.get("principal")
        world = self.arm.world
        vaults = []
        for (principal, key), r in sorted(self.arm.reads.vaults.items()):
            if wanted is not None and principal != wanted:
                continue
            vault = world.vaults.get(key)
            vaults.append(
                {
                    "principal": principal,
                    "vault_id": vault.id if vault is not None else key,
                    "subscription_id": vault.subscription_id if vault is not None else r.scope,
                    "served": r.served,
                    "throttled_429": r.throttled,
                    "before_first_poll": r.before_first_poll,
                    "lists": r.lists,
                    "pages": r.pages,
                    "jobs": r.jobs,
                    "first_poll": None if r.first_poll is None else r.first_poll.as_json(),
                }
            )
        outside = [
            {
                "principal": principal,
                "scope": scope,
                "served": r.served,
                "throttled_429": r.throttled,
            }
            for (principal, scope), r in sorted(self.arm.reads.outside.items())
            if wanted is None or principal == wanted
        ]
        return _raw_json({"vaults": vaults, "outside_vaults": outside})

    async def world_summary(self, request: web.Request) -> web.Response:
        now = self._now()
        world = self.arm.world
        return _raw_json(
            {
                "tenant_id": world.tenant_id,
                "now": now,
                "subscriptions": [
                    {
                        "id": sub.id,
                        "vaults": [
                            {
                                "id": v.id,
                                "location": v.location,
                                "forbidden": v.forbidden,
                                "jobs": len(v.jobs),
                                "running": sum(1 for j in v.jobs if not j.is_terminal),
                                "items": [
                                    {
                                        "container": i.container,
                                        "name": i.name,
                                        "workload": i.workload.value,
                                        "job_type": i.job_type,
                                    }
                                    for i in v.items
                                ],
                            }
                            for v in sorted(sub.vaults.values(), key=lambda v: v.key)
                        ],
                    }
                    for sub in sorted(world.subscriptions.values(), key=lambda s: s.id)
                ],
            }
        )

    # -------------------------------------------------------------- control

    async def add_vault(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        self._now()
        try:
            vault = self.arm.world.add_vault(
                subscription_id=str(body["subscription_id"]),
                resource_group=str(body.get("resource_group", "rg-added")),
                name=str(body["name"]),
                location=str(body.get("location", "westeurope")),
            )
        except KeyError as exc:
            raise web.HTTPBadRequest(text=f"missing field {exc}") from exc
        except ValueError as exc:
            raise web.HTTPConflict(text=str(exc)) from exc
        return web.json_response(vault_json(vault), status=201)

    async def delete_vault(self, request: web.Request) -> web.Response:
        vault_id = request.query.get("id", "")
        self._now()
        try:
            self.arm.world.delete_vault(vault_id)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"no live vault {vault_id!r}") from exc
        return web.Response(status=204)

    async def forbid_vault(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        try:
            vault = self.arm.world.set_forbidden(str(body["id"]), bool(body.get("forbidden", True)))
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"no vault {body.get('id')!r}") from exc
        return web.json_response({"id": vault.id, "forbidden": vault.forbidden})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"settings": self.arm.faults.settings.as_json(), "injected": self.arm.faults.injected}
        )

    async def put_faults(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        try:
            self.arm.faults.settings = self.arm.faults.settings.updated(body)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response({"settings": self.arm.faults.settings.as_json()})


def _aad_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {
            "error": error,
            "error_description": description,
            "error_codes": [int(description.removeprefix("AADSTS").split(":")[0])]
            if description.startswith("AADSTS")
            else [],
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status=status,
    )


def _raw_json(body: object) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_UTC_Z),
        content_type="application/json",
    )


def build_app(arm: ArmSurface) -> web.Application:
    """The aiohttp application: control routes first, every other path goes to ARM."""
    app = web.Application(client_max_size=1024**2)
    app.add_routes(ControlSurface(arm).routes())
    app.router.add_route("*", "/{tail:.*}", arm.handle)
    return app


def build_foreign_app(foreign: ForeignOrigin) -> web.Application:
    """A server on another origin that counts the bearer tokens sent to it (it should get none)."""

    async def anything(request: web.Request) -> web.Response:
        foreign.requests += 1
        if request.headers.get("Authorization"):
            foreign.tokens_received += 1
        return web.json_response({"value": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app
