"""Start-up as real processes: one daemon per state file, and signals from the first instruction."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from monitor import __version__
from monitor.emulator import Emulator, EmulatorSettings, WorldSettings, running_emulator
from tests.daemon import Daemon, exit_code, write_config

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "monitor"]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc and relies on flock(2)"
)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A small estate: 1 subscription × 4 vaults."""
    settings = EmulatorSettings(
        world=WorldSettings(seed=11, subscriptions=1, vaults_per_subscription=4)
    )
    async with running_emulator(settings) as emulator:
        yield emulator


def daemon(tmp_path: Path, config: Path, name: str) -> Daemon:
    return Daemon(config, tmp_path / f"{name}.events.jsonl", tmp_path / f"{name}.stderr.log")


def stderr_lines(one: Daemon) -> list[str]:
    return one.logs.read_text().splitlines()


def in_use_line(state: Path, pid: int) -> str:
    return (
        f"backup-monitor: startup failed: state file {state} is in use by another "
        f"backup-monitor (pid {pid}; lock {state}.lock); stop that process or give this one "
        "its own [state] path"
    )


def locks_under(directory: Path) -> list[Path]:
    return list(directory.rglob("*.lock"))


def spawn_gated(command: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`backup-monitor COMMAND` whose import of aiohttp is held (see IMPORT_GATE), and the file
    that appears when the child gets there."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(IMPORT_GATE)
    reached = tmp_path / "reached"
    config = tmp_path / "monitor.toml"
    config.write_text('[state]\npath = ":memory:"\n')
    args = ["--config", str(config)] if command != "emulator" else ["--port", "0"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in [str(gate), str(REPO), os.environ.get("PYTHONPATH")] if p
        ),
        "IMPORT_GATE_MODULE": "aiohttp",
        "IMPORT_GATE_REACHED": str(reached),
    }
    process = subprocess.Popen(
        [*COMMAND, command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return process, reached


async def process_start_s() -> float:
    """How long a `backup-monitor` process takes to import and exit here and now."""
    began = time.monotonic()
    result = await anyio.run_process([*COMMAND, "--version"], check=True)
    assert result.stdout.startswith(b"backup-monitor ")
    return time.monotonic() - began


class TestOneOwnerPerStateFile:
    """A second daemon on a state file in use exits 3; the lock never outlives its holder."""

    async def test_second_daemon_exits_3_and_the_next_starts_after_sigkill(
        self, emu: Emulator, tmp_path: Path
    ) -> None:
        """The second exits 3 within 2 s (past a bare process start) with one line naming the
        file and the first's PID; after a SIGKILL of the first a third starts at once."""
        state = tmp_path / "state" / "monitor.sqlite"
        config = write_config(tmp_path / "monitor.toml", emu, state)
        first, second, third = (daemon(tmp_path, config, n) for n in ("first", "second", "third"))
        try:
            first.start()
            await first.wait_for_log("scheduler.started", timeout_s=30)
            (starting,) = await first.wait_for_log("monitor.starting")
            assert (starting["version"], starting["config"]) == (__version__, str(config))
            assert (starting["shard_index"], starting["shard_count"]) == (0, 1)
            assert starting["settings"]["azure"]["static_token"] == "***"  # redacted
            assert starting["settings"]["state"]["path"] == str(state)
            assert first.process is not None
            # A process start under the same load, so the 2 s are what the lock adds to it.
            allowance_s = 2 + await process_start_s()
            second.start()
            assert await second.wait(timeout_s=allowance_s) == 3
            assert stderr_lines(second) == [in_use_line(state, first.process.pid)]
            assert not second.read_events()
            assert first.process.poll() is None  # the owner runs on, untouched
            assert (state.parent / "monitor.sqlite.lock").read_text() == f"{first.process.pid}\n"

            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
            third.start()
            await third.wait_for_log("scheduler.started", timeout_s=30)
            assert third.process is not None
            assert (state.parent / "monitor.sqlite.lock").read_text() == f"{third.process.pid}\n"
            assert await third.stop(signal.SIGTERM) == 0
        finally:
            for one in (first, second, third):
                one.kill_if_running()
        assert first.read_events()  # the first really ran before it was killed

    async def test_check_config_runs_beside_the_daemon(self, emu: Emulator, tmp_path: Path) -> None:
        """check-config against the running daemon's config succeeds and leaves its lock alone."""
        state = tmp_path / "monitor.sqlite"
        config = write_config(tmp_path / "monitor.toml", emu, state)
        owner = daemon(tmp_path, config, "owner")
        try:
            owner.start()
            await owner.wait_for_log("scheduler.started", timeout_s=30)
            assert owner.process is not None
            with anyio.fail_after(60):
                result = await anyio.run_process(
                    [*COMMAND, "check-config", "--config", str(config)], check=False
                )
            assert result.returncode == 0, result.stderr.decode()
            assert "4 vaults would be watched" in result.stdout.decode()
            assert owner.process.poll() is None
            assert state.with_name("monitor.sqlite.lock").read_text() == f"{owner.process.pid}\n"
            assert await owner.stop(signal.SIGTERM) == 0
        finally:
            owner.kill_if_running()
        assert state.with_name("monitor.sqlite.lock").read_text() == ""  # released at exit

    async def test_check_config_leaves_the_events_file_alone(
        self, emu: Emulator, tmp_path: Path
    ) -> None:
        """check-config does not open the events file: a line the daemon is writing (no newline
        yet) is not ended by it."""
        events = tmp_path / "events.jsonl"
        events.write_bytes(b'{"event": "backup_job.state_changed", "half": ')
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            tmp_path / "monitor.sqlite",
            sections={"events": {"sink": events}},
        )
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [*COMMAND, "check-config", "--config", str(config)], check=False
            )
        assert result.returncode == 0, result.stderr.decode()
        assert events.read_bytes() == b'{"event": "backup_job.state_changed", "half": '

    async def test_memory_state_takes_no_lock(self, emu: Emulator, tmp_path: Path) -> None:
        """Two daemons with `[state] path = ":memory:"` both run: there is no file to share."""
        config = write_config(
            tmp_path / "monitor.toml", emu, tmp_path, sections={"state": {"path": ":memory:"}}
        )
        one, two = daemon(tmp_path, config, "one"), daemon(tmp_path, config, "two")
        try:
            one.start()
            two.start()
            await one.wait_for_log("scheduler.started", timeout_s=30)
            await two.wait_for_log("scheduler.started", timeout_s=30)
            assert await one.stop() == 0
            assert await two.stop() == 0
        finally:
            one.kill_if_running()
            two.kill_if_running()
        assert not locks_under(tmp_path)


# A sitecustomize for the child only: it holds the import of one module (for the daemon, one of
# the CLI's heavy imports) until a signal ends the process, and says when it got there. So the
# signal lands inside the heavy imports by construction, not by timing.
IMPORT_GATE = """\
import os, sys, time

class _Gate:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["IMPORT_GATE_MODULE"]:
            sys.meta_path.remove(self)
            open(os.environ["IMPORT_GATE_REACHED"], "w").close()
            time.sleep(60)
        return None

sys.meta_path.insert(0, _Gate())
"""


class TestSignalsFromTheFirstInstruction:
    """SIGTERM and SIGINT during start-up end the serving commands with 0, at any moment."""

    @pytest.mark.parametrize(
        ("command", "sig", "code"),
        [
            ("run", signal.SIGTERM, 0),
            ("run", signal.SIGINT, 0),
            ("emulator", signal.SIGTERM, 0),
            # A one-shot command stopped early has not succeeded: the default handler stays.
            ("check-config", signal.SIGTERM, -signal.SIGTERM),
        ],
    )
    async def test_signal_during_the_heavy_imports(
        self, command: str, sig: signal.Signals, code: int, tmp_path: Path
    ) -> None:
        """A signal while the CLI's imports are held at `aiohttp` gives the command's code."""
        process, reached = spawn_gated(command, tmp_path)
        try:
            with anyio.fail_after(30):
                while not reached.exists():
                    assert process.poll() is None, process.communicate()[1].decode()
                    await anyio.sleep(0.01)
            process.send_signal(sig)
            # Within 20 s: had the signal been ignored, the gate would hold the import for 60 s.
            assert await exit_code(process, timeout_s=20) == code
        finally:
            if process.poll() is None:
                process.kill()
            _, err = process.communicate(timeout=10)
        if code == 0:
            assert err.decode().splitlines() == [
                f"backup-monitor: {sig.name} during start-up; nothing was emitted, exiting 0"
            ]

    @pytest.mark.parametrize("delay_s", [0.05, 0.1, 0.2, 0.3])
    async def test_sigterm_soon_after_spawn_exits_0(
        self, delay_s: float, emu: Emulator, tmp_path: Path
    ) -> None:
        """SIGTERM `delay_s` after spawning the daemon exits 0, whatever start-up was doing.

        The interpreter's own start (about 50 ms here, before our first instruction) cannot be
        covered by any handler of ours, so the signal waits until SIGTERM is caught if it is
        not by then.
        """
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "monitor.sqlite")
        one = daemon(tmp_path, config, "daemon")
        try:
            spawned = time.monotonic()
            one.start()
            await anyio.sleep(max(0.0, spawned + delay_s - time.monotonic()))
            await one.wait_until_catching(signal.SIGTERM)
            assert await one.stop(signal.SIGTERM) == 0
        finally:
            one.kill_if_running()


def test_console_script_starts_in_the_entry_module() -> None:
    """`backup-monitor` runs monitor.entry:main, the same entry as `python -m monitor`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["backup-monitor"] == "monitor.entry:main"
    assert "from monitor.entry import main" in (REPO / "monitor" / "__main__.py").read_text()


def _run_under_a_tty(config: Path, events: Path, environ: dict[str, str]) -> bytes:
    """Everything `run` writes to a real pseudo-terminal (stdout and stderr) until its vaults'
    first events are in `events`, then until it exits after a SIGTERM."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*COMMAND, "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=environ,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + 30
    stopped = False
    try:
        while True:
            if not stopped and events.exists() and events.stat().st_size > 0:
                process.send_signal(signal.SIGTERM)
                stopped = True
            assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal's last writer
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=15) == 0, output.decode(errors="replace")[-2000:]
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return bytes(output)


@pytest.mark.parametrize("no_color", [True, False])
async def test_no_color_under_a_real_terminal(
    emu: Emulator, tmp_path: Path, no_color: bool
) -> None:
    """On a real terminal (a pty) the default `format = "auto"` writes coloured console lines;
    with NO_COLOR=1 it writes the same lines with 0 ANSI escape sequences."""
    events = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "monitor.toml",
        emu,
        tmp_path / "state.sqlite",
        sections={"log": {"format": "auto"}, "events": {"sink": str(events)}},
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    if no_color:
        environ["NO_COLOR"] = "1"
    output = await anyio.to_thread.run_sync(_run_under_a_tty, config, events, environ)
    assert b"monitor.starting" in output
    assert b"vault.watching" in output
    sequences = len(re.findall(rb"\x1b\[", output))
    if no_color:
        assert sequences == 0
    else:
        assert sequences > 0
