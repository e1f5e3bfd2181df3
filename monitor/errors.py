"""The exception tree of backup-job-monitor; every error the package raises is one of these.

    MonitorError
    ├── ConfigError           bad settings; the message names the key path (exit code 2)
    ├── StartupError          no credential, ARM unreachable at start (exit code 3)
    ├── ParseError            an ARM payload does not have the shape we need; names the JSON path
    ├── StoreError            the checkpoint store could not read or write its state
    ├── SinkError             events could not be written
    │   └── DeliveryError     a sink could not deliver a batch from the outbox; says when to retry
    └── ArmError              a call to ARM failed; carries the URL and correlation ids
        ├── ArmAuthError          401 after one token refresh
        ├── ArmForbidden          403: this vault or subscription only
        ├── ArmNotFound           404: the resource is gone
        ├── ArmThrottled          429: the subscription's budget pauses for retry_after_s
        ├── ArmServerError        5xx: retried with backoff
        ├── ArmTransportError     timeouts, dropped connections, truncated bodies
        │   └── ArmLimitExceeded  a list call or an answer passed an [azure] cap; names the key
        └── ForeignOriginError    a nextLink or operation URL outside the configured ARM origin

Rule: this module imports nothing from `monitor`.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error raised by backup-job-monitor."""


class ConfigError(MonitorError):
    """A setting is missing, unknown or invalid; the message starts with its key path."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


class StartupError(MonitorError):
    """The daemon cannot start: no usable credential, or ARM unreachable."""


class ParseError(MonitorError):
    """An ARM payload lacks a field we need, or has the wrong type there."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class StoreError(MonitorError):
    """The checkpoint store failed to read or write (disk full, I/O error, locked database)."""


class SinkError(MonitorError):
    """A sink could not write a batch of events; some of them may have been written.

    The caller must not checkpoint the batch: emitting it again is the at-least-once path.
    """


class DeliveryError(SinkError):
    """A sink could not deliver (all of) a batch read from the outbox; the worker retries it.

    Attributes:
        delivered: how many events at the head of the batch did reach the destination (their
            cursor moves on; the rest is retried).
        retry_after_s: what the destination asked for (`Retry-After` on a 429 or 503), or None:
            the worker's own exponential backoff with jitter.
        permanent: the destination refused these events for what they are (a 400, a 413 of a
            single event): retrying the same bytes cannot succeed. The worker splits the batch,
            and drops (counted, logged) a single event that is refused on its own.
        status: the HTTP status, or None when no response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        delivered: int = 0,
        retry_after_s: float | None = None,
        permanent: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.delivered, self.retry_after_s = delivered, retry_after_s
        self.permanent, self.status = permanent, status


class ArmError(MonitorError):
    """A call to Azure Resource Manager failed.

    Attributes:
        url: the URL that was called (never with a token in it).
        status: the HTTP status, or None when no response arrived.
        code: ARM's error code from the body, when there was one.
        request_id: the `x-ms-request-id` response header, when present.
        correlation_id: the `x-ms-correlation-request-id` response header, when present.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url, self.status, self.code = url, status, code
        self.request_id, self.correlation_id = request_id, correlation_id


class ArmAuthError(ArmError):
    """ARM answered 401 again after the token was refreshed once."""


class ArmForbidden(ArmError):
    """ARM answered 403: the principal lacks a role on this scope."""


class ArmNotFound(ArmError):
    """ARM answered 404: the vault, job or subscription is gone."""


class ArmThrottled(ArmError):
    """ARM answered 429; the subscription's budget pauses for `retry_after_s`."""

    def __init__(self, message: str, *, url: str, retry_after_s: float, **ids: str | None) -> None:
        super().__init__(message, url=url, status=429, **ids)
        self.retry_after_s = retry_after_s


class ArmServerError(ArmError):
    """ARM answered 5xx; the caller backs off and retries later."""


class ArmTransportError(ArmError):
    """No usable response: timeout, dropped connection, truncated or malformed body."""


class ArmLimitExceeded(ArmTransportError):
    """A list call read more pages or bytes, or one answer was bigger, than `[azure]` allows.

    Raised by ArmClient before the rest is read or requested. Attributes: `cap`, the setting's
    key path (`azure.max_list_pages`, `azure.max_list_bytes`, `azure.max_response_bytes`),
    named in the message too; `limit`, its value.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        cap: str,
        limit: int,
        status: int | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            url=url,
            status=status,
            request_id=request_id,
            correlation_id=correlation_id,
        )
        self.cap, self.limit = cap, limit


class ForeignOriginError(ArmError):
    """A URL from ARM (nextLink, operation URL) points outside the configured ARM origin."""


TRANSIENT_ARM_ERRORS: tuple[type[ArmError], ...] = (ArmServerError, ArmThrottled, ArmTransportError)
"""ARM failures that may pass by themselves, so callers retry them with backoff. Any other (401
after a refresh, 403, 404, a foreign origin) stays until a role or the configuration changes."""
