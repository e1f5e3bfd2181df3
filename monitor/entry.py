"""The first code a `backup-monitor` process runs: SIGTERM and SIGINT are caught before anything
heavy is imported.

Both the console script and `python -m monitor` start in `main`. Importing the CLI (aiohttp,
azure-identity, structlog, …) takes a few hundred milliseconds; with the default handlers, a
SIGTERM in that time killed the process (exit 143) and a SIGINT printed a traceback. Here, for
the commands that run until signalled (`run`, `emulator`, `demo`), either signal makes the
process exit 0 at once until the command's own signal handling takes over (the daemon's anyio
signal receiver, see `monitor.commands.run.stop_on_signals`): nothing has been emitted yet, so
there is nothing to finish, flush or checkpoint, and a lock held by then is dropped by the
kernel. The one-shot commands (`check-config`, `jobs …`) keep the default handlers: stopped early
they have not succeeded, and `jobs wait` exiting 0 would say the job completed.

Rule: only the standard library (signal, sys, os) is imported at module level; the CLI is
imported inside `main`, after the handlers are in place.
"""

from __future__ import annotations

import os
import signal
import sys

SERVING_COMMANDS = frozenset({"run", "emulator", "demo"})
"""The commands that run until SIGTERM or SIGINT and exit 0 when it comes."""


def command_of(argv: list[str]) -> str | None:
    """The sub-command named in `argv` (without the program name): its first non-option word.

    The top-level parser has no option that takes a value (`-h`, `--version`), so the first
    word that does not start with `-` is the command.
    """
    return next((word for word in argv if not word.startswith("-")), None)


def _exit_before_start(signum: int, frame: object) -> None:
    """Nothing has been emitted yet: say so on stderr and exit 0 without running any clean-up."""
    name = signal.Signals(signum).name
    os.write(
        2, f"backup-monitor: {name} during start-up; nothing was emitted, exiting 0\n".encode()
    )
    os._exit(0)


def catch_early_signals(argv: list[str]) -> bool:
    """Install the start-up handlers when `argv` names a serving command; whether it did."""
    if command_of(argv) not in SERVING_COMMANDS:
        return False
    signal.signal(signal.SIGTERM, _exit_before_start)
    signal.signal(signal.SIGINT, _exit_before_start)
    return True


def main() -> int:
    """The `backup-monitor` console script and `python -m monitor`."""
    catch_early_signals(sys.argv[1:])
    from monitor.cli import main as cli_main  # the heavy imports, now covered

    return cli_main()
