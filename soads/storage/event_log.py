"""EVENT LOG TABLE, embedded default: Parquet (the HBase backend is soads.storage.hbase).

Both backends have the same functions: ``write_events(events, location)``,
``read_events(spark, location)``, ``write_quarantine(quarantine, location)``,
``read_quarantine(spark, location)``.
"""
from __future__ import annotations

import logging
import os

from soads import schema as S

logger = logging.getLogger(__name__)


def _path(location: str, table: str) -> str:
    return os.path.join(location, table)


def write_events(events, location: str, mode: str = "overwrite") -> None:
    """Write flat events (``schema.event_struct()`` columns) under ``location/event_log``."""
    events.select(*S.EVENT_COLUMNS).write.mode(mode).parquet(_path(location, "event_log"))


def read_events(spark, location: str):
    """The event log.

    Returns
    -------
    DataFrame
        ``oid, read_point, event_time, action, biz_step, disposition, biz_location, event_type,
        sensor_reports, source``.
    """
    path = _path(location, "event_log")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no event log at {path}: run `soads ingest` or `soads demo` first")
    return spark.read.schema(S.event_struct()).parquet(path)


def write_quarantine(quarantine, location: str, mode: str = "overwrite") -> None:
    """Write quarantine records (source, reason, detail) under ``location/quarantine``."""
    quarantine.select(*S.QUARANTINE_COLUMNS).write.mode(mode).parquet(_path(location, "quarantine"))


def read_quarantine(spark, location: str):
    """Quarantine records.

    Returns
    -------
    DataFrame
        ``source, reason, detail``.
    """
    return spark.read.schema(S.quarantine_struct()).parquet(_path(location, "quarantine"))
