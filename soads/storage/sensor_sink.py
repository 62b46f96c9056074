"""Sensor job sink: scored windows -> SENSOR ANOMALY TABLE, quarantined readings ->
``sensor_quarantine``, both + the ``(sink, batch_id)`` ledger row in ONE transaction (the event
job's exactly-once rule, :mod:`soads.storage.sinks`). It only writes (and reads its ledger): the
sensor job scores a micro-batch first (:func:`soads.sensor.streaming.score_micro_batch`)."""
from __future__ import annotations

import logging
from typing import Sequence

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


def batch_done(db_url: str, batch_id: int) -> bool:
    """Whether the ledger already holds this sink's ``batch_id`` (a cheap check before scoring;
    :func:`soads.storage.tables.claim_batch` inside :func:`write_sensor_anomalies`'s
    transaction is the real guard)."""
    eng = tables.engine(db_url)
    try:
        t = tables.TABLE["sink_batch"]
        with eng.connect() as conn:
            return conn.execute(sa.select(t.c[S.BATCH_ID]).where(
                t.c[S.SINK] == SINK_SENSOR, t.c[S.BATCH_ID] == int(batch_id))).first() is not None
    finally:
        eng.dispose()


def write_sensor_anomalies(rows: Sequence[dict], quarantine: Sequence[dict], batch_id: int,
                           db_url: str) -> bool:
    """Upsert one micro-batch's scored windows and quarantined readings with its ledger row, in
    one transaction.

    Parameters
    ----------
    rows : dicts of the sensor_anomaly columns (machine_id, window_end, score, threshold,
        is_anomaly, model_version; times naive UTC)
    quarantine : dicts of the sensor_quarantine columns (source, machine_id, ts, reason, detail)

    Returns False when the batch id was already written (nothing changes).
    """
    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            if not tables.claim_batch(conn, SINK_SENSOR, batch_id):
                logger.info("batch %d already in the ledger for %s: skipped", batch_id,
                            SINK_SENSOR)
                return False
            for i in range(0, len(rows), _CHUNK):
                tables.upsert(conn, "sensor_anomaly", list(rows[i:i + _CHUNK]))
            for i in range(0, len(quarantine), _CHUNK):
                tables.upsert(conn, "sensor_quarantine", list(quarantine[i:i + _CHUNK]))
    finally:
        eng.dispose()
    return True
