"""`backup-monitor emulator` with the issue-13 flags, run as a real process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import aiohttp
import orjson
import pytest

from monitor.cli import main

API = "api-version=2025-08-01"


@pytest.fixture
def policies_emulator() -> Iterator[tuple[dict[str, str], float]]:
    """The policies profile at 3600x from 2026-11-01T07:00Z (anchored at the test's start)."""
    anchor = time.time()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "monitor", "emulator", "--port", "0"),
            *("--subscriptions", "1", "--vaults-per-subscription", "2"),
            *("--profile", "policies", "--skip-rate", "0.5"),
            *("--clock-speed", "3600", "--clock-start", "2026-11-01T07:00:00Z"),
            *("--clock-anchor", str(anchor)),
            *("--protected-items-limit", "2", "--protected-items-window", "36000"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        yield orjson.loads(process.stdout.readline()), anchor
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


async def test_clock_skip_rate_and_items_limit_flags(
    policies_emulator: tuple[dict[str, str], float],
) -> None:
    """World time is the start plus 3600x the real time since the anchor; runs are listed up to
    it, half of them skipped; the third protected-item read in a 10-hour window answers 429."""
    banner, anchor = policies_emulator
    headers = {"Authorization": f"Bearer {banner['token']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{banner['url']}/_emulator/world") as r:
            world = await r.json()
        elapsed = time.time() - anchor
        now = datetime.fromisoformat(world["now"].replace("Z", "+00:00"))
        start = datetime.fromisoformat("2026-11-01T07:00:00+00:00")
        assert start <= now <= start + timedelta(seconds=elapsed * 3600 + 1)
        async with http.get(f"{banner['url']}/_emulator/expected") as r:
            runs = (await r.json())["runs"]
        assert runs
        assert max(r["due"] for r in runs) <= world["now"]
        assert 0.3 < sum(1 for r in runs if r["skipped"] == "skip_rate") / len(runs) < 0.7
        vault = world["subscriptions"][0]["vaults"][0]["id"]
        item = world["subscriptions"][0]["vaults"][0]["items"][0]
        assert item["protection_state"] == "Protected"
        assert item["policy_id"].startswith(vault + "/backupPolicies/")
        statuses = []
        for _ in range(3):
            async with http.get(
                f"{banner['url']}{vault}/backupProtectedItems?{API}", headers=headers
            ) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["emulator", "--skip-rate", "2"], "between 0 and 1"),
        (["emulator", "--clock-speed", "0"], "must be > 0"),
        (["emulator", "--clock-start", "yesterday"], "must be an ISO 8601 instant"),
        (["emulator", "--clock-start", "2026-11-01T07:00:00"], "must include a UTC offset"),
        (["emulator", "--protected-items-limit", "-1"], "0 or more"),
        (["emulator", "--protected-items-window", "0"], "must be > 0"),
        (["emulator", "--token-lifetime", "0"], "must be > 0"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_time_scale_is_refused_with_the_policies_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["emulator", "--profile", "policies", "--time-scale", "60"]) == 2
    assert "use --clock-speed" in capsys.readouterr().err
