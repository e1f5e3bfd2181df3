"""The ops server: /metrics, /healthz and /readyz over aiohttp.web on `[ops] listen`."""

# Rules:
# - /metrics exposes only the injected CollectorRegistry (never prometheus_client's global one).
# - /healthz answers "is the process worth keeping": the scheduler runs and its dispatch loop
#   ticked within HEALTH_STALL_S. It never depends on ARM, so an ARM outage restarts nothing.
#   Its body is the per-vault detail: every vault past its bound, its state and last problem.
# - /readyz answers "does it serve its shard": started, not stopping, checkpoints working
#   (health.readiness_problems). No single vault holds it: that would stall rolling updates.
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
from monitor.health import (
    EstateHealth,
    EstateView,
    StaleVault,
    health_problems,
    readiness_problems,
)

__all__ = ["build_ops_app", "serve_ops", "stale_detail"]

log = structlog.get_logger("monitor.ops")

MAX_NAMED_VAULTS: Final = 20
"""At most this many stale vaults are named in /readyz's body."""
MAX_DETAIL_VAULTS: Final = 200
"""At most this many stale vaults are described in /healthz's body (`stale_count` says all)."""

_REGISTRY: Final = web.AppKey("registry", CollectorRegistry)
_VIEW: Final = web.AppKey("view", EstateView)


def _named(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:MAX_NAMED_VAULTS])
    more = len(names) - MAX_NAMED_VAULTS
    return shown + (f" and {more} more" if more > 0 else "")


def stale_detail(stale: StaleVault) -> dict[str, object]:
    """One entry of /healthz's `stale_vaults`: the vault, its state, its age and bound, why."""
    vault = stale.vault
    bound = round(stale.bound_s, 1)
    # A stale vault is past its bound; in tenths it must not read as at it ("4.2 > 4.2").
    age = max(round(stale.age_s, 1), round(bound + 0.1, 1))
    return {
        "vault": vault.name,
        "id": vault.id,
        "subscription": vault.subscription_id.lower(),
        "resource_group": vault.resource_group,
        "kind": vault.kind.value,
        "state": str(stale.state),
        "age_s": age,
        "bound_s": bound,
        "problem": stale.problem,
    }


def _answer(problems: list[str], health: EstateHealth, *, detail: bool) -> web.Response:
    body: dict[str, object] = {"ok": not problems, "problems": problems}
    body["vaults"] = {str(state): n for state, n in health.vaults_by_state.items()}
    body["pending_vaults"] = len(health.pending_vaults)
    if detail:
        # Per-vault health: which vaults are past their bound, and why (never a status).
        body["stale_vaults"] = [stale_detail(s) for s in health.stale[:MAX_DETAIL_VAULTS]]
        body["stale_count"] = len(health.stale)
    else:
        stale = health.stale_vaults
        body["stale_vaults"] = list(stale[:MAX_NAMED_VAULTS])
        if stale:
            body["note"] = (
                f"{len(stale)} vaults stale ({_named(stale)}): they do not hold readiness; "
                "/healthz lists them with their state and problem"
            )
    return web.Response(
        body=orjson.dumps(body) + b"\n",
        status=200 if not problems else 503,
        content_type="application/json",
    )


async def _healthz(request: web.Request) -> web.Response:
    health = request.app[_VIEW].estate_health()
    return _answer(health_problems(health), health, detail=True)


async def _readyz(request: web.Request) -> web.Response:
    health = request.app[_VIEW].estate_health()
    return _answer(readiness_problems(health), health, detail=False)


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
