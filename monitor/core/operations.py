"""Async-operation URLs of Recovery Services and the `OperationStatus` they answer, parsed."""

# Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON and raise only
# ParseError. Operation statuses use ARM's async vocabulary (`Canceled`, one l), not the jobs'.

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from monitor.core.ids import check_path_segment
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.errors import ParseError

__all__ = [
    "OperationKind",
    "OperationRef",
    "OperationState",
    "OperationStatus",
    "parse_operation_path",
    "parse_operation_status",
]


class OperationKind(StrEnum):
    """What an operation URL answers.

    `STATUS` (`…/protectedItems/{item}/operationsStatus/{id}`, `…/backupOperations/{id}`) answers
    200 with an `OperationStatus` body at every stage. `RESULT` (`…/operationResults/{id}`,
    `…/backupOperationResults/{id}`) answers 202 (with `Retry-After`) while the operation runs
    and 200 or 204, usually without a body, once it is done.
    """

    STATUS = "status"
    RESULT = "result"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationRef:
    """An operation URL's path, understood: its vault, its kind, its id and its status path.

    `status_path` is the path of the `OperationStatus` resource of the same operation: the path
    itself for STATUS URLs, the sibling `operationsStatus/{id}` (or `backupOperations/{id}`) for
    RESULT URLs, which is where a finished operation's `jobId` can be read.
    """

    vault: VaultRef
    kind: OperationKind
    operation_id: str
    status_path: str


class OperationState(StrEnum):
    """`OperationStatus.status`; anything unknown is kept as INVALID with the raw text aside."""

    INVALID = "Invalid"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        """True for Succeeded, Failed and Canceled (the generic ARM async terminal states)."""
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELED)


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationStatus:
    """One `OperationStatus` body.

    Attributes:
        state: the status; INVALID also for text ARM may add later (see `raw_status`).
        raw_status: `status` verbatim.
        job_ids: from `properties.jobId` (OperationStatusJobExtendedInfo) or `properties.jobIds`
            (OperationStatusJobsExtendedInfo); empty when the body names no job.
        error_code, error_message: `error.code` and `error.message` when given.
    """

    state: OperationState
    raw_status: str
    job_ids: tuple[str, ...]
    error_code: str | None
    error_message: str | None


# Vault prefix (8 segments after the leading '/'), then the operation's own tail.
_ITEM_TAIL: Final = re.compile(
    r"(?P<item>/backupFabrics/[^/]+/protectionContainers/[^/]+/protectedItems/[^/]+)"
    r"/(?P<leaf>operationsStatus|operationResults)/(?P<op>[^/]+)",
    re.IGNORECASE,
)
_VAULT_TAIL: Final = re.compile(
    r"/(?P<leaf>backupOperations|backupOperationResults)/(?P<op>[^/]+)", re.IGNORECASE
)


def parse_operation_path(path: str) -> OperationRef:
    """Understand the path of a Recovery Services operation URL (decoded, without the query).

    Accepted (any casing of the fixed segments, `/Subscriptions/` included):
    `{vault}/backupFabrics/{f}/protectionContainers/{c}/protectedItems/{i}/operationsStatus/{id}`,
    the same with `operationResults/{id}`, `{vault}/backupOperations/{id}` and
    `{vault}/backupOperationResults/{id}`.

    Raises:
        ParseError: (path `operation_url`) the path is none of those; the message says what
            was expected.
    """
    parts = path.split("/")
    if len(parts) < 11 or parts[0] != "":
        raise ParseError("operation_url", _EXPECTED)
    vault_path = "/".join(parts[:9])
    try:
        vault = parse_vault_id(vault_path)
    except ParseError as exc:
        raise ParseError("operation_url", f"{_EXPECTED} ({exc.problem})") from None
    tail = path[len(vault_path) :]
    item = _ITEM_TAIL.fullmatch(tail)
    if item is not None:
        leaf, op = item.group("leaf").lower(), item.group("op")
        kind = OperationKind.STATUS if leaf == "operationsstatus" else OperationKind.RESULT
        status_path = f"{vault_path}{item.group('item')}/operationsStatus/{op}"
        return OperationRef(vault=vault, kind=kind, operation_id=op, status_path=status_path)
    at_vault = _VAULT_TAIL.fullmatch(tail)
    if at_vault is not None:
        leaf, op = at_vault.group("leaf").lower(), at_vault.group("op")
        kind = OperationKind.STATUS if leaf == "backupoperations" else OperationKind.RESULT
        status_path = f"{vault_path}/backupOperations/{op}"
        return OperationRef(vault=vault, kind=kind, operation_id=op, status_path=status_path)
    raise ParseError("operation_url", _EXPECTED)


_EXPECTED: Final = (
    "expected a Recovery Services operation URL: …/vaults/{vault}/…/protectedItems/{item}/"
    "operationsStatus/{id} (Azure-AsyncOperation), …/operationResults/{id} (Location), "
    "…/vaults/{vault}/backupOperations/{id} or …/backupOperationResults/{id}"
)

# "Cancelled" is the jobs' spelling; accept it here too rather than call it unknown.
_STATES: Final = {s.value.lower(): s for s in OperationState} | {
    "cancelled": OperationState.CANCELED
}


def parse_operation_status(payload: object) -> OperationStatus:
    """Parse an `OperationStatus` body: `{id, name, status, startTime, endTime, error, …}`.

    `properties` is polymorphic on `objectType`; only the job ids are read from it, and any other
    shape gives no job ids. An `error` that is not an object is ignored.

    Raises:
        ParseError: the payload is not an object, `status` is missing or not a string, or a job
            id is not one safe URL path segment (`check_path_segment`: it goes into the job's
            URL).
    """
    if not isinstance(payload, dict):
        raise ParseError("", f"expected an object, got {type(payload).__name__}")
    raw = payload.get("status")
    if not isinstance(raw, str) or not raw:
        raise ParseError("status", "missing, empty or not a string")
    job_ids: list[str] = []
    props = payload.get("properties")
    if isinstance(props, dict):
        one = props.get("jobId")
        if isinstance(one, str) and one:
            job_ids.append(check_path_segment(one, "job name", path="properties.jobId"))
        many = props.get("jobIds")
        if isinstance(many, list):
            for index, entry in enumerate(many):
                if isinstance(entry, str) and entry and entry not in job_ids:
                    path = f"properties.jobIds[{index}]"
                    job_ids.append(check_path_segment(entry, "job name", path=path))
    code: str | None = None
    message: str | None = None
    error = payload.get("error")
    if isinstance(error, dict):
        raw_code, raw_message = error.get("code"), error.get("message")
        code = raw_code if isinstance(raw_code, str) and raw_code else None
        message = raw_message if isinstance(raw_message, str) and raw_message else None
    return OperationStatus(
        state=_STATES.get(raw.lower(), OperationState.INVALID),
        raw_status=raw,
        job_ids=tuple(job_ids),
        error_code=code,
        error_message=message,
    )
