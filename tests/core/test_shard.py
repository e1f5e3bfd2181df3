"""Rendezvous hashing: one owner per subscription, and little movement when shards are added."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.shard import owner

subscription_ids = st.uuids().map(str)


@given(subscription_ids, st.integers(min_value=1, max_value=64))
def test_exactly_one_owner(subscription_id: str, count: int) -> None:
    """Exactly one of N shards claims each subscription, whatever the case of its id."""
    claims = [i for i in range(count) if owner(subscription_id, count) == i]
    assert len(claims) == 1
    assert owner(subscription_id.upper(), count) == claims[0]


@given(st.lists(subscription_ids, min_size=1, max_size=50), st.integers(1, 16))
def test_growing_moves_only_to_the_new_shard(ids: list[str], count: int) -> None:
    """From N to N+1 shards, a subscription either stays or moves to the new shard N."""
    for sub in ids:
        before, after = owner(sub, count), owner(sub, count + 1)
        assert after in (before, count)


def test_growing_moves_about_one_in_n_plus_one() -> None:
    """Over 2,000 random ids, N → N+1 moves 1/(N+1) of them within ±25 %, and spreads evenly."""
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
    for count in (1, 2, 3, 5, 8):
        moved = sum(owner(s, count) != owner(s, count + 1) for s in ids)
        expected = len(ids) / (count + 1)
        assert abs(moved - expected) <= 0.25 * expected, (count, moved, expected)
        sizes = [sum(owner(s, count + 1) == i for s in ids) for i in range(count + 1)]
        assert max(sizes) <= 1.25 * len(ids) / (count + 1), sizes


def test_count_must_be_positive() -> None:
    """No shards is an error, not an empty answer."""
    with pytest.raises(ValueError, match="count"):
        owner("x", 0)
