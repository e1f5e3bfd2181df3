"""The terminal of the one-shot commands: results on stdout, one line per problem on stderr."""

# Rules:
# - The progress line never wraps: it is cut to the terminal's width less one column (a line
#   that fills the last column wraps on some terminals, and `\r` then redraws only the last
#   row, leaving copies behind). Callers give shorter variants (`fit`); a hard cut is the end.

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TextIO

import orjson

from monitor.core.jobs import BackupJob, JobDetails
from monitor.core.json_depth import limit_depth
from monitor.core.vaults import VaultRef
from monitor.errors import ArmError
from monitor.events import format_event_time, render_job, render_vault


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to: `COLUMNS` when set (as
    `shutil.get_terminal_size` reads it), else the stream's own terminal, else stdout's, else 80."""
    size = shutil.get_terminal_size()  # COLUMNS first, then stdout's terminal, then 80
    if os.environ.get("COLUMNS", "").strip().isdigit():
        return size.columns
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return os.get_terminal_size(stream.fileno()).columns
    return size.columns


def fit(candidates: Sequence[str], width: int) -> str:
    """The first of `candidates` (the fullest first) that fits in `width - 1` columns, else the
    last one cut to that, ending in `…`."""
    room = max(width - 1, 1)
    for candidate in candidates:
        if len(candidate) <= room:
            return candidate
    last = candidates[-1] if candidates else ""
    return last[: room - 1] + "…" if room > 1 else last[:room]


class Console:
    """stdout for results; stderr for diagnostics and, on a terminal, one live progress line."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        progress: bool,
        columns: Callable[[], int] | None = None,
    ) -> None:
        """`columns`: the terminal's width, asked at every redraw (default: `terminal_columns`
        of `err`), so a resized terminal is followed."""
        self.out, self.err, self.progress = out, err, progress
        self.columns = columns or (lambda: terminal_columns(err))
        self._drawn = False
        self._out_closed = False

    def result(self, text: str) -> None:
        """Write `text` (newline added) to stdout; once the reader went away, drop it.

        A closed pipe (`… | head`) is not an error of the command: the exit code still says how
        the command went.
        """
        if self._out_closed:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            self._out_closed = True
            # Point the descriptor at /dev/null so that the interpreter's final flush is quiet.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)

    def problem(self, text: str) -> None:
        """Write one diagnostic line to stderr (whitespace runs collapsed), above the progress."""
        self.clear()
        self.err.write(" ".join(text.split()) + "\n")
        self.err.flush()

    def status(self, text: str | Sequence[str]) -> None:
        """Redraw the progress line (terminal only): `text`, or the first of its variants (the
        fullest first) that fits the terminal's width (`fit`)."""
        if not self.progress:
            return
        candidates = [text] if isinstance(text, str) else list(text)
        self.err.write("\r\x1b[K" + fit(candidates, self.columns()))
        self.err.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the progress line, if one is drawn."""
        if self._drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._drawn = False


def describe_arm_error(exc: ArmError) -> str:
    """ARM's status, error code, message and request id in one line, without the URL when the
    caller names the resource already."""
    return " ".join(str(exc).replace(f" to GET {exc.url}", "").split())


def vault_label(vault: VaultRef) -> str:
    """How a line names a vault: its name and resource id."""
    return f"vault {vault.name} ({vault.id})"


def human_s(seconds: float | None) -> str:
    """A duration as `42s`, `3m05s`, `2h10m` or `3d04h`; None as `-`."""
    if seconds is None:
        return "-"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def time_text(moment: datetime | None) -> str:
    """A moment as the events write it (UTC, ISO 8601); None as `-`."""
    return "-" if moment is None else format_event_time(moment)


def to_json(value: object, option: int = 0) -> str:
    """`value` as JSON text; nesting deeper than orjson writes is cut."""
    try:
        return orjson.dumps(value, option=option).decode()
    except TypeError:  # nested deeper than orjson writes (254): cut like a too-deep answer
        return orjson.dumps(limit_depth(value), option=option).decode()


def to_pretty_json(value: object) -> str:
    """`to_json`, indented by two spaces."""
    return to_json(value, orjson.OPT_INDENT_2)


def stream_is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (False for anything without a usable `isatty`)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def columns(rows: Iterable[Sequence[str]]) -> list[str]:
    """`rows` as lines of left-aligned columns two spaces apart."""
    materialised = [list(r) for r in rows]
    widths = [max(len(r[i]) for r in materialised) for i in range(len(materialised[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in materialised
    ]


def job_record(
    job: BackupJob, vault: VaultRef, details: JobDetails | None = None
) -> dict[str, object]:
    """The event schema's `job` and `vault` objects of one job (a json/jsonl record)."""
    return {"job": render_job(job, details=details), "vault": render_vault(vault)}
