"""Issue 9 regressions of the poll step, as a real daemon against the emulator over real sockets.

Each test reproduces a measured failure: terminal events that went out without their details
under 5xx (item 7), and a vault blinded for 300 s by one refused nextLink (item 6).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    FaultSettings,
    WorldSettings,
    running_emulator,
)
from tests.daemon import Daemon, ground_truth, judge, wait_until_caught_up, write_config

TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


async def run_until_caught_up(
    daemon: Daemon,
    emu: Emulator,
    *,
    watched: Callable[[], bool],
    watch_s: float,
    faults: FaultSettings,
    timeout_s: float = 120.0,
) -> tuple[list[dict[str, Any]], datetime]:
    """Start; once `scheduler.started`, inject `faults` until `watched()` holds (within
    `watch_s`), lift them, and wait until every terminal transition up to then was emitted;
    returns the events and the cutoff."""
    daemon.start()
    await daemon.wait_for_log("scheduler.started", timeout_s=60)
    emu.arm.faults.settings = faults
    # The world moves on while the daemon watches it, under faults, until it has seen enough.
    await daemon.wait_until(watched, timeout_s=watch_s, every_s=0.2)
    emu.arm.faults.settings = FaultSettings()
    cutoff = datetime.now(UTC)
    missing = await wait_until_caught_up(
        daemon.read_events, emu, cutoff=cutoff, timeout_s=timeout_s
    )
    assert not missing, f"{len(missing)} terminal transitions not emitted within {timeout_s} s"
    assert await daemon.stop() == 0
    return daemon.read_events(), cutoff


def seen_ending(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The terminal events of jobs the daemon saw running before (not found already ended)."""
    return [
        e
        for e in events
        if e["job"]["status"] in TERMINAL and e["job"]["previous_status"] is not None
    ]


@pytest.mark.long(seconds=20)
async def test_terminal_details_survive_40_percent_server_errors(tmp_path: Path) -> None:
    """With 40 % of ARM answers 5xx, every job seen ending carries its details, Failed ones
    their error codes; nothing is duplicated or invented."""
    settings = EmulatorSettings(
        # The world at twice the speed: jobs end twice as often, so six are seen ending sooner.
        world=WorldSettings(seed=91, subscriptions=1, vaults_per_subscription=16, time_scale=2),
        page_size=10,
    )
    async with running_emulator(settings) as emu:
        # Retried reads can make the budget bind; then Completed jobs would go out without
        # details by design (docs/operations.md "Details when the budget binds").
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            tmp_path / "state.sqlite",
            sections={"poll": {"details_when_budget_binds": "all"}},
        )
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
        try:
            events, cutoff = await run_until_caught_up(
                daemon,
                emu,
                # Until six jobs were seen ending and a details read was retried.
                watched=lambda: (
                    len(seen_ending(daemon.read_events())) >= 6
                    and any(row.get("event") == "details.retrying" for row in daemon.read_logs())
                ),
                watch_s=25,
                faults=FaultSettings(server_error=0.4),
            )
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    assert sum(1 for row in daemon.read_logs() if row.get("event") == "details.retrying") > 0
    ended = seen_ending(events)
    assert len(ended) >= 6, "too few jobs ended while watched to say anything"
    without = [e["job"]["id"] for e in ended if "properties" not in e["job"]]
    assert not without, f"{len(without)} of {len(ended)} went out without details"
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
                daemon,
                emu,
                watched=lambda: len(refusals(daemon)) >= 3,  # until a few were refused
                watch_s=20,
                faults=FaultSettings(foreign_next_link=0.3),
                timeout_s=90,
            )
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
        assert emu.arm.foreign.requests == 0, "a request reached the foreign origin"
    refused = refusals(daemon)
    assert refused, "the fault never happened"
    assert max(float(row["retry_in_s"]) for row in refused) < 60
    _, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert max(emitted.values()) == 1
    assert not invented


def refusals(daemon: Daemon) -> list[dict[str, Any]]:
    """The daemon's log rows of polls that failed on a refused (foreign) nextLink."""
    return [
        row
        for row in daemon.read_logs()
        if row.get("event") == "poll.failed" and "refused" in str(row.get("error"))
    ]
