"""EVENT LOG TABLE, embedded default: Parquet (the HBase backend is soads.storage.hbase).

Both backends have the same functions: ``write_events(events, location)``,
``read_events(spark, location)``, ``write_quarantine(quarantine, location)``,
``read_quarantine(spark, location)``. :func:`is_hbase` tells them apart.

The event job writes the Parquet event log from its parse stage on the executors, one file per
micro-batch and Spark partition (:func:`write_stream_files`); on HBase it puts the same records
(:func:`soads.storage.hbase.put_records`).
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

from soads import schema as S

logger = logging.getLogger(__name__)


def is_hbase(location: str) -> bool:
    """Whether an event log location is HBase (``hbase://host:port/prefix``,
    :mod:`soads.storage.hbase`) rather than a directory for Parquet (this module).

    >>> is_hbase("hbase://127.0.0.1:9090/soads"), is_hbase("soads-data")
    (True, False)
    """
    return location.startswith("hbase://")


def _path(location: str, table: str) -> str:
    return os.path.join(location, table)


STREAM_FILE_PREFIX = "batch-"  # the event job's files: batch-<batch id>-<partition>.parquet


class EventLogInUse(ValueError):
    """A batch ingest would replace a Parquet event log that holds the event job's files."""


def stream_file_name(batch_id: int, partition: int) -> str:
    """The file of one micro-batch partition (a replay writes the same name).

    >>> stream_file_name(12, 1)
    'batch-12-00001.parquet'
    """
    return f"{STREAM_FILE_PREFIX}{int(batch_id)}-{int(partition):05d}.parquet"


def stream_files(location: str) -> int:
    """How many event-log and quarantine files under ``location`` the event job wrote."""
    return sum(1 for table in ("event_log", "quarantine") if os.path.isdir(_path(location, table))
               for name in os.listdir(_path(location, table))
               if name.startswith(STREAM_FILE_PREFIX))


def check_replaceable(location: str) -> None:
    """Raise :class:`EventLogInUse` when replacing the log at ``location`` would lose what the
    event job wrote there (the batch ingest overwrites the whole Parquet log; the stream and the
    batch share one ``[storage]`` location)."""
    n = stream_files(location)
    if n:
        raise EventLogInUse(
            f"the event log at {location} holds {n} files the event job wrote: an ingest replaces "
            f"the whole log and would lose them; ingest into another [storage] root, or move "
            f"{_path(location, 'event_log')} away first")


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


def arrow_events(events: Sequence[dict], times):
    """Parser dicts -> an Arrow table of the EVENT LOG TABLE's columns
    (:data:`soads.schema.EVENT_COLUMNS`), ``times`` being their event_time as an Arrow timestamp
    array."""
    import pyarrow as pa

    return pa.table({c: times if c == S.EVENT_TIME else pa.array([e.get(c) for e in events],
                                                                  pa.string())
                     for c in S.EVENT_COLUMNS})


def write_stream_files(location: str, name: str, events, quarantine: Sequence[dict]) -> None:
    """One micro-batch partition of the event job: ``events`` (an Arrow table,
    :func:`arrow_events`) as ``location/event_log/name`` and the ``quarantine`` records (dicts
    of source, reason, detail), when any, as ``location/quarantine/name``.

    A replay of the micro-batch reads the same offsets into the same partitions and so replaces
    the same files; each file is written atomically (a reader never sees half a file).
    """
    import pyarrow as pa

    _write_parquet_file(events, location, "event_log", name)
    if quarantine:
        _write_parquet_file(pa.table({c: pa.array([q.get(c) for q in quarantine], pa.string())
                                      for c in S.QUARANTINE_COLUMNS}),
                            location, "quarantine", name)


def _write_parquet_file(table, root: str, kind: str, name: str) -> None:
    """``root/kind/name``, atomically (a reader never sees half a file; a replay replaces it)."""
    import pyarrow.parquet as pq

    directory = _path(root, kind)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(directory, name))
