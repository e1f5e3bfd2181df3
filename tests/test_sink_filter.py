"""`sink_filter.passes` over rendered schema v1 events: hypothesis properties per key, AND across
keys, case folding, vault globs and the `none` outcome."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from monitor.config_sinks import SinkFilter
from monitor.core.diff import JobStateChanged
from monitor.events import event_schema, render_event
from monitor.sink_filter import passes
from tests.test_scheduler import SUB_A, SUB_B, job, vault_ref

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
_VALIDATOR = Draft202012Validator(
    event_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
)

STATUSES = ["InProgress", "Completed", "CompletedWithWarnings", "Failed", "Cancelled", "Paused"]
VAULT_NAMES = ["prod-db", "prod-web", "test-1", "Dev"]
JOB_TYPES = ["AzureIaaSVMJob", "AzureWorkloadJob", "DpmJob"]
OPERATIONS = ["Backup", "Restore", "ConfigureBackup"]
OUTCOMES = ["succeeded", "succeeded_with_warnings", "failed", "cancelled", "none"]
EVENT_TYPES = ["backup_job.state_changed", "backup_job.other"]
SUBSCRIPTIONS = [SUB_A, SUB_B]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A rendered event of a job with drawn vault, status, type and operation (validated)."""
    vault = vault_ref(draw(st.sampled_from(SUBSCRIPTIONS)), draw(st.sampled_from(VAULT_NAMES)))
    backup_job = dataclasses.replace(
        job(vault, "job-1", draw(st.sampled_from(STATUSES)), start=AT - timedelta(minutes=5)),
        job_type=draw(st.sampled_from(JOB_TYPES)),
        operation=draw(st.sampled_from(OPERATIONS)),
    )
    change = JobStateChanged(
        vault_key=vault.key, job=backup_job, previous_status=None, observed_at=AT
    )
    event = render_event(change, vault=vault, details=None, emitted_at=AT)
    _VALIDATOR.validate(orjson.loads(orjson.dumps(event)))
    return event


CASINGS: list[Callable[[str], str]] = [str, str.upper, str.lower, str.swapcase]


def cased(values: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    """Lists of `values` (and one value no event has), in any casing."""
    word = st.tuples(st.sampled_from([*values, "nothing-has-this"]), st.sampled_from(CASINGS))
    return st.lists(word.map(lambda t: t[1](t[0])), min_size=1, max_size=3).map(tuple)


def _outcome(event: Mapping[str, Any]) -> str:
    outcome = event["job"]["outcome"]
    return "none" if outcome is None else str(outcome)


FIELDS: dict[str, tuple[list[str], Callable[[Mapping[str, Any]], list[str]]]] = {
    "events": (EVENT_TYPES, lambda e: [e["event"]]),
    "outcomes": (OUTCOMES, lambda e: [_outcome(e)]),
    "statuses": (STATUSES, lambda e: [e["job"]["status"]]),
    "job_types": (JOB_TYPES + OPERATIONS, lambda e: [e["job"]["type"], e["job"]["operation"]]),
    "subscriptions": (SUBSCRIPTIONS, lambda e: [e["vault"]["subscription_id"]]),
}


def expected(key: str, wanted: tuple[str, ...], event: Mapping[str, Any]) -> bool:
    folded = {w.casefold() for w in wanted}
    return any(v.casefold() in folded for v in FIELDS[key][1](event))


@st.composite
def one_key(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    key = draw(st.sampled_from(sorted(FIELDS)))
    return key, draw(cased(FIELDS[key][0]))


@given(event=events())
@settings(max_examples=50)
def test_an_empty_filter_passes_everything(event: dict[str, Any]) -> None:
    assert SinkFilter().passes_all
    assert passes(SinkFilter(), event)
    assert passes(SinkFilter(), {})


@given(event=events(), rule=one_key())
@settings(max_examples=150)
def test_each_list_alone_matches_exactly_its_field(
    event: dict[str, Any], rule: tuple[str, tuple[str, ...]]
) -> None:
    key, wanted = rule
    assert passes(SinkFilter(**{key: wanted}), event) == expected(key, wanted, event)


@given(event=events(), rules=st.lists(one_key(), min_size=2, max_size=5, unique_by=lambda r: r[0]))
@settings(max_examples=150)
def test_keys_combine_with_and(
    event: dict[str, Any], rules: list[tuple[str, tuple[str, ...]]]
) -> None:
    combined = SinkFilter(**dict(rules))
    assert passes(combined, event) == all(expected(k, w, event) for k, w in rules)


@given(event=events(), casing=st.sampled_from(CASINGS))
@settings(max_examples=100)
def test_an_events_own_values_pass_in_any_case(
    event: dict[str, Any], casing: Callable[[str], str]
) -> None:
    rule = SinkFilter(
        events=(casing(event["event"]),),
        outcomes=(casing(_outcome(event)),),
        statuses=(casing(event["job"]["status"]),),
        job_types=(casing(event["job"]["operation"]),),
        subscriptions=(casing(event["vault"]["subscription_id"]),),
        vaults=(casing(event["vault"]["name"]),),
    )
    assert passes(rule, event)


@given(event=events(), glob=st.sampled_from(["prod-*", "PROD-*", "*-db", "?ev", "*", "t*-[0-9]"]))
@settings(max_examples=150)
def test_vault_globs_match_names(event: dict[str, Any], glob: str) -> None:
    name = event["vault"]["name"]
    want = fnmatch.fnmatchcase(name.casefold(), glob.casefold())
    assert passes(SinkFilter(vaults=(glob,)), event) == want
    assert passes(SinkFilter(vaults=("no-such-vault", glob)), event) == want


@given(event=events())
@settings(max_examples=50)
def test_vault_globs_match_resource_ids(event: dict[str, Any]) -> None:
    vault_id = event["vault"]["id"]
    assert passes(SinkFilter(vaults=(vault_id.upper(),)), event)
    sub = event["vault"]["subscription_id"]
    assert passes(SinkFilter(vaults=(f"/subscriptions/{sub}/*",)), event)
    other = SUB_B if sub == SUB_A else SUB_A
    assert not passes(SinkFilter(vaults=(f"/subscriptions/{other}/*",)), event)


@given(event=events())
@settings(max_examples=100)
def test_outcome_none_matches_exactly_the_unfinished_jobs(event: dict[str, Any]) -> None:
    unfinished = event["job"]["status"] in ("InProgress", "Paused")
    assert (event["job"]["outcome"] is None) == unfinished
    assert passes(SinkFilter(outcomes=("none",)), event) == unfinished
    assert passes(SinkFilter(outcomes=("NONE", "failed")), event) == (
        unfinished or event["job"]["outcome"] == "failed"
    )


def test_an_event_without_the_field_does_not_pass() -> None:
    """A list asks for a field the event lacks: it does not pass (no job: no outcome either)."""
    bare: dict[str, Any] = {"event": "backup_job.state_changed"}
    for key in ("outcomes", "statuses", "job_types", "subscriptions", "vaults"):
        assert not passes(SinkFilter(**{key: ("none",)}), bare), key
    assert passes(SinkFilter(events=("BACKUP_JOB.state_changed",)), bare)
