"""A loopback ARM that serves hostile job lists: endless nextLinks, huge bodies, deep JSON."""

from __future__ import annotations

import gzip
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import orjson
from aiohttp import web

SUBSCRIPTION = "4a1f0c7e-9d2b-4e8a-b5c3-6f7d8e9a0b1c"
TOKEN = "hostile-arm-token"
CHUNK = 64 * 1024

Pager = Callable[["HostileArm", web.Request, int], Awaitable[web.StreamResponse]]
"""Answers page `n` (0-based) of one vault's job list."""


def vault_id(name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-hostile/providers/"
        f"Microsoft.RecoveryServices/vaults/{name}"
    )


def job_item(vault: str, name: str, *, status: str = "Completed", age_s: float = 600) -> Any:
    """A well-formed list item of `vault` (a name) that started `age_s` seconds ago."""
    start = datetime.now(UTC) - timedelta(seconds=age_s)
    end = start + timedelta(seconds=60)
    return {
        "id": f"{vault_id(vault)}/backupJobs/{name}",
        "name": name,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": {
            "jobType": "AzureIaaSVMJob",
            "status": status,
            "operation": "Backup",
            "backupManagementType": "AzureIaasVM",
            "entityFriendlyName": f"vm-{name[:8]}",
            "startTime": start.isoformat().replace("+00:00", "Z"),
            "endTime": end.isoformat().replace("+00:00", "Z") if status != "InProgress" else None,
            "duration": "PT1M",
        },
    }


@dataclass
class HostileArm:
    """What the stub serves (a pager per vault name) and what it saw."""

    pagers: dict[str, Pager]
    url: str = ""
    requests: Counter[str] = field(default_factory=Counter)
    """Job-list requests per vault name."""
    sent: dict[str, int] = field(default_factory=dict)
    """Body bytes each huge answer (by vault name) got written before the client went away."""
    done: dict[str, anyio.Event] = field(default_factory=dict)
    """Set when the huge answer to that vault has stopped writing."""

    def next_link(self, request: web.Request, page: int) -> str:
        return str(request.url.with_query({"api-version": "2025-08-01", "$skiptoken": str(page)}))


def listing(items_of: Callable[[str], Sequence[Any]]) -> Pager:
    """One page, no nextLink: `items_of(vault_name)`."""

    async def pager(arm: HostileArm, request: web.Request, page: int) -> web.StreamResponse:
        return web.json_response(
            {"value": list(items_of(request.match_info["vault"]))}, dumps=_dumps
        )

    return pager


def endless(*, delay_s: float = 0.0, pad_bytes: int = 0) -> Pager:
    """A page with one job and a nextLink that names the next page, forever; each page
    `pad_bytes` long at least and served after `delay_s`."""

    async def pager(arm: HostileArm, request: web.Request, page: int) -> web.StreamResponse:
        if delay_s:
            await anyio.sleep(delay_s)
        vault = request.match_info["vault"]
        body = {
            "value": [job_item(vault, f"{page:08d}-0000-4000-8000-000000000000")],
            "nextLink": arm.next_link(request, page + 1),
            "padding": "x" * pad_bytes,
        }
        return web.json_response(body, dumps=_dumps)

    return pager


def huge(total_bytes: int, *, declared: bool, compressed: bool = False) -> Pager:
    """A 200 whose JSON-looking body is `total_bytes` long, written in 64 KiB chunks, with a
    Content-Length (`declared`) or chunked; `compressed`: gzip, so the bytes on the wire are
    few and the decoded body is `total_bytes`. Counts what the client let it write."""

    async def pager(arm: HostileArm, request: web.Request, page: int) -> web.StreamResponse:
        vault = request.match_info["vault"]
        arm.done.setdefault(vault, anyio.Event())
        head = b'{"value":[],"padding":"'
        body_len = total_bytes - len(head) - 2
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if compressed:
            data = gzip.compress(head + b"x" * body_len + b'"}', compresslevel=9)
            response.headers["Content-Encoding"] = "gzip"
            response.content_length = len(data)
            chunks: Any = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        else:
            if declared:
                response.content_length = total_bytes
            else:
                response.enable_chunked_encoding()
            chunks = _chunks(head, body_len)
        written = 0
        try:
            await response.prepare(request)
            for chunk in chunks:
                # Let the loop see a closed connection (a write to a dead transport is dropped
                # without an error as long as nothing yields).
                await anyio.lowlevel.checkpoint()
                if request.transport is None or request.transport.is_closing():
                    break
                await response.write(chunk)
                written += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client closed the connection: what it took is counted
        finally:
            arm.sent[vault] = written
            arm.done[vault].set()
        return response

    return pager


def _chunks(head: bytes, body_len: int) -> Any:
    yield head
    filler = b"x" * CHUNK
    left = body_len
    while left > 0:
        yield filler[: min(left, CHUNK)]
        left -= CHUNK
    yield b'"}'


def deep_page(depth: int) -> Pager:
    """Four items: a job, a job whose property bag holds a value `depth` levels deep, an item
    whose properties are that deep, and another job."""

    async def pager(arm: HostileArm, request: web.Request, page: int) -> web.StreamResponse:
        vault = request.match_info["vault"]
        chain = b'{"x":' * depth + b"1" + b"}" * depth
        deep_bag = job_item(vault, "00000002-0000-4000-8000-000000000000")
        deep_bag["properties"]["extendedInfo"] = {"propertyBag": {"x": "@CHAIN@"}}
        deep_props = {"id": f"{vault_id(vault)}/backupJobs/deep", "name": "deep", "properties": 0}
        items = [
            job_item(vault, "00000001-0000-4000-8000-000000000000"),
            deep_bag,
            deep_props,
            job_item(vault, "00000004-0000-4000-8000-000000000000", status="Failed"),
        ]
        body = (
            orjson.dumps({"value": items})
            .replace(b'"@CHAIN@"', chain)
            .replace(b'"properties":0', b'"properties":' + chain)
        )
        return web.Response(body=body, content_type="application/json")

    return pager


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _build_app(arm: HostileArm) -> web.Application:
    prefix = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices"

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def vault(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        name = request.match_info["vault"]
        if name not in arm.pagers:
            return web.json_response({"error": {"code": "ResourceNotFound"}}, status=404)
        return web.json_response(
            {"id": vault_id(name), "name": name, "location": "westeurope"}, dumps=_dumps
        )

    async def jobs(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        name = request.match_info["vault"]
        arm.requests[name] += 1
        page = int(request.query.get("$skiptoken", "0"))
        return await arm.pagers[name](arm, request, page)

    async def job(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        return web.json_response(
            job_item(request.match_info["vault"], request.match_info["job"]), dumps=_dumps
        )

    app = web.Application()
    app.router.add_get(prefix + "/vaults/{vault}", vault)
    app.router.add_get(prefix + "/vaults/{vault}/backupJobs", jobs)
    app.router.add_get(prefix + "/vaults/{vault}/backupJobs/{job}", job)
    return app


@asynccontextmanager
async def running_hostile_arm(
    pagers: dict[str, Pager], *, ssl_context: ssl.SSLContext
) -> AsyncIterator[HostileArm]:
    """Serve `pagers` (vault name → job-list answers) over TLS on 127.0.0.1, a free port."""
    arm = HostileArm(pagers=pagers)
    runner = web.AppRunner(_build_app(arm), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        arm.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        yield arm
    finally:
        await runner.cleanup()
