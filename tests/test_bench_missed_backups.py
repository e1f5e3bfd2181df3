"""Smoke tests of bench/missed_backups.py: its arguments, its /metrics sums, its judging and the
simulated recovery-point-age alert (the peer).

No run and no timing here: the bench prints its figures (docs/benchmarks.md, "Missed backups").
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import missed_backups as mb

EPOCH = datetime(2026, 10, 28, tzinfo=UTC)
ITEM = "/Subscriptions/s1/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v1/x/VM1"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def at(hours: float) -> datetime:
    return EPOCH + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_defaults() -> None:
    args = mb.parser().parse_args([])
    assert (args.days, args.speed, args.skip_rate, args.phases) == (2, 600, 0.1, 36)
    assert (args.subscriptions, args.vaults_per_subscription) == (2, 5)
    assert args.start == EPOCH
    assert mb.parser().parse_args(["--start", "2026-11-01T00:00:00+01:00"]).start == datetime(
        2026, 10, 31, 23, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "argv",
    [["--days", "0"], ["--skip-rate", "2"], ["--start", "yesterday"], ["--start", "2026-10-28"]],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mb.parser().parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_reads_are_summed_by_kind() -> None:
    text = "\n".join(
        [
            "# HELP backup_monitor_arm_requests_total ARM requests",
            'backup_monitor_arm_requests_total{kind="items_list",status_class="2xx",'
            'subscription="s1"} 7.0',
            'backup_monitor_arm_requests_total{kind="items_list",status_class="2xx",'
            'subscription="s2"} 3.0',
            'backup_monitor_arm_requests_total{kind="jobs_list",status_class="2xx",'
            'subscription="s1"} 2.0',
            'backup_monitor_arm_throttled_total{subscription="s1"} 1.0',
        ]
    )
    assert mb.reads_by_kind(text) == Counter(items_list=10, jobs_list=2)
    assert mb.throttled(text) == 1


def test_added_reads_per_vault_hour() -> None:
    before = {"protection": Counter(jobs_list=10), "peer_no_protection": Counter(jobs_list=10)}
    after = {
        "protection": Counter(jobs_list=30, items_list=40, policies_list=10),
        "peer_no_protection": Counter(jobs_list=30),
    }
    r = mb.added_reads(before, after, vaults=5, world_hours=2.0)
    assert r["added_per_vault_hour"] == pytest.approx(50 / 5 / 2)
    assert r["items_list_per_vault_hour"] == pytest.approx(4)
    assert r["policies_list_per_vault_hour"] == pytest.approx(1)
    assert r["per_vault_hour"]["peer_no_protection"]["total"] == pytest.approx(2)


def run(due: datetime, kind: str = "backup", job: str | None = None) -> dict[str, Any]:
    return {"item_id": ITEM, "due": iso(due), "kind": kind, "job_id": job}


def transition(job: str, to: str, moment: datetime, operation: str = "Backup") -> dict[str, Any]:
    return {"job_id": job, "to": to, "at": iso(moment), "operation": operation}


def test_recovery_points_are_succeeded_non_log_job_ends_and_the_initial_point() -> None:
    runs = [
        run(at(0), job="J1"),
        run(at(24), job="j2"),
        run(at(48), job="j3"),
        run(at(49), kind="log", job="j4"),
        run(at(72)),  # skipped
    ]
    transitions = [
        transition("j1", "InProgress", at(0.1)),
        transition("j1", "Completed", at(1)),
        transition("j2", "CompletedWithWarnings", at(25)),
        transition("j3", "Failed", at(49)),
        transition("j4", "Completed", at(49.1), operation="Backup (Log)"),
        transition("jx", "Completed", at(50)),  # no scheduled run made it
    ]
    points = mb.recovery_points(runs, transitions, {ITEM.upper(): at(-20)})
    assert points == {ITEM.lower(): [at(-20), at(1), at(25)]}


def test_evaluations_every_six_hours_from_the_phase() -> None:
    assert mb.evaluations(EPOCH, 3600, at(0), at(20)) == [at(1), at(7), at(13), at(19)]
    assert mb.evaluations(EPOCH, 3600, at(7), at(13)) == [at(7), at(13)]
    assert mb.evaluations(EPOCH, 3600, at(7.5), at(13)) == [at(13)]


def test_the_alert_fires_once_the_age_passes_the_threshold() -> None:
    points = [at(0)]  # the last recovery point; the run due at 24 h makes none
    kwargs: dict[str, Any] = {"epoch": EPOCH, "phase_s": 0.0, "until": at(100)}
    # Age > 2 days at the first evaluation after 48 h: 54 h (48 h itself is not "more").
    assert mb.peer_detects(points, at(24), threshold_s=2 * 86400, **kwargs) == at(54)
    assert mb.peer_detects(points, at(24), threshold_s=86400, **kwargs) == at(30)
    # The next run made a recovery point first: never reported.
    assert mb.peer_detects([*points, at(49)], at(24), threshold_s=2 * 86400, **kwargs) is None
    # The window ends first.
    kwargs["until"] = at(53)
    assert mb.peer_detects(points, at(24), threshold_s=2 * 86400, **kwargs) is None


@given(
    hours=st.lists(st.integers(0, 24 * 8), max_size=8),
    due_h=st.integers(0, 24 * 8),
    threshold_h=st.integers(1, 72),
    phase_s=st.floats(0, mb.ALERT_PERIOD_S, exclude_max=True),
)
def test_peer_detection_is_the_first_evaluation_past_the_threshold(
    hours: list[int], due_h: int, threshold_h: int, phase_s: float
) -> None:
    points = sorted({at(h) for h in hours})
    due, until = at(due_h), at(24 * 10)
    found = mb.peer_detects(
        points, due, threshold_s=threshold_h * 3600, epoch=EPOCH, phase_s=phase_s, until=until
    )
    times = mb.evaluations(EPOCH, phase_s, due, until)
    assert all(b - a == timedelta(hours=6) for a, b in itertools.pairwise(times))

    def fires(t: datetime) -> bool:
        last = mb.last_point(points, t) or EPOCH
        return last < due and t - last > timedelta(hours=threshold_h)

    if found is None:
        assert not any(fires(t) for t in times)
    else:
        assert found in times
        assert fires(found)
        assert not any(fires(t) for t in times if t < found)


def event(due: datetime, moment: datetime, kind: str = "backup") -> dict[str, Any]:
    return {
        "event": mb.MISSED,
        "time": iso(moment),
        "item": {"id": ITEM},
        "expected_run": {"due_time": iso(due), "deadline": iso(due + HOUR), "kind": kind},
    }


def test_judge_missed_counts_reports_delays_and_false_reports() -> None:
    runs = [run(at(24)), run(at(48)), run(at(72), job="j3"), run(at(1), kind="log"), run(at(200))]
    events = [
        event(at(24), at(25.25)),  # 75 min after due, 15 after the deadline
        event(at(24), at(25.5)),  # a duplicate
        event(at(72), at(73.25)),  # its run made a job
        event(at(90), at(91)),  # no such run
        {"event": "backup_job.state_changed"},
    ]
    verdict = mb.judge_missed(events, runs, judged_from=at(0), judged_until=at(100))
    assert (verdict["judged"], verdict["reported"]) == (3, 1)
    assert (verdict["false_reports"], verdict["unknown_reports"], verdict["duplicates"]) == (
        1,
        1,
        1,
    )
    backup = verdict["by_kind"]["backup"]
    assert (backup["judged"], backup["reported"], backup["reported_share"]) == (2, 1, 0.5)
    assert backup["delay_after_due_s"]["mean"] == 75 * 60
    assert backup["delay_after_deadline_s"]["max"] == 15 * 60
    assert verdict["by_kind"]["log"]["reported"] == 0


def test_peer_figures_average_the_phases_and_count_unexplained_firings() -> None:
    skipped = [run(at(24))]
    points = {ITEM.lower(): [at(0)], "other": [at(0), at(96)]}
    fig = mb.peer_figures(
        skipped, points, threshold_days=1, epoch=EPOCH, window=(at(0), at(72)), phases=2
    )
    # Phase 0: evaluations at 30 h (age 30 h > 24 h); phase 3 h: 27 h. Mean delay 4.5 h.
    assert fig.detected_share == 1
    assert sorted(fig.delays_s) == [3 * 3600, 6 * 3600]
    assert fig.by_kind["backup"]["runs"] == 1
    # "other" is older than a day from 24 h on, none of its runs skipped.
    assert fig.unexplained_items == 1
    assert fig.unexplained_firings_per_phase > 0


def test_the_same_runs_ratio_compares_the_runs_both_reported() -> None:
    events = [event(at(24), at(25)), event(at(48), at(50)), event(at(24), at(26))]
    ours = mb.report_delays(events)
    assert ours == {
        mb.run_key(ITEM, at(24), "backup"): 3600.0,
        mb.run_key(ITEM, at(48), "backup"): 7200.0,
    }
    peer_runs = [mb.run_key(ITEM, at(24), "backup"), mb.run_key(ITEM, at(72), "backup")]
    assert mb.same_runs_ratio(peer_runs, [6 * 3600.0, 3600.0], ours) == 6
    assert mb.same_runs_ratio(peer_runs[1:], [3600.0], ours) is None


def test_a_skipped_run_before_the_judged_ones_explains_a_firing() -> None:
    points = {ITEM.lower(): [at(0)]}
    kwargs: dict[str, Any] = {"epoch": EPOCH, "window": (at(30), at(72)), "phases": 1}
    alone = mb.peer_figures([], points, threshold_days=1, **kwargs)
    assert alone.unexplained_item_ids == [ITEM.lower()]
    explained = mb.peer_figures([], points, threshold_days=1, explained_by=[run(at(24))], **kwargs)
    assert explained.unexplained_items == 0
    # A skipped log run makes no recovery point: it does not explain a stale one.
    logs = mb.peer_figures(
        [], points, threshold_days=1, explained_by=[run(at(24), "log")], **kwargs
    )
    assert logs.unexplained_items == 1
