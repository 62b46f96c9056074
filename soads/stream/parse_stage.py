"""Event Log Preprocessor of the event job, on the executors: every EPCIS document is parsed
once, and its flat events and quarantine records are stored right where they were parsed, before
the reads move on to the state step (DESIGN.md "Data flow", "Streaming guarantees").

The full events never cross a shuffle and never reach the driver; what moves on is one
``(oid, read_point, event_time, source)`` row per flat event with the event's visit attributes
as one encoded string (:func:`read_struct`, :func:`read_attributes`,
:func:`soads.stream.state.encode_attributes`).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from soads import epcis, schema as S
from soads.sequences import EXCEPTION_PATTERN
from soads.storage import event_log, hbase
from soads.stream.state import _ABSENT, _SLOT

logger = logging.getLogger(__name__)

BATCH_ID_PROPERTY = "streaming.sql.batchId"  # Spark's MicroBatchExecution.BATCH_ID_KEY
_EXCEPTION = re.compile(EXCEPTION_PATTERN)  # the batch Sequence Extractor's, in Python


def sensor_alert(sensor_reports: str | None) -> str | None:
    """The :data:`soads.schema.SENSOR_ALERT` attribute of an event: the distinct ``exception``
    values of its sensor reports (JSON text), sorted and comma-joined; None without one.

    >>> sensor_alert('[{"sensorReport":[{"exception":"ERROR_CONDITION"},'
    ...              '{"exception":"ALARM_CONDITION"},{"type":"Temperature"}]}]')
    'ALARM_CONDITION,ERROR_CONDITION'
    >>> sensor_alert(None) is None
    True
    """
    found = sorted(set(_EXCEPTION.findall(sensor_reports))) if sensor_reports else []
    return ",".join(found) if found else None


def read_attributes(event: dict) -> dict:
    """The visit attributes of a flat event: ``{key: value}`` over
    :data:`soads.schema.VISIT_ATTRIBUTES`, a null field left out (the batch sequences' rule).

    >>> read_attributes({"biz_step": "packing", "disposition": None, "action": "OBSERVE"})
    {'biz_step': 'packing', 'action': 'OBSERVE'}
    """
    out = {}
    for key in S.VISIT_ATTRIBUTES:
        value = (sensor_alert(event.get(S.SENSOR_REPORTS)) if key == S.SENSOR_ALERT
                 else event.get(key))
        if value is not None:
            out[key] = value
    return out


def _attribute_column(events: list[dict], key: str) -> list:
    """One :data:`soads.schema.VISIT_ATTRIBUTES` column of :func:`read_attributes` over
    ``events`` (None where the event has no such value).

    >>> evs = [{"biz_step": "packing", "sensor_reports": None},
    ...        {"sensor_reports": '[{"sensorReport":[{"exception":"ALARM_CONDITION"}]}]'}]
    >>> _attribute_column(evs, "biz_step"), _attribute_column(evs, "sensor_alert")
    (['packing', None], [None, 'ALARM_CONDITION'])
    """
    if key != S.SENSOR_ALERT:
        return [e.get(key) for e in events]
    return [sensor_alert(r) if r else None for r in (e.get(S.SENSOR_REPORTS) for e in events)]


def read_struct():
    """Spark schema of the parse stage's output (:class:`EventStore`): oid, read_point,
    event_time (timestamp), source, attributes (the event's :func:`read_attributes` as
    :func:`soads.stream.state.encode_attributes` encodes them; "" for none) -- one row per
    flat event, what the state step needs. One string rather than a column per attribute: the
    state step keeps it as it is, and four fewer columns cross into the JVM and its shuffle."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.OID, T.StringType(), False),
        T.StructField(S.READ_POINT, T.StringType(), False),
        T.StructField(S.EVENT_TIME, T.TimestampType(), False),
        T.StructField(S.SOURCE, T.StringType(), False),
        T.StructField(S.ATTRIBUTES, T.StringType(), False),
    ])


def encoded_attributes(events: list[dict]):
    """The ``attributes`` column of :func:`read_struct` over ``events`` (an Arrow string array):
    :func:`soads.stream.state.encode_attributes` of each event's :func:`read_attributes`,
    joined by Arrow's kernels a column at a time.

    >>> from soads.stream.state import decode_attributes
    >>> evs = [{"biz_step": "packing", "action": "ADD"}, {"disposition": None}]
    >>> [decode_attributes(a) for a in encoded_attributes(evs).to_pylist()]
    [{'biz_step': 'packing', 'action': 'ADD'}, {}]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = [pa.array(_attribute_column(events, k), pa.string()) for k in S.VISIT_ATTRIBUTES]
    joined = pc.binary_join_element_wise(*cols, _SLOT, null_handling="replace",
                                         null_replacement=_ABSENT)
    none = cols[0].is_null()
    for c in cols[1:]:
        none = pc.and_(none, c.is_null())
    return pc.if_else(none, "", joined)


@dataclass(frozen=True)
class EventStore:
    """``mapInArrow`` stage: parse documents and store what was parsed (pickled to the
    executors).

    Flat events go to the EVENT LOG TABLE, quarantine records to the quarantine table (and
    topic). Replays are harmless: HBase row keys are derived from the event; Parquet files are
    named by micro-batch id and Spark partition (``batch-<id>-<partition>.parquet``), and a
    replayed micro-batch reads the same offsets into the same partitions, so it rewrites the
    same files (:func:`soads.storage.event_log.write_stream_files`). The quarantine topic is
    at-least-once; its messages are keyed by source so a consumer can drop a repeat.

    Parameters
    ----------
    location : str
        ``hbase://host:port/prefix`` or a directory (Parquet, the embedded default).
    max_bytes : int
        Larger documents are quarantined (``too_large``).
    kafka_bootstrap, quarantine_topic : str
        Both set: quarantine records are also published there (key = source, value = JSON).
    """

    location: str
    max_bytes: int
    kafka_bootstrap: str = ""
    quarantine_topic: str = ""

    def __call__(self, batches):
        """Arrow batches of (source, content) documents -> Arrow batches of
        :func:`read_struct` rows, after storing them."""
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        on_hbase = event_log.is_hbase(self.location)
        schema = pa.schema([pa.field(S.OID, pa.string(), False),
                            pa.field(S.READ_POINT, pa.string(), False),
                            pa.field(S.EVENT_TIME, pa.timestamp("us", tz="UTC"), False),
                            pa.field(S.SOURCE, pa.string(), False),
                            pa.field(S.ATTRIBUTES, pa.string(), False)])
        parquet_events, parquet_quarantine, producer = [], [], None
        try:
            for batch in batches:
                events, quarantine = [], []
                sources = batch.column(S.SOURCE).to_pylist()
                contents = batch.column(S.CONTENT)
                for i, source in enumerate(sources):
                    ev, qu = epcis.parse_document(contents[i].as_py(), source, self.max_bytes)
                    events.extend(ev)
                    quarantine.extend(qu)
                times = pa.array([e[S.EVENT_TIME] for e in events], pa.string()).cast(
                    pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
                if on_hbase:
                    hbase.put_records(self.location, hbase.EVENT_TABLE, events)
                    if quarantine:
                        hbase.put_records(self.location, hbase.QUARANTINE_TABLE, quarantine)
                else:
                    parquet_events.append(event_log.arrow_events(events, times))
                    parquet_quarantine.extend(quarantine)
                if quarantine and self.kafka_bootstrap and self.quarantine_topic:
                    producer = producer or _quarantine_producer(self.kafka_bootstrap)
                    for q in quarantine:
                        producer.send(self.quarantine_topic, key=q[S.SOURCE].encode("utf-8"),
                                      value=json.dumps({c: q.get(c) for c in
                                                        S.QUARANTINE_COLUMNS}).encode("utf-8"))
                if events:
                    # oid, read_point, event_time, source, attributes (one row per flat
                    # event): read_attributes encoded a column at a time (a dict per event
                    # cost a third of a core-second per sustained micro-batch)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([e[S.OID] for e in events], pa.string()),
                         pa.array([e[S.READ_POINT] for e in events], pa.string()), times,
                         pa.array([e[S.SOURCE] for e in events], pa.string()),
                         encoded_attributes(events)], schema=schema)
            if not on_hbase and (parquet_events or parquet_quarantine):
                batch_id = ctx.getLocalProperty(BATCH_ID_PROPERTY) if ctx else None
                if batch_id is None:
                    raise RuntimeError("the Parquet event log is written by a streaming "
                                       "micro-batch only (no batch id in this task)")
                event_log.write_stream_files(
                    self.location, event_log.stream_file_name(batch_id, ctx.partitionId()),
                    pa.concat_tables(parquet_events), parquet_quarantine)
            if producer is not None:
                producer.flush()
        finally:
            if producer is not None:
                producer.close()


def _quarantine_producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
