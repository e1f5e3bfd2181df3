"""Print the planner's cost per decision for growing estates, to show it is O(log n)."""

from __future__ import annotations

import time

from monitor.core.plan import Planner
from monitor.core.vaults import VaultRef, parse_vault_id


def estate(vaults: int, subscriptions: int) -> list[VaultRef]:
    """`vaults` vaults spread evenly over `subscriptions` subscriptions."""
    return [
        parse_vault_id(
            f"/subscriptions/{n % subscriptions:08d}-0000-0000-0000-000000000000"
            f"/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v{n}"
        )
        for n in range(vaults)
    ]


def main() -> None:
    """Time take_due + mark_polled cycles (one decision each) on estates of 1k to 100k vaults."""
    for vaults in (1_000, 10_000, 100_000):
        planner = Planner()
        refs = estate(vaults, max(1, vaults // 50))
        start = time.perf_counter()
        planner.add_vaults(refs, now=0.0)
        added = time.perf_counter() - start
        decisions = 50_000
        now = 0.0
        start = time.perf_counter()
        for n in range(decisions):
            due = planner.next_due()
            assert due is not None
            now = max(now, due.at)
            vault = planner.take_due(now)
            assert vault is not None
            planner.mark_polled(vault.key, now, running=n % 7 == 0, reads=1)
        per = (time.perf_counter() - start) / decisions
        print(
            f"{vaults:>7} vaults: add_vaults {added * 1e3:7.1f} ms, "
            f"next_due+take_due+mark_polled {per * 1e6:6.2f} µs/decision"
        )


if __name__ == "__main__":
    main()
