"""The emulator's aiohttp application: the control surface's routes first, every other path to ARM.

`arm_surface.py` answers ARM, `control.py` the token endpoints and `/_emulator`, `foreign.py` the
second origin, `ingestion.py` the Logs Ingestion API; `runner.py` binds them to ports.
"""

from __future__ import annotations

from aiohttp import web

from monitor.emulator.arm_surface import ArmSurface
from monitor.emulator.control import ControlSurface
from monitor.emulator.ingestion import LogsIngestion


def build_app(arm: ArmSurface) -> web.Application:
    """The aiohttp application: control routes first, every other path goes to ARM."""
    app = web.Application(client_max_size=1024**2)
    app.add_routes(ControlSurface(arm).routes())
    app.add_routes(LogsIngestion(arm.settings.ingestion, arm.issuer, arm.clock).routes())
    app.router.add_route("*", "/{tail:.*}", arm.handle)
    return app
