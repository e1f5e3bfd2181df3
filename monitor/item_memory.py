"""What the item watcher keeps of one vault between its rounds: the index of its items and their
states, packed into one compressed blob (`ItemMemory`), and the stored index's text.

A vault's rounds are `items_interval_s` apart (15 minutes by default); between them, its items
are needed only to name the item of a job event (`ItemIndex.item_for`, a few a second over a
whole estate). Kept as objects (a ~300-character id as read, an index entry, an `ItemState`),
a vault of six items cost 5.5 KiB, 9.7 KiB once each state holds its 20 durations: ~55 MiB and
more at the 10,000-vault scale point. Packed, it costs 0.3 KiB, 3.9 KiB with 20 durations
(their job names are random GUIDs, which compress least): the same JSON the state file keeps
(`ItemState.to_json`, `index_text`), each state beside its item's row (an item's id is written
once), deflated with a preset dictionary of the words those texts repeat. A round unpacks its
states once and packs them once (50–230 µs and 30–150 µs for six items); a job event unpacks
the index (25–45 µs). `bench/item_memory.py` measures both against the objects.

The blob never leaves the process: its layout and dictionary may change with any release.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import orjson
import structlog

from monitor.core.item_watch import ItemState
from monitor.core.protection import ItemIndex, ProtectedItem
from monitor.core.vaults import VaultKind, VaultRef

__all__ = [
    "IndexRow",
    "ItemMemory",
    "index_digest",
    "index_of",
    "index_rows",
    "index_text",
    "read_index",
]

log = structlog.get_logger(__name__)

IndexRow = tuple[str, VaultKind, str | None, str | None]
"""What the index keeps of one item: (id as ARM wrote it, kind, backup management type,
friendly name); all `ItemIndex` reads."""


def index_rows(items: Iterable[ProtectedItem]) -> list[IndexRow]:
    """The index rows of `items`, sorted by id (the stored text's order)."""
    return sorted(
        ((item.id, item.kind, item.backup_management_type, item.friendly_name) for item in items),
        key=lambda row: row[0],
    )


def index_text(rows: Sequence[IndexRow]) -> str:
    """`rows` as the JSON text stored under the watcher's index key (one object per row)."""
    return orjson.dumps(
        [
            {
                "id": item_id,
                "kind": kind.value,
                "backup_management_type": management,
                "friendly_name": friendly,
            }
            for item_id, kind, management, friendly in rows
        ]
    ).decode()


def index_digest(text: str) -> bytes:
    """16 bytes that tell one stored index text from another."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def read_index(vault: VaultRef, text: str) -> list[IndexRow] | None:
    """The rows of an index text `index_text` stored; None (and a warning) when it cannot be
    read."""
    try:
        rows = orjson.loads(text)
        if not isinstance(rows, list):
            raise TypeError(f"expected a list, got {type(rows).__name__}")
        return [_row(row) for row in rows]
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        log.warning("items.index_unreadable", vault=vault.id, problem=str(exc))
        return None


def _row(row: object) -> IndexRow:
    if not isinstance(row, dict):
        raise TypeError(f"an index row is not an object: {type(row).__name__}")
    item_id, management, friendly = (
        row["id"],
        row["backup_management_type"],
        row["friendly_name"],
    )
    if not isinstance(item_id, str) or not item_id:
        raise TypeError("an index row's id is not a string")
    for name, value in (("backup_management_type", management), ("friendly_name", friendly)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"an index row's {name} is not a string")
    return item_id, VaultKind(row["kind"]), management, friendly


def index_of(vault_key: str, rows: Iterable[IndexRow]) -> ItemIndex:
    """The `ItemIndex` of `rows`: each item with what the index reads, nothing else. A Backup
    vault instance keeps its name (the index finds instances by it, the last segment of its
    id); a Recovery Services item's is "" (the index never reads it)."""
    return ItemIndex(
        ProtectedItem(
            id=item_id,
            vault_key=vault_key,
            kind=kind,
            name=item_id.rstrip("/").rsplit("/", 1)[-1] if kind is VaultKind.BACKUP_VAULT else "",
            friendly_name=friendly,
            datasource_type=None,
            datasource_id=None,
            backup_management_type=management,
            policy_id=None,
            policy_name=None,
            protection_state=None,
            health_status=None,
            last_backup_time=None,
            last_recovery_point=None,
        )
        for item_id, kind, management, friendly in rows
    )


_EXAMPLE_ID: Final = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.RecoveryServices/vaults/rsv/backupFabrics/Azure/protectionContainers/"
    "IaasVMContainer;iaasvmcontainerv2;rg;vm/protectedItems/VM;iaasvmcontainerv2;rg;vm"
)
_ZDICT: Final = orjson.dumps(
    [
        [_EXAMPLE_ID, VaultKind.BACKUP_VAULT.value, None, None, None],
        [
            _EXAMPLE_ID.lower(),
            VaultKind.RECOVERY_SERVICES.value,
            "AzureIaasVM",
            "vm",
            ItemState(
                decided_through=datetime(2026, 1, 1, tzinfo=UTC),
                protection_state="Protected",
                health_status="Passed",
            ).to_json(),
        ],
    ]
)
"""A preset dictionary for the blobs: the words an item's row and state repeat (zlib finds
them here even in a vault's first item). Built from the code's own JSON, so it follows it."""


class ItemMemory:
    """One vault's index rows (or none) and item states, packed (see the module).

    `ItemMemory.pack(rows, states)`; read back with `states()` (by lower-cased key, as rounds
    look them up) and `index(vault_key)`. Immutable.
    """

    __slots__ = ("_blob",)

    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def __repr__(self) -> str:
        return f"ItemMemory({len(self._blob)} bytes)"

    @classmethod
    def pack(cls, rows: Sequence[IndexRow] | None, states: Mapping[str, ItemState]) -> ItemMemory:
        """`rows` (None: no index is known) and `states` by key in any case; a state whose key
        is an item's id without regard to case is kept beside that item's row."""
        loose = {key.lower(): state.to_json() for key, state in states.items()}
        packed = None
        if rows is not None:
            packed = [
                [item_id, kind.value, management, friendly, loose.pop(item_id.lower(), None)]
                for item_id, kind, management, friendly in rows
            ]
        deflate = zlib.compressobj(6, zdict=_ZDICT)
        text = orjson.dumps({"rows": packed, "states": loose})
        return cls(deflate.compress(text) + deflate.flush())

    def _unpacked(self) -> dict[str, object]:
        inflate = zlib.decompressobj(zdict=_ZDICT)
        value: dict[str, object] = orjson.loads(inflate.decompress(self._blob) + inflate.flush())
        return value

    def rows(self) -> list[IndexRow] | None:
        """The index rows packed (None: no index)."""
        packed = self._unpacked()["rows"]
        if packed is None:
            return None
        assert isinstance(packed, list)
        return [(row[0], VaultKind(row[1]), row[2], row[3]) for row in packed]

    def index(self, vault_key: str) -> ItemIndex | None:
        """The `ItemIndex` of the rows packed (None: no index)."""
        rows = self.rows()
        return None if rows is None else index_of(vault_key, rows)

    def states(self) -> dict[str, ItemState]:
        """Every state packed, by lower-cased key (equal to the states given)."""
        value = self._unpacked()
        loose = value["states"]
        assert isinstance(loose, dict)
        states = {key: ItemState.from_json(state) for key, state in loose.items()}
        packed = value["rows"]
        if packed is not None:
            assert isinstance(packed, list)
            for row in packed:
                if row[4] is not None:
                    states[row[0].lower()] = ItemState.from_json(row[4])
        return states

    @property
    def size(self) -> int:
        """Bytes packed (the blob's length)."""
        return len(self._blob)
