"""Tests of operation URL paths and OperationStatus bodies in monitor.core.operations."""

from __future__ import annotations

import pytest

from monitor.core.operations import (
    OperationKind,
    OperationState,
    parse_operation_path,
    parse_operation_status,
)
from monitor.errors import ParseError

VAULT = (
    "/Subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
    "Microsoft.RecoveryServices/vaults/v1"
)
ITEM = (
    VAULT + "/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg;vm1"
    "/protectedItems/VM;iaasvmcontainerv2;rg;vm1"
)


@pytest.mark.parametrize(
    ("path", "kind", "status_path"),
    [
        (f"{ITEM}/operationsStatus/op1", OperationKind.STATUS, f"{ITEM}/operationsStatus/op1"),
        (f"{ITEM}/operationResults/op1", OperationKind.RESULT, f"{ITEM}/operationsStatus/op1"),
        (f"{ITEM}/OPERATIONRESULTS/op1", OperationKind.RESULT, f"{ITEM}/operationsStatus/op1"),
        (f"{VAULT}/backupOperations/op1", OperationKind.STATUS, f"{VAULT}/backupOperations/op1"),
        (
            f"{VAULT}/backupOperationResults/op1",
            OperationKind.RESULT,
            f"{VAULT}/backupOperations/op1",
        ),
    ],
)
def test_operation_paths_name_their_vault_kind_and_status_resource(
    path: str, kind: OperationKind, status_path: str
) -> None:
    """Every documented operation URL shape is understood, including ARM's `/Subscriptions/`."""
    ref = parse_operation_path(path)
    assert ref.kind is kind
    assert ref.operation_id == "op1"
    assert ref.status_path == status_path
    assert ref.vault.name == "v1"
    assert ref.vault.subscription_id == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    "path",
    [
        f"{VAULT}/backupJobs/j1",
        f"{ITEM}/backup",
        "/subscriptions/s/providers/Microsoft.RecoveryServices/vaults",
        f"{VAULT}/backupOperations/op1/extra",
        "",
    ],
)
def test_other_paths_are_refused(path: str) -> None:
    """Anything but an operation URL of a vault is a ParseError that says what was expected."""
    with pytest.raises(ParseError, match="expected a Recovery Services operation URL"):
        parse_operation_path(path)


def test_a_succeeded_status_names_its_job() -> None:
    """`properties.jobId` of OperationStatusJobExtendedInfo is the job to wait for."""
    status = parse_operation_status(
        {
            "id": "op1",
            "status": "Succeeded",
            "endTime": "0001-01-01T00:00:00.00000Z",
            "properties": {"objectType": "OperationStatusJobExtendedInfo", "jobId": "j1"},
        }
    )
    assert status.state is OperationState.SUCCEEDED
    assert status.job_ids == ("j1",)


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("InProgress", OperationState.IN_PROGRESS),
        ("inprogress", OperationState.IN_PROGRESS),
        ("Canceled", OperationState.CANCELED),
        ("Cancelled", OperationState.CANCELED),
        ("Failed", OperationState.FAILED),
        ("SomethingNew", OperationState.INVALID),
    ],
)
def test_statuses_any_casing_and_unknown_text(raw: str, state: OperationState) -> None:
    """Statuses are read case-insensitively; unknown text is INVALID with the raw text kept."""
    status = parse_operation_status({"status": raw, "error": {"code": "E1", "message": "m"}})
    assert status.state is state
    assert status.raw_status == raw
    assert (status.error_code, status.error_message) == ("E1", "m")


def test_many_job_ids_and_bad_shapes() -> None:
    """jobIds lists are read; a body without a status is a ParseError."""
    status = parse_operation_status(
        {"status": "Succeeded", "properties": {"jobIds": ["a", "b", 3], "error": "x"}}
    )
    assert status.job_ids == ("a", "b")
    with pytest.raises(ParseError):
        parse_operation_status({"properties": {}})
    with pytest.raises(ParseError):
        parse_operation_status([])


@pytest.mark.parametrize(
    ("properties", "path"),
    [
        ({"jobId": "../../../etc/passwd"}, "properties.jobId"),
        ({"jobId": "j1?x=1"}, "properties.jobId"),
        ({"jobIds": ["a", ".."]}, "properties.jobIds[1]"),
        ({"jobIds": ["a\nb"]}, "properties.jobIds[0]"),
    ],
)
def test_a_job_id_that_is_not_one_path_segment_is_refused(
    properties: dict[str, object], path: str
) -> None:
    """A job id the operation names goes into the job's URL: an unsafe one is a ParseError."""
    with pytest.raises(ParseError) as info:
        parse_operation_status({"status": "Succeeded", "properties": properties})
    assert info.value.path == path
    assert info.value.problem.startswith("job name ")


def test_an_operation_url_naming_an_unsafe_vault_is_refused() -> None:
    """The vault part of an operation URL is checked as every vault id is."""
    with pytest.raises(ParseError, match="vault name is a dot segment"):
        parse_operation_path(VAULT.replace("/v1", "/..") + "/backupOperations/op1")
