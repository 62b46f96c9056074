"""The read side: every read the CLI and the benchmarks make of what the jobs wrote.

No pyspark and no torch (a test imports this module in a fresh interpreter and checks), so a
command that only reads starts in a fraction of a second. The statements are SQLAlchemy
expressions over the table definitions of :mod:`soads.storage.tables`: values travel as bound
parameters, never as SQL text.

``db`` is a SQLAlchemy URL (``sqlite:///soads-data/soads.db``, ``mysql+pymysql://...``) or an
engine the caller keeps (connecting to MySQL costs ~50 ms). Rows are dicts keyed by the column
names of :mod:`soads.schema`, JSON columns decoded, in a stated order that does not depend on
the database's row order. A table nothing has written yet reads as no rows (a SQLite file that
does not exist is not created).

Reads
-----
=========================== ===============================================================
:func:`latest_run`          the newest mining run (``mining_run``)
:func:`pattern_rows`        a run's PATTERN TABLE rows, by pattern_id
:func:`patterns_in_use`     ``(run, patterns)`` the scorer uses: the newest run's patterns
:func:`object_scores`       ``object_score``: most anomalous (lowest score) first
:func:`alignment_windows`   ALIGNMENT SCORE TABLE: by window_start
:func:`late_events`         ``late_event`` (the stream's late policy): newest event first
:func:`relations`           RELATIONAL DEPENDENCY TABLE: by (a, b)
:func:`newest_detector_run` the newest model run of the context detector (``detector_run``)
:func:`detector_run`        one model run by id
:func:`detector_model`      a model run's counts -> the context detector (``detector_count``)
:func:`anomaly_rates`       ``anomaly_rate``: by window, then read point
:func:`sensor_anomalies`    SENSOR ANOMALY TABLE: newest window first
:func:`sensor_quarantine`   readings the sensor job quarantined: newest reading first
:func:`event_quarantine`    EPCIS records the event job / ingest quarantined (Parquet | HBase)
:func:`topic_quarantine`    the event job's quarantine topic (Kafka)
:func:`verdicts_since`      object_score rows the event job wrote after a micro-batch id
:func:`newest_batches`      the ledger's newest micro-batch per sink (id, commit time)
:func:`last_batch_before`   the ledger's newest micro-batch of a sink committed before a time
:func:`sensor_drifts`       sensor_drift rows: newest window first
:func:`alerts`              ``alert``: newest change first
:func:`silences`            ``silence``: newest start first
:func:`alert_notifications` ``alert_notification`` (the outbox): oldest first
:func:`alert_actions`       ``alert_action``: oldest first
:func:`alert_cursors`       how far the alert process has read each source
:func:`alert_groups`        ``alert_group``: each group's last notification
:func:`stream_offsets`      the Kafka offsets a streaming query's checkpoint has committed
:func:`topic_end_offsets`   a Kafka topic's end offsets per partition
=========================== ===============================================================
"""
from __future__ import annotations

import datetime as dt
import heapq
import json
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import sqlalchemy as sa

from soads import schema as S
from soads.storage import tables

STORED_AT = "stored_at"
"""Key of :func:`event_quarantine` rows: when the record was stored (naive UTC), as the backend
knows it (HBase cell time; Parquet file time). The quarantine table itself has no time column."""


# -- relational tables ----------------------------------------------------------------------


def _missing_sqlite(db) -> bool:
    """A SQLite URL whose file does not exist (reading must not create it)."""
    if not (isinstance(db, str) and db.startswith("sqlite:///")):
        return False
    path = db[len("sqlite:///"):]
    return path not in ("", ":memory:") and not os.path.exists(path)


@contextmanager
def _connect(db: str | sa.Engine) -> Iterator[sa.Connection]:
    eng = sa.create_engine(db) if isinstance(db, str) else db
    try:
        with eng.connect() as conn:
            yield conn
    finally:
        if isinstance(db, str):
            eng.dispose()


def _rows(db, name: str, where: Sequence = (), order_by: Sequence = (),
          limit: int | None = None) -> list[dict]:
    if _missing_sqlite(db):
        return []
    t = tables.TABLE[name]
    stmt = sa.select(t)
    for clause in where:
        stmt = stmt.where(clause)
    stmt = stmt.order_by(*order_by)
    if limit is not None:
        stmt = stmt.limit(limit)
    with _connect(db) as conn:
        if not sa.inspect(conn).has_table(name):  # nothing written there yet
            return []
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    json_cols = [c for c, kind in S.TABLES[name] if kind == "json"]
    for r in rows:
        for c in json_cols:
            if r.get(c) is not None:
                r[c] = json.loads(r[c])
    return rows


def latest_run(db) -> dict | None:
    """The newest mining run (by created_at, then run_id), or None before the first.

    Returns
    -------
    dict: run_id, algorithm, minsup, max_length, n_sequences, n_patterns, seconds, created_at
    """
    t = tables.TABLE["mining_run"]
    rows = _rows(db, "mining_run", order_by=[t.c[S.CREATED_AT].desc(), t.c[S.RUN_ID].desc()],
                 limit=1)
    return rows[0] if rows else None


def pattern_rows(db, run_id: str) -> list[dict]:
    """The PATTERN TABLE rows of run ``run_id`` by pattern_id, which the miner assigns in the
    order support desc, length desc, pattern (:func:`soads.pipeline.mine`).

    Returns
    -------
    list of dict: run_id, pattern_id, pattern (list of read points), support, length, maximal
    """
    t = tables.TABLE["pattern"]
    return _rows(db, "pattern", [t.c[S.RUN_ID] == run_id], [t.c[S.PATTERN_ID]])


def patterns_in_use(db, maximal_only: bool = False, run_id: str | None = None
                    ) -> tuple[dict | None, list[list[str]]]:
    """``(run, patterns)``: the run (``run_id``, default the newest) and its patterns as read
    point lists in :func:`pattern_rows` order, maximal ones only if asked; ``(None, [])``
    before the first mining run."""
    if run_id is None:
        run = latest_run(db)
    else:
        t = tables.TABLE["mining_run"]
        found = _rows(db, "mining_run", [t.c[S.RUN_ID] == run_id])
        run = found[0] if found else None
    if run is None:
        return None, []
    return run, [list(r[S.PATTERN]) for r in pattern_rows(db, run[S.RUN_ID])
                 if r[S.MAXIMAL] or not maximal_only]


def object_scores(db, run_id: str | None = None, limit: int | None = None) -> list[dict]:
    """``object_score`` rows, most anomalous first (score ascending, then oid).

    Returns
    -------
    list of dict: oid, score, raw, pattern, surprisal, last_time, run_id, anomaly,
    is_anomaly, explanation (dict or None), model_run_id
    """
    t = tables.TABLE["object_score"]
    where = [] if run_id is None else [t.c[S.RUN_ID] == run_id]
    return _rows(db, "object_score", where, [t.c[S.SCORE].is_(None), t.c[S.SCORE], t.c[S.OID]],
                 limit)


def _newest_windows(db, name: str, n: int, where: Sequence) -> list:
    """The clause keeping table ``name`` to its ``n`` newest window_start values."""
    t = tables.TABLE[name]
    stmt = sa.select(t.c[S.WINDOW_START]).distinct()
    for clause in where:
        stmt = stmt.where(clause)
    stmt = stmt.order_by(t.c[S.WINDOW_START].desc()).limit(int(n))
    with _connect(db) as conn:
        if not sa.inspect(conn).has_table(name):
            return []
        starts = [r[0] for r in conn.execute(stmt)]
    return [t.c[S.WINDOW_START] >= min(starts)] if starts else []


def alignment_windows(db, run_id: str | None = None,
                      newest_windows: int | None = None) -> list[dict]:
    """ALIGNMENT SCORE TABLE rows by (window_start, run_id); ``newest_windows`` keeps to that
    many newest windows.

    Returns
    -------
    list of dict: window_start, window_end, mean_score, n_objects, run_id
    """
    t = tables.TABLE["alignment_score"]
    where = [] if run_id is None else [t.c[S.RUN_ID] == run_id]
    if newest_windows is not None and not _missing_sqlite(db):
        where += _newest_windows(db, "alignment_score", newest_windows, where)
    return _rows(db, "alignment_score", where, [t.c[S.WINDOW_START], t.c[S.RUN_ID]])


def late_events(db, limit: int | None = None) -> list[dict]:
    """``late_event`` rows, newest event time first (then oid, source).

    Returns
    -------
    list of dict: oid, source, read_point, event_time
    """
    t = tables.TABLE["late_event"]
    return _rows(db, "late_event", (), [t.c[S.EVENT_TIME].desc(), t.c[S.OID], t.c[S.SOURCE]],
                 limit)


def relations(db) -> list[dict]:
    """RELATIONAL DEPENDENCY TABLE rows by (a, b).

    Returns
    -------
    list of dict: a, b, freq, support
    """
    t = tables.TABLE["relational_dependency"]
    return _rows(db, "relational_dependency", (), [t.c[S.A], t.c[S.B]])


def newest_detector_run(db) -> dict | None:
    """The newest model run of the context detector (by created_at, then run_id), or None
    before the first.

    Returns
    -------
    dict: run_id, created_at, n_objects, n_rows, skipped (list), conf (dict), seconds, horizon
    """
    t = tables.TABLE["detector_run"]
    rows = _rows(db, "detector_run", order_by=[t.c[S.CREATED_AT].desc(), t.c[S.RUN_ID].desc()],
                 limit=1)
    return rows[0] if rows else None


def detector_run(db, run_id: str) -> dict | None:
    """The model run ``run_id`` (as :func:`newest_detector_run`), or None when there is none."""
    t = tables.TABLE["detector_run"]
    rows = _rows(db, "detector_run", [t.c[S.RUN_ID] == run_id])
    return rows[0] if rows else None


def detector_model(db, run_id: str, conf=None, missed_read_rate: float | None = None):
    """The context detector of model run ``run_id``, built from its stored counts.

    ``conf`` (a :class:`soads.config.DetectorConf`) gives the scoring settings (pseudo_count,
    threshold, ...) and ``missed_read_rate`` the chance of a missed read; by default those the
    run was fitted with. The counts and the attributes left out are the run's own.

    Raises
    ------
    LookupError
        When there is no such model run.
    """
    from soads.detect import context, runs

    run = detector_run(db, run_id)
    if run is None:
        raise LookupError(f"no detector model run {run_id!r} in table detector_run")
    stored_conf, stored_rate = runs.conf_of_run(run[S.CONF])
    t = tables.TABLE["detector_count"]
    records = _rows(db, "detector_count", [t.c[S.RUN_ID] == run_id], [t.c[S.ROW_ID]])
    return context.ContextModel.from_rows(
        runs.rows_of_run(records), conf or stored_conf, tuple(run[S.SKIPPED] or ()),
        stored_rate if missed_read_rate is None else missed_read_rate)


def anomaly_rates(db, model_run_id: str | None = None, writer: str | None = None,
                  newest_windows: int | None = None) -> list[dict]:
    """``anomaly_rate`` rows by (window_start, read_point, model_run_id, writer); ``writer``
    "batch" (``soads score``) or "stream" (the event job) keeps to one job's rows,
    ``newest_windows`` to that many newest windows (of those rows).

    Returns
    -------
    list of dict: window_start, window_end, read_point, n_objects, flagged, rate, model_run_id,
    writer
    """
    t = tables.TABLE["anomaly_rate"]
    where = [] if model_run_id is None else [t.c[S.MODEL_RUN_ID] == model_run_id]
    if writer is not None:
        where.append(t.c[S.WRITER] == writer)
    if newest_windows is not None and not _missing_sqlite(db):
        where += _newest_windows(db, "anomaly_rate", newest_windows, where)
    return _rows(db, "anomaly_rate", where,
                 [t.c[S.WINDOW_START], t.c[S.READ_POINT], t.c[S.MODEL_RUN_ID], t.c[S.WRITER]])


def sensor_anomalies(db, machine_id: str | None = None, anomalies_only: bool = False,
                     limit: int | None = None) -> list[dict]:
    """SENSOR ANOMALY TABLE rows, newest window first (then machine_id).

    Returns
    -------
    list of dict: machine_id, window_end, score, threshold, is_anomaly, model_version
    """
    t = tables.TABLE["sensor_anomaly"]
    where = ([] if machine_id is None else [t.c[S.MACHINE_ID] == machine_id]) + \
        ([t.c[S.IS_ANOMALY].is_(True)] if anomalies_only else [])
    return _rows(db, "sensor_anomaly", where, [t.c[S.WINDOW_END].desc(), t.c[S.MACHINE_ID]],
                 limit)


def sensor_quarantine(db, limit: int | None = None) -> list[dict]:
    """Readings the sensor job quarantined, newest reading time first (readings without a
    readable time last), then source.

    Returns
    -------
    list of dict: source, machine_id, ts, reason, detail
    """
    t = tables.TABLE["sensor_quarantine"]
    return _rows(db, "sensor_quarantine", (), [t.c[S.TS].is_(None), t.c[S.TS].desc(),
                                               t.c[S.SOURCE]], limit)


def sensor_drifts(db, limit: int | None = None) -> list[dict]:
    """``sensor_drift`` rows, newest window first (then model_version).

    Returns
    -------
    list of dict: model_version, window_start, window_end, n_windows, jsd, drifted
    """
    t = tables.TABLE["sensor_drift"]
    return _rows(db, "sensor_drift", (), [t.c[S.WINDOW_END].desc(), t.c[S.MODEL_VERSION]], limit)


# -- what the alert process reads and writes (soads.alerts) ----------------------------------


def verdicts_since(db, batch_id: int, limit: int | None = None) -> list[dict]:
    """object_score rows the event job wrote in a micro-batch after ``batch_id`` (rows a batch
    command wrote have no batch id and never appear), by (batch_id, oid).

    Returns
    -------
    list of dict: the columns of :func:`object_scores` and batch_id
    """
    t = tables.TABLE["object_score"]
    return _rows(db, "object_score", [t.c[S.BATCH_ID] > int(batch_id)],
                 [t.c[S.BATCH_ID], t.c[S.OID]], limit)


def newest_batches(db) -> dict[str, dict]:
    """The newest ledger row of every streaming sink (``sink_batch``): ``{sink: {"batch_id",
    "created_at"}}`` (the commit time, naive UTC); ``{}`` before the first micro-batch. Reads
    one row per sink by the ledger's key (the alert process asks every evaluation)."""
    if _missing_sqlite(db):
        return {}
    t = tables.TABLE["sink_batch"]
    with _connect(db) as conn:
        if not sa.inspect(conn).has_table("sink_batch"):
            return {}
        out = {}
        for (sink,) in conn.execute(sa.select(t.c[S.SINK]).distinct()).all():
            b, c = conn.execute(sa.select(t.c[S.BATCH_ID], t.c[S.CREATED_AT]).where(
                t.c[S.SINK] == sink).order_by(t.c[S.BATCH_ID].desc()).limit(1)).one()
            out[sink] = {S.BATCH_ID: b, S.CREATED_AT: c}
        return out


def last_batch_before(db, sink: str, before: dt.datetime) -> int:
    """The newest micro-batch id of ``sink`` committed before ``before`` (naive UTC) in the
    ledger (``sink_batch``), or -1."""
    if _missing_sqlite(db):
        return -1
    t = tables.TABLE["sink_batch"]
    stmt = sa.select(sa.func.max(t.c[S.BATCH_ID])).where(t.c[S.SINK] == sink,
                                                          t.c[S.CREATED_AT] < before)
    with _connect(db) as conn:
        if not sa.inspect(conn).has_table("sink_batch"):
            return -1
        got = conn.execute(stmt).scalar()
    return -1 if got is None else int(got)


def alerts(db, states: Sequence[str] | None = None, alert_id: str | None = None,
           limit: int | None = None, fingerprints: Sequence[str] | None = None) -> list[dict]:
    """``alert`` rows, newest change first (then alert_id); ``states`` keeps to those states
    (pending, firing, resolved), ``fingerprints`` to those fingerprints.

    Returns
    -------
    list of dict: alert_id, fingerprint, rule, alertname, severity, labels (dict), annotations
    (dict), state, active_at, starts_at, ends_at, updated_at, silenced_by, inhibited_by,
    acked_by, acked_at
    """
    t = tables.TABLE["alert"]
    where = []
    if states is not None:
        where.append(t.c[S.STATE].in_(list(states)))
    if alert_id is not None:
        where.append(t.c[S.ALERT_ID] == alert_id)
    if fingerprints is not None:
        where.append(t.c[S.FINGERPRINT].in_(list(fingerprints)))
    return _rows(db, "alert", where, [t.c[S.UPDATED_AT].desc(), t.c[S.ALERT_ID]], limit)


def silences(db, active_at: dt.datetime | None = None) -> list[dict]:
    """``silence`` rows, newest start first; ``active_at`` (naive UTC) keeps to those in force
    then (starts_at <= active_at < ends_at).

    Returns
    -------
    list of dict: silence_id, matchers (list of str), starts_at, ends_at, created_by, comment,
    created_at
    """
    t = tables.TABLE["silence"]
    where = [] if active_at is None else [t.c[S.STARTS_AT] <= active_at,
                                          t.c[S.ENDS_AT] > active_at]
    return _rows(db, "silence", where, [t.c[S.STARTS_AT].desc(), t.c[S.SILENCE_ID]])


def alert_notifications(db, status: str | None = None, limit: int | None = None,
                        notification_ids: Sequence[str] | None = None) -> list[dict]:
    """``alert_notification`` rows (the outbox), oldest first (then notification_id);
    ``notification_ids`` keeps to those ids.

    Returns
    -------
    list of dict: notification_id, channel, target, group_key, payload (JSON text), status,
    attempts, error, created_at, sent_at
    """
    t = tables.TABLE["alert_notification"]
    where = [] if status is None else [t.c[S.STATUS] == status]
    if notification_ids is not None:
        where.append(t.c[S.NOTIFICATION_ID].in_(list(notification_ids)))
    return _rows(db, "alert_notification", where, [t.c[S.CREATED_AT], t.c[S.NOTIFICATION_ID]],
                 limit)


def alert_actions(db, status: str | None = None, alert_id: str | None = None,
                  limit: int | None = None) -> list[dict]:
    """``alert_action`` rows, oldest first (then action_id).

    Returns
    -------
    list of dict: action_id, alert_id, fingerprint, action_name, action_type, target, channel,
    payload (JSON text), status, attempts, error, created_at, sent_at, acked_by, acked_at
    """
    t = tables.TABLE["alert_action"]
    where = [] if status is None else [t.c[S.STATUS] == status]
    if alert_id is not None:
        where.append(t.c[S.ALERT_ID] == alert_id)
    return _rows(db, "alert_action", where, [t.c[S.CREATED_AT], t.c[S.ACTION_ID]], limit)


def alert_groups(db) -> list[dict]:
    """``alert_group`` rows (the notification log) by group_key.

    Returns
    -------
    list of dict: group_key, firing (list of fingerprints), resolved (list), notified_at
    """
    t = tables.TABLE["alert_group"]
    return _rows(db, "alert_group", (), [t.c[S.GROUP_KEY]])


def alert_cursors(db) -> dict[str, int]:
    """``{source: position}``: how far the alert process has read each source."""
    return {r[S.SOURCE]: r[S.POSITION] for r in _rows(db, "alert_cursor")}


# -- the event quarantine: Parquet files or the HBase table ---------------------------------


def event_quarantine(location: str, limit: int | None = 20) -> list[dict]:
    """The newest quarantine records of the event log at ``location``.

    ``location`` is ``hbase://host:port/prefix`` (table ``<prefix>_quarantine``; each row's
    cell time says when it was stored, and the whole table is scanned to find the newest) or
    a directory holding ``quarantine/`` (Parquet, written by ``soads ingest`` / ``soads demo``
    or by the event job as ``batch-<id>-<partition>.parquet``; a file's modification time says
    when its rows were stored, later rows of a file count as newer). Nothing there yet: ``[]``.

    Returns
    -------
    list of dict, newest first: stored_at (naive UTC), source, reason, detail
    """
    if location.startswith("hbase://"):
        return _hbase_quarantine(location, limit)
    return _parquet_quarantine(location, limit)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)


def _parquet_quarantine(location: str, limit: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    directory = os.path.join(location, "quarantine")
    try:
        names = [n for n in os.listdir(directory)
                 if n.endswith(".parquet") and not n.startswith((".", "_"))]
    except FileNotFoundError:
        return []
    files = sorted(((os.path.getmtime(os.path.join(directory, n)), n) for n in names),
                   reverse=True)
    out: list[dict] = []
    for mtime, name in files:
        table = pq.read_table(os.path.join(directory, name), columns=list(S.QUARANTINE_COLUMNS))
        rows = table.to_pylist()
        for r in reversed(rows):
            out.append({STORED_AT: _utc(mtime), **{c: r.get(c) for c in S.QUARANTINE_COLUMNS}})
            if limit is not None and len(out) >= limit:
                return out
    return out


def _hbase_quarantine(location: str, limit: int | None) -> list[dict]:
    from soads.storage import hbase

    conn = hbase.connect(location)
    try:
        if hbase.QUARANTINE_TABLE.encode() not in conn.tables():
            return []
        qualifiers = {c: f"{hbase.FAMILY.decode()}:{c}".encode() for c in S.QUARANTINE_COLUMNS}
        rows = []
        for key, cells in conn.table(hbase.QUARANTINE_TABLE).scan(include_timestamp=True,
                                                                  batch_size=1000):
            ms = max(ts for _, ts in cells.values())
            rows.append((ms, key, {c: cells[q][0].decode("utf-8") if q in cells else None
                                   for c, q in qualifiers.items()}))
    finally:
        conn.close()
    newest = heapq.nlargest(limit, rows, key=lambda r: (r[0], r[1])) if limit is not None \
        else sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)
    return [{STORED_AT: _utc(ms / 1000.0), **rec} for ms, _, rec in newest]


def topic_quarantine(bootstrap: str, topic: str, limit: int = 20,
                     timeout_s: float = 10.0) -> list[dict]:
    """The newest ``limit`` records of the event job's quarantine topic (value: JSON over
    :data:`soads.schema.QUARANTINE_COLUMNS`; at-least-once, so a record may repeat). A topic
    that does not exist reads as no records.

    Returns
    -------
    list of dict, newest first: stored_at (the record's Kafka timestamp, naive UTC), source,
    reason, detail
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        for tp in tps:  # the last `limit` of every partition holds the newest `limit` overall
            consumer.seek(tp, max(begins[tp], ends[tp] - limit))
        wanted = sum(ends[tp] - max(begins[tp], ends[tp] - limit) for tp in tps)
        records = []
        for msg in consumer:
            records.append(msg)
            if len(records) >= wanted:
                break
    finally:
        consumer.close()
    newest = heapq.nlargest(limit, records, key=lambda m: (m.timestamp, m.partition, m.offset))
    out = []
    for m in newest:
        try:
            value = json.loads(m.value)
        except ValueError:
            value = {S.DETAIL: m.value.decode("utf-8", "replace")}
        out.append({STORED_AT: _utc(m.timestamp / 1000.0),
                    **{c: value.get(c) for c in S.QUARANTINE_COLUMNS}})
    return out



# -- Kafka progress of a streaming job (the alert process's lag and quarantine rules) ---------


def stream_offsets(checkpoint: str) -> dict[tuple[str, int], int]:
    """``{(topic, partition): offset}`` up to which the streaming query with checkpoint
    directory ``checkpoint`` (local files) has committed its micro-batches (Spark's
    ``commits/<id>`` and ``offsets/<id>`` files); ``{}`` before its first commit."""
    commits = os.path.join(checkpoint, "commits")
    try:
        done = [int(f) for f in os.listdir(commits) if f.isdigit()]
    except FileNotFoundError:
        return {}
    if not done:
        return {}
    with open(os.path.join(checkpoint, "offsets", str(max(done)))) as fh:
        lines = fh.read().splitlines()
    out = {}
    for line in lines[2:]:  # v1, the batch's metadata, then one line per source
        try:
            source = json.loads(line)
        except ValueError:
            continue
        if isinstance(source, dict):
            for topic, parts in source.items():
                if isinstance(parts, dict):
                    out.update({(topic, int(p)): int(o) for p, o in parts.items()})
    return out


def topic_end_offsets(bootstrap: str, topic: str, timeout_s: float = 10.0,
                      consumer=None) -> dict[int, int]:
    """``{partition: end offset}`` of a Kafka topic (``{}`` when it does not exist).
    ``consumer``: a kafka-python consumer the caller keeps (making one costs ~0.1 s)."""
    from kafka import KafkaConsumer, TopicPartition

    own = consumer is None
    if own:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 group_id=None, request_timeout_ms=int(timeout_s * 1000) + 1000)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return {}
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
        return {tp.partition: int(o) for tp, o in ends.items()}
    finally:
        if own:
            consumer.close()
