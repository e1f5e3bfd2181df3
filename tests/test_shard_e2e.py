"""Sharding: the index from a pod's hostname, and two shard processes sharing one estate."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.commands.common import resolve_shard
from monitor.config_parse import parse_settings
from monitor.core.shard import owner
from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from monitor.errors import ConfigError
from tests.daemon import Daemon, ground_truth, judge, wait_until_caught_up, write_config


class TestResolveShard:
    def test_ordinal_of_the_pod_name(self) -> None:
        """Unset index: the StatefulSet ordinal at the end of HOSTNAME."""
        settings = parse_settings({"shard": {"count": 3}})
        assert resolve_shard(settings, "backup-monitor-2").shard.index == 2

    def test_configured_index_wins(self) -> None:
        """A configured index is kept whatever the hostname says."""
        settings = parse_settings({"shard": {"count": 3, "index": 1}})
        assert resolve_shard(settings, "backup-monitor-2").shard.index == 1

    def test_no_ordinal_means_zero(self) -> None:
        """A hostname without an ordinal (or none at all) is shard 0."""
        settings = parse_settings({"shard": {"count": 2}})
        assert resolve_shard(settings, "laptop").shard.index == 0
        assert resolve_shard(settings, "").shard.index == 0

    def test_ordinal_past_the_count_is_a_config_error(self) -> None:
        """Replicas beyond shard.count are refused, naming the key."""
        settings = parse_settings({"shard": {"count": 2}})
        with pytest.raises(ConfigError, match=r"shard\.index.*backup-monitor-5"):
            resolve_shard(settings, "backup-monitor-5")


@pytest.mark.long(seconds=8)
async def test_two_shards_emit_every_transition_once(tmp_path: Path) -> None:
    """Shards 0 and 1 of 2 against one estate: disjoint subscriptions, every terminal
    transition emitted exactly once by exactly one of them."""
    world = WorldSettings(seed=31, subscriptions=5, vaults_per_subscription=3)
    async with running_emulator(EmulatorSettings(world=world)) as emu:
        subscriptions = {s.lower() for s in emu.world.subscriptions}
        owned = {i: {s for s in subscriptions if owner(s, 2) == i} for i in (0, 1)}
        assert all(owned.values()), "pick a seed whose subscriptions land on both shards"
        daemons = []
        for index in (0, 1):
            config = write_config(
                tmp_path / f"shard{index}.toml",
                emu,
                tmp_path / f"state{index}.sqlite",
                sections={"shard": {"count": 2}},
            )
            # The index comes from the pod name, as in a StatefulSet.
            daemons.append(
                Daemon(
                    config,
                    tmp_path / f"events{index}.jsonl",
                    tmp_path / f"stderr{index}.log",
                    env={"HOSTNAME": f"backup-monitor-{index}"},
                )
            )
        try:
            for daemon in daemons:
                daemon.start()
            for daemon in daemons:  # signal only once each says it polls
                await daemon.wait_for_log("scheduler.started", timeout_s=30)
            # As before (stopped 12 s after both started, judged up to 8 s before the stop):
            # every terminal transition up to 4 s after the start emitted within 12 s of it,
            # by one shard or the other.
            cutoff = datetime.now(UTC) + timedelta(seconds=4)
            await wait_until_caught_up(
                lambda: daemons[0].read_events() + daemons[1].read_events(),
                emu,
                cutoff=cutoff,
                timeout_s=12,
            )
            for daemon in daemons:
                assert await daemon.stop(signal.SIGTERM) == 0
        finally:
            for daemon in daemons:
                daemon.kill_if_running()
        truth = await ground_truth(emu)
    per_shard = [d.read_events() for d in daemons]
    for index, events in enumerate(per_shard):
        assert events, f"shard {index} emitted nothing"
        seen = {str(e["vault"]["subscription_id"]).lower() for e in events}
        assert seen <= owned[index], f"shard {index} emitted for {seen - owned[index]}"
    missing, emitted, invented = judge(per_shard[0] + per_shard[1], truth, cutoff=cutoff)
    assert not missing, f"{len(missing)} terminal transitions emitted by neither shard"
    assert not invented, invented[:3]
    assert max(emitted.values()) == 1, {k: n for k, n in emitted.items() if n > 1}
