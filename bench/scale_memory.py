"""Where the 10,000-vault point's memory goes: RSS over time and tracemalloc's top allocators.

The same world and config as `bench/estate.py --scale-only` (200 subscriptions × 50 vaults,
~180,000 jobs in 24 h of history, default intervals, backfill off), one daemon process. The
daemon runs under this file's `--child` mode, which samples VmRSS and VmHWM from
/proc/self/status every second (and, with `--trace N`, tracemalloc's current and peak traced
size) into a JSON-lines file, dumps tracemalloc snapshots at the seconds `--snapshots` names,
then runs `backup-monitor run` in the same process. Without `--trace`, those seconds print
pymalloc's statistics (arenas allocated against bytes in blocks) instead.

Printed: the RSS timeline (every 5 s), VmHWM at the stop, the daemon's CPU from `--cpu-from`
seconds on (utime + stime; under `--trace` it is tracemalloc's too), and for each snapshot the top
allocators by line (and, with `--trace` above 1, the top tracebacks), so the peak of the first
round (VmHWM counts its transient buffers) can be told from the steady state. tracemalloc slows
the daemon and costs memory of its own: compare RSS figures only between runs without `--trace`.

Run: .venv/bin/python bench/scale_memory.py                      (RSS only, ~4 minutes)
     .venv/bin/python bench/scale_memory.py --trace 8 --snapshots 30,60,150
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_kib(fields: tuple[str, ...]) -> dict[str, int]:
    """The named fields of /proc/self/status, in KiB."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            out[name] = int(rest.split()[0])
    return out


def cpu_s() -> float:
    """utime + stime of this process, in seconds."""
    stat = Path("/proc/self/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def child(samples: Path, snapshots: Path, at: list[float], argv: list[str]) -> int:
    """Sample memory in a thread, then run `backup-monitor` with `argv` in this process."""
    started = time.monotonic()
    pending = sorted(at)

    def sampler() -> None:
        with samples.open("ab") as out:
            while True:
                t = time.monotonic() - started
                row: dict[str, Any] = {"t": round(t, 1), **status_kib(("VmRSS", "VmHWM"))}
                row["cpu_s"] = cpu_s()
                due = bool(pending) and t >= pending[0]
                if due:
                    pending.pop(0)
                if tracemalloc.is_tracing():
                    current, peak = tracemalloc.get_traced_memory()
                    row |= {"traced_kib": current // 1024, "traced_peak_kib": peak // 1024}
                    if due:
                        tracemalloc.take_snapshot().dump(
                            str(snapshots / f"snap-{int(t):04d}.pickle")
                        )
                elif due:
                    # pymalloc's arenas against the blocks in use, on stderr (the daemon's log).
                    print(f"mallocstats at {t:.0f} s", file=sys.stderr, flush=True)
                    sys._debugmallocstats()
                out.write(orjson.dumps(row) + b"\n")
                out.flush()
                time.sleep(1.0)

    threading.Thread(target=sampler, daemon=True).start()
    from monitor.entry import main

    sys.argv = ["backup-monitor", *argv]
    return main()


def report(samples: Path, snapshots: Path, logs: Path, top: int, cpu_from: float) -> None:
    rows = [orjson.loads(line) for line in samples.read_bytes().splitlines() if line]
    late = [r for r in rows if r["t"] >= cpu_from]
    if len(late) > 1 and "cpu_s" in late[0]:
        used, wall = late[-1]["cpu_s"] - late[0]["cpu_s"], late[-1]["t"] - late[0]["t"]
        print(
            f"daemon CPU from {late[0]['t']:.0f} s to {late[-1]['t']:.0f} s: "
            f"{100 * used / wall:.1f} % of a core"
        )
    print("t (s)   VmRSS (MiB)   VmHWM (MiB)   traced / traced peak (MiB)")
    for r in rows[::5] + rows[-1:]:
        traced = (
            f"{r['traced_kib'] / 1024:8.1f} / {r['traced_peak_kib'] / 1024:.1f}"
            if "traced_kib" in r
            else ""
        )
        print(f"{r['t']:6.0f}   {r['VmRSS'] / 1024:11.1f}   {r['VmHWM'] / 1024:11.1f}   {traced}")
    for line in logs.read_text(errors="replace").splitlines():
        if line.startswith(("mallocstats", "# arenas allocated current", "# bytes in")):
            print(line)
    for path in sorted(snapshots.glob("snap-*.pickle")):
        snap = tracemalloc.Snapshot.load(str(path)).filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snap.statistics("lineno")
        total = sum(s.size for s in stats)
        print(f"\n== {path.name}: {total / 2**20:.1f} MiB traced; top lines")
        for s in stats[:top]:
            frame = s.traceback[0]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"{s.size / 2**20:8.2f} MiB {s.count:9,d}  {where}")
        if len(snap.traces) and len(snap.traces[0].traceback) > 1:
            print(f"-- {path.name}: top tracebacks")
            for s in snap.statistics("traceback")[: max(5, top // 3)]:
                print(f"{s.size / 2**20:8.2f} MiB {s.count:9,d}")
                for line in s.traceback.format(limit=6):
                    print("      " + line)


def spawn(command: list[str], logs: Path) -> subprocess.Popen[bytes]:
    """The daemon child, pinned to core 1 as in bench/estate.py, its stderr into `logs`."""
    from bench.estate import pin

    with logs.open("ab") as err:
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=lambda: pin(1)
        )


async def parent(args: argparse.Namespace, tmp: Path) -> None:
    # Imported here, not at the top: the daemon child runs this file too, and must import
    # no more than `backup-monitor run` does.
    from bench.estate import make_tls, scale_config, start_emulator

    tls = make_tls(tmp)
    subs_n, vaults_n = args.scale_subscriptions, args.scale_vaults_per_subscription
    emu = start_emulator(subscriptions=subs_n, vaults=vaults_n, time_scale=1, seed=3, tls=tls)
    d = tmp / "scale"
    d.mkdir()
    samples, snapshots = d / "memory.jsonl", d / "snapshots"
    snapshots.mkdir()
    try:
        jobs = await scale_config(emu, tls, d)
        print(f"scale: {subs_n}×{vaults_n} vaults, {jobs} jobs; running {args.duration:g} s")
        trace = ["-X", f"tracemalloc={args.trace}"] if args.trace else []
        snaps = args.snapshots
        command = [sys.executable, *trace, __file__, "--child", str(samples), str(snapshots)]
        command += [snaps, "run", "--config", str(d / "monitor.toml")]
        daemon = spawn(command, d / "stderr.log")
        try:
            await asyncio.sleep(args.duration)
            daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.wait, 60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
    finally:
        emu.process.terminate()
        emu.process.wait(timeout=30)
    report(samples, snapshots, d / "stderr.log", args.top, args.cpu_from)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        samples, snapshots, at = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
        seconds = [float(s) for s in at.split(",") if s]
        raise SystemExit(child(samples, snapshots, seconds, sys.argv[5:]))
    # The parent imports bench.estate from this checkout; the daemon child imports `monitor`
    # from PYTHONPATH only, so that PYTHONPATH=<another tree> measures that tree's daemon.
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-subscriptions", type=int, default=200)
    parser.add_argument("--scale-vaults-per-subscription", type=int, default=50)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds the daemon runs")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: off)")
    parser.add_argument(
        "--snapshots", default="30,60,140", help="seconds after start to dump snapshots at"
    )
    parser.add_argument("--top", type=int, default=25, help="allocators shown per snapshot")
    parser.add_argument(
        "--cpu-from", type=float, default=90.0, help="second from which daemon CPU is averaged"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scale-memory-"))
    try:
        asyncio.run(parent(args, tmp))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
