"""The event job (DESIGN.md "Data flow", "Streaming guarantees"): EPCIS documents from Kafka (or
a directory) -> EVENT LOG TABLE + quarantine, per-oid Relational Dependency Updater ->
RELATIONAL DEPENDENCY TABLE, Anomaly Evaluator and context detector -> object_score and
ALIGNMENT SCORE TABLE, exactly once. In the order the data flows::

    parse_stage   EventStore: parse + event log + quarantine, on the executors
    state         the per-oid step (pure) and the state operators; the late/out-of-order policy
    score_stage   ObjectScorer, PatternCache, ModelCache: the stream's Anomaly Evaluator and
                  context detector (newest mining run, newest model run), on the executors
    job           start_event_queries(spark, cfg): the one place that wires the query
    checkpoint    the state operator's mark and the committed micro-batches of a checkpoint

The relational writer of each micro-batch is a sink: :mod:`soads.storage.sinks`.
"""
