"""Shipped alert expressions evaluated by the real promtool over a live scrape of the daemon."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.binaries import find_binary

__all__ = ["ALERTS", "assert_alert_selects"]

ALERTS = Path(__file__).resolve().parent.parent / "config" / "prometheus" / "alerts.yaml"


def _series(name: str, labels: Mapping[str, str]) -> str:
    def quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    inner = ", ".join(f'{k}="{quoted(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    value, unit = int(match[1]), match[2]
    return {"s": max(1, value // 60), "m": value, "h": value * 60}[unit]


def assert_alert_selects(
    scrape: str,
    alert: str,
    expected: Sequence[Mapping[str, str]],
    workdir: Path,
    extra_labels: Mapping[str, str] | None = None,
) -> None:
    """Held for as long as its `for:`, the shipped `alert`'s expression over the samples of
    `scrape` (each `backup_monitor_*` series the expression names, held at its scraped value,
    with `extra_labels` as a scrape would add them) fires exactly the alerts `expected` names
    by their labels (the rule's own labels included). Run by `promtool test rules`."""
    promtool = find_binary("promtool", package="prometheus")
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    names = set(re.findall(r"\bbackup_monitor_\w+", rule["expr"]))
    for_min = _minutes(rule.get("for", "1m"))
    steps = for_min + 5
    series = []
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name in names:
                labels = {**sample.labels, **(extra_labels or {})}
                series.append(
                    {"series": _series(sample.name, labels), "values": f"{sample.value}x{steps}"}
                )
    bare = {"alert": alert, "expr": rule["expr"], "for": rule.get("for", "0m")}
    bare["labels"] = dict(rule.get("labels", {}))
    (workdir / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "scrape", "rules": [bare]}]}), encoding="utf-8"
    )
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{for_min + 1}m",
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": dict(labels)} for labels in expected],
                    }
                ],
            }
        ],
    }
    (workdir / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
