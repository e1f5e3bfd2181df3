"""Arbitrary JSON and headers against the parsers and the budget: only ParseError may escape."""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.budget import (
    SUBSCRIPTION_GLOBAL_READS,
    SUBSCRIPTION_READS,
    TENANT_READS,
    RateBudget,
)
from monitor.core.jobs import parse_job_details, parse_jobs_page
from monitor.core.vaults import parse_vault_id, parse_vaults_page
from monitor.errors import ParseError
from tests.core.payloads import ALL_ITEMS, VAULT_ID, page
from tests.core.strategies import json_values

pytestmark = pytest.mark.reliability

LONG = os.environ.get("RELIABILITY_LONG") == "1"
EXAMPLES = 3000 if LONG else 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VAULT = parse_vault_id(VAULT_ID)


def _set_path(doc: Any, path: list[Any], value: Any) -> Any:
    """`doc` with the value at `path` (keys and indexes, wrapped to fit) replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and doc:
        key = sorted(doc)[head % len(doc)] if isinstance(head, int) else head
        doc[key] = _set_path(doc.get(key), rest, value)
    elif isinstance(doc, list) and doc:
        index = head % len(doc) if isinstance(head, int) else 0
        doc[index] = _set_path(doc[index], rest, value)
    return doc


# A valid payload with one node somewhere replaced by arbitrary JSON: reaches deep branches
# that a purely random document never would.
mutated_pages = st.builds(
    lambda items, path, value: _set_path(page(*copy.deepcopy(items)), path, value),
    st.lists(st.sampled_from(ALL_ITEMS), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=40) | st.sampled_from(["properties"]), max_size=5),
    json_values,
)
mutated_jobs = st.builds(
    lambda item, path, value: _set_path(copy.deepcopy(item), path, value),
    st.sampled_from(ALL_ITEMS),
    st.lists(st.integers(min_value=0, max_value=40) | st.sampled_from(["properties"]), max_size=4),
    json_values,
)


class TestParsersNeverCrash:
    """Whatever ARM answers, parsing raises ParseError or returns; it never raises anything else."""

    @FUZZ
    @given(json_values | mutated_pages)
    def test_jobs_page(self, payload: Any) -> None:
        """A job-list page: parsed (bad items skipped with a path) or one ParseError."""
        try:
            result = parse_jobs_page(payload, VAULT)
        except ParseError:
            return
        for skipped in result.skipped:
            assert isinstance(skipped, ParseError)
        for job in result.jobs:
            assert job.key.vault_key == VAULT.key

    @FUZZ
    @given(json_values | mutated_jobs)
    def test_job_details(self, payload: Any) -> None:
        """A job-details answer: parsed or one ParseError."""
        try:
            parse_job_details(payload, VAULT)
        except ParseError:
            return

    @FUZZ
    @given(json_values)
    def test_vaults_page(self, payload: Any) -> None:
        """A vault-list page: parsed or one ParseError."""
        try:
            parse_vaults_page(payload)
        except ParseError:
            return


header_names = st.sampled_from(
    [SUBSCRIPTION_READS, SUBSCRIPTION_GLOBAL_READS, TENANT_READS, SUBSCRIPTION_READS.upper()]
) | st.text(max_size=20)
header_values = (
    st.integers(min_value=-(10**12), max_value=10**12).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.text(max_size=12)
)
instants = st.floats(min_value=0, max_value=1e7, allow_nan=False)


class TestBudgetNeverCrashes:
    """Garbage headers and Retry-After values never raise, and the budget stays usable."""

    @FUZZ
    @given(
        st.lists(
            st.tuples(
                st.dictionaries(header_names, header_values, max_size=4),
                instants,
                st.none() | header_values | st.floats(allow_nan=True, allow_infinity=True),
                st.floats(allow_nan=True, allow_infinity=True),
            ),
            max_size=12,
        )
    )
    def test_observe_anything(self, steps: list[tuple[dict[str, str], float, Any, float]]) -> None:
        """After any sequence of observations, a wait is finite and non-negative."""
        budget = RateBudget()
        now = 0.0
        for headers, dt, retry_after, jitter in steps:
            now += dt
            budget.observe_headers(headers, now)
            if retry_after is not None:
                budget.observe_throttled(retry_after, now, jitter)
            wait = budget.try_acquire(now)
            assert wait >= 0.0
            assert math.isfinite(wait)
