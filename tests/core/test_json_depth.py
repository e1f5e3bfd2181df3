"""Tests of monitor.core.json_depth: orjson's answer when it can, null for what is too deep."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.json_depth import (
    MAX_DEPTH,
    MAX_REPORTED_PATHS,
    ORJSON_MAX_DEPTH,
    is_too_deep,
    limit_depth,
    loads_bounded,
)

MARKER = "\x00deep\x00"
"""Stands where a deep value goes; NUL never occurs in the generated strings."""

# Strings that look like JSON structure: brackets, quotes, escapes, separators, non-ASCII.
TRICKY = st.text(
    alphabet=st.sampled_from([*'[]{}",:\\/ \n\t\r', "a", "é", "\u2028", "😀", "\x1f"]),
    max_size=12,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY
    | st.text(max_size=8)
)


def containers(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(TRICKY, children, max_size=5)
        ),
        max_leaves=25,
    )


documents = containers(SCALARS)
marked_documents = containers(SCALARS | st.just(MARKER))


def dumps(value: Any, style: int) -> bytes:
    """`value` as JSON text in one of three layouts (compact, indented, ASCII-escaped)."""
    if style == 0:
        return orjson.dumps(value)
    if style == 1:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2)
    return json.dumps(value, indent=1, separators=(" , ", " : ")).encode()


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


def step(path: str, part: str | int) -> str:
    """`path` one level further down, written as json_depth writes paths."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    if _PLAIN.fullmatch(part):
        return f"{path}.{part}" if path else part
    text = repr(part)
    return f"{path}[{text if len(text) <= 60 else text[:57] + '...'}]"


@dataclass(frozen=True)
class Chain:
    """A value nested `depth` levels: `opening * depth + core + closing * depth` as text."""

    opening: bytes
    core: bytes
    closing: bytes
    innermost: Any
    """The decoded deepest level (`opening + core + closing`)."""
    wrap: Callable[[Any], Any]
    """The decoded level around a decoded level."""
    part: str | int
    """Where each level holds the next one (a key or an index)."""

    def text(self, depth: int) -> bytes:
        return self.opening * depth + self.core + self.closing * depth

    def expected(self, depth: int, kept: int) -> tuple[Any, bool]:
        """The decoded chain with its levels below `kept` cut to null, and whether it was cut."""
        if depth <= kept:
            value = self.innermost
            for _ in range(depth - 1):
                value = self.wrap(value)
            return value, False
        value = None
        for _ in range(kept):
            value = self.wrap(value)
        return value, True


CHAINS = [
    Chain(b"[", b"", b"]", [], lambda v: [v], 0),
    Chain(b'{"a":', b"1", b"}", {"a": 1}, lambda v: {"a": v}, "a"),
    Chain(b'["]\\"{", ', b"0", b"]", [']"{', 0], lambda v: [']"{', v], 1),
    Chain(b'{"[\\"}" : ', b'"x"', b"}", {'["}': "x"}, lambda v: {'["}': v}, '["}'),
]


def marker_paths(value: Any, path: str = "") -> list[str]:
    if value == MARKER:
        return [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in marker_paths(v, step(path, i))]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in marker_paths(v, step(path, k))]
    return []


def marker_levels(value: Any, level: int = 0) -> list[int]:
    """How many containers are open around each marker, in document order."""
    if value == MARKER:
        return [level]
    if isinstance(value, list):
        return [n for v in value for n in marker_levels(v, level + 1)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in marker_levels(v, level + 1)]
    return []


def replace_markers(value: Any, replacements: list[Any]) -> Any:
    """`value` with its markers replaced, in document order, by `replacements` (consumed)."""
    if value == MARKER:
        return replacements.pop(0)
    if isinstance(value, list):
        return [replace_markers(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: replace_markers(v, replacements) for k, v in value.items()}
    return value


class TestShallow:
    @settings(max_examples=300)
    @given(documents, st.integers(0, 2))
    def test_a_document_within_the_limit_decodes_as_orjson_decodes_it(
        self, value: Any, style: int
    ) -> None:
        """Any document no deeper than the limit gives orjson's value and removes nothing."""
        text = dumps(value, style)
        result = loads_bounded(text)
        assert result.value == orjson.loads(text)
        assert result.removed == ()
        assert result.removed_count == 0

    @given(documents, st.integers(0, 2))
    def test_the_limit_is_inclusive(self, value: Any, style: int) -> None:
        """With the limit set to the document's own depth, nothing is removed."""
        limit = max(depth_of(value), 1)
        result = loads_bounded(dumps(value, style), max_depth=limit)
        assert result.value == value
        assert result.removed_count == 0

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Two thousand brackets and escaped quotes inside one string are just a string."""
        value = {"s": '\\"' + "[{" * 1000 + '"', "t": ["]", "\\", '"[']}
        result = loads_bounded(orjson.dumps(value), max_depth=2)
        assert result.value == value
        assert result.removed_count == 0


class TestDeep:
    @settings(max_examples=300, deadline=None)
    @given(
        value=marked_documents,
        style=st.integers(0, 2),
        chain=st.sampled_from(CHAINS),
        depths=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
        slack=st.integers(0, 8),
    )
    def test_each_deep_value_is_cut_at_the_limit_and_every_sibling_is_kept(
        self, value: Any, style: int, chain: Chain, depths: list[int], slack: int
    ) -> None:
        """Deep values spliced anywhere are cut to null at the limit; the rest decodes intact."""
        paths = marker_paths(value)
        levels = marker_levels(value)
        limit = max(depth_of(value), 1) + slack
        text = dumps(value, style)
        marker = json.dumps(MARKER).encode()
        pieces = text.split(marker)
        assert len(pieces) == len(paths) + 1
        expected_values: list[Any] = []
        expected_paths: list[str] = []
        spliced = [pieces[0]]
        for n, (path, level) in enumerate(zip(paths, levels, strict=True)):
            depth = depths[n % len(depths)]
            spliced += (chain.text(depth), pieces[n + 1])
            kept = limit - level
            decoded, was_cut = chain.expected(depth, kept)
            expected_values.append(decoded)
            if was_cut:
                where = path
                for _ in range(kept):
                    where = step(where, chain.part)
                expected_paths.append(where)

        result = loads_bounded(b"".join(spliced), max_depth=limit)

        assert result.value == replace_markers(value, expected_values)
        assert result.removed_count == len(expected_paths)
        assert list(result.removed) == expected_paths[:MAX_REPORTED_PATHS]

    @pytest.mark.parametrize("chain", CHAINS, ids=lambda c: c.opening.decode())
    def test_a_100000_deep_value_leaves_its_siblings(self, chain: Chain) -> None:
        """A value 100,000 levels deep between two jobs: it is null, both jobs are intact."""
        good = {"name": "job-1", "properties": {"status": "Completed", "bag": {"x": "y"}}}
        text = (
            b'{"value":['
            + orjson.dumps(good)
            + b',{"name":"deep","properties":{"extendedInfo":{"propertyBag":{"x":'
            + chain.text(100_000)
            + b"}}}},"
            + orjson.dumps(good)
            + b'],"nextLink":null}'
        )
        with pytest.raises(orjson.JSONDecodeError) as refused:
            orjson.loads(text)
        assert is_too_deep(refused.value)

        result = loads_bounded(text)

        page = result.value
        assert isinstance(page, dict)
        first, deep, last = page["value"]
        assert first == last == good
        assert deep["name"] == "deep"
        bag = deep["properties"]["extendedInfo"]["propertyBag"]
        kept = MAX_DEPTH - 6  # root, value, item, properties, extendedInfo, propertyBag
        assert (bag["x"], True) == chain.expected(100_000, kept)
        where = "value[1].properties.extendedInfo.propertyBag.x"
        for _ in range(kept):
            where = step(where, chain.part)
        assert result.removed == (where,)
        assert result.removed_count == 1

    def test_only_the_first_paths_are_kept_but_all_are_counted(self) -> None:
        """Thirty deep values: all thirty are null and counted, ten paths are reported."""
        deep = b"[" * 2000 + b"]" * 2000
        text = b"[" + b",".join([deep] * 30) + b"]"
        result = loads_bounded(text)
        assert result.value == _nested_nulls(30)
        assert result.removed_count == 30
        assert len(result.removed) == MAX_REPORTED_PATHS
        assert result.removed[3] == "[3]" + "[0]" * (MAX_DEPTH - 1)


def _nested_nulls(count: int) -> list[Any]:
    """`count` arrays, each nested MAX_DEPTH - 1 levels down to a null."""
    one: Any = None
    for _ in range(MAX_DEPTH - 1):
        one = [one]
    return [one] * count


class TestMalformed:
    @settings(max_examples=500)
    @given(st.binary(max_size=200) | st.text(alphabet='[]{}",:1 a\\', max_size=60).map(str.encode))
    def test_any_bytes_decode_as_orjson_or_raise_a_decode_error(self, text: bytes) -> None:
        """Arbitrary bytes give orjson's value when shallow, else JSONDecodeError, nothing else.

        Text that orjson refuses decodes only when the refused part was inside a removed value.
        """
        try:
            expected = orjson.loads(text)
        except orjson.JSONDecodeError:
            with contextlib.suppress(orjson.JSONDecodeError):
                assert loads_bounded(text, max_depth=3).removed_count > 0
            return
        if depth_of(expected) <= 3:
            assert loads_bounded(text, max_depth=3).value == expected

    @settings(max_examples=300)
    @given(
        value=marked_documents,
        chain=st.sampled_from(CHAINS),
        depth=st.integers(1025, 3000),
        cut=st.floats(0, 1, exclude_max=True),
    )
    def test_a_deep_document_cut_short_is_a_decode_error(
        self, value: Any, chain: Chain, depth: int, cut: float
    ) -> None:
        """A deep document truncated anywhere raises JSONDecodeError, never RecursionError."""
        text = orjson.dumps(value).replace(json.dumps(MARKER).encode(), chain.text(depth))
        if not marker_paths(value):
            text = b"[" + chain.text(depth) + b"," + text + b"]"
        truncated = text[: int(len(text) * cut)]
        with pytest.raises(orjson.JSONDecodeError):
            loads_bounded(truncated)

    @pytest.mark.parametrize(
        "text",
        [
            b"[" * 2000 + b"]" * 1999,  # never closed
            b"[" * 2000 + b"]" * 2001,  # closes more than it opened
            b'["' + b"[" * 2000,  # a string never closed
            b"[" * 2000 + b'"' + b"]" * 2000,  # a string never closed, inside the deep part
            b"[" * 2000 + b"]" * 2000 + b"x",  # junk after the document
            b'{"a" 1}' + b"[" * 2000,
        ],
    )
    def test_malformed_deep_documents_are_decode_errors(self, text: bytes) -> None:
        """Broken brackets or strings around a deep part are orjson's JSONDecodeError."""
        with pytest.raises(orjson.JSONDecodeError):
            loads_bounded(text)

    def test_the_limit_must_be_one_orjson_accepts(self) -> None:
        """A limit of 0 or of 1024 and more is refused with its value."""
        for limit in (0, ORJSON_MAX_DEPTH):
            with pytest.raises(ValueError, match=str(limit)):
                loads_bounded(b"[]", max_depth=limit)

    def test_is_too_deep_tells_depth_from_other_errors(self) -> None:
        """Only orjson's depth refusal counts as too deep."""
        for text, deep in ((b"[" * 1025 + b"]" * 1025, True), (b"[1,]", False), (b"", False)):
            with pytest.raises(orjson.JSONDecodeError) as caught:
                orjson.loads(text)
            assert is_too_deep(caught.value) is deep


class TestLimitDepth:
    def test_a_value_too_deep_to_write_becomes_writable(self) -> None:
        """A 1,000-deep object (decodable, not encodable by orjson) is cut at the limit."""
        text = b'{"a":' * 1000 + b"1" + b"}" * 1000
        value = orjson.loads(text)
        with pytest.raises(TypeError):
            orjson.dumps(value)
        cut = limit_depth(value, max_depth=3)
        assert cut == {"a": {"a": {"a": None}}}
        assert orjson.loads(orjson.dumps(limit_depth(value))) == loads_bounded(text).value

    @given(doc=documents)
    def test_a_shallow_value_is_copied_unchanged(self, doc: object) -> None:
        """Within the limit the copy equals the value (lists keep their order)."""
        assert limit_depth(doc, max_depth=1023) == doc

    def test_the_limit_is_checked(self) -> None:
        """A limit outside 1..1023 is refused, as for loads_bounded."""
        with pytest.raises(ValueError, match="max_depth"):
            limit_depth({}, max_depth=0)
