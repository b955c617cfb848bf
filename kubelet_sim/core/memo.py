"""Bounded memos for hot paths: a dict that starts again empty when it is full.

Cheaper than an LRU (no reordering on a hit) where every entry can be remade at the cost of one
miss: the store's lookup answers, the verifier's and the image manager's per-decision answers.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["put_bounded"]

K = TypeVar("K")
V = TypeVar("V")


def put_bounded(memo: dict[K, V], key: K, value: V, size: int) -> None:
    """``memo[key] = value``, first emptying ``memo`` if it already holds ``size`` entries."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
