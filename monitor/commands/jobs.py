"""The one-shot commands `jobs list`, `jobs show` and `jobs wait`, on the daemon's ARM client."""

# Rules:
# - Results go to stdout; diagnostics, progress and every API error go to stderr, one line each,
#   naming the vault (or operation), ARM's status and error code, and the request id.
# - Progress lines are drawn only when stderr is a terminal, and always erased before anything
#   else is written there.
# - Every read goes through the injected `JobReader` (the ArmClient in production): its origin
#   check, its per-subscription budget and its error mapping; nothing here talks HTTP.
# - The process exit code is one of the EXIT_* constants below (documented in README.md).

from __future__ import annotations

import argparse
from typing import TextIO, assert_never

from monitor.clock import Clock
from monitor.commands.console import Console, _is_terminal
from monitor.commands.exits import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
)
from monitor.commands.jobs_common import (
    DiscardSink,
    Discover,
    JobReader,
    UsageError,
    duration_arg,
    status_arg,
    time_arg,
)
from monitor.commands.jobs_list import (
    DEFAULT_LIST_TIMEOUT_S,
    ListRequest,
    _list_request,
    list_command,
)
from monitor.commands.jobs_show import ShowRequest, _show_request, show_command
from monitor.commands.jobs_wait import WaitRequest, _wait_request, wait_command

__all__ = [
    "DEFAULT_LIST_TIMEOUT_S",
    "EXIT_API_ERROR",
    "EXIT_CANCELLED",
    "EXIT_COMPLETED_WITH_WARNINGS",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMED_OUT",
    "EXIT_USAGE",
    "DiscardSink",
    "JobReader",
    "JobsRequest",
    "UsageError",
    "duration_arg",
    "parse_jobs_request",
    "run_jobs_command",
    "status_arg",
    "time_arg",
]


JobsRequest = ListRequest | ShowRequest | WaitRequest


def parse_jobs_request(args: argparse.Namespace) -> JobsRequest:
    """The typed request of `jobs list|show|wait` as parsed by `monitor.cli`, checked.

    Done before anything connects, so a bad argument exits 2 even without a credential.

    Raises:
        UsageError: no sub-command; a malformed vault id, job id, subscription id or operation
            URL (the message names the argument); or both a job and an operation URL given to
            `wait`.
    """
    match args.jobs_command:
        case "list":
            return _list_request(args)
        case "show":
            return _show_request(args)
        case "wait":
            return _wait_request(args)
        case _:
            raise UsageError("name a command: jobs list, jobs show or jobs wait (see --help)")


async def run_jobs_command(
    request: JobsRequest,
    *,
    reader: JobReader,
    discover: Discover,
    clock: Clock,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run one `jobs` request; returns the process exit code (the EXIT_* constants).

    Args:
        request: from `parse_jobs_request`.
        reader: the ARM client, open and authenticated.
        discover: every vault the configuration watches (the daemon's discovery), for `list`
            without `--vault`/`--subscription`.
        clock: time and sleep.
        out, err: results, and diagnostics; progress is drawn when `err` is a terminal.

    Raises:
        StartupError: discovery reached no ARM endpoint at all.
    """
    console = Console(out, err, progress=_is_terminal(err))
    try:
        match request:
            case ListRequest():
                return await list_command(
                    request, reader=reader, discover=discover, clock=clock, console=console
                )
            case ShowRequest():
                return await show_command(request, reader=reader, console=console)
            case WaitRequest():
                return await wait_command(request, reader=reader, clock=clock, console=console)
            case _:
                assert_never(request)
    except UsageError as exc:
        console.problem(f"backup-monitor jobs: {exc}")
        return EXIT_USAGE
    finally:
        console.clear()
