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
import contextlib
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol, TextIO, assert_never

import anyio
import orjson
from yarl import URL

from monitor.arm import OperationReply
from monitor.clock import Clock
from monitor.core.cadence import next_job_poll_s, next_operation_poll_s
from monitor.core.jobs import (
    BackupJob,
    JobDetails,
    JobStatus,
    VaultRef,
    check_path_segment,
    check_subscription_id,
    parse_duration_s,
    parse_vault_id,
)
from monitor.core.json_depth import limit_depth
from monitor.core.operations import (
    OperationKind,
    OperationRef,
    OperationState,
    parse_operation_path,
    parse_operation_status,
)
from monitor.errors import TRANSIENT_ARM_ERRORS, ArmError, ArmNotFound, ArmThrottled, ParseError
from monitor.sinks import format_event_time, render_job, render_vault

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

EXIT_OK: Final = 0
"""list/show: done. wait: the job ended Completed."""
EXIT_USAGE: Final = 2
"""A bad argument (vault, job or subscription id, operation URL, time window); also bad
configuration."""
EXIT_API_ERROR: Final = 4
"""An ARM call failed (403, 5xx, transport, refused origin); list: some vault could not be read
(every other vault's jobs were still printed)."""
EXIT_COMPLETED_WITH_WARNINGS: Final = 10
EXIT_FAILED: Final = 11
"""wait: the job ended Failed, or the operation behind the URL failed."""
EXIT_CANCELLED: Final = 12
"""wait: the job ended Cancelled, or the operation was canceled."""
EXIT_TIMED_OUT: Final = 13
"""list: --timeout passed before every vault was read (nothing is printed); wait: --timeout
passed before the job ended."""
EXIT_NOT_FOUND: Final = 14
"""show/wait: the job, its vault or the operation does not exist (ARM answered 404)."""

_EXIT_BY_STATUS: Final = {
    JobStatus.COMPLETED: EXIT_OK,
    JobStatus.COMPLETED_WITH_WARNINGS: EXIT_COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED: EXIT_FAILED,
    JobStatus.CANCELLED: EXIT_CANCELLED,
}

LIST_CONCURRENCY: Final = 8
"""Vaults read at the same time by `jobs list`; the subscription budgets pace them further."""
DEFAULT_LIST_TIMEOUT_S: Final = 300.0
"""`jobs list --timeout` when not given: the whole command, discovery included."""
LIST_TIMEOUT_NAMES: Final = 10
"""Vaults named in the timeout line of `jobs list`; the rest are counted."""
DEFAULT_SINCE: Final = timedelta(hours=24)
JOB_APPEAR_GRACE_S: Final = 30.0
"""After an operation names its job, a 404 for that job is retried this long (ARM lists new
jobs a few seconds late; the Azure CLI waits 10 s)."""
TRANSIENT_BACKOFF_CAP_S: Final = 60.0

Output = Literal["table", "json", "jsonl", "text"]


class JobReader(Protocol):
    """The ARM reads the commands need: `ArmClient` in production."""

    async def list_vaults(self, subscription_id: str) -> list[VaultRef]: ...

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]: ...

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails: ...

    async def get_operation(self, url: str) -> OperationReply: ...


Discover = Callable[[], Awaitable[list[VaultRef]]]


class DiscardSink:
    """A `Sink` that drops everything: the daemon's discovery is reused without emitting."""

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        """Drop `events`."""

    async def recent_events(self) -> list[dict[str, Any]]:
        """Nothing was ever written."""
        return []

    async def aclose(self) -> None:
        """Nothing to release."""


class UsageError(Exception):
    """A command-line value is unusable; reported as one line, exit code 2."""


# --------------------------------------------------------------------------------------------
# Argument types (argparse `type=` callables; they raise ArgumentTypeError with the reason)

_UNIT_S: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_COMPOUND: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+", re.IGNORECASE)
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.IGNORECASE)


def parse_duration_text(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h30m`, `24h`, `7d`, `2w`, or ISO 8601 (`PT1H`).

    Raises:
        ValueError: anything else, or a duration that is not positive.
    """
    raw = text.strip()
    seconds: float | None
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif _COMPOUND.fullmatch(raw):
        seconds = sum(float(n) * _UNIT_S[u.lower()] for n, u in _PART.findall(raw))
    else:
        seconds = parse_duration_s(raw.upper()) if raw.upper().startswith("P") else None
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (try 90s, 15m, 1h30m, 24h, 7d or PT1H)")
    if seconds <= 0:
        raise ValueError(f"must be longer than 0 s, got {text!r}")
    return seconds


def parse_time_text(text: str) -> timedelta | datetime:
    """A moment on the command line: a duration ago (`24h`, `90m`, `7d`) or ISO 8601.

    An ISO 8601 time without an offset is taken as UTC (ARM's job times are UTC).

    Raises:
        ValueError: neither a duration nor an ISO 8601 date or date-time.
    """
    try:
        return timedelta(seconds=parse_duration_text(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (a duration ago such as 24h, 90m, 7d, or ISO 8601 such as "
            "2026-11-25T10:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def duration_arg(text: str) -> float:
    """argparse type: `parse_duration_text`."""
    try:
        return parse_duration_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_arg(text: str) -> timedelta | datetime:
    """argparse type: `parse_time_text`."""
    try:
        return parse_time_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_STATUS_CHOICES: Final = (
    JobStatus.IN_PROGRESS,
    JobStatus.CANCELLING,
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


def status_arg(text: str) -> JobStatus:
    """argparse type: a job status in any casing (`failed`, `InProgress`, …)."""
    status = JobStatus.of(text.strip())
    if status not in _STATUS_CHOICES:
        names = ", ".join(s.value for s in _STATUS_CHOICES)
        raise argparse.ArgumentTypeError(f"unknown job status {text!r}; one of {names}")
    return status


# --------------------------------------------------------------------------------------------
# Terminal output


class Console:
    """stdout for results; stderr for diagnostics and, on a terminal, one live progress line."""

    def __init__(self, out: TextIO, err: TextIO, *, progress: bool) -> None:
        self.out, self.err, self.progress = out, err, progress
        self._drawn = False
        self._out_closed = False

    def result(self, text: str) -> None:
        """Write `text` (newline added) to stdout; once the reader went away, drop it.

        A closed pipe (`… | head`) is not an error of the command: the exit code still says how
        the command went.
        """
        if self._out_closed:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            self._out_closed = True
            # Point the descriptor at /dev/null so that the interpreter's final flush is quiet.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)

    def problem(self, text: str) -> None:
        """Write one diagnostic line to stderr (whitespace runs collapsed), above the progress."""
        self.clear()
        self.err.write(" ".join(text.split()) + "\n")
        self.err.flush()

    def status(self, text: str) -> None:
        """Redraw the progress line (terminal only)."""
        if not self.progress:
            return
        self.err.write("\r\x1b[K" + text)
        self.err.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the progress line, if one is drawn."""
        if self._drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._drawn = False


def describe_arm_error(exc: ArmError) -> str:
    """ARM's status, error code, message and request id in one line, without the URL when the
    caller names the resource already."""
    return " ".join(str(exc).replace(f" to GET {exc.url}", "").split())


def _vault_label(vault: VaultRef) -> str:
    return f"vault {vault.name} ({vault.id})"


def _human_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else format_event_time(moment)


def _dumps(value: object, option: int = 0) -> str:
    try:
        return orjson.dumps(value, option=option).decode()
    except TypeError:  # nested deeper than orjson writes (254): cut like a too-deep answer
        return orjson.dumps(limit_depth(value), option=option).decode()


def _pretty(value: object) -> str:
    return _dumps(value, orjson.OPT_INDENT_2)


# --------------------------------------------------------------------------------------------
# Requests


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ShowRequest:
    """`jobs show VAULT_ID JOB_ID`."""

    vault: VaultRef
    job_name: str
    output: Output


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitRequest:
    """`jobs wait VAULT_ID JOB_ID` or `jobs wait --operation-url URL`."""

    vault: VaultRef | None
    job_name: str | None
    operation_url: str | None
    operation: OperationRef | None
    timeout_s: float | None
    output: Output


def _vault_arg(text: str, argument: str) -> VaultRef:
    """The vault `argument` names; its subscription, resource group and name are checked as
    `parse_vault_id` checks ARM's (a GUID, and single safe path segments)."""
    try:
        return parse_vault_id(text.strip())
    except ParseError as exc:
        raise UsageError(
            f"{argument}: not a Recovery Services vault resource id: {exc.problem}: {text!r}"
        ) from None


def _job_arg(text: str, vault: VaultRef, argument: str = "JOB_ID") -> str:
    """The job name `argument` gives: a name, or a job resource id of `vault`.

    A resource id must be `{vault}/backupJobs/{name}` for the vault given beside it (any
    casing), so `../../etc/passwd` is refused rather than read as the job `passwd`.
    """
    name = text.strip()
    if "/" in name:
        prefix = vault.key + "/backupjobs/"
        given = name.rstrip("/")
        if given[: len(prefix)].lower() != prefix or "/" in given[len(prefix) :]:
            raise UsageError(
                f"{argument}: a job name, or the resource id of a job in {vault.id} "
                f"({vault.id}/backupJobs/NAME), got {text!r}"
            )
        name = given[len(prefix) :]
    try:
        return check_path_segment(name, "job name")
    except ParseError as exc:
        raise UsageError(f"{argument}: {exc.problem}") from None


def _subscription_arg(text: str) -> str:
    sub = text.strip()
    try:
        return check_subscription_id(sub).lower()
    except ParseError:
        raise UsageError(f"--subscription: must be a subscription GUID, got {text!r}") from None


def _list_request(args: argparse.Namespace) -> ListRequest:
    return ListRequest(
        vaults=tuple(_vault_arg(v, "--vault") for v in args.vault or ()),
        subscriptions=tuple(_subscription_arg(s) for s in args.subscription or ()),
        statuses=frozenset(args.status or ()),
        operations=tuple(o.strip().lower() for o in args.operation or ()),
        types=tuple(t.strip().lower() for t in args.type or ()),
        since=args.since if args.since is not None else DEFAULT_SINCE,
        until=args.until,
        output=args.output,
        timeout_s=args.timeout,
    )


def _show_request(args: argparse.Namespace) -> ShowRequest:
    vault = _vault_arg(args.vault_id, "VAULT_ID")
    return ShowRequest(vault=vault, job_name=_job_arg(args.job_id, vault), output=args.output)


def _wait_request(args: argparse.Namespace) -> WaitRequest:
    if args.operation_url is not None:
        if args.vault_id is not None or args.job_id is not None:
            raise UsageError("give either VAULT_ID JOB_ID or --operation-url, not both")
        url = URL(args.operation_url.strip(), encoded=True)
        if not url.is_absolute():
            raise UsageError(f"--operation-url must be an absolute URL, got {args.operation_url!r}")
        try:
            operation = parse_operation_path(url.path)
        except ParseError as exc:
            raise UsageError(f"--operation-url: {exc.problem}") from None
        return WaitRequest(
            vault=operation.vault,
            job_name=None,
            operation_url=str(url),
            operation=operation,
            timeout_s=args.timeout,
            output=args.output,
        )
    if args.vault_id is None or args.job_id is None:
        raise UsageError("give VAULT_ID JOB_ID, or --operation-url URL")
    vault = _vault_arg(args.vault_id, "VAULT_ID")
    return WaitRequest(
        vault=vault,
        job_name=_job_arg(args.job_id, vault),
        operation_url=None,
        operation=None,
        timeout_s=args.timeout,
        output=args.output,
    )


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


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# jobs list


@dataclass(slots=True)
class _ListState:
    rows: list[tuple[BackupJob, VaultRef]] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    finding: str = "the watched vaults"
    """What discovery is reading while no vault is known yet (for the timeout line)."""
    unread: dict[str, VaultRef] = field(default_factory=dict)
    """Vaults whose jobs have not been read yet, by key."""


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
        raise UsageError(f"--until {_when(until_at)} is before --since {_when(since_at)}")
    if since_at > now:
        raise UsageError(f"--since {_when(since_at)} is in the future")
    state = _ListState()
    started = clock.monotonic()
    with anyio.move_on_after(request.timeout_s) as deadline:
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
        state.finding = f"the vaults of subscription {sub}"
        try:
            found = await reader.list_vaults(sub)
        except ArmError as exc:
            console.problem(
                f"backup-monitor jobs list: subscription {sub}: {describe_arm_error(exc)}"
            )
            failed_scopes += 1
            continue
        for vault in found:
            vaults.setdefault(vault.key, vault)
    if not request.vaults and not request.subscriptions:
        state.finding = "the watched vaults"
        for vault in await discover():
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
                    f"backup-monitor jobs list: {_vault_label(vault)}: {describe_arm_error(exc)}"
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
    _print_rows(rows, request.output, console)
    if console.progress:
        failed = f"; {state.failed} could not be read" if state.failed else ""
        console.problem(
            f"{len(rows)} jobs in {total} vaults that started between {_when(since_at)} and "
            f"{_when(until_at)}{failed}"
        )
    return EXIT_API_ERROR if state.failed or failed_scopes else EXIT_OK


def _list_timed_out(timeout_s: float, elapsed_s: float, state: _ListState) -> str:
    """The one stderr line of a `jobs list` whose --timeout passed."""
    head = (
        f"backup-monitor jobs list: timed out after {_human_s(elapsed_s)} "
        f"(--timeout {_human_s(timeout_s)}); nothing printed"
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
        kinds = {job.job_type.lower(), (job.backup_management_type or "").lower()}
        if not kinds.intersection(request.types):
            return False
    return True


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _newest_first(row: tuple[BackupJob, VaultRef]) -> tuple[float, str, str]:
    job, vault = row
    started = (job.start_at or _EPOCH).timestamp()
    return (-started, vault.key, job.key.job_name)


def _print_rows(
    rows: Sequence[tuple[BackupJob, VaultRef]], output: Output, console: Console
) -> None:
    if output == "json":
        console.result(_pretty([_record(job, vault) for job, vault in rows]))
        return
    if output == "jsonl":
        for job, vault in rows:
            console.result(_dumps(_record(job, vault)))
        return
    header = ("STARTED (UTC)", "STATUS", "DURATION", "OPERATION", "TYPE", "ENTITY", "VAULT", "JOB")
    table = [header]
    table.extend(
        (
            "-" if job.start_at is None else f"{job.start_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            job.status.value,
            _human_s(job.duration_s),
            job.operation or "-",
            job.job_type,
            job.entity or "-",
            vault.name,
            job.name,
        )
        for job, vault in rows
    )
    for line in _columns(table):
        console.result(line)


def _columns(rows: Iterable[Sequence[str]]) -> list[str]:
    materialised = [list(r) for r in rows]
    widths = [max(len(r[i]) for r in materialised) for i in range(len(materialised[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in materialised
    ]


def _record(
    job: BackupJob, vault: VaultRef, details: JobDetails | None = None
) -> dict[str, object]:
    return {"job": render_job(job, details=details), "vault": render_vault(vault)}


# --------------------------------------------------------------------------------------------
# jobs show


async def show_command(request: ShowRequest, *, reader: JobReader, console: Console) -> int:
    """`jobs show`: one job with its errors, tasks and property bag, as text or JSON.

    Returns EXIT_OK, EXIT_NOT_FOUND (404 for the job or the vault) or EXIT_API_ERROR.
    """
    try:
        details = await reader.get_job(request.vault, request.job_name)
    except ArmNotFound as exc:
        console.problem(
            f"backup-monitor jobs show: job {request.job_name} in {_vault_label(request.vault)}: "
            f"not found: {describe_arm_error(exc)}"
        )
        return EXIT_NOT_FOUND
    except ArmError as exc:
        console.problem(
            f"backup-monitor jobs show: {_vault_label(request.vault)}: {describe_arm_error(exc)}"
        )
        return EXIT_API_ERROR
    if request.output == "json":
        console.result(_pretty(_full_record(details, request.vault)))
    else:
        console.result("\n".join(_text_view(details, request.vault)))
    return EXIT_OK


def _full_record(details: JobDetails, vault: VaultRef) -> dict[str, object]:
    """The event-schema `job` and `vault` objects, plus `extended`: what the schema leaves out."""
    record = _record(details.job, vault, details)
    job = details.job
    record["extended"] = {
        "activity_id": job.activity_id,
        "actions": list(job.actions),
        "progress_percentage": details.progress_percentage,
        "estimated_remaining_s": details.estimated_remaining_s,
        "dynamic_error_message": details.dynamic_error_message,
        "errors": [
            {
                "code": e.code,
                "title": e.title,
                "message": e.message,
                "recommendations": list(e.recommendations),
                "additional_details": e.additional_details,
            }
            for e in details.errors
        ],
        "tasks": [
            {
                "name": t.name,
                "status": None if t.status is None else t.status.value,
                "start_time": None if t.start_at is None else format_event_time(t.start_at),
                "end_time": None if t.end_at is None else format_event_time(t.end_at),
                "duration_s": None if t.duration_s is None else round(t.duration_s, 3),
                "progress_percentage": t.progress_percentage,
            }
            for t in details.tasks
        ],
        "arm_properties": dict(job.properties),
    }
    return record


def _text_view(details: JobDetails, vault: VaultRef) -> list[str]:
    job = details.job
    outcome = job.status.outcome
    status = job.status.value + (f"  ({outcome})" if outcome else "")
    fields = [
        ("Job", job.name),
        ("Type", f"{job.job_type}  ({job.backup_management_type or '-'})"),
        ("Operation", job.operation or "-"),
        ("Entity", job.entity or "-"),
        (
            "Vault",
            f"{vault.name}  (resource group {vault.resource_group}, "
            f"subscription {vault.subscription_id})",
        ),
        ("Status", status),
        ("Started", _when(job.start_at)),
        ("Ended", _when(job.end_at)),
        ("Duration", _human_s(job.duration_s)),
    ]
    if details.progress_percentage is not None and not job.status.is_terminal:
        left = details.estimated_remaining_s
        fields.append(
            (
                "Progress",
                f"{details.progress_percentage:.0f} %"
                + ("" if left is None else f"  (about {_human_s(left)} left)"),
            )
        )
    if job.actions:
        fields.append(("Actions", ", ".join(job.actions)))
    if job.activity_id:
        fields.append(("Activity id", job.activity_id))
    fields.append(("Resource id", job.resource_id))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    if details.errors or details.dynamic_error_message:
        lines += ["", "Errors"]
        for e in details.errors:
            head = " ".join(p for p in (e.code, e.title) if p)
            lines.append(f"  {head + ': ' if head else ''}{e.message or '(no message)'}")
            lines.extend(f"    → {r}" for r in e.recommendations)
            if e.additional_details:
                lines.append(f"    {e.additional_details}")
        if not details.errors and details.dynamic_error_message:
            lines.append(f"  {details.dynamic_error_message}")
    if details.tasks:
        lines += ["", "Tasks"]
        task_rows = [
            (
                t.name,
                "-" if t.status is None else t.status.value,
                _human_s(t.duration_s),
                "" if t.progress_percentage is None else f"{t.progress_percentage:.0f} %",
            )
            for t in details.tasks
        ]
        lines.extend("  " + line for line in _columns(task_rows))
    if details.property_bag:
        lines += ["", "Properties"]
        width = max(len(k) for k in details.property_bag)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in details.property_bag.items())
    return lines


# --------------------------------------------------------------------------------------------
# jobs wait


class _Deadline:
    def __init__(self, clock: Clock, timeout_s: float | None) -> None:
        self.clock = clock
        self.started = clock.monotonic()
        self.at = math.inf if timeout_s is None else self.started + timeout_s

    @property
    def elapsed_s(self) -> float:
        return self.clock.monotonic() - self.started

    @property
    def left_s(self) -> float:
        return self.at - self.clock.monotonic()


@dataclass(frozen=True, slots=True)
class _Resolved:
    vault: VaultRef
    job_name: str


async def wait_command(
    request: WaitRequest, *, reader: JobReader, clock: Clock, console: Console
) -> int:
    """`jobs wait`: follow the operation URL to its job (if given), then wait for the job's end.

    Returns the EXIT_* code of the job's final status (Completed 0, CompletedWithWarnings 10,
    Failed 11, Cancelled 12), EXIT_TIMED_OUT when `timeout_s` passed first, EXIT_NOT_FOUND on a
    404, EXIT_FAILED/EXIT_CANCELLED when the operation itself failed or was canceled, and
    EXIT_API_ERROR for any other ARM error. Throttling, 5xx and transport errors are retried
    (with backoff) until the timeout.
    """
    deadline = _Deadline(clock, request.timeout_s)
    if request.operation is not None and request.operation_url is not None:
        resolved = await _follow_operation(
            request.operation_url, request.operation, reader, deadline, console
        )
        if isinstance(resolved, int):
            return resolved
        vault, job_name, grace_s = resolved.vault, resolved.job_name, JOB_APPEAR_GRACE_S
    else:
        assert request.vault is not None
        assert request.job_name is not None
        vault, job_name, grace_s = request.vault, request.job_name, 0.0
    return await _wait_for_job(
        vault,
        job_name,
        reader=reader,
        deadline=deadline,
        console=console,
        output=request.output,
        grace_s=grace_s,
    )


async def _follow_operation(
    url: str,
    ref: OperationRef,
    reader: JobReader,
    deadline: _Deadline,
    console: Console,
) -> _Resolved | int:
    """The job an async operation created, or an exit code when it did not create one."""
    label = f"operation {ref.operation_id} in {_vault_label(ref.vault)}"
    target = url
    failures = 0
    while True:
        try:
            reply = await reader.get_operation(target)
        except ArmNotFound as exc:
            console.problem(
                f"backup-monitor jobs wait: {label}: not found: {describe_arm_error(exc)}"
            )
            return EXIT_NOT_FOUND
        except TRANSIENT_ARM_ERRORS as exc:
            failures += 1
            if not await _retry_later(exc, failures, label, deadline, console):
                return _timed_out(console, label, deadline, None)
            continue
        except ArmError as exc:
            console.problem(f"backup-monitor jobs wait: {label}: {describe_arm_error(exc)}")
            return EXIT_API_ERROR
        failures = 0
        state = "InProgress"
        done_without_body = reply.status != 202 and reply.payload is None
        if done_without_body and ref.kind is OperationKind.RESULT and target == url:
            target = _status_url(url, ref)
            continue
        if reply.status == 202:
            if reply.location and ref.kind is OperationKind.RESULT:
                target = reply.location  # checked against the ARM origin by get_operation
        elif reply.payload is not None:
            try:
                status = parse_operation_status(reply.payload)
            except ParseError as exc:
                if ref.kind is OperationKind.RESULT and target == url:
                    target = _status_url(url, ref)  # a result body without a status
                    continue
                console.problem(
                    f"backup-monitor jobs wait: {label}: ARM's answer is not an "
                    f"OperationStatus: {exc} (request id {reply.request_id})"
                )
                return EXIT_API_ERROR
            state = status.raw_status
            if status.state is OperationState.SUCCEEDED:
                if not status.job_ids:
                    console.problem(
                        f"backup-monitor jobs wait: {label}: Succeeded without naming a job "
                        f"(no properties.jobId; request id {reply.request_id})"
                    )
                    return EXIT_API_ERROR
                if len(status.job_ids) > 1:
                    console.problem(
                        f"backup-monitor jobs wait: {label} started {len(status.job_ids)} "
                        f"jobs ({', '.join(status.job_ids)}); waiting for the first"
                    )
                return _Resolved(vault=ref.vault, job_name=status.job_ids[0])
            if status.state in (OperationState.FAILED, OperationState.CANCELED):
                why = " ".join(p for p in (status.error_code, status.error_message) if p)
                console.problem(
                    f"backup-monitor jobs wait: {label}: {status.raw_status}"
                    + (f": {why}" if why else "")
                )
                return EXIT_FAILED if status.state is OperationState.FAILED else EXIT_CANCELLED
        delay = next_operation_poll_s(reply.retry_after_s)

        def line(state: str = state) -> str:
            return f"{label}: {state}  elapsed {_human_s(deadline.elapsed_s)}"

        if not await _sleep(delay, deadline, console, line):
            return _timed_out(console, label, deadline, None)


def _status_url(url: str, ref: OperationRef) -> str:
    """The operation's status resource (`operationsStatus/{id}`), where a finished operation
    names its job; same origin and query as the Location URL it is derived from."""
    given = URL(url, encoded=True)
    return str(given.with_path(ref.status_path).with_query(given.raw_query_string))


async def _wait_for_job(
    vault: VaultRef,
    job_name: str,
    *,
    reader: JobReader,
    deadline: _Deadline,
    console: Console,
    output: Output,
    grace_s: float,
) -> int:
    label = f"job {job_name} in {_vault_label(vault)}"
    details: JobDetails | None = None
    overdue_reads = 0
    expected_end_at: float | None = None
    failures = 0
    first_read_at = deadline.clock.monotonic()
    while True:
        try:
            details = await reader.get_job(vault, job_name)
        except ArmNotFound as exc:
            if deadline.clock.monotonic() - first_read_at < grace_s:
                delay = 3.0
                if not await _sleep(delay, deadline, console, lambda: f"{label}: not listed yet"):
                    return _timed_out(console, label, deadline, details)
                continue
            console.problem(
                f"backup-monitor jobs wait: {label}: not found: {describe_arm_error(exc)}"
            )
            return EXIT_NOT_FOUND
        except TRANSIENT_ARM_ERRORS as exc:
            failures += 1
            if not await _retry_later(exc, failures, label, deadline, console):
                return _timed_out(console, label, deadline, details)
            continue
        except ArmError as exc:
            console.problem(f"backup-monitor jobs wait: {label}: {describe_arm_error(exc)}")
            return EXIT_API_ERROR
        failures = 0
        job = details.job
        if job.status.is_terminal:
            console.clear()
            _print_final(details, vault, output, console, deadline)
            return _EXIT_BY_STATUS[JobStatus.of(job.status.value)]
        now = deadline.clock.monotonic()
        estimate = details.estimated_remaining_s
        if (
            job.status == JobStatus.CANCELLING
            or (expected_end_at is not None and now >= expected_end_at)
            or (estimate is not None and estimate <= 0)
        ):
            overdue_reads += 1
        delay = next_job_poll_s(
            status=job.status,
            estimated_remaining_s=estimate,
            age_s=job.duration_s,
            overdue_reads=overdue_reads,
        )
        trusted = overdue_reads == 0 and estimate is not None and estimate > 0
        expected_end_at = now + estimate if trusted and estimate is not None else None
        read_at = now

        def line(
            details: JobDetails = details, read_at: float = read_at, delay: float = delay
        ) -> str:
            since_read = deadline.clock.monotonic() - read_at
            parts = [f"{details.job.status.value}", f"elapsed {_human_s(deadline.elapsed_s)}"]
            if details.progress_percentage is not None:
                parts.append(f"{details.progress_percentage:.0f} %")
            if details.estimated_remaining_s is not None:
                left = max(details.estimated_remaining_s - since_read, 0.0)
                parts.append(f"about {_human_s(left)} left")
            parts.append(f"next read in {_human_s(max(delay - since_read, 0.0))}")
            return f"{label}: " + "  ".join(parts)

        if deadline.left_s <= 0 or not await _sleep(delay, deadline, console, line):
            return _timed_out(console, label, deadline, details, output=output, vault=vault)


async def _retry_later(
    exc: ArmError, failures: int, label: str, deadline: _Deadline, console: Console
) -> bool:
    """Say that reading `label` failed in a way that may pass, and sleep before the next try:
    `Retry-After` for a 429, else doubling from 2 s. False when the deadline had passed."""
    if isinstance(exc, ArmThrottled):
        delay = max(exc.retry_after_s, 1.0)
    else:
        delay = min(2.0**failures, TRANSIENT_BACKOFF_CAP_S)
    console.problem(
        f"backup-monitor jobs wait: {label}: {describe_arm_error(exc)}; retrying in {delay:.0f} s"
    )
    return await _sleep(delay, deadline, console, lambda: f"{label}: retrying")


async def _sleep(
    seconds: float, deadline: _Deadline, console: Console, line: Callable[[], str]
) -> bool:
    """Sleep `seconds`, but not past the deadline, redrawing the progress line every second.

    Returns False when the deadline had already passed (nothing slept). When the sleep is cut
    short by the deadline, True is returned so that the caller reads once more at the deadline.
    """
    left = deadline.left_s
    if left <= 0:
        return False
    end = deadline.clock.monotonic() + min(seconds, left)
    while (remaining := end - deadline.clock.monotonic()) > 0:
        console.status(line())
        await deadline.clock.sleep(min(remaining, 1.0) if console.progress else remaining)
    return True


def _timed_out(
    console: Console,
    label: str,
    deadline: _Deadline,
    details: JobDetails | None,
    *,
    output: Output = "text",
    vault: VaultRef | None = None,
) -> int:
    last = "" if details is None else f"; last status {details.job.status.value}"
    if details is not None and details.progress_percentage is not None:
        last += f" ({details.progress_percentage:.0f} %)"
    console.problem(
        f"backup-monitor jobs wait: {label}: timed out after {_human_s(deadline.elapsed_s)}{last}"
    )
    if details is not None and vault is not None and output == "json":
        console.result(_dumps(_record(details.job, vault, details)))
    return EXIT_TIMED_OUT


def _print_final(
    details: JobDetails, vault: VaultRef, output: Output, console: Console, deadline: _Deadline
) -> None:
    if output == "json":
        console.result(_dumps(_record(details.job, vault, details)))
        return
    job = details.job
    what = f"{job.operation or job.job_type} of {job.entity or '-'}"
    console.result(
        f"{job.status.value}: job {job.name} ({what}) in vault {vault.name}, "
        f"ran {_human_s(job.duration_s)}, waited {_human_s(deadline.elapsed_s)}"
    )
    for e in details.errors:
        head = " ".join(p for p in (e.code, e.title) if p)
        console.result(f"  {head + ': ' if head else ''}{e.message or '(no message)'}")
        for r in e.recommendations:
            console.result(f"    → {r}")
