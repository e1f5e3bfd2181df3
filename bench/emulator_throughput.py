"""How many job-list pages per second the emulator serves on one core, against a bare peer.

The emulator runs in its own process pinned to one core (10 subscriptions × 100 vaults, demo
profile, throttling lifted so that every request is served); a load generator on the other core
asks for the first `backupJobs` page of random vaults over keep-alive connections. The peer is a
bare aiohttp server on the same core answering every request with one fixed page of the same size:
the ceiling of aiohttp on this machine. The ratio emulator / peer says how much the emulator's own
work (auth, throttle bookkeeping, routing, window search, rendering) costs.

Run: .venv/bin/python bench/emulator_throughput.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
API = "api-version=2025-08-01"

PEER = """
import sys, orjson
from aiohttp import web
body = orjson.dumps(orjson.loads(sys.argv[2]))
async def page(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/{tail:.*}", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


async def load(
    urls: list[str], headers: dict[str, str], seconds: float, connections: int
) -> dict[str, float]:
    """Hit random `urls` from `connections` workers for `seconds`; count and time the answers."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    rng = random.Random(1)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while (now := time.perf_counter()) < deadline:
                async with http.get(rng.choice(urls), headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - now)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "non_200": sum(n for status, n in statuses.items() if status != 200),
    }


def start_emulator() -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """The emulator on core 0 with a realistic estate, throttling lifted."""
    emulator = subprocess.Popen(EMULATOR, stdout=subprocess.PIPE, preexec_fn=lambda: pin(0))
    assert emulator.stdout is not None
    banner = orjson.loads(emulator.stdout.readline())
    return emulator, banner


async def vault_urls(banner: dict[str, str]) -> tuple[list[str], bytes]:
    """A filtered first-page URL for every vault, and one sample page."""
    headers = {"Authorization": f"Bearer {banner['token']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{banner['url']}/_emulator/world") as response:
            world = await response.json()
        vaults = [v["id"] for s in world["subscriptions"] for v in s["vaults"]]
        since = time.strftime("%Y-%m-%d %I:%M:%S %p", time.gmtime(time.time() - 86400))
        until = time.strftime("%Y-%m-%d %I:%M:%S %p", time.gmtime(time.time() + 86400))
        flt = f"startTime eq '{since}' and endTime eq '{until}'"
        urls = [f"{banner['url']}{v}/backupJobs?{API}&$filter={flt}" for v in vaults]
        async with http.get(urls[0], headers=headers) as response:
            sample = await response.read()
    return urls, sample


async def wait_until_up(url: str) -> None:
    for _ in range(200):
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                await response.read()
                return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def run_load(
    urls: list[str], headers: dict[str, str], seconds: float, connections: int
) -> dict[str, float]:
    await load(urls, headers, 1.0, connections)  # warm-up
    return await load(urls, headers, seconds, connections)


EMULATOR = [
    sys.executable, "-m", "monitor", "emulator", "--port", "0", "--subscriptions", "10",
    "--vaults-per-subscription", "100", "--profile", "estate", "--reads-per-s", "1e9",
]  # fmt: skip


def measure(seconds: float, connections: int) -> dict[str, object]:
    emulator, banner = start_emulator()
    try:
        urls, sample = asyncio.run(vault_urls(banner))
        headers = {"Authorization": f"Bearer {banner['token']}"}
        emulator_result = asyncio.run(run_load(urls, headers, seconds, connections))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

    port = 18_000 + random.Random().randrange(1000)
    peer_url = f"http://127.0.0.1:{port}/page"
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, str(port), sample.decode()], preexec_fn=lambda: pin(0)
    )
    try:
        asyncio.run(wait_until_up(peer_url))
        peer_result = asyncio.run(run_load([peer_url], {}, seconds, connections))
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return {
        "command": shlex.join(["python", "bench/emulator_throughput.py", *sys.argv[1:]]),
        "emulator_command": shlex.join(["backup-monitor", *EMULATOR[3:]]),
        "machine": machine,
        "page_bytes": len(sample),
        "jobs_per_page": len(orjson.loads(sample)["value"]),
        "emulator": emulator_result,
        "peer_bare_aiohttp": peer_result,
        "ratio_emulator_to_peer": emulator_result["per_s"] / peer_result["per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per server")
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent keep-alive connections"
    )
    args = parser.parse_args()
    pin(1)
    result = measure(args.seconds, args.connections)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "emulator_throughput.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2)
    )
    e, p = result["emulator"], result["peer_bare_aiohttp"]
    assert isinstance(e, dict)
    assert isinstance(p, dict)
    print(f"command:  {result['command']}")
    print(f"emulator: {result['emulator_command']}")
    print(f"machine:  {result['machine']}; server pinned to core 0, load generator to core 1")
    print(f"page:     {result['jobs_per_page']} jobs, {result['page_bytes']} bytes")
    print(f"{'server':<20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-200':>10}")
    for name, row in (("emulator", e), ("bare aiohttp peer", p)):
        print(
            f"{name:<20}{row['per_s']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}{row['non_200']:>10}"
        )
    print(f"ratio emulator / peer: {result['ratio_emulator_to_peer']:.2f}")


if __name__ == "__main__":
    main()
