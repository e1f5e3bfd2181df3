"""The emulator's ARM + Recovery Services surface: the request pipeline, routes and handlers.

Every ARM request goes through one pipeline, in ARM's order: correlation ids, authentication,
api-version, routing, throttling, injected faults, then the handler. ARM paths are matched
case-insensitively, as ARM does (`/Subscriptions/` and `microsoft.recoveryservices` both work).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import quote_plus, unquote_plus

import orjson
from aiohttp import web

from monitor.emulator import backup_vaults as bv
from monitor.emulator import filters
from monitor.emulator import resource_graph as arg
from monitor.emulator.arm_replies import (
    ArmReply,
    Call,
    Reply,
    correlation_headers,
    drop,
    json_response,
    server_error,
    throttled,
    truncated,
)
from monitor.emulator.clock import WorldClock
from monitor.emulator.estate import Job, ProtectedItem, Subscription, Vault
from monitor.emulator.faults import Fault, FaultInjector
from monitor.emulator.foreign import ForeignOrigin
from monitor.emulator.identity import STATIC_PRINCIPAL, TokenIssuer
from monitor.emulator.protection import policy_json
from monitor.emulator.reads import ReadKind, ReadLog
from monitor.emulator.settings import EmulatorSettings
from monitor.emulator.tenancy import Tenancy
from monitor.emulator.throttle import ActionLimiter, Throttle
from monitor.emulator.wire import (
    JSON,
    error_json,
    item_json,
    job_json,
    operation_status_json,
    subscription_json,
    vault_json,
)
from monitor.emulator.world import World

PROTECTED_ITEMS_READ = (
    "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/read"
)
NEXT_LINK_API_VERSION = "2017-07-01"  # what the backup RP writes into nextLink, whatever was asked
OPERATION_API_VERSION = "2016-12-01"

Handler = Callable[["ArmSurface", Call], Awaitable[Reply]]

SUB = r"/subscriptions/(?P<sub>[^/]+)"
VAULT = (
    SUB
    + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.recoveryservices/vaults/(?P<vault>[^/]+)"
)
BVAULT = (
    SUB + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.dataprotection"
    r"/backupvaults/(?P<bvault>[^/]+)"
)
ITEM = (
    VAULT + r"/backupfabrics/(?P<fabric>[^/]+)/protectioncontainers/(?P<container>[^/]+)"
    r"/protecteditems/(?P<item>[^/]+)"
)


class ArmSurface:
    """The emulator's request handling; owns the world, throttle, faults and token issuer."""

    def __init__(self, settings: EmulatorSettings, clock: WorldClock) -> None:
        self.settings = settings
        self.clock = clock
        self.world = World(settings.world, clock.utcnow())
        self.throttle = Throttle(settings.throttle)
        self.faults = FaultInjector(settings.faults, settings.fault_seed)
        self.issuer = TokenIssuer(settings.world.tenant_id)
        self.tenancy = Tenancy(
            settings.world.tenant_id,
            settings.tenants,
            settings.lighthouse,
            self.world.subscriptions,
        )
        self.foreign = ForeignOrigin()
        self.protected_items_limiter = ActionLimiter(
            settings.protected_items_limit, settings.protected_items_window_s
        )
        self.reads = ReadLog()
        self.resource_graph = arg.ResourceGraph(settings.resource_graph, self.world.backup_vaults)
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
            ("GET", re.compile(VAULT + r"/backuppolicies", re.I), ArmSurface._policies),
            (
                "GET",
                re.compile(VAULT + r"/backuppolicies/(?P<policy>[^/]+)", re.I),
                ArmSurface._policy,
            ),
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
            # Backup vaults (Microsoft.DataProtection); none exist unless the world has them.
            (
                "GET",
                re.compile(SUB + r"/providers/microsoft\.dataprotection/backupvaults", re.I),
                ArmSurface._bv_vaults,
            ),
            (
                "GET",
                re.compile(
                    SUB + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.dataprotection"
                    r"/backupvaults",
                    re.I,
                ),
                ArmSurface._bv_vaults,
            ),
            ("GET", re.compile(BVAULT, re.I), ArmSurface._bv_vault),
            ("GET", re.compile(BVAULT + r"/backupjobs", re.I), ArmSurface._bv_jobs),
            ("GET", re.compile(BVAULT + r"/backupinstances", re.I), ArmSurface._bv_instances),
            ("GET", re.compile(BVAULT + r"/backuppolicies", re.I), ArmSurface._bv_policies),
            ("GET", re.compile(BVAULT + r"/backupjobs/(?P<job>[^/]+)", re.I), ArmSurface._bv_job),
            # Azure Resource Graph: its own quota instead of ARM's read buckets.
            (
                "POST",
                re.compile(r"/providers/microsoft\.resourcegraph/resources", re.I),
                ArmSurface._resource_graph,
            ),
        ]

    # ------------------------------------------------------------------ the ARM pipeline

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one ARM request."""
        headers = correlation_headers(request, self.clock.utcnow())
        try:
            return await self._pipeline(request, headers)
        except ArmReply as reply:
            headers.update(reply.headers)
            if reply.status == 401 and "WWW-Authenticate" not in reply.headers:
                headers["WWW-Authenticate"] = (
                    f'Bearer authorization_uri="{self.base_url}/{self.world.tenant_id}", '
                    'error="invalid_token", error_description="The authentication failed"'
                )
                headers["x-ms-failure-cause"] = "gateway"
            return json_response(reply.status, error_json(reply.code, reply.message), headers)

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
        self._check_tenant(path, check.tenant)
        route = self._route(request.method, path)
        match = route[1] if route else {}
        if route is not None and route[0] is ArmSurface._resource_graph:
            quota = self.resource_graph.quota.check(check.principal, now_mono)
            headers.update(quota.headers)
            self.reads.record(
                principal=check.principal,
                scope=arg.SCOPE,
                vault_key=None,
                kind=ReadKind.OTHER,
                served=quota.allowed,
                at=now,
            )
            if not quota.allowed:
                headers["Retry-After"] = str(quota.retry_after_s)
                body = arg.error_body(
                    "RateLimiting",
                    [{"code": "RateLimiting", "message": arg.THROTTLED}],
                    headers["x-ms-correlation-request-id"],
                    now,
                )
                return json_response(429, body, headers)
        elif (
            route is not None
            and route[0] is ArmSurface._items
            and (wait := self.protected_items_limiter.check(match["sub"].lower(), now.timestamp()))
        ):
            # Recovery Services' own per-action limit: ARM's read buckets are not touched.
            self._log_read(route, params, match["sub"], check.principal, False, now)
            limiter = self.protected_items_limiter
            window = int(limiter.window_s)
            interval = f"{window // 3600:02d}:{window % 3600 // 60:02d}:{window % 60:02d}"
            raise ArmReply(
                429,
                "ResourceRequestsThrottled",
                f"Number of requests for action '{PROTECTED_ITEMS_READ}' exceeded the limit of "
                f"'{limiter.limit}' for time interval '{interval}'. Please try again after "
                f"'{wait}' seconds.",
                {"Retry-After": str(wait)},
            )
        else:
            scope = match.get("sub", "tenant")
            verdict = self.throttle.check(
                scope=scope,
                principal=check.principal,
                tenant=check.tenant,
                kind="writes" if request.method == "POST" else "reads",
                now=now_mono,
                wall=now.timestamp(),
            )
            headers.update(verdict.headers)
            if request.method == "GET":
                self._log_read(route, params, scope, check.principal, verdict.allowed, now)
            if not verdict.allowed:
                raise throttled(verdict, scope, check.principal, check.tenant)
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
            return drop(request)
        if faults.draw(Fault.SERVER_ERROR):
            raise server_error(faults.server_status(), headers)
        if route is None:
            raise ArmReply(
                404,
                "InvalidResourceType",
                f"The resource type could not be found for path '{request.path}'.",
            )
        self.world.advance(now)
        call = Call(
            request=request,
            params=params,
            match=match,
            principal=check.principal,
            now=now,
            tenant=check.tenant,
        )
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
            return await truncated(request, reply.status, orjson.dumps(reply.body), headers)
        return json_response(reply.status, reply.body, headers)

    def _check_tenant(self, path: str, tenant: str) -> None:
        """ARM's 401 for a token whose tenant may not read the subscription the path names.

        Raises:
            ArmReply: 401 `InvalidAuthenticationTokenTenant`, with the subscription's own
                authority in `WWW-Authenticate`.
        """
        if self.tenancy.single:
            return
        m = _SUBSCRIPTION_PATH.match(path)
        if m is None:
            return
        sub_id = m.group(1)
        home = self.tenancy.home_of(sub_id)
        if home is None or self.tenancy.may_read(tenant, sub_id):
            return  # an unknown subscription is the handler's 404
        authority = f"{self.base_url}/{home}"
        raise ArmReply(
            401,
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer '{self.base_url}/{tenant}/'. It must "
            f"match the tenant '{self.base_url}/{home}/' associated with this subscription. "
            f"Please use the authority (URL) '{authority}' to get the token. Note, if the "
            "subscription is transferred to another tenant there is no impact to the services, "
            "but information about new tenant could take time to propagate (up to an hour). If "
            "you just transferred your subscription and see this error message, please try back "
            "later.",
            {
                "WWW-Authenticate": (
                    f'Bearer authorization_uri="{authority}", error="invalid_token", '
                    'error_description="The access token is from the wrong issuer."'
                )
            },
        )

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
        elif "bvault" in match:
            vault_key = (
                f"/subscriptions/{match['sub']}/resourcegroups/{match['rg']}"
                f"/providers/microsoft.dataprotection/backupvaults/{match['bvault']}"
            ).lower()
        if handler is ArmSurface._jobs or handler is ArmSurface._bv_jobs:
            kind = ReadKind.NEXT_PAGE if "$skiptoken" in params else ReadKind.FIRST_PAGE
        elif handler is ArmSurface._job or handler is ArmSurface._bv_job:
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

    def _subscription_row(self, sub: Subscription) -> JSON:
        tenancy = self.tenancy
        if tenancy.single:
            return subscription_json(sub, self.world.tenant_id)
        home = tenancy.home_of(sub.id) or tenancy.home_tenant
        return subscription_json(sub, home, managed_by=tenancy.delegated_to(sub.id))

    async def _subscriptions(self, call: Call) -> Reply:
        """Every subscription the token's tenant may read (its own and those delegated to it)."""
        visible = self.tenancy.visible(call.tenant)
        subs = sorted(
            (
                s
                for s in self.world.subscriptions.values()
                if visible is None or s.id.lower() in visible
            ),
            key=lambda s: s.id,
        )
        return self._page(call, [self._subscription_row(s) for s in subs])

    async def _subscription(self, call: Call) -> Reply:
        self._subscription_or_404(call.match["sub"])
        sub = next(
            s
            for s in self.world.subscriptions.values()
            if s.id.lower() == call.match["sub"].lower()
        )
        return Reply(200, self._subscription_row(sub))

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
        """`BackupProtectedItems_List`: `$filter` on backupManagementType and itemType, paged by
        the jobs' page size with an offset `$skipToken`."""
        vault = self._vault_or_error(
            call, "Microsoft.RecoveryServices/vaults/backupProtectedItems/read"
        )
        try:
            wanted = _item_filter(call.params.get("$filter"))
        except ValueError as exc:
            raise ArmReply(
                400,
                "BMSUserErrorInvalidInput",
                f"Input provided for the call is invalid: {exc}",
            ) from exc
        rows = [item_json(vault, item) for item in vault.items]
        rows = [
            r
            for r in rows
            if all(str(r["properties"].get(f, "")).lower() == v.lower() for f, v in wanted.items())
        ]
        start = _decode_offset(call.params.get("$skiptoken"))
        size = self.settings.page_size
        body: JSON = {"value": rows[start : start + size]}
        if start + size < len(rows):
            query = f"api-version={_arm_quote(call.params['api-version'])}"
            if "$filter" in call.params:
                query += f"&%24filter={_arm_quote(call.params['$filter'])}"
            query += f"&%24skipToken={_encode_offset(start + size)}"
            body["nextLink"] = f"{self.base_url}{call.request.path}?{query}"
        return Reply(200, body)

    async def _policies(self, call: Call) -> Reply:
        """`BackupPolicies_List`: every policy of the vault (none outside "policies")."""
        vault = self._vault_or_error(call, "Microsoft.RecoveryServices/vaults/backupPolicies/read")
        return Reply(200, {"value": [self._policy_row(vault, p.name) for p in vault.policies]})

    async def _policy(self, call: Call) -> Reply:
        vault = self._vault_or_error(call, "Microsoft.RecoveryServices/vaults/backupPolicies/read")
        if not any(p.name.lower() == call.match["policy"].lower() for p in vault.policies):
            raise ArmReply(
                404,
                "BMSUserErrorPolicyNotFound",
                f"Policy '{call.match['policy']}' was not found in vault '{vault.name}'.",
            )
        return Reply(200, self._policy_row(vault, call.match["policy"]))

    def _policy_row(self, vault: Vault, name: str) -> JSON:
        policy = next(p for p in vault.policies if p.name.lower() == name.lower())
        count = sum(
            1
            for i in vault.items
            if i.policy is policy and i.protection_state != "ProtectionStopped"
        )
        return policy_json(policy, count)

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

    # ------------------------------------------------------------------ Backup vaults

    def _bv_vault_or_404(self, call: Call) -> bv.BackupVault:
        m = call.match
        self._subscription_or_404(m["sub"])
        vault = self.world.backup_vaults.vault(
            f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}"
            f"/providers/Microsoft.DataProtection/backupVaults/{m['bvault']}"
        )
        if vault is None:
            raise ArmReply(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.DataProtection/backupVaults/{m['bvault']}' under "
                f"resource group '{m['rg']}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return vault

    async def _bv_vaults(self, call: Call) -> Reply:
        self._subscription_or_404(call.match["sub"])
        rg = call.match.get("rg", "").lower()
        vaults = sorted(
            (
                v
                for v in self.world.backup_vaults.by_subscription.get(call.match["sub"].lower(), [])
                if not rg or v.resource_group.lower() == rg
            ),
            key=lambda v: v.key,
        )
        return self._page(call, [bv.vault_json(v) for v in vaults])

    async def _bv_vault(self, call: Call) -> Reply:
        return Reply(200, bv.vault_json(self._bv_vault_or_404(call)))

    async def _bv_jobs(self, call: Call) -> Reply:
        """The whole retained history, oldest first; `$filter` is ignored (the API has none)."""
        vault = self._bv_vault_or_404(call)
        token = call.params.get("$skiptoken")
        position = 0
        if token:
            text = unquote_plus(token)
            if not text.startswith("bv") or not text[2:].isdigit():
                raise ArmReply(400, "InvalidSkipToken", "The $skipToken value is invalid.")
            position = int(text[2:])
        start = max(position - vault.pruned, 0)
        size = self.settings.page_size
        jobs = vault.jobs
        page = jobs[start : start + size]
        body: JSON = {"value": [bv.job_json(j, call.now, details=False) for j in page]}
        if start + size < len(jobs):
            base = self.foreign.url if self.faults.draw(Fault.FOREIGN_NEXT_LINK) else self.base_url
            version = _arm_quote(call.params["api-version"])
            nxt = jobs[start + size].ordinal
            body["nextLink"] = (
                f"{base}{call.request.path}?api-version={version}&%24skipToken=bv{nxt}"
            )
        return Reply(200, body)

    async def _bv_instances(self, call: Call) -> Reply:
        """`BackupInstances_List`: the vault's instances, `page_size` a page."""
        vault = self._bv_vault_or_404(call)
        rows = [bv.instance_json(i) for i in vault.instances]
        start = _decode_offset(call.params.get("$skiptoken"))
        size = self.settings.page_size
        body: JSON = {"value": rows[start : start + size]}
        if start + size < len(rows):
            version = _arm_quote(call.params["api-version"])
            body["nextLink"] = (
                f"{self.base_url}{call.request.path}?api-version={version}"
                f"&%24skipToken={_encode_offset(start + size)}"
            )
        return Reply(200, body)

    async def _bv_policies(self, call: Call) -> Reply:
        """`BackupPolicies_List` (Data Protection): only the "policies" profile has any."""
        vault = self._bv_vault_or_404(call)
        rows = bv.policies_json(vault) if self.world.backup_vaults.by_policy else []
        return Reply(200, {"value": rows})

    async def _bv_job(self, call: Call) -> Reply:
        vault = self._bv_vault_or_404(call)
        job = vault.jobs_by_name.get(call.match["job"].lower())
        if job is None:
            raise ArmReply(
                404,
                "ResourceNotFound",
                f"The job '{call.match['job']}' was not found in Backup vault '{vault.name}'.",
            )
        return Reply(200, bv.job_json(job, call.now, details=True))

    # ------------------------------------------------------------------ Resource Graph

    async def _resource_graph(self, call: Call) -> Reply:
        """`POST /providers/Microsoft.ResourceGraph/resources`: see resource_graph.py."""
        version = call.params["api-version"]
        if version not in arg.API_VERSIONS:
            raise ArmReply(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(arg.API_VERSIONS)}'.",
            )
        correlation = call.request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
        echo = {"x-ms-correlation-request-id": correlation}
        try:
            try:
                body = orjson.loads(await call.request.read())
            except orjson.JSONDecodeError as exc:
                raise arg.ArgError(
                    400,
                    [
                        {
                            "code": "InvalidRequestContent",
                            "message": f"The request content is not valid JSON: {exc}",
                        }
                    ],
                ) from exc
            visible = self.tenancy.visible(call.tenant)
            return Reply(200, self.resource_graph.answer(body, now=call.now, visible=visible), echo)
        except arg.ArgError as exc:
            return Reply(
                exc.status, arg.error_body("BadRequest", exc.details, correlation, call.now), echo
            )

    # ------------------------------------------------------------------ operations

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


def _arm_quote(value: str) -> str:
    """Encode a query value as the backup RP does: `+` for spaces, lower-case `%xx` escapes."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(value, safe=""))


_SUBSCRIPTION_PATH = re.compile(r"/subscriptions/([^/]+)", re.I)
_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+'([^']*)'\s*", re.I)
_ITEM_FILTER_FIELDS = {"backupmanagementtype": "backupManagementType", "itemtype": "workloadType"}


def _item_filter(text: str | None) -> dict[str, str]:
    """`backupManagementType eq 'X' [and itemType eq 'Y']` as {property: value}.

    Raises:
        ValueError: a clause that is not `name eq 'value'` or names an unknown field.
    """
    if not text or not text.strip():
        return {}
    out: dict[str, str] = {}
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.I):
        m = _CLAUSE.fullmatch(clause)
        if m is None or m.group(1).lower() not in _ITEM_FILTER_FIELDS:
            raise ValueError(f"unsupported filter clause {clause!r}")
        out[_ITEM_FILTER_FIELDS[m.group(1).lower()]] = m.group(2)
    return out


def _encode_offset(offset: int) -> str:
    return f"o{offset}"


def _decode_offset(token: str | None) -> int:
    if not token:
        return 0
    text = token if token.startswith("o") else unquote_plus(token)
    if not text.startswith("o") or not text[1:].isdigit():
        raise ArmReply(400, "InvalidSkipToken", "The $skiptoken value is invalid.")
    return int(text[1:])
