"""A loopback webhook receiver for tests: a real aiohttp server in a thread of its own.

`WebhookReceiver` listens on 127.0.0.1 (an ephemeral port, HTTP or HTTPS), records every
request, checks the HMAC signature of the webhook sink when it has the secret, counts the
event ids it accepted, and can be told to fail, to answer late, or to go down and come back on
the same port. It runs its own event loop in a background thread, so the same object serves
sync tests (a daemon in a subprocess) and async tests (a sink in the test's own loop):

    with WebhookReceiver(secret=b"k") as receiver:      # started; receiver.url is set
        ...                                             # POST to receiver.url
        receiver.wait_for(lambda r: len(r.event_ids()) >= 3, timeout=10)
        assert receiver.duplicates() == 0 and receiver.bad_signatures == 0

    async def test_x() -> None:
        with WebhookReceiver() as receiver:
            await sink.deliver(batch)                   # the receiver's loop answers
            await receiver.wait_for_async(lambda r: r.requests, within_s=5)

Only ever block on it through `wait_for` from a thread that is not running the sink's loop;
from an async test, use `wait_for_async` (it waits in a worker thread).

What it answers: 200 `{"ok": true}` unless told otherwise. `fail_with(status, retry_after=,
times=)` answers `status` (with a `Retry-After` header when given) to the next `times`
requests, or to every request until `stop_failing()`; `respond_after(seconds, times=)` holds
answers back (to make a client time out). A request whose signature does not verify is
answered 401 and counted in `bad_signatures`, whatever else was asked.

Down and up: `go_down()` closes the listening socket and drops every open connection (a
client then gets "connection refused", or a dropped keep-alive connection); while down, a
bound socket that does not listen holds the port, so `come_up()` listens again on the same
port (and retries for a few seconds should the port still be briefly taken).

Event ids: `event_ids()` lists, in arrival order, the event ids of the requests it accepted
(2xx): those of a JSON array of events, of a CloudEvents batch (each envelope's `id`), and for
a Slack or Teams message its `Idempotency-Key` (the event id). Requests answered with an error
are recorded in `requests` but their events are not counted.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from aiohttp import web

SIGNATURE_HEADER = "X-Backup-Monitor-Signature"
TIMESTAMP_HEADER = "X-Backup-Monitor-Timestamp"
_T = TypeVar("_T")
_START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    """One request the receiver read, and what it answered.

    Attributes:
        method: the HTTP method.
        path: the path and query string.
        headers: the request's headers (the last value of a repeated one; names as sent).
        body: the raw body.
        json: the body parsed as JSON, or None when it is not JSON.
        signature_ok: whether the signature verified; None when the receiver has no secret.
        status: the status the receiver answered.
        arrived_s: `time.monotonic()` when the request was read.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any
    signature_ok: bool | None
    status: int
    arrived_s: float

    def header(self, name: str) -> str | None:
        """A header's value, by case-insensitive name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def event_ids(self) -> list[str]:
        """The event ids this request carried (see the module docstring)."""
        body = self.json
        if isinstance(body, list):
            ids = []
            for item in body:
                if isinstance(item, dict):
                    value = item.get("id") if "specversion" in item else item.get("event_id")
                    if isinstance(value, str):
                        ids.append(value)
            return ids
        key = self.header("Idempotency-Key")
        return [key] if isinstance(body, dict) and key else []


def verify_signature(secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the webhook sink's signature headers verify `body` under `secret`.

    The recipe of docs/sinks.md, as a receiver writes it (a real one also refuses a timestamp
    far from its own clock, against replays).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    sent = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or not sent.startswith("sha256="):
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sent.removeprefix("sha256="), expected)


class WebhookReceiver:
    """A real HTTP(S) server on 127.0.0.1 that records what a webhook sink sends.

    Args:
        secret: the HMAC key the sink signs with; None: signatures are not checked.
        ssl_context: a server-side context (tests/conftest.py `server_ssl_context`) for HTTPS.
        path: the path it serves (any other answers 404).
    """

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        path: str = "/hook",
    ) -> None:
        self.secret = secret
        self._ssl_context = ssl_context
        self.path = path
        self.port = 0
        """The port it listens on (set by `start`, kept across `go_down`/`come_up`)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._bad_signatures = 0
        self._fail_status: int | None = None
        self._fail_retry_after: str | None = None
        self._fail_times: int | None = None
        self._fail_after = 0
        self._delay_s = 0.0
        self._delay_times: int | None = None
        self._is_up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stop: asyncio.Event | None = None
        self._placeholder: socket.socket | None = None

    # ----------------------------------------------------------------------------------------
    # Lifecycle

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The URL to configure the sink with (`http(s)://127.0.0.1:PORT/hook`)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    @property
    def is_up(self) -> bool:
        """Whether it listens now."""
        return self._is_up

    def start(self) -> None:
        """Start the server thread and listen on an ephemeral port (once)."""
        if self._thread is not None:
            raise RuntimeError("WebhookReceiver.start: already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:  # reported to start(); the thread ends
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            raise RuntimeError("WebhookReceiver.start: the server did not start in time")
        if failure:
            raise RuntimeError("WebhookReceiver.start: the server failed") from failure[0]

    def stop(self) -> None:
        """Close every connection and the listening socket, and end the thread; idempotent."""
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is None or thread is None or stop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(_START_TIMEOUT_S)
        self._loop = None

    def go_down(self) -> None:
        """Stop listening and drop the open connections: clients get connection refused."""
        self._call(self._go_down())

    def come_up(self) -> None:
        """Listen again on the same port."""
        self._call(self._come_up())

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        try:
            await self._listen()
            ready.set()
            await self._stop.wait()
        finally:
            await self._runner.cleanup()
            self._release_placeholder()
            self._is_up = False

    async def _listen(self) -> None:
        assert self._runner is not None
        deadline = time.monotonic() + 5.0
        while True:
            site = web.TCPSite(
                self._runner,
                "127.0.0.1",
                self.port,
                ssl_context=self._ssl_context,
                reuse_address=True,
            )
            try:
                await site.start()
                break
            except OSError as exc:
                # The port of a receiver coming back up may be held for a moment (another
                # socket's ephemeral port); try again for a few seconds.
                if exc.errno != errno.EADDRINUSE or self.port == 0 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self._is_up = True

    async def _go_down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
            # Hold the port while down with a socket that is bound but does not listen: a
            # connection is still refused, and no other socket can take the port meanwhile
            # (an ephemeral port handed to some client), so `come_up` gets it back.
            placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                placeholder.bind(("127.0.0.1", self.port))
            except OSError:
                placeholder.close()
            else:
                self._placeholder = placeholder
        assert self._runner is not None
        server = self._runner.server
        if server is not None:
            for connection in list(server.connections):
                connection.force_close()
        self._is_up = False

    async def _come_up(self) -> None:
        if self._site is None:
            self._release_placeholder()
            await self._listen()

    def _release_placeholder(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("WebhookReceiver: not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_START_TIMEOUT_S)

    # ----------------------------------------------------------------------------------------
    # Behaviour

    def fail_with(
        self,
        status: int,
        *,
        retry_after: str | float | None = None,
        times: int | None = None,
        after: int = 0,
    ) -> None:
        """Answer `status` (and `Retry-After: retry_after`, seconds or an HTTP date) to the next
        `times` requests, or to all of them until `stop_failing`; with `after`, that many
        requests are answered 200 first."""
        with self._lock:
            self._fail_after = after
            self._fail_status = status
            self._fail_retry_after = None if retry_after is None else str(retry_after)
            self._fail_times = times

    def stop_failing(self) -> None:
        """Answer 200 again (also ends `respond_after`)."""
        with self._lock:
            self._fail_status, self._fail_times, self._fail_retry_after = None, None, None
            self._fail_after = 0
            self._delay_s, self._delay_times = 0.0, None

    def respond_after(self, seconds: float, *, times: int | None = None) -> None:
        """Hold back the answer to the next `times` requests (all: None) for `seconds`."""
        with self._lock:
            self._delay_s, self._delay_times = seconds, times

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        arrived = time.monotonic()
        headers = dict(request.headers.items())
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        signature_ok = None if self.secret is None else verify_signature(self.secret, headers, body)
        with self._lock:
            delay = 0.0
            if self._delay_s > 0 and self._delay_times != 0:
                delay = self._delay_s
                if self._delay_times is not None:
                    self._delay_times -= 1
            status, retry_after = 200, None
            if request.path != self.path:
                status = 404
            elif signature_ok is False:
                status = 401
                self._bad_signatures += 1
            elif self._fail_status is not None and self._fail_after > 0:
                self._fail_after -= 1
            elif self._fail_status is not None and self._fail_times != 0:
                status, retry_after = self._fail_status, self._fail_retry_after
                if self._fail_times is not None:
                    self._fail_times -= 1
        record = ReceivedRequest(
            method=request.method,
            path=request.path_qs,
            headers=headers,
            body=body,
            json=parsed,
            signature_ok=signature_ok,
            status=status,
            arrived_s=arrived,
        )
        with self._changed:
            self._requests.append(record)
            self._changed.notify_all()
        if delay:
            await asyncio.sleep(delay)  # recorded already: the request did arrive
        answer_headers = {} if retry_after is None else {"Retry-After": retry_after}
        if status < 300:
            return web.json_response({"ok": True}, status=status)
        return web.json_response(
            {"error": f"told to answer {status}"}, status=status, headers=answer_headers
        )

    # ----------------------------------------------------------------------------------------
    # What it saw

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request read so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[ReceivedRequest]:
        """The requests answered with a 2xx, in arrival order."""
        return [r for r in self.requests if 200 <= r.status < 300]

    @property
    def bad_signatures(self) -> int:
        """How many requests carried a signature that did not verify (answered 401)."""
        with self._lock:
            return self._bad_signatures

    def event_ids(self) -> list[str]:
        """The event ids of the accepted requests, in arrival order, repeats included."""
        return [i for r in self.accepted for i in r.event_ids]

    def duplicates(self) -> int:
        """How many accepted event ids repeat an earlier one."""
        ids = self.event_ids()
        return len(ids) - len(set(ids))

    def wait_for(
        self, predicate: Callable[[WebhookReceiver], object], timeout: float
    ) -> WebhookReceiver:
        """Block until `predicate(self)` is true (checked at each request), or fail.

        Raises:
            TimeoutError: it was still false after `timeout` seconds; says how many requests
                and event ids had arrived.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = len(self._requests)
            if predicate(self):
                return self
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._changed:
                if len(self._requests) == seen:  # nothing new since the predicate looked
                    self._changed.wait(min(left, 0.5))
        count = len(self.requests)
        raise TimeoutError(
            f"WebhookReceiver.wait_for: not true after {timeout:g}s "
            f"({count} requests, {len(self.event_ids())} accepted event ids)"
        )

    async def wait_for_async(
        self, predicate: Callable[[WebhookReceiver], object], within_s: float
    ) -> WebhookReceiver:
        """`wait_for` from an async test: waits in a worker thread, so the loop runs on."""
        return await anyio.to_thread.run_sync(self.wait_for, predicate, within_s)
