"""Streaming sinks of the event job (:mod:`soads.streaming`).

Two places write, both exactly-once in effect (DESIGN.md "Streaming guarantees"):

- the parse stage (:class:`EventStore`, on the executors): the EVENT LOG TABLE is keyed by the
  event itself -- HBase row keys (:func:`soads.storage.hbase.row_key`), or Parquet files named
  by micro-batch id and partition that a replay replaces -- and so is the quarantine table.
  The quarantine topic is at-least-once; its messages are keyed by source so a consumer can
  drop a repeat.
- the ``foreachBatch`` writer (:func:`updates_writer`, on the driver): relation increments, late
  events, object scores and window scores of a micro-batch go into ONE transaction with its
  ``(sink, batch_id)`` ledger row (table ``sink_batch``); a batch id already in the ledger is
  skipped, so a replayed batch changes nothing. Relation counts are increments and go only
  through the ledger.

Between the two, :class:`ObjectScorer` (executors) scores the updated objects against the
newest mining run; it writes nothing. The executors therefore read the PATTERN TABLE
(``stream.db_url`` must be reachable from them, as the event log already is).

Event log backend: ``hbase://host:port/prefix`` -> :mod:`soads.storage.hbase`, anything else is
a directory for Parquet (the one ``if``: :func:`_is_hbase`).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Sequence

import sqlalchemy as sa

from soads import schema as S
from soads.storage import tables

logger = logging.getLogger(__name__)

SINK_EVENTS = "events"  # relations, late events and scores of a micro-batch: one ledger row
LATE_TABLE = "late_event"
_CHUNK = 1000

LATE_EVENT = tables.TABLE[LATE_TABLE]  # soads.streaming's late/out-of-order policy


def _is_hbase(location: str) -> bool:
    return location.startswith("hbase://")


def _from_micros(us: int) -> dt.datetime:
    """Naive UTC datetime (the tables store naive UTC)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def prepare(db_url: str, event_log: str) -> None:
    """Create the relational tables (and the event log tables on HBase) when missing."""
    eng = tables.engine(db_url)
    try:
        tables.create_tables(eng)
    finally:
        eng.dispose()
    if _is_hbase(event_log):
        from soads.storage import hbase

        hbase.ensure_table(event_log, hbase.EVENT_TABLE)
        hbase.ensure_table(event_log, hbase.QUARANTINE_TABLE)


# -- the parse stage: event log and quarantine, written by the executors ---------------------

BATCH_ID_PROPERTY = "streaming.sql.batchId"  # Spark's MicroBatchExecution.BATCH_ID_KEY


def read_struct():
    """Spark schema of the parse stage's output (:class:`EventStore`): oid, read_point,
    event_time (timestamp), source -- one row per flat event, what the state step needs."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.OID, T.StringType(), False),
        T.StructField(S.READ_POINT, T.StringType(), False),
        T.StructField(S.EVENT_TIME, T.TimestampType(), False),
        T.StructField(S.SOURCE, T.StringType(), False),
    ])


@dataclass(frozen=True)
class EventStore:
    """Where the parse stage stores what it parsed (pickled to the executors).

    The stream parses every document once, on the executors, and writes its flat events to the
    EVENT LOG TABLE and its quarantine records to the quarantine table (and topic) right there,
    before the rows move on to the state step: the full events never cross a shuffle and never
    reach the driver. Replays are harmless: HBase row keys are derived from the event; Parquet
    files are named by micro-batch id and Spark partition (``batch-<id>-<partition>.parquet``),
    and a replayed micro-batch reads the same offsets into the same partitions, so it rewrites
    the same files. The quarantine topic is at-least-once (a consumer drops repeats by key).

    Parameters
    ----------
    location : str
        ``hbase://host:port/prefix`` or a directory (Parquet, the embedded default).
    max_bytes : int
        Larger documents are quarantined (``too_large``).
    kafka_bootstrap, quarantine_topic : str
        Both set: quarantine records are also published there (key = source, value = JSON).
    """

    location: str
    max_bytes: int
    kafka_bootstrap: str = ""
    quarantine_topic: str = ""

    def __call__(self, batches):
        """``mapInArrow`` function: Arrow batches of (source, content) documents -> Arrow batches
        of :func:`read_struct` rows, after storing them."""
        import pyarrow as pa
        from pyspark import TaskContext

        from soads import epcis

        ctx = TaskContext.get()
        schema = pa.schema([pa.field(S.OID, pa.string(), False),
                            pa.field(S.READ_POINT, pa.string(), False),
                            pa.field(S.EVENT_TIME, pa.timestamp("us", tz="UTC"), False),
                            pa.field(S.SOURCE, pa.string(), False)])
        parquet_events, parquet_quarantine, producer = [], [], None
        try:
            for batch in batches:
                events, quarantine = [], []
                sources = batch.column(S.SOURCE).to_pylist()
                contents = batch.column(S.CONTENT)
                for i, source in enumerate(sources):
                    ev, qu = epcis.parse_document(contents[i].as_py(), source, self.max_bytes)
                    events.extend(ev)
                    quarantine.extend(qu)
                times = pa.array([e[S.EVENT_TIME] for e in events], pa.string()).cast(
                    pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
                if _is_hbase(self.location):
                    from soads.storage import hbase

                    hbase.put_records(self.location, hbase.EVENT_TABLE, events)
                    if quarantine:
                        hbase.put_records(self.location, hbase.QUARANTINE_TABLE, quarantine)
                else:
                    parquet_events.append(_event_table(events, times))
                    parquet_quarantine.extend(quarantine)
                if quarantine and self.kafka_bootstrap and self.quarantine_topic:
                    producer = producer or _quarantine_producer(self.kafka_bootstrap)
                    for q in quarantine:
                        producer.send(self.quarantine_topic, key=q[S.SOURCE].encode("utf-8"),
                                      value=json.dumps({c: q.get(c) for c in
                                                        S.QUARANTINE_COLUMNS}).encode("utf-8"))
                if events:
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([e[S.OID] for e in events], pa.string()),
                         pa.array([e[S.READ_POINT] for e in events], pa.string()), times,
                         pa.array([e[S.SOURCE] for e in events], pa.string())], schema=schema)
            if not _is_hbase(self.location) and (parquet_events or parquet_quarantine):
                batch_id = ctx.getLocalProperty(BATCH_ID_PROPERTY) if ctx else None
                if batch_id is None:
                    raise RuntimeError("the Parquet event log is written by a streaming "
                                       "micro-batch only (no batch id in this task)")
                name = f"batch-{int(batch_id)}-{ctx.partitionId():05d}.parquet"
                _write_parquet_file(pa.concat_tables(parquet_events), self.location,
                                    "event_log", name)
                if parquet_quarantine:
                    _write_parquet_file(pa.table({c: pa.array([q.get(c) for q in
                                                               parquet_quarantine], pa.string())
                                                  for c in S.QUARANTINE_COLUMNS}),
                                        self.location, "quarantine", name)
            if producer is not None:
                producer.flush()
        finally:
            if producer is not None:
                producer.close()


def _event_table(events: Sequence[dict], times):
    import pyarrow as pa

    cols = {}
    for c in S.EVENT_COLUMNS:
        cols[c] = times if c == S.EVENT_TIME else pa.array([e.get(c) for e in events], pa.string())
    return pa.table(cols)


def _write_parquet_file(table, root: str, kind: str, name: str) -> None:
    """``root/kind/name``, atomically (a reader never sees half a file; a replay replaces it)."""
    import pyarrow.parquet as pq

    directory = os.path.join(root, kind)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(directory, name))


def _quarantine_producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)


# -- relations, late events, scores: one transaction per micro-batch -------------------------


def _upsert_late(conn, rows: Sequence[dict]) -> None:
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        stmt = insert(LATE_EVENT)
        stmt = stmt.on_conflict_do_nothing(index_elements=[S.OID, S.SOURCE])
    else:
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(LATE_EVENT)
        stmt = stmt.on_duplicate_key_update({S.READ_POINT: stmt.inserted[S.READ_POINT]})
    conn.execute(stmt, list(rows))


def read_late(db_url: str) -> list[dict]:
    """Rows of the late_event table: oid, source, read_point, event_time (naive UTC)."""
    eng = tables.engine(db_url)
    try:
        with eng.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(LATE_EVENT))]
    finally:
        eng.dispose()


def _patterns_of(db_url: str | sa.Engine, run_id: str, maximal_only: bool) -> list[list[str]]:
    rows = tables.read_table(db_url, "pattern", {S.RUN_ID: run_id}, order_by=[S.PATTERN_ID])
    return [list(r[S.PATTERN]) for r in rows if r[S.MAXIMAL] or not maximal_only]


def patterns_of_newest_run(db_url: str | sa.Engine, maximal_only: bool
                           ) -> tuple[str | None, list[list[str]]]:
    """``(run_id, patterns in use)`` of the newest mining run, ``(None, [])`` before any."""
    run = tables.latest_run(db_url)
    if run is None:
        return None, []
    return run[S.RUN_ID], _patterns_of(db_url, run[S.RUN_ID], maximal_only)


def window_start(last_time: dt.datetime, window_seconds: int) -> dt.datetime:
    """Start of the epoch-aligned tumbling window holding ``last_time`` (naive UTC).

    >>> window_start(dt.datetime(2024, 3, 4, 10, 59, 59), 3600)
    datetime.datetime(2024, 3, 4, 10, 0)
    """
    us = (last_time - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    w = int(window_seconds) * 1_000_000
    return _from_micros(us // w * w)


@dataclass
class BatchUpdates:
    """What the state step produced in one micro-batch, on the driver (small: one row per
    relation, per late read and per updated object -- never the events themselves).

    relations : list of (a, b, freq, support) increments
    late : list of (oid, source, read_point, time_us)
    objects : list of (oid, sequence, last_us, score, raw, pattern, run_id), scored on the
        executors (:class:`ObjectScorer`); run_id None = no mining run yet, not scored
    """

    relations: list
    late: list
    objects: list


def collect_updates(updates) -> BatchUpdates:
    """A micro-batch of :class:`ObjectScorer` rows (relation rows already summed per partition
    by :func:`soads.streaming.combine_relations`, or not) -> :class:`BatchUpdates`, in one Spark
    job; the relation rows are summed by (a, b) here."""
    from soads import streaming

    got = updates.select(S.KIND, S.OID, S.A, S.B, S.FREQ, S.SUPPORT, S.READ_POINT,
                         streaming.TIME_US, S.SOURCE, S.SEQUENCE, streaming.LAST_US,
                         *SCORE_COLUMNS).toArrow().to_pydict()
    sums: dict = {}
    late, objects = [], []
    for kind, oid, a, b, f, n, rp, t, src, seq, last, sc, raw, pat, rid in zip(*got.values()):
        if kind == streaming.KIND_RELATION:
            acc = sums.setdefault((a, b), [0, 0])
            acc[0] += f
            acc[1] += n
        elif kind == streaming.KIND_LATE:
            late.append((oid, src, rp, t))
        else:
            objects.append((oid, seq, last, sc, raw, pat, rid))
    relations = [(a, b, f, n) for (a, b), (f, n) in sorted(sums.items())]
    return BatchUpdates(relations, late, objects)


# -- the Anomaly Evaluator, on the executors -------------------------------------------------

SCORE_COLUMNS = (S.SCORE, S.RAW, S.PATTERN, S.RUN_ID)


def scored_struct():
    """:func:`soads.streaming.update_struct` plus score, raw, pattern (array<string>) and
    run_id: set on object rows by :class:`ObjectScorer`, null elsewhere."""
    from pyspark.sql import types as T

    from soads import streaming

    return T.StructType(list(streaming.update_struct().fields) + [
        T.StructField(S.SCORE, T.DoubleType(), True),
        T.StructField(S.RAW, T.DoubleType(), True),
        T.StructField(S.PATTERN, T.ArrayType(T.StringType(), True), True),
        T.StructField(S.RUN_ID, T.StringType(), True),
    ])


_WORKER_CACHES: dict = {}  # (db_url, maximal_only) -> PatternCache, per Python worker process


def score_objects(objects: Sequence[tuple], cache: "PatternCache", scoring,
                  refresh: bool = True) -> list[tuple]:
    """``(oid, sequence, last_us)`` -> ``(oid, sequence, last_us, score, raw, pattern, run_id)``
    against the newest mining run (score fields None before the first run). ``refresh=False``
    keeps the run the cache last read."""
    run_id, pats = cache.newest() if refresh else (cache.run_id, cache.patterns)
    if run_id is None or not objects:
        return [(*o, None, None, None, None) for o in objects]
    return [(oid, seq, last, sc, raw, pats[k] if k >= 0 else None, run_id)
            for (oid, seq, last), (sc, raw, k) in zip(objects, cache.score(
                [o[1] for o in objects], scoring))]


@dataclass(frozen=True)
class ObjectScorer:
    """``mapInArrow`` stage after the state step: the Anomaly Evaluator on the executors.

    Each updated object's sequence is scored against the newest mining run (read once per task,
    so a new run is picked up at the next micro-batch without a restart). The scorer and its
    per-sequence cache (:class:`PatternCache`) live in the Python worker process and outlive the
    task (Spark reuses workers), so patterns are re-read only when a newer run appears. Scoring
    here rather than in the driver's transaction runs it in parallel over the partitions, and
    the driver's part of a micro-batch (which holds up the next one) shrinks to the writes.
    Replays are harmless: a batch already in the ledger is skipped whatever its scores are.

    Parameters
    ----------
    db_url : str
        Where the PATTERN TABLE is (the executors read it).
    scoring : soads.config.ScoringConf
    """

    db_url: str
    scoring: object

    def __call__(self, batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        from soads import streaming

        key = (self.db_url, self.scoring.maximal_only)
        cache = _WORKER_CACHES.get(key)
        if cache is None:
            cache = _WORKER_CACHES[key] = PatternCache(tables.engine(self.db_url),
                                                       self.scoring.maximal_only)
        schema = _arrow_schema(scored_struct())
        fresh = True
        for b in batches:
            is_obj = pc.equal(b.column(S.KIND), streaming.KIND_OBJECT).to_pylist()
            rows = [i for i, x in enumerate(is_obj) if x]
            scores = [None] * b.num_rows
            if rows:
                if fresh:
                    cache.newest()  # once per task: this micro-batch's newest run
                    fresh = False
                oids = b.column(S.OID).to_pylist()
                seqs = b.column(S.SEQUENCE).to_pylist()
                for i, got in zip(rows, score_objects(
                        [(oids[i], seqs[i], None) for i in rows], cache, self.scoring,
                        refresh=False)):
                    scores[i] = got[3:]
            extra = [pa.array([x[j] if x else None for x in scores], schema.field(c).type)
                     for j, c in enumerate(SCORE_COLUMNS)]
            yield pa.RecordBatch.from_arrays(b.columns + extra, schema=schema)


def _arrow_schema(struct):
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(struct)


class PatternCache:
    """The newest mining run's patterns, re-read only when a newer run appears (a new run is
    picked up at the next micro-batch, without a restart), and the scores of sequences already
    seen against them.

    Scoring is most of a micro-batch's cost (objects x patterns alignments), yet objects of one
    process walk the same few paths: the alignment score is a pure function of (sequence, run),
    so each distinct sequence is aligned once per run and remembered (at most ``max_cached``
    sequences; the memory is dropped when full or when the run changes).
    """

    def __init__(self, db_url: str | sa.Engine, maximal_only: bool, max_cached: int = 200_000):
        self.db_url, self.maximal_only, self.max_cached = db_url, maximal_only, max_cached
        self.run_id, self.patterns = None, []
        self._scores: dict[tuple, tuple[float, float, int]] = {}

    def newest(self) -> tuple[str | None, list[list[str]]]:
        run = tables.latest_run(self.db_url)
        if run is None:
            return None, []
        if run[S.RUN_ID] != self.run_id:
            self.run_id = run[S.RUN_ID]
            self.patterns = _patterns_of(self.db_url, self.run_id, self.maximal_only)
            self._scores = {}
        return self.run_id, self.patterns

    def score(self, sequences: Sequence[Sequence[str]], scoring) -> list[tuple[float, float, int]]:
        """``(score, raw, best pattern index)`` per sequence against :meth:`newest`'s patterns
        (:func:`soads.scoring.score_batch` on the sequences not seen before)."""
        from soads import scoring as scorer

        keys = [tuple(s) for s in sequences]
        todo = list({k: None for k in keys if k not in self._scores})
        new = {}
        if todo:
            scores, raws, best = scorer.score_batch(todo, self.patterns, scoring)
            new = dict(zip(todo, zip(scores.tolist(), raws.tolist(), best.tolist())))
        out = [new[k] if k in new else self._scores[k] for k in keys]
        if len(self._scores) + len(new) > self.max_cached:
            self._scores = {}
        self._scores.update(new)
        return out


def write_updates(batch: BatchUpdates, batch_id: int, db_url: str | sa.Engine,
                  window_seconds: int) -> bool:
    """One micro-batch into the relational tables, in ONE transaction with its ledger row:
    relation increments (freq, support), late events, the updated objects' object_score rows
    (scored on the executors, :class:`ObjectScorer`) and the alignment_score rows of every
    window an updated object left or entered.

    Returns False when the batch id was already written (nothing changes).
    """
    t0 = time.perf_counter()
    unscored = sum(1 for o in batch.objects if o[6] is None)
    if unscored:
        logger.warning("batch %d: no mining run yet, %d objects are not scored", batch_id,
                       unscored)
    rows = [tables._to_row("object_score", {
        S.OID: oid, S.SCORE: sc, S.RAW: raw, S.PATTERN: pat, S.SURPRISAL: None,
        S.LAST_TIME: _from_micros(last), S.RUN_ID: rid})
        for oid, _, last, sc, raw, pat, rid in batch.objects if rid is not None]
    rel_rows = [{S.A: a, S.B: b, S.FREQ: int(f), S.SUPPORT: int(n)}
                for a, b, f, n in batch.relations]
    late_rows = [{S.OID: oid, S.SOURCE: src, S.READ_POINT: rp, S.EVENT_TIME: _from_micros(t)}
                 for oid, src, rp, t in batch.late]
    eng = tables.engine(db_url) if isinstance(db_url, str) else db_url
    try:
        with eng.begin() as conn:
            if not tables.claim_batch(conn, SINK_EVENTS, batch_id):
                logger.info("batch %d already in the ledger: skipped", batch_id)
                return False
            for i in range(0, len(rel_rows), _CHUNK):
                tables.increment(conn, "relational_dependency", rel_rows[i:i + _CHUNK],
                                 (S.FREQ, S.SUPPORT))
            for i in range(0, len(late_rows), _CHUNK):
                _upsert_late(conn, late_rows[i:i + _CHUNK])
            t1 = time.perf_counter()
            _write_scores(conn, rows, _old_scores(conn, [r[S.OID] for r in rows]),
                          window_seconds)
    finally:
        if isinstance(db_url, str):
            eng.dispose()
    if late_rows:
        logger.warning("batch %d: %d late events (stored, no relation)", batch_id, len(late_rows))
    logger.info("batch %d: %d relations updated, %d objects scored (runs %s); %.2f s, of which "
                "scores and windows %.2f s", batch_id, len(rel_rows), len(rows),
                ",".join(sorted({r[S.RUN_ID] for r in rows})) or "none",
                time.perf_counter() - t0, time.perf_counter() - t1)
    return True


def _old_scores(conn, oids: list[str]) -> dict[str, tuple]:
    """``{oid: (score, last_time, run_id)}`` stored for ``oids``: what the batch replaces."""
    t = tables.TABLE["object_score"]
    out = {}
    for i in range(0, len(oids), _CHUNK):
        for oid, score, last, rid in conn.execute(
                sa.select(t.c[S.OID], t.c[S.SCORE], t.c[S.LAST_TIME], t.c[S.RUN_ID]).where(
                    t.c[S.OID].in_(oids[i:i + _CHUNK]))):
            if score is not None and last is not None and rid is not None:
                out[oid] = (score, last, rid)
    return out


def _write_scores(conn, rows: list[dict], old: dict, window_seconds: int) -> None:
    """Upsert object_score rows and update the alignment_score rows of the windows they
    entered or left (inside the caller's transaction).

    Incremental: each window's (mean, n) moves by the replaced and the new scores of this
    batch's objects, O(batch) instead of re-reading every score of a window that fills all
    hour (which made a micro-batch's transaction grow with the window). Counts stay exact; the
    mean equals a recomputation up to float rounding.
    """
    if not rows:
        return
    a = tables.TABLE["alignment_score"]
    delta: dict[tuple, list] = {}
    for r in rows:
        before = old.get(r[S.OID])
        if before is not None:
            d = delta.setdefault((window_start(before[1], window_seconds), before[2]), [0.0, 0])
            d[0] -= before[0]
            d[1] -= 1
        d = delta.setdefault((window_start(r[S.LAST_TIME], window_seconds), r[S.RUN_ID]),
                             [0.0, 0])
        d[0] += r[S.SCORE]
        d[1] += 1
    for i in range(0, len(rows), _CHUNK):
        tables.upsert(conn, "object_score", rows[i:i + _CHUNK])
    width = dt.timedelta(seconds=int(window_seconds))
    keys = sorted(delta)
    current = {}
    for start, rid in keys:
        got = conn.execute(sa.select(a.c[S.MEAN_SCORE], a.c[S.N_OBJECTS]).where(
            a.c[S.WINDOW_START] == start, a.c[S.RUN_ID] == rid)).first()
        current[(start, rid)] = (got[0] * got[1], got[1]) if got else (0.0, 0)
    for start, rid in keys:
        total, n = current[(start, rid)]
        total, n = total + delta[(start, rid)][0], n + delta[(start, rid)][1]
        if n > 0:
            tables.upsert(conn, "alignment_score", [{
                S.WINDOW_START: start, S.WINDOW_END: start + width,
                S.MEAN_SCORE: max(total, 0.0) / n, S.N_OBJECTS: int(n), S.RUN_ID: rid}])
        else:
            conn.execute(a.delete().where(a.c[S.WINDOW_START] == start, a.c[S.RUN_ID] == rid))


def updates_writer(db_url: str, window_seconds: int):
    """``foreachBatch`` writer of :class:`ObjectScorer` rows (:func:`collect_updates`, then
    :func:`write_updates`)."""
    eng = tables.engine(db_url)  # kept for the query's life: a MySQL connect costs ~50 ms

    def write(batch_df, batch_id):
        # always evaluated, even for a batch already in the ledger: the state step of a
        # micro-batch commits its state only when the batch's rows are computed
        t0 = time.perf_counter()
        batch = collect_updates(batch_df)
        logger.info("batch %d: parse, store, state step and scores %.2f s", batch_id,
                    time.perf_counter() - t0)
        write_updates(batch, batch_id, eng, window_seconds)

    return write
