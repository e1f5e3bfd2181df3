"""The emulator's surface outside ARM: the AAD and managed-identity token endpoints, `/_emulator`.

`/_emulator` is the ground truth (transitions, stats, the read log, the world) and the control API
(add, delete and forbid vaults; set faults; mint tokens). None of it is throttled or faulted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from monitor.emulator.arm_surface import ArmSurface
from monitor.emulator.estate import ProtectedItem
from monitor.emulator.identity import STATIC_PRINCIPAL
from monitor.emulator.tenancy import principal_name, split_principal
from monitor.emulator.wire import vault_json


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
            web.get("/_emulator/tenants", self.tenants),
            web.post("/_emulator/vaults", self.add_vault),
            web.delete("/_emulator/vaults", self.delete_vault),
            web.post("/_emulator/vaults/forbid", self.forbid_vault),
            web.get("/_emulator/faults", self.get_faults),
            web.put("/_emulator/faults", self.put_faults),
            web.post("/_emulator/tokens", self.mint_token),
            web.get("/_emulator/expected", self.expected),
            web.post("/_emulator/items/skip", self.skip_item),
            web.post("/_emulator/items/hang", self.hang_item),
            web.post("/_emulator/items/protection", self.item_protection),
            web.get("/_emulator/throttle/protected-items", self.get_items_limit),
            web.put("/_emulator/throttle/protected-items", self.put_items_limit),
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
        tenant_id = self.arm.tenancy.tenant(tenant)
        if tenant_id is None:
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
            tenant=tenant_id,
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
        audience = body.get("audience", "")  # e.g. https://monitor.azure.com (Logs Ingestion)
        if not isinstance(audience, str):
            raise web.HTTPBadRequest(text="audience must be a string")
        tenancy = self.arm.tenancy
        asked = body.get("tenant_id", tenancy.home_tenant)
        tenant_id = tenancy.tenant(asked) if isinstance(asked, str) else None
        if tenant_id is None or tenant_id != str(asked).lower():  # not "organizations" here
            raise web.HTTPBadRequest(
                text=f"tenant_id must be one of {', '.join(tenancy.tenant_ids)}, not {asked!r}"
            )
        token = self.arm.issuer.issue(
            principal,
            expires_at=self.arm.clock.utcnow().timestamp() + float(lifetime),
            audience=audience,
            tenant=tenant_id,
        )
        reply = {"token": token, "principal": principal}
        if not tenancy.single:
            reply |= {
                "tenant_id": tenant_id,
                "arm_principal": principal_name(principal, tenant_id, tenancy.home_tenant),
            }
        return web.json_response(reply)

    # -------------------------------------------------------------- ground truth

    async def transitions(self, request: web.Request) -> web.Response:
        """Every job status change, oldest first, by cursor.

        `?kind=recovery_services` (the default) gives the Recovery Services jobs' transitions,
        exactly as before Backup vaults existed; `?kind=backup_vault` gives the Backup vault
        jobs' (their own `seq`, each row with `vault_kind: backup_vault`).
        """
        self._now()
        kind = request.query.get("kind", "recovery_services")
        if kind not in ("recovery_services", "backup_vault"):
            raise web.HTTPBadRequest(
                text=f"kind must be recovery_services or backup_vault, not {kind!r}"
            )
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since and limit must be integers") from exc
        since, limit = max(since, 0), max(1, min(limit, 100_000))
        if kind == "backup_vault":
            bv_rows = self.arm.world.backup_vaults.transitions[since : since + limit]
            return _raw_json(
                {
                    "transitions": [t.as_json() for t in bv_rows],
                    "next": bv_rows[-1].seq if bv_rows else since,
                }
            )
        rows = self.arm.world.transitions_since(since, limit)
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
                "next": rows[-1].seq if rows else since,
            }
        )

    async def expected(self, request: web.Request) -> web.Response:
        """Every scheduled run whose due time passed (while its item was Protected), by cursor."""
        self._now()
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since and limit must be integers") from exc
        since, limit = max(since, 0), max(1, min(limit, 100_000))
        rows = self.arm.world.expected_since(since, limit)
        return _raw_json(
            {"runs": [r.as_json() for r in rows], "next": rows[-1].seq if rows else since}
        )

    async def _item_control(
        self, request: web.Request, field: str, kind: type
    ) -> tuple[ProtectedItem, Any]:
        body = await self._json_body(request)
        item_id, value = body.get("id"), body.get(field)
        if not isinstance(item_id, str) or not item_id:
            raise web.HTTPBadRequest(text="id must be the item's ARM id (a string)")
        if not isinstance(value, kind):
            raise web.HTTPBadRequest(text=f"{field} must be a {kind.__name__}")
        self._now()
        try:
            item = self.arm.world.item(item_id)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"no protected item {item_id!r}") from exc
        return item, value

    def _item_state(self, item: ProtectedItem) -> web.Response:
        return web.json_response(
            {
                "id": item.id,
                "skip": item.skip,
                "hang": item.hang,
                "protection_state": item.protection_state,
            }
        )

    async def skip_item(self, request: web.Request) -> web.Response:
        item, skip = await self._item_control(request, "skip", bool)
        self.arm.world.set_skip(item, skip)
        return self._item_state(item)

    async def hang_item(self, request: web.Request) -> web.Response:
        item, hang = await self._item_control(request, "hang", bool)
        self.arm.world.set_hang(item, hang)
        return self._item_state(item)

    async def item_protection(self, request: web.Request) -> web.Response:
        item, state = await self._item_control(request, "state", str)
        try:
            self.arm.world.set_protection(item, state)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return self._item_state(item)

    async def get_items_limit(self, request: web.Request) -> web.Response:
        return web.json_response(self.arm.protected_items_limiter.as_json())

    async def put_items_limit(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        limiter = self.arm.protected_items_limiter
        limit, window = body.get("limit", limiter.limit), body.get("window_s", limiter.window_s)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise web.HTTPBadRequest(text="limit must be an integer")
        if isinstance(window, bool) or not isinstance(window, int | float):
            raise web.HTTPBadRequest(text="window_s must be a number")
        try:
            limiter.configure(limit, float(window))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(limiter.as_json())

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
                "resource_graph": {
                    **self.arm.resource_graph.quota.stats_json(),
                    "answered_200": self.arm.resource_graph.queries,
                },
            }
        )

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.arm.throttle.reset_stats()
        self.arm.reads.reset()
        self.arm.resource_graph.quota.reset_stats()
        self.arm.resource_graph.queries = 0
        return web.json_response({"reset": True})

    async def read_log(self, request: web.Request) -> web.Response:
        """Reads per (principal, vault), each vault's first poll, and reads outside vaults.

        `?principal=P` keeps only that principal's rows: the client id in tenant 0,
        `client_id@tenant_id` in another tenant (tenancy.py). `?tenant=T` keeps only the rows
        of principals of tenant T. With more than one tenant each row names its `tenant_id`.
        """
        wanted = request.query.get("principal")
        wanted_tenant = request.query.get("tenant")
        tenancy = self.arm.tenancy
        home = tenancy.home_tenant

        def keep(principal: str) -> bool:
            if wanted is not None and principal != wanted:
                return False
            return wanted_tenant is None or (
                split_principal(principal, home)[1] == wanted_tenant.lower()
            )

        def tenant_of(principal: str) -> dict[str, str]:
            return {} if tenancy.single else {"tenant_id": split_principal(principal, home)[1]}

        world = self.arm.world
        vaults = []
        for (principal, key), r in sorted(self.arm.reads.vaults.items()):
            if not keep(principal):
                continue
            vault = world.vaults.get(key) or world.backup_vaults.vault(key)
            vaults.append(
                {
                    "principal": principal,
                    **tenant_of(principal),
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
                **tenant_of(principal),
                "scope": scope,
                "served": r.served,
                "throttled_429": r.throttled,
            }
            for (principal, scope), r in sorted(self.arm.reads.outside.items())
            if keep(principal)
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
                                        "id": i.id,
                                        "container": i.container,
                                        "name": i.name,
                                        "workload": i.workload.value,
                                        "job_type": i.job_type,
                                        "protection_state": i.protection_state,
                                        **({"policy_id": i.policy.id} if i.policy else {}),
                                    }
                                    for i in v.items
                                ],
                            }
                            for v in sorted(sub.vaults.values(), key=lambda v: v.key)
                        ],
                    }
                    for sub in sorted(world.subscriptions.values(), key=lambda s: s.id)
                ],
                # Only when the world has Backup vaults: the default summary is as before.
                **(
                    {"backup_vaults": self._backup_vaults_json()}
                    if world.backup_vaults.vaults
                    else {}
                ),
            }
        )

    async def tenants(self, request: web.Request) -> web.Response:
        """Each tenant's id, its subscriptions (home tenant) and the tenants they are delegated to.

        `{"tenants": [{"tenant_id", "subscriptions": [ids], "delegated_to": [tenant ids]}],
        "lighthouse": bool}`, tenant 0 first.
        """
        self._now()
        return _raw_json(self.arm.tenancy.as_json())

    def _backup_vaults_json(self) -> list[dict[str, object]]:
        return [
            {
                "id": v.id,
                "location": v.location,
                "vocabulary": v.vocabulary,
                "jobs": len(v.jobs),
                "running": sum(1 for j in v.jobs if not j.is_terminal),
                "instances": [
                    {"id": i.id, "datasource_type": i.datasource.type, "name": i.friendly_name}
                    for i in v.instances
                ],
            }
            for v in sorted(self.arm.world.backup_vaults.vaults.values(), key=lambda v: v.key)
        ]

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
