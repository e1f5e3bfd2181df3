"""`backup-monitor jobs wait`: block until a job, or the job of an operation, ends."""

from __future__ import annotations

import argparse
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from yarl import URL

from monitor.clock import Clock
from monitor.commands.common import add_config_option
from monitor.commands.console import (
    Console,
    describe_arm_error,
    human_s,
    job_record,
    to_json,
    vault_label,
)
from monitor.commands.exits import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMED_OUT,
)
from monitor.commands.jobs_common import (
    JOBS_EXIT_CODES,
    JobReader,
    Output,
    UsageError,
    duration_arg,
    job_arg,
    vault_arg,
)
from monitor.core.cadence import backoff_s, next_job_poll_s, next_operation_poll_s
from monitor.core.jobs import JobDetails, JobStatus
from monitor.core.operations import (
    OperationKind,
    OperationRef,
    OperationState,
    parse_operation_path,
    parse_operation_status,
)
from monitor.core.vaults import VaultRef
from monitor.errors import TRANSIENT_ARM_ERRORS, ArmError, ArmNotFound, ArmThrottled, ParseError

_T = TypeVar("_T")

_EXIT_BY_STATUS: Final = {
    JobStatus.COMPLETED: EXIT_OK,
    JobStatus.COMPLETED_WITH_WARNINGS: EXIT_COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED: EXIT_FAILED,
    JobStatus.CANCELLED: EXIT_CANCELLED,
}

JOB_APPEAR_GRACE_S: Final = 30.0
"""After an operation names its job, a 404 for that job is retried this long (ARM lists new
jobs a few seconds late; the Azure CLI waits 10 s)."""
TRANSIENT_BACKOFF_CAP_S: Final = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitRequest:
    """`jobs wait VAULT_ID JOB_ID` or `jobs wait --operation-url URL`."""

    vault: VaultRef | None
    job_name: str | None
    operation_url: str | None
    operation: OperationRef | None
    timeout_s: float | None
    output: Output


def wait_request(args: argparse.Namespace) -> WaitRequest:
    """The `WaitRequest` of parsed `jobs wait` arguments.

    Raises:
        UsageError: a malformed VAULT_ID, JOB_ID or --operation-url, or both forms given.
    """
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
    vault = vault_arg(args.vault_id, "VAULT_ID")
    return WaitRequest(
        vault=vault,
        job_name=job_arg(args.job_id, vault),
        operation_url=None,
        operation=None,
        timeout_s=args.timeout,
        output=args.output,
    )


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
    label = f"operation {ref.operation_id} in {vault_label(ref.vault)}"
    target = url
    reads = _Reads(label, deadline, console)
    while True:
        reply = await reads.attempt(reader.get_operation(target))
        if reply is None:
            continue
        if isinstance(reply, _Stop):
            return reply.code
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

        def line(state: str = state) -> list[str]:
            elapsed = f"{state}  elapsed {human_s(deadline.elapsed_s)}"
            short = f"operation {ref.operation_id[:8]}"
            return [
                f"{short} in {ref.vault.name}: {elapsed}",
                f"{short}: {elapsed}",
                elapsed,
            ]

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
    label = f"job {job_name} in {vault_label(vault)}"
    details: JobDetails | None = None
    overdue_reads = 0
    expected_end_at: float | None = None
    reads = _Reads(label, deadline, console, not_found_grace_s=grace_s)
    while True:
        read = await reads.attempt(reader.get_job(vault, job_name), last=details)
        if read is None:
            continue
        if isinstance(read, _Stop):
            return read.code
        details = read
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
        ) -> list[str]:
            since_read = deadline.clock.monotonic() - read_at
            left = details.estimated_remaining_s
            return job_progress(
                job_name,
                vault.name,
                status=details.job.status.value,
                elapsed_s=deadline.elapsed_s,
                left_s=None if left is None else max(left - since_read, 0.0),
                next_read_s=max(delay - since_read, 0.0),
            )

        if deadline.left_s <= 0 or not await _sleep(delay, deadline, console, line):
            return _timed_out(console, label, deadline, details, output=output, vault=vault)


@dataclass(frozen=True, slots=True)
class _Stop:
    """The wait ends with `code`; the line that says why is written."""

    code: int


class _Reads:
    """Every ARM read of `jobs wait` and the one place that says what its errors mean.

    A 404 ends the wait (EXIT_NOT_FOUND), except within `not_found_grace_s` of the first read,
    when the read is repeated 3 s later. Throttling, 5xx and transport errors are retried with
    backoff until the deadline (then EXIT_TIMED_OUT). Any other ARM error ends the wait
    (EXIT_API_ERROR).
    """

    def __init__(
        self, label: str, deadline: _Deadline, console: Console, *, not_found_grace_s: float = 0.0
    ) -> None:
        self.label, self.deadline, self.console = label, deadline, console
        self.not_found_grace_s = not_found_grace_s
        self.first_read_at = deadline.clock.monotonic()
        self.failures = 0

    async def attempt(
        self, read: Awaitable[_T], *, last: JobDetails | None = None
    ) -> _T | _Stop | None:
        """The answer of `read`; None when it is to be read again (any wait before that is
        over); `_Stop` when the wait ends here. `last`: the job as last read, for the timeout
        line."""
        label, deadline, console = self.label, self.deadline, self.console
        try:
            answer = await read
        except ArmNotFound as exc:
            if deadline.clock.monotonic() - self.first_read_at < self.not_found_grace_s:
                if not await _sleep(
                    3.0, deadline, console, lambda: [f"{label}: not listed yet", "not listed yet"]
                ):
                    return _Stop(_timed_out(console, label, deadline, last))
                return None
            console.problem(
                f"backup-monitor jobs wait: {label}: not found: {describe_arm_error(exc)}"
            )
            return _Stop(EXIT_NOT_FOUND)
        except TRANSIENT_ARM_ERRORS as exc:
            self.failures += 1
            if not await _retry_later(exc, self.failures, label, deadline, console):
                return _Stop(_timed_out(console, label, deadline, last))
            return None
        except ArmError as exc:
            console.problem(f"backup-monitor jobs wait: {label}: {describe_arm_error(exc)}")
            return _Stop(EXIT_API_ERROR)
        self.failures = 0
        return answer


async def _retry_later(
    exc: ArmError, failures: int, label: str, deadline: _Deadline, console: Console
) -> bool:
    """Say that reading `label` failed in a way that may pass, and sleep before the next try:
    `Retry-After` for a 429, else doubling from 2 s. False when the deadline had passed."""
    if isinstance(exc, ArmThrottled):
        delay = max(exc.retry_after_s, 1.0)
    else:
        delay = backoff_s(failures - 1, cap_s=TRANSIENT_BACKOFF_CAP_S)
    console.problem(
        f"backup-monitor jobs wait: {label}: {describe_arm_error(exc)}; retrying in {delay:.0f} s"
    )
    return await _sleep(delay, deadline, console, lambda: [f"{label}: retrying", "retrying"])


def job_progress(
    job_name: str,
    vault_name: str,
    *,
    status: str,
    elapsed_s: float,
    left_s: float | None,
    next_read_s: float,
) -> list[str]:
    """The live line of a job being waited for, as variants for `Console.status`, the fullest
    first: job and vault, status, time waited, ARM's estimate of the time left (counted down
    between reads), the next read; then without the next read, with the job's first 8
    characters and no vault, and the figures alone. Every figure moves between reads; ARM's
    progress percentage, which only moves at a read, is left to the final and timeout lines."""
    figures = [status, f"elapsed {human_s(elapsed_s)}"]
    if left_s is not None:
        figures.append(f"about {human_s(left_s)} left")
    moving = "  ".join(figures)
    full = f"{moving}  next read in {human_s(next_read_s)}"
    who = f"job {job_name} in {vault_name}"
    short = f"job {job_name[:8]}"
    return [
        f"{who}: {full}",
        f"{who}: {moving}",
        f"{short}: {full}",
        f"{short}: {moving}",
        moving,
        "  ".join(figures[:2]),
    ]


async def _sleep(
    seconds: float,
    deadline: _Deadline,
    console: Console,
    line: Callable[[], str | Sequence[str]],
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
        f"backup-monitor jobs wait: {label}: timed out after {human_s(deadline.elapsed_s)}{last}"
    )
    if details is not None and vault is not None and output == "json":
        console.result(to_json(job_record(details.job, vault, details)))
    return EXIT_TIMED_OUT


def _print_final(
    details: JobDetails, vault: VaultRef, output: Output, console: Console, deadline: _Deadline
) -> None:
    if output == "json":
        console.result(to_json(job_record(details.job, vault, details)))
        return
    job = details.job
    what = f"{job.operation or job.job_type} of {job.entity or '-'}"
    console.result(
        f"{job.status.value}: job {job.name} ({what}) in vault {vault.name}, "
        f"ran {human_s(job.duration_s)}, waited {human_s(deadline.elapsed_s)}"
    )
    for e in details.errors:
        head = " ".join(p for p in (e.code, e.title) if p)
        console.result(f"  {head + ': ' if head else ''}{e.message or '(no message)'}")
        for r in e.recommendations:
            console.result(f"    → {r}")


def add_wait_parser(sub: Any) -> None:
    """The `jobs wait` command."""
    raw = argparse.RawDescriptionHelpFormatter
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
            "stderr when it is a terminal, as one line cut to its width (COLUMNS)."
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
    add_config_option(wait)
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
