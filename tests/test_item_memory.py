"""`ItemMemory`: a vault's index rows and item states, packed between rounds and read back equal."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.item_watch import ItemState
from monitor.core.protection import ItemIndex, ProtectedItem
from monitor.core.vaults import VaultKind, VaultRef
from monitor.item_memory import (
    IndexRow,
    ItemMemory,
    index_of,
    index_rows,
    index_text,
    read_index,
)
from tests.core.test_item_watch import states
from tests.core.test_protection import BV_VAULT, RS_VAULT, bv_job, rs_job

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VAULT = RS_VAULT
PREFIX = f"{VAULT.id}/backupFabrics/Azure/protectionContainers/"

segments = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="/"))
item_ids = st.builds(
    lambda container, name: f"{PREFIX}{container}/protectedItems/{name}",
    segments.filter(bool),
    segments.filter(bool),
)
rows = st.tuples(
    item_ids,
    st.sampled_from(VaultKind),
    st.none() | st.sampled_from(["AzureIaasVM", "AzureWorkload", "DPM", "azureiaasvm"]),
    st.none() | st.text(max_size=20),
)


def keyed(pairs: list[tuple[str, ItemState]]) -> dict[str, ItemState]:
    """States by lower-cased key, the last of each key kept (as `ItemMemory.pack` keeps)."""
    return {key.lower(): state for key, state in pairs}


@st.composite
def memories(draw: st.DrawFn) -> tuple[list[IndexRow] | None, dict[str, ItemState]]:
    """Rows (or none) and states: some under an item's id in another case, some loose."""
    drawn = draw(st.none() | st.lists(rows, max_size=6, unique_by=lambda r: r[0].lower()))
    pairs: list[tuple[str, ItemState]] = []
    for item_id, *_ in drawn or []:
        if draw(st.booleans()):
            pairs.append(
                (draw(st.sampled_from([item_id, item_id.upper(), item_id.lower()])), draw(states))
            )
    # Loose states: the vault's own, any id, or an item's id in another case than its state's.
    ids = [row[0] for row in drawn or []]
    loose_keys = st.sampled_from(["~vault", *ids, *(i.swapcase() for i in ids)]) | item_ids
    pairs += draw(st.lists(st.tuples(loose_keys, states), max_size=3))
    return (None if drawn is None else index_rows_of(drawn)), dict(pairs)


def index_rows_of(drawn: list[IndexRow]) -> list[IndexRow]:
    return sorted(drawn, key=lambda row: row[0])


class TestPack:
    @PROPERTY
    @given(memory=memories())
    def test_states_and_rows_read_back_equal(
        self, memory: tuple[list[IndexRow] | None, dict[str, ItemState]]
    ) -> None:
        """Every state comes back equal under its lower-cased key, and the rows as given."""
        given_rows, given_states = memory
        packed = ItemMemory.pack(given_rows, given_states)
        assert packed.states() == keyed(list(given_states.items()))
        assert packed.rows() == given_rows

    def test_a_vault_of_six_items_packs_small(self) -> None:
        """Six items with states: the blob is a fraction of the ids alone (the point of it)."""
        ids = [
            f"{PREFIX}IaasVMContainer;iaasvmcontainerv2;rg-a;vm-{n:02d}/protectedItems/"
            f"VM;iaasvmcontainerv2;rg-a;vm-{n:02d}"
            for n in range(6)
        ]
        state = ItemState(
            decided_through=datetime(2026, 12, 6, 20, 57, 33, 44449, tzinfo=UTC),
            protection_state="Protected",
            health_status="Passed",
        )
        given_rows = [(i, VaultKind.RECOVERY_SERVICES, "AzureIaasVM", i[-5:]) for i in ids]
        packed = ItemMemory.pack(given_rows, {i.lower(): state for i in ids} | {"~vault": state})
        ids_bytes = sum(sys.getsizeof(i) for i in ids)
        assert packed.size * 4 < ids_bytes, (packed.size, ids_bytes)


def item(vault: VaultRef, item_id: str, friendly: str, management: str | None) -> ProtectedItem:
    """A fully read item (policy, source, state): the index keeps only some of it."""
    return ProtectedItem(
        id=item_id,
        vault_key=vault.key,
        kind=vault.kind,
        name=item_id.rsplit("/", 1)[-1],
        friendly_name=friendly,
        datasource_type="VM",
        datasource_id="/subscriptions/x/resourceGroups/rg-a/providers/Microsoft.Compute/vm",
        backup_management_type=management,
        policy_id=f"{vault.id}/backupPolicies/daily",
        policy_name="daily",
        protection_state="Protected",
        health_status="Passed",
        last_backup_time=None,
        last_recovery_point=None,
    )


class TestIndex:
    def test_the_kept_index_finds_what_the_full_one_finds(self) -> None:
        """An index read back from the rows names the same item for each job as one of the
        items themselves, ambiguous names included."""
        at = f"{RS_VAULT.id}/backupFabrics/Azure/protectionContainers/"
        instance = f"{BV_VAULT.id}/backupInstances/disk-1"
        items = [
            item(RS_VAULT, f"{at}c1/protectedItems/VM;a", "vm-a", "AzureIaasVM"),
            item(RS_VAULT, f"{at}c2/protectedItems/VM;b", "VM-B", "AzureIaasVM"),
            item(RS_VAULT, f"{at}c3/protectedItems/share", "share", "AzureStorage"),
            item(RS_VAULT, f"{at}c4/protectedItems/share", "share", "AzureStorage"),
        ]
        jobs = [
            rs_job("1", "vm-a"),
            rs_job("2", "vm-b"),
            rs_job("3", "share", "AzureStorage"),
            rs_job("4", "vm-a", "AzureWorkload"),
        ]
        kept = ItemMemory.pack(index_rows(items), {}).index(RS_VAULT.key)
        assert kept is not None
        full = ItemIndex.of(items)
        named = [(kept.item_for(j), full.item_for(j)) for j in jobs]
        assert [a and a.id for a, _ in named] == [b and b.id for _, b in named]
        assert [a is not None for a, _ in named] == [True, True, False, False]
        disk = [item(BV_VAULT, instance, "disk-1", None)]
        kept_bv = ItemMemory.pack(index_rows(disk), {}).index(BV_VAULT.key)
        assert kept_bv is not None
        found = kept_bv.item_for(bv_job("5", instance.upper()))
        assert found is not None
        assert found.id == instance

    def test_no_rows_no_index(self) -> None:
        assert ItemMemory.pack(None, {}).index(VAULT.key) is None


class TestText:
    @PROPERTY
    @given(drawn=st.lists(rows, max_size=6))
    def test_the_stored_text_reads_back_as_its_rows(self, drawn: list[IndexRow]) -> None:
        text = index_text(index_rows_of(drawn))
        assert read_index(VAULT, text) == index_rows_of(drawn)

    def test_a_stored_text_of_an_older_release_reads(self) -> None:
        """The text the watcher stored before the rows were packed (`_index_text` at
        e.g. ce02fd5): the same object per item."""
        stored = orjson.dumps(
            [
                {
                    "id": f"{PREFIX}c1/protectedItems/VM;a",
                    "kind": "recovery_services",
                    "backup_management_type": "AzureIaasVM",
                    "friendly_name": "vm-a",
                }
            ]
        ).decode()
        (row,) = read_index(VAULT, stored) or []
        assert row == (
            f"{PREFIX}c1/protectedItems/VM;a",
            VaultKind.RECOVERY_SERVICES,
            "AzureIaasVM",
            "vm-a",
        )
        assert index_of(RS_VAULT.key, [row]).item_for(rs_job("1", "VM-A")) is not None

    def test_unreadable_texts_give_none(self) -> None:
        for text in ("", "{}", "[1]", '[{"id": 3}]', '[{"id": "x", "kind": "other"}]'):
            assert read_index(VAULT, text) is None, text
