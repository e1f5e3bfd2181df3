"""Decoding JSON nested deeper than orjson accepts, with every too-deep value replaced by null."""

# Rules:
# - Pure: no I/O, no clock. Iterative: no input, however deep, can raise RecursionError.
# - Linear in the text: one regex match per string and per run of bytes between strings; the
#   bytes of a run are looked at one by one only outside removed values (inside them, a run is
#   counted with bytes.count unless it may hold the value's end). Then one orjson.loads.
# - A document no deeper than the limit is handed to orjson as it is, so for it the result is
#   exactly orjson.loads(text).

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = [
    "MAX_DEPTH",
    "MAX_REPORTED_PATHS",
    "BoundedJson",
    "is_too_deep",
    "limit_depth",
    "loads_bounded",
]

MAX_DEPTH: Final = 64
"""Arrays and objects nested deeper than this are replaced by null. ARM's deepest documented
field is about 6 levels down (`value[i].properties.extendedInfo.tasksList[j].x`); what is kept
stays well inside what orjson can decode (1024 levels) and write back (254)."""
ORJSON_MAX_DEPTH: Final = 1024
"""The deepest nesting orjson.loads accepts."""
MAX_REPORTED_PATHS: Final = 10
"""Paths kept in `BoundedJson.removed`; `removed_count` counts every replaced value."""

_DEPTH_ERROR: Final = "depth limit exceeded"
# A whole JSON string (escapes included) with the comma or colon that follows it, a run of
# bytes outside strings, or a quote that opens a string never closed. Possessive, so that
# nothing backtracks.
_TOKEN: Final = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"(?:[ \t\r\n]*+[,:])?+|[^"]++|"', re.DOTALL)
_QUOTE, _COMMA_BYTE, _COLON_BYTE = b'",:'
# What each byte is outside strings: 0 nothing structural, then , : [ { ] }.
_OTHER, _COMMA, _COLON, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE = range(6)
_KIND: Final = tuple(
    {
        ord(","): _COMMA,
        ord(":"): _COLON,
        ord("["): _OPEN_ARRAY,
        ord("{"): _OPEN_OBJECT,
        ord("]"): _CLOSE,
        ord("}"): _CLOSE,
    }.get(byte, _OTHER)
    for byte in range(256)
)
# How each byte outside strings changes the nesting: +1 opens, -1 closes.
_NESTING: Final = tuple(1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256))
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundedJson:
    """A decoded document and what was cut out of it.

    Attributes:
        value: the document, with each array or object nested deeper than the limit replaced
            by None.
        removed: the JSON paths of the first MAX_REPORTED_PATHS replaced values, in document
            order, e.g. `value[3].properties.extendedInfo.propertyBag.x`.
        removed_count: how many values were replaced.
    """

    value: object
    removed: tuple[str, ...]
    removed_count: int


def is_too_deep(exc: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused a document because it nests deeper than 1024 levels.

    orjson reads from the start and stops at the first problem, so everything before the
    too-deep bracket was well-formed; what follows it is unchecked.
    """
    return exc.msg == _DEPTH_ERROR


def loads_bounded(text: bytes, *, max_depth: int = MAX_DEPTH) -> BoundedJson:
    """Decode `text`, replacing every array or object nested deeper than `max_depth` by None.

    The depth of an array or object is the number of brackets open at its first byte, its
    own included: the root object is at depth 1. The text of a replaced value is checked only
    for balanced brackets outside strings; everything else is decoded, and checked, by orjson.

    Raises:
        orjson.JSONDecodeError: the text outside the replaced values is not JSON (unbalanced
            brackets and unterminated strings included).
        ValueError: `max_depth` is not between 1 and 1023.
    """
    if not 1 <= max_depth < ORJSON_MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {ORJSON_MAX_DEPTH - 1}, got {max_depth}")
    scan = _Scan(text, max_depth)
    scan.run()
    if not scan.pieces:
        return BoundedJson(value=orjson.loads(text), removed=(), removed_count=0)
    scan.pieces.append(text[scan.kept_from :])
    return BoundedJson(
        value=orjson.loads(b"".join(scan.pieces)),
        removed=tuple(scan.removed),
        removed_count=scan.count,
    )


def limit_depth(value: object, *, max_depth: int = MAX_DEPTH) -> object:
    """A copy of decoded JSON with every array or object nested deeper than `max_depth`
    replaced by None; depth counts as in `loads_bounded` (the root is at depth 1).

    For writing back what was read: orjson decodes 1024 levels but encodes only 254, so a
    value between the two cannot be written as it is. Iterative, like the scan.

    Raises:
        ValueError: `max_depth` is not between 1 and 1023.
    """
    if not 1 <= max_depth < ORJSON_MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {ORJSON_MAX_DEPTH - 1}, got {max_depth}")
    if not isinstance(value, dict | list):
        return value
    root: dict[object, object] | list[object] = {} if isinstance(value, dict) else []
    stack: list[
        tuple[dict[object, object] | list[object], dict[object, object] | list[object], int]
    ]
    stack = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            child: object = item
            if isinstance(item, dict | list):
                if depth >= max_depth:
                    child = None
                else:
                    child = {} if isinstance(item, dict) else []
                    stack.append((item, child, depth + 1))  # type: ignore[arg-type]
            if isinstance(target, dict):
                target[key] = child
            else:
                target.append(child)
    return root


class _Scan:
    """One pass over the text: where each too-deep value starts and ends, and its path."""

    __slots__ = (
        "count",
        "index",
        "is_object",
        "kept_from",
        "keys",
        "max_depth",
        "pieces",
        "removed",
        "text",
    )

    def __init__(self, text: bytes, max_depth: int) -> None:
        self.text = text
        self.max_depth = max_depth
        # Per open level d (1..max_depth): an object?, how many commas so far, and the span
        # of the last key read at that level.
        self.is_object = [False] * (max_depth + 1)
        self.index = [0] * (max_depth + 1)
        self.keys: list[tuple[int, int] | None] = [None] * (max_depth + 1)
        self.pieces: list[bytes] = []
        self.kept_from = 0
        self.removed: list[str] = []
        self.count = 0

    def run(self) -> None:
        text, max_depth, kinds = self.text, self.max_depth, _KIND
        is_object, index, keys = self.is_object, self.index, self.keys
        match = _TOKEN.match
        size = len(text)
        depth = 0
        pos = 0
        while pos < size:
            token = match(text, pos)
            assert token is not None  # the pattern matches any non-empty text
            start, pos = pos, token.end()
            if text[start] == _QUOTE:
                follows = text[pos - 1]
                if follows == _COLON_BYTE:
                    keys[depth] = (start, pos)
                elif follows == _COMMA_BYTE:
                    index[depth] += 1
                elif pos - start == 1:
                    return  # a string never closed: orjson says so
                continue
            for offset, byte in enumerate(text[start:pos]):
                kind = kinds[byte]
                if kind == _OTHER:
                    continue
                if kind == _COMMA:
                    index[depth] += 1
                elif kind == _COLON:
                    keys[depth] = None  # not after a string: orjson says so
                elif kind == _CLOSE:
                    if depth == 0:
                        return  # a bracket closing nothing: orjson says so
                    depth -= 1
                elif depth < max_depth:
                    depth += 1
                    is_object[depth] = kind == _OPEN_OBJECT
                    index[depth] = 0
                    keys[depth] = None
                else:
                    opened = start + offset
                    end = _end_of_value(text, opened + 1)
                    if end is None:
                        return  # never closed: orjson says so
                    self._remove(opened, end, depth)
                    pos = end
                    break

    def _remove(self, start: int, end: int, depth: int) -> None:
        self.pieces += (self.text[self.kept_from : start], b"null")
        self.kept_from = end
        self.count += 1
        if len(self.removed) < MAX_REPORTED_PATHS:
            self.removed.append(self._path(depth))

    def _path(self, depth: int) -> str:
        """The JSON path of the value that starts as a child of open level `depth`."""
        parts: list[str] = []
        for level in range(1, depth + 1):
            if not self.is_object[level]:
                parts.append(f"[{self.index[level]}]")
                continue
            span = self.keys[level]
            name = (
                "?" if span is None else _key_text(self.text[span[0] : span[1]].rstrip(b" \t\r\n:"))
            )
            if _PLAIN_KEY.fullmatch(name):
                parts.append(f".{name}" if parts else name)
            else:
                parts.append(f"[{_excerpt(name)}]")
        return "".join(parts)


def _end_of_value(text: bytes, pos: int) -> int | None:
    """One past the bracket that closes the array or object whose opening bracket ends just
    before `pos`; None when the text ends first."""
    level = 1
    match = _TOKEN.match
    size = len(text)
    while pos < size:
        token = match(text, pos)
        assert token is not None
        start, pos = pos, token.end()
        if text[start] == _QUOTE:
            if pos - start == 1:
                return None  # a string never closed
            continue
        closes = text.count(b"]", start, pos) + text.count(b"}", start, pos)
        if closes < level:  # the value cannot end in this run
            level += text.count(b"[", start, pos) + text.count(b"{", start, pos) - closes
            continue
        for offset, byte in enumerate(text[start:pos]):
            level += _NESTING[byte]
            if level == 0:
                return start + offset + 1
    return None


def _key_text(raw: bytes) -> str:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    return decoded if isinstance(decoded, str) else raw.decode("utf-8", "replace")


def _excerpt(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."
