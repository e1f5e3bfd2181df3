"""The daemon with its events file on a real tmpfs that fills up mid-run and is freed again."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from tests.daemon import Daemon, ground_truth, judge, write_config
from tests.receivers import WebhookReceiver
from tests.tmpfs import fill, mounted_tmpfs


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the events file (skipped where mounting is not permitted)."""
    with mounted_tmpfs(tmp_path / "volume", size="4m") as where:
        yield where


async def scrape(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], float]:
    """(sample name, `sink` label) → value, for the samples this test reads."""
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, sample.labels.get("sink", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def sink_failures(http: aiohttp.ClientSession, base: str) -> float:
    return (await scrape(http, base))[("backup_monitor_sink_write_failures_total", "file")]


def last_sink_word(daemon: Daemon) -> str | None:
    """The last of the sink's `sink.write_failed` and `sink.recovered` log lines."""
    words = [
        r["event"]
        for r in daemon.read_logs()
        if r.get("event") in {"sink.write_failed", "sink.recovered"}
    ]
    return words[-1] if words else None


@pytest.mark.long(seconds=11)
async def test_full_events_volume_neither_loses_nor_repeats(volume: Path, tmp_path: Path) -> None:
    """Events volume filled mid-run, then freed: the file sink's failures are counted and logged
    once each, without a traceback, polling and /readyz never notice (the outbox holds the
    events); afterwards 0 duplicated event_ids and 0 missed terminal transitions."""
    events_path = volume / "events.jsonl"
    settings = EmulatorSettings(
        world=WorldSettings(seed=9, subscriptions=2, vaults_per_subscription=4)
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            tmp_path / "state.sqlite",
            sinks=[{"type": "file", "path": events_path, "retry_max_s": 2}],
            active_interval_s=1,  # polls twice as often: the full volume is met sooner
            idle_interval_s=2,
        )
        daemon = Daemon(config, events_path, tmp_path / "stderr.log", stdout_to_events=False)
        try:
            daemon.start()
            base = await daemon.ops_url(timeout_s=30)
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            await daemon.wait_for_events(1, timeout_s=30)
            ballast = fill(volume, leave_pages=1)
            await daemon.wait_for_log("sink.write_failed", timeout_s=60)
            # Until the worker's retries were refused too: each counted, not each logged.
            with anyio.fail_after(60):
                while await sink_failures(http, base) < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            metrics = await scrape(http, base)
            assert metrics[("backup_monitor_sink_failing", "file")] == 1
            assert metrics[("backup_monitor_outbox_depth", "file")] > 0
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200, await response.text()  # a sink is not readiness
            ballast.unlink()
            freed_at = datetime.now(UTC)
            # Until the sink's last word is that it recovered (a small batch may have fitted in
            # the page left free, and recovered, before the volume was freed).
            await daemon.wait_until(
                lambda: last_sink_word(daemon) == "sink.recovered", timeout_s=60
            )
            # Until every vault has been polled successfully since the volume was freed, and
            # the sink has caught up.
            with anyio.fail_after(120):
                while True:
                    asked_at = datetime.now(UTC)
                    metrics = await scrape(http, base)
                    age_s = metrics[("backup_monitor_oldest_poll_age_seconds", "")]
                    all_polled_since = asked_at - timedelta(seconds=age_s)
                    caught_up = metrics[("backup_monitor_outbox_depth", "file")] == 0
                    if all_polled_since > freed_at + timedelta(seconds=1) and caught_up:
                        break
                    await anyio.sleep(0.5)
            counted = await sink_failures(http, base)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    events = daemon.read_events()  # refuses any line that is not a JSON event: no torn lines
    missing, emitted, invented = judge(events, truth, cutoff=all_polled_since)
    assert not missing, f"{len(missing)} terminal transitions never emitted"
    assert not invented, invented[:3]
    assert max(emitted.values()) == 1, {eid: n for eid, n in emitted.items() if n > 1}

    logs = daemon.read_logs()
    sink_rows = [r for r in logs if str(r.get("event", "")).startswith("sink.")]
    failed = [r for r in sink_rows if r["event"] == "sink.write_failed"]
    assert failed[0]["sink"] == "file"
    assert failed[0]["path"] == str(events_path)
    assert "No space left on device" in failed[0]["error"]
    # Logged once per problem: a second write_failed only after the sink had recovered.
    kinds = [r["event"] for r in sink_rows if r["event"] in {"sink.write_failed", "sink.recovered"}]
    assert all(a != b for a, b in itertools.pairwise(kinds)), kinds
    assert len(failed) < counted
    assert not [r for r in logs if r.get("event") in ("poll.crashed", "poll.failed")]
    assert not [r for r in logs if "exception" in r or "exc_info" in r]


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    return (await scrape(http, base))[(name, "")]


async def test_full_state_volume_neither_loses_nor_repeats(volume: Path, tmp_path: Path) -> None:
    """State volume filled mid-run, then freed: no poll commits meanwhile (nothing new goes
    out, nothing moves), /readyz and the gauges say the store fails; once freed, what waited
    goes out, once, at stdout and at a signed webhook alike; nothing is missed, and a restart
    delivers nothing again."""
    settings = EmulatorSettings(
        world=WorldSettings(seed=10, subscriptions=2, vaults_per_subscription=4)
    )
    with WebhookReceiver(secret=b"s3cret") as receiver:
        await _state_volume_run(volume, tmp_path, settings, receiver)


async def _state_volume_run(
    volume: Path, tmp_path: Path, settings: EmulatorSettings, receiver: WebhookReceiver
) -> None:
    events_path = tmp_path / "events.jsonl"
    state_path = volume / "state.sqlite"
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        webhook = {"type": "webhook", "url": receiver.url, "secret_env": "TEST_HOOK_SECRET"}
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            state_path,
            sinks=[{"type": "stdout"}, webhook],
            active_interval_s=1,
            idle_interval_s=2,
        )
        env = {"TEST_HOOK_SECRET": "s3cret"}
        daemon = Daemon(config, events_path, tmp_path / "stderr.log", env=env)
        try:
            daemon.start()
            base = await daemon.ops_url(timeout_s=30)
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            await daemon.wait_for_events(1, timeout_s=30)
            ballast = fill(volume)
            await daemon.wait_for_log("checkpoint.failed", timeout_s=60)
            with anyio.fail_after(60):
                # Commits keep failing while the world moves on: some vault's events wait.
                while (  # noqa: ASYNC110 - the daemon's metrics are the signal
                    await metric(http, base, "backup_monitor_checkpoint_write_failures_total") < 5
                    or await metric(http, base, "backup_monitor_unsaved_vaults") < 1
                ):
                    await anyio.sleep(0.2)
            assert await metric(http, base, "backup_monitor_checkpoint_store_failing") == 1
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert "checkpoints failing" in await response.text()
            ballast.unlink()
            freed_at = datetime.now(UTC)
            await daemon.wait_for_log("checkpoint.recovered", timeout_s=60)
            with anyio.fail_after(120):
                while True:
                    asked_at = datetime.now(UTC)
                    age_s = await metric(http, base, "backup_monitor_oldest_poll_age_seconds")
                    unsaved = await metric(http, base, "backup_monitor_unsaved_vaults")
                    all_polled_since = asked_at - timedelta(seconds=age_s)
                    if unsaved == 0 and all_polled_since > freed_at + timedelta(seconds=1):
                        break
                    await anyio.sleep(0.5)
            assert await metric(http, base, "backup_monitor_checkpoint_store_failing") == 0
            failed_saves = await metric(
                http, base, "backup_monitor_checkpoint_write_failures_total"
            )
            assert await daemon.stop() == 0
            # A restart reads the store the freed volume now holds: it emits nothing again.
            daemon.start()
            await daemon.wait_for_log("scheduler.started", count=2, timeout_s=30)
            await daemon.wait_for_log("ops.listening", count=2, timeout_s=30)
            base = await daemon.ops_url()
            with anyio.fail_after(60):  # ready: every vault polled since the restart
                while True:
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                    await anyio.sleep(0.5)
            await daemon.wait_until(
                lambda: len(receiver.event_ids()) >= len(daemon.read_events()), timeout_s=60
            )
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
        at_webhook = receiver.event_ids()
        assert receiver.bad_signatures == 0
    events = daemon.read_events()
    assert at_webhook == [e["event_id"] for e in events]  # the same events, once, in order
    missing, emitted, invented = judge(events, truth, cutoff=all_polled_since)
    assert not missing, f"{len(missing)} terminal transitions never emitted"
    assert not invented, invented[:3]
    assert max(emitted.values()) == 1, {eid: n for eid, n in emitted.items() if n > 1}
    logs = daemon.read_logs()
    assert not [r for r in logs if r.get("event") in ("poll.crashed", "poll.failed")]
    # Logged once per problem (SQLite may name the same full disk in more than one way), never
    # once per failed save.
    problems = [r["error"] for r in logs if r.get("event") == "checkpoint.failed"]
    assert problems
    assert all(a != b for a, b in itertools.pairwise(problems)), problems
    assert len(problems) < failed_saves
