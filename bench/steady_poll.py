"""The steady poll against its floor: one page read again and again (prints, asserts nothing).

One estate emulator (HTTPS, a throwaway CA, pinned to core 0; this process to core 1). Two
parties read the same vault's backupJobs page `--reads` times each, in interleaved blocks:

- OURS: `ArmClient.list_jobs` with the daemon's metrics observer (`Metrics`), given the jobs it
  already knows (a `JobTable`, as the poll step: their ended jobs are not parsed again), then
  `diff_jobs` against them (the steady poll: nothing changed, nothing rendered);
- the FLOOR: a bare `session.get` of the same URL through the same session (`open_session`: its
  connector, SSL context and keep-alive pool), `orjson.loads` of the body, nothing else.

Figures: process CPU time per read, and ours / floor. `--profile` runs ours once more under
cProfile and prints the top functions by own time, and the floor's, for the same reads.

`--instructions` counts instead of timing: it runs this file under `valgrind --tool=callgrind`
four times (each party alone, `--only`, for `--reads` and for 3 × `--reads` reads after the
warm-up; the emulator, a child, is not counted) and prints each party's instructions per read,
the difference of the two counts over the extra reads, and their ratio. The count repeats to
within 0.1 % whatever else the machine is doing, where one timed run of the ratio moves by
tenths; it counts no cache miss or wait, so it is the CPU figure's stable companion, not the
bar. The world runs at time scale 1 there (under valgrind a read takes ~30× as long, and the
page must not change).

Run: .venv/bin/python bench/steady_poll.py [--reads 1200] [--profile]
     PACE_S=0.04 .venv/bin/python bench/steady_poll.py --reads 300   (both paced at 25 reads/s)
     .venv/bin/python bench/steady_poll.py --instructions --reads 200   (~3 minutes; valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import random
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import orjson
import structlog
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.estate import UNPACED, make_tls, mint, our_client, pin, start_emulator  # noqa: E402
from monitor.arm_http import open_session  # noqa: E402
from monitor.clock import SystemClock  # noqa: E402
from monitor.config import AzureSettings, BudgetSettings  # noqa: E402
from monitor.core.diff import JobSnapshot, JobTable, diff_jobs  # noqa: E402
from monitor.core.wire import build_jobs_filter  # noqa: E402

BLOCKS = 6
"""Interleaved blocks of each party (ours, floor, ours, floor, ...)."""

SORT = os.environ.get("PROFILE_SORT", "tottime")
PACE_S = float(os.environ.get("PACE_S", "0"))
"""`PACE_S=0.04`: both parties read at most every 0.04 s (ours through its budget at 1/PACE_S
reads/s, the floor by sleeping), as the daemon's budget paces it; 0 (default): back to back."""


async def measure(url: str, ca: Path, reads: int, profile: bool, only: str | None) -> None:
    import aiohttp

    ssl_context = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        ours_token = await mint(http, url, "steady-ours")
        floor_token = await mint(http, url, "steady-floor")
        async with http.get(f"{url}/_emulator/world") as response:
            world = await response.json()
    sub = world["subscriptions"][0]["id"]
    clock = SystemClock()
    rng = random.Random(1)
    azure = AzureSettings(
        arm_endpoint=f"{url}/", credential="static", static_token=ours_token, ca_bundle=ca
    )
    now = datetime.now(UTC)
    start, end = now - timedelta(days=3), now + timedelta(minutes=5)
    async with open_session(azure, ssl_context) as session:
        budget = (
            UNPACED if not PACE_S else BudgetSettings(read_fraction=1.0, reads_per_s=1 / PACE_S)
        )
        arm = our_client(session, azure, ours_token, budget=budget, clock=clock, rng=rng)
        # One page: the first vault whose window holds at most a page (20 jobs), preferably
        # one with no job running (an idle vault's steady poll: its answers repeat, byte for
        # byte, and are not decoded again: monitor/arm_quiet_pages.py).
        pages = [(v, await arm.list_jobs(v, start, end)) for v in await arm.list_vaults(sub)]
        one_page = [(v, jobs) for v, jobs in pages if len(jobs) <= 20]
        idle = [(v, jobs) for v, jobs in one_page if all(j.status.is_terminal for j in jobs)]
        vault, jobs = (idle or one_page)[0]
        print(f"vault {vault.name}: {'idle' if idle else 'a job running'}")
        known = JobTable(JobSnapshot.of(job) for job in jobs)  # as the poll step keeps them
        flt = quote(build_jobs_filter(start, end), safe="")
        link = URL(
            f"{url}{vault.id}/backupJobs?api-version={azure.api_version}&$filter={flt}",
            encoded=True,
        )
        headers = {"Authorization": f"Bearer {floor_token}"}

        async def ours(n: int) -> None:
            nonlocal known
            for _ in range(n):
                jobs = await arm.list_jobs(vault, start, end, known=known.ended_status)
                changes = diff_jobs(known, jobs, clock.utcnow())
                if changes:  # as the poll step: a job that changed is known as it is now
                    known = known.replaced(JobSnapshot.of(c.job) for c in changes)

        async def floor(n: int) -> None:
            for _ in range(n):
                async with session.get(link, headers=headers) as response:
                    assert response.status == 200, f"the floor's GET: {response.status}"
                    page = orjson.loads(await response.read())
                assert not page.get("nextLink"), "the page's vault has more than one page"
                if PACE_S:
                    await asyncio.sleep(PACE_S)

        async def timed(party: Callable[[int], Awaitable[None]], n: int) -> float:
            cpu0 = time.process_time()
            await party(n)
            return time.process_time() - cpu0

        await ours(20)  # warm-up
        await floor(20)
        if only is not None:  # one party alone, counted from outside (`--instructions`)
            await (ours if only == "ours" else floor)(reads)
            return
        per_block = max(1, reads // BLOCKS)
        spent = {"ours": 0.0, "floor": 0.0}
        for _ in range(BLOCKS):
            spent["ours"] += await timed(ours, per_block)
            spent["floor"] += await timed(floor, per_block)
        n = per_block * BLOCKS
        ours_ms, floor_ms = 1000 * spent["ours"] / n, 1000 * spent["floor"] / n
        print(f"reads per party: {n} (page of {len(known)} jobs)")
        print(f"ours  (list_jobs + diff, metrics on)  {ours_ms:7.4f} ms CPU per read")
        print(f"floor (GET + orjson.loads)            {floor_ms:7.4f} ms CPU per read")
        print(f"ours / floor                          {ours_ms / floor_ms:7.2f}×")
        if profile:
            for name, party in (("ours", ours), ("floor", floor)):
                profiler = cProfile.Profile()
                profiler.enable()
                await party(n)
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                stats.sort_stats(SORT).print_stats(30)
                print(f"\n---- {name}: cProfile, {n} reads, top 30 by own time")
                print(out.getvalue())


def instructions(reads: int) -> None:
    """Each party's instructions per read under callgrind, and ours / floor (see the module)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind) on PATH")
    counts: dict[tuple[str, int], int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-steady-cg-") as tmp:
        for party in ("ours", "floor"):
            for n in (reads, 3 * reads):
                out = Path(tmp) / f"{party}-{n}.out"
                command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"]
                command += [sys.executable, __file__, "--only", party, "--reads", str(n)]
                env = os.environ | {"PYTHONHASHSEED": "0"}
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{shlex.join(command)} failed:\n{done.stderr[-2000:]}")
                summary = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
                if summary is None:
                    raise SystemExit(f"no summary line in {out}")
                counts[party, n] = int(summary.group(1))
                print(f"  {party:5s} {n:5d} reads: {counts[party, n]:,} instructions", flush=True)
    per = {p: (counts[p, 3 * reads] - counts[p, reads]) / (2 * reads) for p in ("ours", "floor")}
    print(f"reads per party counted: {2 * reads} (the difference of two runs)")
    print(f"ours  (list_jobs + diff, metrics on)  {per['ours']:12,.0f} instructions per read")
    print(f"floor (GET + orjson.loads)            {per['floor']:12,.0f} instructions per read")
    print(f"ours / floor                          {per['ours'] / per['floor']:12.3f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1200, help="reads per party")
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top items")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead"
    )
    parser.add_argument("--only", choices=("ours", "floor"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        instructions(args.reads)
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="bench-steady-") as tmp:
        tls = make_tls(Path(tmp))
        # ARM's buckets 200× as fast: neither party is throttled or paced.
        emu = start_emulator(
            subscriptions=1,
            vaults=4,
            time_scale=300.0 if args.only is None else 1.0,
            seed=11,
            tls=tls,
            extra=["--reads-per-s", "5000"],
        )
        pin(1)
        try:
            asyncio.run(measure(emu.url, tls[0], args.reads, args.profile, args.only))
        finally:
            emu.process.terminate()
            emu.process.wait(timeout=20)


if __name__ == "__main__":
    main()
