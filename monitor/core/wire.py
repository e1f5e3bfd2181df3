"""ARM's wire formats: date-times, durations, the jobs `$filter`, and the page parsers' helpers."""

# Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON (dicts, lists,
# str, int, float, bool, None) and raise only ParseError.
# The helpers below the times are the field readers every page parser shares (vaults, jobs).

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from monitor.errors import ParseError

__all__ = [
    "SENTINEL_YEAR_BELOW",
    "build_jobs_filter",
    "encoded_jobs_filter",
    "excerpt",
    "format_filter_time",
    "nested",
    "opt_number",
    "opt_str",
    "page_items",
    "parse_arm_time",
    "parse_duration_s",
    "percent_encoded",
    "time_field",
]

# Years below this mean "unset": DateTime.MinValue (0001-01-01) and Backup's 2001-01-01.
SENTINEL_YEAR_BELOW: Final = 2002

# --------------------------------------------------------------------------------------------
# Times and durations


def parse_arm_time(text: str, *, path: str = "time") -> datetime | None:
    """Parse an ARM date-time into an aware UTC datetime; sentinel years (< 2002) give None.

    Accepts `Z` or a numeric offset and 0–7 fractional digits (the 7th is truncated); a time
    without an offset is taken as UTC, which is what ARM means.

    Raises:
        ParseError: (named `path`) the text is not an ISO 8601 date-time.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise ParseError(path, f"not an ISO 8601 date-time: {excerpt(text)}") from None
    if parsed.year < SENTINEL_YEAR_BELOW:
        return None
    zone = parsed.tzinfo
    if zone is UTC:  # the common case: ARM's `Z`
        return parsed
    if zone is None:
        return parsed.replace(tzinfo=UTC)
    if parsed.utcoffset():
        return parsed.astimezone(UTC)
    return parsed.replace(tzinfo=UTC)


_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION: Final = re.compile(
    rf"([-+])?P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?",
    re.ASCII | re.IGNORECASE,
)
_ISO_SECONDS: Final = re.compile(r"PT(\d{1,15}(?:\.\d{1,15})?)S", re.ASCII)
_TIMESPAN: Final = re.compile(
    r"(-)?(?:(\d{1,8})[.:])?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?",
    re.ASCII,
)


def parse_duration_s(text: str) -> float | None:
    """Parse an ARM duration into seconds: ISO 8601 or .NET TimeSpan text.

    ISO 8601: `PT12.4272909S`, `PT0S`, `P1DT2H`, `P4W`, with an optional sign; years and months
    are accepted only when zero (they have no fixed length). TimeSpan: `[-][d.]hh:mm:ss[.fffffff]`
    (e.g. `00:20:23.0896697`, `1.02:03:04.5`, `-00:00:01`), also with `d:` as the day separator.
    Never raises: anything else, including non-strings, gives None.
    """
    if type(text) is not str:
        return None
    match = _ISO_SECONDS.fullmatch(text)
    if match is not None:  # the common "PT12.4272909S"
        return float(match.group(1))
    match = _TIMESPAN.fullmatch(text)
    if match is not None:
        sign, days, hours, minutes, seconds, fraction = match.groups()
        h, m, s = int(hours), int(minutes), int(seconds)
        if h > 23 or m > 59 or s > 59:
            return None
        total = (int(days) * 86400 if days else 0) + h * 3600 + m * 60 + s
        value = total + int(fraction) / 10 ** len(fraction) if fraction else float(total)
        return -value if sign else value
    match = _ISO_DURATION.fullmatch(text)
    if match is None:
        return None
    sign, years, months, weeks, days, hours, minutes, seconds = match.groups()
    if (years and float(years.replace(",", "."))) or (months and float(months.replace(",", "."))):
        return None
    parts = ((weeks, 604800), (days, 86400), (hours, 3600), (minutes, 60), (seconds, 1))
    if not any(p for p, _ in parts) and years is None and months is None:
        return None  # "P", "PT" and "-P" carry no component.
    if text.endswith(("T", "t")):
        return None  # "P1DT": a T must be followed by a time component.
    value = 0.0
    for part, unit in parts:
        if part:
            value += float(part.replace(",", ".")) * unit
    if not math.isfinite(value):
        return None  # absurdly many digits
    return -value if sign == "-" else value


# --------------------------------------------------------------------------------------------
# $filter


def format_filter_time(moment: datetime) -> str:
    """Format an instant as ARM's `$filter` time: UTC, `yyyy-MM-dd hh:mm:ss AM|PM` (en-US).

    Built by hand so the process locale cannot change `%p`; midnight is `12:00:00 AM`.

    Raises:
        ValueError: `moment` is naive (the filter is in UTC; a naive time is ambiguous).
    """
    if moment.tzinfo is UTC:
        utc = moment  # the poll step's windows: no conversion
    elif moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("format_filter_time needs an aware datetime")
    else:
        utc = moment.astimezone(UTC)
    hour12 = utc.hour % 12 or 12
    half = "AM" if utc.hour < 12 else "PM"
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{hour12:02d}:{utc.minute:02d}:{utc.second:02d} {half}"
    )


def build_jobs_filter(start_at: datetime, end_at: datetime) -> str:
    """Build the `$filter` value for a job window: `startTime eq '…' and endTime eq '…'`.

    The value is not URL-encoded; the HTTP layer encodes it once.

    Raises:
        ValueError: either instant is naive, or `end_at` is before `start_at`.
    """
    start_text, end_text = format_filter_time(start_at), format_filter_time(end_at)
    if end_at < start_at:
        raise ValueError("build_jobs_filter: end_at is before start_at")
    return f"startTime eq '{start_text}' and endTime eq '{end_text}'"


def encoded_jobs_filter(start_at: datetime, end_at: datetime) -> str:
    """`build_jobs_filter(start_at, end_at)` percent-encoded as one query value, exactly as
    `urllib.parse.quote(value, safe="")` encodes it.

    The filter's only characters outside `[A-Za-z0-9_.~-]` are spaces, single quotes and
    colons, so three replacements do what `quote` does at a tenth of its cost (it is built for
    every job list).

    Raises:
        ValueError: as `build_jobs_filter`.
    """
    text = build_jobs_filter(start_at, end_at)
    return text.replace(" ", "%20").replace("'", "%27").replace(":", "%3A")


_PLAIN_TEXT: dict[str, re.Pattern[str]] = {}


def percent_encoded(text: str, safe: str = "") -> str:
    """`urllib.parse.quote(text, safe=safe)`, returning at once text that it leaves as it is
    (made only of ASCII letters, digits, `_.-~` and the ASCII characters of `safe`): resource
    ids and API versions nearly always are, and every request's URL is built from them."""
    plain = _PLAIN_TEXT.get(safe)
    if plain is None:
        kept = re.escape("".join(c for c in safe if c.isascii()))
        plain = _PLAIN_TEXT[safe] = re.compile(f"[A-Za-z0-9_.~{kept}-]*")
    return text if plain.fullmatch(text) else quote(text, safe=safe)


# --------------------------------------------------------------------------------------------
# Field helpers of the page parsers


def page_items(payload: object) -> tuple[list[object], str | None]:
    """A list page's `value` items and its `nextLink` (None when absent, null or empty)."""
    if not isinstance(payload, dict):
        raise ParseError("", f"expected an object, got {type(payload).__name__}")
    items = payload.get("value")
    if not isinstance(items, list):
        raise ParseError("value", "missing or not a list")
    return items, _next_link(payload.get("nextLink"))


def _next_link(link: object) -> str | None:
    if link is None or link == "":
        return None
    if not isinstance(link, str):
        raise ParseError("nextLink", "not a string")
    return link


def excerpt(value: object) -> str:
    """A short repr for error messages: payload strings can be arbitrarily long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def nested(prefix: str, exc: ParseError) -> ParseError:
    """`exc` with its path put under `prefix` (an item's place in the page, e.g. `value[3]`)."""
    path = f"{prefix}.{exc.path}" if exc.path else prefix
    return ParseError(path, exc.problem)


def opt_str(obj: dict[str, object], name: str, prefix: str = "") -> str | None:
    """The string field `name` of `obj`, or None when absent; ParseError `prefix + name` else."""
    value = obj.get(name)
    if value is None or type(value) is str:
        return value
    raise ParseError(prefix + name, f"not a string: {type(value).__name__}")


def opt_number(obj: dict[str, object], name: str, prefix: str = "") -> float | None:
    """The number field `name` of `obj` as a float, or None when absent (a bool is no number)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(prefix + name, "not a number")
    return float(value)


def time_field(value: object, path: str) -> datetime | None:
    """A date-time field (`parse_arm_time`); ParseError named `path` when it is not a string."""
    if type(value) is not str:
        raise ParseError(path, "not a string")
    return parse_arm_time(value, path=path)
