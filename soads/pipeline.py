"""The batch path of SOADS, stage by stage (DESIGN.md "Data flow"), used by ``soads demo``,
``soads ingest|mine|score`` and the spark-submit jobs.

ingest    EPCIS documents -> Event Log Preprocessor -> EVENT LOG TABLE + quarantine
relations EVENT LOG -> Sequence Extractor -> RELATIONAL DEPENDENCY TABLE
mine      sequences + RELATIONAL DEPENDENCY TABLE -> modified PrefixSpan -> PATTERN TABLE
score     sequences x PATTERN TABLE -> Smith-Waterman -> object scores, ALIGNMENT SCORE TABLE
evaluate  object scores vs the simulator's truth.csv -> ROC-AUC, best F1
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from soads import schema as S
from soads.config import Config, event_log_location

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """What a pipeline run did: counts, stage seconds, patterns, quality."""

    seconds: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    quarantine_by_reason: dict = field(default_factory=dict)
    top_patterns: list = field(default_factory=list)
    mining: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    """detector name -> rows of :func:`soads.evaluate.detection_quality`"""
    run_id: str | None = None

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Time a stage into ``seconds[stage]`` and log its start and end."""
        logger.info("stage %s ...", stage)
        t0 = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t0
        logger.info("stage %s done in %.1f s", stage, self.seconds[stage])


def event_log_backend(location: str):
    """The one place that picks the event-log backend: HBase for ``hbase://``, else Parquet.

    Both modules have ``write_events``, ``read_events``, ``write_quarantine``,
    ``read_quarantine`` and ``check_replaceable`` with the same signatures.
    """
    if location.startswith("hbase://"):
        from soads.storage import hbase

        return hbase
    from soads.storage import event_log

    return event_log


def ingest(spark, inputs: list[str], cfg: Config, report: Report, replace: bool = False) -> None:
    """EPCIS files -> EVENT LOG TABLE (Parquet or HBase) and quarantine; counts into ``report``.

    A Parquet event log is replaced as a whole; one that holds the event job's files (the stream
    and the batch share ``[storage]``) raises
    :class:`soads.storage.event_log.EventLogInUse` unless ``replace`` (the demo, which starts
    from scratch).
    """
    from pyspark.sql import functions as F

    from soads import preprocess

    loc = event_log_location(cfg)
    event_log = event_log_backend(loc)
    if not replace:
        event_log.check_replaceable(loc)
    with report.timed("ingest"):
        docs = preprocess.read_documents(spark, inputs)
        parsed = preprocess.parse_documents(docs, cfg.preprocess.max_document_bytes).cache()
        events, quarantine = preprocess.split_parsed(parsed)
        event_log.write_events(events, loc)
        event_log.write_quarantine(quarantine, loc)
        parsed.unpersist()
        stored = event_log.read_events(spark, loc).count()
        by_reason = {r[S.REASON]: r["n"] for r in event_log.read_quarantine(spark, loc)
                     .groupBy(S.REASON).agg(F.count(F.lit(1)).alias("n")).collect()}
    report.counts["events_stored"] = stored
    report.counts["events_quarantined"] = sum(by_reason.values())
    report.counts["records_read"] = stored + sum(by_reason.values())
    report.quarantine_by_reason = dict(sorted(by_reason.items()))


def sequences_and_relations(spark, cfg: Config, report: Report):
    """EVENT LOG -> sequences (cached) and the RELATIONAL DEPENDENCY TABLE (written to the DB;
    with ``mining.relations = "table"`` read from the DB as the streaming job left it instead).

    Returns
    -------
    (DataFrame, DataFrame)
        sequences ``oid, sequence, first_time, last_time`` and relations ``a, b, freq, support``.
    """
    from soads import dependencies, sequences
    from soads.storage import tables

    with report.timed("sequences"):
        loc = event_log_location(cfg)
        events = event_log_backend(loc).read_events(spark, loc)
        seqs = sequences.extract_sequences(events, cfg.sequences.dwell_seconds).cache()
        report.counts["objects"] = seqs.count()
    if cfg.mining.relations == "table":
        # the streaming job keeps the table current: read it, do not recompute it
        with report.timed("relations"):
            rel = read_relations(spark, cfg.storage.db_url).cache()
            report.counts["relations"] = rel.count()
        return seqs, rel
    if cfg.mining.relations != "recompute":
        raise ValueError(f"mining.relations must be recompute or table, not "
                         f"{cfg.mining.relations!r}")
    with report.timed("relations"):
        rel = dependencies.relation_table(seqs).cache()
        report.counts["relations"] = rel.count()
        eng = tables.engine(cfg.storage.db_url)
        tables.create_tables(eng)
        eng.dispose()
        # A batch recomputation replaces the table: it is the truth the stream must equal.
        tables.clear(cfg.storage.db_url, "relational_dependency")
        tables.write_dataframe(rel, cfg.storage.db_url, "relational_dependency")
    return seqs, rel


def read_relations(spark, db_url: str):
    """The stored RELATIONAL DEPENDENCY TABLE as a small Spark DataFrame.

    The table holds one row per relation (read point pairs: a few thousand at most), so it is
    read on the driver through :mod:`soads.storage.tables` and parallelised.

    Returns
    -------
    DataFrame
        ``a, b, freq, support`` (freq and support long).
    """
    from pyspark.sql import types as T

    from soads.storage import tables

    rows = [(r[S.A], r[S.B], int(r[S.FREQ]), int(r[S.SUPPORT]))
            for r in tables.read_table(db_url, "relational_dependency", order_by=[S.A, S.B])]
    schema = T.StructType([T.StructField(S.A, T.StringType(), False),
                           T.StructField(S.B, T.StringType(), False),
                           T.StructField(S.FREQ, T.LongType(), False),
                           T.StructField(S.SUPPORT, T.LongType(), False)])
    return spark.createDataFrame(rows, schema)


def new_run_id(algorithm: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{algorithm}-{stamp}-{uuid.uuid4().hex[:6]}"


def mine(spark, seqs, rel, cfg: Config, report: Report, top: int = 10) -> list[dict]:
    """Mine the PATTERN TABLE; returns the patterns (small) ordered by support."""
    from soads.mining import mine_patterns
    from soads.storage import tables

    algorithm = cfg.mining.algorithm
    with report.timed("mine"):
        patterns_df, info = mine_patterns(spark, seqs, rel, cfg.mining.minsup,
                                          cfg.mining.max_length, algorithm)
        rows = [r.asDict() for r in patterns_df.collect()]  # patterns are few; sequences stay put
    rows.sort(key=lambda r: (-r[S.SUPPORT], -r[S.LENGTH], r[S.PATTERN]))
    run_id = new_run_id(algorithm)
    for i, r in enumerate(rows):
        r[S.RUN_ID], r[S.PATTERN_ID] = run_id, i
    eng = tables.engine(cfg.storage.db_url)
    tables.create_tables(eng)
    eng.dispose()
    tables.write_rows(cfg.storage.db_url, "pattern", rows)
    tables.write_rows(cfg.storage.db_url, "mining_run", [{
        S.RUN_ID: run_id, S.ALGORITHM: algorithm, S.MINSUP: info.get("minsup_count"),
        S.MAX_LENGTH: cfg.mining.max_length, S.N_SEQUENCES: info.get("n_sequences"),
        S.N_PATTERNS: len(rows), S.SECONDS: report.seconds["mine"],
        S.CREATED_AT: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
    }])
    report.run_id = run_id
    report.mining = info
    report.counts["patterns"] = len(rows)
    report.counts["maximal_patterns"] = sum(bool(r[S.MAXIMAL]) for r in rows)
    # the longest frequent paths say more than the many length-2 relations: show maximal ones
    report.top_patterns = sorted((r for r in rows if r[S.MAXIMAL]),
                                 key=lambda r: (-r[S.SUPPORT] * r[S.LENGTH], r[S.PATTERN]))[:top]
    return rows


def patterns_in_use(rows: list[dict], maximal_only: bool) -> list[list[str]]:
    return [list(r[S.PATTERN]) for r in rows if r[S.MAXIMAL] or not maximal_only]


def score(spark, seqs, rel, patterns: list[list[str]], run_id: str, cfg: Config, report: Report):
    """Score every object and every window; writes object_score and alignment_score.

    ``rel`` is the RELATIONAL DEPENDENCY TABLE (``a, b, freq, support``), used by the relation
    surprisal detector that runs beside the alignment score (soads.conformance).

    Returns
    -------
    DataFrame
        ``oid, score, raw, pattern, last_time, surprisal, run_id`` (cached).
    """
    from pyspark.sql import functions as F

    from soads import conformance, scoring
    from soads.storage import tables

    with report.timed("score"):
        rel_rows = [(r[S.A], r[S.B], r[S.FREQ]) for r in rel.select(S.A, S.B, S.FREQ).collect()]
        surprise = conformance.surprisal_scores(seqs, rel_rows)
        scored = scoring.score_sequences(seqs, patterns, cfg.scoring) \
            .join(surprise, S.OID, "left") \
            .withColumn(S.RUN_ID, F.lit(run_id)).cache()
        tables.write_dataframe(scored, cfg.storage.db_url, "object_score")
        windows = scoring.window_scores(scored, cfg.scoring.window_seconds) \
            .withColumn(S.RUN_ID, F.lit(run_id))
        tables.write_dataframe(windows, cfg.storage.db_url, "alignment_score")
        report.counts["windows"] = windows.count()
        report.counts["objects_scored"] = scored.count()
    return scored


class NoMiningRun(LookupError):
    """The PATTERN TABLE holds no mining run yet (nothing to score against)."""


def score_newest_run(build_spark, cfg: Config, report: Report):
    """The Anomaly Evaluator on the stored event log against the newest mining run's patterns:
    the steps ``soads score`` and ``jobs/score_objects.py`` share.

    The patterns are read in ``pattern_id`` order (the miner's order: support, length,
    pattern), so ties between equally good patterns go the same way whatever the database's
    row order.

    Parameters
    ----------
    build_spark : callable returning the SparkSession; called only once a run exists, so a
        missing run is reported without starting Spark.

    Returns
    -------
    (SparkSession, str, list[list[str]])
        The session, the run id and the patterns scored against.

    Raises
    ------
    NoMiningRun
        When the PATTERN TABLE holds no mining run.
    """
    from soads import query

    # the read side orders the run's patterns by pattern_id
    run, patterns = query.patterns_in_use(cfg.storage.db_url, cfg.scoring.maximal_only)
    if run is None:
        raise NoMiningRun("no mining run in the PATTERN TABLE: mine patterns first "
                          "(soads mine, or jobs/mine_patterns.py)")
    spark = build_spark()
    seqs, rel = sequences_and_relations(spark, cfg, report)
    score(spark, seqs, rel, patterns, run[S.RUN_ID], cfg, report)
    return spark, run[S.RUN_ID], patterns


def read_truth(spark, path: str):
    """The simulator's ``truth.csv``: oid, label, anomaly_type, noise.

    A file of an earlier simulator version has no ``noise`` column: its noise is null.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = [S.OID, S.LABEL, S.ANOMALY_TYPE]
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), [])
    if header not in (columns, columns + [S.NOISE]):
        raise ValueError(f"{path}: expected header oid,label,anomaly_type[,noise], got "
                         f"{','.join(header)}")
    schema = T.StructType([T.StructField(S.OID, T.StringType()),
                           T.StructField(S.LABEL, T.IntegerType()),
                           T.StructField(S.ANOMALY_TYPE, T.StringType())]
                          + [T.StructField(S.NOISE, T.StringType())] * (len(header) == 4))
    truth = spark.read.schema(schema).option("header", True).csv(path)
    return truth if len(header) == 4 else truth.withColumn(S.NOISE, F.lit(None).cast("string"))


def evaluate(spark, scored, truth_path: str, report: Report) -> None:
    """Join object scores with the ground truth and compute detection quality."""
    from pyspark.sql import functions as F

    from soads.evaluate import detection_quality

    with report.timed("evaluate"):
        truth = read_truth(spark, truth_path)
        # Objects the truth knows but the log lost (every read missed) count as undetected.
        joined = truth.join(scored.select(S.OID, S.SCORE, S.SURPRISAL), S.OID, "left").select(
            S.LABEL, F.coalesce(S.ANOMALY_TYPE, F.lit("")).alias(S.ANOMALY_TYPE),
            (1.0 - F.coalesce(S.SCORE, F.lit(1.0))).alias("alignment"),
            F.coalesce(S.SURPRISAL, F.lit(0.0)).alias(S.SURPRISAL))
        pdf = joined.toPandas()  # a few small columns per object, not the event log
        for detector in ("alignment", S.SURPRISAL):
            report.quality[detector] = detection_quality(
                pdf[S.LABEL].to_numpy(), pdf[S.ANOMALY_TYPE].to_numpy(), pdf[detector].to_numpy())
