"""Which shard owns a subscription: rendezvous (highest-random-weight) hashing, pure."""

# Rule: nothing here awaits, reads the clock or the environment; equal inputs, equal answers on
# every machine and Python version (sha256, not the salted `hash()`).
#
# Every shard scores every subscription with sha256(f"{shard}|{subscription}") and the highest
# score owns it. Adding shard N moves to it exactly the subscriptions it now out-scores, about
# 1/(N+1) of them, and no subscription moves between the shards that already existed.

from __future__ import annotations

import hashlib

__all__ = ["owner", "weight"]


def weight(shard: int, subscription_id: str) -> int:
    """The score of `shard` for a subscription (ids compare case-insensitively)."""
    digest = hashlib.sha256(f"{shard}|{subscription_id.strip().lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(subscription_id: str, count: int) -> int:
    """The shard in [0, count) that owns `subscription_id`.

    Raises:
        ValueError: `count` is less than 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return max(range(count), key=lambda shard: weight(shard, subscription_id))
