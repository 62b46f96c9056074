"""Relational Dependency Updater (paper §3.1.3, §3.2.3): which read point directly follows which.

``freq(a, b)`` counts every time b directly followed a (the paper's count); ``support(a, b)``
counts the distinct objects in which it happened (DESIGN.md "Relation"). The miner uses support:
a pattern's support is a number of objects, so only support can seed it (paper Alg. 1, line 3).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from soads import schema as S

logger = logging.getLogger(__name__)


def relations(seq: Sequence[str]) -> Counter:
    """Directly-follows pairs of one sequence, with their counts.

    Examples
    --------
    >>> sorted(relations(["a", "b", "c", "a", "b"]).items())
    [(('a', 'b'), 2), (('b', 'c'), 1), (('c', 'a'), 1)]
    """
    return Counter(zip(seq, seq[1:]))


def relation_counts(sequences: Iterable[Sequence[str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(a, b): (freq, support)}`` over many sequences: the oracle of :func:`relation_table`.

    Examples
    --------
    >>> relation_counts([["a", "b", "a", "b"], ["a", "b"]])[("a", "b")]
    (3, 2)
    """
    freq: Counter = Counter()
    support: Counter = Counter()
    for seq in sequences:
        rel = relations(seq)
        freq.update(rel)
        support.update(rel.keys())
    return {k: (freq[k], support[k]) for k in freq}


@dataclass(frozen=True)
class LastRead:
    """Per-object streaming state: the object's last visit (paper Fig. 10's hash map value)."""

    read_point: str
    time_us: int


def advance(state: LastRead | None, reads: Iterable[tuple[str, int]], dwell_seconds: float
            ) -> tuple[LastRead | None, list[tuple[str, str]]]:
    """One streaming step for one object: new reads ``(read_point, time_us)`` in event-time order.

    Returns the new state and the relations discovered. A repeated read of the last read point
    within ``dwell_seconds`` is the same visit and yields no relation (as in
    :func:`soads.sequences.dedup_dwell`).

    Examples
    --------
    >>> st, rel = advance(None, [("A", 0), ("C", 10_000_000)], 60)
    >>> rel, st.read_point
    ([('A', 'C')], 'C')
    >>> advance(st, [("C", 20_000_000), ("D", 30_000_000)], 60)[1]
    [('C', 'D')]
    """
    out = []
    dwell_us = int(dwell_seconds * 1_000_000)
    for rp, t in reads:
        if state is not None:
            if rp == state.read_point and t - state.time_us <= dwell_us:
                state = LastRead(rp, t)
                continue
            out.append((state.read_point, rp))
        state = LastRead(rp, t)
    return state, out


def relation_table(sequences):
    """RELATIONAL DEPENDENCY TABLE from sequences (Spark, no collect).

    Parameters
    ----------
    sequences : DataFrame
        ``oid, sequence array<string>``.

    Returns
    -------
    DataFrame
        ``a, b, freq, support`` (one row per relation).
    """
    from pyspark.sql import functions as F

    pairs = sequences.select(
        S.OID,
        F.explode(
            F.arrays_zip(
                F.slice(S.SEQUENCE, 1, F.greatest(F.size(S.SEQUENCE) - 1, F.lit(0))).alias(S.A),
                F.slice(S.SEQUENCE, 2, F.greatest(F.size(S.SEQUENCE) - 1, F.lit(0))).alias(S.B),
            )
        ).alias("p"),
    ).select(S.OID, F.col(f"p.{S.A}").alias(S.A), F.col(f"p.{S.B}").alias(S.B))
    # oid, a, b (one row per directly-follows occurrence)
    per_object = pairs.groupBy(S.OID, S.A, S.B).agg(F.count(F.lit(1)).alias(S.FREQ))
    # oid, a, b, freq (one row per relation per object)
    return per_object.groupBy(S.A, S.B).agg(
        F.sum(S.FREQ).cast("long").alias(S.FREQ), F.count(F.lit(1)).cast("long").alias(S.SUPPORT)
    )
