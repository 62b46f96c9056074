"""Relational sink of the event job (:mod:`soads.stream`): one micro-batch's relation increments,
late events, object scores, window scores and anomaly-rate increments in ONE transaction with
its ``(sink, batch_id)`` ledger row (table ``sink_batch``; DESIGN.md "Streaming guarantees").

A batch id already in the ledger is skipped, so a replayed batch changes nothing. Relation
counts and anomaly-rate counts are increments and go only through the ledger. The rows come
from the stream's state step and Anomaly Evaluator (:mod:`soads.stream.state`,
:mod:`soads.stream.score_stage`), read here by the column names and row kinds of
:mod:`soads.schema`. The event log itself is written by the job's parse stage on the executors
(:mod:`soads.stream.parse_stage`).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import sqlalchemy as sa

from soads import schema as S
from soads.detect import runs
from soads.storage import event_log, hbase, tables

logger = logging.getLogger(__name__)

SINK_EVENTS = "events"  # relations, late events and scores of a micro-batch: one ledger row
LATE_TABLE = "late_event"
_CHUNK = 1000

LATE_EVENT = tables.TABLE[LATE_TABLE]  # soads.stream.state's late/out-of-order policy


def _from_micros(us: int) -> dt.datetime:
    """Naive UTC datetime (the tables store naive UTC)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def prepare(db_url: str, location: str) -> None:
    """Create the relational tables (and the event log tables on HBase) when missing."""
    eng = tables.engine(db_url)
    try:
        tables.create_tables(eng)
    finally:
        eng.dispose()
    if event_log.is_hbase(location):
        hbase.ensure_table(location, hbase.EVENT_TABLE)
        hbase.ensure_table(location, hbase.QUARANTINE_TABLE)


# -- relations, late events, scores: one transaction per micro-batch -------------------------


def _execute_many(conn, stmt, rows: Sequence[dict]) -> None:
    """``conn.execute(stmt, rows)`` for the big upserts of a micro-batch. On MySQL the statement
    is compiled once for the rows' columns and handed to the driver with the rows as they are:
    SQLAlchemy's per-row parameter processing was a sixth of a sustained micro-batch's
    transaction (~24,000 rows), and for these values (str, float, int, bool, None, naive
    datetime) it hands pymysql what pymysql encodes alike. SQLite keeps the processing (its
    datetimes are SQLAlchemy's text)."""
    rows = list(rows)
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.execute(stmt, rows)
        return
    keys = list(rows[0])
    compiled = stmt.compile(dialect=conn.dialect, column_keys=keys)
    if compiled.positional:
        order = compiled.positiontup
        conn.exec_driver_sql(compiled.string, [tuple(r[k] for k in order) for r in rows])
    else:
        conn.exec_driver_sql(compiled.string, rows)


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
    objects : list of (oid, sequence, last_us, score, raw, pattern, run_id, anomaly,
        is_anomaly, explanation, model_run_id, closed), scored on the executors
        (:class:`soads.stream.score_stage.ObjectScorer`); run_id None = no mining run yet, no
        alignment score; model_run_id None = no model run of the context detector yet, no
        verdict; closed = the object's final row (the state evicted it)
    """

    relations: list
    late: list
    objects: list


def collect_updates(updates) -> BatchUpdates:
    """A micro-batch of scored update rows (:func:`soads.stream.score_stage.scored_struct`:
    relation rows already summed per partition by :func:`soads.stream.state.combine_relations`,
    or not) -> :class:`BatchUpdates`, in one Spark job; the relation rows are summed by (a, b)
    here."""
    got = updates.select(S.KIND, S.OID, S.A, S.B, S.FREQ, S.SUPPORT, S.READ_POINT,
                         S.TIME_US, S.SOURCE, S.SEQUENCE, S.LAST_US, *S.SCORED_COLUMNS,
                         *S.VERDICT_COLUMNS, S.CLOSED).toArrow().to_pydict()
    sums: dict = {}
    late, objects = [], []
    for kind, oid, a, b, f, n, rp, t, src, seq, last, *scored in zip(*got.values()):
        if kind == S.KIND_RELATION:
            acc = sums.setdefault((a, b), [0, 0])
            acc[0] += f
            acc[1] += n
        elif kind == S.KIND_LATE:
            late.append((oid, src, rp, t))
        else:
            objects.append((oid, seq, last, *scored[:-1], bool(scored[-1])))
    relations = [(a, b, f, n) for (a, b), (f, n) in sorted(sums.items())]
    return BatchUpdates(relations, late, objects)


def write_updates(batch: BatchUpdates, batch_id: int, db_url: str | sa.Engine,
                  window_seconds: int) -> bool:
    """One micro-batch into the relational tables, in ONE transaction with its ledger row:
    relation increments (freq, support), late events, the updated objects' object_score rows
    (scored on the executors, :class:`soads.stream.score_stage.ObjectScorer`) and the
    alignment_score rows of every window an updated object left or entered, and the
    anomaly_rate increments of the finished objects (:func:`rate_increments`).

    A live object's row replaces its object_score row (alignment score and verdict); an
    evicted object's final (closed) row replaces only the verdict columns (its END step now
    counts; its alignment score, which does not depend on the end, stays with the run it was
    made against). An object without a mining run and without a model run writes no row.

    Returns False when the batch id was already written (nothing changes).
    """
    t0 = time.perf_counter()
    live = [o for o in batch.objects if not o[11]]
    final = [o for o in batch.objects if o[11] and o[10] is not None]
    unscored = sum(1 for o in live if o[6] is None)
    unjudged = sum(1 for o in batch.objects if o[10] is None)
    if unscored or unjudged:
        logger.warning("batch %d: %d objects without a mining run (no alignment score), %d "
                       "without a model run (no verdict)", batch_id, unscored, unjudged)
    # the object_score columns as tables._to_row writes them (pattern as JSON text; the
    # explanation is JSON text already), built directly: ~13,000 rows per sustained micro-batch
    rows = [{S.OID: oid, S.SCORE: sc, S.RAW: raw,
             S.PATTERN: None if pat is None else json.dumps(list(pat)), S.SURPRISAL: None,
             S.LAST_TIME: _from_micros(last), S.RUN_ID: rid, S.ANOMALY: anomaly,
             S.IS_ANOMALY: flagged, S.EXPLANATION: expl, S.MODEL_RUN_ID: mrid,
             S.BATCH_ID: int(batch_id)}
            for oid, _, last, sc, raw, pat, rid, anomaly, flagged, expl, mrid, _ in live
            if rid is not None or mrid is not None]
    verdicts = [{S.OID: oid, S.LAST_TIME: _from_micros(last), S.ANOMALY: anomaly,
                 S.IS_ANOMALY: flagged, S.EXPLANATION: expl, S.MODEL_RUN_ID: mrid,
                 S.BATCH_ID: int(batch_id)}
                for oid, _, last, *_s, anomaly, flagged, expl, mrid, _ in final]
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
            for i in range(0, len(verdicts), _CHUNK):
                _upsert_verdicts(conn, verdicts[i:i + _CHUNK])
            rates = rate_increments(final, window_seconds)
            _increment_rates(conn, rates)
    finally:
        if isinstance(db_url, str):
            eng.dispose()
    if late_rows:
        logger.warning("batch %d: %d late events (stored, no relation)", batch_id, len(late_rows))
    logger.info("batch %d: %d relations updated, %d objects scored (runs %s; model runs %s), "
                "%d finished (%d anomaly_rate rows); %.2f s, of which scores and windows %.2f s",
                batch_id, len(rel_rows), len(rows),
                ",".join(sorted({r[S.RUN_ID] for r in rows if r[S.RUN_ID]})) or "none",
                ",".join(sorted({o[10] for o in batch.objects if o[10]})) or "none",
                len(verdicts), len(rates), time.perf_counter() - t0, time.perf_counter() - t1)
    return True


def rate_increments(final: Sequence[tuple], window_seconds: int) -> list[dict]:
    """anomaly_rate increments of a micro-batch's finished objects: the batch's rule
    (:func:`soads.detect.runs.anomaly_rate`: the window of the last read, seen at every distinct
    read point, flagged only at the worst step's) over the final (closed) object rows, per
    model run of the row; rate = flagged / n_objects of the increment.

    An object counts once, when the state evicts it: its final verdict is the one a batch
    recomputation gives it, while a live verdict may still change (its END step is not judged).
    A final row without a model run (no verdict) counts nowhere.

    >>> expl = '{"read_point": "B", "kind": "control"}'
    >>> [(r[S.READ_POINT], r[S.N_OBJECTS], r[S.FLAGGED]) for r in rate_increments(
    ...     [("o", ["A", "B"], 7, None, None, None, None, 9.0, True, expl, "ctx", True),
    ...      ("p", ["A"], 8, None, None, None, None, None, None, None, None, True)], 3600)]
    [('A', 1, 0), ('B', 1, 1)]
    """
    per_run: dict = {}
    for oid, seq, last, _sc, _raw, _pat, _rid, _anomaly, flagged, expl, mrid, closed in final:
        if not closed or mrid is None:
            continue
        per_run.setdefault(mrid, []).append(
            (list(seq or ()), None if last is None else int(last), bool(flagged),
             None if expl is None else json.loads(expl)))
    width = int(window_seconds) * 1_000_000
    out = []
    for mrid in sorted(per_run):
        got = runs.anomaly_rate(per_run[mrid], window_seconds)
        for (w, rp), (n, k) in sorted(got.items()):
            out.append({S.WINDOW_START: _from_micros(w), S.WINDOW_END: _from_micros(w + width),
                        S.READ_POINT: rp, S.N_OBJECTS: int(n), S.FLAGGED: int(k),
                        S.RATE: k / n, S.MODEL_RUN_ID: mrid, S.WRITER: S.WRITER_STREAM})
    return out


def _increment_rates(conn, rows: list[dict]) -> None:
    """Add :func:`rate_increments` to anomaly_rate inside the caller's (ledger) transaction:
    the counts are incremented in the database (as the relation counts are), then each touched
    row's rate is set from its new counts."""
    if not rows:
        return
    for i in range(0, len(rows), _CHUNK):
        tables.increment(conn, "anomaly_rate", rows[i:i + _CHUNK], (S.N_OBJECTS, S.FLAGGED))
    t = tables.TABLE["anomaly_rate"]
    touched = {(r[S.WINDOW_START], r[S.MODEL_RUN_ID]): set() for r in rows}
    for r in rows:
        touched[(r[S.WINDOW_START], r[S.MODEL_RUN_ID])].add(r[S.READ_POINT])
    new = []
    for (start, mrid), rps in sorted(touched.items()):
        for rp, n, k in conn.execute(
                sa.select(t.c[S.READ_POINT], t.c[S.N_OBJECTS], t.c[S.FLAGGED]).where(
                    t.c[S.WINDOW_START] == start, t.c[S.MODEL_RUN_ID] == mrid,
                    t.c[S.WRITER] == S.WRITER_STREAM)):
            if rp in rps:
                new.append({"_start": start, "_rp": rp, "_run": mrid, "_rate": k / n})
    conn.execute(t.update().where(
        t.c[S.WINDOW_START] == sa.bindparam("_start"), t.c[S.READ_POINT] == sa.bindparam("_rp"),
        t.c[S.MODEL_RUN_ID] == sa.bindparam("_run"), t.c[S.WRITER] == S.WRITER_STREAM
    ).values({S.RATE: sa.bindparam("_rate")}),
        new)


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


def _upsert_verdicts(conn, rows: Sequence[dict]) -> None:
    """Set the verdict columns (:data:`soads.schema.VERDICT_COLUMNS`) and the batch id of
    object_score rows, inserting a row (oid, last_time and the verdict; no alignment score)
    where there is none; the other columns of an existing row stay."""
    t = tables.TABLE["object_score"]
    cols = S.VERDICT_COLUMNS + (S.BATCH_ID,)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        stmt = insert(t)
        stmt = stmt.on_conflict_do_update(index_elements=[S.OID], set_={
            c: stmt.excluded[c] for c in cols})
    else:
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(t)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in cols})
    _execute_many(conn, stmt, rows)


def _write_scores(conn, rows: list[dict], old: dict, window_seconds: int) -> None:
    """Upsert object_score rows and update the alignment_score rows of the windows they
    entered or left (inside the caller's transaction); a row without an alignment score
    (no mining run yet) enters no window.

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
        if r[S.SCORE] is None or r[S.RUN_ID] is None:
            continue
        d = delta.setdefault((window_start(r[S.LAST_TIME], window_seconds), r[S.RUN_ID]),
                             [0.0, 0])
        d[0] += r[S.SCORE]
        d[1] += 1
    t = tables.TABLE["object_score"]
    if conn.dialect.name == "sqlite":
        for i in range(0, len(rows), _CHUNK):
            tables.upsert(conn, "object_score", rows[i:i + _CHUNK])
    else:
        # tables.upsert's statement, without SQLAlchemy's per-row processing (_execute_many)
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(t)
        stmt = stmt.on_duplicate_key_update({
            c: stmt.inserted[c] for c, _ in S.TABLES["object_score"]
            if c not in S.PRIMARY_KEYS["object_score"]})
        for i in range(0, len(rows), _CHUNK):
            _execute_many(conn, stmt, rows[i:i + _CHUNK])
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
    """``foreachBatch`` writer of the scored update rows
    (:func:`soads.stream.score_stage.scored_struct`): :func:`collect_updates`, then
    :func:`write_updates`."""
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
