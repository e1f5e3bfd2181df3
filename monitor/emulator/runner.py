"""Starts the emulator's two servers (ARM and the foreign origin) and stops them again."""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from aiohttp import web

from monitor.emulator.arm_surface import ArmSurface
from monitor.emulator.clock import WallClock, WorldClock
from monitor.emulator.faults import FaultInjector
from monitor.emulator.foreign import build_foreign_app
from monitor.emulator.server import build_app
from monitor.emulator.settings import EmulatorSettings
from monitor.emulator.throttle import Throttle
from monitor.emulator.world import World


@dataclass(slots=True)
class Emulator:
    """A running emulator: where it listens, the static token, and its live parts."""

    arm: ArmSurface
    url: str
    foreign_url: str

    @property
    def token(self) -> str:
        """A long-lived bearer token for the principal `emulator-static-user`."""
        return self.arm.static_token

    @property
    def tenant_id(self) -> str:
        return self.arm.world.tenant_id

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        """Every tenant of the run, tenant 0 (`tenant_id`) first (see tenancy.py)."""
        return self.arm.tenancy.tenant_ids

    @property
    def world(self) -> World:
        return self.arm.world

    @property
    def faults(self) -> FaultInjector:
        return self.arm.faults

    @property
    def throttle(self) -> Throttle:
        return self.arm.throttle

    def banner(self) -> dict[str, str]:
        """The JSON line `backup-monitor emulator` prints first: everything a client needs."""
        return {
            "url": self.url,
            "token": self.token,
            "tenant_id": self.tenant_id,
            "client_secret": self.arm.settings.client_secret,
            "identity_endpoint": f"{self.url}/msi/token",
            "identity_header": self.arm.settings.identity_header,
            "foreign_url": self.foreign_url,
        }


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _start(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    address = runner.addresses[0]
    return runner, int(address[1])


@asynccontextmanager
async def running_emulator(
    settings: EmulatorSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    clock: WorldClock | None = None,
) -> AsyncIterator[Emulator]:
    """Serve the emulator on `host:port` (0 picks a free port) until the block exits.

    Args:
        settings: the world, limits and faults; defaults to a small demo estate.
        ssl_context: a server-side TLS context; plain HTTP when None.
        clock: the world's time source; the wall clock when None.
    """
    arm = ArmSurface(settings or EmulatorSettings(), clock or WallClock())
    scheme = "https" if ssl_context else "http"
    foreign_runner, foreign_port = await _start(
        build_foreign_app(arm.foreign), host, 0, ssl_context
    )
    try:
        runner, bound = await _start(build_app(arm), host, port, ssl_context)
        try:
            arm.base_url = _url(scheme, host, bound)
            arm.foreign.url = _url(scheme, host, foreign_port)
            yield Emulator(arm=arm, url=arm.base_url, foreign_url=arm.foreign.url)
        finally:
            await runner.cleanup()
    finally:
        await foreign_runner.cleanup()


async def serve_until_signalled(
    settings: EmulatorSettings,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    announce: Callable[[dict[str, str]], None],
    clock: WorldClock | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; `announce` receives the banner once the port is bound.

    Args:
        clock: the world's time source (a `ScaledClock` to run faster); the wall clock when None.
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with running_emulator(
            settings, host=host, port=port, ssl_context=ssl_context, clock=clock
        ) as emu:
            announce(emu.banner())
            async for _ in signals:
                break
