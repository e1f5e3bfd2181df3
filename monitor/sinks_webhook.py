"""The webhook sink: POSTs each batch of the outbox as json, cloudevents, slack or teams bodies."""

# Rules:
# - The sink never retries and never logs: `deliver` POSTs the batch's bodies in order and, on
#   the first failure, raises DeliveryError saying how many events went through before it. The
#   delivery worker owns backoff, the cursor and the log lines.
# - The URL never appears in an error (a Slack or Teams webhook URL is a credential): errors
#   name the sink (`webhook ops-chat`).
# - Signing: with a secret, each request carries `X-Backup-Monitor-Timestamp: <unix seconds>`
#   and `X-Backup-Monitor-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret of
#   `f"{timestamp}.".encode() + body` (docs/sinks.md gives the receiver's check).

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import ClassVar, Final

import aiohttp

import monitor
from monitor.clock import Clock
from monitor.config_sinks import WebhookSinkSettings
from monitor.errors import DeliveryError
from monitor.outbox import OutboxEvent
from monitor.sink_formats import Body, render_bodies
from monitor.sink_http import post

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "USER_AGENT",
    "WebhookSink",
    "signature",
]

SIGNATURE_HEADER: Final = "X-Backup-Monitor-Signature"
TIMESTAMP_HEADER: Final = "X-Backup-Monitor-Timestamp"
USER_AGENT: Final = f"backup-job-monitor/{getattr(monitor, '__version__', 'unknown')}"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Backup-Monitor-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookSink:
    """Delivers outbox batches to one HTTP endpoint (`[[sinks]] type = "webhook"`).

    The guarantee is at least once, keyed by `event_id`: a batch that failed part-way, or whose
    answer was lost, is POSTed again with the same `Idempotency-Key`.

    Args:
        settings: the sink's `[[sinks]]` entry.
        session: an open session (`sink_http.open_sink_session`), shared with other sinks; the
            sink does not close it.
        clock: the time of the signature and of `Retry-After` dates.
        secret: the HMAC key (from the variable `settings.secret_env` names), or None: unsigned.
    """

    kind: ClassVar[str] = "webhook"

    def __init__(
        self,
        settings: WebhookSinkSettings,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        secret: bytes | None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._clock = clock
        self._secret = secret
        self._what = f"webhook {settings.name}"

    def __repr__(self) -> str:
        return f"WebhookSink(name={self._settings.name!r}, format={self._settings.format!r})"

    @property
    def name(self) -> str:
        """The sink's name (`settings.name`)."""
        return self._settings.name

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """POST `batch` as the bodies of the sink's format, in order (see `OutboxSink.deliver`).

        Raises:
            DeliveryError: a body was not accepted; `delivered` counts the events of the bodies
                accepted before it (slack and teams send one event per body).
        """
        bodies = render_bodies(self._settings.format, batch, portal_url=self._settings.portal_url)
        delivered = 0
        for body in bodies:
            try:
                await post(
                    self._session,
                    self._settings.url,
                    body.data,
                    headers=self._headers(body),
                    timeout_s=self._settings.timeout_s,
                    now=self._clock.utcnow(),
                    what=self._what,
                )
            except DeliveryError as exc:
                if delivered == 0:
                    raise
                raise DeliveryError(
                    f"{exc} (after {delivered} of {len(batch)} events were delivered)",
                    delivered=delivered,
                    retry_after_s=exc.retry_after_s,
                    permanent=exc.permanent,
                    status=exc.status,
                ) from exc
            delivered += body.event_count

    async def delivered_ids(self) -> set[str]:
        """Nothing: a webhook cannot be read back."""
        return set()

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    def _headers(self, body: Body) -> dict[str, str]:
        headers = {
            "Content-Type": body.content_type,
            "User-Agent": USER_AGENT,
            "Idempotency-Key": body.idempotency_key,
        }
        if self._secret is not None:
            timestamp = int(self._clock.utcnow().timestamp())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, body.data)
        return headers
