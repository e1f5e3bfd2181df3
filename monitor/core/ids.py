"""The identifiers that go into ARM URL paths: one safe path segment, a subscription GUID."""

# Rule: nothing here awaits, sleeps or reads the clock; the checks raise only ParseError.

from __future__ import annotations

import re
import unicodedata
from typing import Final, TypeGuard

from monitor.core.wire import excerpt
from monitor.errors import ParseError

__all__ = ["MAX_SEGMENT_CHARS", "check_path_segment", "check_subscription_id", "is_guid"]

MAX_SEGMENT_CHARS: Final = 260
"""The longest value accepted as one path segment. The names that reach our URLs are far shorter
(vault names 2–50 characters, resource groups 1–90, job names 36-character GUIDs); 260 leaves room
for any real one and bounds what a hostile page can put into a URL or a log line."""

# '/' and '\' split a path (some servers read '\' as '/'), '?' and '#' end it, '%' would be
# read as an escape by whatever decodes the path a second time, and C0 controls and DEL are
# never part of a name. ';' is allowed: Backup's container and item names hold it.
_UNSAFE_ASCII: Final = re.compile(r"[\x00-\x1f\x7f/\\?#%]")
# Beyond ASCII: C1 controls, format characters (bidi overrides and isolates, zero-width
# characters, the BOM: they make a name print as something it is not), lone surrogates (not
# encodable as UTF-8) and the line and paragraph separators. Letters of any script, right-to-left
# ones included, are allowed: the URL percent-encodes them.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_DOT_SEGMENTS: Final = frozenset({".", ".."})
_GUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE
)


def check_path_segment(value: object, what: str, *, path: str = "") -> str:
    """Return `value` when it is safe as exactly one segment of an ARM URL path.

    Refused: a non-string; the empty string; more than MAX_SEGMENT_CHARS characters; `.` and
    `..`; leading or trailing whitespace; `/`, `\\`, `?`, `#`, `%`; control characters (C0, DEL,
    C1), format characters (Unicode category Cf: bidi overrides, zero-width characters), lone
    surrogates, U+2028 and U+2029; and any value whose NFKC form holds one of those characters or
    is a dot segment (full-width `／` or `．．`, which a normalising server would read as `/` or
    `..`). Everything else is allowed, letters of every script included: the URL
    percent-encodes it, so an accepted value is one segment however it is quoted.

    Args:
        value: the identifier as parsed (an ARM payload's field, a command-line argument).
        what: what it is, for the message: `"job name"`, `"vault name"`, `"resource group"`.
        path: the ParseError's path (a JSON path such as `name`, or an argument's name).

    Raises:
        ParseError: (named `path`) the value is not safe; the message names `what`, the problem
            and an excerpt of the value.
    """
    if type(value) is not str:
        raise ParseError(path, f"{what}: expected a string, got {type(value).__name__}")
    problem = _segment_problem(value)
    if problem is not None:
        raise ParseError(path, f"{what} {problem}: {excerpt(value)}")
    return value


def is_guid(value: object) -> TypeGuard[str]:
    """Whether `value` is a string holding a GUID, in any casing."""
    return type(value) is str and _GUID.fullmatch(value) is not None


def check_subscription_id(value: object, *, path: str = "") -> str:
    """Return `value` when it is a subscription id: a GUID (any casing; returned as given).

    Raises:
        ParseError: (named `path`) not a string, or not a GUID.
    """
    if not is_guid(value):
        raise ParseError(path, f"subscription id must be a GUID, got {excerpt(value)}")
    return value


def _segment_problem(value: str) -> str | None:
    """Why `value` is not one safe path segment, or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_SEGMENT_CHARS:
        return f"is {len(value)} characters long, more than {MAX_SEGMENT_CHARS}"
    if value in _DOT_SEGMENTS:
        return "is a dot segment"
    if value[0].isspace() or value[-1].isspace():
        return "has leading or trailing whitespace"
    bad = _UNSAFE_ASCII.search(value)
    if bad is not None:
        return f"holds {_char_name(bad.group())}"
    if value.isascii():
        return None  # the common case: GUIDs and ARM names
    for char in value:
        if char > "\x7f" and unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"holds {_char_name(char)}"
    folded = unicodedata.normalize("NFKC", value)
    if folded in _DOT_SEGMENTS:
        return f"normalises (NFKC) to the dot segment {folded!r}"
    bad = _UNSAFE_ASCII.search(folded)
    if bad is not None:
        return f"normalises (NFKC) to a value that holds {_char_name(bad.group())}"
    return None


def _char_name(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X}), which a path segment cannot hold"
