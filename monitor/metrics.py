"""Every Prometheus metric of the daemon, registered on an injected CollectorRegistry."""

# Rules:
# - Never the global registry: `Metrics(registry)` registers everything on the one it is given.
# - No per-vault or per-job labels: a label's values are bounded by subscriptions, kinds,
#   statuses and states, so 10,000 vaults do not make 10,000 series.
# - Scrape-time values (vault states, staleness, running jobs) are read from an `EstateView`
#   by a Collector when Prometheus scrapes, never pushed from the hot path.
# - Every metric here is listed in docs/operations.md; tests/test_ops.py checks both ways.
# - The per-request and per-poll paths (`arm_call_finished`, `poll_finished`) look each labelled
#   child up once and keep it: children of `arm_requests`, `ratelimit_remaining` and `polls`
#   are never removed.
# - Plain Prometheus: ARM requests arrive through `arm_call_finished` (the ArmClient's
#   observer, with the kind and scope it knew), never from HTTP hooks or URL shapes.

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.core.budget import (
    SUBSCRIPTION_GLOBAL_READS,
    SUBSCRIPTION_READS,
    TENANT_READS,
    USER_QUOTA_REMAINING,
)
from monitor.core.item_watch import ItemHealth
from monitor.core.vaults import VaultRef
from monitor.events import EmittedEvent
from monitor.health import EstateView, VaultState, readiness_problems
from monitor.outbox import SinkStatus


class DeliveryView(Protocol):
    """What the sink gauges read at scrape time (`delivery.Delivery`)."""

    def status(self) -> list[SinkStatus]: ...

    @property
    def outbox_size(self) -> tuple[int, int]: ...


__all__ = [
    "POLL_RESULTS",
    "Metrics",
    "status_class",
]

PREFIX: Final = "backup_monitor"

POLL_RESULTS: Final = ("ok", "throttled", "forbidden", "not_found", "error")
LAG_PHASES: Final = ("terminal", "running", "backfill")
"""`backup_monitor_detection_lag_seconds{phase}`: since the job ended, since a first sighting
started, and the events of a vault's first poll (its history)."""
"""Values of `backup_monitor_polls_total{result}`."""
RATE_LIMIT_HEADERS: Final = {
    SUBSCRIPTION_READS: "subscription_reads",
    SUBSCRIPTION_GLOBAL_READS: "subscription_global_reads",
    TENANT_READS: "tenant_reads",
    USER_QUOTA_REMAINING: "resource_graph_user_quota",
}
"""ARM's remaining-reads headers → the `scope` label of `backup_monitor_arm_ratelimit_remaining`."""

BACKUP_VAULT_LISTING_REASONS: Final = ("backstop", "fallback", "configured")
"""Why a Backup vault's whole job history was listed (`job_sources.JobSources`)."""
ITEM_EVENT_NAMES: Final = (
    "backup_item.backup_missed",
    "backup_item.rpo_breached",
    "backup_item.rpo_restored",
    "backup_item.protection_changed",
    "backup_job.long_running",
)
"""The `event` label values of `backup_monitor_item_events_total`."""

# Lags run from a second to minutes (an idle vault's interval plus the queue in front of it).
LAG_BUCKETS_S: Final = (1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# One poll is one request, or a few pages plus detail reads, each paced by the budget.
POLL_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def status_class(status: int | None) -> str:
    """`2xx`, `3xx`, `4xx`, `429` or `5xx` for an HTTP status; `error` for no answer (None)."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class _EstateCollector(Collector):
    def __init__(self) -> None:
        self.views: list[EstateView] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        vaults = GaugeMetricFamily(f"{PREFIX}_vaults", "Watched vaults by state.", labels=["state"])
        running = GaugeMetricFamily(
            f"{PREFIX}_running_jobs", "Tracked jobs not yet in a terminal state."
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_poll_age_seconds",
            "Seconds since the least recently polled vault was last polled successfully.",
        )
        stale = GaugeMetricFamily(
            f"{PREFIX}_stale_vaults",
            "Vaults not polled successfully within their bound (/healthz describes them).",
        )
        store = GaugeMetricFamily(
            f"{PREFIX}_checkpoint_store_failing",
            "1 while checkpoint writes fail (emitted changes are kept in memory and retried).",
        )
        unsaved = GaugeMetricFamily(
            f"{PREFIX}_unsaved_vaults",
            "Vaults whose emitted changes the checkpoint store does not hold yet.",
        )
        owned = GaugeMetricFamily(
            f"{PREFIX}_shard_subscriptions",
            "Subscriptions with at least one vault this process watches.",
        )
        ready = GaugeMetricFamily(
            f"{PREFIX}_ready",
            "1 while this process serves its shard (/readyz answers 200), else 0.",
        )
        vault_stale = GaugeMetricFamily(
            f"{PREFIX}_vault_stale_seconds",
            "Seconds since each vault past its bound was last polled successfully (or first "
            "watched); only vaults past their bound have a series.",
            labels=["subscription", "resource_group", "vault", "kind", "state"],
        )
        health = self.views[-1].estate_health() if self.views else None
        for state in VaultState:
            count = health.vaults_by_state.get(state, 0) if health else 0
            vaults.add_metric([state.value], float(count))
        running.add_metric([], float(health.running_jobs if health else 0))
        age = health.oldest_poll_age_s if health else None
        oldest.add_metric([], float(age) if age is not None else 0.0)
        stale.add_metric([], float(len(health.stale_vaults) if health else 0))
        store.add_metric([], 1.0 if health is not None and health.store_problem else 0.0)
        unsaved.add_metric([], float(health.unsaved_vaults if health else 0))
        owned.add_metric([], float(health.subscriptions if health else 0))
        ready.add_metric([], 1.0 if health is not None and not readiness_problems(health) else 0.0)
        for past in health.stale if health else ():
            v = past.vault
            sub = v.subscription_id.lower()
            labels = [sub, v.resource_group, v.name, v.kind.value, past.state.value]
            vault_stale.add_metric(labels, past.age_s)
        yield from (vaults, running, oldest, stale, store, unsaved, owned, ready, vault_stale)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # values exist only at scrape time; nothing to check at registration


class _DeliveryCollector(Collector):
    def __init__(self) -> None:
        self.deliveries: list[DeliveryView] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["sink", "kind"]
        depth = GaugeMetricFamily(
            f"{PREFIX}_outbox_depth",
            "Committed events a sink has not delivered yet.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_undelivered_age_seconds",
            "Seconds since the oldest event a sink has not delivered was committed (0: none).",
            labels=labels,
        )
        failing = GaugeMetricFamily(
            f"{PREFIX}_sink_failing", "1 while a sink's deliveries fail.", labels=labels
        )
        held = GaugeMetricFamily(f"{PREFIX}_outbox_events", "Events the outbox holds.")
        size = GaugeMetricFamily(f"{PREFIX}_outbox_bytes", "Bytes of the events the outbox holds.")
        if self.deliveries:
            delivery = self.deliveries[-1]
            for status in delivery.status():
                key = [status.name, status.kind]
                depth.add_metric(key, float(status.depth))
                age.add_metric(key, status.oldest_age_s)
                failing.add_metric(key, 1.0 if status.failing else 0.0)
            count, size_bytes = delivery.outbox_size
            held.add_metric([], float(count))
            size.add_metric([], float(size_bytes))
        yield from (depth, age, failing, held, size)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class Metrics:
    """Every metric of the daemon, registered on `registry` (never the global one).

    The scheduler reports polls, events and checkpoint failures through the methods below; ARM
    requests arrive through `arm_call_finished` (an `arm_observer.ArmObserver`: pass this object
    as the ArmClient's `observer`); scrape-time values come from the `EstateView` given to
    `watch`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.polls = Counter(
            f"{PREFIX}_polls",
            "Vault polls by subscription and result.",
            ["subscription", "result"],
            registry=registry,
        )
        self.arm_requests = Counter(
            f"{PREFIX}_arm_requests",
            "ARM requests by subscription (or tenant), kind and status class.",
            ["subscription", "kind", "status_class"],
            registry=registry,
        )
        self.arm_throttled = Counter(
            f"{PREFIX}_arm_throttled",
            "ARM 429 answers by subscription (or tenant).",
            ["subscription"],
            registry=registry,
        )
        self.arm_pause = Counter(
            f"{PREFIX}_arm_throttle_pause_seconds",
            "Seconds of Retry-After asked by ARM's 429 answers, by subscription (or tenant).",
            ["subscription"],
            registry=registry,
        )
        self.ratelimit_remaining = Gauge(
            f"{PREFIX}_arm_ratelimit_remaining",
            "ARM's last x-ms-ratelimit-remaining-* value, by subscription (or tenant) and scope.",
            ["subscription", "scope"],
            registry=registry,
        )
        # The children `arm_call_finished` updates, by their label values: a label lookup per
        # request (validation, a lock) was the bulk of the observer's cost. As bounded as the
        # series themselves; no child of these two metrics is ever removed.
        self._arm_requests: dict[tuple[str, str, str], Counter] = {}
        self._remaining: dict[tuple[str, str], Gauge] = {}
        self._polls: dict[tuple[str, str], Counter] = {}  # `poll_finished`'s, the same way
        self.events = Counter(
            f"{PREFIX}_events",
            "Events emitted, by the job status they report.",
            ["status"],
            registry=registry,
        )
        self.detection_lag = Histogram(
            f"{PREFIX}_detection_lag_seconds",
            "Event time minus the moment the job reached the status (terminal or first seen).",
            ["phase"],
            buckets=LAG_BUCKETS_S,
            registry=registry,
        )
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Wall time of one vault poll, budget waits included.",
            buckets=POLL_BUCKETS_S,
            registry=registry,
        )
        self.backup_vault_listings = Counter(
            f"{PREFIX}_backup_vault_full_listings",
            "Full ARM listings of a Backup vault's job history, by reason: backstop (the slow "
            "check behind Resource Graph), fallback (Resource Graph could not be read) or "
            "configured (backup_vaults.jobs_from = 'listing').",
            ["reason"],
            registry=registry,
        )
        for reason in BACKUP_VAULT_LISTING_REASONS:
            self.backup_vault_listings.labels(reason)
        self.details_skipped_total = Counter(
            f"{PREFIX}_details_skipped",
            "Ended jobs whose details were not read because their subscription's read budget "
            "bound (poll.details_when_budget_binds): their events carry no errors, tasks or "
            "properties.",
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            f"{PREFIX}_checkpoint_write_failures",
            "Checkpoint writes that failed (the vault's events may be emitted again).",
            registry=registry,
        )
        self.sink_failures = Counter(
            f"{PREFIX}_sink_write_failures",
            "Event batches a sink failed to write (rolled back where it can; the poll retries).",
            ["sink"],
            registry=registry,
        )
        for sink in ("file", "stdout"):
            self.sink_failures.labels(sink)
        per_sink = ["sink", "kind"]
        self.delivered_events = Counter(
            f"{PREFIX}_sink_delivered_events",
            "Events a sink delivered.",
            per_sink,
            registry=registry,
        )
        self.delivery_failures = Counter(
            f"{PREFIX}_sink_delivery_failures",
            "Deliveries that failed (each is retried after a backoff).",
            per_sink,
            registry=registry,
        )
        self.delivery_retries = Counter(
            f"{PREFIX}_sink_retries",
            "Deliveries tried again after a failure.",
            per_sink,
            registry=registry,
        )
        self.dropped_events = Counter(
            f"{PREFIX}_sink_dropped_events",
            "Events a sink will never deliver: refused by the destination (reason rejected) or "
            "removed by the outbox's retention before the sink read them (reason retention).",
            [*per_sink, "reason"],
            registry=registry,
        )
        self.skipped_events = Counter(
            f"{PREFIX}_sink_skipped_events",
            "Events a sink passed over: its filter (reason filtered), or read back as already "
            "held by the destination (reason already_delivered).",
            [*per_sink, "reason"],
            registry=registry,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the version of backup-job-monitor and of Python as labels.",
            ["version", "python"],
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        for phase in LAG_PHASES:
            self.detection_lag.labels(phase)
        self._estate = _EstateCollector()
        registry.register(self._estate)
        self._delivery = _DeliveryCollector()
        self.items = Gauge(
            f"{PREFIX}_items",
            "Protected items (and backup instances) by subscription and state: fresh, overdue "
            "(recovery point older than allowed), missed (last scheduled run had no job), "
            "unprotected (stopped, paused or without a policy).",
            ["subscription", "state"],
            registry=registry,
        )
        self.item_events = Counter(
            f"{PREFIX}_item_events",
            "backup_item.* and backup_job.long_running events committed, by event type.",
            ["event"],
            registry=registry,
        )
        for event in ITEM_EVENT_NAMES:
            self.item_events.labels(event)
        self.item_recovery_point: Gauge | None = None
        self.shard_index = Gauge(
            f"{PREFIX}_shard_index",
            "This process's shard index ([shard] index, or the pod's ordinal).",
            registry=registry,
        )
        self.shard_count = Gauge(
            f"{PREFIX}_shard_count",
            "The number of shards this process was told there are ([shard] count).",
            registry=registry,
        )
        registry.register(self._delivery)
        self._subscriptions: set[str] = set()
        # vault key -> (its subscription, shared; how many of its items in each ItemHealth, in
        # ItemHealth's order): a tuple of counts, not a dict, for each of 10,000s of vaults.
        self._item_health: dict[str, tuple[str, tuple[int, ...]]] = {}

    # ------------------------------------------------------------------ scheduler hooks

    def watch(self, view: EstateView) -> None:
        """Read scrape-time values from `view` (the latest one given wins)."""
        self._estate.views[:] = [view]

    def watch_delivery(self, delivery: DeliveryView) -> None:
        """Read the sinks' scrape-time values from `delivery`; create their series at zero."""
        self._delivery.deliveries[:] = [delivery]
        for status in delivery.status():
            key = (status.name, status.kind)
            for counter in (self.delivered_events, self.delivery_failures, self.delivery_retries):
                counter.labels(*key)
            for reason in ("rejected", "retention"):
                self.dropped_events.labels(*key, reason)
            for reason in ("filtered", "already_delivered"):
                self.skipped_events.labels(*key, reason)

    # ------------------------------------------------------------------ delivery hooks

    def sink_delivered(self, sink: str, kind: str, events: int) -> None:
        """`events` reached the sink `sink` (a `delivery.DeliveryObserver`)."""
        self.delivered_events.labels(sink, kind).inc(events)

    def sink_failed(self, sink: str, kind: str) -> None:
        """A delivery to `sink` failed."""
        self.delivery_failures.labels(sink, kind).inc()

    def sink_retried(self, sink: str, kind: str) -> None:
        """A delivery to `sink` is tried again."""
        self.delivery_retries.labels(sink, kind).inc()

    def sink_dropped(self, sink: str, kind: str, reason: str, events: int) -> None:
        """`events` will never reach `sink` (`rejected` or `retention`)."""
        self.dropped_events.labels(sink, kind, reason).inc(events)

    def sink_skipped(self, sink: str, kind: str, reason: str, events: int) -> None:
        """`sink` passed over `events` (`filtered` or `already_delivered`)."""
        self.skipped_events.labels(sink, kind, reason).inc(events)

    def subscription_seen(self, subscription_id: str) -> None:
        """Create a subscription's series at zero, so rates and alerts work before a first 429."""
        sub = subscription_id.lower()
        if sub in self._subscriptions:
            return
        self._subscriptions.add(sub)
        for result in POLL_RESULTS:
            self.polls.labels(sub, result)
        self.arm_throttled.labels(sub)
        self.arm_pause.labels(sub)
        for state in ItemHealth:
            self.items.labels(sub, state.value)

    def shard_assigned(self, index: int, count: int) -> None:
        """This process is shard `index` of `count`."""
        self.shard_index.set(index)
        self.shard_count.set(count)

    def record_item_recovery_points(self) -> None:
        """Export `item_last_recovery_point_timestamp_seconds`, one series per item
        (`[protection] recovery_point_metric`); off unless called."""
        if self.item_recovery_point is None:
            self.item_recovery_point = Gauge(
                f"{PREFIX}_item_last_recovery_point_timestamp_seconds",
                "Unix time of each protected item's last recovery point (opt-in).",
                ["vault", "item"],
                registry=self.registry,
            )

    def items_evaluated(
        self,
        vault: VaultRef,
        health: Mapping[str, ItemHealth],
        recovery_points: Mapping[str, datetime | None],
    ) -> None:
        """A round of `vault`'s items ended: its items' states (and recovery points)."""
        sub = sys.intern(vault.subscription_id.lower())
        counts = dict.fromkeys(ItemHealth, 0)
        for state in health.values():
            counts[state] += 1
        self.items_forgotten(vault.key)
        self._item_health[vault.key] = (sub, tuple(counts.values()))
        for state, n in counts.items():
            self.items.labels(sub, state.value).inc(n)
        gauge = self.item_recovery_point
        if gauge is not None:
            for item, moment in recovery_points.items():
                if moment is not None:
                    gauge.labels(vault.key, item).set(moment.timestamp())

    def items_forgotten(self, vault_key: str) -> None:
        """A vault is no longer watched: its items leave the counts."""
        found = self._item_health.pop(vault_key, None)
        if found is not None:
            sub, counts = found
            for state, n in zip(ItemHealth, counts, strict=True):
                self.items.labels(sub, state.value).dec(n)

    def item_events_committed(self, events: Iterable[str]) -> None:
        """Count committed item events by type."""
        for event in events:
            self.item_events.labels(event).inc()

    def poll_finished(self, subscription_id: str, result: str, duration_s: float) -> None:
        """One poll ended with `result` (one of `POLL_RESULTS`) after `duration_s`."""
        key = (subscription_id, result)
        polls = self._polls.get(key)
        if polls is None:
            polls = self._polls[key] = self.polls.labels(subscription_id.lower(), result)
        polls.inc()
        self.poll_duration.observe(max(duration_s, 0.0))

    def events_emitted(self, events: Iterable[EmittedEvent], *, backfill: bool = False) -> None:
        """Count emitted job state changes by status (`other` for an unknown one) and record their
        lag; events of other types (items, long-running jobs) are not job state changes.

        `backfill`: the events of a vault's first poll (in this state file): their lags say how
        old the history is, not how late the monitor was, so they go to the `backfill` phase and
        leave the `terminal` and `running` quantiles alone."""
        for event in events:
            if not event.is_state_change:
                continue
            status = event.status
            self.events.labels(status.value if status.is_known else "other").inc()
            if event.detection_lag_s is not None:
                phase = "backfill" if backfill else "terminal" if status.is_terminal else "running"
                self.detection_lag.labels(phase).observe(max(event.detection_lag_s, 0.0))

    def backup_vault_listed(self, reason: str) -> None:
        """A Backup vault's whole job history was listed from ARM, for `reason`."""
        self.backup_vault_listings.labels(reason).inc()

    def details_skipped(self, count: int) -> None:
        """`count` ended jobs went out without their details: the budget bound."""
        self.details_skipped_total.inc(count)

    def checkpoint_failed(self) -> None:
        """A checkpoint write failed."""
        self.checkpoint_failures.inc()

    def sink_write_failed(self, sink: str) -> None:
        """A sink (`file` or `stdout`) failed to write a batch (a `sinks.SinkObserver`)."""
        self.sink_failures.labels(sink).inc()

    # ------------------------------------------------------------------ ARM requests

    def arm_call_finished(
        self,
        *,
        scope: str,
        kind: str,
        status: int | None,
        duration_s: float,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None,
    ) -> None:
        """Count one ARM request (an `arm_observer.ArmObserver`) and read its rate-limit headers.

        `scope` (a lower-cased subscription id, or `tenant`) is the `subscription` label;
        status None (no answer) is the `error` class. A 429 adds `retry_after_s` (0 when ARM
        gave none) to the pause counter. The duration is not recorded.
        """
        key = (scope, kind, status_class(status))
        requests = self._arm_requests.get(key)
        if requests is None:
            requests = self._arm_requests[key] = self.arm_requests.labels(*key)
        requests.inc()
        if headers is None:
            return
        for header, label in RATE_LIMIT_HEADERS.items():
            raw = headers.get(header)
            if raw is None:
                continue
            # The child first, as before: an unreadable value still shows the series.
            gauge = self._remaining.get((scope, label))
            if gauge is None:
                gauge = self._remaining[scope, label] = self.ratelimit_remaining.labels(
                    scope, label
                )
            try:
                gauge.set(float(raw))
            except ValueError:
                continue
        if status == 429:
            self.arm_throttled.labels(scope).inc()
            self.arm_pause.labels(scope).inc(retry_after_s or 0.0)
