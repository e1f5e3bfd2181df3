"""Hypothesis strategies shared by the core property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)

PROPERTY_KEYS = st.sampled_from(
    [
        "jobType",
        "status",
        "operation",
        "startTime",
        "endTime",
        "duration",
        "actionsInfo",
        "entityFriendlyName",
        "backupManagementType",
        "activityId",
        "errorDetails",
        "extendedInfo",
    ]
)

# Job-shaped JSON: the right keys with arbitrary values, so parsers reach their inner branches.
job_like: st.SearchStrategy[Any] = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=10) | json_values,
        "name": st.text(max_size=10) | json_values,
        "properties": st.dictionaries(PROPERTY_KEYS, json_values, max_size=8) | json_values,
    },
)

# Characters a path segment may never hold, each named in the refusal by its code point.
UNSAFE_SEGMENT_CHARS = [
    "/", "\\", "?", "#", "%", "\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028",
    "\u2029", "\u202e", "\u2066", "\u200b", "\u200f", "\ufeff", "\ud800",
]  # fmt: skip

# Text for identifiers: any code point, weighted towards what URLs and paths treat specially
# (the refused characters, dots, spaces, the sub-delimiters a path keeps, full-width look-alikes).
segment_text: st.SearchStrategy[str] = st.text(
    alphabet=st.characters(codec=None)
    | st.sampled_from(
        [*UNSAFE_SEGMENT_CHARS, ".", " ", ";", "+", "&", "=", ":", "@", "(", ")", "'", "~"]
    )
    | st.sampled_from(["\uff0f", "\uff0e", "\uff05", "\u2100", "\u00a0", "\u3000"]),
    max_size=300,
)
