"""Event Log Preprocessor (Spark): EPCIS documents -> (events, quarantine), UTC event times.

The pure parser :func:`soads.epcis.parse_document` runs inside ``mapInArrow``; nothing is
collected to the driver. One parse yields one combined row type (``kind`` = ``event`` or
``quarantine``) so every document is parsed exactly once; callers cache that DataFrame and
split it with :func:`split_parsed`.

Examples
--------
>>> docs = read_documents(spark, ["/data/epcis"])                       # doctest: +SKIP
>>> parsed = parse_documents(docs, max_bytes=64 * 1024 * 1024).cache()  # doctest: +SKIP
>>> events, quarantine = split_parsed(parsed)                           # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os

from soads import epcis, schema
from soads.schema import (
    CONTENT, DETAIL, EVENT_COLUMNS, EVENT_TIME, KIND, KIND_EVENT, KIND_QUARANTINE, REASON, SOURCE,
)

logger = logging.getLogger(__name__)

# Spark's binaryFile source names its columns itself (path, modificationTime, length, content)
_BINARY_FILE_PATH = "path"
_BINARY_FILE_CONTENT = "content"
_ROWS_PER_BATCH = 20_000
# the parser's UTC text (soads.epcis.utc_millis); the zone letter makes it session-zone proof
_SPARK_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX"


def parsed_struct():
    """Spark schema of :func:`parse_documents`: kind, event columns, reason, detail (strings)."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(KIND, T.StringType(), False)]
        + [T.StructField(c, T.StringType(), c != SOURCE) for c in EVENT_COLUMNS]
        + [T.StructField(REASON, T.StringType(), True), T.StructField(DETAIL, T.StringType(), True)]
    )


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def read_documents(spark, paths: list[str]):
    """EPCIS files and directories -> one row per document.

    Directories are searched recursively for files ending in ``.xml``, ``.json`` or ``.jsonld``;
    a file named explicitly is read whatever its name.

    Parameters
    ----------
    spark : SparkSession
    paths : list of str
        Local paths (checked here) or Hadoop URIs (checked by Spark).

    Returns
    -------
    DataFrame
        ``source`` (the file's path, without a ``file:`` scheme), ``content`` (binary).

    Raises
    ------
    FileNotFoundError
        When a local path does not exist.
    """
    from pyspark.sql import functions as F

    if not paths:
        raise ValueError("read_documents needs at least one path")
    files, dirs = [], []
    for path in paths:
        local = path[len("file://"):] if path.startswith("file://") else path
        if _is_local(path):
            if not os.path.exists(local):
                raise FileNotFoundError(f"EPCIS input path does not exist: {path}")
            (dirs if os.path.isdir(local) else files).append(os.path.abspath(local))
        else:
            dirs.append(path)
    reader = spark.read.format("binaryFile")
    frames = []
    if dirs:
        frames.append(reader.option("recursiveFileLookup", "true")
                      .option("pathGlobFilter", "*.{xml,json,jsonld}").load(dirs))
    if files:
        frames.append(spark.read.format("binaryFile").load(files))
    docs = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    # source, content (one row per document)
    return docs.select(
        F.regexp_replace(F.col(_BINARY_FILE_PATH), "^file:", "").alias(SOURCE),
        F.col(_BINARY_FILE_CONTENT).alias(CONTENT),
    )


def _parse_batches(batches, max_bytes: int):
    """Arrow batches of (source, content) -> Arrow batches of :func:`parsed_struct` rows.

    Arrow all the way: building string arrays straight from the parser's lists costs a fraction
    of a pandas round trip (object columns are the slow path of Spark's Arrow exchange).
    """
    import pyarrow as pa

    names = [KIND, *EVENT_COLUMNS, REASON, DETAIL]

    def frame(rows_event, rows_quarantine):
        n_ev, n_qu = len(rows_event), len(rows_quarantine)
        data = {KIND: [KIND_EVENT] * n_ev + [KIND_QUARANTINE] * n_qu}
        for c in EVENT_COLUMNS:
            tail = [q[SOURCE] for q in rows_quarantine] if c == SOURCE else [None] * n_qu
            data[c] = [e[c] for e in rows_event] + tail
        for c in (REASON, DETAIL):
            data[c] = [None] * n_ev + [q[c] for q in rows_quarantine]
        return pa.RecordBatch.from_arrays([pa.array(data[c], pa.string()) for c in names], names)

    for batch in batches:
        events, quarantine = [], []
        sources = batch.column(SOURCE).to_pylist()
        contents = batch.column(CONTENT)
        for i, source in enumerate(sources):
            ev, qu = epcis.parse_document(contents[i].as_py(), source, max_bytes)
            events.extend(ev)
            quarantine.extend(qu)
            if len(events) + len(quarantine) >= _ROWS_PER_BATCH:
                yield frame(events, quarantine)
                events, quarantine = [], []
        if events or quarantine:
            yield frame(events, quarantine)


def parse_documents(documents, max_bytes: int = epcis.DEFAULT_MAX_BYTES):
    """Parse every document with :func:`soads.epcis.parse_document` (``mapInArrow``).

    Parameters
    ----------
    documents : DataFrame
        ``source``, ``content`` (as :func:`read_documents` returns).
    max_bytes : int
        Larger documents become one ``too_large`` quarantine row.

    Returns
    -------
    DataFrame
        ``kind`` (``event`` | ``quarantine``), ``oid``, ``read_point``, ``event_time``
        (text, UTC ``YYYY-MM-DDTHH:MM:SS.fffZ``), ``action``, ``biz_step``, ``disposition``,
        ``biz_location``, ``event_type``, ``sensor_reports``, ``source``, ``reason``,
        ``detail``, all strings: a flat event per
        ``event`` row (reason, detail null), a quarantine record per ``quarantine`` row (only
        source, reason, detail set). Cache it before :func:`split_parsed`.
    """
    from pyspark.sql import functions as F

    def parse(batches):
        return _parse_batches(batches, max_bytes)

    return documents.select(F.col(SOURCE), F.col(CONTENT)).mapInArrow(parse, parsed_struct())


def split_parsed(parsed):
    """Split :func:`parse_documents` output into the event log and the quarantine.

    Returns
    -------
    events : DataFrame
        :func:`soads.schema.event_struct`: ``oid, read_point, event_time, action, biz_step,
        disposition, biz_location, event_type, sensor_reports, source``; ``event_time`` is a
        timestamp (the parser's UTC text, parsed with its ``Z``, so any session time zone
        reads the same instant).
    quarantine : DataFrame
        :func:`soads.schema.quarantine_struct`: ``source, reason, detail``.
    """
    from pyspark.sql import functions as F

    def exact(df, struct):
        # The parser never emits a null in a required column. Spark cannot infer that, so each
        # required column becomes coalesce(col, raise_error, literal): it fails loudly on a null
        # (raise_error runs first) and Spark's schema then says non-nullable, as the struct does.
        columns = []
        for f in struct.fields:
            column = F.col(f.name)
            if not f.nullable:
                fallback = F.lit(0).cast("timestamp") if f.dataType.typeName() == "timestamp" \
                    else F.lit("")
                column = F.coalesce(
                    column,
                    F.raise_error(F.lit(f"parser emitted a null {f.name}")).cast(f.dataType),
                    fallback.cast(f.dataType))
            columns.append(column.alias(f.name))
        return df.select(*columns)

    events = parsed.filter(F.col(KIND) == KIND_EVENT).withColumn(
        EVENT_TIME, F.to_timestamp(F.col(EVENT_TIME), _SPARK_TIME_FORMAT))
    events = exact(events, schema.event_struct())
    quarantine = exact(parsed.filter(F.col(KIND) == KIND_QUARANTINE), schema.quarantine_struct())
    return events, quarantine
