"""Frequent Subsequence Miner (paper §3.2.4): EVENT LOG sequences + RELATIONAL DEPENDENCY TABLE
-> PATTERN TABLE.

- :mod:`soads.mining.contiguous`  modified PrefixSpan (paper Alg. 1), distributed, maximal flag
- :mod:`soads.mining.brute_force` oracle enumeration (small inputs, tests)
- :mod:`soads.mining.baselines`   MLlib ``PrefixSpan``; the relation table switched off
"""
from __future__ import annotations

from soads.mining.brute_force import frequent_patterns, mark_maximal, minsup_count

ALGORITHMS = ("soads", "no-relations", "mllib")


def mine_patterns(spark, sequences, relations, minsup: float, max_length: int = 25,
                  algorithm: str = "soads"):
    """Mine frequent patterns with one of :data:`ALGORITHMS`.

    Parameters
    ----------
    spark : SparkSession
    sequences : DataFrame
        ``oid, sequence array<string>``.
    relations : DataFrame or None
        RELATIONAL DEPENDENCY TABLE ``a, b, freq, support`` of the same sequences. Only "soads"
        uses it; when None it is computed with :func:`soads.dependencies.relation_table`.
    minsup : float
        Fraction of objects in (0, 1], or a count (> 1).
    max_length : int
    algorithm : str
        "soads" (modified PrefixSpan), "no-relations" (same miner, relation table off) or
        "mllib" (Spark MLlib PrefixSpan, gapped patterns).

    Returns
    -------
    tuple[DataFrame, dict]
        ``pattern array<string>, support long, length int, maximal boolean`` and run information.
    """
    if algorithm == "soads":
        from soads.mining.contiguous import mine

        if relations is None:
            from soads.dependencies import relation_table

            relations = relation_table(sequences)
        return mine(spark, sequences, relations, minsup, max_length, use_relations=True)
    if algorithm == "no-relations":
        from soads.mining.contiguous import mine

        return mine(spark, sequences, None, minsup, max_length, use_relations=False)
    if algorithm == "mllib":
        from soads.mining.baselines import mine_mllib

        return mine_mllib(spark, sequences, minsup, max_length)
    raise ValueError(f"unknown mining algorithm {algorithm!r}; expected one of {ALGORITHMS}")


__all__ = ["ALGORITHMS", "mine_patterns", "minsup_count", "frequent_patterns", "mark_maximal"]
