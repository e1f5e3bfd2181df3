"""The composition root: parses the command line and builds every long-lived object."""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import anyio
import orjson

from monitor import __version__
from monitor.emulator import PROFILES, EmulatorSettings, WorldSettings
from monitor.emulator.runner import serve_until_signalled
from monitor.emulator.throttle import ThrottleSettings
from monitor.emulator.tour import run_tour

EXIT_OK, EXIT_USAGE = 0, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


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
    emulator.add_argument("--tls-cert", type=Path, help="PEM certificate chain; serve HTTPS")
    emulator.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")

    demo = commands.add_parser(
        "demo",
        help="run against the built-in emulator and narrate what happens",
        description="Start the emulator in-process and walk through what it serves.",
    )
    demo.add_argument(
        "--duration", type=_positive_float, default=45.0, help="seconds to run (default: 45)"
    )
    _add_world_options(demo, subscriptions=2, vaults=4)
    return parser


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


def run_emulator(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor emulator`: serve until signalled."""
    try:
        ssl_context = _server_ssl(args.tls_cert, args.tls_key)
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


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """`backup-monitor demo`: the emulator walk-through (the daemon joins it in issue 3)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named on the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    match args.command:
        case "emulator":
            return run_emulator(args, sys.stdout)
        case "demo":
            return run_demo(args, sys.stdout)
        case _:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
