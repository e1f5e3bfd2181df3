"""A real Alertmanager for the tests: the `prometheus-alertmanager` binary on a loopback port.

`Alertmanager(workdir)` is a plain class (a context manager) usable from sync and async tests;
`alertmanager` is its pytest fixture, one fresh instance per test. The instance writes its own
config (a `null` receiver, or a webhook receiver at `webhook_url`; short group timers), keeps
its state under `workdir`, gossips with nobody (`--cluster.listen-address=`) and listens on
127.0.0.1 only.

Without the binary the test is skipped with the reason (the Debian package to install), unless
`TESTS_REQUIRE_BINARIES=1` is set (as `.ci/run` does): then it fails (`tests/binaries.py`).

Measured with 0.25: `GET /api/v2/alerts` never lists a resolved alert (whatever `active`
says), so resolution shows as the alert leaving that list, in the
`alertmanager_alerts_received_total{status="resolved"}` counter, and in the webhook's
notifications.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson
import pytest

from tests.binaries import find_binary

BINARIES = ("prometheus-alertmanager", "alertmanager")
DEBIAN_PACKAGE = "prometheus-alertmanager"
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0
_START_ATTEMPTS = 3  # a free port can be taken between our probe and Alertmanager's bind
_T = TypeVar("_T")


def find_alertmanager() -> str:
    """The Alertmanager binary on PATH; skips (or fails) the test when there is none."""
    return find_binary(*BINARIES, package=DEBIAN_PACKAGE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], _T | None], *, deadline_s: float = 15.0, what: str = "a condition"
) -> _T:
    """Call `probe` until it returns something not None (returned), or fail at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(0.05)


class Alertmanager:
    """One Alertmanager process, started by `start()` (or `with`), stopped by `stop()`.

    Attributes:
        url: its base URL (`http://127.0.0.1:PORT`), once started.
        log_path: its log (stdout and stderr).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        webhook_url: str | None = None,
        group_wait: str = "50ms",
        group_interval: str = "100ms",
        repeat_interval: str = "1h",
    ) -> None:
        self.workdir = Path(workdir)
        self.webhook_url = webhook_url
        self._timers = {
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        }
        self.url = ""
        self.log_path = self.workdir / "alertmanager.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def config(self) -> dict[str, Any]:
        """The configuration file's content (written as JSON, which YAML reads as it is)."""
        receiver: dict[str, Any] = {"name": "null"}
        if self.webhook_url is not None:
            receiver = {
                "name": "webhook",
                "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
            }
        return {
            "route": {"receiver": receiver["name"], "group_by": ["..."], **self._timers},
            "receivers": [receiver],
        }

    def start(self) -> Self:
        """Start the process and wait until `/-/ready` answers 200.

        Raises:
            AssertionError: it exited, or was not ready within `READY_DEADLINE_S`; with its log.
        """
        if self._process is not None:
            raise RuntimeError("this Alertmanager is already started")
        binary = find_alertmanager()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "alertmanager.yml"
        config_path.write_bytes(orjson.dumps(self.config(), option=orjson.OPT_INDENT_2))
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config_path}",
                        f"--storage.path={self.workdir / 'data'}",
                        "--cluster.listen-address=",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=debug",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self._process = None
            if attempt + 1 < _START_ATTEMPTS and "address already in use" in self.log():
                continue
            break
        raise AssertionError(f"Alertmanager did not become ready; its log:\n{self.log()[-4000:]}")

    def _wait_ready(self) -> bool:
        process = self._process
        assert process is not None
        end = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < end:
            if process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return True
            time.sleep(0.05)
        self._terminate(process)
        return False

    def stop(self) -> None:
        """Terminate the process (SIGTERM), kill it after `STOP_DEADLINE_S`; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            self._terminate(process)

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE_S)

    def log(self) -> str:
        """What the process wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _get(self, path: str) -> bytes:
        if self._process is None:
            raise RuntimeError("this Alertmanager is not running")
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:
            body: bytes = answer.read()
            return body

    def alerts(self, *, active: bool = True, filters: Sequence[str] = ()) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts`: with `active`, the alerts firing now (silenced, inhibited and
        not yet processed ones too); `filters` are matchers such as `alertname="X"`.

        Resolved alerts are never listed (Alertmanager's API v2 leaves them out).
        """
        query: list[tuple[str, str]] = [("active", "true" if active else "false")]
        query += [("filter", f) for f in filters]
        alerts = orjson.loads(self._get(f"/api/v2/alerts?{urllib.parse.urlencode(query)}"))
        assert isinstance(alerts, list)
        return alerts

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of `/metrics` (0 when absent), matched by name and labels."""
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in self._get("/metrics").decode().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            sample, _, rest = head.partition("{")
            if sample == name and wanted <= set(rest.rstrip("}").split(",")):
                return float(value)
        return 0.0


@pytest.fixture(name="alertmanager")
def _alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    """A running Alertmanager with a null receiver, stopped after the test."""
    with Alertmanager(tmp_path / "alertmanager") as instance:
        yield instance
