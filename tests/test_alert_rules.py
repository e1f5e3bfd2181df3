"""The shipped alerting rules: one set in two files, each rule complete and documented, the
metrics it reads real, and every rule tested by `promtool test rules` (firing and not firing)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.metrics import ITEM_EVENT_NAMES, LAG_PHASES, POLL_RESULTS, RATE_LIMIT_HEADERS, Metrics
from tests.binaries import find_binary

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "config" / "prometheus" / "alerts.yaml"
PROMETHEUS_RULE = ROOT / "config" / "k8s" / "prometheusrule.yaml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK = "https://github.com/backup-job-monitor/backup-job-monitor/blob/main/docs/operations.md"
SEVERITIES = frozenset({"critical", "warning", "info"})
PROMTOOL_PACKAGE = "prometheus"
PROMTOOL_TIMEOUT_S = 120
# Label values a rule may select, per label: the values monitor/metrics.py gives them.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "event": frozenset(ITEM_EVENT_NAMES),
    "phase": frozenset(LAG_PHASES),
    "result": frozenset(POLL_RESULTS),
    "scope": frozenset(RATE_LIMIT_HEADERS.values()),
    "job": frozenset({"backup-monitor-metrics"}),  # the Service of config/k8s/service.yaml
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    """Every rule of config/prometheus/alerts.yaml, in order."""
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules()]


def rule_tests() -> Iterator[dict[str, Any]]:
    """Every `alert_rule_test` case of tests/prometheus/alerts_test.yaml."""
    for group in load(RULE_TESTS)["tests"]:
        yield from group.get("alert_rule_test", [])


def runbook_sections() -> list[str]:
    """The `###` headings of docs/operations.md's "Alerts" section."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("\n## Alerts\n") :]
    following = re.search(r"\n## (?!Alerts\n)", section)
    if following is not None:
        section = section[: following.start()]
    return re.findall(r"^### (\S+)\s*$", section, re.M)


def exported_metrics() -> frozenset[str]:
    """The series names monitor/metrics.py exports (a counter's `_total`, a histogram's parts)."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        match family.type:
            case "counter":
                names.add(f"{family.name}_total")
            case "histogram":
                names.update(f"{family.name}{part}" for part in ("_bucket", "_sum", "_count"))
            case _:
                names.add(family.name)
    return frozenset(names)


class TestRuleFiles:
    def test_the_prometheus_rule_holds_the_same_groups(self) -> None:
        """The PrometheusRule's spec.groups are alerts.yaml's groups, exactly."""
        resource = load(PROMETHEUS_RULE)
        assert (resource["apiVersion"], resource["kind"]) == (
            "monitoring.coreos.com/v1",
            "PrometheusRule",
        )
        assert resource["spec"]["groups"] == load(ALERTS)["groups"]
        assert set(load(ALERTS)) == {"groups"}

    def test_the_prometheus_rule_is_deployed(self) -> None:
        """config/k8s/kustomization.yaml lists the PrometheusRule."""
        kustomization = load(ROOT / "config" / "k8s" / "kustomization.yaml")
        assert PROMETHEUS_RULE.name in kustomization["resources"]

    def test_alert_names_are_unique(self) -> None:
        """One rule per alert name: each has one runbook section and one set of tests."""
        names = alert_names()
        assert len(names) == len(set(names)) == 17

    @pytest.mark.parametrize("rule", rules(), ids=alert_names())
    def test_every_rule_is_complete(self, rule: dict[str, Any]) -> None:
        """Severity, summary, description and a runbook URL that names the alert's section."""
        name = rule["alert"]
        assert re.fullmatch(r"BackupMonitor[A-Z][A-Za-z]+", name)
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}
        assert rule["labels"]["severity"] in SEVERITIES
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert annotations["summary"].strip()
        assert annotations["description"].strip()
        assert annotations["runbook_url"] == f"{RUNBOOK}#{name.lower()}"

    def test_every_rule_has_its_runbook_section(self) -> None:
        """docs/operations.md has one `### <alert>` section per rule, in the same order, and no
        other: its GitHub anchor is the lower-cased name the runbook URLs point to."""
        assert runbook_sections() == alert_names()

    def test_the_rules_read_metrics_that_exist(self) -> None:
        """Every backup_monitor_* series a rule reads is exported by monitor/metrics.py."""
        known = exported_metrics()
        used = {m for rule in rules() for m in re.findall(r"\bbackup_monitor_\w+", rule["expr"])}
        assert used, "no rule reads a metric of the daemon"
        assert sorted(used - known) == []

    def test_the_rules_select_label_values_that_exist(self) -> None:
        """A matcher on `event`, `phase`, `result`, `scope` or `job` names values that occur."""
        checked = 0
        for rule in rules():
            for label, _, value in re.findall(r'\b(\w+)\s*(=~|=)\s*"([^"]*)"', rule["expr"]):
                if label in LABEL_VALUES:
                    checked += 1
                    assert set(value.split("|")) <= LABEL_VALUES[label], (rule["alert"], value)
        assert checked >= 8

    def test_terminal_lag_leaves_backfill_out(self) -> None:
        """BackupMonitorLagHigh reads the terminal phase only, never the backfilled history."""
        (lag,) = [rule for rule in rules() if rule["alert"] == "BackupMonitorLagHigh"]
        assert re.findall(r'phase="(\w+)"', lag["expr"]) == ["terminal"]


class TestPromtool:
    def test_every_rule_has_a_firing_and_a_silent_case(self) -> None:
        """alerts_test.yaml tests every rule both ways, and names no rule that does not exist."""
        firing: set[str] = set()
        silent: set[str] = set()
        for case in rule_tests():
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
        names = set(alert_names())
        assert sorted(names - firing) == []
        assert sorted(names - silent) == []
        assert sorted((firing | silent) - names) == []

    def test_the_tests_load_the_shipped_rules(self) -> None:
        """alerts_test.yaml evaluates config/prometheus/alerts.yaml itself, not a copy."""
        (rule_file,) = load(RULE_TESTS)["rule_files"]
        assert (RULE_TESTS.parent / rule_file).resolve() == ALERTS

    def test_check_rules(self) -> None:
        """`promtool check rules` accepts alerts.yaml and counts all of its rules."""
        promtool = find_binary("promtool", package=PROMTOOL_PACKAGE)
        done = subprocess.run(
            [promtool, "check", "rules", str(ALERTS)],
            capture_output=True,
            text=True,
            check=False,
            timeout=PROMTOOL_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(rules())} rules found" in done.stdout

    def test_test_rules(self) -> None:
        """`promtool test rules` passes every case of tests/prometheus/alerts_test.yaml."""
        promtool = find_binary("promtool", package=PROMTOOL_PACKAGE)
        done = subprocess.run(
            [promtool, "test", "rules", RULE_TESTS.name],
            cwd=RULE_TESTS.parent,
            capture_output=True,
            text=True,
            check=False,
            timeout=PROMTOOL_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout
