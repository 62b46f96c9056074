"""Relation surprisal: a second detector beside the Anomaly Evaluator, built on the RELATIONAL
DEPENDENCY TABLE (DESIGN.md: "Better detectors may be added beside it ..., never in its place").

The table already holds, for every read point a, how often each b directly followed it. An
object's surprisal is the largest ``-log P(b | a)`` over its relations, with
``P(b | a) = (freq(a, b) + 1/2) / (freq(a, .) + 1)``: one transition the plant almost never makes
(a skipped or swapped stage, a forbidden rework, an unknown read point) is enough to flag a path,
however well the rest of it aligns with the patterns. Higher means more anomalous; a sequence with
no relation (0 or 1 visit) scores 0, since it carries no evidence.

On the simulated battery plant this separates anomalies far better than the normalised alignment
score does (the demo prints both); the alignment score stays the paper's evaluator.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from soads import schema as S

logger = logging.getLogger(__name__)


def transition_model(relations: Iterable[tuple[str, str, int]]) -> tuple[dict, dict]:
    """``(freq, out)`` from relation rows ``(a, b, freq)``: pair counts and out-counts per a.

    Examples
    --------
    >>> freq, out = transition_model([("a", "b", 3), ("a", "c", 1)])
    >>> freq[("a", "b")], out["a"]
    (3, 4)
    """
    freq: dict = {}
    out: dict = defaultdict(int)
    for a, b, f in relations:
        freq[(a, b)] = int(f)
        out[a] += int(f)
    return freq, dict(out)


def surprisal(seq: Sequence[str], freq: Mapping, out: Mapping) -> float:
    """Largest ``-log P(b | a)`` over the relations of ``seq`` (0.0 when it has none).

    Examples
    --------
    >>> freq, out = transition_model([("a", "b", 99), ("a", "c", 1), ("b", "c", 100)])
    >>> round(surprisal(["a", "b", "c"], freq, out), 4)
    0.015
    >>> round(surprisal(["a", "c"], freq, out), 4)
    4.2097
    >>> surprisal(["a"], freq, out)
    0.0
    """
    worst = 0.0
    for a, b in zip(seq, seq[1:]):
        p = (freq.get((a, b), 0) + 0.5) / (out.get(a, 0) + 1.0)
        worst = max(worst, -math.log(p))
    return worst


def surprisal_scores(sequences, relation_rows: list[tuple[str, str, int]]):
    """Relation surprisal of every object (Spark; the relation table is small and broadcast).

    Parameters
    ----------
    sequences : DataFrame
        ``oid, sequence``.
    relation_rows : list of (a, b, freq)
        The RELATIONAL DEPENDENCY TABLE.

    Returns
    -------
    DataFrame
        ``oid, surprisal double``.
    """
    import pandas as pd
    from pyspark.sql import types as T

    freq, out = transition_model(relation_rows)
    schema = T.StructType([T.StructField(S.OID, T.StringType(), False),
                           T.StructField(S.SURPRISAL, T.DoubleType(), False)])

    def run(batches):
        for pdf in batches:
            yield pd.DataFrame({S.OID: pdf[S.OID],
                                S.SURPRISAL: [surprisal(list(s), freq, out) for s in pdf[S.SEQUENCE]]})

    return sequences.select(S.OID, S.SEQUENCE).mapInPandas(run, schema)
