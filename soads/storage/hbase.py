"""EVENT LOG TABLE on Apache HBase (through its Thrift 1 server, with happybase).

Same functions as :mod:`soads.storage.event_log` (the Parquet default): ``write_events``,
``read_events``, ``write_quarantine``, ``read_quarantine``.

Location
--------
``location`` is ``"host:port/prefix"`` (an ``hbase://`` scheme in front is accepted): the HBase
Thrift server's address and a table-name prefix. The tables are ``<prefix>_event_log`` and
``<prefix>_quarantine`` (happybase's ``table_prefix``), each with one column family ``e``.
``"127.0.0.1:9090/soads"`` is the service started by ``python -m soads.services up hbase``.
Port and prefix may be left out (defaults ``9090`` and ``soads``).

Row keys
--------
Derived from the record itself, so a replay rewrites the same cells instead of adding rows::

    event:      bucket(oid) | oid | 0x00 | event_time (8 bytes, big-endian µs + 2^63) | h(read_point, source)
    quarantine: bucket(source) | source | 0x00 | reason | 0x00 | h(detail)

``bucket(x)`` is the first byte of a BLAKE2b hash of ``x`` and ``h`` a 4-byte BLAKE2b hash. The
bucket spreads objects over the whole key space (oids are URNs that all begin ``urn:epc:id:``, so
their own leading bytes would put every row in one region and give nothing to split reads on);
since it depends only on the oid, all events of one object stay contiguous, and a prefix scan
``bucket(oid) | oid | 0x00`` returns exactly that object's events in event-time order
(:func:`scan_object`). The 0x00 separator keeps ``urn:…:1`` from matching ``urn:…:10``. The
offset on the time makes pre-1970 instants sort before later ones. The trailing hash keeps
distinct events of one object at the same instant apart (two read points, or two source records).

Cells
-----
Event log: column family ``e``, one cell ``e:v`` per event holding the event as compact JSON, an
object over the columns of :data:`soads.schema.EVENT_COLUMNS` with ``None`` values left out and
``event_time`` as ISO-8601 UTC text with microseconds (``2024-05-01T10:00:00.000000Z``). One cell
rather than one per column: a put through Thrift 1 costs per cell, and ten cells a row ran at
~9,000 events/s where one cell runs at ~47,000 (happybase, batches of 1,000, this machine).
Quarantine: one qualifier per column of :data:`soads.schema.QUARANTINE_COLUMNS`, UTF-8 text.
Tables keep one version.

Writes
------
Per Spark partition (``foreachPartition``; nothing is collected to the driver) through
:func:`put_records`: puts of 1,000 rows, pipelined on a second connection. ``mode="append"`` (the default here) is an
idempotent upsert by row key; ``mode="overwrite"`` drops and re-creates the table first. (The
Parquet backend defaults to overwrite; for HBase, upsert is the point of the key design.)

Reads
-----
A Python Data Source (``spark.read.format("soads_hbase")``, registered on first use) whose input
partitions are fixed ranges of the bucket byte: ``partitions`` (default 8) equal slices of
``0x00..0xff``. Each Spark task scans its range through Thrift and yields Arrow record batches
(``event_time`` as ``timestamp[us, UTC]``, so no local-time conversion happens anywhere). Fixed
bucket ranges are used rather than region boundaries because a fresh standalone table has a
single region (Thrift 1 cannot pre-split), yet the hashed bucket makes the ranges even-sized
whatever the regions are.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import re
import struct
from functools import partial
from typing import Iterable, Iterator, Sequence

from soads import schema as S

FAMILY = b"e"
EVENT_TABLE = "event_log"
QUARANTINE_TABLE = "quarantine"
DEFAULT_PORT = 9090
DEFAULT_PREFIX = "soads"
DEFAULT_PARTITIONS = 8
BATCH_SIZE = 1000
TIMEOUT_MS = 120_000
FORMAT = "soads_hbase"

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_OFFSET = 1 << 63


# -- location -----------------------------------------------------------------------------
def parse_location(location: str) -> tuple[str, int, str]:
    """``"host:port/prefix"`` -> ``(host, port, prefix)``.

    >>> parse_location("127.0.0.1:9090/soads")
    ('127.0.0.1', 9090, 'soads')
    >>> parse_location("hbase://localhost/test")
    ('localhost', 9090, 'test')
    """
    loc = location.strip()
    if loc.startswith("hbase://"):
        loc = loc[len("hbase://"):]
    hostport, _, prefix = loc.partition("/")
    host, _, port = hostport.partition(":")
    if not host:
        raise ValueError(f"bad HBase location {location!r}: expected host:port/prefix")
    return host, int(port) if port else DEFAULT_PORT, prefix.strip("/") or DEFAULT_PREFIX


def connect(location: str):
    """A happybase connection to the location's Thrift server, tables named ``<prefix>_*``."""
    import happybase

    host, port, prefix = parse_location(location)
    return happybase.Connection(host, port, timeout=TIMEOUT_MS, table_prefix=prefix,
                                table_prefix_separator=b"_")


# -- pure helpers -------------------------------------------------------------------------
def _b(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _bucket(text) -> bytes:
    return hashlib.blake2b(_b(text), digest_size=1).digest()


def _h4(*values) -> bytes:
    h = hashlib.blake2b(digest_size=4)
    for v in values:
        # a marker byte keeps None apart from "" and the fields apart from each other
        h.update(b"\x00" if v is None else b"\x01" + _b(v) + b"\x1f")
    return h.digest()


def to_micros(value) -> int:
    """Microseconds since the epoch (UTC) of an int (already µs), a datetime (naive = UTC),
    a pandas Timestamp or an ISO-8601 string.

    >>> to_micros("1970-01-01T00:00:01.5Z")
    1500000
    """
    if isinstance(value, bool):
        raise TypeError("event_time must be a time, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise TypeError(f"cannot read {value!r} as an event time")


def from_micros(us: int) -> _dt.datetime:
    """Timezone-aware UTC datetime of ``us`` microseconds since the epoch."""
    return _EPOCH + _dt.timedelta(microseconds=us)


def iso(us: int) -> str:
    """ISO-8601 UTC text with microseconds: ``1970-01-01T00:00:00.000001Z``."""
    return from_micros(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_prefix(oid: str) -> bytes:
    """Row-key prefix of all events of ``oid``."""
    b = _b(oid)
    if b"\x00" in b:
        raise ValueError("an oid must not contain NUL")
    return _bucket(b) + b + b"\x00"


def row_key(event: dict) -> bytes:
    """Row key of a flat event (see the module docstring); equal events give equal keys, and the
    keys of one object sort by event time.

    >>> a = {"oid": "urn:x:1", "event_time": "2024-01-01T00:00:00Z", "read_point": "r", "source": "f:1"}
    >>> b = dict(a, event_time="2024-01-01T00:00:01Z")
    >>> row_key(a) == row_key(dict(a)), row_key(a) < row_key(b), row_key(a).startswith(object_prefix("urn:x:1"))
    (True, True, True)
    """
    us = to_micros(event[S.EVENT_TIME])
    return (object_prefix(event[S.OID]) + struct.pack(">Q", us + _OFFSET)
            + _h4(event.get(S.READ_POINT), event.get(S.SOURCE)))


def quarantine_key(record: dict) -> bytes:
    """Row key of a quarantine record: one per (source, reason, detail)."""
    src = _b(record[S.SOURCE])
    return (_bucket(src) + src + b"\x00" + _b(record[S.REASON]) + b"\x00"
            + _h4(record.get(S.DETAIL)))


def _col(name: str) -> bytes:
    return FAMILY + b":" + name.encode()


EVENT_CELL = _col("v")
# soads.epcis.utc_millis text (what the parser emits): ISO-8601 with microseconds is 3 zeros away
_PARSER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_QUARANTINE_QUALIFIERS = {c: _col(c) for c in S.QUARANTINE_COLUMNS}


def encode(event: dict) -> dict[bytes, bytes]:
    """Cells of a flat event: ``{b"e:v": compact JSON}``; ``None`` values are left out and
    ``event_time`` becomes ISO-8601 UTC text with microseconds.

    >>> encode({"oid": "o", "event_time": 0, "read_point": "r", "source": "s", "action": None})
    {b'e:v': b'{"oid":"o","read_point":"r","event_time":"1970-01-01T00:00:00.000000Z","source":"s"}'}
    """
    doc = {}
    for c in S.EVENT_COLUMNS:
        v = event.get(c)
        if v is None:
            continue
        if c == S.EVENT_TIME:
            # the parser's text needs three more digits, anything else a conversion
            fast = isinstance(v, str) and _PARSER_TIME.match(v)
            v = v[:-1] + "000Z" if fast else iso(to_micros(v))
        doc[c] = v if isinstance(v, str) else str(v)
    return {EVENT_CELL: json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")}


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_MINUTES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> µs (bounded below)


def event_puts(events: Sequence[dict]) -> list[tuple[bytes, bytes]]:
    """``(row key, e:v value)`` of each flat event: :func:`row_key` and :func:`encode` in one
    pass, equal to them byte for byte (the tests hold it to them).

    The parser's events (str values, ``event_time`` as ``utc_millis`` text) take a fast path:
    the minute's µs from a cache, the oid's key prefix once per call, one pre-bound JSON
    encoder; any other event goes through the two functions. The stream stores every event
    through here, and the generic pair cost ~17 µs an event (``soads bench stream``).
    """
    out = []
    prefixes: dict[str, bytes] = {}
    pack = _TIME.pack
    for e in events:
        t = e.get(S.EVENT_TIME)
        doc = {}
        fast = type(t) is str and _PARSER_TIME.match(t) is not None
        if fast:
            for c in S.EVENT_COLUMNS:
                v = e.get(c)
                if v is None:
                    continue
                if type(v) is not str:
                    fast = False
                    break
                doc[c] = v
        if not fast:
            out.append((row_key(e), encode(e)[EVENT_CELL]))
            continue
        minute = _MINUTES.get(t[:16])
        if minute is None:
            if len(_MINUTES) > 100_000:
                _MINUTES.clear()
            minute = _MINUTES[t[:16]] = to_micros(t[:16] + ":00Z")
        us = minute + int(t[17:19]) * 1_000_000 + int(t[20:23]) * 1000
        oid = doc.get(S.OID)
        if oid is None:
            out.append((row_key(e), encode(e)[EVENT_CELL]))
            continue
        prefix = prefixes.get(oid)
        if prefix is None:
            prefix = prefixes[oid] = object_prefix(oid)
        rp, src = doc.get(S.READ_POINT), doc.get(S.SOURCE)
        tail = hashlib.blake2b(
            (b"\x00" if rp is None else b"\x01" + rp.encode("utf-8") + b"\x1f")
            + (b"\x00" if src is None else b"\x01" + src.encode("utf-8") + b"\x1f"),
            digest_size=4).digest()
        doc[S.EVENT_TIME] = t[:-1] + "000Z"
        out.append((prefix + pack(us + _OFFSET) + tail, _JSON(doc).encode("utf-8")))
    return out


_TIME = struct.Struct(">Q")


def decode(cells: dict[bytes, bytes]) -> dict:
    """Inverse of :func:`encode`: a dict over all event columns, ``event_time`` an aware UTC
    datetime, missing cells ``None``."""
    doc = json.loads(cells[EVENT_CELL]) if EVENT_CELL in cells else {}
    out = {c: doc.get(c) for c in S.EVENT_COLUMNS}
    if out[S.EVENT_TIME] is not None:
        out[S.EVENT_TIME] = from_micros(to_micros(out[S.EVENT_TIME]))
    return out


def encode_quarantine(record: dict) -> dict[bytes, bytes]:
    return {q: _b(record[c]) for c, q in _QUARANTINE_QUALIFIERS.items() if record.get(c) is not None}


def scan_object(table, oid: str) -> list[dict]:
    """All events of ``oid`` in event-time order (a prefix scan of a happybase ``Table``)."""
    return [decode(cells) for _, cells in table.scan(row_prefix=object_prefix(oid))]


def bucket_ranges(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (1..256) contiguous row-key ranges ``[start, stop)`` covering the whole key space;
    ``b""`` means unbounded.

    >>> bucket_ranges(2)
    [(b'', b'\\x80'), (b'\\x80', b'')]
    """
    if not 1 <= n <= 256:
        raise ValueError("partitions must be in 1..256")
    bounds = [i * 256 // n for i in range(n + 1)]
    return [(b"" if i == 0 else bytes([bounds[i]]), b"" if i == n - 1 else bytes([bounds[i + 1]]))
            for i in range(n)]


# -- tables -------------------------------------------------------------------------------
FAMILIES = {FAMILY.decode(): dict(max_versions=1, bloom_filter_type="ROW")}


def ensure_table(location: str, name: str, overwrite: bool = False) -> None:
    """Create table ``<prefix>_<name>`` when missing (drop it first when ``overwrite``)."""
    conn = connect(location)
    try:
        exists = name.encode() in conn.tables()
        if exists and overwrite:
            conn.delete_table(name, disable=True)
            exists = False
        if not exists:
            try:
                conn.create_table(name, FAMILIES)
            except Exception as exc:  # AlreadyExists from a concurrent writer is fine
                if "exist" not in str(exc).lower():
                    raise
    finally:
        conn.close()


def table_exists(location: str, name: str) -> bool:
    conn = connect(location)
    try:
        return name.encode() in conn.tables()
    finally:
        conn.close()


def _check_mode(mode: str) -> bool:
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' (upsert) or 'overwrite', not {mode!r}")
    return mode == "overwrite"


# -- writes -------------------------------------------------------------------------------
def _put_partition(location: str, name: str, batch_size: int, rows: Iterable) -> None:
    """``foreachPartition`` body of :func:`write_events` / :func:`write_quarantine`."""
    put_records(location, name, (row.asDict() for row in rows), batch_size)


def put_records(location: str, name: str, records: Iterable[dict],
                batch_size: int = BATCH_SIZE) -> int:
    """Upsert flat events (``name`` = :data:`EVENT_TABLE`; ``event_time`` µs or a time) or
    quarantine records (:data:`QUARANTINE_TABLE`) from plain dicts, in batched puts; returns the
    count.

    Pipelined: a second thread sends batch k through its own Thrift connection while this one
    encodes batch k+1 (the send mostly waits on the server, which releases the GIL). The
    streaming job calls this on the executors, inside its parse stage, where the HBase round
    trips were half of a micro-batch (``soads bench stream``).
    """
    import queue
    import threading

    from happybase.batch import BatchMutation, Mutation  # happybase's Thrift types

    if name == EVENT_TABLE:
        def cells(chunk):
            return [(k, {EVENT_CELL: v}) for k, v in event_puts(chunk)]
    else:
        def cells(chunk):
            return [(quarantine_key(r), encode_quarantine(r)) for r in chunk]

    todo: queue.Queue = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def sender():
        conn = None
        try:
            conn = connect(location)
            table = conn._table_name(name)
            while (bms := todo.get()) is not None:
                if not failed:
                    conn.client.mutateRows(table, bms, {})
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(e)
            while todo.get() is not None:  # drain: the producer must not block
                pass
        finally:
            if conn is not None:
                conn.close()

    thread = threading.Thread(target=sender, name="hbase-put", daemon=True)
    thread.start()
    n = 0
    try:
        it = iter(records)
        while not failed and (chunk := list(itertools.islice(it, batch_size))):
            todo.put([BatchMutation(key, [Mutation(isDelete=False, column=c, value=v,
                                                   writeToWAL=True) for c, v in cl.items()])
                      for key, cl in cells(chunk)])
            n += len(chunk)
    finally:
        todo.put(None)
        thread.join()
    if failed:
        raise failed[0]
    return n


def check_replaceable(location: str) -> None:
    """Nothing to check: an ingest puts cells keyed by the event itself, so it adds to what the
    event job wrote and never replaces it (the Parquet backend's counterpart refuses)."""


def write_events(events, location: str, mode: str = "append", batch_size: int = BATCH_SIZE) -> None:
    """Write flat events (``schema.event_struct()`` columns) to ``<prefix>_event_log``.

    Upsert by :func:`row_key` (``mode="append"``), or drop and re-create the table first
    (``mode="overwrite"``). Runs ``foreachPartition``: every task writes its own rows.
    """
    from pyspark.sql import functions as F

    ensure_table(location, EVENT_TABLE, overwrite=_check_mode(mode))
    # event_time as µs since the epoch: Python Rows would otherwise carry naive local-time datetimes.
    cols = [F.unix_micros(F.col(c)).alias(c) if c == S.EVENT_TIME else F.col(c)
            for c in S.EVENT_COLUMNS]
    events.select(*cols).foreachPartition(
        partial(_put_partition, location, EVENT_TABLE, batch_size))


def write_quarantine(quarantine, location: str, mode: str = "append",
                     batch_size: int = BATCH_SIZE) -> None:
    """Write quarantine records (source, reason, detail) to ``<prefix>_quarantine``."""
    ensure_table(location, QUARANTINE_TABLE, overwrite=_check_mode(mode))
    quarantine.select(*S.QUARANTINE_COLUMNS).foreachPartition(
        partial(_put_partition, location, QUARANTINE_TABLE, batch_size))


# -- reads: a Python Data Source over bucket ranges ----------------------------------------
_ARROW_ROWS = 10_000


def _scan_range(location: str, name: str, start: bytes, stop: bytes, columns: tuple,
                time_column: str | None, nullable: tuple) -> Iterator:
    """Arrow record batches of the rows in ``[start, stop)`` (``nullable``: one flag a column,
    as in the Spark schema, which the batches must match exactly)."""
    import pyarrow as pa

    qualifiers = [_col(c) for c in columns]
    fields = [pa.field(c, pa.timestamp("us", tz="UTC") if c == time_column else pa.string(),
                       nullable=null_ok)
              for c, null_ok in zip(columns, nullable)]
    arrow_schema = pa.schema(fields)

    def batch(buf):
        arrays = []
        for c, values in zip(columns, buf):
            if c == time_column:
                values = [None if v is None else to_micros(v) for v in values]
                arrays.append(pa.array(values, pa.timestamp("us", tz="UTC")))
            else:
                arrays.append(pa.array(values, pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)

    conn = connect(location)
    try:
        table = conn.table(name)
        buf = [[] for _ in columns]
        n = 0
        for _, cells in table.scan(row_start=start or None, row_stop=stop or None,
                                   batch_size=BATCH_SIZE):
            if name == EVENT_TABLE:
                raw = cells.get(EVENT_CELL)
                doc = json.loads(raw) if raw is not None else {}
                for values, c in zip(buf, columns):
                    values.append(doc.get(c))
            else:
                for values, q in zip(buf, qualifiers):
                    v = cells.get(q)
                    values.append(None if v is None else v.decode("utf-8"))
            n += 1
            if n >= _ARROW_ROWS:
                yield batch(buf)
                buf, n = [[] for _ in columns], 0
        if n:
            yield batch(buf)
    finally:
        conn.close()


def _data_source_class():
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

    class _Range(InputPartition):
        def __init__(self, start: bytes, stop: bytes):
            super().__init__((start, stop))
            self.start, self.stop = start, stop

    class _Reader(DataSourceReader):
        def __init__(self, options):
            self.location = options["location"]
            self.kind = options.get("kind", "events")
            self.n = int(options.get("partitions", DEFAULT_PARTITIONS))
            struct = S.event_struct() if self.kind == "events" else S.quarantine_struct()
            self.nullable = tuple(f.nullable for f in struct.fields)

        def partitions(self):
            return [_Range(a, b) for a, b in bucket_ranges(self.n)]

        def read(self, partition):
            if self.kind == "events":
                yield from _scan_range(self.location, EVENT_TABLE, partition.start, partition.stop,
                                       S.EVENT_COLUMNS, S.EVENT_TIME, self.nullable)
            else:
                yield from _scan_range(self.location, QUARANTINE_TABLE, partition.start,
                                       partition.stop, S.QUARANTINE_COLUMNS, None, self.nullable)

    class HBaseEventLogSource(DataSource):
        """``spark.read.format("soads_hbase").option("location", ...).option("kind",
        "events" | "quarantine").option("partitions", 8).load()``"""

        @classmethod
        def name(cls):
            return FORMAT

        def schema(self):
            if self.options.get("kind", "events") == "events":
                return S.event_struct()
            return S.quarantine_struct()

        def reader(self, schema):
            return _Reader(self.options)

    return HBaseEventLogSource


_SOURCE = None


def data_source():
    """The Python Data Source class (built lazily so that importing this module needs no pyspark)."""
    global _SOURCE
    if _SOURCE is None:
        _SOURCE = _data_source_class()
    return _SOURCE


def _load(spark, location: str, kind: str, partitions: int):
    spark.dataSource.register(data_source())
    return (spark.read.format(FORMAT).option("location", location).option("kind", kind)
            .option("partitions", str(partitions)).load())


def read_events(spark, location: str, partitions: int = DEFAULT_PARTITIONS):
    """The event log.

    Returns
    -------
    DataFrame
        ``oid, read_point, event_time, action, biz_step, disposition, biz_location, event_type,
        sensor_reports, source``; ``partitions`` Spark partitions (ranges of the bucket byte).
    """
    if not table_exists(location, EVENT_TABLE):
        raise FileNotFoundError(f"no event log table at {location}: run `soads ingest` first")
    return _load(spark, location, "events", partitions)


def read_quarantine(spark, location: str, partitions: int = DEFAULT_PARTITIONS):
    """Quarantine records.

    Returns
    -------
    DataFrame
        ``source, reason, detail``.
    """
    if not table_exists(location, QUARANTINE_TABLE):
        raise FileNotFoundError(f"no quarantine table at {location}")
    return _load(spark, location, "quarantine", partitions)
