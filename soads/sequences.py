"""Sequence Extractor (paper §3.1.2): per object, its read points in event-time order.

Ties in event_time keep arrival order (the position in the source: file line or Kafka offset).
Consecutive reads of the same read point no more than ``dwell_seconds`` apart are one visit:
RFID readers report a tag again and again while it sits in their field (DESIGN.md "Sequence").
The gap is measured between consecutive reads, so a tag that stays in the field is one visit
however long it stays, as long as the reader keeps seeing it.

Each visit also carries the event fields of its first read (``attributes``: bizStep,
disposition, bizLocation, action and a sensor alert, :data:`soads.schema.VISIT_ATTRIBUTES`), so
a detector can tell a wrong field at the right read point.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

import numpy as np

from soads import schema as S

logger = logging.getLogger(__name__)

_ARRIVAL = re.compile(r"^(.*?)[:#/](\d+)$")
EXCEPTION_PATTERN = r'"exception":"([^"]*)"'
"""The ``exception`` values of a ``sensor_reports`` JSON text (the parser writes it compact, so
the pattern is exact): the visit attribute ``sensor_alert``, here and in the event job."""


def arrival_key(source: str) -> tuple[str, int]:
    """Order key of a source identity (``file:line``, ``file#index``, ``topic/partition/offset``).

    Examples
    --------
    >>> sorted(["f.xml:100", "f.xml:9"], key=arrival_key)
    ['f.xml:9', 'f.xml:100']
    """
    m = _ARRIVAL.match(source or "")
    return (m.group(1), int(m.group(2))) if m else (source or "", 0)


def dedup_dwell(read_points: Sequence[str], times: Sequence[float], dwell_seconds: float) -> list[str]:
    """Collapse repeated reads of one read point within ``dwell_seconds`` into one visit.

    ``read_points`` and ``times`` (seconds) are already in event-time order.

    Examples
    --------
    >>> dedup_dwell(["a", "a", "b", "b", "a"], [0, 5, 10, 200, 210], 60)
    ['a', 'b', 'b', 'a']
    """
    out: list[str] = []
    prev_rp, prev_t = None, None
    for rp, t in zip(read_points, times):
        if not (rp == prev_rp and t - prev_t <= dwell_seconds):
            out.append(rp)
        prev_rp, prev_t = rp, t
    return out


def sequence_of(reads: Iterable[tuple[str, float, str]], dwell_seconds: float) -> list[str]:
    """Sequence of one object from unordered ``(read_point, time_seconds, source)`` reads.

    Examples
    --------
    >>> sequence_of([("b", 2.0, "f:3"), ("a", 1.0, "f:1"), ("c", 2.0, "f:2")], 60)
    ['a', 'c', 'b']
    """
    ordered = sorted(reads, key=lambda r: (r[1], arrival_key(r[2])))
    return dedup_dwell([r[0] for r in ordered], [r[1] for r in ordered], dwell_seconds)


def visit_mask(oids: np.ndarray, read_points: np.ndarray, times_us: np.ndarray,
               dwell_seconds: float) -> np.ndarray:
    """Vectorised :func:`dedup_dwell` over many objects sorted by (oid, time, arrival).

    Returns a boolean mask: True where a row starts a new visit.
    """
    n = len(oids)
    keep = np.ones(n, dtype=bool)
    if n > 1:
        same_obj = oids[1:] == oids[:-1]
        same_rp = read_points[1:] == read_points[:-1]
        close = (times_us[1:] - times_us[:-1]) <= int(dwell_seconds * 1_000_000)
        keep[1:] = ~(same_obj & same_rp & close)
    return keep


def attribute_maps(columns, keys: Sequence[str]):
    """One ``map<string, string>`` per row from equally long string columns: row i maps
    ``keys[c]`` to ``columns[c][i]`` where that is not null (a null has no key). Vectorised.

    Parameters
    ----------
    columns : sequence of pyarrow string arrays, one per key.
    keys : the map keys, in the order each map holds them.

    Returns
    -------
    pyarrow.MapArray

    Examples
    --------
    >>> import pyarrow as pa
    >>> attribute_maps([pa.array(["x", None]), pa.array([None, None]), pa.array(["z", "w"])],
    ...                ["a", "b", "c"]).to_pylist()
    [[('a', 'x'), ('c', 'z')], [('c', 'w')]]
    """
    import pyarrow as pa

    n = len(columns[0]) if columns else 0
    if not columns:
        return pa.MapArray.from_arrays(pa.array(np.zeros(1, np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.string()))
    value_type = columns[0].type
    columns = [c.cast(value_type) for c in columns]
    valid = np.column_stack([c.is_valid().to_numpy(zero_copy_only=False) for c in columns])
    rows, cols = np.nonzero(valid)  # row-major: each row's keys in key order
    values = pa.concat_arrays(columns).take(pa.array(cols * n + rows))
    names = pa.array(list(keys), value_type).take(pa.array(cols))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    return pa.MapArray.from_arrays(pa.array(offsets), names, values)


def _sequences_from_sorted(table, dwell_seconds: float):
    """Arrow core of :func:`extract_sequences`: a pyarrow Table of flat events (oid,
    read_point, event_time and the :data:`soads.schema.VISIT_ATTRIBUTES` columns) sorted by
    oid, event_time, arrival -> a RecordBatch of :func:`soads.schema.sequence_struct` rows.

    Examples
    --------
    >>> import datetime as dt, pyarrow as pa
    >>> t = [dt.datetime(2024, 1, 1, 0, 0, s) for s in (0, 30, 59)]
    >>> table = pa.table({"oid": ["o", "o", "o"], "read_point": ["A", "A", "B"], "event_time": t,
    ...                   "biz_step": ["s1", "s2", None], "disposition": [None, None, "d"],
    ...                   "biz_location": [None] * 3, "action": ["OBSERVE"] * 3,
    ...                   "sensor_alert": [None] * 3}).cast(pa.schema(
    ...     [("oid", pa.string()), ("read_point", pa.string()), ("event_time", pa.timestamp("us"))]
    ...     + [(k, pa.string()) for k in ("biz_step", "disposition", "biz_location", "action",
    ...                                   "sensor_alert")]))
    >>> row = _sequences_from_sorted(table, 60).to_pylist()[0]
    >>> row["sequence"]
    ['A', 'B']
    >>> row["attributes"]  # the visit's first read; a null field has no key
    [[('biz_step', 's1'), ('action', 'OBSERVE')], [('disposition', 'd'), ('action', 'OBSERVE')]]
    """
    import pyarrow as pa

    table = table.combine_chunks()
    n = table.num_rows
    oids = table.column(S.OID).to_numpy(zero_copy_only=False)
    rp_col = table.column(S.READ_POINT).chunk(0) if n else pa.array([], pa.string())
    rps = rp_col.to_numpy(zero_copy_only=False)
    times = table.column(S.EVENT_TIME)
    t_us = times.cast(pa.timestamp("us", times.type.tz)).cast(pa.int64()).to_numpy()
    keep = visit_mask(oids, rps, t_us, dwell_seconds)
    starts = np.flatnonzero(np.r_[True, oids[1:] != oids[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n].astype(np.int64)
    kept = np.flatnonzero(keep)
    # visits per object: kept rows are in object order, so offsets are cumulative counts
    offsets = np.zeros(len(starts) + 1, dtype=np.int32)
    if n:
        np.cumsum(np.add.reduceat(keep.astype(np.int32), starts), out=offsets[1:])
    visit_rows = pa.array(kept)
    attrs = attribute_maps(
        [(table.column(k).chunk(0) if n else pa.array([], pa.string())).take(visit_rows)
         for k in S.VISIT_ATTRIBUTES], S.VISIT_ATTRIBUTES)
    list_offsets = pa.array(offsets)
    return pa.RecordBatch.from_arrays([
        table.column(S.OID).take(pa.array(starts)).combine_chunks(),
        pa.ListArray.from_arrays(list_offsets, rp_col.take(visit_rows)),
        pa.ListArray.from_arrays(list_offsets, attrs),
        times.take(pa.array(starts)).combine_chunks(),
        times.take(pa.array(ends - 1)).combine_chunks(),
    ], names=[S.OID, S.SEQUENCE, S.ATTRIBUTES, S.FIRST_TIME, S.LAST_TIME])


def extract_sequences(events, dwell_seconds: float, num_partitions: int | None = None):
    """Per-object sequences from the EVENT LOG TABLE (Spark).

    Parameters
    ----------
    events : DataFrame
        Flat events with at least oid, read_point, event_time, source; the attribute columns
        (action, biz_step, disposition, biz_location, sensor_reports) when it has them (a
        missing one is null for every read).
    dwell_seconds : float
        Repeated reads of one read point within this gap are one visit.
    num_partitions : int, optional
        Partitions of the shuffle by oid (default: spark.sql.shuffle.partitions).

    Returns
    -------
    DataFrame
        ``oid, sequence array<string>, attributes array<map<string, string>>, first_time,
        last_time`` (one row per object; one attribute map per visit, that of its first read:
        keys :data:`soads.schema.VISIT_ATTRIBUTES`, a null field left out).
    """
    from pyspark.sql import functions as F

    src_file = F.regexp_extract(F.col(S.SOURCE), _ARRIVAL.pattern, 1)
    src_pos = F.regexp_extract(F.col(S.SOURCE), _ARRIVAL.pattern, 2)

    def field(name):
        return F.col(name) if name in events.columns else F.lit(None).cast("string")

    # the sensor alert: the distinct exceptions of the read's sensor reports (the parser's JSON
    # text is compact, so the pattern is exact), computed by Spark before the shuffle
    alerts = F.array_sort(F.array_distinct(F.regexp_extract_all(
        field(S.SENSOR_REPORTS), F.lit(EXCEPTION_PATTERN), F.lit(1))))
    df = events.select(
        S.OID, S.READ_POINT, S.EVENT_TIME,
        F.when(src_file == "", F.col(S.SOURCE)).otherwise(src_file).alias("_src"),
        F.coalesce(src_pos.cast("long"), F.lit(0)).alias("_pos"),
        *[field(k).alias(k) for k in S.VISIT_ATTRIBUTES if k != S.SENSOR_ALERT],
        F.when(F.size(alerts) > 0, F.array_join(alerts, ",")).alias(S.SENSOR_ALERT),
    )
    # oid, read_point, event_time, _src, _pos, biz_step, disposition, biz_location, action,
    # sensor_alert (one row per read; all reads of an oid together)
    part = df.repartition(num_partitions, S.OID) if num_partitions else df.repartition(S.OID)
    part = part.sortWithinPartitions(S.OID, S.EVENT_TIME, "_src", "_pos")

    def run(batches):
        import pyarrow as pa

        # an oid may straddle two arrow batches, so gather the whole (already sorted)
        # partition before cutting it into objects
        frames = [b for b in batches if b.num_rows]
        if frames:
            yield _sequences_from_sorted(pa.Table.from_batches(frames), dwell_seconds)

    return part.mapInArrow(run, S.sequence_struct())


def read_sequences_jsonl(spark, path: str):
    """Sequences given as JSON lines ``{"oid": ..., "sequence": [...]}``, taken as given.

    Returns
    -------
    DataFrame
        ``oid, sequence array<string>`` (no de-duplication, no ordering).
    """
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField(S.OID, T.StringType(), True),
        T.StructField(S.SEQUENCE, T.ArrayType(T.StringType(), True), True),
        T.StructField("_corrupt_record", T.StringType(), True),
    ])
    df = spark.read.schema(schema).option("mode", "PERMISSIVE") \
        .option("columnNameOfCorruptRecord", "_corrupt_record").json(path)
    bad = df.filter("_corrupt_record IS NOT NULL OR oid IS NULL OR sequence IS NULL").limit(1).collect()
    if bad:
        row = bad[0]
        raise ValueError(
            f"{path}: not a sequence line (need {{\"oid\": str, \"sequence\": [str, ...]}}): "
            f"{(row['_corrupt_record'] or str(row.asDict()))[:200]}"
        )
    return df.select(S.OID, S.SEQUENCE)
