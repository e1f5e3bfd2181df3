"""HTTP for the network sinks: their session, and one POST whose answer becomes a DeliveryError.

Rules:
- The only place the webhook and Alertmanager sinks catch aiohttp errors.
- A session verifies TLS with an explicit `ssl.SSLContext` (`make_ssl_context`), never from
  environment variables, and never follows redirects (a receiver that moved is a config error
  to be seen, not a POST replayed to another host).
- What an answer means: 2xx delivered; 408, 425, 429, 5xx and no answer retry (honouring
  `Retry-After`, seconds or an HTTP date); so do 401, 403, 404, 407 and 410, which refuse the
  sender or the URL rather than these bytes (a wrong secret, a revoked or moved webhook): the
  events wait in the outbox for the configuration to be fixed instead of being dropped. Any
  other 4xx is permanent for these bytes.
"""

from __future__ import annotations

import email.utils
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import aiohttp
import yarl

from monitor.core.budget import parse_retry_after
from monitor.errors import DeliveryError

__all__ = ["DESTINATION_STATUSES", "RETRYABLE_STATUSES", "open_sink_session", "post"]

RETRYABLE_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses that may pass by themselves; other 5xx too (`status >= 500`)."""
DESTINATION_STATUSES: Final = frozenset({401, 403, 404, 407, 410})
"""Refusals of the sender or the URL, not of the events: retried (never `permanent`), so a
configuration mistake holds events back instead of dropping them."""

_ERROR_BODY_BYTES: Final = 512  # of a refusal's body, quoted in the error


def open_sink_session(ssl_context: ssl.SSLContext) -> aiohttp.ClientSession:
    """A ClientSession for the network sinks; the caller enters it with `async with`.

    Statuses are never raised (`post` maps them); each `post` sets its own total timeout.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context, limit=16),
        raise_for_status=False,
    )


def _redacted(text: str, url: str) -> str:
    """`text` without the URL or its path and query (where a webhook's secret lives)."""
    target = yarl.URL(url)
    for secret in {url, str(target), target.path_qs, target.raw_path_qs}:
        if len(secret) > 1:
            text = text.replace(secret, "<url>")
    return text


def retry_after_s(raw: str | None, now: datetime) -> float | None:
    """A `Retry-After` value in seconds: delta-seconds, or an HTTP date relative to `now`."""
    if raw is None:
        return None
    seconds = parse_retry_after(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return parse_retry_after(max(0.0, (when - now).total_seconds()))


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    now: datetime,
    what: str,
) -> int:
    """POST `body` to `url`; returns the 2xx status.

    `what` names the destination in errors (`webhook ops-chat`), never the URL itself: a Slack
    or Teams webhook URL is a secret.

    Raises:
        DeliveryError: not a 2xx, or no answer within `timeout_s`; `retry_after_s` and
            `permanent` as the module's rules say.
    """
    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            status = response.status
            if 200 <= status < 300:
                await response.read()  # let the connection be reused
                return status
            text = (await response.content.read(_ERROR_BODY_BYTES)).decode("utf-8", "replace")
            retry = retry_after_s(response.headers.get("Retry-After"), now)
    except TimeoutError as exc:
        raise DeliveryError(f"{what}: no answer within {timeout_s:g}s") from exc
    except aiohttp.InvalidURL:
        # Its text is the URL, a secret: no message and no chained cause carry it. Not
        # `permanent`: that would drop every event one by one for a mistake in the config.
        raise DeliveryError(f"{what}: the URL is not valid") from None
    except aiohttp.ClientError as exc:
        detail = _redacted(str(exc), url)
        raise DeliveryError(f"{what}: {type(exc).__name__}: {detail}") from exc
    permanent = (
        status not in RETRYABLE_STATUSES
        and status not in DESTINATION_STATUSES
        and status < 500
        and not 300 <= status < 400
    )
    detail = " ".join(text.split())[:200]
    raise DeliveryError(
        f"{what}: HTTP {status}" + (f": {detail}" if detail else ""),
        retry_after_s=retry,
        permanent=permanent,
        status=status,
    )
