"""The ops server and metrics: documented metrics in a live scrape, /healthz, /readyz."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import OpsSettings
from monitor.core.jobs import JobStatus
from monitor.core.vaults import parse_vault_id
from monitor.emulator import Emulator, EmulatorSettings, WorldSettings, running_emulator
from monitor.errors import StartupError
from monitor.events import EmittedEvent
from monitor.health import EstateHealth, StaleVault, VaultState, readiness_problems
from monitor.metrics import Metrics, status_class
from monitor.ops import serve_ops, stale_detail
from tests.daemon import Daemon, write_config
from tests.promtool import assert_alert_selects

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
SUB = "11111111-1111-1111-1111-111111111111"
VAULT_PREFIX = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults"


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name → (type, label names), from the metric table of docs/operations.md."""
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`backup_monitor_"):
            labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def scraped(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Documented-style name → (type, label names seen) of every backup_monitor_ family."""
    found: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        # The text format shows a counter's `_created` series as a gauge family of its own.
        if not family.name.startswith("backup_monitor_") or family.name.endswith("_created"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels.update(k for k in sample.labels if k != "le")
        found[name] = (family.type, labels)
    return {name: (kind, frozenset(labels)) for name, (kind, labels) in found.items()}


class TestMetrics:
    def test_status_classes(self) -> None:
        """429 has its own class; no answer is `error`."""
        assert [status_class(s) for s in (200, 404, 429, 503, None)] == [
            "2xx",
            "4xx",
            "429",
            "5xx",
            "error",
        ]

    def test_throttled_response_counts_pause_and_remaining(self) -> None:
        """A 429 counts once and adds its Retry-After; remaining-reads headers become gauges."""
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        headers = CIMultiDict(
            {"Retry-After": "7", "x-ms-ratelimit-remaining-subscription-reads": "12"}
        )
        metrics.arm_call_finished(
            scope=SUB,
            kind="jobs_list",
            status=429,
            duration_s=0.2,
            headers=headers,
            retry_after_s=7.0,
        )
        value = registry.get_sample_value
        assert value("backup_monitor_arm_throttled_total", {"subscription": SUB}) == 1
        assert value("backup_monitor_arm_throttle_pause_seconds_total", {"subscription": SUB}) == 7
        labels = {"subscription": SUB, "scope": "subscription_reads"}
        assert value("backup_monitor_arm_ratelimit_remaining", labels) == 12
        labels = {"subscription": SUB, "kind": "jobs_list", "status_class": "429"}
        assert value("backup_monitor_arm_requests_total", labels) == 1

    def test_events_count_by_status_and_lag_by_phase(self) -> None:
        """Known statuses are their own label, others `other`; a lag goes to its phase, >= 0."""
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.events_emitted(
            [
                EmittedEvent(status=JobStatus.COMPLETED, detection_lag_s=2.5),
                EmittedEvent(status=JobStatus.IN_PROGRESS, detection_lag_s=-1.0),
                EmittedEvent(status=JobStatus.of("Paused")),
                EmittedEvent(status=JobStatus.COMPLETED),
            ]
        )
        value = registry.get_sample_value
        assert value("backup_monitor_events_total", {"status": "Completed"}) == 2
        assert value("backup_monitor_events_total", {"status": "InProgress"}) == 1
        assert value("backup_monitor_events_total", {"status": "other"}) == 1
        terminal, running = {"phase": "terminal"}, {"phase": "running"}
        assert value("backup_monitor_detection_lag_seconds_count", terminal) == 1
        assert value("backup_monitor_detection_lag_seconds_sum", terminal) == 2.5
        assert value("backup_monitor_detection_lag_seconds_count", running) == 1
        assert value("backup_monitor_detection_lag_seconds_sum", running) == 0.0

    def test_a_first_polls_lags_go_to_backfill(self) -> None:
        """The lags of a vault's first poll (its history) leave terminal and running alone."""
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.events_emitted(
            [
                EmittedEvent(status=JobStatus.COMPLETED, detection_lag_s=35_392.0),
                EmittedEvent(status=JobStatus.IN_PROGRESS, detection_lag_s=1_375.0),
            ],
            backfill=True,
        )
        value = registry.get_sample_value
        count = "backup_monitor_detection_lag_seconds_count"
        assert value(count, {"phase": "backfill"}) == 2
        assert value(count, {"phase": "terminal"}) == value(count, {"phase": "running"}) == 0
        assert value("backup_monitor_events_total", {"status": "Completed"}) == 1

    def test_no_answer_and_a_bare_429(self) -> None:
        """No answer is the `error` class; a 429 without Retry-After pauses 0 s in the counter."""
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.subscription_seen(SUB)
        for status, headers in ((None, None), (429, CIMultiDict())):
            metrics.arm_call_finished(
                scope=SUB,
                kind="vault_get",
                status=status,
                duration_s=1.0,
                headers=headers,
                retry_after_s=None,
            )
        value = registry.get_sample_value
        labels = {"subscription": SUB, "kind": "vault_get"}
        assert value("backup_monitor_arm_requests_total", {**labels, "status_class": "error"}) == 1
        assert value("backup_monitor_arm_requests_total", {**labels, "status_class": "429"}) == 1
        assert value("backup_monitor_arm_throttled_total", {"subscription": SUB}) == 1
        assert value("backup_monitor_arm_throttle_pause_seconds_total", {"subscription": SUB}) == 0

    def test_own_registry_only(self) -> None:
        """Two Metrics on two registries do not collide (nothing goes to the global registry)."""
        first, second = CollectorRegistry(), CollectorRegistry()
        Metrics(first)
        Metrics(second)
        assert b"backup_monitor_build_info" in generate_latest(first)


def health(**overrides: Any) -> EstateHealth:
    base: dict[str, Any] = {
        "started": True,
        "stopping": False,
        "dispatch_age_s": 1.0,
        "vaults_by_state": {VaultState.OK: 2},
        "running_jobs": 0,
        "oldest_poll_age_s": 3.0,
    }
    return EstateHealth(**{**base, **overrides})


class TestReadiness:
    def test_ready_when_all_vaults_fresh(self) -> None:
        """Started, ticking, nothing pending or stale: ready."""
        assert readiness_problems(health()) == []

    def test_vaults_never_hold_readiness(self) -> None:
        """Stale and pending vaults are not reasons; stopping and a failing store are."""
        stale = tuple(
            StaleVault(
                vault=parse_vault_id(f"{VAULT_PREFIX}/{n}"),
                state=VaultState.FORBIDDEN,
                age_s=900.0,
                bound_s=120.0,
            )
            for n in ("a", "b")
        )
        assert readiness_problems(health(stale=stale, pending_vaults=("b", "c"))) == []
        problems = readiness_problems(health(stopping=True, store_problem="disk full"))
        assert problems == [
            "shutting down",
            "checkpoints failing (0 vaults unsaved: their events wait for the store, retried "
            "with every poll): disk full",
        ]

    def test_stalled_dispatch_is_unhealthy(self) -> None:
        """A dispatch loop silent for minutes fails health, hence readiness too."""
        assert readiness_problems(health(dispatch_age_s=600.0))

    async def test_port_in_use_is_a_startup_error(self) -> None:
        """Binding a taken port fails with a message naming ops.listen."""
        registry = CollectorRegistry()

        class View:
            def estate_health(self) -> EstateHealth:
                return health()

        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_ops, OpsSettings(listen="127.0.0.1:0"), registry, View())
            with pytest.raises(StartupError, match=r"ops\.listen"):
                await serve_ops(OpsSettings(listen=f"127.0.0.1:{port}"), registry, View())
            tg.cancel_scope.cancel()


@given(bound=st.floats(0.5, 7200), past=st.floats(1e-9, 0.2))
@settings(max_examples=200, deadline=None)
def test_stale_detail_reads_past_its_bound(bound: float, past: float) -> None:
    """In /healthz's tenths a stale vault's age always reads above its bound, never equal
    to it (a vault 4.2 s old against a 4.17 s bound once read "4.2 > 4.2")."""
    stale = StaleVault(
        vault=parse_vault_id(f"{VAULT_PREFIX}/a"),
        state=VaultState.FORBIDDEN,
        age_s=bound + past,
        bound_s=bound,
    )
    detail = stale_detail(stale)
    assert detail["age_s"] > detail["bound_s"]  # type: ignore[operator]
    assert abs(detail["age_s"] - stale.age_s) <= 0.15  # type: ignore[operator]
    assert abs(detail["bound_s"] - bound) <= 0.05  # type: ignore[operator]


async def test_vault_states_are_plain_labels_and_keys() -> None:
    """Each VaultState is its `state` label on /metrics and its key in /readyz's `vaults`."""
    registry = CollectorRegistry()
    states = {VaultState.OK: 2, VaultState.FORBIDDEN: 1}

    class View:
        def estate_health(self) -> EstateHealth:
            return health(vaults_by_state=states)

    Metrics(registry).watch(View())
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_ops, OpsSettings(listen="127.0.0.1:0"), registry, View())
        async with aiohttp.ClientSession() as http:
            status, body = await get(http, f"http://127.0.0.1:{port}/readyz")
        tg.cancel_scope.cancel()
    assert status == 200
    assert orjson.loads(body)["vaults"] == {"ok": 2, "forbidden": 1}
    value = registry.get_sample_value
    labels = ["pending", "ok", "failing", "forbidden"]
    assert [value("backup_monitor_vaults", {"state": s}) for s in labels] == [0, 2, 0, 1]


async def test_metrics_speak_openmetrics_and_gzip_when_asked() -> None:
    """/metrics answers the text format by default, OpenMetrics (ending `# EOF`) when the
    scraper's Accept asks for it, gzip when its Accept-Encoding does, and `name[]` selects."""
    registry = CollectorRegistry()

    class View:
        def estate_health(self) -> EstateHealth:
            return health()

    Metrics(registry).watch(View())
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_ops, OpsSettings(listen="127.0.0.1:0"), registry, View())
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            async with http.get(url, headers={"Accept-Encoding": "identity"}) as plain:
                plain_type, plain_body = plain.headers["Content-Type"], await plain.read()
            openmetrics = {
                "Accept": "application/openmetrics-text; version=1.0.0",
                "Accept-Encoding": "identity",
            }
            async with http.get(url, headers=openmetrics) as om:
                om_type, om_body = om.headers["Content-Type"], await om.read()
            async with http.get(url, headers={"Accept-Encoding": "gzip"}) as zipped:
                encoding, zipped_body = zipped.headers.get("Content-Encoding"), await zipped.read()
            selected = f"{url}?name[]=backup_monitor_build_info"
            async with http.get(selected, headers={"Accept-Encoding": "identity"}) as one:
                one_body = (await one.read()).decode()
        tg.cancel_scope.cancel()
    assert plain_type.startswith("text/plain; version=0.0.4")
    assert b"backup_monitor_build_info" in plain_body
    assert om_type.startswith("application/openmetrics-text")
    assert om_body.rstrip().endswith(b"# EOF")
    assert encoding == "gzip"
    assert gzip.decompress(zipped_body) == plain_body
    assert {f.name for f in text_string_to_metric_families(one_body)} == {
        "backup_monitor_build_info"
    }


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def wait_for_status(
    http: aiohttp.ClientSession,
    url: str,
    status: int,
    timeout_s: float,
    *,
    mentioning: tuple[str, ...] = (),
) -> str:
    """Poll `url` until it answers `status` with a body that mentions every one of `mentioning`."""
    with anyio.fail_after(timeout_s):
        while True:
            got, body = await get(http, url)
            if got == status and all(word in body for word in mentioning):
                return body
            await anyio.sleep(0.25)


@pytest.fixture
async def emulator() -> Any:
    settings = EmulatorSettings(
        world=WorldSettings(seed=13, subscriptions=2, vaults_per_subscription=4)
    )
    async with running_emulator(settings) as emu:
        yield emu


# Families with a series only under some condition: their labels are checked where it holds.
CONDITIONAL_METRICS = frozenset({"backup_monitor_vault_stale_seconds"})


async def test_daemon_metrics_health_and_readiness(emulator: Emulator, tmp_path: Path) -> None:
    """Against the emulator: every documented metric in the scrape (and nothing undocumented);
    /readyz 200 after the first full poll and still 200 with two vaults forbidden and one
    deleted; /healthz and `backup_monitor_vault_stale_seconds` name the forbidden ones."""
    config = write_config(
        tmp_path / "monitor.toml",
        emulator,
        tmp_path / "state.sqlite",
        active_interval_s=1,
        idle_interval_s=2,
        sections={"azure": {"request_timeout_s": 2}},
    )
    daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
    forbidden = list(emulator.world.vaults.values())[:2]
    deleted = list(emulator.world.vaults.values())[2]
    try:
        daemon.start()
        base = await daemon.ops_url()
        async with aiohttp.ClientSession() as http:
            await wait_for_status(http, f"{base}/readyz", 200, timeout_s=20)
            assert (await get(http, f"{base}/healthz"))[0] == 200
            # A few more polls, so every labelled series exists: within the 2 s they used to
            # be given, until the scrape shows every documented family with its labels.
            documented = documented_metrics()
            always = {n: row for n, row in documented.items() if n not in CONDITIONAL_METRICS}
            with anyio.move_on_after(2):
                while True:
                    status, text = await get(http, f"{base}/metrics")
                    seen = scraped(text)
                    if all(seen.get(name) == row for name, row in always.items()):
                        break
                    await anyio.sleep(0.1)
            assert status == 200
            assert len(documented) >= 14
            missing = sorted(set(documented) - set(seen))
            assert not missing, f"documented but not exposed: {missing}"
            undocumented = sorted(set(seen) - set(documented))
            assert not undocumented, f"exposed but not in docs/operations.md: {undocumented}"
            for name, (kind, labels) in always.items():
                assert seen[name] == (kind, labels), name
            subscriptions = len({v.subscription_id for v in emulator.world.vaults.values()})
            assert f"backup_monitor_shard_subscriptions {float(subscriptions)}" in text
            assert "backup_monitor_shard_index 0.0" in text
            assert "backup_monitor_shard_count 1.0" in text
            assert "backup_monitor_ready 1.0" in text

            for vault in forbidden:
                async with http.post(
                    f"{emulator.url}/_emulator/vaults/forbid", json={"id": vault.id}
                ):
                    pass
            async with http.delete(f"{emulator.url}/_emulator/vaults", params={"id": deleted.id}):
                pass
            names = tuple(v.name for v in forbidden)
            # Readiness holds throughout, while /healthz's detail turns to the stale vaults.
            with anyio.fail_after(30):
                while True:
                    ready, ready_body = await get(http, f"{base}/readyz")
                    assert ready == 200, ready_body
                    alive, body = await get(http, f"{base}/healthz")
                    assert alive == 200, body
                    detail = orjson.loads(body)
                    if {s["vault"] for s in detail["stale_vaults"]} == set(names):
                        break
                    await anyio.sleep(0.25)
            assert deleted.name not in body  # a 404 drops the vault: it is not stale
            assert detail["stale_count"] == 2
            for stale in detail["stale_vaults"]:
                assert stale["state"] == "forbidden"
                assert stale["age_s"] > stale["bound_s"]
                assert "403" in stale["problem"] or "AuthorizationFailed" in stale["problem"]
            assert all(name in orjson.loads(ready_body)["note"] for name in names)
            text = (await get(http, f"{base}/metrics"))[1]
            assert 'backup_monitor_vaults{state="forbidden"} 2.0' in text
            assert "backup_monitor_ready 1.0" in text
            kind, labels = documented["backup_monitor_vault_stale_seconds"]
            assert scraped(text)["backup_monitor_vault_stale_seconds"] == (kind, labels)
            stale_series = {
                s.labels["vault"]: s.labels
                for family in text_string_to_metric_families(text)
                if family.name == "backup_monitor_vault_stale_seconds"
                for s in family.samples
            }
            assert set(stale_series) == set(names)
            assert {s["state"] for s in stale_series.values()} == {"forbidden"}
            # The shipped alert's expression, held for its `for:` over this scrape, fires for
            # exactly the forbidden vaults (not the deleted one, not the healthy ones).
            scrape = {"namespace": "backup-monitor", "pod": "backup-monitor-0"}
            assert_alert_selects(
                text,
                "BackupMonitorVaultStale",
                [{**labels, **scrape, "severity": "warning"} for labels in stale_series.values()],
                tmp_path,
                extra_labels=scrape,
            )
        assert await daemon.stop() == 0
    finally:
        daemon.kill_if_running()


def test_dashboard_uses_documented_metrics() -> None:
    """Every metric the Grafana dashboard queries is in docs/operations.md's table."""
    dashboard = (DOCS.parent.parent / "config" / "grafana" / "backup-job-monitor.json").read_text()
    used = {re.sub(r"_bucket$", "", n) for n in re.findall(r"backup_monitor_[a-z_]+", dashboard)}
    assert used
    assert used <= set(documented_metrics()), used - set(documented_metrics())
