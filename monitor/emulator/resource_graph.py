"""Azure Resource Graph's query endpoint over the Backup vault jobs: rows, paging, quota, staleness.

`POST /providers/Microsoft.ResourceGraph/resources` (azure-api.md §e.2, coverage.md §2.2–2.3).
The table `RecoveryServicesResources` holds one row per retained Backup vault job
(`microsoft.dataprotection/backupvaults/backupjobs`, lower-cased as ARG writes types); Recovery
Services jobs (`microsoft.recoveryservices/vaults/backupjobs`) have no rows. The query language is
the subset in `kql.py`.

Rules:
- Staleness: every row is the job as it was `staleness_s` ago (ARG lags the resource provider; a
  job younger than that has no row yet, one that finished since shows its earlier status).
- Quota: per principal, `quota` queries per `quota_window_s` window (the doc's example: 15 per
  5 s); every answer, each page included, counts and reports `x-ms-user-quota-remaining` and
  `x-ms-user-quota-resets-after`. ARM's subscription read buckets are not charged (the path names
  no subscription; ARG's own quota is the one that binds).
- Paging: rows are ordered by id, and a `$skipToken` holds the last id returned (and a digest of
  the query and scopes), so the pages of one query stay stable while the world moves.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from monitor.emulator import kql
from monitor.emulator.backup_vaults import (
    BackupVault,
    BackupVaultEstate,
    BvJob,
    job_id_prefix,
    job_json,
    job_resource_id,
)

JSON = dict[str, Any]

API_VERSIONS = ("2024-04-01", "2022-10-01", "2021-03-01")
ROW_TYPE = "microsoft.dataprotection/backupvaults/backupjobs"
MAX_TOP = 1000  # ARG's limit of `$top`, and its default ("by default ... 1,000 records")
SCOPE = "resourcegraph"  # the read log's scope for ARG queries (their path names no subscription)
INVALID_QUERY = "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."  # noqa: E501
THROTTLED = (
    "Client application has been throttled and should not attempt to repeat the request until "
    "an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help."
)
_COLUMN_TYPES = {"properties": "object"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceGraphSettings:
    """How the Resource Graph endpoint lags and limits.

    Attributes:
        staleness_s: every row shows its job as it was this many seconds ago (0: as it is now).
        quota: queries per principal per window (each page counts).
        quota_window_s: the quota window's length.
    """

    staleness_s: float = 0.0
    quota: int = 15
    quota_window_s: float = 5.0


class ArgError(Exception):
    """Raised to answer with ARG's error shape: `BadRequest` and its `details`."""

    def __init__(self, status: int, details: list[JSON]) -> None:
        super().__init__(f"{status} {details[0].get('message')}")
        self.status, self.details = status, details


def error_body(code: str, details: list[JSON] | None, correlation_id: str, now: datetime) -> JSON:
    """ARG's error body: the support line with timestamp and correlation id, then `details`."""
    stamp = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}0Z"
    error: JSON = {
        "code": code,
        "message": (
            "Please provide below info when asking for support: "
            f"timestamp = {stamp}, correlationId = {correlation_id}."
        ),
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def _bad(message: str, code: str = "InvalidRequestContent") -> ArgError:
    return ArgError(400, [{"code": code, "message": message}])


# --------------------------------------------------------------------------- quota


@dataclass(frozen=True, slots=True)
class QuotaVerdict:
    """One query's quota answer: served or not, and the headers that say what is left."""

    allowed: bool
    remaining: int
    resets_after_s: float

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.resets_after_s))

    @property
    def headers(self) -> dict[str, str]:
        whole = math.ceil(max(self.resets_after_s, 0.0))
        hours, rest = divmod(whole, 3600)
        minutes, seconds = divmod(rest, 60)
        return {
            "x-ms-user-quota-remaining": str(self.remaining),
            "x-ms-user-quota-resets-after": f"{hours:02d}:{minutes:02d}:{seconds:02d}",
        }


@dataclass(slots=True)
class _Window:
    started: float
    used: int = 0
    requests: int = 0
    served: int = 0
    throttled: int = 0


@dataclass(slots=True)
class QuotaBook:
    """Each principal's fixed quota window: it opens at the first query after the last one ended."""

    settings: ResourceGraphSettings
    windows: dict[str, _Window] = field(default_factory=dict)

    def check(self, principal: str, now: float) -> QuotaVerdict:
        """Count one query of `principal` at monotonic time `now`."""
        s = self.settings
        window = self.windows.get(principal)
        if window is None:
            window = self.windows[principal] = _Window(started=now)
        elif now >= window.started + s.quota_window_s:
            window.started, window.used = now, 0
        window.requests += 1
        left = window.started + s.quota_window_s - now
        if window.used >= s.quota:
            window.throttled += 1
            return QuotaVerdict(False, 0, left)
        window.used += 1
        window.served += 1
        return QuotaVerdict(True, s.quota - window.used, left)

    def stats_json(self) -> JSON:
        """Queries, served and 429s per principal, and in total."""
        rows = sorted(self.windows.items())
        return {
            "by_principal": [
                {
                    "principal": p,
                    "requests": w.requests,
                    "served": w.served,
                    "throttled_429": w.throttled,
                }
                for p, w in rows
            ],
            "requests": sum(w.requests for _, w in rows),
            "throttled_429": sum(w.throttled for _, w in rows),
        }

    def reset_stats(self) -> None:
        """Zero the counters (not the windows)."""
        for w in self.windows.values():
            w.requests = w.served = w.throttled = 0


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class _Request:
    query: str
    subscriptions: tuple[str, ...] | None  # lower-cased; None: every subscription
    top: int
    skip: int
    skip_token: str | None
    table: bool


def _int_option(options: JSON, name: str, low: int, high: int | None) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"options.{name} must be an integer.", "InvalidParameter")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _bad(f"options.{name} must be {bound}, not {value}.", "InvalidParameter")
    return value


def _request(body: object) -> _Request:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _bad("The 'query' field is required.", "MissingQuery")
    if body.get("managementGroups"):
        raise _bad(
            "managementGroups scopes are not supported by the emulator; list subscriptions.",
            "UnsupportedScope",
        )
    subs = body.get("subscriptions")
    if subs is not None and (
        not isinstance(subs, list) or not all(isinstance(s, str) for s in subs)
    ):
        raise _bad("'subscriptions' must be an array of strings.")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise _bad("'options' must be an object.")
    fmt = options.get("resultFormat", "objectArray")
    if fmt not in ("objectArray", "table"):
        raise _bad(f"options.resultFormat must be objectArray or table, not {fmt!r}.")
    token = options.get("$skipToken")
    if token is not None and not isinstance(token, str):
        raise _bad("options.$skipToken must be a string.", "InvalidSkipToken")
    return _Request(
        query=query,
        subscriptions=tuple(s.lower() for s in subs) if subs else None,
        top=_int_option(options, "$top", 1, MAX_TOP) or MAX_TOP,
        skip=_int_option(options, "$skip", 0, None) or 0,
        skip_token=token or None,
        table=fmt == "table",
    )


def _digest(request: _Request) -> str:
    scopes = ",".join(sorted(request.subscriptions or ()))
    return hashlib.sha256(f"{request.query}\n{scopes}".encode()).hexdigest()[:16]


def encode_skip_token(after_id: str, digest: str) -> str:
    """An opaque `$skipToken`: the last id returned and the query's digest."""
    return base64.urlsafe_b64encode(orjson.dumps({"a": after_id, "q": digest})).decode()


def _decode_skip_token(token: str, digest: str) -> str:
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        after, owner = claims["a"], claims["q"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad("The $skipToken is invalid.", "InvalidSkipToken") from exc
    if not isinstance(after, str) or owner != digest:
        raise _bad(
            "The $skipToken is invalid or belongs to another query or scope.", "InvalidSkipToken"
        )
    return after


@dataclass(slots=True)
class _VaultIndex:
    """A vault's jobs by name (so by id), for the content `version` (pruned, count)."""

    version: tuple[int, int]
    names: list[str]
    jobs: list[BvJob]


def _start(job: BvJob) -> datetime:
    return job.start_at


def _keep(job: BvJob, query: kql.Query, as_of: datetime) -> BvJob | None:
    """The job as it was at `as_of` if that row passes the query's filters, else None."""
    then = job.as_of(as_of)
    if then is None:
        return None
    for at, inclusive in query.started_after:
        if then.start_at < at or (not inclusive and then.start_at == at):
            return None
    if not all(then.status.lower() in s for s in query.statuses):
        return None
    return then


def _row(job: BvJob, at: datetime) -> JSON:
    vault = job.vault
    return {
        "id": job_resource_id(job),
        "name": job.name,
        "type": ROW_TYPE,
        "subscriptionId": vault.subscription_id,
        "resourceGroup": vault.resource_group.lower(),
        "properties": job_json(job, at, details=False)["properties"],
    }


class ResourceGraph:
    """The endpoint's state: the Backup vault estate it reads, its settings and the quota book.

    Args:
        settings: staleness and quota.
        estate: the world's Backup vaults (read, never changed).
    """

    def __init__(self, settings: ResourceGraphSettings, estate: BackupVaultEstate) -> None:
        self.settings = settings
        self.estate = estate
        self.quota = QuotaBook(settings)
        self.queries = 0  # answered with 200
        self._indexes: dict[str, _VaultIndex] = {}  # by vault key

    def _vaults(self, subs: tuple[str, ...] | None) -> list[tuple[str, BackupVault]]:
        """The scope's vaults with their job-id prefixes, in prefix order (= id order)."""
        by_sub = self.estate.by_subscription
        chosen = (
            [v for vs in by_sub.values() for v in vs]
            if subs is None
            else [v for s in dict.fromkeys(subs) for v in by_sub.get(s, [])]
        )
        return sorted(((job_id_prefix(v), v) for v in chosen), key=lambda pair: pair[0])

    def _by_name(self, vault: BackupVault) -> _VaultIndex:
        # Jobs are only appended and pruned from the front: (pruned, count) names the content.
        version = (vault.pruned, len(vault.jobs))
        index = self._indexes.get(vault.key)
        if index is None or index.version != version:
            jobs = sorted(vault.jobs, key=lambda j: j.name)
            index = _VaultIndex(version, [j.name for j in jobs], jobs)
            self._indexes[vault.key] = index
        return index

    def _walk(
        self, vaults: list[tuple[str, BackupVault]], after: str | None, descending: bool
    ) -> Iterator[tuple[str, BvJob]]:
        """Every job of `vaults` in id order (reversed when `descending`), after `after`."""
        for prefix, vault in reversed(vaults) if descending else vaults:
            index = self._by_name(vault)
            lo, hi = 0, len(index.names)
            if after is not None:
                if after.startswith(prefix):
                    name = after[len(prefix) :]
                    if descending:
                        hi = bisect.bisect_left(index.names, name)
                    else:
                        lo = bisect.bisect_right(index.names, name)
                elif (prefix < after) != descending:
                    continue  # every id of this vault is on the wrong side of `after`
            order = range(hi - 1, lo - 1, -1) if descending else range(lo, hi)
            for i in order:
                yield prefix + index.names[i], index.jobs[i]

    def _count(
        self, vaults: list[tuple[str, BackupVault]], query: kql.Query, as_of: datetime
    ) -> int:
        """`totalRecords`: by the start-ordered job lists, unless statuses must be looked at."""
        total = 0
        for _, vault in vaults:
            if query.statuses:
                total += sum(1 for job in vault.jobs if _keep(job, query, as_of) is not None)
                continue
            jobs = vault.jobs
            hi = bisect.bisect_right(jobs, as_of, key=_start)
            lo = 0
            for at, inclusive in query.started_after:
                cut = bisect.bisect_left if inclusive else bisect.bisect_right
                lo = max(lo, cut(jobs, at, key=_start))
            total += max(hi - lo, 0)
        return total

    def answer(self, body: object, *, now: datetime, visible: frozenset[str] | None = None) -> JSON:
        """The 200 body for one query request.

        Args:
            visible: the lower-cased subscriptions the caller's tenant may read (its own and
                those delegated to it); None: every subscription. A query sees only these,
                whatever subscriptions it names.

        Raises:
            ArgError: a bad request or a query outside the subset (400).
        """
        request = _request(body)
        try:
            query = kql.parse(request.query)
        except kql.KqlError as exc:
            raise ArgError(
                400,
                [
                    {"code": "InvalidQuery", "message": INVALID_QUERY},
                    {
                        "code": "ParserFailure",
                        "message": exc.message,
                        "line": exc.line,
                        "characterPositionInLine": exc.column,
                        "token": exc.token,
                    },
                ],
            ) from exc
        digest = _digest(request)
        after = _decode_skip_token(request.skip_token, digest) if request.skip_token else None
        as_of = now - timedelta(seconds=self.settings.staleness_s)
        top = request.top
        page: list[tuple[str, BvJob]] = []
        more = False
        total = 0
        if all(ROW_TYPE in types for types in query.types):
            subs = request.subscriptions
            if visible is not None:
                subs = tuple(s for s in (subs or sorted(visible)) if s in visible)
            vaults = self._vaults(subs)
            total = self._count(vaults, query, as_of)
            skip = request.skip if after is None else 0
            for row_id, job in self._walk(vaults, after, query.descending):
                then = _keep(job, query, as_of)
                if then is None:
                    continue
                if skip:
                    skip -= 1
                elif len(page) == top:
                    more = True
                    break
                else:
                    page.append((row_id, then))
        columns = query.columns
        data_rows = [_row(job, as_of) for _, job in page]
        result: JSON = {"totalRecords": total, "count": len(page)}
        # Without `id` ARG cannot page: it truncates instead (azure-api.md §e.2).
        truncated = more and "id" not in columns
        result["resultTruncated"] = "true" if truncated else "false"
        if more and not truncated:
            result["$skipToken"] = encode_skip_token(page[-1][0], digest)
        if request.table:
            result["data"] = {
                "columns": [{"name": c, "type": _COLUMN_TYPES.get(c, "string")} for c in columns],
                "rows": [[r[c] for c in columns] for r in data_rows],
            }
        else:
            result["data"] = [{c: r[c] for c in columns} for r in data_rows]
        result["facets"] = []
        self.queries += 1
        return result
