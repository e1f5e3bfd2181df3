"""`main`, the top-level parser and the exit codes of `backup-monitor`.

The commands are in `monitor.commands`, one module each, and each adds its own sub-parser. The
exit codes are defined in `monitor.commands.exits` (the commands return them, and a module
of `monitor.commands` may not import this one) and re-exported here, the one place that lists
them all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.commands.demo import add_demo_parser, run_demo
from monitor.commands.emulator import add_emulator_parser, run_emulator
from monitor.commands.exits import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STARTUP,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
)
from monitor.commands.jobs import add_jobs_parser, run_jobs
from monitor.commands.run import add_run_parsers, run_check, run_daemon

__all__ = [
    "EXIT_API_ERROR",
    "EXIT_CANCELLED",
    "EXIT_COMPLETED_WITH_WARNINGS",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STARTUP",
    "EXIT_TIMED_OUT",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The `backup-monitor` argument parser; each command's module adds its own sub-parser."""
    parser = argparse.ArgumentParser(
        prog="backup-monitor",
        description="Watch every Azure Backup job and emit one JSON event per state change.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_emulator_parser(commands)
    add_run_parsers(commands)
    add_demo_parser(commands)
    add_jobs_parser(commands)
    return parser


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
