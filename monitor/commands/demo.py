"""`backup-monitor demo`: the daemon against an in-process emulator, narrated for a person.

Events are shown as readable lines as they are emitted; at the end a summary compares what the
monitor emitted with the emulator's ground truth (`/_emulator/transitions`) and reads the
emulator's request statistics for the budget and 429 figures.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus

TERMINAL = frozenset({"Completed", "CompletedWithWarnings", "Failed", "Cancelled"})
ARROW = "→"


@dataclass(slots=True)
class DemoSink:
    """A sink that prints each event as a line a person can read and keeps them for the summary."""

    out: TextIO
    events: list[Mapping[str, Any]] = field(default_factory=list)

    async def emit(self, events: Sequence[Mapping[str, object]]) -> None:
        for event in events:
            self.events.append(event)
            self.out.write(describe(event) + "\n")
        self.out.flush()

    async def recent_events(self) -> list[dict[str, Any]]:
        """A demo starts afresh: nothing to read back."""
        return []

    async def aclose(self) -> None:
        self.out.flush()


def describe(event: Mapping[str, Any]) -> str:
    """One event as a line: time, vault, job type, entity, operation, transition, lag."""
    job, vault = event["job"], event["vault"]
    before = job["previous_status"] or "new"
    lag = event.get("detection_lag_s")
    lag_text = f"  lag {lag:5.1f}s" if lag is not None else ""
    errors = job.get("errors") or []
    error_text = ""
    if errors:
        code = errors[0].get("code")
        error_text = f"  [{code}] " if code else "  "
        error_text += str(errors[0].get("message") or "")
    return (
        f"{event['time'][11:19]}  {vault['name']:<13} {job['type'] or '?':<17} "
        f"{(job['entity'] or '')[:22]:<22} {(job['operation'] or '')[:21]:<21} "
        f"{before:>21} {ARROW} {job['status']:<21}{lag_text}{error_text}"
    )


def summarize(
    events: Sequence[Mapping[str, Any]],
    transitions: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Any],
    *,
    cutoff_at: datetime,
    duration_s: float,
    budget_per_s: float,
) -> list[str]:
    """The closing summary as lines.

    Args:
        events: every event the monitor emitted.
        transitions: the emulator's ground truth for the whole run.
        stats: `/_emulator/stats`.
        cutoff_at: terminal transitions after this are too recent to require (still in flight).
        duration_s: how long the daemon ran.
        budget_per_s: the monitor's read budget per subscription.
    """
    lines = ["", f"summary after {duration_s:.0f} s:"]
    outcomes = Counter(e["job"]["outcome"] or "running" for e in events)
    backfill = sum(1 for e in events if e["job"]["previous_status"] is None)
    lines.append(
        f"  {len(events)} events ({backfill} first sightings, {len(events) - backfill} changes): "
        + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    )
    live_lags = sorted(
        e["detection_lag_s"]
        for e in events
        if e["job"]["outcome"] is not None
        and e["job"]["previous_status"] is not None
        and e.get("detection_lag_s") is not None
    )
    if live_lags:
        p95 = live_lags[min(len(live_lags) - 1, round(0.95 * (len(live_lags) - 1)))]
        lines.append(
            f"  detection lag of jobs seen finishing: mean {statistics.fmean(live_lags):.1f} s, "
            f"p95 {p95:.1f} s over {len(live_lags)} jobs"
        )
    emitted = Counter(str(e["event_id"]) for e in events)
    expected = {
        event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"]))
        for t in transitions
        if t["to"] in TERMINAL and _at(t) <= cutoff_at
    }
    caught = sum(1 for eid in expected if eid in emitted)
    duplicates = sum(n - 1 for n in emitted.values() if n > 1)
    lines.append(
        f"  ground truth: {caught} of {len(expected)} terminal transitions emitted, "
        f"{duplicates} duplicate event ids"
    )
    scopes = {k: v for k, v in stats.get("by_scope", {}).items() if k != "tenant"}
    if scopes:
        peak = max(v["peak_per_s_10s"] for v in scopes.values())
        rate = sum(v["requests"] for v in scopes.values()) / max(duration_s, 1e-9) / len(scopes)
        lines.append(
            f"  ARM reads: {rate:.1f}/s per subscription on average, peak {peak:.1f}/s over 10 s, "
            f"budget {budget_per_s:.1f}/s; {stats.get('throttled_429', 0)} answered 429"
        )
    return lines


def _at(transition: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(transition["at"]).replace("Z", "+00:00"))
