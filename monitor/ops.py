"""The ops server: /metrics, /healthz and /readyz over aiohttp.web on `[ops] listen`."""

# Rules:
# - /metrics exposes only the injected CollectorRegistry (never prometheus_client's global one).
# - /healthz answers "is the process worth keeping": the scheduler runs and its dispatch loop
#   ticked within HEALTH_STALL_S. It never depends on ARM, so an ARM outage restarts nothing.
# - /readyz answers "is it doing its job": started, not stopping, and every watched vault
#   polled successfully within its bound (PollScheduler.estate_health). The body says why not.
# - The server is started with `port = await tg.start(serve_ops, ...)` and stops when that
#   task group is cancelled.

from __future__ import annotations

from typing import Final

import anyio
import orjson
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from monitor.config import OpsSettings
from monitor.errors import StartupError
from monitor.health import EstateHealth, EstateView

__all__ = ["HEALTH_STALL_S", "build_ops_app", "health_problems", "readiness_problems", "serve_ops"]

log = structlog.get_logger("monitor.ops")

HEALTH_STALL_S: Final = 60.0
"""/healthz fails when the dispatch loop has not ticked for this long (it ticks every ≤ 5 s)."""
MAX_NAMED_VAULTS: Final = 20
"""At most this many vault names are listed per reason in /readyz's body."""

_REGISTRY: Final = web.AppKey("registry", CollectorRegistry)
_VIEW: Final = web.AppKey("view", EstateView)


def health_problems(health: EstateHealth) -> list[str]:
    """Why the process is not alive and well (empty: healthy)."""
    if not health.started:
        return ["the scheduler is not running (starting, or stopped)"]
    if health.dispatch_age_s is None or health.dispatch_age_s > HEALTH_STALL_S:
        age = "never" if health.dispatch_age_s is None else f"{health.dispatch_age_s:.0f} s ago"
        return [f"the dispatch loop last ticked {age} (limit {HEALTH_STALL_S:.0f} s)"]
    return []


def _named(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:MAX_NAMED_VAULTS])
    more = len(names) - MAX_NAMED_VAULTS
    return shown + (f" and {more} more" if more > 0 else "")


def readiness_problems(health: EstateHealth) -> list[str]:
    """Why the monitor is not ready (empty: ready): not running, stopping, or vaults not served."""
    problems = health_problems(health)
    if health.stopping:
        problems.append("shutting down")
    stale = set(health.stale_vaults)
    waiting = tuple(n for n in health.pending_vaults if n not in stale)
    if waiting:
        problems.append(f"{len(waiting)} vaults not polled successfully yet: {_named(waiting)}")
    if health.stale_vaults:
        problems.append(
            f"{len(health.stale_vaults)} vaults stale (not polled successfully within their "
            f"bound): {_named(health.stale_vaults)}"
        )
    if health.store_problem is not None:
        problems.append(
            f"checkpoints failing ({health.unsaved_vaults} vaults unsaved: their events wait "
            f"for the store, retried with every poll): {health.store_problem}"
        )
    return problems


def _answer(
    problems: list[str], health: EstateHealth, *, ready: bool | None = None
) -> web.Response:
    body: dict[str, object] = {"ok": not problems, "problems": problems}
    if ready is not None:
        body["stale_vaults"] = list(health.stale_vaults[:MAX_NAMED_VAULTS])
        body["pending_vaults"] = len(health.pending_vaults)
        body["vaults"] = {str(state): n for state, n in health.vaults_by_state.items()}
    return web.Response(
        body=orjson.dumps(body) + b"\n",
        status=200 if not problems else 503,
        content_type="application/json",
    )


async def _healthz(request: web.Request) -> web.Response:
    health = request.app[_VIEW].estate_health()
    return _answer(health_problems(health), health)


async def _readyz(request: web.Request) -> web.Response:
    health = request.app[_VIEW].estate_health()
    return _answer(readiness_problems(health), health, ready=True)


def build_ops_app(registry: CollectorRegistry, view: EstateView) -> web.Application:
    """The aiohttp application serving /metrics, /healthz and /readyz."""
    app = web.Application()
    app[_REGISTRY] = registry
    app[_VIEW] = view
    # prometheus_client's own handler: the text format, or OpenMetrics when the scraper's Accept
    # asks for it; gzip when its Accept-Encoding does; `?name[]=` to select families.
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


async def serve_ops(
    settings: OpsSettings,
    registry: CollectorRegistry,
    view: EstateView,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ops endpoints on `settings.listen` until cancelled; reports the bound port.

    Raises:
        StartupError: the address cannot be bound (in use, not local, not permitted).
    """
    runner = web.AppRunner(build_ops_app(registry, view), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"ops.listen {settings.listen}: cannot listen: {exc}") from exc
        port = int(runner.addresses[0][1])
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("ops.listening", address=f"{host}:{port}", port=port)
        task_status.started(port)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
