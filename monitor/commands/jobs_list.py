"""`backup-monitor jobs list`: the jobs that started in a window, across vaults, filtered."""

# Rules:
# - A failed (or warned) job's error codes come from its list item's `errorDetails` when it has
#   them (Backup vault jobs do); otherwise from one details read, at most LIST_DETAIL_READS per
#   command, newest first, under the same limiter and read budget as the lists. A code not read
#   shows as `?` (json: null); the exit code does not depend on those reads.
# - Nothing matched is one stderr line naming the window and the filters; the exit code stays
#   what the reads say.

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio

from monitor.clock import Clock
from monitor.commands.common import add_config_option
from monitor.commands.console import (
    Console,
    columns,
    describe_arm_error,
    human_s,
    job_record,
    time_text,
    to_json,
    to_pretty_json,
    vault_label,
)
from monitor.commands.exits import EXIT_API_ERROR, EXIT_OK, EXIT_TIMED_OUT
from monitor.commands.jobs_common import (
    JOBS_EXIT_CODES,
    KIND_CHOICES,
    KIND_SHORT,
    KIND_WORDS,
    Discover,
    JobReader,
    Output,
    UsageError,
    duration_arg,
    status_arg,
    time_arg,
    vault_arg,
)
from monitor.core.ids import check_subscription_id
from monitor.core.jobs import BackupJob, JobKey, JobStatus
from monitor.core.vaults import VaultKind, VaultRef
from monitor.discovery import provider_not_registered
from monitor.errors import ArmError, ParseError

LIST_CONCURRENCY: Final = 8
"""Vaults read at the same time by `jobs list`; the subscription budgets pace them further."""
DEFAULT_LIST_TIMEOUT_S: Final = 300.0
"""`jobs list --timeout` when not given: the whole command, discovery included."""
LIST_TIMEOUT_NAMES: Final = 10
"""Vaults named in the timeout line of `jobs list`; the rest are counted."""
DEFAULT_SINCE: Final = timedelta(hours=24)
LIST_DETAIL_READS: Final = 25
"""Details reads `jobs list` makes at most, for the error codes of failed jobs whose list item
has none (newest first); the codes of the rest show as `?`."""
CODED_STATUSES: Final = frozenset({JobStatus.FAILED, JobStatus.COMPLETED_WITH_WARNINGS})
"""The statuses whose error codes `jobs list` reads a job's details for."""
SUBSCRIPTION_CHARS: Final = 8
"""How much of a subscription GUID the table shows (its first group); json gives it whole."""

ErrorCodes = tuple[str, ...] | None
"""A job's error codes; None when not known (not read)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListRequest:
    """`jobs list`: the scope, the window and the filters (all case-insensitive)."""

    vaults: tuple[VaultRef, ...]
    subscriptions: tuple[str, ...]
    statuses: frozenset[JobStatus]
    operations: tuple[str, ...]
    types: tuple[str, ...]
    since: timedelta | datetime
    until: timedelta | datetime | None
    output: Output
    timeout_s: float = DEFAULT_LIST_TIMEOUT_S
    kinds: tuple[VaultKind, ...] = ()
    """`--kind`: only vaults of these kinds (discovered, of --subscription, and --vault must
    agree); empty: `default_kinds`."""
    default_kinds: tuple[VaultKind, ...] = tuple(VaultKind)
    """The kinds without --kind: `[discovery] vault_kinds` (set by `jobs`), else both."""
    detail_reads: int = LIST_DETAIL_READS
    """Details reads at most, for the error codes of failed jobs whose list item has none."""

    @property
    def vault_kinds(self) -> tuple[VaultKind, ...]:
        """The kinds of vault in scope: `kinds`, or `default_kinds`."""
        return self.kinds or self.default_kinds


def _subscription_arg(text: str) -> str:
    sub = text.strip()
    try:
        return check_subscription_id(sub).lower()
    except ParseError:
        raise UsageError(f"--subscription: must be a subscription GUID, got {text!r}") from None


def list_request(args: argparse.Namespace) -> ListRequest:
    """The `ListRequest` of parsed `jobs list` arguments.

    Raises:
        UsageError: a malformed --vault or --subscription, or a --vault of a kind that --kind
            leaves out; the message names it.
    """
    kinds = tuple(dict.fromkeys(VaultKind(k) for k in getattr(args, "kind", None) or ()))
    vaults = tuple(vault_arg(v, "--vault") for v in args.vault or ())
    for vault in vaults:
        if kinds and vault.kind not in kinds:
            raise UsageError(
                f"--vault {vault.id} is a {KIND_WORDS[vault.kind]}, but --kind asks for "
                f"{' and '.join(k.value for k in kinds)} only"
            )
    return ListRequest(
        vaults=vaults,
        subscriptions=tuple(_subscription_arg(s) for s in args.subscription or ()),
        statuses=frozenset(args.status or ()),
        operations=tuple(o.strip().lower() for o in args.operation or ()),
        types=tuple(t.strip().lower() for t in args.type or ()),
        since=args.since if args.since is not None else DEFAULT_SINCE,
        until=args.until,
        output=args.output,
        timeout_s=args.timeout,
        kinds=kinds,
    )


@dataclass(slots=True)
class _ListState:
    rows: list[tuple[BackupJob, VaultRef]] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    finding: str = "the watched vaults"
    """What discovery is reading while no vault is known yet (for the timeout line)."""
    unread: dict[str, VaultRef] = field(default_factory=dict)
    """Vaults whose jobs have not been read yet, by key."""
    codes: dict[JobKey, ErrorCodes] = field(default_factory=dict)
    """Each listed job's error codes (`listed_error_codes`, then the details reads)."""


async def list_command(
    request: ListRequest,
    *,
    reader: JobReader,
    discover: Discover,
    clock: Clock,
    console: Console,
) -> int:
    """`jobs list`: the jobs that started in the window, in every vault of the scope.

    Vaults are read concurrently (at most LIST_CONCURRENCY at once, each subscription paced by
    its read budget). A vault (or subscription) that cannot be read is reported on stderr as
    one line and the others are still printed; the exit code is then EXIT_API_ERROR.

    The whole command, discovery included, has `request.timeout_s`: when it passes first,
    nothing is printed on stdout, one stderr line names the timeout and the vaults not read
    yet, and the exit code is EXIT_TIMED_OUT.

    Raises:
        UsageError: the window ends before it starts, or starts in the future.
        StartupError: from `discover`, when no discovery call reached ARM.
    """
    now = clock.utcnow()
    since_at = _resolve(request.since, now)
    until_at = now if request.until is None else _resolve(request.until, now)
    if until_at < since_at:
        raise UsageError(f"--until {time_text(until_at)} is before --since {time_text(since_at)}")
    if since_at > now:
        raise UsageError(f"--since {time_text(since_at)} is in the future")
    state = _ListState()
    started = clock.monotonic()
    with anyio.CancelScope(deadline=clock.deadline_after(request.timeout_s)) as deadline:
        code = await _list_within(
            request, since_at, until_at, state, reader=reader, discover=discover, console=console
        )
    if deadline.cancelled_caught:
        console.clear()
        console.problem(_list_timed_out(request.timeout_s, clock.monotonic() - started, state))
        return EXIT_TIMED_OUT
    return code


async def _list_within(
    request: ListRequest,
    since_at: datetime,
    until_at: datetime,
    state: _ListState,
    *,
    reader: JobReader,
    discover: Discover,
    console: Console,
) -> int:
    failed_scopes = 0
    vaults: dict[str, VaultRef] = {v.key: v for v in request.vaults}
    for sub in request.subscriptions:
        for kind in request.vault_kinds:
            state.finding = f"the {KIND_WORDS[kind]}s of subscription {sub}"
            try:
                found = await reader.list_vaults(sub, kind)
            except ArmError as exc:
                if provider_not_registered(exc):
                    continue  # the subscription holds no vaults of that kind
                console.problem(
                    f"backup-monitor jobs list: subscription {sub} ({KIND_WORDS[kind]}s): "
                    f"{describe_arm_error(exc)}"
                )
                failed_scopes += 1
                continue
            for vault in found:
                vaults.setdefault(vault.key, vault)
    if not request.vaults and not request.subscriptions:
        state.finding = "the watched vaults"
        for vault in await discover():
            if vault.kind in request.vault_kinds:
                vaults.setdefault(vault.key, vault)

    state.unread = dict(vaults)
    total = len(vaults)
    limiter = anyio.CapacityLimiter(LIST_CONCURRENCY)

    def draw() -> None:
        failed = f", {state.failed} failed" if state.failed else ""
        console.status(f"reading {total} vaults: {state.done} done{failed}")

    async def read(vault: VaultRef) -> None:
        async with limiter:
            try:
                jobs = await reader.list_jobs(vault, since_at, until_at)
            except ArmError as exc:
                state.failed += 1
                console.problem(
                    f"backup-monitor jobs list: {vault_label(vault)}: {describe_arm_error(exc)}"
                )
            else:
                state.rows.extend((job, vault) for job in jobs if _selected(job, request))
            state.unread.pop(vault.key, None)
            state.done += 1
            draw()

    draw()
    async with anyio.create_task_group() as tg:
        for vault in vaults.values():
            tg.start_soon(read, vault, name=f"list {vault.name}")
    console.clear()

    rows = sorted(state.rows, key=_newest_first)
    await _read_error_codes(
        rows, state, cap=request.detail_reads, reader=reader, limiter=limiter, console=console
    )
    _print_rows(rows, state.codes, request.output, console)
    if not rows:
        console.problem(_nothing_matched(request, since_at, until_at, total, state.failed))
    elif console.progress:
        failed = f"; {state.failed} could not be read" if state.failed else ""
        console.problem(
            f"{len(rows)} jobs in {total} vaults that started between {time_text(since_at)} and "
            f"{time_text(until_at)}{failed}"
        )
    return EXIT_API_ERROR if state.failed or failed_scopes else EXIT_OK


def listed_error_codes(job: BackupJob) -> ErrorCodes:
    """The error codes a job's list item gives in `errorDetails` (a Recovery Services
    `errorCode`, numbers as text, or a Backup vault `code`), in order; None when the item has no
    `errorDetails` list. Entries without a code are left out."""
    raw = job.properties.get("errorDetails")
    if not isinstance(raw, list):
        return None
    codes: list[str] = []
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        code = entry.get("errorCode", entry.get("code"))
        if isinstance(code, bool):
            continue
        if isinstance(code, int) or (isinstance(code, str) and code.strip()):
            codes.append(str(code).strip())
    return tuple(codes)


async def _read_error_codes(
    rows: Sequence[tuple[BackupJob, VaultRef]],
    state: _ListState,
    *,
    cap: int,
    reader: JobReader,
    limiter: anyio.CapacityLimiter,
    console: Console,
) -> None:
    """Fill `state.codes`: from the list items, then (for failed or warned jobs without any)
    from at most `cap` details reads, newest first."""
    missing: list[tuple[BackupJob, VaultRef]] = []
    for job, vault in rows:
        codes = listed_error_codes(job)
        if codes is None and job.status in CODED_STATUSES:
            missing.append((job, vault))
        state.codes[job.key] = () if codes is None and job.status not in CODED_STATUSES else codes
    wanted, skipped = missing[:cap], len(missing) - cap
    done = 0

    async def read(job: BackupJob, vault: VaultRef) -> None:
        nonlocal done
        async with limiter:
            try:
                details = await reader.get_job(vault, job.name)
            except ArmError:
                pass  # stays unknown: `?`
            else:
                state.codes[job.key] = tuple(e.code for e in details.errors if e.code)
        done += 1
        console.status(f"reading the errors of {len(wanted)} jobs: {done} done")

    if wanted:
        console.status(f"reading the errors of {len(wanted)} jobs: 0 done")
        async with anyio.create_task_group() as tg:
            for job, vault in wanted:
                tg.start_soon(read, job, vault, name=f"errors of {job.name}")
        console.clear()
    if skipped > 0:
        console.problem(
            f"backup-monitor jobs list: the error codes of {skipped} more failed jobs were not "
            f"read (at most {cap} details reads; ERROR shows ?): `jobs show` gives "
            "them, or narrow the window"
        )


def _nothing_matched(
    request: ListRequest, since_at: datetime, until_at: datetime, total: int, failed: int
) -> str:
    """The stderr line of a `jobs list` that matched no job: the window, the scope, the filters."""
    filters = [
        f"{flag} {', '.join(values)}"
        for flag, values in (
            ("--status", sorted(s.value for s in request.statuses)),
            ("--operation", request.operations),
            ("--type", request.types),
            ("--kind", tuple(k.value for k in request.kinds)),
        )
        if values
    ]
    read = total - failed
    line = (
        f"backup-monitor jobs list: no jobs matched: none started between {time_text(since_at)} "
        f"and {time_text(until_at)} in the {read} vaults read"
    )
    if filters:
        line += f" with {'; '.join(filters)}"
    if failed:
        line += f" ({failed} more could not be read)"
    return line


def _list_timed_out(timeout_s: float, elapsed_s: float, state: _ListState) -> str:
    """The one stderr line of a `jobs list` whose --timeout passed."""
    head = (
        f"backup-monitor jobs list: timed out after {human_s(elapsed_s)} "
        f"(--timeout {human_s(timeout_s)}); nothing printed"
    )
    if state.done == 0 and not state.unread:
        return f"{head}: still finding {state.finding}"
    if not state.unread:
        return f"{head}: every vault was read, the timeout passed before printing"
    unread = list(state.unread.values())
    total = state.done + len(unread)
    names = ", ".join(v.name for v in unread[:LIST_TIMEOUT_NAMES])
    more = len(unread) - LIST_TIMEOUT_NAMES
    names += f" and {more} more" if more > 0 else ""
    return f"{head}: {len(unread)} of {total} vaults not read: {names}"


def _resolve(spec: timedelta | datetime, now: datetime) -> datetime:
    return now - spec if isinstance(spec, timedelta) else spec


def _selected(job: BackupJob, request: ListRequest) -> bool:
    if request.statuses and job.status not in request.statuses:
        return False
    if request.operations:
        operation = job.operation.lower()
        first_word = operation.split(" ", 1)[0]
        if operation not in request.operations and first_word not in request.operations:
            return False
    if request.types:
        kinds = {
            job.job_type.lower(),
            (job.backup_management_type or "").lower(),
            (job.datasource_type or "").lower(),
        }
        if not kinds.intersection(request.types):
            return False
    return True


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _newest_first(row: tuple[BackupJob, VaultRef]) -> tuple[float, str, str]:
    job, vault = row
    started = (job.start_at or _EPOCH).timestamp()
    return (-started, vault.key, job.key.job_name)


def list_record(job: BackupJob, vault: VaultRef, codes: ErrorCodes) -> dict[str, object]:
    """A json/jsonl record: the event schema's `job` and `vault` objects, and `error_codes`
    (a list of strings, empty when the job reported none; null when they were not read)."""
    record = job_record(job, vault)
    record["error_codes"] = None if codes is None else list(codes)
    return record


def error_text(codes: ErrorCodes) -> str:
    """The table's ERROR: the first code, `+N` for the others; `-` for none, `?` unknown."""
    if codes is None:
        return "?"
    if not codes:
        return "-"
    return codes[0] + (f"+{len(codes) - 1}" if len(codes) > 1 else "")


def _print_rows(
    rows: Sequence[tuple[BackupJob, VaultRef]],
    codes: dict[JobKey, ErrorCodes],
    output: Output,
    console: Console,
) -> None:
    if output == "json":
        console.result(
            to_pretty_json([list_record(job, vault, codes.get(job.key)) for job, vault in rows])
        )
        return
    if output == "jsonl":
        for job, vault in rows:
            console.result(to_json(list_record(job, vault, codes.get(job.key))))
        return
    if not rows:
        return  # no header alone: the stderr line says nothing matched
    header = (
        "STARTED (UTC)",
        "STATUS",
        "DURATION",
        "OPERATION",
        "KIND",
        "TYPE",
        "ENTITY",
        "SUBSCRIPTION",
        "VAULT",
        "JOB",
        "ERROR",
    )
    table = [header]
    table.extend(
        (
            "-" if job.start_at is None else f"{job.start_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            job.status.value,
            human_s(job.duration_s),
            job.operation or "-",
            KIND_SHORT[vault.kind],
            # Every Backup vault job is an AzureBackupJob: what it protects says more.
            job.datasource_type or job.job_type,
            job.entity or "-",
            vault.subscription_id[:SUBSCRIPTION_CHARS],
            vault.name,
            job.name,
            error_text(codes.get(job.key)),
        )
        for job, vault in rows
    )
    for line in columns(table):
        console.result(line)


def add_list_parser(sub: Any) -> None:
    """The `jobs list` command."""
    raw = argparse.RawDescriptionHelpFormatter
    listing = sub.add_parser(
        "list",
        help="jobs that started in a time window, across vaults, filtered",
        description=(
            "List the jobs that started in [--since, --until] in the given vaults, the vaults of "
            "the given subscriptions, or (by default) every vault the configuration watches "
            "(its include/exclude globs apply to that default only), Recovery Services vaults "
            "and Backup vaults alike; --kind keeps one kind. Vaults are read "
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
  backup-monitor jobs list --kind backup_vault --type Microsoft.Compute/disks --since 7d

The table's KIND is rs (a Recovery Services vault) or bv (a Backup vault); TYPE is the job
type, or for a Backup vault job its datasource type; SUBSCRIPTION is the first 8 characters of
the vault's subscription id; ERROR is a failed or warned job's first error code (+N more), -
for none, ? when not read (at most 25 details reads, newest first). json and jsonl records are
{"job": {...}, "vault": {...}, "error_codes": [...]}, job and vault named as the event schema's
objects (docs/events.md; vault.kind says the kind; previous_status is always null here),
error_codes null when not read. When no job matched, one stderr line says so.

"""
        + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    add_config_option(listing)
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
        help="job type (AzureIaaSVMJob, MabJob, AzureBackupJob, …), backup management type "
        "(AzureIaasVM, AzureWorkload, MAB, AzureBackupVault, …) or a Backup vault job's "
        "datasource type (Microsoft.Compute/disks, …) (repeatable)",
    )
    listing.add_argument(
        "--kind",
        action="append",
        choices=KIND_CHOICES,
        metavar="KIND",
        help="only vaults of this kind: recovery_services or backup_vault (repeatable; "
        "default both). Discovery then lists only vaults of these kinds, whatever "
        "[discovery] vault_kinds says",
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
