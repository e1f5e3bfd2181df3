"""What an ARM answer means: a 2xx body decoded as JSON (`Reply`), or the ArmError of its status."""

# Rules:
# - A 2xx body that is not JSON is an ArmTransportError; one nested too deep for orjson is
#   decoded with each too-deep value replaced by null, off the event loop, and logged.
# - The status maps to one ArmError subclass (401 ArmAuthError, 403 ArmForbidden, 404
#   ArmNotFound, 5xx ArmServerError, any other ArmError); ArmClient raises 429 itself, as
#   ArmThrottled, because the scope's budget decides its pause.
# - ARM's own error code and message are quoted, the message cut to _MAX_MESSAGE characters.

from __future__ import annotations

from typing import Final, NamedTuple

import anyio
import orjson
import structlog
from yarl import URL

from monitor.arm_http import Answer
from monitor.core.json_depth import MAX_DEPTH, is_too_deep, loads_bounded
from monitor.errors import (
    ArmAuthError,
    ArmError,
    ArmForbidden,
    ArmNotFound,
    ArmServerError,
    ArmTransportError,
    ParseError,
)

__all__ = ["Reply", "arm_error", "decode_reply", "error_text", "shape_error", "status_error"]

log = structlog.get_logger(__name__)

# ARM messages quoted in our errors are cut to this many characters.
_MAX_MESSAGE: Final = 300


class Reply(NamedTuple):
    """A 2xx answer: its decoded JSON, its size and where it came from (a named tuple, as
    `arm_http.Answer`: one is made for every request)."""

    payload: object
    url: URL
    status: int
    request_id: str | None
    correlation_id: str | None
    size: int


async def decode_reply(url: URL, answer: Answer, deep_json: anyio.CapacityLimiter) -> Reply:
    """The JSON of a 2xx `answer` to GET `url`.

    A body orjson refuses as too deep is decoded again in a thread behind `deep_json` (pure
    Python, seconds for tens of MiB), each too-deep value replaced by null; the parsers then
    keep or skip the items that held one by their own rules. The replaced values are logged
    once per answer (`arm.json_too_deep`, with their paths).

    Raises:
        ArmTransportError: the body is not JSON (nor once its too-deep values are replaced).
    """
    status, headers, body = answer.status, answer.headers, answer.body
    request_id = headers.get("x-ms-request-id")
    correlation_id = headers.get("x-ms-correlation-request-id")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem: orjson.JSONDecodeError | None = exc
        if is_too_deep(exc):
            payload, problem = await _decode_too_deep(url, body, request_id, deep_json)
        if problem is not None:
            kind = headers.get("Content-Type", "no content type")
            deep = "nested deeper than 1024 levels, and " if problem is not exc else ""
            raise ArmTransportError(
                f"ARM answered {status} to GET {url} with a body that is {deep}not JSON "
                f"({kind}, {len(body)} bytes; request id {request_id})",
                url=str(url),
                status=status,
                request_id=request_id,
                correlation_id=correlation_id,
            ) from problem
    return Reply(
        payload=payload,
        url=url,
        status=status,
        size=len(body),
        request_id=request_id,
        correlation_id=correlation_id,
    )


async def _decode_too_deep(
    url: URL, body: bytes, request_id: str | None, deep_json: anyio.CapacityLimiter
) -> tuple[object, orjson.JSONDecodeError | None]:
    """The payload with each too-deep value replaced by null, or the decode error of the rest."""
    try:
        bounded = await anyio.to_thread.run_sync(
            loads_bounded, body, limiter=deep_json, abandon_on_cancel=True
        )
    except orjson.JSONDecodeError as exc:
        return None, exc
    log.warning(
        "arm.json_too_deep",
        url=str(url),
        max_depth=MAX_DEPTH,
        replaced=bounded.removed_count,
        paths=list(bounded.removed),
        request_id=request_id,
    )
    return bounded.value, None


def arm_error(body: bytes) -> tuple[str | None, str | None]:
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


def error_text(url: URL, answer: Answer, code: str | None, message: str | None) -> str:
    """The message of the error for a non-2xx `answer`: status, code, URL, message, request id."""
    return (
        f"ARM answered {answer.status} {code or '(no code)'} to GET {url}: "
        f"{message or '(no message)'} (request id {answer.headers.get('x-ms-request-id')})"
    )


def status_error(url: URL, answer: Answer, code: str | None, message: str | None) -> ArmError:
    """The ArmError for a non-2xx `answer` other than 429 (see the module rules).

    `code` and `message` are ARM's (`arm_error`); a 401 is the answer after one token refresh.
    """
    status = answer.status
    text = error_text(url, answer, code, message)
    error: type[ArmError] = ArmError
    if status == 401:
        error, text = ArmAuthError, text + "; the token was refreshed once already"
    elif status == 403:
        error = ArmForbidden
    elif status == 404:
        error = ArmNotFound
    elif status >= 500:
        error = ArmServerError
    return error(
        text,
        url=str(url),
        status=status,
        code=code,
        request_id=answer.headers.get("x-ms-request-id"),
        correlation_id=answer.headers.get("x-ms-correlation-request-id"),
    )


def shape_error(reply: Reply, what: str, exc: ParseError) -> ArmTransportError:
    """The error for a 2xx `reply` whose JSON is not `what` (`a vault`, `a list page`)."""
    return ArmTransportError(
        f"ARM answered GET {reply.url} with JSON that is not {what}: {exc} "
        f"(request id {reply.request_id})",
        url=str(reply.url),
        status=reply.status,
        request_id=reply.request_id,
        correlation_id=reply.correlation_id,
    )
