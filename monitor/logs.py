"""The one place that configures structlog: diagnostics as JSON or console lines on stderr."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from monitor.config import LogFormat, LogLevel

# Rule: only the commands (monitor/commands/) call configure_logging. Diagnostics never go to
# stdout: stdout carries events.

REDACTED = "***"

_SENSITIVE_SEGMENTS = frozenset(
    {"token", "secret", "authorization", "password", "passwd", "cookie", "apikey", "signature"}
)
# Keys that contain a sensitive word but name metadata about it, not the secret itself.
_NOT_SECRET = frozenset({"token_scope", "token_type", "token_expires_on", "token_expires_at"})
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_LEVELS: Mapping[LogLevel, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def is_sensitive_key(key: str) -> bool:
    """True when a log key names a secret: any word of it is token, secret, password, ….

    Words are split on non-alphanumerics and camelCase, so `access_token`, `clientSecret` and
    `Authorization` are sensitive, while `tokens_left` (a budget count) and `token_scope` are not.
    """
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    if snake in _NOT_SECRET:
        return False
    words = [w for w in re.split(r"[^a-z0-9]+", snake) if w]
    joined = "".join(words)
    return any(w in _SENSITIVE_SEGMENTS for w in words) or "apikey" in joined


def _redact(value: object, depth: int = 0) -> object:
    if depth > 5:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_sensitive_key(k) else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    if isinstance(value, str) and _BEARER.search(value):
        return _BEARER.sub(r"\1 " + REDACTED, value)
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: values of sensitive keys become '***', also inside nested mappings,
    and `Bearer <token>` inside any string value loses its token."""
    return {
        key: REDACTED if is_sensitive_key(key) else _redact(value)
        for key, value in event_dict.items()
    }


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    # JSONRenderer passes `default=`; orjson takes it too. Non-str keys are stringified rather
    # than crashing a diagnostic.
    return orjson.dumps(obj, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    level: LogLevel,
    fmt: LogFormat,
    stream: TextIO | None = None,
    *,
    cache_logger_on_first_use: bool = True,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog once for the whole process.

    Args:
        level: lowest level written.
        fmt: "json" (one object per line: ISO UTC `timestamp`, `level`, `event`, dict
            tracebacks without locals), "console" (human rendering), or "auto" (console when
            `stream` is a TTY, else JSON).
        stream: where lines go; None means `sys.stderr` at call time. Never pass stdout: stdout
            carries the events.
        cache_logger_on_first_use: pass False in tests so that later reconfiguration applies.
        environ: where `NO_COLOR` and `FORCE_COLOR` are read (`os.environ` when None); see
            `use_colors`.

    Values of keys named like token/secret/authorization/password are replaced by "***" before
    rendering, in both formats.
    """
    out = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and _isatty(out))
    renderer: list[Processor]
    if console:
        colors = use_colors(_isatty(out), os.environ if environ is None else environ)
        renderer = [structlog.dev.ConsoleRenderer(colors=colors)]
    else:
        renderer = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            redact_secrets,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache_logger_on_first_use,
    )


def use_colors(tty: bool, environ: Mapping[str, str]) -> bool:
    """Whether console lines are coloured: not when `NO_COLOR` is set to anything but the
    empty string (no-color.org), always when `FORCE_COLOR` is (force-color.org; `NO_COLOR`
    wins when both are), else on a TTY. The log format is not changed by either: `auto` still
    writes JSON to a pipe."""
    if environ.get("NO_COLOR", ""):
        return False
    if environ.get("FORCE_COLOR", ""):
        return True
    return tty


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
