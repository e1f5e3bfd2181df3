"""`backup-monitor emulator`: serve a simulated ARM + Recovery Services estate until signalled."""

from __future__ import annotations

import argparse
import dataclasses
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio
import orjson

from monitor.commands.common import (
    add_world_options,
    count_arg,
    number_arg,
    positive_float,
    positive_int,
)
from monitor.commands.exits import EXIT_OK, EXIT_STARTUP, EXIT_USAGE
from monitor.emulator import PROFILES, EmulatorSettings, FaultSettings, WorldSettings
from monitor.emulator.clock import ScaledClock, WallClock
from monitor.emulator.resource_graph import ResourceGraphSettings
from monitor.emulator.runner import serve_until_signalled
from monitor.emulator.tenancy import MAX_TENANTS
from monitor.emulator.throttle import ThrottleSettings

_port = number_arg(int, "a port number", lambda v: 0 <= v <= 65535, "between 0 and 65535")
_probability = number_arg(float, "a number", lambda v: 0 <= v <= 1, "between 0 and 1")
_count = count_arg
_tenants = number_arg(
    int, "a whole number", lambda v: 1 <= v <= MAX_TENANTS, f"between 1 and {MAX_TENANTS}"
)
_seconds = number_arg(float, "a number of seconds", lambda v: v >= 0, "0 or more")


def _instant_arg(text: str) -> datetime:
    """An ISO 8601 instant with a UTC offset or `Z`, for --clock-start."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO 8601 instant, got {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"must include a UTC offset or Z, got {text!r}")
    return at.astimezone(UTC)


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


def add_emulator_parser(commands: Any) -> None:
    """The `emulator` command."""
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
    add_world_options(emulator, subscriptions=2, vaults=5)
    emulator.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="demo",
        help="demo: jobs of seconds to a minute; estate: daily schedules; policies: backup "
        "policies in Windows time zones make the jobs (default: demo)",
    )
    emulator.add_argument(
        "--skip-rate",
        type=_probability,
        default=0.0,
        metavar="RATE",
        help="policies profile: the seeded probability that a scheduled run makes no job "
        "(default: 0)",
    )
    emulator.add_argument(
        "--clock-speed",
        type=positive_float,
        default=1.0,
        help="world seconds per real second (default: 1)",
    )
    emulator.add_argument(
        "--clock-start",
        type=_instant_arg,
        metavar="ISO8601",
        help="the world time at --clock-anchor (default: now)",
    )
    emulator.add_argument(
        "--clock-anchor",
        type=number_arg(float, "a number", lambda v: True, "a Unix time"),
        metavar="UNIX_SECONDS",
        help="the real Unix time at which the world time is --clock-start (default: when the "
        "command starts)",
    )
    emulator.add_argument(
        "--token-lifetime",
        type=positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of issued tokens, in world seconds (default: 3600; with --clock-speed K, "
        "clients that count expiry in real time need about 3600 x K)",
    )
    emulator.add_argument(
        "--protected-items-limit",
        type=_count,
        default=0,
        metavar="N",
        help="protected-item reads per subscription per --protected-items-window before a 429 "
        "ResourceRequestsThrottled (default: 0, no limit)",
    )
    emulator.add_argument(
        "--protected-items-window",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="the window of --protected-items-limit, in world seconds (default: 300)",
    )
    emulator.add_argument(
        "--time-scale",
        type=positive_float,
        default=1.0,
        help="divide every schedule and duration by this (60 runs a day in 24 minutes)",
    )
    emulator.add_argument("--page-size", type=positive_int, default=20, help="jobs per page")
    emulator.add_argument(
        "--backup-vaults-per-subscription",
        type=_count,
        default=0,
        help="Backup vaults (Microsoft.DataProtection) in each subscription (default: 0)",
    )
    emulator.add_argument(
        "--backup-vault-history-jobs",
        type=_count,
        default=0,
        help="finished jobs each Backup vault already lists, over the 13 days before the start "
        "(default: 0)",
    )
    emulator.add_argument(
        "--resource-graph-staleness",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="Resource Graph rows show each Backup vault job as it was this long ago (default: 0)",
    )
    emulator.add_argument(
        "--throttle-model",
        choices=("bucket", "hourly"),
        default="bucket",
        help="ARM's token bucket (public cloud) or hourly counters (sovereign clouds)",
    )
    emulator.add_argument(
        "--reads-per-s",
        type=positive_float,
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
    emulator.add_argument(
        "--tenants",
        type=_tenants,
        default=1,
        metavar="N",
        help="Entra tenants the estate spans: subscription i belongs to tenant i %% N; tenant 0 "
        "is the world's tenant, tenant k (1..7) is 00000000-0000-4000-8000-00000000000k "
        f"(1 to {MAX_TENANTS}; default: 1)",
    )
    emulator.add_argument(
        "--lighthouse",
        action="store_true",
        help="delegate every subscription of tenants 1..N-1 to tenant 0 (Azure Lighthouse)",
    )
    emulator.add_argument("--tls-cert", type=Path, help="PEM certificate chain; serve HTTPS")
    emulator.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")


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


def _clock(args: argparse.Namespace, started: float) -> ScaledClock | None:
    """A `ScaledClock` when any --clock-* flag was given; None keeps the wall clock."""
    if args.clock_speed == 1 and args.clock_start is None and args.clock_anchor is None:
        return None
    anchor = started if args.clock_anchor is None else args.clock_anchor
    start = args.clock_start or datetime.fromtimestamp(anchor, UTC)
    return ScaledClock(args.clock_speed, start, anchor)


def run_emulator(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor emulator`: serve until signalled."""
    started = WallClock().utcnow().timestamp()
    try:
        ssl_context = _server_ssl(args.tls_cert, args.tls_key)
        faults = _emulator_faults(args.faults, args.fault)
        if args.profile == "policies" and args.time_scale != 1:
            raise ValueError(
                "--time-scale does not apply to the policies profile (its schedules are "
                "wall-clock times): use --clock-speed"
            )
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
            backup_vaults_per_subscription=args.backup_vaults_per_subscription,
            backup_vault_history_jobs=args.backup_vault_history_jobs,
            skip_rate=args.skip_rate,
        ),
        resource_graph=ResourceGraphSettings(staleness_s=args.resource_graph_staleness),
        throttle=ThrottleSettings(model=args.throttle_model, reads_per_s=args.reads_per_s),
        faults=faults,
        page_size=args.page_size,
        token_lifetime_s=args.token_lifetime,
        protected_items_limit=args.protected_items_limit,
        protected_items_window_s=args.protected_items_window,
        tenants=args.tenants,
        lighthouse=args.lighthouse,
    )
    clock = _clock(args, started)

    def announce(banner: dict[str, str]) -> None:
        out.write(orjson.dumps(banner).decode() + "\n")
        out.flush()

    try:
        anyio.run(
            lambda: serve_until_signalled(
                settings,
                host=args.host,
                port=args.port,
                ssl_context=ssl_context,
                announce=announce,
                clock=clock,
            )
        )
    except OSError as exc:
        sys.stderr.write(
            f"backup-monitor emulator: cannot listen on {args.host}:{args.port}: {exc}\n"
        )
        return EXIT_STARTUP
    return EXIT_OK
