"""The daemon as a child process against the emulator, and judging it against ground truth.

Shared by the end-to-end tests: test_daemon_e2e, test_shard_e2e and test_ops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jsonschema
import orjson

from monitor.core.diff import event_id
from monitor.core.jobs import JobStatus
from monitor.emulator import Emulator
from monitor.events import event_schema

TERMINAL = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def write_config(
    path: Path,
    emu: Emulator,
    state: Path,
    *,
    sections: Mapping[str, Mapping[str, object]] | None = None,
    **poll: float,
) -> Path:
    """A config file for `emu`: short intervals, the ops server on a free loopback port.

    `sections` adds or overrides keys of any section (e.g. `{"shard": {"count": 2}}`).
    """
    tables: dict[str, dict[str, object]] = {
        "azure": {
            "arm_endpoint": f"{emu.url}/",
            "credential": "static",
            "static_token": emu.token,
            "allow_http_loopback": True,
            "request_timeout_s": 5,
        },
        "poll": {
            "active_interval_s": 2,
            "idle_interval_s": 4,
            "overlap_s": 30,
            **poll,
            "lookback_s": 3600,
        },
        "discovery": {"interval_s": 30},
        "state": {"path": str(state)},
        "log": {"format": "json"},
        "ops": {"listen": "127.0.0.1:0"},
    }
    for name, values in (sections or {}).items():
        tables.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_json_lines(
    path: Path, *, unreadable: Callable[[bytes], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file (none when it does not exist); `unreadable` stands in for
    a line that is not JSON (a log line from elsewhere, or a write cut short by SIGKILL)."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        if not line:
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            rows.append(unreadable(line))
    return rows


async def exit_code(process: subprocess.Popen[bytes], *, timeout_s: float) -> int:
    """The process's exit code once it has exited; TimeoutError after `timeout_s` (the waiting
    thread is abandoned then, so the deadline holds while the process lives on)."""
    with anyio.fail_after(timeout_s):
        return await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "SigCgt":
            return bool(int(value, 16) >> (sig - 1) & 1)
    raise AssertionError(f"/proc/{pid}/status has no SigCgt line")


class Daemon:
    """`backup-monitor run` as a child process; stderr appends to `logs`.

    Its stdout appends to `events` unless `stdout_to_events` is False (the config then names a
    file sink of its own).
    """

    def __init__(
        self,
        config: Path,
        events: Path,
        logs: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdout_to_events: bool = True,
    ) -> None:
        self.config, self.events, self.logs = config, events, logs
        self.env = dict(env) if env is not None else None
        self.stdout_to_events = stdout_to_events
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = None if self.env is None else {**os.environ, **self.env}
        with self.logs.open("ab") as err:
            out = self.events.open("ab") if self.stdout_to_events else None
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                    stdout=out if out is not None else subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                )
            finally:
                if out is not None:
                    out.close()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` and return the exit code; the daemon must still be running."""
        assert self.process is not None
        process = self.process
        if process.poll() is not None:
            raise AssertionError(
                f"the daemon exited with {process.returncode} before {sig.name}; "
                f"its last log lines: {self.read_logs()[-8:]}"
            )
        process.send_signal(sig)
        return await exit_code(process, timeout_s=30)

    async def wait(self, timeout_s: float = 30) -> int:
        """The exit code once the daemon has exited by itself, within `timeout_s`."""
        assert self.process is not None
        return await exit_code(self.process, timeout_s=timeout_s)

    async def wait_until_catching(self, sig: signal.Signals, *, timeout_s: float = 20) -> None:
        """Until the kernel shows a handler for `sig` in the daemon (Linux: /proc/PID/status
        SigCgt); the daemon must live."""
        assert self.process is not None
        process = self.process
        with anyio.fail_after(timeout_s):
            while True:
                assert process.poll() is None, self.read_logs()[-5:]
                if catches(process.pid, sig):
                    return
                await anyio.sleep(0.002)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def read_events(self) -> list[dict[str, Any]]:
        def refuse(line: bytes) -> dict[str, Any]:
            raise AssertionError(f"not a JSON event line: {line[:200]!r}")

        return read_json_lines(self.events, unreadable=refuse)

    async def ops_url(self, timeout_s: float = 20) -> str:
        """The base URL of this run's ops server, from its `ops.listening` log line."""
        rows = await self.wait_for_log("ops.listening", timeout_s=timeout_s)
        return f"http://127.0.0.1:{rows[-1]['port']}"

    async def wait_for_log(
        self, event: str, *, count: int = 1, timeout_s: float = 20
    ) -> list[dict[str, Any]]:
        """The log rows named `event` once there are `count` of them; the daemon must live."""
        with anyio.fail_after(timeout_s):
            while True:
                rows = [r for r in self.read_logs() if r.get("event") == event]
                if len(rows) >= count:
                    return rows
                assert self.process is not None
                assert self.process.poll() is None, self.read_logs()[-5:]
                await anyio.sleep(0.1)

    def read_logs(self) -> list[dict[str, Any]]:
        return read_json_lines(
            self.logs, unreadable=lambda line: {"event": line.decode(errors="replace")}
        )


async def ground_truth(emu: Emulator) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{emu.url}/_emulator/transitions") as r:
        return list((await r.json())["transitions"])


async def emulator_stats(emu: Emulator) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{emu.url}/_emulator/stats") as r:
        return dict(await r.json())


def at(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(row["at"]).replace("Z", "+00:00"))


def judge(
    events: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    *,
    cutoff: datetime,
    skip_vaults: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[set[str], Counter[str], list[dict[str, Any]]]:
    """Missing terminal event ids, emitted id counts, and emitted events the world never made.

    Every event is also validated against the shipped JSON Schema.
    """
    validator = jsonschema.Draft202012Validator(event_schema())
    for event in events:
        validator.validate(event)
    made = {event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"])) for t in truth}
    expected = {
        event_id(t["vault_id"], t["job_id"], JobStatus.of(t["to"]))
        for t in truth
        if t["to"] in TERMINAL and at(t) <= cutoff and t["vault_id"].lower() not in skip_vaults
    }
    emitted = Counter(str(e["event_id"]) for e in events)
    invented = [e for e in events if e["event_id"] not in made]
    return expected - set(emitted), emitted, invented
