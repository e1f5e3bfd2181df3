"""The emulator's Azure Monitor Logs Ingestion API: rows in, kept per rule and stream.

`POST /dataCollectionRules/{rule id}/streams/{stream}?api-version=2023-01-01` takes a JSON array
of objects, gzipped or not, with a bearer token issued for the monitor audience. It answers as the
service does: 204 when accepted; 401 for a missing, invalid or wrong-audience token; 404 for an
unknown rule or stream; 413 for a body over 1 MiB (as sent, or once unzipped); 429 with
`Retry-After` when a throttle fault says so; 400 for a body that is not a JSON array of objects.
Error bodies are the service's `{"error": {"code", "message"}}`.

`/_emulator/ingestion/rows` is the ground truth (every accepted row, per rule and stream, and what
was refused); `/_emulator/ingestion/faults` sets the 429s (a rate, or "the next N requests").
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Final

import orjson
from aiohttp import web

from monitor.emulator.clock import WorldClock
from monitor.emulator.identity import TokenIssuer

__all__ = ["EMULATOR_RULE_ID", "EMULATOR_STREAM", "IngestionSettings", "LogsIngestion"]

EMULATOR_RULE_ID: Final = "dcr-00000000000000000000000000000000"
EMULATOR_STREAM: Final = "Custom-BackupJobMonitor_CL"
MAX_BODY_BYTES: Final = 1024 * 1024  # "Maximum allowed content length: 1048576 bytes (1 MB)"
_DRAIN_LIMIT: Final = 64 * 1024 * 1024  # an over-size body is read this far, then cut off


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestionSettings:
    """The Logs Ingestion endpoint of an emulator run.

    Attributes:
        rules: each data collection rule's immutable id and the streams it declares.
        audience: the token audience the endpoint accepts (a scope's `/.default` is ignored).
        max_body_bytes: largest body accepted, as sent and once unzipped.
        throttle_next: the first N requests are answered 429.
        throttle_rate: after those, the chance (0 to 1) that a request is answered 429.
        retry_after_s: the `Retry-After` of those 429s.
        fault_seed: seed of the throttle rate's draws.
    """

    rules: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({EMULATOR_RULE_ID: (EMULATOR_STREAM,)})
    )
    audience: str = "https://monitor.azure.com"
    max_body_bytes: int = MAX_BODY_BYTES
    throttle_next: int = 0
    throttle_rate: float = 0.0
    retry_after_s: int = 10
    fault_seed: int = 11


@dataclass(slots=True)
class IngestionFaults:
    """The 429 faults as they stand now (the control surface changes them)."""

    throttle_next: int
    throttle_rate: float
    retry_after_s: int
    injected_429: int = 0

    def updated(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` (any of the three settings).

        Raises:
            ValueError: an unknown name, or a value of the wrong type or outside its range.
        """
        ranges = {
            "throttle_next": (0, 1_000_000),
            "throttle_rate": (0, 1),
            "retry_after_s": (0, 86_400),
        }
        for name, value in changes.items():
            if name not in ranges:
                raise ValueError(f"unknown ingestion fault {name!r}; known: {', '.join(ranges)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: must be a number, got {value!r}")
            low, high = ranges[name]
            if not low <= value <= high:
                raise ValueError(f"{name}: must be between {low} and {high}, got {value}")
            if name != "throttle_rate" and value != int(value):
                raise ValueError(f"{name}: must be a whole number, got {value}")
        for name, value in changes.items():
            setattr(self, name, float(value) if name == "throttle_rate" else int(value))

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class IngestionError(Exception):
    """An answer other than 204: its status, the service's error code and message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class LogsIngestion:
    """The Logs Ingestion endpoint and its `/_emulator/ingestion` ground truth and faults."""

    def __init__(self, settings: IngestionSettings, issuer: TokenIssuer, clock: WorldClock) -> None:
        self.settings = settings
        self._issuer, self._clock = issuer, clock
        self._rng = random.Random(settings.fault_seed)
        self.faults = IngestionFaults(
            settings.throttle_next, settings.throttle_rate, settings.retry_after_s
        )
        self.rows: dict[tuple[str, str], list[Any]] = {}  # (rule id, stream) -> rows, in order
        self.requests = 0
        self.refused: dict[int, int] = {}  # status -> count

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/dataCollectionRules/{rule}/streams/{stream}", self.upload),
            web.get("/_emulator/ingestion/rows", self.get_rows),
            web.post("/_emulator/ingestion/reset", self.reset),
            web.get("/_emulator/ingestion/faults", self.get_faults),
            web.put("/_emulator/ingestion/faults", self.put_faults),
        ]

    # ------------------------------------------------------------------ the API

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Serve one upload: 204 and the rows kept, or the service's error."""
        self.requests += 1
        try:
            key, rows = await self._accept(request)
        except IngestionError as refusal:
            self.refused[refusal.status] = self.refused.get(refusal.status, 0) + 1
            return web.Response(
                status=refusal.status,
                body=orjson.dumps({"error": {"code": refusal.code, "message": refusal.message}}),
                content_type="application/json",
                headers=refusal.headers,
            )
        self.rows.setdefault(key, []).extend(rows)
        return web.Response(status=204)

    async def _accept(self, request: web.Request) -> tuple[tuple[str, str], list[Any]]:
        if "api-version" not in {k.lower() for k in request.query}:
            raise IngestionError(
                400, "MissingApiVersion", "The api-version query parameter is required."
            )
        self._authenticate(request.headers.get("Authorization"))
        rule_id, stream = request.match_info["rule"], request.match_info["stream"]
        streams = self.settings.rules.get(rule_id)
        if streams is None:
            raise IngestionError(
                404, "NotFound", f"Data collection rule with immutable Id '{rule_id}' not found."
            )
        self._throttle()
        body = await self._body(request)
        rows = _rows(body)
        if stream not in streams:
            raise IngestionError(
                404,
                "InvalidStream",
                f"Stream '{stream}' is not declared by the data collection rule with "
                f"immutable Id '{rule_id}'.",
            )
        return (rule_id, stream), rows

    def _authenticate(self, authorization: str | None) -> None:
        check = self._issuer.check(authorization, now=self._clock.utcnow().timestamp())
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if check.principal is None:
            raise IngestionError(
                401, check.error_code or "InvalidToken", check.error_message or "", challenge
            )
        audience = _audience(check.audience)
        if audience != _audience(self.settings.audience):
            raise IngestionError(
                401,
                "InvalidAudience",
                f"The token's audience '{audience}' is not '{self.settings.audience}': "
                "ask for a token with scope "
                f"'{_audience(self.settings.audience)}/.default'.",
                challenge,
            )

    def _throttle(self) -> None:
        faults = self.faults
        if faults.throttle_next > 0:
            faults.throttle_next -= 1
        elif not (faults.throttle_rate > 0 and self._rng.random() < faults.throttle_rate):
            return
        faults.injected_429 += 1
        raise IngestionError(
            429,
            "TooManyRequests",
            "The request rate of this data collection rule is over its limit. "
            f"Retry after {faults.retry_after_s} seconds.",
            {"Retry-After": str(faults.retry_after_s)},
        )

    async def _body(self, request: web.Request) -> bytes:
        """The body, unzipped: aiohttp decodes `Content-Encoding: gzip` as it reads, so the size
        as sent is the `Content-Length`, and the size unzipped is counted here."""
        limit = self.settings.max_body_bytes
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            raise IngestionError(
                415,
                "UnsupportedContentEncoding",
                f"Content-Encoding '{encoding}' is not supported.",
            )
        parts: list[bytes] = []
        total = 0
        try:
            async for chunk in request.content.iter_chunked(65536):
                total += len(chunk)
                if total <= limit:
                    parts.append(chunk)
                elif total > _DRAIN_LIMIT:
                    break
        except web.RequestPayloadError as exc:  # aiohttp could not unzip it
            raise IngestionError(400, "InvalidContent", f"The body cannot be read: {exc}") from exc
        sent = request.content_length or 0
        if max(sent, total) > limit:
            raise _too_large(max(sent, total), limit)
        return b"".join(parts)

    # ------------------------------------------------------------------ ground truth and faults

    async def get_rows(self, request: web.Request) -> web.Response:
        """Every accepted row per (rule, stream); `?rule=` and `?stream=` narrow it."""
        rule, stream = request.query.get("rule"), request.query.get("stream")
        streams = [
            {"rule_id": r, "stream": s, "rows": rows}
            for (r, s), rows in sorted(self.rows.items())
            if (rule is None or r == rule) and (stream is None or s == stream)
        ]
        return web.Response(
            body=orjson.dumps(
                {
                    "streams": streams,
                    "requests": self.requests,
                    "refused": {str(k): v for k, v in sorted(self.refused.items())},
                }
            ),
            content_type="application/json",
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.rows.clear()
        self.refused.clear()
        self.requests = 0
        return web.json_response({"reset": True})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        try:
            self.faults.updated(body)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(self.faults.as_json())


def _audience(value: str) -> str:
    """An audience or scope without `/.default` and trailing slashes (the SDK asks for
    `https://monitor.azure.com//.default`)."""
    return value.removesuffix("/.default").rstrip("/").lower()


def _too_large(size: int, limit: int) -> IngestionError:
    return IngestionError(
        413,
        "ContentLengthLimitExceeded",
        f"Maximum allowed content length: {limit} bytes ({limit / 1024 / 1024:g} MB). "
        f"Provided content length: {size} bytes.",
    )


def _rows(body: bytes) -> list[Any]:
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestionError(400, "InvalidContent", f"The body is not JSON: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise IngestionError(400, "InvalidContent", "The body must be a JSON array of objects.")
    return rows
