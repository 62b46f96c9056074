"""Frequent Subsequence Miner baselines: Original PrefixSpan (paper §4, the comparison).

DESIGN.md "Original PrefixSpan baselines": Spark MLlib's ``pyspark.ml.fpm.PrefixSpan`` on the
same sequences, each read point its own itemset ``[[r1], [r2], ...]``. Its patterns are *gapped*
(subsequences, not contiguous runs), so its result is a superset of the contiguous miner's. The
other baseline, the contiguous miner with the relation table switched off, is
``soads.mining.contiguous.mine(..., use_relations=False)``.
"""
from __future__ import annotations

import logging
import time

from soads import schema as S
from soads.mining.brute_force import minsup_count
from soads.mining.contiguous import patterns_frame

MAXIMAL_FALSE = "_not_maximal"  # private join column, never stored

logger = logging.getLogger(__name__)


def mllib_min_support(m: int, n_sequences: int) -> float:
    """A ``minSupport`` fraction for which MLlib's ``ceil(minSupport * n)`` is exactly ``m``.

    Examples
    --------
    >>> import math
    >>> all(math.ceil(mllib_min_support(m, n) * n) == m for n in (1, 3, 7, 500_000)
    ...     for m in range(1, min(n, 50) + 1))
    True
    """
    return (m - 0.5) / n_sequences


def mine_mllib(spark, sequences, minsup: float, max_length: int = 25):
    """Gapped sequential patterns of length >= 2 with MLlib's PrefixSpan.

    Parameters
    ----------
    spark : SparkSession
    sequences : DataFrame
        ``oid, sequence array<string>``.
    minsup : float
        A fraction of the objects in (0, 1], or a count (> 1).
    max_length : int
        MLlib's ``maxPatternLength``.

    Returns
    -------
    tuple[DataFrame, dict]
        Patterns ``pattern array<string>, support long, length int, maximal boolean`` (maximal:
        no one-item extension on either side within MLlib's result) and run information
        (algorithm, minsup_count, min_support, n_sequences, n_patterns, seconds, timings).
        The patterns DataFrame is persisted (unpersist it when done).
    """
    from pyspark.ml.fpm import PrefixSpan
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    itemsets = sequences.select(
        F.transform(F.coalesce(F.col(S.SEQUENCE), F.array().cast("array<string>")),
                    lambda x: F.array(x)).alias(S.SEQUENCE))
    # sequence array<array<string>> ([[r1], [r2], ...], one row per object)
    n = itemsets.count()
    m = minsup_count(minsup, n)
    timings["count"] = round(time.perf_counter() - t0, 4)
    min_support = mllib_min_support(m, n) if n else None
    if n and max_length >= 2:
        t = time.perf_counter()
        ps = PrefixSpan(minSupport=min_support, maxPatternLength=max_length,
                        sequenceCol=S.SEQUENCE)
        found = ps.findFrequentSequentialPatterns(itemsets)
        # sequence array<array<string>>, freq long (one row per frequent pattern)
        flat = found.select(F.flatten(S.SEQUENCE).alias(S.PATTERN),
                            F.col("freq").alias(S.SUPPORT)).filter(F.size(S.PATTERN) >= 2)
        # pattern, support (length >= 2; MLlib's result can be millions of gapped patterns, so
        # the maximal flag is computed in Spark rather than on the driver)
        size = F.size(S.PATTERN)
        extended = flat.filter(size >= 3).select(F.explode(F.array(
            F.slice(S.PATTERN, 1, size - 1), F.slice(S.PATTERN, 2, size - 1))).alias(S.PATTERN)) \
            .distinct().withColumn(MAXIMAL_FALSE, F.lit(False))
        # pattern, _not_maximal (one row per pattern that some one-item extension contains)
        df = flat.join(extended, S.PATTERN, "left").select(
            S.PATTERN, F.col(S.SUPPORT).cast("long").alias(S.SUPPORT),
            size.cast("int").alias(S.LENGTH),
            F.coalesce(F.col(MAXIMAL_FALSE), F.lit(True)).alias(S.MAXIMAL))
        df = df.persist()
        n_patterns = df.count()  # materialise: the timing covers the whole mining
        timings["prefixspan"] = round(time.perf_counter() - t, 4)
    else:
        df, n_patterns = patterns_frame(spark, {}), 0
    info = {
        "algorithm": "mllib",
        "minsup": minsup,
        "minsup_count": m,
        "min_support": min_support,
        "max_length": max_length,
        "n_sequences": n,
        "n_patterns": n_patterns,
        "timings": timings,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    logger.info("MLlib PrefixSpan: %(n_patterns)d patterns in %(seconds).2f s", info)
    return df, info


__all__ = ["mine_mllib", "mllib_min_support"]
