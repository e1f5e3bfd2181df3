"""`[[sinks]]` through parse_settings: each type's minimal entry and defaults, the example file's
commented entries, every refusal with its key path and message, secrets kept out of errors and
of `Settings.redacted()`, and the `default` sink of `[events]`."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from monitor.config_parse import parse_settings
from monitor.config_sinks import (
    AlertmanagerSinkSettings,
    AzureMonitorLogsSinkSettings,
    FileSinkSettings,
    SinkFilter,
    StdoutSinkSettings,
    WebhookSinkSettings,
)
from monitor.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "monitor.example.toml"
RULE = "dcr-0123456789abcdef0123456789abcdef"
DCE = "https://my-dce.westeurope-1.ingest.monitor.azure.com"
SECRET = "s3cr3t-Xk9QpZ"
SLACK = f"https://hooks.slack.com/services/T000/B000/{SECRET}"

MINIMAL: dict[str, dict[str, object]] = {
    "stdout": {"type": "stdout"},
    "file": {"type": "file", "path": "/var/lib/events.jsonl"},
    "webhook": {"type": "webhook", "url": "https://receiver.example.com/hook"},
    "alertmanager": {"type": "alertmanager", "url": "http://alertmanager:9093"},
    "azure_monitor_logs": {"type": "azure_monitor_logs", "endpoint": DCE, "rule_id": RULE},
}


def sinks(*entries: Mapping[str, object], **sections: object) -> Any:
    return parse_settings({"sinks": [dict(e) for e in entries], **sections})


def refusal(*entries: Mapping[str, object], **sections: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        sinks(*entries, **sections)
    return info.value


def with_(kind: str, **keys: object) -> dict[str, object]:
    return {**MINIMAL[kind], **keys}


class TestMinimal:
    def test_stdout(self) -> None:
        (s,) = sinks(MINIMAL["stdout"]).sinks
        assert s == StdoutSinkSettings(type="stdout", name="stdout")
        assert (s.format, s.batch_max_events, s.linger_s, s.start) == ("json", 500, 0.0, "now")
        assert (s.timeout_s, s.retry_initial_s, s.retry_max_s) == (10.0, 1.0, 60.0)
        assert s.filter == SinkFilter()
        assert s.filter.passes_all

    def test_file(self) -> None:
        (s,) = sinks(MINIMAL["file"]).sinks
        assert s == FileSinkSettings(type="file", name="file", path=Path("/var/lib/events.jsonl"))
        assert (s.format, s.batch_max_events) == ("json", 500)

    def test_webhook(self) -> None:
        (s,) = sinks(MINIMAL["webhook"]).sinks
        assert s == WebhookSinkSettings(
            type="webhook", name="webhook", url="https://receiver.example.com/hook"
        )
        assert (s.format, s.secret_env, s.linger_s, s.batch_max_events) == ("json", None, 1.0, 100)
        assert (s.portal_url, s.ca_bundle) == ("https://portal.azure.com", None)

    def test_alertmanager(self) -> None:
        (s,) = sinks(MINIMAL["alertmanager"]).sinks
        assert s == AlertmanagerSinkSettings(
            type="alertmanager", name="alertmanager", url="http://alertmanager:9093"
        )
        assert (s.resolve_after_s, s.resolve_on_success, dict(s.labels)) == (86400.0, True, {})
        assert s.generator_url == "https://portal.azure.com"

    def test_azure_monitor_logs(self) -> None:
        (s,) = sinks(MINIMAL["azure_monitor_logs"]).sinks
        assert s == AzureMonitorLogsSinkSettings(
            type="azure_monitor_logs", name="azure_monitor_logs", endpoint=DCE, rule_id=RULE
        )
        assert (s.stream, s.audience, s.batch_max_events, s.linger_s) == (
            "Custom-BackupJobMonitor_CL",
            None,
            500,
            2.0,
        )

    def test_every_type_at_once_in_order(self) -> None:
        parsed = sinks(*MINIMAL.values())
        assert [s.name for s in parsed.sinks] == list(MINIMAL)
        assert parsed.delivery_sinks == parsed.sinks

    def test_every_key_set(self) -> None:
        (s,) = sinks(
            with_(
                "webhook",
                name="ops.chat-1",
                format="teams",
                secret_env="HOOK_KEY",
                start="oldest",
                batch_max_events=10,
                linger_s=0,
                timeout_s=3,
                retry_initial_s=2,
                retry_max_s=2,
                portal_url="https://portal.azure.us/",
                ca_bundle="/etc/ca.pem",
                filter={"outcomes": ["Failed", "none"], "vaults": ["prod-*"]},
            )
        ).sinks
        assert (s.name, s.format, s.secret_env, s.start) == (
            "ops.chat-1",
            "teams",
            "HOOK_KEY",
            "oldest",
        )
        assert (s.batch_max_events, s.linger_s, s.timeout_s) == (10, 0.0, 3.0)
        assert (s.retry_initial_s, s.retry_max_s) == (2.0, 2.0)
        assert (s.portal_url, s.ca_bundle) == ("https://portal.azure.us", Path("/etc/ca.pem"))
        assert s.filter == SinkFilter(outcomes=("Failed", "none"), vaults=("prod-*",))

    def test_alertmanager_labels(self) -> None:
        (s,) = sinks(with_("alertmanager", labels={"team": "storage", "_x1": "y"})).sinks
        assert dict(s.labels) == {"team": "storage", "_x1": "y"}


def _uncommented_example() -> str:
    """The example file with its `[[sinks]]` entries uncommented and `[events] sink`/`format`
    commented out (they cannot stand beside [[sinks]])."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [[sinks]]")
    end = start
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    out: list[str] = []
    section = ""
    for i, text in enumerate(lines):
        if text.startswith("["):
            section = text
        if start <= i < end:
            text = text[2:] if text.startswith("# ") else ""
        elif section == "[events]" and text.split("=")[0].strip() in ("sink", "format"):
            text = "# " + text
        out.append(text)
    return "\n".join(out) + "\n"


class TestExample:
    def test_the_commented_entries_parse(self) -> None:
        text = _uncommented_example()
        parsed = parse_settings(tomllib.loads(text))
        assert [s.type for s in parsed.sinks] == [
            "stdout",
            "file",
            "webhook",
            "alertmanager",
            "azure_monitor_logs",
        ]
        webhook = parsed.sinks[2]
        assert isinstance(webhook, WebhookSinkSettings)
        assert (webhook.name, webhook.format) == ("ops-chat", "slack")
        assert webhook.filter.outcomes == ("failed", "succeeded_with_warnings", "cancelled")
        assert parsed.delivery_sinks == parsed.sinks

    def test_as_shipped_it_has_the_default_sink(self) -> None:
        parsed = parse_settings(tomllib.loads(EXAMPLE.read_text()))
        assert parsed.sinks == ()
        assert parsed.delivery_sinks == (
            StdoutSinkSettings(type="stdout", name="default", format="json"),
        )


class TestDefaultSink:
    def test_stdout_by_default(self) -> None:
        assert parse_settings({}).delivery_sinks == (
            StdoutSinkSettings(type="stdout", name="default"),
        )

    def test_a_file_from_events(self) -> None:
        parsed = parse_settings({"events": {"sink": "/tmp/ev.jsonl", "format": "cloudevents"}})
        assert parsed.delivery_sinks == (
            FileSinkSettings(
                type="file", name="default", path=Path("/tmp/ev.jsonl"), format="cloudevents"
            ),
        )


ERRORS: list[tuple[str, Any, str, str]] = [
    # (case, [[sinks]] value or (entries, sections), key, exact problem)
    (
        "not an array",
        {"type": "stdout"},
        "sinks",
        "must be an array of tables ([[sinks]] entries)",
    ),
    ("empty", [], "sinks", "must list at least one sink (or be left out)"),
    (
        "missing type",
        [{"name": "x"}],
        "sinks[0].type",
        "is required: one of stdout, file, webhook, alertmanager, azure_monitor_logs",
    ),
    (
        "unknown type",
        [{"type": "webhok"}],
        "sinks[0].type",
        "must be one of 'stdout', 'file', 'webhook', 'alertmanager', 'azure_monitor_logs', "
        "got 'webhok'; did you mean 'webhook'?",
    ),
    (
        "unknown key",
        [with_("webhook", formt="slack")],
        "sinks[0].formt",
        "unknown key for a webhook sink; did you mean 'format'?",
    ),
    (
        "a key of another type",
        [with_("stdout", path="/x")],
        "sinks[0].path",
        "unknown key for a stdout sink; known: type, name, filter, start, batch_max_events, "
        "linger_s, timeout_s, retry_initial_s, retry_max_s, format",
    ),
    (
        "two of one type without names",
        [MINIMAL["stdout"], with_("file"), with_("stdout", format="cloudevents")],
        "sinks[0].name",
        "is required when more than one sink has type 'stdout'",
    ),
    (
        "duplicate names",
        [with_("stdout", name="out"), with_("file", name="x"), with_("file", name="out")],
        "sinks[2].name",
        "'out' is the name of sinks[0] too; each sink needs its own (it keys the sink's cursor "
        "in the state file)",
    ),
    (
        "a default name taken",
        [MINIMAL["stdout"], with_("file", name="stdout")],
        "sinks[1].name",
        "'stdout' is the name of sinks[0] too; each sink needs its own (it keys the sink's cursor "
        "in the state file)",
    ),
    (
        "a bad name",
        [with_("stdout", name="has space")],
        "sinks[0].name",
        "must be 1-63 letters, digits, '_', '.' or '-', got 'has space'",
    ),
    (
        "a name too long",
        [with_("stdout", name="x" * 64)],
        "sinks[0].name",
        f"must be 1-63 letters, digits, '_', '.' or '-', got {'x' * 64!r}",
    ),
    (
        "a bad filter outcome",
        [with_("stdout", filter={"outcomes": ["failed", "faild"]})],
        "sinks[0].filter.outcomes[1]",
        "must be one of succeeded, succeeded_with_warnings, failed, cancelled, none, "
        "got 'faild'; did you mean 'failed'?",
    ),
    (
        "an unknown filter key",
        [with_("stdout", filter={"outcome": ["failed"]})],
        "sinks[0].filter.outcome",
        "unknown key; did you mean 'outcomes'?",
    ),
    ("a filter not a table", [with_("stdout", filter=["x"])], "sinks[0].filter", "must be a table"),
    (
        "azure_monitor_logs over plain http",
        [with_("azure_monitor_logs", endpoint="http://dce.example.com")],
        "sinks[0].endpoint",
        "must use https (plain http only to a loopback host), got 'http://dce.example.com'",
    ),
    (
        "a bad rule_id",
        [with_("azure_monitor_logs", rule_id="dcr-123")],
        "sinks[0].rule_id",
        "must be a rule's immutable id (dcr-<32 hex>), got 'dcr-123'",
    ),
    (
        "no rule_id",
        [{"type": "azure_monitor_logs", "endpoint": DCE}],
        "sinks[0].rule_id",
        "is required",
    ),
    (
        "a bad stream",
        [with_("azure_monitor_logs", stream="BackupJobMonitor_CL")],
        "sinks[0].stream",
        "must be a custom stream name (Custom-<name>), got 'BackupJobMonitor_CL'",
    ),
    (
        "a bad label name",
        [with_("alertmanager", labels={"bad-name": "x"})],
        "sinks[0].labels.bad-name",
        "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
    ),
    (
        "a label name with a space",
        [with_("alertmanager", labels={"a b": "x"})],
        "sinks[0].labels.'a b'",
        "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
    ),
    (
        "an empty label value",
        [with_("alertmanager", labels={"team": ""})],
        "sinks[0].labels.team",
        "must be a non-empty string",
    ),
    (
        "a label value not a string",
        [with_("alertmanager", labels={"team": 3})],
        "sinks[0].labels.team",
        "must be a non-empty string",
    ),
    (
        "retry_initial_s above retry_max_s",
        [with_("webhook", retry_initial_s=10, retry_max_s=5)],
        "sinks[0].retry_initial_s",
        "must be <= retry_max_s",
    ),
    (
        "batch_max_events below 1",
        [with_("stdout", batch_max_events=0)],
        "sinks[0].batch_max_events",
        "must be >= 1, got 0",
    ),
    (
        "batch_max_events above 10000",
        [with_("stdout", batch_max_events=10_001)],
        "sinks[0].batch_max_events",
        "must be <= 10000, got 10001",
    ),
    (
        "linger_s below 0",
        [with_("stdout", linger_s=-1)],
        "sinks[0].linger_s",
        "must be >= 0, got -1",
    ),
    (
        "linger_s above 60",
        [with_("webhook", linger_s=60.5)],
        "sinks[0].linger_s",
        "must be <= 60, got 60.5",
    ),
    ("file without path", [{"type": "file"}], "sinks[0].path", "is required"),
    ("webhook without url", [{"type": "webhook"}], "sinks[0].url", "is required"),
    (
        "a bad start",
        [with_("stdout", start="latest")],
        "sinks[0].start",
        "must be one of 'now', 'oldest', got 'latest'; did you mean 'oldest'?",
    ),
]


@pytest.mark.parametrize(
    ("value", "key", "problem"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_refusals_name_the_key_and_the_problem(value: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"sinks": value})
    assert (info.value.key, info.value.problem) == (key, problem)
    assert str(info.value) == f"{key}: {problem}"


@pytest.mark.parametrize("key", ["sink", "format"])
def test_events_sink_or_format_beside_sinks(key: str) -> None:
    value = "stdout" if key == "sink" else "json"
    error = refusal(MINIMAL["stdout"], events={key: value})
    assert (error.key, error.problem) == (
        f"events.{key}",
        'cannot be set beside [[sinks]]: describe that sink as a [[sinks]] entry (type = "stdout" '
        'or "file")',
    )


def test_http_to_a_loopback_endpoint_is_allowed() -> None:
    (s,) = sinks(with_("azure_monitor_logs", endpoint="http://127.0.0.1:8080/")).sinks
    assert s.endpoint == "http://127.0.0.1:8080"


class TestSecrets:
    """A webhook URL may hold its key: it is never in an error nor in `redacted()`."""

    @pytest.mark.parametrize(
        "url",
        [
            f"ftp://hooks.slack.com/services/{SECRET}",
            f"https://user:{SECRET}@hooks.slack.com/x",
            f"https://hooks.slack.com:99999/{SECRET}",
            f"hooks.slack.com/services/{SECRET}",
            f"https:///{SECRET}",
        ],
    )
    def test_a_bad_url_is_not_quoted(self, url: str) -> None:
        error = refusal(with_("webhook", url=url))
        assert error.key == "sinks[0].url"
        assert SECRET not in str(error)

    def test_a_url_of_the_wrong_type_is_not_quoted(self) -> None:
        error = refusal(with_("webhook", url=[SLACK]))
        assert error.key == "sinks[0].url"
        assert SECRET not in str(error)
        error = refusal(with_("webhook", url=12345))
        assert (error.key, error.problem) == ("sinks[0].url", "must be a string, got int")

    @pytest.mark.parametrize(
        "other",
        [
            {"formt": "slack"},
            {"format": "slak"},
            {"linger_s": 99},
            {"name": "bad name"},
            {"filter": {"outcomes": ["x"]}},
            {"secret_env": "not-an-env"},
            {"portal_url": "ftp://x"},
        ],
    )
    def test_other_errors_of_the_entry_do_not_quote_it(self, other: dict[str, object]) -> None:
        error = refusal(with_("webhook", url=SLACK, **other))
        assert SECRET not in str(error)

    def test_redacted_hides_the_url(self) -> None:
        parsed = sinks(with_("webhook", url=SLACK, format="slack"), MINIMAL["alertmanager"])
        out = parsed.redacted()
        assert SECRET not in json.dumps(out)
        assert out["sinks"][0]["url"] == "***"
        assert out["sinks"][1]["url"] == "http://alertmanager:9093"  # not a secret
        assert parsed.sinks[0].url == SLACK
