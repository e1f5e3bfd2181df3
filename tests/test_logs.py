"""Diagnostics: JSON on the given stream (never stdout), console on a TTY, secrets redacted."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog
from structlog.testing import capture_logs

from monitor.config import LogFormat
from monitor.logs import configure_logging, is_sensitive_key, redact_secrets, use_colors

log = structlog.get_logger()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestJson:
    def test_one_json_object_per_line_with_level_and_utc_time(self) -> None:
        """Each call writes one JSON line with event, level and an ISO UTC timestamp."""
        stream = io.StringIO()
        configure_logging("info", "json", stream, cache_logger_on_first_use=False)
        log.info("poll.done", vault="v1", jobs=3)
        (line,) = json_lines(stream)
        assert line["event"] == "poll.done"
        assert (line["level"], line["vault"], line["jobs"]) == ("info", "v1", 3)
        stamp = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0)

    def test_level_filter(self) -> None:
        """Below the configured level nothing is written."""
        stream = io.StringIO()
        configure_logging("warning", "json", stream, cache_logger_on_first_use=False)
        log.info("quiet")
        log.warning("loud")
        assert [line["event"] for line in json_lines(stream)] == ["loud"]

    def test_exceptions_are_dicts_without_locals(self) -> None:
        """Tracebacks are structured and carry no frame locals (which could hold tokens)."""
        stream = io.StringIO()
        configure_logging("info", "json", stream, cache_logger_on_first_use=False)
        bearer = "eyJ0eXAiOiJKV1Qi.secret-token"
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("poll.failed", note=len(bearer))
        (line,) = json_lines(stream)
        assert isinstance(line["exception"], list)
        assert line["exception"][0]["exc_value"] == "boom"
        assert bearer not in stream.getvalue()

    def test_auto_is_json_when_not_a_tty(self) -> None:
        """'auto' renders JSON to a pipe or file."""
        stream = io.StringIO()
        configure_logging("info", "auto", stream, cache_logger_on_first_use=False)
        log.info("hello")
        assert json_lines(stream)[0]["event"] == "hello"

    def test_default_stream_is_stderr_not_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a stream, diagnostics go to stderr; stdout stays free for events."""
        configure_logging("info", "json", cache_logger_on_first_use=False)
        log.info("to.stderr")
        captured = capsys.readouterr()
        assert captured.out == ""
        assert json.loads(captured.err)["event"] == "to.stderr"


class TestConsole:
    @pytest.mark.parametrize(("fmt", "stream"), [("console", io.StringIO()), ("auto", _Tty())])
    def test_console_rendering(self, fmt: LogFormat, stream: io.StringIO) -> None:
        """'console', or 'auto' on a TTY, renders human lines rather than JSON."""
        configure_logging("info", fmt, stream, cache_logger_on_first_use=False)
        log.info("hello", vault="v1", client_secret="hunter2")
        text = stream.getvalue()
        assert "hello" in text
        assert "vault" in text
        assert not text.startswith("{")
        assert "hunter2" not in text


class TestColours:
    @pytest.mark.parametrize(
        ("tty", "environ", "coloured"),
        [
            (True, {}, True),
            (False, {}, False),
            (True, {"NO_COLOR": "1"}, False),
            (True, {"NO_COLOR": ""}, True),  # set but empty: as if unset (no-color.org)
            (False, {"FORCE_COLOR": "1"}, True),
            (False, {"FORCE_COLOR": ""}, False),
            (True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
        ],
    )
    def test_no_color_and_force_color(
        self, tty: bool, environ: dict[str, str], coloured: bool
    ) -> None:
        """Console lines carry ANSI colours exactly when `use_colors` says so."""
        stream = _Tty() if tty else io.StringIO()
        configure_logging(
            "info", "console", stream, cache_logger_on_first_use=False, environ=environ
        )
        log.warning("hello", vault="v1")
        assert ("\x1b[" in stream.getvalue()) is coloured
        assert use_colors(tty, environ) is coloured

    def test_force_color_does_not_turn_a_pipe_into_console_lines(self) -> None:
        stream = io.StringIO()
        configure_logging(
            "info", "auto", stream, cache_logger_on_first_use=False, environ={"FORCE_COLOR": "1"}
        )
        log.info("hello")
        assert json_lines(stream)[0]["event"] == "hello"


class TestRedaction:
    def test_sensitive_keys_never_reach_the_stream(self) -> None:
        """Values of token/secret/authorization/password keys are written as '***'."""
        stream = io.StringIO()
        configure_logging("debug", "json", stream, cache_logger_on_first_use=False)
        structlog.contextvars.bind_contextvars(access_token="ctx-tok-1")
        try:
            log.debug(
                "arm.request",
                static_token="tok-2",
                clientSecret="sec-3",
                password="pw-4",
                headers={"Authorization": "Bearer tok-5", "x-ms-request-id": "r1"},
                detail="sent Authorization: Bearer tok-6.abc",
                tokens_left=12,
                token_scope="https://management.azure.com/.default",
            )
        finally:
            structlog.contextvars.clear_contextvars()
        text = stream.getvalue()
        for secret in ("ctx-tok-1", "tok-2", "sec-3", "pw-4", "tok-5", "tok-6"):
            assert secret not in text
        (line,) = json_lines(stream)
        assert line["static_token"] == "***"
        assert line["headers"] == {"Authorization": "***", "x-ms-request-id": "r1"}
        assert line["detail"] == "sent Authorization: Bearer ***"
        assert line["tokens_left"] == 12
        assert line["token_scope"] == "https://management.azure.com/.default"

    @pytest.mark.parametrize(
        ("key", "sensitive"),
        [
            ("token", True),
            ("access_token", True),
            ("refreshToken", True),
            ("client_secret", True),
            ("Authorization", True),
            ("db_password", True),
            ("x-api-key", True),
            ("apiKey", True),
            ("tokens_left", False),
            ("token_scope", False),
            ("vault", False),
            ("secretary", False),
        ],
    )
    def test_sensitive_key_names(self, key: str, sensitive: bool) -> None:
        """Sensitivity is decided on whole words of the key."""
        assert is_sensitive_key(key) is sensitive

    def test_processor_on_captured_logs(self) -> None:
        """The processor works in any chain; capture_logs sees the event it is given."""
        with capture_logs() as captured:
            log.info("login", **redact_secrets(None, "info", {"password": "pw", "user": "u"}))
        assert captured == [{"event": "login", "log_level": "info", "password": "***", "user": "u"}]
