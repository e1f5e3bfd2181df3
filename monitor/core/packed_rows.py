"""Rows keyed by job names, packed: what the item watcher keeps of each item between rounds.

ARM names jobs by lower-case GUIDs. An item's state keeps up to 20 (name, duration) pairs and
a few names and (name, start) pairs, for every item of every vault (10,000 vaults: ~90,000
items). As tuples of strings, floats and datetimes, a full history is ~3.5 KiB; packed, a name
is 16 bytes and a number or a start 8, in one bytes object per sequence (~0.5 KiB). A sequence
with any other name stays a tuple. Read back, a packed sequence gives the same rows, and it is
equal to the tuple of them.
"""

# Rule: pure; nothing here awaits, sleeps or reads the clock.

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, TypeVar, overload

__all__ = ["packed_durations", "packed_names", "packed_starts"]

_Row = TypeVar("_Row")
_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _guid_bytes(name: str) -> bytes | None:
    """The 16 bytes of a lower-case GUID, or None for any other name."""
    if len(name) != 36 or _GUID.fullmatch(name) is None:
        return None
    return bytes.fromhex(name.replace("-", ""))


def _guid_text(raw: bytes) -> str:
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Packed(Sequence[_Row], Generic[_Row]):
    """Rows of a lower-case GUID and, for some, one number, packed into one bytes object;
    equal to the tuple of the rows it gives back."""

    __slots__ = ("_blob",)
    _layout: struct.Struct

    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    @classmethod
    def of(cls, rows: Sequence[_Row]) -> _Packed[_Row] | None:
        """The rows packed, or None when one cannot be (then keep them as they are)."""
        packed = bytearray()
        for row in rows:
            raw = cls._pack_row(row)
            if raw is None:
                return None
            packed += raw
        return cls(bytes(packed))

    @classmethod
    def _pack_row(cls, row: _Row) -> bytes | None:
        raise NotImplementedError

    def _row(self, raw: tuple[bytes, float]) -> _Row:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._blob) // self._layout.size

    @overload
    def __getitem__(self, index: int) -> _Row: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_Row, ...]: ...

    def __getitem__(self, index: int | slice) -> _Row | tuple[_Row, ...]:
        return tuple(self)[index]

    def __iter__(self) -> Iterator[_Row]:
        return (self._row(raw) for raw in self._layout.iter_unpack(self._blob))

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            assert isinstance(other, _Packed)
            return self._blob == other._blob
        if isinstance(other, tuple | list | _Packed):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class _Names(_Packed[str]):
    _layout = struct.Struct("<16s")

    @classmethod
    def _pack_row(cls, row: str) -> bytes | None:
        return _guid_bytes(row) if isinstance(row, str) else None

    def _row(self, raw: tuple[bytes, float]) -> str:
        return _guid_text(raw[0])


class _Durations(_Packed[tuple[str, float]]):
    _layout = struct.Struct("<16sd")

    @classmethod
    def _pack_row(cls, row: tuple[str, float]) -> bytes | None:
        name, seconds = row
        raw = _guid_bytes(name) if isinstance(name, str) else None
        if raw is None or type(seconds) is not float:
            return None
        return cls._layout.pack(raw, seconds)

    def _row(self, raw: tuple[bytes, float]) -> tuple[str, float]:
        return _guid_text(raw[0]), raw[1]


class _Starts(_Packed[tuple[str, datetime]]):
    _layout = struct.Struct("<16sq")

    @classmethod
    def _pack_row(cls, row: tuple[str, datetime]) -> bytes | None:
        name, start = row
        raw = _guid_bytes(name) if isinstance(name, str) else None
        if raw is None or type(start) is not datetime or start.tzinfo is not UTC or start.fold:
            return None
        return cls._layout.pack(raw, (start - _EPOCH) // _MICROSECOND)

    def _row(self, raw: tuple[bytes, float]) -> tuple[str, datetime]:
        return _guid_text(raw[0]), _EPOCH + timedelta(microseconds=raw[1])


def packed_names(rows: Iterable[str]) -> Sequence[str]:
    """Job names, packed when each is a lower-case GUID; else a tuple. Empty: ()."""
    return _pack(_Names.of, rows)


def packed_durations(rows: Iterable[tuple[str, float]]) -> Sequence[tuple[str, float]]:
    """(job name, seconds) pairs, packed when each name is a lower-case GUID and each number a
    float; else a tuple. Empty: ()."""
    return _pack(_Durations.of, rows)


def packed_starts(rows: Iterable[tuple[str, datetime]]) -> Sequence[tuple[str, datetime]]:
    """(job name, start) pairs, packed when each name is a lower-case GUID and each start a
    `datetime.UTC` moment; else a tuple. Empty: ()."""
    return _pack(_Starts.of, rows)


def _pack(
    kind: Callable[[Sequence[_Row]], _Packed[_Row] | None], rows: Iterable[_Row]
) -> Sequence[_Row]:
    """`rows` packed by `kind` (`_Packed.of`) when they can be; else as a tuple. Empty: ()."""
    if isinstance(rows, _Packed):
        return rows
    given = tuple(rows)
    if not given:
        return ()
    packed = kind(given)
    return given if packed is None else packed
