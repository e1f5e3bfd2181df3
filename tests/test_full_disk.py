"""The daemon with its events file on a real tmpfs that fills up mid-run and is freed again."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from tests.daemon import Daemon, ground_truth, judge, write_config
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


def sink_poll_failures(daemon: Daemon) -> list[dict[str, Any]]:
    """The `poll.failed` lines of polls whose events could not be written."""
    return [
        r
        for r in daemon.read_logs()
        if r.get("event") == "poll.failed"
        and str(r.get("error", "")).startswith("cannot write events to ")
    ]


async def a_retry_was_refused(http: aiohttp.ClientSession, base: str, daemon: Daemon) -> bool:
    """More failed writes counted than `poll.failed` lines: a poll.failed is logged once per run
    of failures of a vault, so some vault failed again while the volume was full."""
    return await sink_failures(http, base) > len(sink_poll_failures(daemon))


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
    """Events volume filled mid-run, then freed: failures counted and logged once each, without
    a traceback; afterwards 0 duplicated event_ids and 0 missed terminal transitions."""
    events_path = volume / "events.jsonl"
    settings = EmulatorSettings(
        world=WorldSettings(seed=9, subscriptions=2, vaults_per_subscription=4)
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            tmp_path / "state.sqlite",
            sections={"events": {"sink": events_path}},
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
            # Until some vault's retry was refused too: each counted, not each logged.
            with anyio.fail_after(60):
                while not await a_retry_was_refused(http, base, daemon):  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            ballast.unlink()
            freed_at = datetime.now(UTC)
            # Until the sink's last word is that it recovered (a small batch may have fitted in
            # the page left free, and recovered, before the volume was freed).
            await daemon.wait_until(
                lambda: last_sink_word(daemon) == "sink.recovered", timeout_s=60
            )
            # Until every vault has been polled successfully since the volume was freed.
            with anyio.fail_after(120):
                while True:
                    asked_at = datetime.now(UTC)
                    age_s = (await scrape(http, base))[
                        ("backup_monitor_oldest_poll_age_seconds", "")
                    ]
                    all_polled_since = asked_at - timedelta(seconds=age_s)
                    if all_polled_since > freed_at + timedelta(seconds=1):
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
    assert not [r for r in logs if r.get("event") == "poll.crashed"]
    assert not [r for r in logs if "exception" in r or "exc_info" in r]
    # The vaults whose batch was refused failed their poll as an ordinary failure.
    assert sink_poll_failures(daemon)


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    return (await scrape(http, base))[(name, "")]


async def test_full_state_volume_neither_loses_nor_repeats(volume: Path, tmp_path: Path) -> None:
    """State volume filled mid-run, then freed: events keep flowing, none twice; /readyz and the
    gauges say the store fails; afterwards the store holds what was emitted and nothing is
    missed."""
    events_path = tmp_path / "events.jsonl"
    state_path = volume / "state.sqlite"
    settings = EmulatorSettings(
        world=WorldSettings(seed=10, subscriptions=2, vaults_per_subscription=4)
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        config = write_config(
            tmp_path / "monitor.toml", emu, state_path, active_interval_s=1, idle_interval_s=2
        )
        daemon = Daemon(config, events_path, tmp_path / "stderr.log")
        try:
            daemon.start()
            base = await daemon.ops_url(timeout_s=30)
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            await daemon.wait_for_events(1, timeout_s=30)
            ballast = fill(volume)
            await daemon.wait_for_log("checkpoint.failed", timeout_s=60)
            emitted_when_full = len(daemon.read_events())
            with anyio.fail_after(60):
                # Saves keep failing while the world moves on and events keep going out.
                while (  # noqa: ASYNC110 - the daemon's metrics and events file are the signal
                    await metric(http, base, "backup_monitor_checkpoint_write_failures_total") < 5
                    or len(daemon.read_events()) <= emitted_when_full
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
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    events = daemon.read_events()
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
