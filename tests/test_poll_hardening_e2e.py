"""Issue 9 regressions of the poll step, as a real daemon against the emulator over real sockets.

Each test reproduces a measured failure: terminal events that went out without their details
under 5xx (item 7), and a vault blinded for 300 s by one refused nextLink (item 6).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    FaultSettings,
    WorldSettings,
    running_emulator,
)
from tests.daemon import Daemon, ground_truth, judge, write_config

TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


async def run_until_caught_up(
    daemon: Daemon,
    emu: Emulator,
    *,
    watch_s: float,
    faults: FaultSettings,
    timeout_s: float = 120.0,
) -> tuple[list[dict[str, Any]], datetime]:
    """Start; once `scheduler.started`, inject `faults` for `watch_s`, lift them, and wait until
    every terminal transition up to then was emitted; returns the events and the cutoff."""
    daemon.start()
    await daemon.wait_for_log("scheduler.started", timeout_s=60)
    emu.arm.faults.settings = faults
    await anyio.sleep(watch_s)  # the world moves on while the daemon watches it, under faults
    emu.arm.faults.settings = FaultSettings()
    cutoff = datetime.now(UTC)
    with anyio.fail_after(timeout_s):
        while True:
            missing, _, _ = judge(daemon.read_events(), await ground_truth(emu), cutoff=cutoff)
            if not missing:
                break
            await anyio.sleep(0.5)
    assert await daemon.stop() == 0
    return daemon.read_events(), cutoff


async def test_terminal_details_survive_40_percent_server_errors(tmp_path: Path) -> None:
    """With 40 % of ARM answers 5xx, every job seen ending carries its details, Failed ones
    their error codes; nothing is duplicated or invented."""
    settings = EmulatorSettings(
        world=WorldSettings(seed=91, subscriptions=1, vaults_per_subscription=16),
        page_size=10,
    )
    async with running_emulator(settings) as emu:
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "state.sqlite")
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
        try:
            events, cutoff = await run_until_caught_up(
                daemon, emu, watch_s=25, faults=FaultSettings(server_error=0.4)
            )
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    assert sum(1 for row in daemon.read_logs() if row.get("event") == "details.retrying") > 0
    seen_ending = [
        e
        for e in events
        if e["job"]["status"] in TERMINAL and e["job"]["previous_status"] is not None
    ]
    assert len(seen_ending) >= 6, "too few jobs ended while watched to say anything"
    without = [e["job"]["id"] for e in seen_ending if "properties" not in e["job"]]
    assert not without, f"{len(without)} of {len(seen_ending)} went out without details"
    failed = [e for e in events if e["job"]["status"] == "Failed"]
    assert all(e["job"].get("errors") for e in failed), "a Failed event lost its error code"
    _, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert max(emitted.values()) == 1
    assert not invented


async def test_a_refused_next_link_does_not_blind_the_vault(tmp_path: Path) -> None:
    """Foreign nextLinks on 30 % of pages: each is refused (no token sent there), and the vault
    is polled again on the normal backoff, so no terminal transition is missed for long."""
    settings = EmulatorSettings(
        world=WorldSettings(seed=92, subscriptions=1, vaults_per_subscription=6),
        page_size=2,
    )
    async with running_emulator(settings) as emu:
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "state.sqlite")
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
        try:
            # 300 s was the old pause: catching up within 90 s shows there is none.
            events, cutoff = await run_until_caught_up(
                daemon, emu, watch_s=20, faults=FaultSettings(foreign_next_link=0.3), timeout_s=90
            )
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
        assert emu.arm.foreign.requests == 0, "a request reached the foreign origin"
    refused = [
        row
        for row in daemon.read_logs()
        if row.get("event") == "poll.failed" and "refused" in str(row.get("error"))
    ]
    assert refused, "the fault never happened"
    assert max(float(row["retry_in_s"]) for row in refused) < 60
    _, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert max(emitted.values()) == 1
    assert not invented
