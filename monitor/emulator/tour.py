"""A scripted walk-through of what the emulator serves, for `backup-monitor demo` and newcomers.

It plays an ordinary ARM client with plain aiohttp: lists subscriptions and vaults, pages a vault's
jobs through `nextLink`, reads a failed job's details, triggers a backup and follows its operation
to the job, reads faster than the bucket allows until ARM answers 429, then watches the world's
job transitions for the rest of the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

import aiohttp
import anyio
import orjson

from monitor.emulator.clock import WallClock
from monitor.emulator.runner import Emulator, running_emulator
from monitor.emulator.settings import EmulatorSettings

API = "api-version=2025-08-01"


class Tour:
    """One walk-through against a running emulator, narrated to `out`."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession, out: TextIO) -> None:
        self.emu, self.session, self.out = emu, session, out
        self.headers = {"Authorization": f"Bearer {emu.token}"}
        self.reads = 0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def get(self, url: str) -> tuple[int, Mapping[str, str], Any]:
        if not url.startswith("http"):
            url = self.emu.url + url
        async with self.session.get(url, headers=self.headers) as response:
            self.reads += 1
            raw = await response.read()
            return response.status, response.headers, orjson.loads(raw) if raw else None

    async def run(self, duration_s: float) -> None:
        clock = WallClock()
        started = clock.monotonic()
        self.say(f"emulator at {self.emu.url}, tenant {self.emu.tenant_id}")
        _, _, subs = await self.get(f"/subscriptions?{API}")
        vaults: list[dict[str, Any]] = []
        for sub in subs["value"]:
            _, headers, page = await self.get(
                f"/subscriptions/{sub['subscriptionId']}/providers/Microsoft.RecoveryServices/vaults?{API}"
            )
            vaults += page["value"]
            self.say(
                f"subscription {sub['subscriptionId']}: {len(page['value'])} vaults "
                f"(reads left {headers.get('x-ms-ratelimit-remaining-subscription-reads')})"
            )
        jobs_by_vault = [(await self.list_jobs(v["id"], quiet=True), v) for v in vaults]
        _, vault = max(jobs_by_vault, key=lambda pair: len(pair[0]))
        self.say(f"\npaging the jobs of {vault['name']} ({vault['location']}):")
        jobs = await self.list_jobs(vault["id"], quiet=False)
        for job in jobs[:6]:
            p = job["properties"]
            self.say(f"  {p['startTime']}  {p['jobType']:<17} {p['operation']:<22} {p['status']}")
        failed = next((j for j in jobs if j["properties"]["status"] == "Failed"), None)
        if failed is not None:
            _, _, details = await self.get(f"{failed['id']}?{API}")
            errors = details["properties"]["errorDetails"]
            self.say(f"\nfailed job {failed['name']}: {orjson.dumps(errors).decode()}")
        await self.trigger_backup(vault)
        await self.provoke_throttling(vault)
        await self.watch(started + duration_s, clock)

    async def list_jobs(self, vault_id: str, *, quiet: bool) -> list[dict[str, Any]]:
        url: str | None = f"{vault_id}/backupJobs?{API}"
        jobs: list[dict[str, Any]] = []
        while url:
            _, _, page = await self.get(url)
            jobs += page["value"]
            url = page.get("nextLink")
            if not quiet:
                self.say(f"  page of {len(page['value'])} jobs; nextLink: {url or '-'}")
        return jobs

    async def trigger_backup(self, vault: Mapping[str, Any]) -> None:
        _, _, items = await self.get(f"{vault['id']}/backupProtectedItems?{API}")
        item = items["value"][0]
        url = f"{self.emu.url}{item['id']}/backup?{API}"
        async with self.session.post(url, headers=self.headers) as response:
            status, operation_url = response.status, response.headers["Azure-AsyncOperation"]
        self.say(f"\ntriggered a backup of {item['properties']['friendlyName']}: HTTP {status}")
        self.say(f"  Azure-AsyncOperation: {operation_url}")
        with anyio.fail_after(30):
            while True:
                _, _, op = await self.get(operation_url)
                if op["status"] != "InProgress":
                    break
                await anyio.sleep(1)
        job_id = op["properties"]["jobId"]
        _, _, job = await self.get(f"{vault['id']}/backupJobs/{job_id}?{API}")
        self.say(f"  operation {op['status']} -> job {job_id} is {job['properties']['status']}")

    async def provoke_throttling(self, vault: Mapping[str, Any]) -> None:
        self.say("\nreading one vault as fast as possible until ARM's bucket is empty:")
        for n in range(1, 400):
            status, headers, body = await self.get(f"{vault['id']}?{API}")
            if status == 429:
                self.say(
                    f"  request {n}: 429 {body['error']['code']}, "
                    f"Retry-After {headers.get('Retry-After')} s"
                )
                break
        self.say("  (the monitor never does this: it spends half of the refill rate at most)")

    async def watch(self, until: float, clock: WallClock) -> None:
        self.say("\njob state changes as the world makes them (ground truth):")
        cursor = 0
        async with self.session.get(f"{self.emu.url}/_emulator/transitions") as response:
            cursor = (await response.json())["next"]
        shown = 0
        while clock.monotonic() < until:
            await anyio.sleep(min(2.0, max(until - clock.monotonic(), 0)))
            url = f"{self.emu.url}/_emulator/transitions?since={cursor}"
            async with self.session.get(url) as response:
                body = await response.json()
            cursor = body["next"]
            for t in body["transitions"]:
                shown += 1
                vault_name = t["vault_id"].rsplit("/", 1)[-1]
                self.say(
                    f"  {t['at'][11:19]}  {vault_name}  job {t['job_id'][:8]}  {t['job_type']:<17} "
                    f"{t['from'] or '-':>12} -> {t['to']}"
                )
        async with self.session.get(f"{self.emu.url}/_emulator/stats") as response:
            stats = await response.json()
        self.say(
            f"\n{shown} transitions watched; the tour made {self.reads} ARM reads, "
            f"{stats['throttled_429']} of them answered 429"
        )


async def run_tour(settings: EmulatorSettings, *, duration_s: float, out: TextIO) -> None:
    """Start an emulator in-process and walk through it for about `duration_s` seconds."""
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as session:
        await Tour(emu, session, out).run(duration_s)
