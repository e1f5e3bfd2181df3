"""Whether a sink's `[sinks.filter]` lets an event through; pure."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from monitor.config_sinks import SinkFilter

__all__ = ["passes"]


def _folded(value: object) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def _any(wanted: tuple[str, ...], *values: object) -> bool:
    folded = {w.casefold() for w in wanted}
    return any(_folded(v) in folded for v in values)


def passes(rule: SinkFilter, event: Mapping[str, Any]) -> bool:
    """Whether `event` (a schema v1 object) passes `rule`: every list that is set matches one
    of the event's values; an event without the field a list asks about does not pass it."""
    if rule.passes_all:
        return True
    job = event.get("job")
    job = job if isinstance(job, Mapping) else {}
    vault = event.get("vault")
    vault = vault if isinstance(vault, Mapping) else {}
    if rule.events and not _any(rule.events, event.get("event")):
        return False
    if rule.outcomes:
        outcome = job.get("outcome")
        if not _any(rule.outcomes, "none" if outcome is None and job else outcome):
            return False
    if rule.statuses and not _any(rule.statuses, job.get("status")):
        return False
    if rule.job_types and not _any(rule.job_types, job.get("type"), job.get("operation")):
        return False
    if rule.subscriptions and not _any(rule.subscriptions, vault.get("subscription_id")):
        return False
    if rule.vaults:
        names = [v.casefold() for v in (vault.get("name"), vault.get("id")) if isinstance(v, str)]
        if not any(fnmatch.fnmatchcase(n, g.casefold()) for n in names for g in rule.vaults):
            return False
    return True
