"""Sequence Extractor (paper §3.1.2): per object, its read points in event-time order.

Ties in event_time keep arrival order (the position in the source: file line or Kafka offset).
Consecutive reads of the same read point no more than ``dwell_seconds`` apart are one visit:
RFID readers report a tag again and again while it sits in their field (DESIGN.md "Sequence").
The gap is measured between consecutive reads, so a tag that stays in the field is one visit
however long it stays, as long as the reader keeps seeing it.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

import numpy as np

from soads import schema as S

logger = logging.getLogger(__name__)

_ARRIVAL = re.compile(r"^(.*?)[:#/](\d+)$")


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


def _sequences_from_sorted(pdf, dwell_seconds: float):
    """pandas core of :func:`extract_sequences`: rows sorted by oid, event_time, arrival."""
    import pandas as pd

    if len(pdf) == 0:
        return pd.DataFrame({S.OID: [], S.SEQUENCE: [], S.FIRST_TIME: [], S.LAST_TIME: []})
    oids = pdf[S.OID].to_numpy(dtype=object)
    rps = pdf[S.READ_POINT].to_numpy(dtype=object)
    times = pdf[S.EVENT_TIME]
    t_us = times.to_numpy(dtype="datetime64[us]").astype(np.int64)
    keep = visit_mask(oids, rps, t_us, dwell_seconds)
    starts = np.flatnonzero(np.r_[True, oids[1:] != oids[:-1]])
    ends = np.r_[starts[1:], len(oids)]
    kept_idx = np.cumsum(keep)  # number of kept rows up to and including i
    kept_rps = rps[keep]
    seq = [kept_rps[(kept_idx[s] - keep[s]):kept_idx[e - 1]].tolist() for s, e in zip(starts, ends)]
    return pd.DataFrame({
        S.OID: oids[starts],
        S.SEQUENCE: seq,
        S.FIRST_TIME: times.iloc[starts].to_numpy(),
        S.LAST_TIME: times.iloc[ends - 1].to_numpy(),
    })


def extract_sequences(events, dwell_seconds: float, num_partitions: int | None = None):
    """Per-object sequences from the EVENT LOG TABLE (Spark).

    Parameters
    ----------
    events : DataFrame
        Flat events with at least oid, read_point, event_time, source.
    dwell_seconds : float
        Repeated reads of one read point within this gap are one visit.
    num_partitions : int, optional
        Partitions of the shuffle by oid (default: spark.sql.shuffle.partitions).

    Returns
    -------
    DataFrame
        ``oid, sequence array<string>, first_time, last_time`` (one row per object).
    """
    from pyspark.sql import functions as F

    src_file = F.regexp_extract(F.col(S.SOURCE), _ARRIVAL.pattern, 1)
    src_pos = F.regexp_extract(F.col(S.SOURCE), _ARRIVAL.pattern, 2)
    df = events.select(
        S.OID, S.READ_POINT, S.EVENT_TIME,
        F.when(src_file == "", F.col(S.SOURCE)).otherwise(src_file).alias("_src"),
        F.coalesce(src_pos.cast("long"), F.lit(0)).alias("_pos"),
    )
    # oid, read_point, event_time, _src, _pos (one row per read; all reads of an oid together)
    part = df.repartition(num_partitions, S.OID) if num_partitions else df.repartition(S.OID)
    part = part.sortWithinPartitions(S.OID, S.EVENT_TIME, "_src", "_pos")

    def run(batches):
        import pandas as pd

        # mapInPandas hands out arrow batches: an oid may straddle two of them, so gather the
        # whole (already sorted) partition before cutting it into objects.
        frames = [b for b in batches if len(b)]
        pdf = pd.concat(frames, ignore_index=True) if frames else None
        if pdf is not None:
            yield _sequences_from_sorted(pdf, dwell_seconds)

    return part.mapInPandas(run, S.sequence_struct())


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
