"""The batch path of SOADS, stage by stage (DESIGN.md "Data flow"), used by ``soads demo``,
``soads ingest|mine|score`` and the spark-submit jobs.

ingest    EPCIS documents -> Event Log Preprocessor -> EVENT LOG TABLE + quarantine
relations EVENT LOG -> Sequence Extractor -> RELATIONAL DEPENDENCY TABLE
mine      sequences + RELATIONAL DEPENDENCY TABLE -> modified PrefixSpan -> PATTERN TABLE
fit       sequences + RELATIONAL DEPENDENCY TABLE -> context detector model run (detector_run,
          detector_count)
score     sequences x PATTERN TABLE -> Smith-Waterman -> object scores, ALIGNMENT SCORE TABLE;
          sequences x model run -> context detector verdicts (object_score), anomaly_rate
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
    anomaly_rates: list = field(default_factory=list)
    """The read points where most objects were flagged (read_point, flagged, n_objects)."""
    noise: dict = field(default_factory=dict)
    """detector name -> rows of :func:`soads.evaluate.noise_false_positives` (verdicts only)"""
    run_id: str | None = None
    model_run_id: str | None = None
    """The context detector's model run the objects were scored against (None: none)."""

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


@dataclass
class ModelRun:
    """A context detector model run in hand: its id, the model, and the horizon (newest event
    time, microseconds) of the log it was fitted on."""

    run_id: str
    model: object
    horizon_us: int | None = None


def write_model_run(db_url: str, run_id: str, fitted, conf, seconds: float) -> int:
    """Store a fitted model run (soads.detect.spark.Fit): its detector_count rows, then its
    detector_run row (a reader that finds the run finds all its rows). Returns the rows written.

    The run's conf JSON holds the [detector] settings and the model's missed_read_rate.
    """
    from soads.detect import runs
    from soads.storage import tables

    eng = tables.engine(db_url)
    tables.create_tables(eng)
    eng.dispose()
    rows = runs.model_run_rows(run_id, fitted.rows)
    tables.clear(db_url, "detector_count", {S.RUN_ID: run_id})
    tables.write_rows(db_url, "detector_count", rows)
    horizon = None if fitted.horizon_us is None else \
        dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=fitted.horizon_us)
    tables.write_rows(db_url, "detector_run", [{
        S.RUN_ID: run_id, S.CREATED_AT: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        S.N_OBJECTS: fitted.n_objects, S.N_ROWS: len(rows), S.SKIPPED: list(fitted.skipped),
        S.CONF: runs.run_conf(conf, fitted.model.missed_read_rate),
        S.SECONDS: seconds, S.HORIZON: horizon,
    }])
    return len(rows)


def fit_detector(spark, seqs, rel, cfg: Config, report: Report) -> ModelRun:
    """Fit the context detector on the sequences and store it as a model run (run id
    ``context-...``); ``rel`` (the RELATIONAL DEPENDENCY TABLE of the same job) gives its order-1
    control rows. Sets ``report.model_run_id``."""
    from soads.detect import spark as dspark

    with report.timed("fit"):
        fitted = dspark.fit(seqs, rel, cfg.detector, cfg.stream.idle_seconds,
                            n_objects=report.counts.get("objects"),
                            missed_read_rate=cfg.sequences.missed_read_rate)
        run_id = new_run_id("context")
    n_rows = write_model_run(cfg.storage.db_url, run_id, fitted, cfg.detector,
                             report.seconds["fit"])
    report.model_run_id = run_id
    report.counts["detector_rows"] = n_rows
    report.counts["detector_skipped"] = len(fitted.skipped)
    return ModelRun(run_id, fitted.model, fitted.horizon_us)


class NoModelRun(LookupError):
    """The named context detector model run is not in table detector_run."""


def stored_model_run(cfg: Config, which: str | None = "newest") -> ModelRun | None:
    """The model run ``which`` (a run id, or "newest") read from the database; None when
    ``which`` is None, or "newest" and no model run was fitted yet.

    Raises
    ------
    NoModelRun
        When the named run does not exist.
    """
    from soads import query

    if which is None:
        return None
    run = query.newest_detector_run(cfg.storage.db_url) if which == "newest" else \
        query.detector_run(cfg.storage.db_url, which)
    if run is None:
        if which == "newest":
            return None
        raise NoModelRun(f"no detector model run {which!r} in table detector_run "
                         "(soads fit-detector makes one)")
    model = query.detector_model(cfg.storage.db_url, run[S.RUN_ID], cfg.detector)
    return ModelRun(run[S.RUN_ID], model)


def score(spark, seqs, rel, patterns: list[list[str]], run_id: str, cfg: Config, report: Report,
          detector: ModelRun | None = None):
    """Score every object and every window; writes object_score and alignment_score, and with a
    context detector model run its verdicts (object_score's anomaly, is_anomaly, explanation,
    model_run_id) and the anomaly_rate table.

    ``rel`` is the RELATIONAL DEPENDENCY TABLE (``a, b, freq, support``), used by the relation
    surprisal detector that runs beside the alignment score (soads.conformance). Objects are
    scored by the context detector as finished or not by the closed rule
    (soads.detect.runs.is_closed) at the newest event time of ``seqs``. Without ``detector`` the
    verdict columns are null.

    Returns
    -------
    DataFrame
        ``oid, score, raw, pattern, last_time, surprisal, run_id, anomaly, is_anomaly,
        explanation, model_run_id`` (cached).
    """
    from pyspark.sql import functions as F

    from soads import conformance, scoring
    from soads.storage import tables

    with report.timed("score"):
        rel_rows = [(r[S.A], r[S.B], r[S.FREQ]) for r in rel.select(S.A, S.B, S.FREQ).collect()]
        surprise = conformance.surprisal_scores(seqs, rel_rows)
        scored = scoring.score_sequences(seqs, patterns, cfg.scoring) \
            .join(surprise, S.OID, "left") \
            .withColumn(S.RUN_ID, F.lit(run_id))
        verdicts = None
        if detector is not None:
            from soads.detect import spark as dspark

            horizon = dspark.horizon_us(seqs)
            verdicts = dspark.score(seqs, detector.model, detector.run_id, horizon,
                                    cfg.stream.idle_seconds).cache()
            scored = scored.join(verdicts, S.OID, "left")
        else:
            scored = scored.select("*", F.lit(None).cast("double").alias(S.ANOMALY),
                                   F.lit(None).cast("boolean").alias(S.IS_ANOMALY),
                                   F.lit(None).cast("string").alias(S.EXPLANATION),
                                   F.lit(None).cast("string").alias(S.MODEL_RUN_ID))
        # no micro-batch wrote these rows: the alert process, which reads the event job's new
        # verdicts by batch id, leaves a batch recomputation alone
        scored = scored.withColumn(S.BATCH_ID, F.lit(None).cast("bigint")).cache()
        tables.write_dataframe(scored, cfg.storage.db_url, "object_score")
        windows = scoring.window_scores(scored, cfg.scoring.window_seconds) \
            .withColumn(S.RUN_ID, F.lit(run_id))
        tables.write_dataframe(windows, cfg.storage.db_url, "alignment_score")
        report.counts["windows"] = windows.count()
        report.counts["objects_scored"] = scored.count()
        if verdicts is not None:
            rates = dspark.anomaly_rate(seqs, verdicts, cfg.scoring.window_seconds).cache()
            tables.write_dataframe(rates, cfg.storage.db_url, "anomaly_rate")
            report.counts["anomaly_rate_rows"] = rates.count()
            # over all windows (an object is in one window): where objects go wrong most
            top = rates.groupBy(S.READ_POINT).agg(
                F.sum(S.FLAGGED).alias(S.FLAGGED), F.sum(S.N_OBJECTS).alias(S.N_OBJECTS)) \
                .filter(F.col(S.FLAGGED) > 0) \
                .orderBy(F.col(S.FLAGGED).desc(), F.col(S.READ_POINT)).limit(5).collect()
            report.anomaly_rates = [r.asDict() for r in top]
            report.counts["objects_flagged"] = scored.filter(F.col(S.IS_ANOMALY)).count()
            report.model_run_id = detector.run_id
            rates.unpersist()
    return scored


class NoMiningRun(LookupError):
    """The PATTERN TABLE holds no mining run yet (nothing to score against)."""


def score_newest_run(build_spark, cfg: Config, report: Report, model_run: str | None = "newest"):
    """The Anomaly Evaluator on the stored event log against the newest mining run's patterns:
    the steps ``soads score`` and ``jobs/score_objects.py`` share.

    The patterns are read in ``pattern_id`` order (the miner's order: support, length,
    pattern), so ties between equally good patterns go the same way whatever the database's
    row order.

    Parameters
    ----------
    build_spark : callable returning the SparkSession; called only once a run exists, so a
        missing run is reported without starting Spark.
    model_run : the context detector's model run to score against: a run id, "newest" (the
        default; none fitted yet: the verdict columns stay null) or None (none).

    Returns
    -------
    (SparkSession, str, list[list[str]])
        The session, the run id and the patterns scored against.

    Raises
    ------
    NoMiningRun
        When the PATTERN TABLE holds no mining run.
    NoModelRun
        When ``model_run`` names a model run that does not exist.
    """
    from soads import query

    # the read side orders the run's patterns by pattern_id
    run, patterns = query.patterns_in_use(cfg.storage.db_url, cfg.scoring.maximal_only)
    if run is None:
        raise NoMiningRun("no mining run in the PATTERN TABLE: mine patterns first "
                          "(soads mine, or jobs/mine_patterns.py)")
    detector = stored_model_run(cfg, model_run)
    spark = build_spark()
    seqs, rel = sequences_and_relations(spark, cfg, report)
    score(spark, seqs, rel, patterns, run[S.RUN_ID], cfg, report, detector)
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


CONTEXT_DETECTOR = "context"
"""The context detector's name in :attr:`Report.quality`."""


def evaluate(spark, scored, truth_path: str, report: Report) -> None:
    """Join object scores with the ground truth and compute detection quality."""
    from pyspark.sql import functions as F

    from soads.evaluate import detection_quality, noise_false_positives

    with report.timed("evaluate"):
        truth = read_truth(spark, truth_path)
        # Objects the truth knows but the log lost (every read missed) count as undetected;
        # the context detector's columns are null when no model run was scored against.
        joined = truth.join(scored.select(S.OID, S.SCORE, S.SURPRISAL, S.ANOMALY, S.IS_ANOMALY),
                            S.OID, "left").select(
            S.LABEL, F.coalesce(S.ANOMALY_TYPE, F.lit("")).alias(S.ANOMALY_TYPE),
            F.coalesce(S.NOISE, F.lit("")).alias(S.NOISE),
            (1.0 - F.coalesce(S.SCORE, F.lit(1.0))).alias("alignment"),
            F.coalesce(S.SURPRISAL, F.lit(0.0)).alias(S.SURPRISAL),
            F.coalesce(S.ANOMALY, F.lit(0.0)).alias(CONTEXT_DETECTOR),
            F.coalesce(S.IS_ANOMALY, F.lit(False)).alias(S.IS_ANOMALY))
        pdf = joined.toPandas()  # a few small columns per object, not the event log
        labels, types = pdf[S.LABEL].to_numpy(), pdf[S.ANOMALY_TYPE].to_numpy()
        for detector in ("alignment", S.SURPRISAL):  # scores without a verdict of their own
            report.quality[detector] = detection_quality(labels, types,
                                                         pdf[detector].to_numpy())
        if report.model_run_id:
            verdicts = pdf[S.IS_ANOMALY].to_numpy(dtype=bool)
            report.quality[CONTEXT_DETECTOR] = detection_quality(
                labels, types, pdf[CONTEXT_DETECTOR].to_numpy(), verdicts)
            report.noise[CONTEXT_DETECTOR] = noise_false_positives(
                labels, pdf[S.NOISE].to_numpy(), verdicts)
