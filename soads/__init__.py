"""SOADS: Scalable Online Anomaly Detection System (paper 001, sections 3-4).

Data flow (DESIGN.md), each box -> its module::

    EPCIS XML / JSON-LD documents (files; Kafka in the streaming job)
      -> Event Log Preprocessor        soads.epcis (pure parser), soads.preprocess (Spark)
           bad input -> quarantine     (reason codes: soads.schema.REASONS)
      -> EVENT LOG TABLE               soads.storage.event_log (Parquet | HBase)
      -> Sequence Extractor            soads.sequences
      -> Relational Dependency Updater soads.dependencies -> RELATIONAL DEPENDENCY TABLE
      -> Frequent Subsequence Miner    soads.mining (modified PrefixSpan, paper Alg. 1)
                                       -> PATTERN TABLE
      -> Anomaly Evaluator             soads.scoring (Smith-Waterman) -> object scores,
                                       ALIGNMENT SCORE TABLE (per-window mean)
    Event job (the boxes above per     soads.stream: parse_stage -> state -> score_stage,
      micro-batch, exactly once)       wired once in soads.stream.job; its relational sink
                                       soads.storage.sinks
    Sensor job                         soads.sensor (windows -> LSTM-AE -> SENSOR ANOMALY
                                       TABLE); streaming: soads.sensor.streaming, its sink
                                       soads.storage.sensor_sink
    Relational tables                  soads.storage.tables (SQLite | MySQL via SQLAlchemy)
    Battery-plant simulator            soads.simulator (EPCIS + ground truth)
    Detection quality                  soads.evaluate
    Batch pipeline / demo              soads.pipeline; command line: soads.cli
    Case files (score --input)         soads.cases (JSON lines, XES; plain or gzipped)
"""

__version__ = "0.1.0"
