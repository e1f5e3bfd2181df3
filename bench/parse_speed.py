"""Print how long parsing a realistic 20-job backupJobs page takes (prints, asserts nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from monitor.core.jobs import parse_jobs_page
from monitor.core.vaults import parse_vault_id

VAULT_ID = (
    "/Subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    "/providers/Microsoft.RecoveryServices/vaults/v1"
)


def make_page(count: int = 20) -> bytes:
    """A page of `count` AzureIaaSVMJob items, half running, half completed, as ARM sends them."""
    items = []
    for n in range(count):
        guid = f"{n:08x}-aaaa-bbbb-cccc-dddddddddddd"
        running = n % 2 == 0
        items.append(
            {
                "id": f"{VAULT_ID}/backupJobs/{guid}",
                "name": guid,
                "type": "Microsoft.RecoveryServices/vaults/backupJobs",
                "properties": {
                    "jobType": "AzureIaaSVMJob",
                    "duration": "PT12.4272909S" if running else "00:20:23.0896697",
                    "actionsInfo": [1] if running else [],
                    "virtualMachineVersion": "Compute",
                    "entityFriendlyName": f"vm-{n}",
                    "backupManagementType": "AzureIaasVM",
                    "operation": "Backup",
                    "status": "InProgress" if running else "Completed",
                    "startTime": "2026-11-25T10:03:17.1234567Z",
                    "endTime": "0001-01-01T00:00:00Z"
                    if running
                    else "2026-11-25T10:23:40.2131264Z",
                    "activityId": "6e503ee3-0000-4b7c-9e80-2c4d8b8b6e3a",
                },
            }
        )
    return orjson.dumps(
        {"value": items, "nextLink": "https://management.azure.com/x?api-version=2017-07-01"}
    )


def main() -> None:
    """Time parse alone and orjson.loads + parse, best of several rounds."""
    vault = parse_vault_id(VAULT_ID)
    body = make_page()
    payload = orjson.loads(body)
    assert len(parse_jobs_page(payload, vault).jobs) == 20
    rounds, number = 7, 2000
    cases: list[tuple[str, Callable[[], object]]] = [
        ("parse_jobs_page (20 jobs)", lambda: parse_jobs_page(payload, vault)),
        ("orjson.loads + parse (20 jobs)", lambda: parse_jobs_page(orjson.loads(body), vault)),
    ]
    for label, fn in cases:
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - start) / number)
        print(f"{label:34s} {best * 1e3:8.4f} ms/page  {best * 1e6 / 20:6.2f} µs/job")


if __name__ == "__main__":
    main()
