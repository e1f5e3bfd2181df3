"""What an ARM handler answers with: replies, ARM errors, and the broken answers faults make.

`ArmReply` is raised to answer with an ARM error; `Reply` is returned by a handler; `Call` is the
request as a handler sees it. The fault-shaped answers (dropped connection, truncated body, 5xx)
are written here so that `arm_surface.py` only decides when to give them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from aiohttp import web

from monitor.emulator.throttle import Verdict
from monitor.emulator.wire import JSON


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
    tenant: str = ""  # the token's tenant


def correlation_headers(request: web.Request, now: datetime) -> dict[str, str]:
    """The ids and fixed headers ARM puts on every answer."""
    request_id = str(uuid.uuid4())
    return {
        "x-ms-request-id": request_id,
        "x-ms-correlation-request-id": request.headers.get(
            "x-ms-correlation-request-id", request_id
        ),
        "x-ms-routing-request-id": f"WESTEUROPE:{now:%Y%m%dT%H%M%SZ}:{request_id}",
        "Cache-Control": "no-cache",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    }


def throttled(verdict: Verdict, scope: str, principal: str, tenant_id: str) -> ArmReply:
    """ARM's 429 for a read refused at tenant or subscription scope."""
    seconds = verdict.retry_after_s
    if scope == "tenant":
        message = (
            f"Number of 'read' requests for tenant '{tenant_id}' actor "
            f"'{principal}' exceeded. Please try again after '{seconds}' seconds after "
            "additional tokens are available. Refer to https://aka.ms/arm-throttling"
        )
        return ArmReply(429, "TenantRequestsThrottled", message, {"Retry-After": str(seconds)})
    message = (
        f"Number of 'read' requests for subscription '{scope}' actor '{principal}' exceeded. "
        f"Please try again after '{seconds}' seconds after additional tokens are available. "
        "Refer to https://aka.ms/arm-throttling"
    )
    return ArmReply(429, "SubscriptionRequestsThrottled", message, {"Retry-After": str(seconds)})


def json_response(status: int, body: JSON, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )


def server_error(status: int, headers: dict[str, str]) -> ArmReply:
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


def drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


async def truncated(
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
