"""The composition root: parses the command line and builds every long-lived object."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monitor import __version__


def build_parser() -> argparse.ArgumentParser:
    """The `backup-monitor` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="backup-monitor",
        description="Watch every Azure Backup job and emit one JSON event per state change.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named on the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
