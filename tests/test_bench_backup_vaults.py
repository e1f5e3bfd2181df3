"""Smoke tests of bench/backup_vaults.py: its arguments, its /metrics parsing and its judging.

No run and no timing here: the bench prints its figures (docs/benchmarks.md, "Backup vaults").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench import backup_vaults as bv
from bench.estate import parse_at
from monitor.core.dataprotection import job_status

VAULT = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v1"


def test_defaults() -> None:
    args = bv.parser().parse_args([])
    assert args.history == [100, 1000, 5000]
    assert (args.duration, args.subscriptions, args.backup_vaults_per_subscription) == (150, 2, 5)
    assert (args.staleness, args.page_size) == (30, 20)
    assert bv.parser().parse_args(["--history", "7,9"]).history == [7, 9]


@pytest.mark.parametrize("argv", [["--history", "0"], ["--history", "a"], ["--duration", "0"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bv.parser().parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_metrics_are_summed_by_kind() -> None:
    text = "\n".join(
        [
            "# HELP backup_monitor_arm_requests_total ARM requests",
            'backup_monitor_arm_requests_total{kind="jobs_list",status_class="2xx",'
            'subscription="s1"} 7.0',
            'backup_monitor_arm_requests_total{kind="jobs_list",status_class="2xx",'
            'subscription="s2"} 3.0',
            'backup_monitor_arm_requests_total{kind="job_get",status_class="2xx",'
            'subscription="s1"} 2.0',
            'backup_monitor_arm_requests_total{kind="graph_query",status_class="2xx",'
            'subscription="resource-graph"} 4.0',
            'backup_monitor_backup_vault_full_listings_total{reason="backstop"} 1.0',
        ]
    )
    snap = bv.Snapshot(at=0.0)
    bv.summarize_metrics(snap, text)
    assert (snap.jobs_list, snap.job_get, snap.graph_queries) == (10, 2, 4)
    assert snap.listings == Counter({"backstop": 1})


def row(seq: int, job: str, to: str, at: str) -> dict[str, Any]:
    return {"seq": seq, "vault_id": VAULT, "job_id": job, "to": to, "at": at}


def event(job: str, status: str, time: str) -> dict[str, Any]:
    eid = bv.truth_id(row(0, job, status, time))
    return {
        "event": "backup_job.state_changed",
        "event_id": eid,
        "time": time,
        "vault": {"kind": "backup_vault"},
        "job": {"status": job_status(status).value},
    }


def test_judge_counts_missed_duplicates_wrong_and_lag() -> None:
    truth = [
        row(1, "j1", "Started", "2026-01-01T00:00:00Z"),
        row(2, "j1", "Succeeded", "2026-01-01T00:01:00Z"),
        row(3, "j2", "Failed", "2026-01-01T00:02:00Z"),
        row(4, "j3", "Succeeded", "2026-01-01T00:09:00Z"),  # after the window
    ]
    expected = bv.terminal_in(
        truth, parse_at("2026-01-01T00:00:30Z"), parse_at("2026-01-01T00:05:00Z")
    )
    assert len(expected) == 2
    events = [
        event("j1", "Succeeded", "2026-01-01T00:01:10Z"),  # Completed, 10 s late
        event("j1", "Succeeded", "2026-01-01T00:01:20Z"),  # a duplicate
        event("jx", "Failed", "2026-01-01T00:03:00Z"),  # never happened
        # An item event and a long-running job: no transition of their own, never wrong.
        {
            "event": "backup_item.protection_changed",
            "event_id": "p1",
            "vault": {"kind": "backup_vault"},
        },
        {
            **event("j1", "Started", "2026-01-01T00:00:40Z"),
            "event": "backup_job.long_running",
            "event_id": "l1",
        },
    ]
    verdict = bv.judge(events, truth, expected)
    assert (verdict["missed"], verdict["duplicates"], verdict["wrong"]) == (1, 1, 1)
    assert verdict["other_events"] == {
        "backup_item.protection_changed": 1,
        "backup_job.long_running": 1,
    }
    assert verdict["lag"]["n"] == 1
    assert verdict["lag"]["mean"] == 10.0


def test_rates_per_vault_hour() -> None:
    a = bv.Snapshot(at=0.0, listings=Counter())
    b = bv.Snapshot(
        at=360.0, jobs_list=40, job_get=10, rs_served=5, bv_pages=30, listings=Counter(configured=5)
    )
    r = bv.rates(a, b, backup_vaults=5)
    assert r["reads_per_vault_hour"] == pytest.approx(45 * 10 / 5)
    assert r["full_listing_pages_per_vault_hour"] == pytest.approx(30 * 10 / 5)
    assert r["pages_per_listing"] == 6
