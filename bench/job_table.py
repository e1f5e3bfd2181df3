"""What a vault's tracked ended jobs cost as a `JobTable`, against two peers in the same run: the
dict of snapshots it replaced, and a dict of each name to its one-int code (how `JobTable` kept
them until d58b227): memory for the 10,000-vault point's 180,000 jobs, and the time of each
read the poll step makes.

The world: `--vaults` tables of `--jobs` ended jobs each, named by random lower-case GUIDs (as
ARM names jobs), started a minute apart. Each side is given fresh name strings, as a listing's
parse makes them: the dicts keep them as their keys, the table copies their characters into
one string and drops them. Memory is what
tracemalloc traces while the tables (or dicts) are alive. Times are the best of 5 runs of
`timeit`, per call, in this process.

Run: .venv/bin/python bench/job_table.py
"""

from __future__ import annotations

import argparse
import gc
import random
import timeit
import tracemalloc
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.core.diff import JobSnapshot, JobTable
from monitor.core.jobs import JobKey, JobStatus

VAULT = "/subscriptions/s/resourcegroups/r/providers/microsoft.recoveryservices/vaults/v"
START = datetime(2026, 12, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def names(rng: random.Random, count: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def snapshots(vault_key: str, job_names: list[str]) -> list[JobSnapshot]:
    return [
        JobSnapshot(
            key=JobKey(vault_key=vault_key, job_name=name),
            status=JobStatus.COMPLETED,
            start_at=START + timedelta(minutes=i),
        )
        for i, name in enumerate(job_names)
    ]


def name_codes(snaps: list[JobSnapshot]) -> dict[str, int]:
    """name -> start in microseconds << 3 | has start << 2 | status (the one-int code)."""
    us = timedelta(microseconds=1)
    return {
        s.key.job_name: ((s.start_at - EPOCH) // us) << 3 | 4
        for s in snaps
        if s.start_at is not None
    }


def traced_mib(build: Callable[[], object]) -> float:
    """MiB traced while what `build` returns is alive."""
    gc.collect()
    tracemalloc.start()
    kept = build()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return size / 2**20


def per_call_ns(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vaults", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=18, help="ended jobs per vault")
    args = parser.parse_args()
    rng = random.Random(1)

    def estate(of: Callable[[list[JobSnapshot]], Mapping[Any, object]]) -> object:
        # Fresh name strings per side, as each would hold them parsed from a listing.
        return [of(snapshots(f"{VAULT}{v}", names(rng, args.jobs))) for v in range(args.vaults)]

    table_mib = traced_mib(lambda: estate(JobTable))
    dict_mib = traced_mib(lambda: estate(lambda snaps: {s.key: s for s in snaps}))
    codes_mib = traced_mib(lambda: estate(name_codes))
    jobs = args.vaults * args.jobs
    print(f"{args.vaults:,} vaults x {args.jobs} ended jobs ({jobs:,} jobs), traced:")
    print(f"  dict of snapshots   {dict_mib:7.1f} MiB   {dict_mib * 2**20 / jobs:6.0f} bytes a job")
    print(
        f"  dict of name: code  {codes_mib:7.1f} MiB   {codes_mib * 2**20 / jobs:6.0f} bytes a job"
    )
    print(
        f"  JobTable            {table_mib:7.1f} MiB   {table_mib * 2**20 / jobs:6.0f} bytes a job"
    )
    print(
        f"  dict / JobTable     {dict_mib / table_mib:7.2f}x;"
        f" name: code / JobTable {codes_mib / table_mib:.2f}x"
    )

    snaps = snapshots(VAULT, names(rng, args.jobs))
    table, codes = JobTable(snaps), name_codes(snaps)
    hit, miss = snaps[len(snaps) // 2].key, JobKey(vault_key=VAULT, job_name=names(rng, 1)[0])
    new = JobSnapshot(key=miss, status=JobStatus.FAILED, start_at=START)
    floor = START + timedelta(minutes=3)
    limit = (floor - EPOCH) // timedelta(microseconds=1)  # the floor as the codes hold starts

    def peer_replaced() -> dict[str, int]:
        copy = dict(codes)
        copy.update(name_codes([new]))
        copy.pop(hit.job_name, None)
        return copy

    rows: list[tuple[str, Callable[[], object], Callable[[], object], int]] = [
        ("ended_status, known", lambda: table.ended_status(hit.job_name),
         lambda: codes.get(hit.job_name), 200_000),
        ("ended_status, not known", lambda: table.ended_status(miss.job_name),
         lambda: codes.get(miss.job_name), 200_000),
        ("status_of, known", lambda: table.status_of(hit),
         lambda: codes.get(hit.job_name), 200_000),
        ("replaced: 1 put, 1 drop", lambda: table.replaced([new], [hit]), peer_replaced, 20_000),
        (f"built from {args.jobs} snapshots", lambda: JobTable(snaps),
         lambda: name_codes(snaps), 20_000),
        ("ended_before", lambda: table.ended_before(floor),
         lambda: [JobKey(vault_key=VAULT, job_name=n) for n, c in codes.items()
                  if c & 4 and c >> 3 < limit], 20_000),
    ]  # fmt: skip
    print(f"\nper call, a vault of {args.jobs} ended jobs (ns)   JobTable name: code   ratio")
    for name, ours, theirs, number in rows:
        a, b = per_call_ns(ours, number), per_call_ns(theirs, number)
        print(f"  {name:36s} {a:10,.0f} {b:10,.0f}   {a / b:5.1f}x")


if __name__ == "__main__":
    main()
