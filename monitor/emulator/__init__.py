"""A local ARM + Recovery Services emulator: a seeded estate of vaults and jobs behind ARM's API.

Used by the tests, the demo and the benchmarks, and by users who want to test their alerting:
start it with `backup-monitor emulator`, or in-process with `running_emulator(...)`.
Rule: nothing here imports the client (`monitor.core`, `monitor.arm`), so a wire-format mistake
cannot hide on both sides.
"""

from __future__ import annotations

from monitor.emulator.catalogue import PROFILES
from monitor.emulator.faults import FaultSettings
from monitor.emulator.resource_graph import ResourceGraphSettings
from monitor.emulator.runner import Emulator, running_emulator
from monitor.emulator.settings import EmulatorSettings
from monitor.emulator.throttle import ThrottleSettings
from monitor.emulator.world import WorldSettings

__all__ = [
    "PROFILES",
    "Emulator",
    "EmulatorSettings",
    "FaultSettings",
    "ResourceGraphSettings",
    "ThrottleSettings",
    "WorldSettings",
    "running_emulator",
]
