"""Sensor job sink: scored windows -> SENSOR ANOMALY TABLE, quarantined readings ->
``sensor_quarantine``, both + the ``(sink, batch_id)`` ledger row in ONE transaction (the event
job's exactly-once rule, :mod:`soads.storage.sinks`)."""
from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from soads import schema as S
from soads.storage import tables

logger = logging.getLogger(__name__)

SINK_SENSOR = "sensor_anomaly"
_CHUNK = 1000


def prepare(db_url: str) -> None:
    """Create the relational tables when missing."""
    eng = tables.engine(db_url)
    try:
        tables.create_tables(eng)
    finally:
        eng.dispose()


def _from_micros(us: int) -> dt.datetime:
    """Naive UTC datetime (the tables store naive UTC)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def _batch_done(db_url: str, sink: str, batch_id: int) -> bool:
    """Whether the ledger already holds ``(sink, batch_id)`` (a cheap check before scoring;
    :func:`soads.storage.tables.claim_batch` inside the transaction is the real guard)."""
    eng = tables.engine(db_url)
    try:
        t = tables.TABLE["sink_batch"]
        with eng.connect() as conn:
            return conn.execute(sa.select(t.c[S.BATCH_ID]).where(
                t.c[S.SINK] == sink, t.c[S.BATCH_ID] == int(batch_id))).first() is not None
    finally:
        eng.dispose()


def write_sensor_anomalies(windows, batch_id: int, db_url: str, root: str, window: int,
                           n_sensors: int) -> str | None:
    """Score one micro-batch of windows with the registry's CURRENT version (read once, here on
    the driver) and upsert them, and its quarantined readings, with the ledger row in one
    transaction.

    Parameters
    ----------
    windows : DataFrame, :func:`soads.sensor.streaming.machine_windows` rows (``kind`` window
        or quarantine); without a ``kind`` column every row is a window.

    Returns the version used, or None when the batch id was already written (nothing changes).
    """
    from pyspark.sql import functions as F

    from soads.sensor import registry
    from soads.sensor.streaming import KIND_QUARANTINE, KIND_WINDOW, _TS_US, score_windows

    if _batch_done(db_url, SINK_SENSOR, batch_id):
        logger.info("batch %d already in the ledger for %s: skipped", batch_id, SINK_SENSOR)
        return None
    version = registry.current_version(root)
    if version is None:
        raise RuntimeError(f"no promoted sensor model in {root}: run soads sensor train --promote")
    quarantine = []
    if S.KIND in windows.columns:
        quarantine = [
            {S.SOURCE: r[S.SOURCE], S.MACHINE_ID: r[S.MACHINE_ID],
             S.TS: None if r[_TS_US] is None else _from_micros(r[_TS_US]),
             S.REASON: r[S.REASON], S.DETAIL: r[S.DETAIL]}
            for r in windows.where(F.col(S.KIND) == KIND_QUARANTINE).select(
                S.SOURCE, S.MACHINE_ID, _TS_US, S.REASON, S.DETAIL).collect()]
        windows = windows.where(F.col(S.KIND) == KIND_WINDOW)
    windows = windows.select(S.MACHINE_ID, S.WINDOW_END, S.WINDOW)
    scored = score_windows(windows, root, version, window, n_sensors).select(
        S.MACHINE_ID, F.unix_micros(S.WINDOW_END).alias(S.WINDOW_END), S.SCORE, S.THRESHOLD,
        S.IS_ANOMALY, S.MODEL_VERSION).collect()
    rows = [{S.MACHINE_ID: r[S.MACHINE_ID], S.WINDOW_END: _from_micros(r[S.WINDOW_END]),
             S.SCORE: None if r[S.SCORE] != r[S.SCORE] else float(r[S.SCORE]),  # NaN -> NULL
             S.THRESHOLD: float(r[S.THRESHOLD]), S.IS_ANOMALY: bool(r[S.IS_ANOMALY]),
             S.MODEL_VERSION: r[S.MODEL_VERSION]} for r in scored]
    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            if not tables.claim_batch(conn, SINK_SENSOR, batch_id):
                return None
            for i in range(0, len(rows), _CHUNK):
                tables.upsert(conn, "sensor_anomaly", rows[i:i + _CHUNK])
            for i in range(0, len(quarantine), _CHUNK):
                tables.upsert(conn, "sensor_quarantine", quarantine[i:i + _CHUNK])
    finally:
        eng.dispose()
    logger.info("batch %d: %d windows scored with model %s, %d readings quarantined", batch_id,
                len(rows), version, len(quarantine))
    return version


def anomaly_writer(db_url: str, root: str, window: int, n_sensors: int):
    """``foreachBatch`` writer of :func:`soads.sensor.streaming.machine_windows` rows (windows
    and quarantined readings)."""

    def write(batch_df, batch_id):
        windows = batch_df.persist()  # the state step runs once, not once per action
        try:
            write_sensor_anomalies(windows, batch_id, db_url, root, window, n_sensors)
        finally:
            windows.unpersist()

    return write
