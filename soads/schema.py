"""Column names and Spark schemas of every SOADS table (DESIGN.md "Definitions").

Every other module takes column names and row kinds from here; none writes them as string
literals. The SQL DDL in ``sql/`` is generated from :data:`TABLES` (``python -m
soads.storage.ddl``; ``tests/test_storage.py`` checks it is current).
"""

# -- flat event (Event Log Preprocessor output, EVENT LOG TABLE) --------------------------
OID = "oid"
"""The EPC URN of the object (one flat event per EPC)."""
READ_POINT = "read_point"
EVENT_TIME = "event_time"
"""UTC. In the pure parser: an ISO-8601 string ``YYYY-MM-DDTHH:MM:SS.fffZ``; in Spark a timestamp."""
ACTION = "action"
BIZ_STEP = "biz_step"
DISPOSITION = "disposition"
BIZ_LOCATION = "biz_location"
EVENT_TYPE = "event_type"
SENSOR_REPORTS = "sensor_reports"
"""JSON text of the event's sensorElementList (None when it has none)."""
SOURCE = "source"
"""Identity of the source record: ``file:line`` or ``topic/partition/offset``."""

EVENT_COLUMNS = (
    OID, READ_POINT, EVENT_TIME, ACTION, BIZ_STEP, DISPOSITION, BIZ_LOCATION, EVENT_TYPE,
    SENSOR_REPORTS, SOURCE,
)

# -- quarantine -------------------------------------------------------------------------
REASON = "reason"
"""A reason code, one of :data:`REASONS`."""
DETAIL = "detail"
"""Human-readable detail (the parser's message), truncated."""
QUARANTINE_COLUMNS = (SOURCE, REASON, DETAIL)

REASONS = (
    "malformed_xml",       # not well-formed XML (truncated, garbage)
    "malformed_json",      # not valid JSON
    "binary",              # undecodable bytes / not text
    "unknown_format",      # neither an EPCIS XML nor an EPCIS JSON document
    "wrong_namespace",     # XML root not in an EPCIS namespace
    "unsupported_event",   # an event element that is not one of the five EPCIS event types
    "missing_event_time",
    "missing_read_point",
    "missing_epc",         # an event whose EPC list holds an empty <epc> entry
    "bad_timestamp",
    "too_large",           # a document above the configured size limit
    "unreadable",          # the file could not be read
    "no_instance_epc",     # a valid event with no instance-level EPC (quantities / parentID only)
)

# -- raw documents and parsed rows (soads.preprocess) --------------------------------------
CONTENT = "content"
"""Raw bytes of one EPCIS document (with its ``source``)."""
KIND = "kind"
"""Row kind of the parser's combined output: :data:`KIND_EVENT` or :data:`KIND_QUARANTINE`."""
KIND_EVENT = "event"
KIND_QUARANTINE = "quarantine"

# -- the event job's state step (soads.stream.state) ----------------------------------------
# Its rows (update_struct) are of three kinds; the relational sink (soads.storage.sinks) reads
# them back by these names.
KIND_RELATION = "relation"
"""An object's new (a, b) occurrences in a micro-batch (``freq``, ``support``)."""
KIND_LATE = "late"
"""A late event (the late/out-of-order policy of :mod:`soads.stream.state`)."""
KIND_OBJECT = "object"
"""An updated object: its session ``sequence`` and ``last_us`` (then scored)."""
TIME_US = "time_us"
"""Event time in microseconds since the epoch (UTC), as the state step carries it."""
LAST_US = "last_us"
"""Time of an object's last accepted read, microseconds since the epoch (UTC)."""
SEEN = "seen"
"""State column: the relations whose support the object's session already counted."""
CLOSED = "closed"
"""Whether an object row is an object's final one (the state evicted it: its END step is
scored), or a live one that may still move on."""
NEVER_LATE = "_never_late"
"""The state operators' watermark column: a constant no row is ever behind (Spark would drop
rows below the watermark before the state step sees them; the jobs' policies record them)."""

# -- sequences --------------------------------------------------------------------------
SEQUENCE = "sequence"
ATTRIBUTES = "attributes"
"""Per visit of a sequence, the event fields of its first read: a map keyed by
:data:`VISIT_ATTRIBUTES` (a null field has no key)."""
SENSOR_ALERT = "sensor_alert"
"""Visit attribute: the distinct ``exception`` values of the read's sensor reports
(``ALARM_CONDITION``, ``ERROR_CONDITION``), sorted and comma-joined; absent without one."""
VISIT_ATTRIBUTES = (BIZ_STEP, DISPOSITION, BIZ_LOCATION, ACTION, SENSOR_ALERT)
"""The keys of a visit's attribute map, in the order the map holds them."""
FIRST_TIME = "first_time"
LAST_TIME = "last_time"

# -- RELATIONAL DEPENDENCY TABLE ----------------------------------------------------------
A = "a"
B = "b"
FREQ = "freq"
SUPPORT = "support"

# -- PATTERN TABLE and mining runs --------------------------------------------------------
RUN_ID = "run_id"
PATTERN_ID = "pattern_id"
"""Rank of a pattern within its mining run (support descending, then pattern)."""
PATTERN = "pattern"
LENGTH = "length"
MAXIMAL = "maximal"
ALGORITHM = "algorithm"
MINSUP = "minsup"
MAX_LENGTH = "max_length"
N_SEQUENCES = "n_sequences"
N_PATTERNS = "n_patterns"
SECONDS = "seconds"
CREATED_AT = "created_at"

# -- scores ------------------------------------------------------------------------------
SCORE = "score"
"""Normalised alignment score in [0, 1] (DESIGN.md "Alignment score")."""
RAW = "raw"
"""max_p SW(s, p): the paper's raw alignment score."""
SURPRISAL = "surprisal"
"""Relation surprisal (soads.conformance): max -log P(b | a) over an object's relations."""
WINDOW_START = "window_start"
WINDOW_END = "window_end"
MEAN_SCORE = "mean_score"
N_OBJECTS = "n_objects"
SCORED_COLUMNS = (SCORE, RAW, PATTERN, RUN_ID)
"""What the stream's Anomaly Evaluator adds to an updated object's row
(soads.stream.score_stage)."""

# -- ground truth (simulator) ------------------------------------------------------------
LABEL = "label"
ANOMALY_TYPE = "anomaly_type"
NOISE = "noise"
"""The reader noise a simulated object has ('' or none: no noise), whatever its label."""

# -- context detector: verdicts, model runs, anomaly rate (soads.detect) -------------------
ANOMALY = "anomaly"
"""The context detector's object score: the worst step's excess surprisal (>= 0, higher = more
anomalous; soads.detect.context)."""
IS_ANOMALY = "is_anomaly"
"""A verdict: the score is at or above its threshold (the context detector's label-free
``log(100)``; the sensor model's own threshold in sensor_anomaly)."""
EXPLANATION = "explanation"
"""JSON text of the context detector's explanation of the worst step (null when no step was less
likely than typical): step, read_point, kind, attribute, value, probability, expected, context."""
MODEL_RUN_ID = "model_run_id"
"""The context detector's model run (detector_run.run_id) a verdict was made against."""
FEATURE = "feature"
"""A count row's feature: "" for control flow, else the attribute's name."""
CTX_ORDER = "ctx_order"
"""Length of a count row's context (0 = none)."""
CONTEXT = "context"
"""JSON list of a count row's context, nearest read point first (null element = START)."""
VALUE = "value"
"""A count row's next read point (null = END) or attribute value; an alert's: the number its rule
compared (a score, a rate, seconds since the last micro-batch)."""
COUNT = "count"
ROW_ID = "row_id"
"""Position of a count row in its run (the core's row order, ContextModel.to_rows)."""
N_ROWS = "n_rows"
SKIPPED = "skipped"
"""JSON list of the attributes a model run left out as nearly unique per event."""
CONF = "conf"
"""JSON object of the [detector] settings a model run was fitted with."""
HORIZON = "horizon"
"""Newest event time of the log a model run was fitted on: objects whose last read is more than
``stream.idle_seconds`` older were finished (closed) ones (soads.detect.runs.is_closed)."""
WRITER = "writer"
"""Which job wrote an anomaly_rate row: :data:`WRITER_BATCH` or :data:`WRITER_STREAM`."""
WRITER_BATCH, WRITER_STREAM = "batch", "stream"
FLAGGED = "flagged"
RATE = "rate"
VERDICT_COLUMNS = (ANOMALY, IS_ANOMALY, EXPLANATION, MODEL_RUN_ID)
"""What the stream's context detector adds to an object's row (soads.stream.score_stage)."""
SINK = "sink"
BATCH_ID = "batch_id"
"""A streaming sink's micro-batch id (the ledger's; on object_score: the event job's micro-batch
that wrote the row last, null when a batch command wrote it: the alert process reads new verdicts
by it)."""

# -- relational tables: name -> ordered (column, portable type) --------------------------
# Types: "text" (bounded key text), "longtext" (unbounded, not a key), "int", "bigint", "float",
# "bool", "timestamp", "json".
TABLES = {
    "relational_dependency": ((A, "text"), (B, "text"), (FREQ, "bigint"), (SUPPORT, "bigint")),
    "mining_run": (
        (RUN_ID, "text"), (ALGORITHM, "text"), (MINSUP, "bigint"), (MAX_LENGTH, "int"),
        (N_SEQUENCES, "bigint"), (N_PATTERNS, "bigint"), (SECONDS, "float"),
        (CREATED_AT, "timestamp"),
    ),
    "pattern": (
        (RUN_ID, "text"), (PATTERN_ID, "int"), (PATTERN, "json"), (SUPPORT, "bigint"),
        (LENGTH, "int"), (MAXIMAL, "bool"),
    ),
    "object_score": (
        (OID, "text"), (SCORE, "float"), (RAW, "float"), (PATTERN, "json"),
        (SURPRISAL, "float"), (LAST_TIME, "timestamp"), (RUN_ID, "text"),
        (ANOMALY, "float"), (IS_ANOMALY, "bool"), (EXPLANATION, "json"),
        (MODEL_RUN_ID, "text"), (BATCH_ID, "bigint"),
    ),
    "alignment_score": (
        (WINDOW_START, "timestamp"), (WINDOW_END, "timestamp"), (MEAN_SCORE, "float"),
        (N_OBJECTS, "bigint"), (RUN_ID, "text"),
    ),
}

# A model run of the context detector: its counts (the RELATIONAL DEPENDENCY TABLE is their
# order-1 control part between two read points, copied so a run never changes) and settings.
TABLES["detector_run"] = ((RUN_ID, "text"), (CREATED_AT, "timestamp"), (N_OBJECTS, "bigint"),
                          (N_ROWS, "bigint"), (SKIPPED, "json"), (CONF, "json"),
                          (SECONDS, "float"), (HORIZON, "timestamp"))
TABLES["detector_count"] = ((RUN_ID, "text"), (ROW_ID, "bigint"), (FEATURE, "text"),
                            (CTX_ORDER, "int"), (CONTEXT, "json"), (VALUE, "longtext"),
                            (COUNT, "bigint"))
# Per window of event time and read point: objects seen there, objects flagged there (an object
# counts at every read point on its path; flagged only at the read point of its worst step).
# ``writer`` keeps the batch scoring's rows (replaced with each run over its log) apart from the
# event job's (incremented as objects finish), so an object both see is never counted twice.
TABLES["anomaly_rate"] = ((WINDOW_START, "timestamp"), (WINDOW_END, "timestamp"),
                          (READ_POINT, "text"), (N_OBJECTS, "bigint"), (FLAGGED, "bigint"),
                          (RATE, "float"), (MODEL_RUN_ID, "text"), (WRITER, "text"))

# The batch ledger: a streaming sink records each batch id in the same transaction as its upsert.
TABLES["sink_batch"] = ((SINK, "text"), (BATCH_ID, "bigint"), (CREATED_AT, "timestamp"))

# Late events of the event job (soads.stream.state's policy): stored in the event log, but they
# create no relation and no score; recorded here in the same transaction as the relation counts.
TABLES["late_event"] = ((OID, "text"), (SOURCE, "text"), (READ_POINT, "text"),
                        (EVENT_TIME, "timestamp"))

# -- SENSOR ANOMALY TABLE and drift (soads.sensor.streaming, soads.sensor.drift) ------------
MACHINE_ID = "machine_id"
TS = "ts"
"""Reading time of a sensor reading (UTC); a window is reported at its last reading's ts."""
VALUES = "values"
"""A reading's sensor values: JSON object ``{sensor: value}`` (Kafka) / ``map<string, double>``."""
WINDOW = "window"
"""One window's readings, flattened row-major: ``window x n_sensors`` doubles."""
THRESHOLD = "threshold"
MODEL_VERSION = "model_version"
N_WINDOWS = "n_windows"
JSD = "jsd"
"""Jensen-Shannon divergence (base 2, in [0, 1]) of a time window's score histogram vs training."""
DRIFTED = "drifted"
KIND_WINDOW = "window"
"""Row kind of the sensor job's windows (beside :data:`KIND_QUARANTINE` rows)."""
TS_US = "ts_us"
"""A reading's ts in microseconds since the epoch (UTC), as the sensor job carries it."""
MACHINE_KEY = "_key"
"""The sensor job's grouping key: machine_id, or "" for a reading the parser rejected."""
TABLES["sensor_anomaly"] = ((MACHINE_ID, "text"), (WINDOW_END, "timestamp"), (SCORE, "float"),
                            (THRESHOLD, "float"), (IS_ANOMALY, "bool"), (MODEL_VERSION, "text"))
TABLES["sensor_drift"] = ((MODEL_VERSION, "text"), (WINDOW_START, "timestamp"),
                          (WINDOW_END, "timestamp"), (N_WINDOWS, "bigint"), (JSD, "float"),
                          (DRIFTED, "bool"))
# Sensor readings that make no window (soads.sensor.streaming's policy), written by the sensor
# sink in the same transaction as sensor_anomaly: source (topic/partition/offset or file:line),
# machine_id and ts when the reading had them, a reason code, detail (truncated).
TABLES["sensor_quarantine"] = ((SOURCE, "text"), (MACHINE_ID, "text"), (TS, "timestamp"),
                               (REASON, "text"), (DETAIL, "text"))
SENSOR_REASONS = (
    "malformed_json",      # not valid JSON (or an empty record)
    "not_a_reading",       # valid JSON, but not an object
    "missing_machine_id",  # absent, null or empty
    "bad_machine_id",      # not a string
    "missing_ts",          # absent or null
    "bad_timestamp",       # neither an ISO-8601 string nor epoch seconds
    "bad_value",           # values not an object, or a sensor value not a finite number / null
    "late",                # ts behind the query's watermark (newest ts - idle_seconds)
    "duplicate",           # same ts as the machine's last accepted reading
    "out_of_order",        # ts earlier than the machine's last accepted reading
)
DETAIL_CHARS = 200
"""Quarantine details are truncated to this many characters (the column holds 255)."""

# -- alerts (soads.alerts): Alertmanager-style alerts over what the jobs write ----------------
ALERT_ID = "alert_id"
"""One alert: its fingerprint and the time its condition first held (a fingerprint that fires
again after it resolved is a new alert)."""
FINGERPRINT = "fingerprint"
"""Prometheus' label-set fingerprint (FNV-1a 64 of the sorted labels, 16 hex digits)."""
RULE = "rule"
ALERTNAME = "alertname"
SEVERITY = "severity"
LABELS = "labels"
ANNOTATIONS = "annotations"
STATE = "state"
"""An alert's state: pending (condition holds, its ``for`` not yet over), firing, resolved."""
ACTIVE_AT, STARTS_AT, ENDS_AT, UPDATED_AT = "active_at", "starts_at", "ends_at", "updated_at"
KEEP_FIRING_SINCE = "keep_firing_since"
SILENCED_BY, INHIBITED_BY = "silenced_by", "inhibited_by"
"""JSON lists: the silences (ids) and the firing alerts (fingerprints) muting an alert."""
ACKED_BY, ACKED_AT = "acked_by", "acked_at"
TABLES["alert"] = ((ALERT_ID, "text"), (FINGERPRINT, "text"), (RULE, "text"),
                   (ALERTNAME, "text"), (SEVERITY, "text"), (LABELS, "json"),
                   (ANNOTATIONS, "json"), (STATE, "text"), (ACTIVE_AT, "timestamp"),
                   (STARTS_AT, "timestamp"), (ENDS_AT, "timestamp"), (UPDATED_AT, "timestamp"),
                   (VALUE, "float"), (KEEP_FIRING_SINCE, "timestamp"),
                   (SILENCED_BY, "json"), (INHIBITED_BY, "json"), (ACKED_BY, "text"),
                   (ACKED_AT, "timestamp"))
SILENCE_ID = "silence_id"
MATCHERS = "matchers"
"""JSON list of a silence's matchers as text (``line=2``, ``alertname=~Object.*``)."""
CREATED_BY = "created_by"
COMMENT = "comment"
TABLES["silence"] = ((SILENCE_ID, "text"), (MATCHERS, "json"), (STARTS_AT, "timestamp"),
                     (ENDS_AT, "timestamp"), (CREATED_BY, "text"), (COMMENT, "longtext"),
                     (CREATED_AT, "timestamp"))
NOTIFICATION_ID = "notification_id"
CHANNEL = "channel"
"""Where a notification or an action goes: kafka, webhook or alertmanager."""
TARGET = "target"
"""A notification's topic or URL; an action's target (an oid, a machine)."""
GROUP_KEY = "group_key"
PAYLOAD = "payload"
STATUS = "status"
"""Delivery status of a notification or an action: pending, delivered, failed (actions: acked)."""
ATTEMPTS = "attempts"
ERROR = "error"
SENT_AT = "sent_at"
# The outbox: every notification is written in the same transaction as the alert changes that
# made it, then delivered and marked (a restart delivers what is still pending).
TABLES["alert_notification"] = ((NOTIFICATION_ID, "text"), (CHANNEL, "text"), (TARGET, "text"),
                                (GROUP_KEY, "text"), (PAYLOAD, "longtext"), (STATUS, "text"),
                                (ATTEMPTS, "int"), (ERROR, "longtext"), (CREATED_AT, "timestamp"),
                                (SENT_AT, "timestamp"))
FIRING, RESOLVED, NOTIFIED_AT = "firing", "resolved", "notified_at"
# Alertmanager's notification log: per group, the firing and resolved fingerprints its last
# notification carried (JSON lists) and when; the grouping is restored from it after a restart.
TABLES["alert_group"] = ((GROUP_KEY, "text"), (FIRING, "json"), (RESOLVED, "json"),
                         (NOTIFIED_AT, "timestamp"))
ACTION_ID = "action_id"
ACTION_NAME = "action_name"
ACTION_TYPE = "action_type"
TABLES["alert_action"] = ((ACTION_ID, "text"), (ALERT_ID, "text"), (FINGERPRINT, "text"),
                          (ACTION_NAME, "text"), (ACTION_TYPE, "text"), (TARGET, "text"),
                          (CHANNEL, "text"), (PAYLOAD, "longtext"), (STATUS, "text"),
                          (ATTEMPTS, "int"), (ERROR, "longtext"), (CREATED_AT, "timestamp"),
                          (SENT_AT, "timestamp"), (ACKED_BY, "text"), (ACKED_AT, "timestamp"))
POSITION = "position"
"""How far the alert process has read a source (object_score: the last micro-batch id)."""
TABLES["alert_cursor"] = ((SOURCE, "text"), (POSITION, "bigint"), (UPDATED_AT, "timestamp"))

PRIMARY_KEYS = {
    "sensor_anomaly": (MACHINE_ID, WINDOW_END),
    "sensor_quarantine": (SOURCE,),
    "sensor_drift": (MODEL_VERSION, WINDOW_START),
    "late_event": (OID, SOURCE),
    "sink_batch": (SINK, BATCH_ID),
    "relational_dependency": (A, B),
    "mining_run": (RUN_ID,),
    "pattern": (RUN_ID, PATTERN_ID),
    "object_score": (OID,),
    "alignment_score": (WINDOW_START, RUN_ID),
    "detector_run": (RUN_ID,),
    "detector_count": (RUN_ID, ROW_ID),
    "anomaly_rate": (WINDOW_START, READ_POINT, MODEL_RUN_ID, WRITER),
    "alert": (ALERT_ID,),
    "silence": (SILENCE_ID,),
    "alert_notification": (NOTIFICATION_ID,),
    "alert_action": (ACTION_ID,),
    "alert_group": (GROUP_KEY,),
    "alert_cursor": (SOURCE,),
}

# Secondary indexes: one run's object_score rows by last_time, i.e. the objects of a window;
# object_score by batch_id, the verdicts a micro-batch wrote (the alert process reads on from
# the last one it saw); sensor_anomaly by window_end (the newest windows, every evaluation);
# alerts, notifications and actions by state.
# (The stream no longer recomputes a window from them: it moves each window's mean and count by
# the micro-batch's replaced and new scores, soads.storage.sinks.write_updates.)
INDEXES = {
    "object_score": ((RUN_ID, LAST_TIME), (BATCH_ID,)),
    "sensor_anomaly": ((WINDOW_END,),),
    "alert": ((STATE,), (FINGERPRINT,), (UPDATED_AT,)),
    "alert_notification": ((STATUS,),),
    "alert_action": ((STATUS,), (ALERT_ID,)),
}


def event_struct():
    """Spark schema of the EVENT LOG TABLE (imports pyspark lazily so pure cores stay free of it)."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(OID, T.StringType(), False),
         T.StructField(READ_POINT, T.StringType(), False),
         T.StructField(EVENT_TIME, T.TimestampType(), False)]
        + [T.StructField(c, T.StringType(), True)
           for c in (ACTION, BIZ_STEP, DISPOSITION, BIZ_LOCATION, EVENT_TYPE, SENSOR_REPORTS)]
        + [T.StructField(SOURCE, T.StringType(), False)]
    )


def quarantine_struct():
    """Spark schema of the quarantine table: source, reason, detail."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(c, T.StringType(), False) for c in QUARANTINE_COLUMNS])


def sequence_struct():
    """Spark schema of extracted sequences: oid, sequence array<string>, attributes
    array<map<string, string>> (one map per visit), first_time, last_time."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(OID, T.StringType(), False),
        T.StructField(SEQUENCE, T.ArrayType(T.StringType(), False), False),
        T.StructField(ATTRIBUTES, T.ArrayType(
            T.MapType(T.StringType(), T.StringType(), False), False), False),
        T.StructField(FIRST_TIME, T.TimestampType(), True),
        T.StructField(LAST_TIME, T.TimestampType(), True),
    ])
