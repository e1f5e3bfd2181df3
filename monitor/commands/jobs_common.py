"""What `jobs list`, `jobs show` and `jobs wait` share: the ARM reads, argument types, ids."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

from monitor.arm import OperationReply
from monitor.commands.exits import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_COMPLETED_WITH_WARNINGS,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMED_OUT,
)
from monitor.core.ids import check_path_segment
from monitor.core.jobs import BackupJob, JobDetails, JobStatus
from monitor.core.vaults import VaultKind, VaultRef, parse_vault_id
from monitor.core.wire import parse_duration_s
from monitor.errors import ParseError

Output = Literal["table", "json", "jsonl", "text"]


class JobReader(Protocol):
    """The ARM reads the commands need: `ArmClient` in production."""

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]: ...

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]: ...

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails: ...

    async def get_vault(self, vault_id: str) -> VaultRef: ...

    async def get_operation(self, url: str) -> OperationReply: ...


Discover = Callable[[], Awaitable[list[VaultRef]]]


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


def vault_arg(text: str, argument: str) -> VaultRef:
    """The vault `argument` names, of either kind (`.../Microsoft.RecoveryServices/vaults/{name}`
    or `.../Microsoft.DataProtection/backupVaults/{name}`); its subscription, resource group and
    name are checked as `parse_vault_id` checks ARM's (a GUID, and single safe path segments)."""
    try:
        return parse_vault_id(text.strip())
    except ParseError as exc:
        raise UsageError(
            f"{argument}: not a vault resource id (a Recovery Services vault or a Backup "
            f"vault): {exc.problem}: {text!r}"
        ) from None


KIND_CHOICES: Final = tuple(k.value for k in VaultKind)
"""`--kind` values: `VaultKind`'s (`recovery_services`, `backup_vault`)."""
KIND_SHORT: Final = {VaultKind.RECOVERY_SERVICES: "rs", VaultKind.BACKUP_VAULT: "bv"}
"""A table's KIND column."""
KIND_WORDS: Final = {
    VaultKind.RECOVERY_SERVICES: "Recovery Services vault",
    VaultKind.BACKUP_VAULT: "Backup vault",
}
"""How a line names a kind of vault."""


def job_arg(text: str, vault: VaultRef, argument: str = "JOB_ID") -> str:
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


JOBS_EXIT_CODES = f"""exit codes:
  0   list/show: done; wait: the job ended Completed
  2   bad arguments or configuration
  3   startup failure (no token, ARM unreachable)
  {EXIT_API_ERROR}   an ARM call failed (403, 5xx, transport, foreign origin); list: some vault
      or subscription could not be read (the others were printed)
  {EXIT_COMPLETED_WITH_WARNINGS}  wait: CompletedWithWarnings
  {EXIT_FAILED}  wait: Failed (or the operation failed)
  {EXIT_CANCELLED}  wait: Cancelled (or the operation was canceled)
  {EXIT_TIMED_OUT}  list: --timeout passed before every vault was read (nothing printed);
      wait: --timeout passed before the job ended
  {EXIT_NOT_FOUND}  show/wait: the job, vault or operation does not exist (404)
"""
