"""Smoke tests of bench/outbox.py: it imports, its arguments parse, its events are schema v1.

No timings are asserted here: the bench prints its figures (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import outbox
from bench.estate import tree_env
from tests.test_sinks import validate


def test_defaults_and_quick() -> None:
    args = outbox.parser().parse_args([])
    assert (args.baseline, args.duration, args.events) == ("2bd1ad4", 240.0, 20_000)
    assert args.receiver_child is None
    args = outbox.parser().parse_args(["--quick", "--baseline", "f7bd420", "--only", "cpu"])
    assert args.quick
    assert args.baseline == "f7bd420"
    assert args.only == "cpu"


@pytest.mark.parametrize("argv", [["--events", "0"], ["--duration", "-1"], ["--only", "both"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        outbox.parser().parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_synthetic_events_are_schema_v1_and_distinct() -> None:
    rows = outbox.synthetic(2 * outbox.EVENTS_PER_POLL + 3)
    for _, _, event in rows:
        validate(event)
    assert len({e["event_id"] for _, _, e in rows}) == len(rows)
    # A save holds one vault's events, as a poll's do.
    first = {vault.key for vault, _, _ in rows[: outbox.EVENTS_PER_POLL]}
    assert len(first) == 1


def test_exactly_once_in_order_counts() -> None:
    good = outbox.exactly_once_in_order(["a", "b", "c"], ["a", "b", "c"])
    assert good["in_order"]
    assert good["duplicates"] == good["missing"] == 0
    bad = outbox.exactly_once_in_order(["b", "a", "a", "x"], ["a", "b", "c"])
    assert not bad["in_order"]
    assert (bad["duplicates"], bad["missing"], bad["unexpected"]) == (1, 1, 1)


def test_tree_env_puts_the_tree_first(tmp_path: Path) -> None:
    assert tree_env(None) == {}
    kw = tree_env(tmp_path)
    assert kw["cwd"] == str(tmp_path)
    assert kw["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
