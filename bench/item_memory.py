"""What the item watcher keeps of a vault between rounds, packed (`ItemMemory`), against the
objects it kept until 48b35a6 (its index of trimmed `ProtectedItem`s and a dict of
`ItemState`s by the ids as read), in the same run: memory over `--vaults` vaults and the time
of each call a round or a job event makes.

The world: `--vaults` Recovery Services vaults of `--items` virtual machines each (ids in ARM's
casing, ~280 characters, parsed afresh for each vault as a listing's decode makes them), each
item with the state a round leaves after `--durations` finished jobs (GUID names, as ARM names
jobs; a state keeps 20 at most), plus the vault's own `~vault` state, each vault's its own.
Memory is what tracemalloc traces while the vaults' memories (or objects) are alive. Times are
the best of 5 runs of `timeit`, per call, in this process.

Run: .venv/bin/python bench/item_memory.py [--vaults 2000 --items 6 --durations 10]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import timeit
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from monitor.core.item_watch import ItemState
from monitor.core.jobs import parse_jobs_page
from monitor.core.protection import ItemIndex, parse_protected_items_page
from monitor.core.vaults import parse_vault_id
from monitor.item_memory import ItemMemory, index_of, index_rows

NOW = datetime(2026, 12, 6, 20, 57, 33, 44449, tzinfo=UTC)


def vault_of(n: int) -> Any:
    return parse_vault_id(
        f"/subscriptions/{uuid.UUID(int=n + 1)}/resourceGroups/rg-app-{n % 7:02d}/providers/"
        f"Microsoft.RecoveryServices/vaults/rsv-{n:04d}"
    )


def item_page(vault: Any, items: int) -> dict[str, object]:
    rows = []
    for i in range(items):
        vm = f"vm-app-{i:02d}"
        container = f"IaasVMContainer;iaasvmcontainerv2;{vault.resource_group};{vm}"
        rows.append(
            {
                "id": f"{vault.id}/backupFabrics/Azure/protectionContainers/{container}/"
                f"protectedItems/VM;iaasvmcontainerv2;{vault.resource_group};{vm}",
                "name": f"VM;iaasvmcontainerv2;{vault.resource_group};{vm}",
                "properties": {
                    "friendlyName": vm,
                    "workloadType": "VM",
                    "backupManagementType": "AzureIaasVM",
                    "protectionState": "Protected",
                    "healthStatus": "Passed",
                    "policyId": f"{vault.id}/backupPolicies/DefaultPolicy",
                    "sourceResourceId": f"/subscriptions/x/resourceGroups/rg/providers/"
                    f"Microsoft.Compute/virtualMachines/{vm}",
                },
            }
        )
    return {"value": rows}


def state_of(rng: random.Random, durations: int) -> ItemState:
    return ItemState(
        decided_through=NOW,
        protection_state="Protected",
        health_status="Passed",
        durations=tuple(
            (str(uuid.UUID(int=rng.getrandbits(128), version=4)), float(rng.randint(60, 4000)))
            for _ in range(durations)
        ),
    )


def traced(build: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    gc.collect()
    tracemalloc.start()
    kept = build()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size, kept


def best_us(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vaults", type=int, default=2000)
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--durations", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(15)
    vaults = [vault_of(n) for n in range(args.vaults)]
    pages = [orjson.dumps(item_page(v, args.items)) for v in vaults]
    texts = [
        [orjson.dumps(state_of(rng, args.durations).to_json()) for _ in range(args.items + 1)]
        for _ in range(args.vaults)
    ]

    def read(n: int) -> tuple[Any, list[Any], dict[str, ItemState]]:
        """Vault n's items as a listing gives them, and its states (objects of its own)."""
        vault = vaults[n]
        items = list(parse_protected_items_page(orjson.loads(pages[n]), vault).items)
        states = [ItemState.from_json(orjson.loads(text)) for text in texts[n]]
        by_key = {item.key: state for item, state in zip(items, states, strict=False)}
        by_key["~vault"] = states[-1]
        return vault, items, by_key

    def objects() -> list[Any]:
        """As kept until 48b35a6: the index of trimmed items, the states under the ids read."""
        kept = []
        for n in range(args.vaults):
            vault, items, by_key = read(n)
            index = index_of(vault.key, index_rows(items))
            ids = {item.key: item.id for item in items}
            kept.append((index, {ids.get(k, k): s for k, s in by_key.items()}))
        return kept

    def packed() -> list[Any]:
        kept = []
        for n in range(args.vaults):
            _, items, by_key = read(n)
            kept.append(ItemMemory.pack(index_rows(items), by_key))
        return kept

    objects_b, _ = traced(objects)
    packed_b, memories = traced(packed)
    print(
        f"{args.vaults} vaults of {args.items} items, {args.durations} durations each "
        "(traced while kept):"
    )
    per_vault = args.vaults
    for label, size in (("objects (until 48b35a6)", objects_b), ("packed (ItemMemory)", packed_b)):
        print(f"  {label:24s} {size / 2**20:7.2f} MiB  {size / per_vault:7.0f} B a vault")
    print(f"  objects / packed         {objects_b / packed_b:7.1f}×")

    vault, items, by_key = read(0)
    memory = ItemMemory.pack(index_rows(items), by_key)
    index = ItemIndex.of(items)
    job = parse_jobs_page(
        {
            "value": [
                {
                    "id": f"{vault.id}/backupJobs/{uuid.UUID(int=7)}",
                    "name": str(uuid.UUID(int=7)),
                    "properties": {
                        "jobType": "AzureIaaSVMJob",
                        "operation": "Backup",
                        "status": "InProgress",
                        "entityFriendlyName": items[-1].friendly_name,
                        "backupManagementType": "AzureIaasVM",
                    },
                }
            ]
        },
        vault,
    ).jobs[0]
    rows = index_rows(items)
    kept = memory.index(vault.key)
    assert kept is not None
    found, expected = kept.item_for(job), index.item_for(job)
    assert found is not None
    assert expected is not None
    assert found.id == expected.id

    def packed_item() -> object:
        found = memory.index(vault.key)
        return None if found is None else found.item_for(job)

    print(f"per call (µs, best of 5; a vault of {args.items} items):")
    calls: list[tuple[str, Callable[[], object], int]] = [
        ("ItemMemory.pack (end of a round)", lambda: ItemMemory.pack(rows, by_key), 2000),
        ("ItemMemory.states (start of a round)", memory.states, 2000),
        ("a job's item, packed (index + item_for)", packed_item, 2000),
        ("a job's item, objects (item_for)", lambda: index.item_for(job), 20000),
    ]
    for label, call, number in calls:
        print(f"  {label:40s} {best_us(call, number):7.2f}")
    print(f"  one vault's memory: {memory.size} bytes packed; {len(memories)} kept above")


if __name__ == "__main__":
    main()
