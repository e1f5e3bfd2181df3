"""The daemon as a child process against the emulator, waiting on what it writes, and judging it
against ground truth.

The one way tests run a daemon: the end-to-end, shard, ops, full-disk and hostile tests, and the
reliability harness (tests/reliability/harness.py) built on it. Every wait here has a deadline and
watches a file the daemon writes (its log lines, its events) or the emulator's ground truth; none
is a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import anyio
import jsonschema
import orjson

from monitor.commands.demo import truth_status
from monitor.core.diff import event_id
from monitor.emulator import Emulator
from monitor.events import EVENT_TYPE, event_schema


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
    sinks: Sequence[Mapping[str, object]] = (),
    credentials: Sequence[Mapping[str, object]] = (),
    **poll: float,
) -> Path:
    """A config file for `emu`: short intervals, the ops server on a free loopback port.

    `sections` adds or overrides keys of any section (e.g. `{"shard": {"count": 2}}`); `sinks`
    are `[[sinks]]` entries, whose mapping values (`filter`, `labels`) become sub-tables;
    `credentials` are `[[azure.credentials]]` entries, which replace the static credential.
    `[protection]` is off unless `sections` turns it on: the tests judged by job transitions
    alone would otherwise also see item events (protection changes after a restart), which
    tests/test_missed_backups_e2e.py judges against their own ground truth.
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
        "protection": {"enabled": False},
        "state": {"path": str(state)},
        "log": {"format": "json"},
        "ops": {"listen": "127.0.0.1:0"},
    }
    if credentials:
        del tables["azure"]["credential"], tables["azure"]["static_token"]
    for name, values in (sections or {}).items():
        tables.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in values.items())]
    for entry in credentials:
        lines += ["[[azure.credentials]]", *(f"{k} = {_toml(v)}" for k, v in entry.items())]
    for sink in sinks:
        plain = {k: v for k, v in sink.items() if not isinstance(v, Mapping)}
        lines += ["[[sinks]]", *(f"{key} = {_toml(value)}" for key, value in plain.items())]
        for key, table in sink.items():
            if isinstance(table, Mapping):
                lines += [f"[sinks.{key}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_json_lines(
    path: Path, *, unreadable: Callable[[bytes], dict[str, Any]], offset: int = 0
) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file from byte `offset` on (none when it does not exist);
    `unreadable` stands in for a line that is not JSON (a log line from elsewhere, or a write
    cut short by SIGKILL)."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes()[offset:].splitlines():
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


def _copy_lines(pipe: IO[bytes], path: Path) -> None:
    """Append what comes through `pipe` to `path` until it closes; a line a kill cut short is
    ended, so the next run's first line starts its own."""
    last = b"\n"
    with path.open("ab") as out:
        while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
            out.write(chunk)
            out.flush()
            last = chunk[-1:]
        if last != b"\n":
            out.write(b"\n")
    pipe.close()


class Daemon:
    """`backup-monitor run` as a child process; stderr appends to `logs`.

    Its stdout appends to `events` unless `stdout_to_events` is False (the config then names a
    file sink of its own); with `stdout_pipe` (a path), stdout is a pipe that a thread of the
    test copies into that file (the daemon cannot read a pipe back, as under a container
    runtime).
    With `partial_lines`, a line of the events file that is not JSON (a
    write cut short by SIGKILL) reads as `{"event_id": "<partial line>", "partial": True}`
    instead of failing the test. Each start remembers the events-file line count and the log
    size then (`incarnations`, `log_offset`), so a wait or a judge can tell the runs apart.
    """

    def __init__(
        self,
        config: Path,
        events: Path,
        logs: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdout_to_events: bool = True,
        stdout_pipe: Path | None = None,
        partial_lines: bool = False,
    ) -> None:
        self.config, self.events, self.logs = config, events, logs
        self.env = dict(env) if env is not None else None
        self.stdout_to_events = stdout_to_events
        self.stdout_pipe = stdout_pipe
        self._copier: threading.Thread | None = None
        self.partial_lines = partial_lines
        self.process: subprocess.Popen[bytes] | None = None
        self.incarnations: list[int] = []  # events-file line count at each start
        self.log_offset = 0  # log-file size at the last start

    def start(self) -> None:
        self.incarnations.append(len(self.read_events()))
        self.log_offset = self.logs.stat().st_size if self.logs.exists() else 0
        env = None if self.env is None else {**os.environ, **self.env}
        if self._copier is not None:
            self._copier.join(timeout=10)  # the last run's output is all in the file
        with self.logs.open("ab") as err:
            piped = self.stdout_pipe is not None
            out = self.events.open("ab") if self.stdout_to_events and not piped else None
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                    stdout=(
                        subprocess.PIPE if piped else out if out is not None else subprocess.DEVNULL
                    ),
                    stderr=err,
                    env=env,
                )
            finally:
                if out is not None:
                    out.close()
        if self.stdout_pipe is not None:
            assert self.process.stdout is not None
            self._copier = threading.Thread(
                target=_copy_lines, args=(self.process.stdout, self.stdout_pipe), daemon=True
            )
            self._copier.start()

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
        code = await exit_code(process, timeout_s=30)
        if self._copier is not None:
            self._copier.join(timeout=10)  # what it wrote last is in the file
        return code

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
        if self._copier is not None:
            self._copier.join(timeout=10)

    def read_events(self) -> list[dict[str, Any]]:
        def refuse(line: bytes) -> dict[str, Any]:
            raise AssertionError(f"not a JSON event line: {line[:200]!r}")

        def partial(line: bytes) -> dict[str, Any]:
            return {"event_id": "<partial line>", "partial": True}

        return read_json_lines(self.events, unreadable=partial if self.partial_lines else refuse)

    def assert_running(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, self.read_logs()[-5:]

    async def wait_until(
        self, check: Callable[[], bool], *, timeout_s: float, every_s: float = 0.05
    ) -> None:
        """Until `check()` holds (asked every `every_s`); TimeoutError after `timeout_s`, an
        AssertionError as soon as the daemon has exited."""
        with anyio.fail_after(timeout_s):
            while not check():
                self.assert_running()
                await anyio.sleep(every_s)

    async def wait_for_events(self, count: int, *, timeout_s: float) -> list[dict[str, Any]]:
        """The events once the events file holds at least `count` of them."""
        await self.wait_until(lambda: len(self.read_events()) >= count, timeout_s=timeout_s)
        return self.read_events()

    async def ops_url(self, timeout_s: float = 20) -> str:
        """The base URL of this run's ops server, from its `ops.listening` log line."""
        rows = await self.wait_for_log("ops.listening", timeout_s=timeout_s)
        return f"http://127.0.0.1:{rows[-1]['port']}"

    async def wait_for_log(
        self,
        event: str,
        *,
        count: int = 1,
        timeout_s: float = 20,
        where: Callable[[dict[str, Any]], bool] = lambda row: True,
        this_run: bool = False,
    ) -> list[dict[str, Any]]:
        """The log rows named `event` (and matching `where`) once there are `count` of them,
        counted over every run or, with `this_run`, since the last start; the daemon must live."""
        with anyio.fail_after(timeout_s):
            while True:
                rows = [
                    r
                    for r in self.read_logs(this_run=this_run)
                    if r.get("event") == event and where(r)
                ]
                if len(rows) >= count:
                    return rows
                self.assert_running()
                await anyio.sleep(0.05)

    def read_logs(self, *, this_run: bool = False) -> list[dict[str, Any]]:
        rows = read_json_lines(
            self.logs,
            unreadable=lambda line: {"event": line.decode(errors="replace")},
            offset=self.log_offset if this_run else 0,
        )
        return rows


async def ground_truth(
    emu: Emulator,
    *,
    kinds: Sequence[str] = ("recovery_services",),
    ssl_context: ssl.SSLContext | None = None,
) -> list[dict[str, Any]]:
    """The world's transitions of the vaults of `kinds` (`recovery_services`, `backup_vault`);
    `ssl_context` trusts an emulator served over TLS."""
    rows: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with aiohttp.ClientSession(connector=connector) as http:
        for kind in kinds:
            since = 0
            while True:
                url = f"{emu.url}/_emulator/transitions?kind={kind}&since={since}"
                async with http.get(url) as r:
                    page = list((await r.json())["transitions"])
                rows += page
                if not page or kind == "recovery_services":
                    break
                since = int(page[-1]["seq"])
    return rows


def truth_id(row: Mapping[str, Any]) -> str:
    """The event id of a ground-truth row."""
    return event_id(str(row["vault_id"]), str(row["job_id"]), truth_status(row))


def is_terminal(row: Mapping[str, Any]) -> bool:
    """Whether a ground-truth row ends its job."""
    return truth_status(row).is_terminal


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
    skip_vaults: frozenset[str] | set[str] = frozenset(),
) -> tuple[set[str], Counter[str], list[dict[str, Any]]]:
    """Missing terminal event ids, emitted id counts (of every event type), and emitted job
    state changes the world never made (item events and long-running jobs have their own
    ground truth, `/_emulator/expected`, judged where a test makes them).

    Every event is also validated against the shipped JSON Schema.
    """
    validator = jsonschema.Draft202012Validator(event_schema())
    for event in events:
        validator.validate(event)
    made = {truth_id(t) for t in truth}
    expected = {
        truth_id(t)
        for t in truth
        if is_terminal(t) and at(t) <= cutoff and t["vault_id"].lower() not in skip_vaults
    }
    emitted = Counter(str(e["event_id"]) for e in events)
    invented = [e for e in events if e["event"] == EVENT_TYPE and e["event_id"] not in made]
    return expected - set(emitted), emitted, invented


async def wait_until_caught_up(
    read_events: Callable[[], list[dict[str, Any]]],
    emu: Emulator,
    *,
    cutoff: datetime,
    skip_vaults: frozenset[str] | set[str] = frozenset(),
    timeout_s: float,
    kinds: Sequence[str] = ("recovery_services",),
) -> set[str]:
    """Until every terminal transition of the world up to `cutoff` (outside `skip_vaults`) is
    among `read_events()`, or `timeout_s` has passed: the ids still missing then (none when it
    caught up). A `cutoff` still ahead is first waited for: until then the world has not made
    all it must catch up on."""
    with anyio.move_on_after(timeout_s):
        await anyio.sleep(max(0.0, (cutoff - datetime.now(UTC)).total_seconds()))
        while True:
            truth = await ground_truth(emu, kinds=kinds)
            missing = missing_ids(read_events(), truth, cutoff, skip_vaults)
            if not missing:
                return missing
            await anyio.sleep(0.2)
    return missing_ids(read_events(), await ground_truth(emu, kinds=kinds), cutoff, skip_vaults)


def missing_ids(
    events: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    cutoff: datetime,
    skip_vaults: frozenset[str] | set[str] = frozenset(),
) -> set[str]:
    """The terminal transitions of `truth` up to `cutoff` (outside `skip_vaults`) that no event
    carries (no schema check: `judge` does that once, at the end)."""
    emitted = {str(e["event_id"]) for e in events}
    return {
        truth_id(t)
        for t in truth
        if is_terminal(t) and at(t) <= cutoff and t["vault_id"].lower() not in skip_vaults
    } - emitted


async def wait_for_world(
    emu: Emulator, *, terminal_after: datetime, timeout_s: float
) -> list[dict[str, Any]]:
    """The ground truth once the world has made a terminal transition after `terminal_after`
    (so a monitor down since then has something to catch up on)."""
    with anyio.fail_after(timeout_s):
        while True:
            truth = await ground_truth(emu)
            if any(is_terminal(t) and at(t) > terminal_after for t in truth):
                return truth
            await anyio.sleep(0.1)
