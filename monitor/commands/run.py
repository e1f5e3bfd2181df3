"""`backup-monitor run` and `check-config`: the daemon, and its start-up without the polling."""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.arm import ArmClient
from monitor.arm_http import make_ssl_context, open_session
from monitor.checkpoints import StateStore
from monitor.clock import Clock, ScaledClock, SystemClock
from monitor.commands.common import (
    add_config_option,
    run_guarded,
    settings_for,
)
from monitor.commands.exits import EXIT_USAGE
from monitor.config import ClockSettings, Settings
from monitor.config_sinks import WebhookSinkSettings
from monitor.core.vaults import VaultKind
from monitor.credentials import TokenCache, build_credential, credential_secrets
from monitor.delivery import Delivery, SinkRoute
from monitor.discovery import VaultDiscovery
from monitor.item_watcher import ItemWatcher
from monitor.job_sources import JobSources
from monitor.metrics import Metrics
from monitor.ops import serve_ops
from monitor.outbox import OutboxSink
from monitor.pacing import BudgetBook
from monitor.scheduler import PollScheduler
from monitor.sink_factory import describe_sink, open_sinks, webhook_secret
from monitor.store import build_checkpoint_store

log = structlog.get_logger(__name__)


def add_run_parsers(commands: Any) -> None:
    """The `run` and `check-config` commands."""
    run = commands.add_parser(
        "run",
        help="watch every configured vault and emit one JSON event per job state change",
        description=(
            "Run the daemon: discover vaults, poll their jobs within the ARM read budget, write "
            "one JSON event per job state change to the configured sink, checkpoint, repeat. "
            "Stops cleanly on SIGTERM or SIGINT. Exit codes: 0 stopped, 2 bad configuration, "
            "3 startup failure (no credential, ARM unreachable, the state file unusable or in use "
            "by another process)."
        ),
    )
    add_config_option(run)
    check = commands.add_parser(
        "check-config",
        help="validate the configuration, authenticate, discover, and print what would be watched",
        description=(
            "Validate the configuration, obtain a token, discover vaults and print them, without "
            "polling. The state file is checked but not locked, so this runs beside the daemon. "
            "Exit codes: 0 fine, 2 bad configuration, 3 cannot authenticate or reach ARM."
        ),
    )
    add_config_option(check)


@dataclass(frozen=True, slots=True)
class _Opened:
    """What `_open` opened: the ARM client, the state store and the sinks (if asked for)."""

    arm: ArmClient
    budgets: BudgetBook
    store: StateStore
    routes: list[SinkRoute]


@asynccontextmanager
async def _open(
    settings: Settings,
    *,
    clock: Clock,
    rng: random.Random,
    metrics: Metrics | None,
    lock_state: bool,
    with_sinks: bool,
) -> AsyncIterator[_Opened]:
    """Credential, session, state file, sinks (`with_sinks`), token and ARM client, in order."""
    async with AsyncExitStack() as stack:
        credential = build_credential(settings.azure)
        stack.push_async_callback(credential.close)
        ssl_context = make_ssl_context(settings.azure.ca_bundle)
        session = await stack.enter_async_context(open_session(settings.azure, ssl_context))
        store: StateStore = await stack.enter_async_context(
            build_checkpoint_store(settings.state, exclusive=lock_state)
        )
        routes: list[SinkRoute] = []
        if with_sinks:
            routes = await open_sinks(
                settings, stack, credential=credential, clock=clock, observer=metrics
            )
        tokens = TokenCache(
            credential,
            settings.azure.token_scope,
            clock,
            secrets=credential_secrets(settings.azure),
        )
        await tokens.token()
        budgets = BudgetBook(settings.budget, clock=clock, rng=rng)
        arm = ArmClient(
            session=session,
            tokens=tokens,
            azure=settings.azure,
            budgets=budgets,
            clock=clock,
            rng=rng,
            observer=metrics,
        )
        yield _Opened(arm=arm, budgets=budgets, store=store, routes=routes)


@asynccontextmanager
async def open_monitor(
    settings: Settings,
    *,
    clock: Clock,
    rng: random.Random,
    sink: OutboxSink | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[PollScheduler]:
    """Build every long-lived object of the daemon, authenticated; closes them on exit.

    With `metrics`, the ARM client and the sinks report to it, and the scheduler reports to
    it. Without `sink`, the configured sinks are opened (`[[sinks]]`, or `[events]`'s); with
    it, that one sink alone receives every event (the demo). The state file is locked for as
    long as this is open.

    Raises:
        StartupError: no token could be obtained, the store or a sink cannot be opened, or
            another process holds the state file's lock.
    """
    async with _open(
        settings, clock=clock, rng=rng, metrics=metrics, lock_state=True, with_sinks=sink is None
    ) as opened:
        routes = opened.routes
        if sink is not None:
            routes = [SinkRoute(sink, settings.delivery_sinks[0])]
        delivery = Delivery(
            outbox=opened.store,
            routes=routes,
            settings=settings.outbox,
            clock=clock,
            rng=rng,
            observer=metrics,
        )
        if metrics is not None:
            metrics.watch_delivery(delivery)
            if settings.protection.recovery_point_metric:
                metrics.record_item_recovery_points()
        sources = JobSources(
            opened.arm,
            settings.backup_vaults,
            azure=settings.azure,
            clock=clock,
            rng=rng,
            metrics=metrics,
        )
        watcher = None
        if settings.protection.enabled:
            watcher = ItemWatcher(
                reads=opened.arm,
                jobs=sources,
                store=opened.store,
                settings=settings.protection,
                clock=clock,
                rng=rng,
                metrics=metrics,
            )
        yield PollScheduler(
            source=sources,
            rates=opened.budgets,
            store=opened.store,
            delivery=delivery,
            clock=clock,
            settings=settings,
            rng=rng,
            metrics=metrics,
            watcher=watcher,
        )


async def stop_on_signals(
    current: Callable[[], PollScheduler | None], scope: anyio.CancelScope
) -> None:
    """First SIGTERM/SIGINT: stop scheduling and let polls finish; a second: stop at once.

    Before the scheduler exists (authenticating, opening the store) a signal stops at once:
    nothing has been emitted that would need a checkpoint.
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            scheduler = current()
            if scheduler is None or scheduler.stopping:
                log.warning(
                    "shutdown.forced" if scheduler else "shutdown.during_startup", signal=name
                )
                scope.cancel()
                return
            log.info("shutdown.requested", signal=name)
            scheduler.stop()


async def serve(settings: Settings, config: Path | None = None) -> None:
    """The daemon: run until a signal stops it; the ops server runs beside it when enabled.

    Once the state file is locked and a token obtained, one `monitor.starting` line says what
    runs: the version, the config file (`config`), the shard and every effective setting,
    secrets redacted."""
    clock, rng = clock_of(settings.clock), random.Random()
    registry = CollectorRegistry()  # never prometheus_client.REGISTRY
    metrics = Metrics(registry)
    started: list[PollScheduler] = []
    async with anyio.create_task_group() as tg:
        # Signals are watched from the start, so a SIGTERM while authenticating exits 0 too.
        tg.start_soon(stop_on_signals, lambda: started[0] if started else None, tg.cancel_scope)
        async with open_monitor(settings, clock=clock, rng=rng, metrics=metrics) as scheduler:
            started.append(scheduler)
            async with anyio.create_task_group() as ops:
                if settings.ops.enabled:
                    await ops.start(serve_ops, settings.ops, registry, scheduler)
                log.info(
                    "monitor.starting",
                    version=__version__,
                    python=platform.python_version(),
                    config=None if config is None else str(config),
                    shard_index=settings.shard.index or 0,
                    shard_count=settings.shard.count,
                    settings=settings.redacted(),
                )
                log.info(
                    "shard.assigned", index=settings.shard.index or 0, count=settings.shard.count
                )
                metrics.shard_assigned(settings.shard.index or 0, settings.shard.count)
                await scheduler.run()
                ops.cancel_scope.cancel()
        tg.cancel_scope.cancel()


def clock_of(settings: ClockSettings) -> Clock:
    """The clock `[clock]` asks for: the system clock at speed 1, else a `ScaledClock`."""
    if settings.speed == 1 or settings.start is None or settings.anchor is None:
        return SystemClock()
    return ScaledClock(
        speed=settings.speed,
        start=datetime.fromisoformat(settings.start),
        anchor=settings.anchor,
    )


_KIND_TAGS = {VaultKind.RECOVERY_SERVICES: "rs", VaultKind.BACKUP_VAULT: "bv"}


async def check(settings: Settings, out: TextIO) -> None:
    """Authenticate and discover; print what would be watched.

    The state file is opened (so an unusable one fails here as it would in `run`) but not
    locked, and the events file is not opened at all: check-config runs beside the daemon that
    owns both, and opening an events file for appending may end a line the daemon is writing.
    """
    clock, rng = SystemClock(), random.Random()
    async with _open(
        settings, clock=clock, rng=rng, metrics=None, lock_state=False, with_sinks=False
    ) as opened:
        vaults = await VaultDiscovery(opened.arm, settings, clock, rng).discover_once()
    out.write(f"authenticated against {settings.azure.arm_endpoint}\n")
    for vault in sorted(vaults, key=lambda v: v.key):
        out.write(
            f"{vault.subscription_id}  {_KIND_TAGS[vault.kind]}  {vault.resource_group:<24} "
            f"{vault.name:<28} {vault.location or '-'}\n"
        )
    kinds = ", ".join(f"{sum(v.kind is kind for v in vaults)} {kind.value}" for kind in VaultKind)
    out.write(f"{len(vaults)} vaults would be watched ({kinds})\n")
    if any(v.kind is VaultKind.BACKUP_VAULT for v in vaults):
        out.write(f"backup vault jobs from {settings.backup_vaults.jobs_from}\n")
    for entry in settings.delivery_sinks:
        if isinstance(entry, WebhookSinkSettings):
            webhook_secret(entry.name, entry.secret_env, os.environ)
        out.write(f"sink {describe_sink(entry)}\n")


def run_daemon(args: argparse.Namespace) -> int:
    """`backup-monitor run`."""
    settings = settings_for(args)
    if settings is None:
        return EXIT_USAGE
    return run_guarded(serve, settings, args.config)


def run_check(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor check-config`."""
    settings = settings_for(args)
    if settings is None:
        return EXIT_USAGE
    out.write("configuration is valid\n")
    return run_guarded(check, settings, out)
