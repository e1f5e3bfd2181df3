"""Which reads each vault was asked for, per principal: the ground truth of a round of polls.

A poll of a vault starts with the first page of its job list (a `backupJobs` GET without
`$skiptoken`). So the reads of a principal's first poll of a vault are every read of that vault
from its first served first page up to (not including) its second: the list's further pages,
the single-job GETs that follow, anything else on the vault's path. A read counts when it passes
the throttle (it spent a token of ARM's bucket), whatever the handler then answers; a 429 counts
as throttled and is no read. Memory is one row per (principal, vault) and per (principal, scope),
whatever the run's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ReadKind(StrEnum):
    """What a read asked a vault for."""

    FIRST_PAGE = "first_page"
    """The first page of a job list: a poll starts."""
    NEXT_PAGE = "next_page"
    """A further page of a job list (its `nextLink`)."""
    JOB = "job"
    """One job by name (its details)."""
    OTHER = "other"
    """The vault itself, its protected items, an operation's status."""


@dataclass(slots=True, kw_only=True)
class FirstPoll:
    """The reads of one principal's first poll of one vault."""

    started_at: datetime
    last_at: datetime
    reads: int = 1
    pages: int = 1
    jobs: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "started_at": self.started_at,
            "last_at": self.last_at,
            "reads": self.reads,
            "pages": self.pages,
            "jobs": self.jobs,
        }


@dataclass(slots=True, kw_only=True)
class VaultReads:
    """Everything one principal asked of one vault."""

    scope: str
    served: int = 0
    throttled: int = 0
    before_first_poll: int = 0  # reads of the vault before its first first page (a vault GET)
    lists: int = 0  # first pages: polls started
    pages: int = 0  # every job-list page, first pages included
    jobs: int = 0  # single-job GETs
    first_poll: FirstPoll | None = None
    first_poll_open: bool = False  # no second first page yet: later reads are the first poll's

    def record(self, kind: ReadKind, at: datetime) -> None:
        self.served += 1
        if kind is ReadKind.FIRST_PAGE:
            self.lists += 1
        if kind in (ReadKind.FIRST_PAGE, ReadKind.NEXT_PAGE):
            self.pages += 1
        if kind is ReadKind.JOB:
            self.jobs += 1
        poll = self.first_poll
        if poll is None:
            if kind is ReadKind.FIRST_PAGE:
                self.first_poll = FirstPoll(started_at=at, last_at=at)
                self.first_poll_open = True
            else:
                self.before_first_poll += 1
            return
        if not self.first_poll_open:
            return
        if kind is ReadKind.FIRST_PAGE:
            self.first_poll_open = False
            return
        poll.reads += 1
        poll.last_at = at
        if kind is ReadKind.NEXT_PAGE:
            poll.pages += 1
        elif kind is ReadKind.JOB:
            poll.jobs += 1


@dataclass(slots=True)
class ScopeReads:
    """One principal's reads of one scope (a subscription or `tenant`) outside any vault."""

    served: int = 0
    throttled: int = 0


class ReadLog:
    """Reads per (principal, vault) and, outside vaults, per (principal, scope)."""

    def __init__(self) -> None:
        self.vaults: dict[tuple[str, str], VaultReads] = {}  # (principal, lower-cased vault id)
        self.outside: dict[tuple[str, str], ScopeReads] = {}  # (principal, scope)

    def record(
        self,
        *,
        principal: str,
        scope: str,
        vault_key: str | None,
        kind: ReadKind,
        served: bool,
        at: datetime,
    ) -> None:
        """Count one read; `vault_key` is the lower-cased vault id, None outside any vault."""
        if vault_key is None:
            row = self.outside.setdefault((principal, scope), ScopeReads())
            if served:
                row.served += 1
            else:
                row.throttled += 1
            return
        reads = self.vaults.get((principal, vault_key))
        if reads is None:
            reads = self.vaults[(principal, vault_key)] = VaultReads(scope=scope)
        if served:
            reads.record(kind, at)
        else:
            reads.throttled += 1

    def reset(self) -> None:
        """Forget everything (a first poll after this is a first poll again)."""
        self.vaults.clear()
        self.outside.clear()
