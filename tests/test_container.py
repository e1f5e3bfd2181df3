"""The container's contract without a container engine: the built wheel, run as the Dockerfile says.

Steps: build the wheel offline (`pip wheel --no-build-isolation`, setuptools from the test extras)
from a copy of the sources; install it without dependencies into a fresh venv, whose dependencies
resolve through a `.pth` file pointing at the project venv's site-packages (the image gets them from
its wheelhouse instead; `monitor` itself must come from the wheel); make the venv read-only; run
the final stage's ENTRYPOINT + CMD with exactly its ENV (plus the BACKUP_MONITOR_* configuration a
user passes with `docker run -e`), as its USER when the test runs as root, against the emulator.
Two translations stand in for `docker run -v STATE:/var/lib/backup-monitor -p FREE:9464`: the
volume path becomes a temporary directory and the ops port a free one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator

ROOT = Path(__file__).resolve().parent.parent
VOLUME = "/var/lib/backup-monitor"


@dataclass
class FinalStage:
    """What the Dockerfile's last stage says about how the process runs."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    expose: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)


def parse_dockerfile(text: str) -> FinalStage:
    """The instructions of the last stage that shape the running process (exec forms only)."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    last = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    stage = FinalStage()
    for line in lines[last + 1 :]:
        word, _, rest = line.partition(" ")
        match word.upper():
            case "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    stage.env[key] = value
            case "USER":
                stage.user = rest.strip()
            case "WORKDIR":
                stage.workdir = rest.strip()
            case "EXPOSE":
                stage.expose += rest.split()
            case "VOLUME":
                stage.volumes += json.loads(rest)
            case "ENTRYPOINT":
                stage.entrypoint = json.loads(rest)
            case "CMD":
                stage.cmd = json.loads(rest)
            case "HEALTHCHECK":
                stage.healthcheck = json.loads(rest[rest.index("CMD ") + 4 :])
    return stage


def test_dockerfile_contract() -> None:
    """Non-root numeric user, exec-form entrypoint, the state volume, ops port exposed and bound
    on all interfaces, a curl-free health check."""
    stage = parse_dockerfile((ROOT / "Dockerfile").read_text())
    uid = stage.user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert stage.entrypoint == ["backup-monitor"]
    assert stage.cmd == ["run"]
    assert stage.volumes == [VOLUME]
    assert stage.env["BACKUP_MONITOR_STATE__PATH"].startswith(VOLUME + "/")
    assert stage.env["BACKUP_MONITOR_OPS__LISTEN"] == "0.0.0.0:9464"
    assert stage.expose == ["9464"]
    assert stage.healthcheck[:2] == ["python", "-c"]
    assert "/healthz" in stage.healthcheck[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=240)


def make_read_only(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def traversable(path: Path) -> bool:
    """Whether any user may reach and run `path` (every parent searchable by others)."""
    real = path.resolve()
    return real.exists() and all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def interpreter() -> Path:
    """A Python of this version that the image's unprivileged user can run.

    The image runs its own interpreter; here the fresh venv must be based on one that uid 10001
    can execute, which a Python under /root (pyenv) is not.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(getattr(sys, "_base_executable", sys.executable))]
    candidates += [Path(d) / version for d in ("/usr/local/bin", "/usr/bin")]
    for candidate in candidates:
        if os.geteuid() != 0 or traversable(candidate):
            return candidate
    pytest.skip(f"no {version} that an unprivileged user can run")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh venv holding the built wheel (read-only), in a directory others may traverse."""
    base = Path(tempfile.mkdtemp(prefix="container-contract-"))
    base.chmod(0o755)
    try:
        src = base / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "constraints.txt"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(
            ROOT / "monitor", src / "monitor", ignore=shutil.ignore_patterns("__pycache__")
        )
        wheels = base / "wheels"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        run(
            *pip,
            "wheel",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            "--no-index",
            "-w",
            wheels,
            src,
        )
        (wheel,) = wheels.glob("backup_job_monitor-*.whl")
        venv = base / "venv"
        run(interpreter(), "-m", "venv", "--without-pip", venv)
        run(
            *pip,
            "--python",
            venv / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        )
        site = next((venv / "lib").glob("python3*/site-packages"))
        # Dependencies only: this is not a site dir, so its own .pth files (the project's
        # editable install) are not processed and `monitor` can only come from the wheel.
        (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        make_read_only(venv)
        yield venv
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(base, ignore_errors=True)


def start(
    command: list[str],
    env: dict[str, str],
    cwd: str,
    stdout: Path,
    stderr: Path,
    identity: dict[str, Any],
) -> subprocess.Popen[bytes]:
    with stdout.open("wb") as out, stderr.open("wb") as err:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, **identity)


async def test_wheel_runs_as_the_image_would(installed: Path) -> None:
    """Read-only code, unprivileged user, the Dockerfile's environment and command: /readyz turns
    200 and every vault is polled, events reach stdout, the health check passes, SIGTERM exits
    0 with vaults checkpointed."""
    stage = parse_dockerfile((ROOT / "Dockerfile").read_text())
    work = installed.parent
    probe = await anyio.run_process(
        [installed / "bin" / "python", "-c", "import monitor; print(monitor.__file__)"],
        cwd=work,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert probe.stdout.decode().startswith(str(installed)), probe.stdout
    state = work / "state"
    state.mkdir()
    as_root = os.geteuid() == 0
    uid, _, gid = stage.user.partition(":")
    if as_root:  # as the image's USER; without root, the test's own user is unprivileged already
        os.chown(state, int(uid), int(gid or uid))
    port = free_port()

    def mapped(value: str) -> str:
        value = value.replace(VOLUME, str(state))
        return re.sub(r"^(0\.0\.0\.0):9464$", rf"\g<1>:{port}", value)

    env = {key: mapped(value) for key, value in stage.env.items()}
    env["PATH"] = f"{installed / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = str(state)
    settings = EmulatorSettings(
        world=WorldSettings(seed=17, subscriptions=2, vaults_per_subscription=3)
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        env |= {  # what a user passes with `docker run -e`
            "BACKUP_MONITOR_AZURE__ARM_ENDPOINT": emu.url + "/",
            "BACKUP_MONITOR_AZURE__CREDENTIAL": "static",
            "BACKUP_MONITOR_AZURE__STATIC_TOKEN": emu.token,
            "BACKUP_MONITOR_AZURE__ALLOW_HTTP_LOOPBACK": "true",
            "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S": "1",
            "BACKUP_MONITOR_POLL__IDLE_INTERVAL_S": "2",
            "BACKUP_MONITOR_POLL__LOOKBACK_S": "3600",
        }
        command = [str(installed / "bin" / stage.entrypoint[0]), *stage.entrypoint[1:], *stage.cmd]
        identity: dict[str, Any] = (
            {"user": int(uid), "group": int(gid or uid), "extra_groups": []} if as_root else {}
        )
        stdout, stderr = work / "stdout.jsonl", work / "stderr.log"
        process = start(command, env, mapped(stage.workdir), stdout, stderr, identity)
        try:
            with anyio.fail_after(30):
                while True:
                    assert process.poll() is None, stderr.read_text()[-2000:]
                    try:
                        # Ready, and every vault polled once (readiness alone does not wait
                        # for vaults: it means the process serves its shard).
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            body = orjson.loads(await response.read())
                            if response.status == 200 and body["pending_vaults"] == 0:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await anyio.sleep(0.25)
            events = [orjson.loads(line) for line in stdout.read_bytes().splitlines()]
            assert events
            assert all(e["schema_version"] == 1 for e in events)
            check = await anyio.run_process(stage.healthcheck, env=env, check=False, **identity)
            assert check.returncode == 0, check.stderr
            process.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: process.wait(timeout=20))
            assert code == 0, stderr.read_text()[-2000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    logs = [orjson.loads(line) for line in stderr.read_bytes().splitlines() if line]
    assert any(r.get("event") == "shutdown.done" for r in logs)
    # closing(): a connection's `with` only commits; one left open until collected deletes its
    # -shm file under the fixture's teardown.
    with closing(sqlite3.connect(state / "monitor.sqlite")) as db:
        (vaults,) = db.execute("SELECT count(*) FROM vaults").fetchone()
    assert vaults == 6
    if as_root:
        assert (state / "monitor.sqlite").stat().st_uid == int(uid)
