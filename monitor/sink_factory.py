"""Building and opening the configured sinks: one `SinkRoute` per `[[sinks]]` entry."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential

from monitor.arm_http import make_ssl_context
from monitor.clock import Clock
from monitor.config import Settings
from monitor.config_sinks import (
    AlertmanagerSinkSettings,
    AzureMonitorLogsSinkSettings,
    FileSinkSettings,
    SinkSettings,
    StdoutSinkSettings,
    WebhookSinkSettings,
)
from monitor.delivery import SinkRoute
from monitor.errors import ConfigError, StartupError
from monitor.outbox import OutboxSink
from monitor.sink_http import open_sink_session
from monitor.sinks import SinkObserver, build_line_sink
from monitor.sinks_alertmanager import AlertmanagerSink
from monitor.sinks_azure_logs import AzureMonitorLogsSink
from monitor.sinks_webhook import WebhookSink

__all__ = ["describe_sink", "open_sinks", "webhook_secret"]


async def open_sinks(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    credential: AsyncTokenCredential,
    clock: Clock,
    observer: SinkObserver | None,
    environ: Mapping[str, str] | None = None,
) -> list[SinkRoute]:
    """Open every sink `settings.delivery_sinks` lists, closing each with `stack`.

    Network sinks share one HTTP session per CA bundle (`ca_bundle`, else the system's CAs);
    a webhook's `secret_env` is read from `environ` (default: the process environment).

    Raises:
        StartupError: a file sink's file cannot be opened, or a webhook's secret variable is
            unset or empty; the message names the sink.
        ConfigError: a sink's `ca_bundle` cannot be loaded.
    """
    env = os.environ if environ is None else environ
    sessions: dict[Path | None, aiohttp.ClientSession] = {}

    async def session_for(name: str, ca_bundle: Path | None) -> aiohttp.ClientSession:
        if ca_bundle not in sessions:
            try:
                context = make_ssl_context(ca_bundle)
            except ConfigError as exc:
                raise ConfigError(f"sinks.{name}.ca_bundle", exc.problem) from exc
            sessions[ca_bundle] = await stack.enter_async_context(open_sink_session(context))
        return sessions[ca_bundle]

    routes: list[SinkRoute] = []
    for entry in settings.delivery_sinks:
        sink = await _open_one(
            entry, stack, session_for, env, credential, settings, clock, observer
        )
        routes.append(SinkRoute(sink, entry))
    return routes


_SessionFor = Callable[[str, Path | None], Awaitable[aiohttp.ClientSession]]


async def _open_one(
    entry: SinkSettings,
    stack: AsyncExitStack,
    session_for: _SessionFor,
    env: Mapping[str, str],
    credential: AsyncTokenCredential,
    settings: Settings,
    clock: Clock,
    observer: SinkObserver | None,
) -> OutboxSink:
    match entry:
        case StdoutSinkSettings() | FileSinkSettings():
            return await stack.enter_async_context(build_line_sink(entry, observer=observer))
        case WebhookSinkSettings():
            session = await session_for(entry.name, entry.ca_bundle)
            secret = webhook_secret(entry.name, entry.secret_env, env)
            return WebhookSink(entry, session=session, clock=clock, secret=secret)
        case AlertmanagerSinkSettings():
            session = await session_for(entry.name, entry.ca_bundle)
            return AlertmanagerSink(entry, session=session, clock=clock)
        case AzureMonitorLogsSinkSettings():
            sink = AzureMonitorLogsSink(
                entry,
                credential=credential,
                azure=settings.azure,
                ssl_context=make_ssl_context(settings.azure.ca_bundle),
                clock=clock,
            )
            return await stack.enter_async_context(sink)
    raise TypeError(f"no sink for settings of type {type(entry).__name__}")


def webhook_secret(name: str, variable: str | None, env: Mapping[str, str]) -> bytes | None:
    """The bytes of a webhook's signing key, read from its environment variable.

    Raises:
        StartupError: the variable is unset or empty; the message names the sink and it.
    """
    if variable is None:
        return None
    value = env.get(variable)
    if not value:
        raise StartupError(
            f"sink {name!r}: secret_env names {variable}, which is "
            + ("empty" if value == "" else "not set")
        )
    return value.encode()


def describe_sink(entry: SinkSettings) -> str:
    """One line saying where a sink delivers, safe to print (a webhook's URL is a secret)."""
    shown = f"{entry.name}: {entry.type}"
    match entry:
        case FileSinkSettings():
            shown += f" {entry.path} ({entry.format})"
        case StdoutSinkSettings():
            shown += f" ({entry.format})"
        case WebhookSinkSettings():
            signed = f"signed with ${entry.secret_env}" if entry.secret_env else "unsigned"
            shown += f" ({entry.format}, {signed}; the URL is not shown)"
        case AlertmanagerSinkSettings():
            shown += f" {entry.url}"
        case AzureMonitorLogsSinkSettings():
            shown += f" {entry.endpoint} rule {entry.rule_id} stream {entry.stream}"
    if not entry.filter.passes_all:
        shown += " (filtered)"
    return shown
