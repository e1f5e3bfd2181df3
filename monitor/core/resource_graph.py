"""Azure Resource Graph: the query for Backup vault jobs, and its answer's pages, parsed.

Resource Graph (`POST /providers/Microsoft.ResourceGraph/resources`) holds the jobs of every
Backup vault in its `RecoveryServicesResources` table, filterable by start time across many
subscriptions in one query (reference e.2, coverage §2.2). Its rows may lag ARM by seconds to
hours (coverage §2.3): every job parsed here is `provisional`, so the poll step reads a job it
shows running from ARM before that status counts, and the caller's query reaches
`[backup_vaults] resource_graph_margin_s` further back than the window.

What this module relies on:
- the row of a job has the ARM resource's `id`, `name` and `properties` (the flat
  `AzureBackupJob` of the ARM list), and `type` lower-cased
  (`microsoft.dataprotection/backupvaults/backupjobs`);
- the answer is `{totalRecords, count, resultTruncated ("true"/"false", a string), data
  [rows], $skipToken (when more pages exist), facets}` in the `objectArray` format;
- paging is stable only when `id` is projected and ordered on.

Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON and raise only
ParseError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from monitor.core.dataprotection import parse_backup_vault_job_item
from monitor.core.jobs import BackupJob
from monitor.core.vaults import VaultKind, parse_vault_id
from monitor.core.wire import excerpt, nested
from monitor.errors import ParseError

__all__ = [
    "BACKUP_VAULT_JOBS_TYPE",
    "MAX_ROWS_PER_PAGE",
    "GraphJobsPage",
    "backup_vault_jobs_query",
    "parse_backup_vault_jobs_answer",
    "query_body",
]

BACKUP_VAULT_JOBS_TYPE: Final = "microsoft.dataprotection/backupvaults/backupjobs"
MAX_ROWS_PER_PAGE: Final = 1000  # `$top` at most (the spec's maximum)


def backup_vault_jobs_query(since: datetime) -> str:
    """The KQL of the Backup vault jobs that started at or after `since` (whole seconds, UTC).

    Raises:
        ValueError: `since` is naive.
    """
    if since.tzinfo is None:
        raise ValueError("backup_vault_jobs_query: since must be timezone-aware")
    moment = since.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        "RecoveryServicesResources\n"
        f"| where type =~ '{BACKUP_VAULT_JOBS_TYPE}'\n"
        f"| where todatetime(properties.startTime) >= datetime({moment})\n"
        "| project id, name, type, properties\n"
        "| order by id asc"
    )


def query_body(
    query: str, subscriptions: list[str], *, skip_token: str | None, top: int = MAX_ROWS_PER_PAGE
) -> dict[str, object]:
    """The JSON body of one Resource Graph query page."""
    options: dict[str, object] = {"$top": top, "resultFormat": "objectArray"}
    if skip_token is not None:
        options["$skipToken"] = skip_token
    return {"subscriptions": subscriptions, "query": query, "options": options}


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphJobsPage:
    """One page of a Backup vault jobs query.

    Attributes:
        jobs: the rows' jobs, each `provisional`, keyed to its vault by its id.
        skipped: rows that are not Backup vault jobs, with their JSON path (`data[3].id`).
        skip_token: where the next page starts; None on the last page.
        total_records: the query's `totalRecords`, when given.
        truncated: `resultTruncated`: Resource Graph cut the result short (paging then cannot
            reach every row).
    """

    jobs: tuple[BackupJob, ...]
    skipped: tuple[ParseError, ...]
    skip_token: str | None
    total_records: int | None
    truncated: bool


def parse_backup_vault_jobs_answer(payload: object) -> GraphJobsPage:
    """Parse one page of the answer to `backup_vault_jobs_query`.

    A row that is not a Backup vault job (its id is not under `.../Microsoft.DataProtection/
    backupVaults/{v}/backupJobs/`, or it fails `parse_backup_vault_job_item`'s checks) is
    skipped and reported with its path; it never fails the page.

    Raises:
        ParseError: the payload is not an object, `data` is not a list (a `table`-format answer
            says so), or `$skipToken`, `totalRecords` or `resultTruncated` has the wrong type.
    """
    if not isinstance(payload, dict):
        raise ParseError("", f"expected an object, got {type(payload).__name__}")
    data = payload.get("data")
    if isinstance(data, dict) and "columns" in data:
        raise ParseError("data", "a table-format answer; the query asks for objectArray")
    if not isinstance(data, list):
        raise ParseError("data", "missing or not a list")
    token = payload.get("$skipToken")
    if token is not None and not isinstance(token, str):
        raise ParseError("$skipToken", f"expected a string, got {excerpt(token)}")
    total = payload.get("totalRecords")
    if total is not None and (type(total) is not int or total < 0):
        raise ParseError("totalRecords", f"expected a count, got {excerpt(total)}")
    truncated = payload.get("resultTruncated", "false")
    if isinstance(truncated, str) and truncated.lower() in ("true", "false"):
        cut = truncated.lower() == "true"
    elif isinstance(truncated, bool):
        cut = truncated
    else:
        raise ParseError("resultTruncated", f"expected 'true' or 'false', got {excerpt(truncated)}")
    jobs: list[BackupJob] = []
    skipped: list[ParseError] = []
    for index, row in enumerate(data):
        try:
            jobs.append(_row_job(row))
        except ParseError as exc:
            skipped.append(nested(f"data[{index}]", exc))
    return GraphJobsPage(
        jobs=tuple(jobs),
        skipped=tuple(skipped),
        skip_token=token or None,
        total_records=total,
        truncated=cut,
    )


def _row_job(row: object) -> BackupJob:
    if not isinstance(row, dict):
        raise ParseError("", f"expected an object, got {type(row).__name__}")
    resource_id = row.get("id")
    if not isinstance(resource_id, str):
        raise ParseError("id", "missing or not a string")
    at = resource_id.lower().rfind("/backupjobs/")
    if at < 0:
        raise ParseError("id", f"not a backup job id: {excerpt(resource_id)}")
    try:
        vault = parse_vault_id(resource_id[:at])
    except ParseError as exc:
        raise ParseError("id", exc.problem) from None
    if vault.kind is not VaultKind.BACKUP_VAULT:
        raise ParseError("id", f"not a Backup vault's job: {excerpt(resource_id)}")
    return dataclasses.replace(parse_backup_vault_job_item(row, vault.key), provisional=True)
