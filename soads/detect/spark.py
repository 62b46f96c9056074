"""The context detector on Spark: fit a model run on the event log's sequences and score objects,
by calling the pure core (:mod:`soads.detect.context`) inside ``mapInPandas``.

Fit, without collecting the log or the sequences:

1. the attributes left out as nearly unique (:func:`unique_attributes`): distinct values vs
   occurrences per attribute, aggregated on Spark over the whole log;
2. every partition counts its objects (:func:`soads.detect.context.count_rows` with those
   attributes left out; finished objects by :func:`soads.detect.runs.is_closed`) and the rows are
   summed per key (:func:`count_rows`);
3. the order-1 control rows between two read points are the RELATIONAL DEPENDENCY TABLE of the
   same job (``a, b, freq``: the count of b directly after a, the same number), which replaces
   them (:func:`with_relations`): the detector reuses it rather than counting it twice.

Only the summed rows (small: contexts x values) come to the driver, to build the model and write
the run. Scoring broadcasts the model and runs :meth:`ContextModel.score_many` per batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from soads import schema as S
from soads.config import DetectorConf
from soads.detect import context, runs

logger = logging.getLogger(__name__)

_LAST_US = "_last_us"
_WINDOW_US = "_window_us"


def count_struct():
    """Spark schema of count rows: feature, ctx_order, context array<string> (null = START),
    value (null = END), count."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.FEATURE, T.StringType(), False),
        T.StructField(S.CTX_ORDER, T.IntegerType(), False),
        T.StructField(S.CONTEXT, T.ArrayType(T.StringType(), True), False),
        T.StructField(S.VALUE, T.StringType(), True),
        T.StructField(S.COUNT, T.LongType(), False),
    ])


def verdict_struct():
    """Spark schema of verdicts: oid, anomaly, is_anomaly, explanation (JSON text),
    model_run_id."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.OID, T.StringType(), True),
        T.StructField(S.ANOMALY, T.DoubleType(), False),
        T.StructField(S.IS_ANOMALY, T.BooleanType(), False),
        T.StructField(S.EXPLANATION, T.StringType(), True),
        T.StructField(S.MODEL_RUN_ID, T.StringType(), True),
    ])


def has_attributes(seqs) -> bool:
    """Whether the sequences carry per-visit attributes (``attributes`` array<map>)."""
    return S.ATTRIBUTES in seqs.columns


def _objects(seqs):
    """oid, sequence, attributes (when present), last read in microseconds (null without one)."""
    from pyspark.sql import functions as F

    cols = [S.OID, S.SEQUENCE] + ([S.ATTRIBUTES] if has_attributes(seqs) else [])
    last = (F.unix_micros(F.col(S.LAST_TIME).cast("timestamp")) if S.LAST_TIME in seqs.columns
            else F.lit(None).cast("long"))
    return seqs.select(*cols, last.alias(_LAST_US))


def _cases(pdf, horizon_us, idle_seconds: float):
    """``(sequence, attributes, closed)`` of a pandas batch of :func:`_objects` rows. An object
    without a last read time, or a log without a horizon, counts as finished."""
    import numpy as np

    seqs = [list(s) if s is not None else [] for s in pdf[S.SEQUENCE]]
    if S.ATTRIBUTES in pdf.columns:
        # arrow maps arrive as lists of (key, value) pairs
        attrs = [None if a is None else [dict(m) for m in a] for a in pdf[S.ATTRIBUTES]]
    else:
        attrs = [None] * len(seqs)
    last = pdf[_LAST_US].to_numpy(dtype="float64", na_value=np.nan)
    if horizon_us is None:
        closed = [True] * len(seqs)
    else:
        # NaN (no time) -> closed; int64 arithmetic where the time is known
        known = ~np.isnan(last)
        closed = np.ones(len(seqs), dtype=bool)
        closed[known] = runs.is_closed(last[known].astype(np.int64), int(horizon_us),
                                       idle_seconds)
        closed = closed.tolist()
    return seqs, attrs, closed


def horizon_us(seqs) -> int | None:
    """The batch horizon: the newest event time in the log (the newest object's last read), in
    microseconds; None for an empty log."""
    from pyspark.sql import functions as F

    row = seqs.agg(F.max(F.unix_micros(F.col(S.LAST_TIME).cast("timestamp"))).alias("h")).first()
    return None if row is None or row["h"] is None else int(row["h"])


def unique_attributes(seqs, ratio: float) -> tuple[str, ...]:
    """Attributes with more distinct values than ``ratio`` of their occurrences over the whole
    log, computed on Spark (only one row per attribute reaches the driver); the rule of
    :func:`soads.detect.context.unique_features`."""
    from pyspark.sql import functions as F

    if not has_attributes(seqs):
        return ()
    pairs = seqs.select(F.explode(S.ATTRIBUTES).alias("_m")) \
        .select(F.explode("_m").alias("_k", "_v"))
    # _k attribute, _v value (one row per attribute occurrence)
    per_value = pairs.groupBy("_k", "_v").agg(F.count(F.lit(1)).alias("_n"))
    stats = per_value.groupBy("_k").agg(F.count(F.lit(1)).alias("_d"), F.sum("_n").alias("_n"))
    return tuple(sorted(r["_k"] for r in stats.collect() if r["_d"] > ratio * r["_n"]))


def count_rows(seqs, conf: DetectorConf, skipped, horizon, idle_seconds: float):
    """The model's count rows summed over all partitions (Spark, no collect).

    Returns
    -------
    DataFrame
        ``feature, ctx_order, context array<string>, value, count`` (one row per key).
    """
    from pyspark.sql import functions as F

    skipped = tuple(skipped)

    def run(batches):
        import pandas as pd

        for pdf in batches:
            seqs_, attrs, closed = _cases(pdf, horizon, idle_seconds)
            rows, _ = context.count_rows(zip(seqs_, attrs, closed), conf, skipped=skipped)
            yield pd.DataFrame({
                S.FEATURE: [r[0] for r in rows], S.CTX_ORDER: [r[1] for r in rows],
                S.CONTEXT: [list(r[2]) for r in rows], S.VALUE: [r[3] for r in rows],
                S.COUNT: [r[4] for r in rows]})

    counted = _objects(seqs).mapInPandas(run, count_struct())
    # feature, ctx_order, context, value, count (one row per key per arrow batch)
    return counted.groupBy(S.FEATURE, S.CTX_ORDER, S.CONTEXT, S.VALUE) \
        .agg(F.sum(S.COUNT).cast("long").alias(S.COUNT))


def _relation_row():
    """Count rows of the order-1 control part between two read points."""
    from pyspark.sql import functions as F

    return ((F.col(S.FEATURE) == F.lit(context.CONTROL)) & (F.col(S.CTX_ORDER) == 1)
            & F.col(S.CONTEXT)[0].isNotNull() & F.col(S.VALUE).isNotNull())


def with_relations(counts, rel):
    """``counts`` with its order-1 control rows between two read points taken from the
    RELATIONAL DEPENDENCY TABLE ``rel`` (``a, b, freq``) instead."""
    from pyspark.sql import functions as F

    kept = counts.filter(~_relation_row())
    pairs = rel.select(F.lit(context.CONTROL).alias(S.FEATURE), F.lit(1).alias(S.CTX_ORDER),
                       F.array(F.col(S.A)).alias(S.CONTEXT), F.col(S.B).alias(S.VALUE),
                       F.col(S.FREQ).cast("long").alias(S.COUNT))
    return kept.unionByName(pairs)


@dataclass
class Fit:
    """A fitted model run before it is stored: the model, its rows, what was left out."""

    model: context.ContextModel
    skipped: tuple
    horizon_us: int | None
    n_objects: int

    @property
    def rows(self) -> list[tuple]:
        return self.model.to_rows()


def fit(seqs, rel, conf: DetectorConf, idle_seconds: float, n_objects: int | None = None,
        missed_read_rate: float = 0.0) -> Fit:
    """Fit the context detector on the sequences (Spark, no collect of the sequences).

    Parameters
    ----------
    seqs : DataFrame
        ``oid, sequence, [attributes,] last_time`` (one row per object).
    rel : DataFrame or None
        The RELATIONAL DEPENDENCY TABLE of the same job (``a, b, freq``); None counts the
        order-1 rows like the others (the same numbers when ``rel`` is the table of ``seqs``).
    conf : DetectorConf
    idle_seconds : float
        The closed rule's idle time (``[stream] idle_seconds``).
    missed_read_rate : float
        The model's chance of a missed read (``[sequences] missed_read_rate`` for RFID reads; it
        does not change the counts, only how the model scores).
    """
    horizon = horizon_us(seqs) if S.LAST_TIME in seqs.columns else None
    skipped = unique_attributes(seqs, conf.unique_ratio)
    counts = count_rows(seqs, conf, skipped, horizon, idle_seconds)
    if rel is not None:
        counts = with_relations(counts, rel)
    rows = [(r[S.FEATURE], int(r[S.CTX_ORDER]), tuple(r[S.CONTEXT]), r[S.VALUE], int(r[S.COUNT]))
            for r in counts.collect()]  # summed counts: contexts x values, not the log
    model = context.ContextModel.from_rows(rows, conf, skipped, missed_read_rate)
    if n_objects is None:
        n_objects = seqs.count()
    logger.info("context detector fitted: %d rows, %d objects, skipped %s", len(rows),
                n_objects, list(skipped))
    return Fit(model, tuple(skipped), horizon, int(n_objects))


def score(seqs, model: context.ContextModel, model_run_id: str | None, horizon,
          idle_seconds: float):
    """Verdicts of every object against ``model`` (broadcast once; Spark, no collect).

    Objects are scored as finished (their END step counts) by the closed rule at ``horizon``
    (microseconds; None: all finished).

    Returns
    -------
    DataFrame
        ``oid, anomaly, is_anomaly, explanation (JSON text), model_run_id`` (one row per object).
    """
    spark = seqs.sparkSession
    bc = spark.sparkContext.broadcast(model)

    def run(batches):
        import pandas as pd

        m = bc.value
        for pdf in batches:
            seqs_, attrs, closed = _cases(pdf, horizon, idle_seconds)
            cols = [runs.verdict_columns(v) for v in m.score_many(seqs_, attrs, closed)]
            yield pd.DataFrame({
                S.OID: pdf[S.OID].to_numpy(),
                S.ANOMALY: [c[0] for c in cols], S.IS_ANOMALY: [c[1] for c in cols],
                S.EXPLANATION: [c[2] for c in cols],
                S.MODEL_RUN_ID: [model_run_id] * len(cols)})

    return _objects(seqs).mapInPandas(run, verdict_struct())


def anomaly_rate(seqs, verdicts, window_seconds: int):
    """The anomaly rate per window of event time and read point (:func:`runs.anomaly_rate`'s
    rule, run per partition and summed).

    Parameters
    ----------
    seqs : DataFrame ``oid, sequence, last_time``
    verdicts : DataFrame ``oid, is_anomaly, explanation, model_run_id`` (:func:`score`)

    Returns
    -------
    DataFrame
        ``window_start, window_end, read_point, n_objects, flagged, rate, model_run_id, writer``
        (``writer`` = "batch").
    """
    import json

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    joined = _objects(seqs).select(S.OID, S.SEQUENCE, _LAST_US).join(
        verdicts.select(S.OID, S.IS_ANOMALY, S.EXPLANATION, S.MODEL_RUN_ID), S.OID)
    schema = T.StructType([T.StructField(S.MODEL_RUN_ID, T.StringType(), True),
                           T.StructField(_WINDOW_US, T.LongType(), False),
                           T.StructField(S.READ_POINT, T.StringType(), False),
                           T.StructField(S.N_OBJECTS, T.LongType(), False),
                           T.StructField(S.FLAGGED, T.LongType(), False)])

    def run(batches):
        import pandas as pd

        for pdf in batches:
            out = []
            for run_id, part in pdf.groupby(S.MODEL_RUN_ID, dropna=False):
                objects = (
                    (list(s), None if pd.isna(t) else int(t), bool(f),
                     None if e is None else json.loads(e))
                    for s, t, f, e in zip(part[S.SEQUENCE], part[_LAST_US],
                                          part[S.IS_ANOMALY], part[S.EXPLANATION]))
                for (w, rp), (n, k) in runs.anomaly_rate(objects, window_seconds).items():
                    out.append((None if pd.isna(run_id) else run_id, w, rp, n, k))
            yield pd.DataFrame(out, columns=[f.name for f in schema.fields])

    per_batch = joined.mapInPandas(run, schema)
    agg = per_batch.groupBy(S.MODEL_RUN_ID, _WINDOW_US, S.READ_POINT).agg(
        F.sum(S.N_OBJECTS).cast("long").alias(S.N_OBJECTS),
        F.sum(S.FLAGGED).cast("long").alias(S.FLAGGED))
    start = F.timestamp_micros(F.col(_WINDOW_US))
    return agg.select(
        start.alias(S.WINDOW_START),
        F.timestamp_micros(F.col(_WINDOW_US) + F.lit(int(window_seconds) * 1_000_000))
        .alias(S.WINDOW_END),
        S.READ_POINT, S.N_OBJECTS, S.FLAGGED,
        (F.col(S.FLAGGED) / F.col(S.N_OBJECTS)).alias(S.RATE), S.MODEL_RUN_ID,
        F.lit(S.WRITER_BATCH).alias(S.WRITER))
