"""`backup-monitor jobs`: its parser, and one `list`, `show` or `wait` on the daemon's client."""

# Rules:
# - Results go to stdout; diagnostics, progress and every API error go to stderr, one line each,
#   naming the vault (or operation), ARM's status and error code, and the request id.
# - Progress lines are drawn only when stderr is a terminal, and always erased before anything
#   else is written there.
# - Every read goes through the injected `JobReader` (the ArmClient in production): its origin
#   check, its per-subscription budget and its error mapping; nothing here talks HTTP.
# - The process exit code is one of the EXIT_* constants of `monitor.commands.exits`
#   (documented in README.md).

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any, TextIO, assert_never, cast

from monitor.arm import ArmClient
from monitor.arm_http import make_ssl_context, open_session
from monitor.clock import Clock, SystemClock
from monitor.commands.common import (
    run_guarded,
    settings_for,
)
from monitor.commands.console import Console, stream_is_terminal
from monitor.commands.exits import EXIT_API_ERROR, EXIT_USAGE
from monitor.commands.jobs_common import JOBS_EXIT_CODES, Discover, JobReader, UsageError
from monitor.commands.jobs_list import ListRequest, add_list_parser, list_command, list_request
from monitor.commands.jobs_show import ShowRequest, add_show_parser, show_command, show_request
from monitor.commands.jobs_wait import WaitRequest, add_wait_parser, wait_command, wait_request
from monitor.config import Settings, VaultKindName
from monitor.core.vaults import VaultKind
from monitor.credentials import TokenCache, build_credential, credential_secrets
from monitor.discovery import VaultDiscovery
from monitor.pacing import BudgetBook

JobsRequest = ListRequest | ShowRequest | WaitRequest


def parse_jobs_request(args: argparse.Namespace) -> JobsRequest:
    """The typed request of `jobs list|show|wait` as parsed by `add_jobs_parser`, checked.

    Done before anything connects, so a bad argument exits 2 even without a credential.

    Raises:
        UsageError: no sub-command; a malformed vault id, job id, subscription id or operation
            URL (the message names the argument); or both a job and an operation URL given to
            `wait`.
    """
    match args.jobs_command:
        case "list":
            return list_request(args)
        case "show":
            return show_request(args)
        case "wait":
            return wait_request(args)
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
    console = Console(out, err, progress=stream_is_terminal(err))
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


JOBS_EXAMPLES = """examples:
  VAULT=/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.RecoveryServices/vaults/NAME
  # or a Backup vault: .../providers/Microsoft.DataProtection/backupVaults/NAME
  backup-monitor jobs list --config monitor.toml --status failed --since 24h
  backup-monitor jobs list --vault "$VAULT" --since 7d --output jsonl
  backup-monitor jobs list --kind backup_vault --status failed --since 7d
  backup-monitor jobs show "$VAULT" 7ddead57-0000-4000-8000-000000000009
  backup-monitor jobs wait "$VAULT" 7ddead57-0000-4000-8000-000000000009 --timeout 2h
  backup-monitor jobs wait --operation-url "$AZURE_ASYNC_OPERATION" --timeout 90m
"""


def add_jobs_parser(commands: Any) -> None:
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

    add_list_parser(sub)
    add_show_parser(sub)
    add_wait_parser(sub)


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
        tokens = TokenCache(
            credential,
            settings.azure.token_scope,
            clock,
            secrets=credential_secrets(settings.azure),
        )
        await tokens.token()
        yield ArmClient(
            session=session,
            tokens=tokens,
            azure=settings.azure,
            budgets=BudgetBook(settings.budget, clock=clock, rng=rng),
            clock=clock,
            rng=rng,
        )


def with_configured_kinds(request: JobsRequest, settings: Settings) -> JobsRequest:
    """`request`, a `jobs list` without --kind reading the kinds `[discovery] vault_kinds`
    names (for --subscription too), as the daemon does."""
    if not isinstance(request, ListRequest) or request.kinds:
        return request
    kinds = tuple(VaultKind(k) for k in settings.discovery.vault_kinds)
    return replace(request, default_kinds=kinds)


def discovery_settings(request: JobsRequest, settings: Settings) -> Settings:
    """The settings `jobs list`'s discovery runs with: `[discovery] vault_kinds` replaced by
    `--kind`'s kinds when given (so only vaults of those kinds are listed and read)."""
    if not isinstance(request, ListRequest) or not request.kinds:
        return settings
    kinds = cast(tuple[VaultKindName, ...], tuple(k.value for k in request.kinds))
    return replace(settings, discovery=replace(settings.discovery, vault_kinds=kinds))


async def jobs(request: JobsRequest, settings: Settings) -> int:
    """`backup-monitor jobs …` against ARM; returns its exit code."""
    clock, rng = SystemClock(), random.Random()
    request = with_configured_kinds(request, settings)
    async with open_arm(settings, clock=clock, rng=rng) as arm:
        discovery = VaultDiscovery(arm, discovery_settings(request, settings), clock, rng)
        return await run_jobs_command(
            request,
            reader=arm,
            discover=discovery.discover_once,
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
    settings = settings_for(args, one_shot=True)
    if settings is None:
        return EXIT_USAGE
    return run_guarded(jobs, request, settings, failure_code=EXIT_API_ERROR)
