"""The event job's one wiring: :func:`start_event_queries` (``jobs/stream_events.py``, the stream
benchmark and the tests all call it).

One checkpointed query, every document parsed once::

    documents (Kafka topic | directory of EPCIS files)            soads.ingest
      -> parse stage on the executors (mapInArrow)                soads.stream.parse_stage
         Event Log Preprocessor -> EVENT LOG TABLE (HBase | Parquet)
                                '-> quarantine (table, and a Kafka topic)
         -> reads (oid, read_point, event_time, source): all the rest needs of an event
      -> per-oid state: relation deltas, late events,             soads.stream.state
         updated objects (JVM operator or Python state function)
      -> Anomaly Evaluator on the executors, same stage:          soads.stream.score_stage
         each updated object's sequence vs the newest PATTERN TABLE run, and its sequence
         and attributes vs the newest context detector model run (evicted objects: closed)
      -> foreachBatch on the driver: one transaction per          soads.storage.sinks
         micro-batch with its ledger row -- RELATIONAL DEPENDENCY TABLE increments, late_event,
         object_score, alignment_score, anomaly_rate increments of the finished objects

Why this shape (``soads bench stream``): an earlier version ran two queries, each parsing every
document, and a Python state function; it sustained ~2,400 events/s. Parsing once, writing the
event log where the parse happens (one HBase cell per event), and a JVM state step remove the
three largest costs.

Exactly-once: the relational writer records its ``(sink, batch_id)`` ledger row in the same
transaction as its rows and skips a batch id it already recorded (:mod:`soads.storage.sinks`);
the event log is keyed by the event itself (a replay rewrites the same HBase cells / the same
Parquet files). Spark's checkpoint replays a batch with the same offsets, watermark and state,
and the state step is deterministic, so a replay produces the same rows. The late and
out-of-order policy is :mod:`soads.stream.state`'s.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

from soads import ingest, jvm, schema as S
from soads.config import Config, StreamConf, event_log_location
from soads.storage import sinks
from soads.stream.checkpoint import check_operator
from soads.stream.parse_stage import EventStore, read_struct
from soads.stream.score_stage import ObjectScorer, scored_struct
from soads.stream.state import combine_relations, object_updates

logger = logging.getLogger(__name__)

QUERY_NAME = "events"


def spark_jars(stream: StreamConf, kafka_jars: Sequence[str] = ()) -> dict[str, str]:
    """Session settings the event job needs: the Kafka connector jars (``source = kafka``) and
    the JVM state operator's jar (``state_operator = jvm``, built on first use)."""
    jars = list(kafka_jars) if stream.source == "kafka" else []
    if stream.state_operator == "jvm":
        jars.append(jvm.build())
    return {"spark.jars": ",".join(jars)} if jars else {}


@dataclass
class Queries:
    """The running query of :func:`start_event_queries` (one: ``events``)."""

    events: object

    def all(self):
        return [self.events]

    def process_all_available(self):
        for q in self.all():
            q.processAllAvailable()

    def stop(self):
        for q in self.all():
            q.stop()


def start_event_queries(spark, cfg: Config, trigger: bool = True) -> Queries:
    """Start the checkpointed query of the event job (module docstring).

    Parameters
    ----------
    spark : SparkSession
        With :func:`spark_jars` in ``spark.jars`` (Kafka connector, JVM state operator).
    cfg : soads.config.Config
        ``stream`` (source, checkpoint, policy), ``storage`` (the event log,
        :func:`soads.config.event_log_location`, and the tables at ``db_url``: the same the
        batch commands read), ``preprocess.max_document_bytes``
        (larger documents are quarantined, ``too_large``), ``sequences.dwell_seconds``
        (Sequence Extractor dwell window), ``scoring`` (alignment scores and the ALIGNMENT
        SCORE TABLE's ``window_seconds``), ``detector`` (the context detector's scoring
        settings; its counts are the newest model run's).
    trigger : bool
        Use ``stream.trigger_seconds`` as a processing-time trigger (tests may pass False and
        drive the query with ``processAllAvailable``).

    Returns
    -------
    Queries
    """
    stream = cfg.stream
    root = os.path.expanduser(stream.checkpoint_root)
    checkpoint = os.path.join(root, QUERY_NAME)
    check_operator(checkpoint, stream.state_operator)
    if stream.source == "kafka":
        ingest.ensure_topics(stream.kafka_bootstrap, [stream.topic, stream.quarantine_topic])
        documents = ingest.read_kafka(spark, stream.kafka_bootstrap, stream.topic,
                                      stream.starting_offsets, stream.max_offsets_per_trigger,
                                      stream.min_partitions, stream.max_records_per_partition)
    elif stream.source == "files":
        documents = ingest.read_files(spark, stream.input_path, stream.max_files_per_trigger)
    else:
        raise ValueError(f"stream.source must be kafka or files, not {stream.source!r}")
    db_url, location = cfg.storage.db_url, event_log_location(cfg)  # where the batch reads
    sinks.prepare(db_url, location)
    store = EventStore(
        location, cfg.preprocess.max_document_bytes,
        stream.kafka_bootstrap if stream.source == "kafka" else "", stream.quarantine_topic)
    # oid, read_point, event_time, source, biz_step, disposition, biz_location, action,
    # sensor_alert (one row per flat event; the documents' events and quarantine records are
    # already in the event log and quarantine tables)
    reads = documents.select(S.SOURCE, S.CONTENT).mapInArrow(store, read_struct())
    # kind, oid, a, b, freq, support, read_point, time_us, source, sequence, last_us,
    # attributes, closed
    updates = combine_relations(object_updates(
        reads, cfg.sequences.dwell_seconds, stream.idle_seconds, stream.watermark_seconds,
        stream.max_visits, stream.state_operator), stream.state_operator)
    # - attributes (judged here, not needed further) + score, raw, pattern, run_id, anomaly,
    # is_anomaly, explanation, model_run_id on the object rows (the Anomaly Evaluator and the
    # context detector, same stage)
    scored = updates.mapInArrow(ObjectScorer(db_url, cfg.scoring, cfg.detector), scored_struct())
    w = (scored.writeStream.queryName(QUERY_NAME)
         .foreachBatch(sinks.updates_writer(db_url, cfg.scoring.window_seconds))
         .option("checkpointLocation", checkpoint))
    if trigger:
        w = w.trigger(processingTime=f"{int(stream.trigger_seconds * 1000)} milliseconds")
    query = w.start()
    logger.info("started query %s (%s), state operator %s", QUERY_NAME, query.id,
                stream.state_operator)
    return Queries(query)
