"""Frequent Subsequence Miner oracle: enumerate every contiguous pattern (small inputs, tests).

DESIGN.md "Pattern": a contiguous run ``(r1..rk)``, k >= 2, whose support is the number of
distinct objects containing it. This module is the pure reference the distributed miner
(:mod:`soads.mining.contiguous`) is tested against.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Sequence

logger = logging.getLogger(__name__)


def minsup_count(minsup: float, n_sequences: int) -> int:
    """Minimum support as a number of objects.

    ``minsup`` in (0, 1] is a fraction of the sequences: ``ceil(minsup * n_sequences)`` (at least
    1); ``minsup > 1`` is already a count (rounded up).

    Examples
    --------
    >>> minsup_count(0.5, 5), minsup_count(1.0, 4), minsup_count(3, 100), minsup_count(0.1, 0)
    (3, 4, 3, 1)
    """
    if not minsup > 0:
        raise ValueError(f"minsup must be > 0, got {minsup!r}")
    if minsup > 1:
        return int(math.ceil(minsup))
    # guard against float noise such as 0.1 * 30 = 3.0000000000000004 -> 4
    return max(1, int(math.ceil(round(minsup * n_sequences, 9))))


def frequent_patterns(sequences: Sequence[Sequence[str]], minsup_count: int,
                      max_length: int | None = None) -> dict[tuple[str, ...], int]:
    """All contiguous patterns of length >= 2 with ``support >= minsup_count``.

    Each distinct substring is counted once per sequence, however often it repeats there.

    Examples
    --------
    >>> sorted(frequent_patterns([["a", "b", "a", "b"], ["a", "b", "c"]], 2).items())
    [(('a', 'b'), 2)]
    >>> sorted(frequent_patterns([["a", "b", "c"], ["a", "b", "c"]], 2, max_length=2))
    [('a', 'b'), ('b', 'c')]
    """
    support: Counter = Counter()
    for seq in sequences:
        seq = tuple(seq)
        n = len(seq)
        top = n if max_length is None else min(n, max_length)
        support.update({seq[i:i + k] for k in range(2, top + 1) for i in range(n - k + 1)})
    return {p: s for p, s in support.items() if s >= minsup_count}


def mark_maximal(patterns: dict) -> dict[tuple, bool]:
    """Whether each pattern is maximal: no one-item extension on either side is in ``patterns``.

    Maximality is relative to the given (mined) set: with a ``max_length`` cap, a pattern of the
    maximal length is maximal because no longer pattern was mined.

    Examples
    --------
    >>> mark_maximal({("a", "b"): 3, ("b", "c"): 2, ("a", "b", "c"): 2, ("c", "d"): 2})
    {('a', 'b'): False, ('b', 'c'): False, ('a', 'b', 'c'): True, ('c', 'd'): True}
    """
    # a pattern p is extended by x+p or p+x; both are in the set iff p is one of their
    # (length - 1)-prefixes or suffixes
    extended = set()
    for p in patterns:
        if len(p) > 2:
            extended.add(tuple(p[1:]))
            extended.add(tuple(p[:-1]))
    return {p: tuple(p) not in extended for p in patterns}
