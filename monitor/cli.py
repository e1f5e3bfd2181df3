"""The composition root: parses the command line and builds every long-lived object."""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import anyio
import orjson
import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.arm import ArmClient, make_ssl_context, open_session
from monitor.clock import Clock, SystemClock
from monitor.commands.demo import DemoSink, summarize
from monitor.commands.jobs import (
    DEFAULT_LIST_TIMEOUT_S,
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMED_OUT,
    DiscardSink,
    JobsRequest,
    UsageError,
    duration_arg,
    parse_jobs_request,
    run_jobs_command,
    status_arg,
    time_arg,
)
from monitor.config import (
    Settings,
    UnknownVariable,
    load_settings_with_warnings,
    parse_settings,
    shard_from_hostname,
)
from monitor.credentials import TokenCache, build_credential
from monitor.emulator import (
    PROFILES,
    EmulatorSettings,
    FaultSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.runner import serve_until_signalled
from monitor.emulator.throttle import ThrottleSettings
from monitor.emulator.tour import run_tour
from monitor.errors import ConfigError, MonitorError, StartupError
from monitor.logs import configure_logging
from monitor.metrics import Metrics
from monitor.ops import serve_ops
from monitor.pacing import BudgetBook
from monitor.scheduler import PollScheduler
from monitor.sinks import Sink, build_sink
from monitor.store import CheckpointStore, MemoryCheckpointStore, build_checkpoint_store

EXIT_OK, EXIT_USAGE, EXIT_STARTUP = 0, 2, 3
log = structlog.get_logger("monitor.cli")


def number_arg(
    convert: Callable[[str], float], noun: str, ok: Callable[[float], bool], bound: str
) -> Callable[[str], Any]:
    """An argparse `type` that converts with `convert` and checks `ok`, naming what is wrong."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


_positive_int = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
_port = number_arg(int, "a port number", lambda v: 0 <= v <= 65535, "between 0 and 65535")
_positive_float = number_arg(float, "a number", lambda v: v > 0, "> 0")
_probability = number_arg(float, "a number", lambda v: 0 <= v <= 1, "between 0 and 1")


def _fault_arg(text: str) -> tuple[str, float]:
    """`KIND=RATE` for --fault; the kind and range are checked against `FaultSettings`."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"must look like KIND=RATE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name.strip()}: must be a number, got {value!r}"
        ) from None


def _add_world_options(parser: argparse.ArgumentParser, *, subscriptions: int, vaults: int) -> None:
    parser.add_argument("--seed", type=int, default=1, help="world seed (default: 1)")
    parser.add_argument(
        "--subscriptions",
        type=_positive_int,
        default=subscriptions,
        help=f"simulated subscriptions (default: {subscriptions})",
    )
    parser.add_argument(
        "--vaults-per-subscription",
        type=_positive_int,
        default=vaults,
        help=f"vaults in each subscription (default: {vaults})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `backup-monitor` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="backup-monitor",
        description="Watch every Azure Backup job and emit one JSON event per state change.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    emulator = commands.add_parser(
        "emulator",
        help="serve a simulated ARM + Recovery Services estate",
        description=(
            "Serve a seeded, simulated Azure Resource Manager + Recovery Services estate. "
            'Prints one JSON line first ({"url", "token", "tenant_id", ...}), then serves until '
            "SIGTERM or SIGINT."
        ),
    )
    emulator.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    emulator.add_argument("--port", type=_port, default=8443, help="port; 0 picks a free one")
    _add_world_options(emulator, subscriptions=2, vaults=5)
    emulator.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="demo",
        help="demo: jobs of seconds to a minute; estate: daily schedules (default: demo)",
    )
    emulator.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="divide every schedule and duration by this (60 runs a day in 24 minutes)",
    )
    emulator.add_argument("--page-size", type=_positive_int, default=20, help="jobs per page")
    emulator.add_argument(
        "--throttle-model",
        choices=("bucket", "hourly"),
        default="bucket",
        help="ARM's token bucket (public cloud) or hourly counters (sovereign clouds)",
    )
    emulator.add_argument(
        "--reads-per-s",
        type=_positive_float,
        default=25.0,
        help="refill rate of each (subscription, principal) read bucket (default: 25)",
    )
    emulator.add_argument(
        "--faults",
        type=_probability,
        default=0.0,
        metavar="RATE",
        help="total probability that an ARM request fails, spread over every fault kind but "
        "foreign nextLinks (0.05: 5 %%; default: 0)",
    )
    emulator.add_argument(
        "--fault",
        type=_fault_arg,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="the probability of one fault kind, applied after --faults; repeatable. Kinds: "
        + ", ".join(f.name for f in dataclasses.fields(FaultSettings) if f.name != "latency_s")
        + "; latency_s=SECONDS sets the injected latency",
    )
    emulator.add_argument("--tls-cert", type=Path, help="PEM certificate chain; serve HTTPS")
    emulator.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")

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
    _add_config_option(run)
    check = commands.add_parser(
        "check-config",
        help="validate the configuration, authenticate, discover, and print what would be watched",
        description=(
            "Validate the configuration, obtain a token, discover vaults and print them, without "
            "polling. The state file is checked but not locked, so this runs beside the daemon. "
            "Exit codes: 0 fine, 2 bad configuration, 3 cannot authenticate or reach ARM."
        ),
    )
    _add_config_option(check)

    demo = commands.add_parser(
        "demo",
        help="run the daemon against the built-in emulator and narrate what happens",
        description=(
            "Start the emulator in-process with its demo profile and the daemon against it; show "
            "each event as it is emitted and end with a summary checked against the emulator's "
            "ground truth."
        ),
    )
    demo.add_argument(
        "--duration", type=_positive_float, default=60.0, help="seconds to run (default: 60)"
    )
    _add_world_options(demo, subscriptions=2, vaults=4)
    demo.add_argument(
        "--tour",
        action="store_true",
        help="instead of the daemon, walk through what the emulator serves as a plain client",
    )
    _add_jobs_parser(commands)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=(
            "TOML configuration file (see config/monitor.example.toml); settings may also come "
            "from BACKUP_MONITOR_<SECTION>__<KEY> environment variables"
        ),
    )


def _server_ssl(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert/--tls-key: cannot load {cert} and {key}: {exc}") from exc
    return context


def _emulator_faults(total: float, kinds: list[tuple[str, float]]) -> FaultSettings:
    """--faults spread over every kind, then each --fault KIND=RATE.

    Raises:
        ValueError: an unknown kind or a rate out of range, naming --fault.
    """
    faults = FaultSettings.mixed(total) if total else FaultSettings()
    try:
        return faults.updated(dict(kinds))
    except ValueError as exc:
        raise ValueError(f"--fault: {exc}") from exc


def run_emulator(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor emulator`: serve until signalled."""
    try:
        ssl_context = _server_ssl(args.tls_cert, args.tls_key)
        faults = _emulator_faults(args.faults, args.fault)
    except ValueError as exc:
        sys.stderr.write(f"backup-monitor emulator: {exc}\n")
        return EXIT_USAGE
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=args.seed,
            subscriptions=args.subscriptions,
            vaults_per_subscription=args.vaults_per_subscription,
            profile=PROFILES[args.profile],
            time_scale=args.time_scale,
        ),
        throttle=ThrottleSettings(model=args.throttle_model, reads_per_s=args.reads_per_s),
        faults=faults,
        page_size=args.page_size,
    )

    def announce(banner: dict[str, str]) -> None:
        out.write(orjson.dumps(banner).decode() + "\n")
        out.flush()

    try:
        anyio.run(
            lambda: serve_until_signalled(
                settings, host=args.host, port=args.port, ssl_context=ssl_context, announce=announce
            )
        )
    except OSError as exc:
        sys.stderr.write(
            f"backup-monitor emulator: cannot listen on {args.host}:{args.port}: {exc}\n"
        )
        return 3
    return EXIT_OK


@asynccontextmanager
async def open_monitor(
    settings: Settings,
    *,
    clock: Clock,
    rng: random.Random,
    sink: Sink | None = None,
    metrics: Metrics | None = None,
    lock_state: bool = True,
) -> AsyncIterator[PollScheduler]:
    """Build every long-lived object of the daemon, authenticated; closes them on exit.

    With `metrics`, ARM requests are counted through the session's trace hooks and the
    scheduler reports to it. With `lock_state` (the daemon) the state file is locked for as
    long as this is open; without it (`check-config`) it is opened beside its owner.

    Raises:
        StartupError: no token could be obtained, the store or sink cannot be opened, or
            another process holds the state file's lock.
    """
    async with AsyncExitStack() as stack:
        credential = build_credential(settings.azure)
        stack.push_async_callback(credential.close)
        ssl_context = make_ssl_context(settings.azure.ca_bundle)
        traces = (metrics.trace_config(),) if metrics is not None else ()
        session = await stack.enter_async_context(
            open_session(settings.azure, ssl_context, trace_configs=traces)
        )
        store: CheckpointStore = await stack.enter_async_context(
            build_checkpoint_store(settings.state, exclusive=lock_state)
        )
        if sink is None:
            sink = await stack.enter_async_context(build_sink(settings.events, observer=metrics))
        assert sink is not None
        tokens = TokenCache(credential, settings.azure.token_scope, clock)
        await tokens.token()
        budgets = BudgetBook(settings.budget, clock=clock, rng=rng)
        arm = ArmClient(
            session=session,
            tokens=tokens,
            azure=settings.azure,
            budgets=budgets,
            clock=clock,
            rng=rng,
        )
        yield PollScheduler(
            source=arm,
            store=store,
            sink=sink,
            clock=clock,
            settings=settings,
            rng=rng,
            metrics=metrics,
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


async def serve(settings: Settings) -> None:
    """The daemon: run until a signal stops it; the ops server runs beside it when enabled."""
    clock, rng = SystemClock(), random.Random()
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
                    "shard.assigned", index=settings.shard.index or 0, count=settings.shard.count
                )
                await scheduler.run()
                ops.cancel_scope.cancel()
        tg.cancel_scope.cancel()


async def check(settings: Settings, out: TextIO) -> None:
    """Authenticate and discover; print what would be watched.

    The state file is opened (so an unusable one fails here as it would in `run`) but not
    locked, and the events file is not opened at all: check-config runs beside the daemon that
    owns both, and opening an events file for appending may end a line the daemon is writing.
    """
    clock, rng = SystemClock(), random.Random()
    async with open_monitor(
        settings, clock=clock, rng=rng, sink=DiscardSink(), lock_state=False
    ) as scheduler:
        vaults = await scheduler.discover()
    out.write(f"authenticated against {settings.azure.arm_endpoint}\n")
    for vault in sorted(vaults, key=lambda v: v.key):
        out.write(
            f"{vault.subscription_id}  {vault.resource_group:<24} {vault.name:<28} "
            f"{vault.location or '-'}\n"
        )
    out.write(f"{len(vaults)} vaults would be watched\n")


def _load_with_warnings(
    args: argparse.Namespace,
) -> tuple[Settings, tuple[UnknownVariable, ...]]:
    loaded = load_settings_with_warnings(args.config, os.environ)
    settings = resolve_shard(loaded.settings, os.environ.get("HOSTNAME", ""))
    return settings, loaded.unknown_variables


def _warn_unknown_variables(unknown: Sequence[UnknownVariable]) -> None:
    """One warning per `BACKUP_MONITOR_*` variable that names no setting (logging is set up)."""
    for item in unknown:
        log.warning("config.unknown_variable", variable=item.variable, suggestion=item.suggestion)


def resolve_shard(settings: Settings, hostname: str) -> Settings:
    """Settings with `shard.index` set: as configured, else the pod ordinal in `hostname`, else 0.

    Raises:
        ConfigError: (`shard.index`) the ordinal taken from the hostname is not below
            `shard.count`.
    """
    shard = settings.shard
    if shard.index is not None:
        return settings
    index = shard_from_hostname(hostname) if hostname else None
    if index is None:
        index = 0
    elif index >= shard.count:
        raise ConfigError(
            "shard.index",
            f"taken from HOSTNAME {hostname!r} as {index}, must be < shard.count ({shard.count})",
        )
    return dataclasses.replace(settings, shard=dataclasses.replace(shard, index=index))


def _failed(kind: str, exc: BaseException) -> None:
    # Task groups nest: the message worth a line is the first error that is not a group.
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    sys.stderr.write(f"backup-monitor: {kind}: {exc}\n")


def run_guarded(body: Any, *args: Any, failure_code: int = EXIT_STARTUP) -> int:
    """Run an async command and return its exit code.

    The body's own int result is the code (None: 0); configuration errors give 2, startup
    failures 3, and any other MonitorError `failure_code`, each with one line on stderr.
    """
    code = EXIT_OK
    try:
        result = anyio.run(body, *args)
        if isinstance(result, int):
            code = result
    except* ConfigError as group:
        _failed("configuration error", group.exceptions[0])
        code = EXIT_USAGE
    except* StartupError as group:
        _failed("startup failed", group.exceptions[0])
        code = EXIT_STARTUP
    except* MonitorError as group:
        _failed("failed", group.exceptions[0])
        code = failure_code
    return code


def run_daemon(args: argparse.Namespace) -> int:
    """`backup-monitor run`."""
    try:
        settings, unknown = _load_with_warnings(args)
    except ConfigError as exc:
        _failed("configuration error", exc)
        return EXIT_USAGE
    configure_logging(settings.log.level, settings.log.format)
    _warn_unknown_variables(unknown)
    return run_guarded(serve, settings)


def run_check(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor check-config`."""
    try:
        settings, unknown = _load_with_warnings(args)
    except ConfigError as exc:
        _failed("configuration error", exc)
        return EXIT_USAGE
    configure_logging(settings.log.level, settings.log.format)
    _warn_unknown_variables(unknown)
    out.write("configuration is valid\n")
    return run_guarded(check, settings, out)


DEMO_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "azure": {"credential": "static", "allow_http_loopback": True},
    "poll": {"active_interval_s": 5, "idle_interval_s": 10, "lookback_s": 600},
    "discovery": {"interval_s": 30},
    "state": {"path": ":memory:"},
    "log": {"level": "warning"},
}


async def demo(args: argparse.Namespace, out: TextIO) -> None:
    """The daemon against an in-process emulator for `args.duration` seconds, narrated."""
    world = WorldSettings(
        seed=args.seed,
        subscriptions=args.subscriptions,
        vaults_per_subscription=args.vaults_per_subscription,
    )
    clock, rng = SystemClock(), random.Random(args.seed)
    async with running_emulator(EmulatorSettings(world=world)) as emu:
        raw = {section: dict(values) for section, values in DEMO_SETTINGS.items()}
        raw["azure"].update(arm_endpoint=emu.url + "/", static_token=emu.token)
        settings = parse_settings(raw)
        sink = DemoSink(out)
        out.write(
            f"emulator at {emu.url}: {args.subscriptions} subscriptions x "
            f"{args.vaults_per_subscription} vaults; the daemon runs {args.duration:.0f} s\n\n"
        )
        started = clock.monotonic()
        async with (
            open_monitor(settings, clock=clock, rng=rng, sink=sink) as scheduler,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(stop_on_signals, lambda: scheduler, tg.cancel_scope)

            async def stop_later() -> None:
                await clock.sleep(args.duration)
                scheduler.stop()

            tg.start_soon(stop_later)
            await scheduler.run()
            tg.cancel_scope.cancel()
        duration = clock.monotonic() - started
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emu.url}/_emulator/transitions") as response:
                transitions = (await response.json())["transitions"]
            async with http.get(f"{emu.url}/_emulator/stats") as response:
                stats = await response.json()
        cutoff = clock.utcnow() - timedelta(seconds=2 * settings.poll.idle_interval_s)
        for line in summarize(
            sink.events,
            transitions,
            stats,
            cutoff_at=cutoff,
            duration_s=duration,
            budget_per_s=settings.budget.read_fraction * settings.budget.reads_per_s,
        ):
            out.write(line + "\n")


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor demo`: the daemon against the emulator (or `--tour`: a plain client)."""
    if args.tour:
        settings = EmulatorSettings(
            world=WorldSettings(
                seed=args.seed,
                subscriptions=args.subscriptions,
                vaults_per_subscription=args.vaults_per_subscription,
            ),
            page_size=5,
        )
        anyio.run(lambda: run_tour(settings, duration_s=args.duration, out=out))
        return EXIT_OK
    configure_logging("warning", "auto")
    return run_guarded(demo, args, out)


JOBS_EXIT_CODES = f"""exit codes:
  0   list/show: done; wait: the job ended Completed
  2   bad arguments or configuration
  3   startup failure (no token, ARM unreachable)
  {EXIT_API_ERROR}   an ARM call failed (403, 5xx, transport, foreign origin); list: some vault
      or subscription could not be read (the others were printed)
  {EXIT_COMPLETED_WITH_WARNINGS}  wait: CompletedWithWarnings
  {EXIT_FAILED}  wait: Failed (or the operation failed)
  {EXIT_CANCELLED}  wait: Cancelled (or the operation was canceled)
  {EXIT_TIMED_OUT}  list: --timeout passed before every vault was read (nothing printed);
      wait: --timeout passed before the job ended
  {EXIT_NOT_FOUND}  show/wait: the job, vault or operation does not exist (404)
"""

JOBS_EXAMPLES = """examples:
  VAULT=/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.RecoveryServices/vaults/NAME
  backup-monitor jobs list --config monitor.toml --status failed --since 24h
  backup-monitor jobs list --vault "$VAULT" --since 7d --output jsonl
  backup-monitor jobs show "$VAULT" 7ddead57-0000-4000-8000-000000000009
  backup-monitor jobs wait "$VAULT" 7ddead57-0000-4000-8000-000000000009 --timeout 2h
  backup-monitor jobs wait --operation-url "$AZURE_ASYNC_OPERATION" --timeout 90m
"""


def _add_jobs_parser(commands: Any) -> None:
    """The `jobs` command and its `list`, `show` and `wait` sub-commands."""
    raw = argparse.RawDescriptionHelpFormatter
    jobs = commands.add_parser(
        "jobs",
        help="one-shot commands: list jobs, show one job, wait for a job or an operation",
        description=(
            "One-shot answers with the daemon's own client, configuration and read budget: "
            "list the jobs of many vaults, show one job in full, or block until a job (or a "
            "trigger-backup operation URL) ends."
        ),
        epilog=JOBS_EXAMPLES + "\n" + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    sub = jobs.add_subparsers(dest="jobs_command", metavar="{list,show,wait}")

    listing = sub.add_parser(
        "list",
        help="jobs that started in a time window, across vaults, filtered",
        description=(
            "List the jobs that started in [--since, --until] in the given vaults, the vaults of "
            "the given subscriptions, or (by default) every vault the configuration watches "
            "(its include/exclude globs apply to that default only). Vaults are read "
            "concurrently under the same per-subscription read budget as the daemon. A vault "
            "that cannot be read is reported on stderr as one line; the others still print. "
            "The whole command has --timeout; when it passes first, one line names the vaults "
            "not read yet and nothing is printed."
        ),
        epilog="""examples:
  backup-monitor jobs list --config monitor.toml                  # last 24 h, every vault
  backup-monitor jobs list --status failed --status cancelled --since 7d
  backup-monitor jobs list --subscription 00000000-0000-0000-0000-000000000001 \\
      --type AzureIaasVM --operation backup --output json
  backup-monitor jobs list --vault "$VAULT" --since 2026-11-24T00:00:00Z --until 2026-11-25

json and jsonl records are {"job": {...}, "vault": {...}}, named as the event schema's
job and vault objects (docs/events.md); previous_status is always null here.

"""
        + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    _add_config_option(listing)
    listing.add_argument(
        "--vault",
        action="append",
        metavar="RESOURCE_ID",
        help="a vault's resource id (repeatable)",
    )
    listing.add_argument(
        "--subscription",
        action="append",
        metavar="ID",
        help="every vault of this subscription, given as its GUID (repeatable)",
    )
    listing.add_argument(
        "--status",
        action="append",
        type=status_arg,
        metavar="STATUS",
        help="InProgress, Cancelling, Completed, CompletedWithWarnings, Failed, Cancelled "
        "(any casing; repeatable)",
    )
    listing.add_argument(
        "--operation",
        action="append",
        metavar="OPERATION",
        help="e.g. Backup (also matches 'Backup (Log)'), Restore (repeatable)",
    )
    listing.add_argument(
        "--type",
        action="append",
        metavar="TYPE",
        help="job type (AzureIaaSVMJob, MabJob, …) or backup management type (AzureIaasVM, "
        "AzureWorkload, MAB, …) (repeatable)",
    )
    listing.add_argument(
        "--since",
        type=time_arg,
        default=None,
        metavar="WHEN",
        help="a duration ago (24h, 90m, 7d) or ISO 8601 (UTC when no offset); default 24h",
    )
    listing.add_argument(
        "--until", type=time_arg, default=None, metavar="WHEN", help="as --since; default now"
    )
    listing.add_argument(
        "--output", choices=("table", "json", "jsonl"), default="table", help="default: table"
    )
    listing.add_argument(
        "--timeout",
        type=duration_arg,
        default=DEFAULT_LIST_TIMEOUT_S,
        metavar="DURATION",
        help="give up after this long, discovery included (90s, 30m, PT1H); exit "
        f"{EXIT_TIMED_OUT}; default {DEFAULT_LIST_TIMEOUT_S:.0f}s",
    )

    show = sub.add_parser(
        "show",
        help="one job in full: errors with recommendations, tasks, property bag",
        description="Show one job with its error details, tasks and property bag.",
        epilog="""examples:
  backup-monitor jobs show "$VAULT" 7ddead57-0000-4000-8000-000000000009
  backup-monitor jobs show "$VAULT" "$JOB" --output json | jq .extended.errors

json: {"job": {...}, "vault": {...}} as in the event schema, plus "extended" (activity id,
actions, progress, estimated remaining time, error titles, task times, ARM's properties).

"""
        + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    _add_config_option(show)
    show.add_argument("vault_id", metavar="VAULT_ID", help="the vault's resource id")
    show.add_argument("job_id", metavar="JOB_ID", help="the job's name (GUID) or resource id")
    show.add_argument("--output", choices=("text", "json"), default="text", help="default: text")

    wait = sub.add_parser(
        "wait",
        help="block until a job (or a trigger-backup operation's job) ends",
        description=(
            "Wait until the job ends and exit with a code that says how it ended. With "
            "--operation-url, first follow the Azure-AsyncOperation (…/operationsStatus/{id}, "
            "…/backupOperations/{id}) or Location (…/operationResults/{id}) URL that a "
            "trigger-backup call returned until it names its job. Retry-After is honoured up to "
            "10 s. The job is read adaptively: once its estimated remaining time has passed "
            "(VM jobs give one), else after a quarter of its age, between 2 s and 60 s apart; "
            "throttling and 5xx answers are retried until --timeout. Progress is shown on "
            "stderr when it is a terminal."
        ),
        epilog="""examples:
  backup-monitor jobs wait "$VAULT" "$JOB"
  backup-monitor jobs wait "$VAULT" "$JOB" --timeout 2h --output json
  # the Azure-AsyncOperation header of a trigger-backup POST (Location works too):
  backup-monitor jobs wait --operation-url "$AZURE_ASYNC_OPERATION" --timeout 90m

"""
        + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    _add_config_option(wait)
    wait.add_argument("vault_id", nargs="?", metavar="VAULT_ID", help="the vault's resource id")
    wait.add_argument(
        "job_id", nargs="?", metavar="JOB_ID", help="the job's name (GUID) or resource id"
    )
    wait.add_argument(
        "--operation-url",
        metavar="URL",
        help="an Azure-AsyncOperation or Location URL from a trigger-backup call",
    )
    wait.add_argument(
        "--timeout",
        type=duration_arg,
        default=None,
        metavar="DURATION",
        help="give up after this long (90s, 30m, 2h, PT1H); default: wait as long as it takes",
    )
    wait.add_argument("--output", choices=("text", "json"), default="text", help="default: text")


@asynccontextmanager
async def open_arm(
    settings: Settings, *, clock: Clock, rng: random.Random
) -> AsyncIterator[ArmClient]:
    """An authenticated ArmClient with the daemon's budgets, for one-shot commands; closes it.

    Raises:
        StartupError: no token could be obtained.
        ConfigError: the ARM endpoint or CA bundle is unusable.
    """
    async with AsyncExitStack() as stack:
        credential = build_credential(settings.azure)
        stack.push_async_callback(credential.close)
        ssl_context = make_ssl_context(settings.azure.ca_bundle)
        session = await stack.enter_async_context(open_session(settings.azure, ssl_context))
        tokens = TokenCache(credential, settings.azure.token_scope, clock)
        await tokens.token()
        yield ArmClient(
            session=session,
            tokens=tokens,
            azure=settings.azure,
            budgets=BudgetBook(settings.budget, clock=clock, rng=rng),
            clock=clock,
            rng=rng,
        )


async def jobs(request: JobsRequest, settings: Settings) -> int:
    """`backup-monitor jobs …` against ARM; returns its exit code."""
    clock, rng = SystemClock(), random.Random()
    async with open_arm(settings, clock=clock, rng=rng) as arm:
        discovery = PollScheduler(
            source=arm,
            store=MemoryCheckpointStore(),
            sink=DiscardSink(),
            clock=clock,
            settings=settings,
            rng=rng,
        )
        return await run_jobs_command(
            request,
            reader=arm,
            discover=discovery.discover,
            clock=clock,
            out=sys.stdout,
            err=sys.stderr,
        )


def run_jobs(args: argparse.Namespace) -> int:
    """`backup-monitor jobs list|show|wait`; exit codes in `JOBS_EXIT_CODES`."""
    try:
        request = parse_jobs_request(args)
    except UsageError as exc:
        command = f"jobs {args.jobs_command}" if args.jobs_command else "jobs"
        sys.stderr.write(f"backup-monitor {command}: {exc}\n")
        return EXIT_USAGE
    try:
        settings, unknown = _load_with_warnings(args)
    except ConfigError as exc:
        _failed("configuration error", exc)
        return EXIT_USAGE
    # One-shot commands keep stderr for their own lines: info logs only when asked for debug.
    level = settings.log.level if settings.log.level in ("debug", "error") else "warning"
    configure_logging(level, settings.log.format)
    _warn_unknown_variables(unknown)
    return run_guarded(jobs, request, settings, failure_code=EXIT_API_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named on the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    match args.command:
        case "emulator":
            return run_emulator(args, sys.stdout)
        case "run":
            return run_daemon(args)
        case "check-config":
            return run_check(args, sys.stdout)
        case "demo":
            return run_demo(args, sys.stdout)
        case "jobs":
            return run_jobs(args)
        case _:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
