"""Ingest (the event job's streaming sources): Kafka topic or a directory of EPCIS files -> raw
documents.

Each row is one EPCIS document with its source identity, ready for the job's parse stage
(:class:`soads.stream.parse_stage.EventStore`). :func:`soads.epcis.parse_document` appends the
event's position inside the document (``:line`` for XML, ``#index`` for JSON), so every flat
event traces back to ``topic/partition/offset:line`` or ``path:line``. (The batch path reads
files with :func:`soads.preprocess.read_documents`.)
"""
from __future__ import annotations

import logging

from soads.schema import CONTENT, SOURCE

logger = logging.getLogger(__name__)

# Spark's Kafka source names its columns itself
_KAFKA_TOPIC, _KAFKA_PARTITION, _KAFKA_OFFSET, _KAFKA_VALUE = "topic", "partition", "offset", "value"


def read_kafka(spark, bootstrap: str, topic: str, starting_offsets: str = "earliest",
               max_offsets_per_trigger: int | None = None, min_partitions: int | None = None,
               max_records_per_partition: int | None = None):
    """Kafka records -> one document per record (streaming).

    Parameters
    ----------
    spark : SparkSession
        With ``spark-sql-kafka-0-10`` on its class path (:func:`soads.jars.spark_kafka_jars`).
    bootstrap : str
        ``host:port``.
    topic : str
    starting_offsets : str
        ``earliest`` or ``latest`` (first start only; a restart resumes from the checkpoint).
    max_offsets_per_trigger : int, optional
        Records per micro-batch.
    min_partitions : int, optional
        Spark tasks per micro-batch at least (Kafka ``minPartitions``): a one-partition topic
        is parsed on several cores.
    max_records_per_partition : int, optional
        Records per Spark task at most (Kafka ``maxRecordsPerPartition``): a full micro-batch
        is split into more tasks than a small one.

    Returns
    -------
    DataFrame
        ``source`` (``topic/partition/offset``), ``content`` (binary; an empty value for a
        record without one, which the parser quarantines).
    """
    from pyspark.sql import functions as F

    reader = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic).option("startingOffsets", starting_offsets))
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(int(max_offsets_per_trigger)))
    if min_partitions:
        reader = reader.option("minPartitions", str(int(min_partitions)))
    if max_records_per_partition:
        reader = reader.option("maxRecordsPerPartition", str(int(max_records_per_partition)))
    df = reader.load()
    # source, content (one row per Kafka record)
    return df.select(
        F.concat_ws("/", F.col(_KAFKA_TOPIC), F.col(_KAFKA_PARTITION).cast("string"),
                    F.col(_KAFKA_OFFSET).cast("string")).alias(SOURCE),
        F.coalesce(F.col(_KAFKA_VALUE), F.lit(b"").cast("binary")).alias(CONTENT),
    )


def ensure_topics(bootstrap: str, topics) -> list[str]:
    """Create the missing ones of ``topics`` (empty names are ignored) with the broker's default
    partition count and replication factor; returns the names created.

    The streaming job calls this before it subscribes: Spark's Kafka source fails the query on a
    topic that does not exist yet (``UnknownTopicOrPartitionException``), and the README's order
    is ``make up``, then the job, then ``soads simulate --kafka``. Topics that exist are left as
    they are. An unreachable broker raises (the job fails loudly at start).
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(dict.fromkeys(t for t in topics if t))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="soads-ensure-topics")
    try:
        have = set(admin.list_topics())
        missing = [t for t in wanted if t not in have]
        created = []
        for t in missing:
            try:
                # -1, -1: the broker's num.partitions and default.replication.factor (KIP-464)
                admin.create_topics([NewTopic(t, -1, -1)])
                created.append(t)
                logger.info("created Kafka topic %s", t)
            except TopicAlreadyExistsError:  # created meanwhile by a producer or another job
                pass
        return created
    finally:
        admin.close()


def read_files(spark, path: str, max_files_per_trigger: int | None = None):
    """New EPCIS files (``*.xml``, ``*.json``, ``*.jsonld``) in a directory -> documents
    (streaming; the embedded default's "Kafka").

    Returns
    -------
    DataFrame
        ``source`` (the file's path without a ``file:`` scheme), ``content`` (binary).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("path", T.StringType(), False),
        T.StructField("modificationTime", T.TimestampType(), False),
        T.StructField("length", T.LongType(), False),
        T.StructField("content", T.BinaryType(), True),
    ])
    reader = (spark.readStream.format("binaryFile").schema(schema)
              .option("pathGlobFilter", "*.{xml,json,jsonld}"))
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(int(max_files_per_trigger)))
    df = reader.load(path)
    return df.select(F.regexp_replace(F.col("path"), "^file:", "").alias(SOURCE),
                     F.col("content").alias(CONTENT))
