"""Streaming sinks: ``foreachBatch`` writers ``(batch_df, batch_id)``, one per table group.

Exactly-once (DESIGN.md "Streaming guarantees"):

- relational sinks claim ``(sink, batch_id)`` in the ledger (table ``sink_batch``) and write their
  rows in ONE transaction; a batch id already in the ledger is skipped, so a replayed batch
  changes nothing. Relation counts are increments and go only through the ledger.
- the EVENT LOG TABLE is keyed by the event itself: HBase row keys
  (:func:`soads.storage.hbase.row_key`) and, for Parquet, one set of files per batch id that a
  replay replaces. The quarantine topic is at-least-once (Kafka's sink); its messages are keyed
  by source so a consumer can drop a repeat, and a batch in the ledger is not sent again.

Event log backend: ``hbase://host:port/prefix`` -> :mod:`soads.storage.hbase`, anything else is
a directory for Parquet (the one ``if``: :func:`_is_hbase`).
"""
from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import shutil
from typing import Sequence

import sqlalchemy as sa

from soads import schema as S
from soads.storage import tables

logger = logging.getLogger(__name__)

SINK_RELATIONS = "relational_dependency"
SINK_SCORES = "object_score"
SINK_QUARANTINE_TOPIC = "quarantine_topic"
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


# -- event log and quarantine -----------------------------------------------------------------


def _write_parquet_batch(df, root: str, table: str, batch_id: int) -> None:
    """Files ``root/table/batch-<id>-*.parquet``: a replay of the batch replaces them (local
    filesystem: the embedded default)."""
    staging = os.path.join(root, table, f"_staging-{batch_id}")
    df.write.mode("overwrite").parquet(staging)
    for old in glob.glob(os.path.join(root, table, f"batch-{batch_id}-*.parquet")):
        os.remove(old)
    for i, part in enumerate(sorted(glob.glob(os.path.join(staging, "part-*.parquet")))):
        os.replace(part, os.path.join(root, table, f"batch-{batch_id}-{i:05d}.parquet"))
    shutil.rmtree(staging)


def _batch_done(db_url: str, sink: str, batch_id: int) -> bool:
    eng = tables.engine(db_url)
    try:
        t = tables.TABLE["sink_batch"]
        with eng.connect() as conn:
            return conn.execute(sa.select(t.c[S.BATCH_ID]).where(
                t.c[S.SINK] == sink, t.c[S.BATCH_ID] == int(batch_id))).first() is not None
    finally:
        eng.dispose()


def write_quarantine_topic(quarantine, batch_id: int, kafka_bootstrap: str, topic: str,
                           db_url: str) -> None:
    """Quarantine records -> Kafka topic (key = source, value = JSON source, reason, detail),
    once per batch id as far as the ledger can tell (at-least-once after a crash)."""
    from pyspark.sql import functions as F

    if _batch_done(db_url, SINK_QUARANTINE_TOPIC, batch_id):
        return
    (quarantine.select(F.col(S.SOURCE).alias("key"),
                       F.to_json(F.struct(*S.QUARANTINE_COLUMNS)).alias("value"))
     .write.format("kafka").option("kafka.bootstrap.servers", kafka_bootstrap)
     .option("topic", topic).save())
    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            tables.claim_batch(conn, SINK_QUARANTINE_TOPIC, batch_id)
    finally:
        eng.dispose()


def event_log_writer(location: str, db_url: str, kafka_bootstrap: str = "",
                     quarantine_topic: str = ""):
    """``foreachBatch`` writer of parsed documents (:func:`soads.preprocess.parse_documents`
    rows) -> EVENT LOG TABLE + quarantine table (+ quarantine topic when both Kafka arguments
    are given)."""
    from soads import preprocess

    def write(batch_df, batch_id):
        parsed = batch_df.persist()
        try:
            events, quarantine = preprocess.split_parsed(parsed)
            if _is_hbase(location):
                from soads.storage import hbase

                hbase.write_events(events, location)
                hbase.write_quarantine(quarantine, location)
            else:
                _write_parquet_batch(events.select(*S.EVENT_COLUMNS), location, "event_log",
                                     batch_id)
                _write_parquet_batch(quarantine.select(*S.QUARANTINE_COLUMNS), location,
                                     "quarantine", batch_id)
            if kafka_bootstrap and quarantine_topic:
                write_quarantine_topic(quarantine, batch_id, kafka_bootstrap, quarantine_topic,
                                       db_url)
        finally:
            parsed.unpersist()

    return write


# -- relations, late events, scores -----------------------------------------------------------


def _kind(updates, kind: str):
    from pyspark.sql import functions as F

    return updates.filter(F.col(S.KIND) == kind)


def write_relations(updates, batch_id: int, db_url: str) -> bool:
    """Relation increments (freq, support) and late events of one batch of
    :func:`soads.streaming.object_updates` rows, with the ledger, in one transaction.

    Returns False when the batch id was already written (nothing changes).
    """
    from pyspark.sql import functions as F

    from soads import streaming

    rel = (_kind(updates, streaming.KIND_RELATION).groupBy(S.A, S.B)
           .agg(F.sum(S.FREQ).alias(S.FREQ), F.sum(S.SUPPORT).alias(S.SUPPORT)).collect())
    late = _kind(updates, streaming.KIND_LATE).select(
        S.OID, S.SOURCE, S.READ_POINT, F.unix_micros(S.EVENT_TIME).alias(S.EVENT_TIME)).collect()
    rel_rows = [{S.A: r[S.A], S.B: r[S.B], S.FREQ: int(r[S.FREQ]), S.SUPPORT: int(r[S.SUPPORT])}
                for r in rel]
    late_rows = [{S.OID: r[S.OID], S.SOURCE: r[S.SOURCE], S.READ_POINT: r[S.READ_POINT],
                  S.EVENT_TIME: _from_micros(r[S.EVENT_TIME])} for r in late]
    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            if not tables.claim_batch(conn, SINK_RELATIONS, batch_id):
                logger.info("batch %d already in the ledger for %s: skipped", batch_id,
                            SINK_RELATIONS)
                return False
            for i in range(0, len(rel_rows), _CHUNK):
                tables.increment(conn, "relational_dependency", rel_rows[i:i + _CHUNK],
                                 (S.FREQ, S.SUPPORT))
            for i in range(0, len(late_rows), _CHUNK):
                _upsert_late(conn, late_rows[i:i + _CHUNK])
    finally:
        eng.dispose()
    if late_rows:
        logger.warning("batch %d: %d late events (stored, no relation)", batch_id, len(late_rows))
    logger.info("batch %d: %d relations updated", batch_id, len(rel_rows))
    return True


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


def patterns_of_newest_run(db_url: str, maximal_only: bool) -> tuple[str | None, list[list[str]]]:
    """``(run_id, patterns in use)`` of the newest mining run, ``(None, [])`` before any."""
    run = tables.latest_run(db_url)
    if run is None:
        return None, []
    rows = tables.read_table(db_url, "pattern", {S.RUN_ID: run[S.RUN_ID]},
                             order_by=[S.PATTERN_ID])
    return run[S.RUN_ID], [list(r[S.PATTERN]) for r in rows if r[S.MAXIMAL] or not maximal_only]


def window_start(last_time: dt.datetime, window_seconds: int) -> dt.datetime:
    """Start of the epoch-aligned tumbling window holding ``last_time`` (naive UTC).

    >>> window_start(dt.datetime(2024, 3, 4, 10, 59, 59), 3600)
    datetime.datetime(2024, 3, 4, 10, 0)
    """
    us = (last_time - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    w = int(window_seconds) * 1_000_000
    return _from_micros(us // w * w)


def write_scores(updates, batch_id: int, db_url: str, scoring, window_seconds: int) -> bool:
    """Anomaly Evaluator for the objects updated in one batch: score them against the newest
    mining run (re-read every batch), upsert object_score, recompute the alignment_score rows
    of every window an updated object left or entered; ledger in the same transaction.

    Returns False when the batch id was already written or no mining run exists yet.
    """
    from pyspark.sql import functions as F

    from soads import scoring as scorer
    from soads import streaming

    run_id, patterns = patterns_of_newest_run(db_url, scoring.maximal_only)
    objects = _kind(updates, streaming.KIND_OBJECT).select(S.OID, S.SEQUENCE, S.LAST_TIME)
    if run_id is None:
        logger.warning("batch %d: no mining run yet, objects are not scored", batch_id)
        scored = []
    else:
        # oid, score, raw, pattern, last_time (one row per updated object; scored on executors)
        scored = scorer.score_sequences(objects, patterns, scoring).select(
            S.OID, S.SCORE, S.RAW, S.PATTERN, F.unix_micros(S.LAST_TIME).alias(S.LAST_TIME)
        ).collect()
    rows = [tables._to_row("object_score", {
        S.OID: r[S.OID], S.SCORE: r[S.SCORE], S.RAW: r[S.RAW], S.PATTERN: r[S.PATTERN],
        S.SURPRISAL: None, S.LAST_TIME: _from_micros(r[S.LAST_TIME]), S.RUN_ID: run_id,
    }) for r in scored]
    t = tables.TABLE["object_score"]
    a = tables.TABLE["alignment_score"]
    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            if not tables.claim_batch(conn, SINK_SCORES, batch_id):
                logger.info("batch %d already in the ledger for %s: skipped", batch_id,
                            SINK_SCORES)
                return False
            windows = {(window_start(r[S.LAST_TIME], window_seconds), run_id) for r in rows}
            oids = [r[S.OID] for r in rows]
            for i in range(0, len(oids), _CHUNK):
                for old in conn.execute(sa.select(t.c[S.LAST_TIME], t.c[S.RUN_ID]).where(
                        t.c[S.OID].in_(oids[i:i + _CHUNK]))):
                    if old[0] is not None and old[1] is not None:
                        windows.add((window_start(old[0], window_seconds), old[1]))
            for i in range(0, len(rows), _CHUNK):
                tables.upsert(conn, "object_score", rows[i:i + _CHUNK])
            width = dt.timedelta(seconds=int(window_seconds))
            for start, rid in sorted(windows):
                scores = [s for (s,) in conn.execute(sa.select(t.c[S.SCORE]).where(
                    t.c[S.RUN_ID] == rid, t.c[S.LAST_TIME] >= start,
                    t.c[S.LAST_TIME] < start + width))]
                if scores:
                    tables.upsert(conn, "alignment_score", [{
                        S.WINDOW_START: start, S.WINDOW_END: start + width,
                        S.MEAN_SCORE: sum(scores) / len(scores), S.N_OBJECTS: len(scores),
                        S.RUN_ID: rid}])
                else:
                    conn.execute(a.delete().where(a.c[S.WINDOW_START] == start,
                                                  a.c[S.RUN_ID] == rid))
    finally:
        eng.dispose()
    logger.info("batch %d: %d objects scored (run %s)", batch_id, len(rows), run_id)
    return run_id is not None


def updates_writer(db_url: str, scoring, window_seconds: int):
    """``foreachBatch`` writer of :func:`soads.streaming.object_updates` rows: relations and
    late events, then scores (each sink with its own ledger entry)."""

    def write(batch_df, batch_id):
        updates = batch_df.persist()  # the state step runs once per batch, not once per sink
        try:
            write_relations(updates, batch_id, db_url)
            write_scores(updates, batch_id, db_url, scoring, window_seconds)
        finally:
            updates.unpersist()

    return write
