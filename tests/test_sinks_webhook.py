"""Tests of the webhook sink against a real loopback receiver (tests/receivers.py)."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from monitor import __version__
from monitor.clock import SystemClock
from monitor.config_sinks import WebhookFormat, WebhookSinkSettings
from monitor.errors import DeliveryError
from monitor.outbox import OutboxSink
from monitor.sink_http import open_sink_session
from monitor.sinks_webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, signature
from tests.fakes import FakeClock
from tests.receivers import WebhookReceiver, verify_signature
from tests.test_sink_formats import FAILED_ERRORS, distinct_events, job_event, outbox

SECRET = b"s3cret-key"
SECRET_PATH = "/services/T000/B000/XSECRETX"  # what a Slack webhook URL hides in its path


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET, path=SECRET_PATH) as receiver:
        yield receiver


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_sink_session(ssl.create_default_context()) as session:
        yield session


def make_sink(
    receiver: WebhookReceiver,
    session: aiohttp.ClientSession,
    *,
    fmt: WebhookFormat = "json",
    secret: bytes | None = SECRET,
    timeout_s: float = 5.0,
    clock: SystemClock | FakeClock | None = None,
) -> WebhookSink:
    settings = WebhookSinkSettings(
        type="webhook", name="ops-chat", url=receiver.url, format=fmt, timeout_s=timeout_s
    )
    return WebhookSink(settings, session=session, clock=clock or SystemClock(), secret=secret)


def assert_no_url(exc: DeliveryError, receiver: WebhookReceiver) -> None:
    """The error names the sink, never the URL (nor its secret path)."""
    text = str(exc)
    assert "webhook ops-chat" in text
    assert "XSECRETX" not in text
    assert receiver.url not in text


class TestDelivery:
    """A batch reaches the receiver signed, keyed and in order."""

    async def test_json_batch_signed(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """One signed POST with the batch's ids in order, and the documented headers."""
        events = distinct_events(5)
        sink = make_sink(receiver, session)
        _: OutboxSink = sink  # the contract, checked by mypy
        assert (sink.kind, sink.name) == ("webhook", "ops-chat")
        await sink.deliver(outbox(*events))
        [request] = receiver.requests
        assert receiver.event_ids() == [e["event_id"] for e in events]
        assert request.signature_ok is True
        assert receiver.bad_signatures == 0
        assert request.header("Content-Type") == "application/json"
        assert request.header("User-Agent") == f"backup-job-monitor/{__version__}"
        timestamp = request.header(TIMESTAMP_HEADER)
        assert timestamp is not None
        assert request.header(SIGNATURE_HEADER) == signature(SECRET, int(timestamp), request.body)
        assert request.json == events
        assert await sink.delivered_ids() == set()
        await sink.aclose()
        assert not session.closed

    async def test_wrong_secret_fails_verification(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """A body signed with another key does not verify: the receiver refuses it (401) and
        counts it; the sink retries (a wrong key must hold events back, not drop them)."""
        sink = make_sink(receiver, session, secret=b"not-the-key")
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(outbox(job_event()))
        assert caught.value.status == 401
        assert not caught.value.permanent
        assert caught.value.delivered == 0
        assert receiver.bad_signatures == 1
        [request] = receiver.requests
        assert not verify_signature(SECRET, request.headers, request.body)
        assert verify_signature(b"not-the-key", request.headers, request.body)
        assert receiver.event_ids() == []

    async def test_unsigned_without_secret(self, session: aiohttp.ClientSession) -> None:
        """With no secret, no signature headers are sent."""
        with WebhookReceiver() as receiver:
            await make_sink(receiver, session, secret=None).deliver(outbox(job_event()))
            [request] = receiver.requests
        assert request.header(SIGNATURE_HEADER) is None
        assert request.header(TIMESTAMP_HEADER) is None
        assert request.signature_ok is None

    async def test_cloudevents_and_teams_content(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """CloudEvents go as one batch; Teams as one card per event, keyed by event id."""
        events = distinct_events(3)
        await make_sink(receiver, session, fmt="cloudevents").deliver(outbox(*events))
        await make_sink(receiver, session, fmt="teams").deliver(outbox(*events))
        first, *cards = receiver.requests
        assert first.header("Content-Type") == "application/cloudevents-batch+json"
        assert [c.header("Idempotency-Key") for c in cards] == [e["event_id"] for e in events]
        ids = [e["event_id"] for e in events]
        assert receiver.event_ids() == ids + ids
        assert receiver.duplicates() == 3
        assert all(r.signature_ok for r in receiver.requests)


class TestRetries:
    """What each failure becomes for the worker."""

    async def test_idempotency_key_stable_across_retries(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """A 500 is retryable; the retry of the same batch sends the same key and body."""
        batch = outbox(*distinct_events(3))
        sink = make_sink(receiver, session)
        receiver.fail_with(500, times=1)
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(batch)
        assert caught.value.status == 500
        assert not caught.value.permanent
        assert caught.value.retry_after_s is None
        assert_no_url(caught.value, receiver)
        await sink.deliver(batch)
        failed, ok = receiver.requests
        assert (failed.status, ok.status) == (500, 200)
        assert failed.header("Idempotency-Key") == ok.header("Idempotency-Key")
        assert failed.body == ok.body
        assert receiver.event_ids() == [e.event_id for e in batch]

    async def test_429_retry_after_seconds(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """A 429 with `Retry-After: 7` asks the worker to wait 7 s."""
        receiver.fail_with(429, retry_after=7)
        with pytest.raises(DeliveryError) as caught:
            await make_sink(receiver, session).deliver(outbox(job_event()))
        assert caught.value.status == 429
        assert caught.value.retry_after_s == 7
        assert not caught.value.permanent

    async def test_429_retry_after_http_date(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """An HTTP-date `Retry-After` is read against the sink's clock."""
        clock = FakeClock()  # 2026-11-25T10:00:00Z, a Wednesday
        receiver.fail_with(503, retry_after="Wed, 25 Nov 2026 10:02:00 GMT")
        sink = make_sink(receiver, session, clock=clock)
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(outbox(job_event()))
        assert caught.value.status == 503
        assert caught.value.retry_after_s == 120
        [request] = receiver.requests
        assert request.header(TIMESTAMP_HEADER) == str(int(clock.utcnow().timestamp()))

    @pytest.mark.parametrize(("status", "permanent"), [(403, False), (404, False), (413, True)])
    async def test_refusals(
        self,
        receiver: WebhookReceiver,
        session: aiohttp.ClientSession,
        status: int,
        permanent: bool,
    ) -> None:
        """A refusal of the sender or the URL retries; one of the bytes (413) is permanent."""
        receiver.fail_with(status)
        with pytest.raises(DeliveryError) as caught:
            await make_sink(receiver, session).deliver(outbox(job_event()))
        assert caught.value.status == status
        assert caught.value.permanent is permanent

    async def test_400_is_permanent(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """A 400 refuses these bytes: permanent, with the receiver's reason quoted."""
        receiver.fail_with(400)
        with pytest.raises(DeliveryError) as caught:
            await make_sink(receiver, session).deliver(outbox(job_event()))
        assert caught.value.status == 400
        assert caught.value.permanent
        assert "told to answer 400" in str(caught.value)
        assert_no_url(caught.value, receiver)

    async def test_timeout_is_retryable(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """No answer within timeout_s: retryable, no status."""
        receiver.respond_after(3, times=1)
        with pytest.raises(DeliveryError) as caught:
            await make_sink(receiver, session, timeout_s=0.3).deliver(outbox(job_event()))
        assert caught.value.status is None
        assert not caught.value.permanent
        assert "no answer within 0.3s" in str(caught.value)
        assert_no_url(caught.value, receiver)

    async def test_connection_refused_then_back(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """A receiver that is down is retryable; back up on the same port, the retry lands."""
        sink = make_sink(receiver, session)
        batch = outbox(*distinct_events(2))
        await sink.deliver(batch[:1])  # a keep-alive connection exists now
        port = receiver.port
        receiver.go_down()
        assert not receiver.is_up
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(batch[1:])
        assert caught.value.status is None
        assert not caught.value.permanent
        assert_no_url(caught.value, receiver)
        receiver.come_up()
        assert receiver.port == port
        await sink.deliver(batch[1:])
        assert receiver.event_ids() == [e.event_id for e in batch]

    async def test_partial_progress_in_slack_mode(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """Three messages, the second refused: delivered=1, so only the rest is retried."""
        batch = outbox(*distinct_events(3))
        receiver.fail_with(500, after=1, times=1)
        sink = make_sink(receiver, session, fmt="slack")
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(batch)
        assert caught.value.delivered == 1
        assert caught.value.status == 500
        assert "after 1 of 3 events" in str(caught.value)
        assert [r.status for r in receiver.requests] == [200, 500]
        await sink.deliver(batch[caught.value.delivered :])
        assert receiver.event_ids() == [e.event_id for e in batch]
        assert receiver.duplicates() == 0


class TestTls:
    """HTTPS with an explicit SSLContext."""

    async def test_trusted_ca(
        self, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
    ) -> None:
        """A receiver whose certificate the session's CA signed gets the batch."""
        with WebhookReceiver(ssl_context=server_ssl_context) as receiver:
            assert receiver.url.startswith("https://127.0.0.1:")
            async with open_sink_session(client_ssl_context) as session:
                await make_sink(receiver, session).deliver(outbox(job_event()))
            assert len(receiver.event_ids()) == 1

    async def test_untrusted_certificate_is_refused(
        self, server_ssl_context: ssl.SSLContext
    ) -> None:
        """The system's CAs do not know the test CA: the POST fails before any byte is sent."""
        with WebhookReceiver(ssl_context=server_ssl_context) as receiver:
            async with open_sink_session(ssl.create_default_context()) as session:
                with pytest.raises(DeliveryError) as caught:
                    await make_sink(receiver, session).deliver(outbox(job_event()))
            assert caught.value.status is None
            assert "Certificate" in str(caught.value) or "SSL" in str(caught.value)
            assert receiver.requests == []


class TestChatMessages:
    """The Slack and Teams bodies, as the receiver gets them."""

    async def test_slack_failed_job(
        self, receiver: WebhookReceiver, session: aiohttp.ClientSession
    ) -> None:
        """The message a person reads names the vault, entity, error and recommendation."""
        event = job_event(status="Failed", errors=FAILED_ERRORS)
        await make_sink(receiver, session, fmt="slack").deliver(outbox(event))
        [request] = receiver.requests
        assert request.header("Idempotency-Key") == event["event_id"]
        text = orjson.dumps(request.json).decode()
        for needed in ("v1", "vm-web-01", "UserErrorVmNotFound", "Check that the VM exists"):
            assert needed in text
        assert receiver.event_ids() == [event["event_id"]]


DOCS = Path(__file__).resolve().parent.parent / "docs" / "sinks.md"


async def test_documented_verification_recipe(
    receiver: WebhookReceiver, session: aiohttp.ClientSession
) -> None:
    """The snippet in docs/sinks.md accepts a signed request and refuses a changed one."""
    text = DOCS.read_text(encoding="utf-8")
    snippet = text.split("<!-- verify-snippet -->\n```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), scope)
    verify = scope["verify"]
    await make_sink(receiver, session).deliver(outbox(job_event()))
    [request] = receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify(SECRET, headers, request.body)
    assert not verify(SECRET, headers, request.body + b" ")
    assert not verify(b"other", headers, request.body)
    old = dict(headers, **{"x-backup-monitor-timestamp": "1000"})
    assert not verify(SECRET, old, request.body)


class TestReceiver:
    """The receiver itself, from a sync test (as the daemon's end-to-end tests use it)."""

    def test_sync_use_and_down_up(self) -> None:
        """Plain urllib POSTs are recorded and counted; down refuses, up listens on the port."""
        events = distinct_events(2)
        with WebhookReceiver() as receiver:
            body = orjson.dumps(events)
            post = urllib.request.Request(receiver.url, data=body, method="POST")
            with urllib.request.urlopen(post, timeout=5) as answer:
                assert answer.status == 200
            receiver.wait_for(lambda r: len(r.event_ids()) == 2, timeout=5)
            port = receiver.port
            receiver.go_down()
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(post, timeout=5)
            receiver.come_up()
            assert receiver.port == port
            receiver.fail_with(503, retry_after=1, times=1)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=5)
            assert refused.value.code == 503
            assert refused.value.headers["Retry-After"] == "1"
            refused.value.close()
            with urllib.request.urlopen(post, timeout=5) as answer:
                assert answer.status == 200
            receiver.wait_for(lambda r: len(r.requests) == 3, timeout=5)
            assert receiver.duplicates() == 2
            with pytest.raises(TimeoutError, match="3 requests"):
                receiver.wait_for(lambda r: len(r.requests) > 3, timeout=0.2)

    async def test_wait_for_async(self, session: aiohttp.ClientSession) -> None:
        """`wait_for_async` waits without blocking the loop that delivers."""
        with WebhookReceiver() as receiver:
            await make_sink(receiver, session, secret=None).deliver(outbox(job_event()))
            await receiver.wait_for_async(lambda r: len(r.event_ids()) == 1, within_s=5)
