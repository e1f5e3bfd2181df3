"""`backup-monitor jobs show`: one job in full, with its errors, tasks and property bag."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

import anyio

from monitor.commands.common import add_config_option
from monitor.commands.console import (
    Console,
    columns,
    describe_arm_error,
    human_s,
    job_record,
    time_text,
    to_pretty_json,
    vault_label,
)
from monitor.commands.exits import EXIT_API_ERROR, EXIT_NOT_FOUND, EXIT_OK
from monitor.commands.jobs_common import (
    JOBS_EXIT_CODES,
    KIND_WORDS,
    JobReader,
    Output,
    job_arg,
    vault_arg,
)
from monitor.core.jobs import JobDetails
from monitor.core.vaults import VaultRef
from monitor.errors import ArmError, ArmNotFound
from monitor.events import format_event_time


@dataclass(frozen=True, slots=True, kw_only=True)
class ShowRequest:
    """`jobs show VAULT_ID JOB_ID`."""

    vault: VaultRef
    job_name: str
    output: Output


def show_request(args: argparse.Namespace) -> ShowRequest:
    """The `ShowRequest` of parsed `jobs show` arguments.

    Raises:
        UsageError: a malformed VAULT_ID or JOB_ID; the message names it.
    """
    vault = vault_arg(args.vault_id, "VAULT_ID")
    return ShowRequest(vault=vault, job_name=job_arg(args.job_id, vault), output=args.output)


async def show_command(request: ShowRequest, *, reader: JobReader, console: Console) -> int:
    """`jobs show`: one job with its errors, tasks and property bag, as text or JSON.

    The vault is read beside the job (one read more, concurrently) for its location, as the
    daemon's discovery knows it; when that read fails the job is still shown, its vault's
    location unknown (null).

    Returns EXIT_OK, EXIT_NOT_FOUND (404 for the job or the vault) or EXIT_API_ERROR.
    """
    vault = request.vault
    details: JobDetails | None = None
    failure: ArmError | None = None

    async def read_vault() -> None:
        nonlocal vault
        # On failure the job's read says what is wrong, if anything; the location stays unknown.
        with contextlib.suppress(ArmError):
            vault = await reader.get_vault(request.vault.id)

    async def read_job(scope: anyio.CancelScope) -> None:
        nonlocal details, failure
        try:
            details = await reader.get_job(request.vault, request.job_name)
        except ArmError as exc:
            failure = exc
            scope.cancel()  # the vault's location no longer matters

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_vault)
        tg.start_soon(read_job, tg.cancel_scope)
    if isinstance(failure, ArmNotFound):
        console.problem(
            f"backup-monitor jobs show: job {request.job_name} in {vault_label(request.vault)}: "
            f"not found: {describe_arm_error(failure)}"
        )
        return EXIT_NOT_FOUND
    if failure is not None:
        console.problem(
            f"backup-monitor jobs show: {vault_label(request.vault)}: {describe_arm_error(failure)}"
        )
        return EXIT_API_ERROR
    assert details is not None
    if request.output == "json":
        console.result(to_pretty_json(_full_record(details, vault)))
    else:
        console.result("\n".join(_text_view(details, vault)))
    return EXIT_OK


def _full_record(details: JobDetails, vault: VaultRef) -> dict[str, object]:
    """The event-schema `job` and `vault` objects, plus `extended`: what the schema leaves out."""
    record = job_record(details.job, vault, details)
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
    ]
    # Backup vault jobs: what they protect, through which instance and policy.
    if job.datasource_type or job.datasource_name:
        fields.append(
            ("Datasource", f"{job.datasource_name or '-'}  ({job.datasource_type or '-'})")
        )
    if job.datasource_id:
        fields.append(("Datasource id", job.datasource_id))
    if job.backup_instance or job.backup_instance_id:
        fields.append(("Backup instance", job.backup_instance or "-"))
    if job.backup_instance_id:
        fields.append(("Instance id", job.backup_instance_id))
    if job.policy_name:
        fields.append(("Policy", job.policy_name))
    fields += [
        (
            "Vault",
            f"{vault.name}  ({KIND_WORDS[vault.kind]}, resource group {vault.resource_group}, "
            f"subscription {vault.subscription_id}, location {vault.location or '-'})",
        ),
        ("Status", status),
        ("Started", time_text(job.start_at)),
        ("Ended", time_text(job.end_at)),
        ("Duration", human_s(job.duration_s)),
    ]
    if details.progress_percentage is not None and not job.status.is_terminal:
        left = details.estimated_remaining_s
        fields.append(
            (
                "Progress",
                f"{details.progress_percentage:.0f} %"
                + ("" if left is None else f"  (about {human_s(left)} left)"),
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
                human_s(t.duration_s),
                "" if t.progress_percentage is None else f"{t.progress_percentage:.0f} %",
            )
            for t in details.tasks
        ]
        lines.extend("  " + line for line in columns(task_rows))
    if details.property_bag:
        lines += ["", "Properties"]
        width = max(len(k) for k in details.property_bag)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in details.property_bag.items())
    return lines


def add_show_parser(sub: Any) -> None:
    """The `jobs show` command."""
    raw = argparse.RawDescriptionHelpFormatter
    show = sub.add_parser(
        "show",
        help="one job in full: errors with recommendations, tasks, property bag",
        description=(
            "Show one job with its error details, tasks and property bag. VAULT_ID is a "
            "Recovery Services vault or a Backup vault; a Backup vault job also shows its "
            "datasource, backup instance and policy, its errorDetails as errors, its "
            "sub-tasks as tasks and its additionalDetails as properties."
        ),
        epilog="""examples:
  backup-monitor jobs show "$VAULT" 7ddead57-0000-4000-8000-000000000009
  backup-monitor jobs show "$VAULT" "$JOB" --output json | jq .extended.errors

json: {"job": {...}, "vault": {...}} as in the event schema (vault.location from a read of
the vault beside the job's; null if it failed), plus "extended" (activity id, actions,
progress, estimated remaining time, error titles, task times, ARM's properties).

"""
        + JOBS_EXIT_CODES,
        formatter_class=raw,
    )
    add_config_option(show)
    show.add_argument("vault_id", metavar="VAULT_ID", help="the vault's resource id")
    show.add_argument("job_id", metavar="JOB_ID", help="the job's name (GUID) or resource id")
    show.add_argument("--output", choices=("text", "json"), default="text", help="default: text")
