"""Configuration: one frozen dataclass per ``conf/*.toml`` section, and :func:`load`, the one
loader of every section.

Config enters at the job (``jobs/``, the CLI, ``python -m soads.services``) and travels as
arguments; library functions never read files or environment variables.

Sections: ``[spark] [storage] [preprocess] [sequences] [mining] [scoring] [simulator] [stream]``
(conf/soads.toml, conf/services-stream.toml), ``[sensor]`` with ``[sensor.presets.<name>]
[sensor.skab] [sensor.stream] [sensor.drift] [sensor.train]`` (conf/sensor.toml), and the real
services' ``[services] [kafka] [mariadb] [hbase] [alertmanager]`` (conf/services.toml). A file
may hold any of them; later files and ``--set section.key=value`` overrides win. Every value is
checked against its field's type; a wrong value or an unknown key is a one-line
:class:`ConfigError` naming it.

The database password is never in a committed file: :func:`load` takes it from the environment,
``SOADS_DB_PASSWORD`` or the file named by ``SOADS_DB_PASSWORD_FILE``, into ``[mariadb]`` and
into ``storage.db_url`` when it is a MySQL URL that carries a user but no password.

``[storage]`` is the one place of the event log and the database: the event job (``[stream]``)
and the sensor job (``[sensor.stream]``) write where the batch commands read.

``[alerts]`` (a table per rule, ``[[alerts.inhibit]]``) and ``[actions]`` (``[[actions.rules]]``)
are the alert rules and the actions they start (conf/alerts.toml, conf/actions.toml;
soads.alerts); an array of tables loads as a tuple of its dataclass.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote_plus, urlsplit, urlunsplit


# ---------------------------------------------------------------------------------------------
# the event jobs (conf/soads.toml, conf/services-stream.toml)

@dataclass(frozen=True)
class SparkConf:
    master: str = "local[*]"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    app_name: str = "soads"
    java_options: str = ""
    """Extra JVM options of the driver and the executors (``spark.{driver,executor}.
    extraJavaOptions``), e.g. ``-XX:TieredStopAtLevel=1`` for the streaming job."""
    whole_stage_codegen: bool = True
    """``spark.sql.codegen.wholeStage``."""
    codegen_factory_mode: str = ""
    """``spark.sql.codegen.factoryMode`` (empty: Spark's default, ``FALLBACK``): ``NO_CODEGEN``
    builds projections interpreted instead of generating their code in every task."""
    checkpoint_file_manager: str = ""
    """``spark.sql.streaming.checkpointFileManagerClass`` (empty: Spark's default)."""


@dataclass(frozen=True)
class StorageConf:
    """The one place of every location the jobs share: the batch commands, the event job and
    the sensor job all write and read the EVENT LOG TABLE at ``event_log`` and the tables at
    ``db_url`` (:func:`event_log_location`)."""

    root: str = "soads-data"
    db_url: str = "sqlite:///soads-data/soads.db"
    """SQLAlchemy URL of the tables (SQLite or MySQL/MariaDB)."""
    event_log: str = ""
    """Where the EVENT LOG TABLE lives: ``hbase://host:port/prefix`` or a directory (Parquet);
    empty means ``<root>`` (Parquet)."""


@dataclass(frozen=True)
class PreprocessConf:
    max_document_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class SequencesConf:
    """The ``[sequences]`` section: how RFID reads become a path (reader noise is not an anomaly).

    ``dwell_seconds``: repeated reads of one read point this close are one visit.
    ``missed_read_rate``: the chance a reader misses a read; the context detector forgives one
    missed read at that price (soads.detect.context). Case files (``soads score --input``) are
    recorded logs taken as given: no de-duplication, no missed reads.
    """

    dwell_seconds: float = 60.0
    missed_read_rate: float = 0.05


@dataclass(frozen=True)
class MiningConf:
    algorithm: str = "soads"
    minsup: float = 0.01
    max_length: int = 25
    relations: str = "recompute"
    """Where the miner's RELATIONAL DEPENDENCY TABLE comes from: ``recompute`` (from the event
    log, and written to the table) or ``table`` (read as the streaming job left it)."""


@dataclass(frozen=True)
class ScoringConf:
    match: float = 2.0
    mismatch: float = -1.0
    gap_open: float = -2.0
    gap_extend: float = -1.0
    maximal_only: bool = False
    window_seconds: int = 3600


@dataclass(frozen=True)
class DetectorConf:
    """The ``[detector]`` section: the context detector (soads.detect.context explains each)."""

    max_context: int = 3          # longest run of preceding read points used as a context
    pseudo_count: float = 1.0     # smoothing: p = (count + pseudo_count) / (N + pseudo_count)
    unique_ratio: float = 0.5     # attributes with more distinct values per occurrence are left out
    threshold: float = 4.605170185988092  # log(100): a step 100x less likely than typical
    attribute_context: int = 2    # 2: (read point, previous read point); 1: read point only


@dataclass(frozen=True)
class SimulatorConf:
    objects: int = 20000
    seed: int = 7
    anomaly_rate: float = 0.04
    noise_rate: float = 0.05
    attribute_anomaly_rate: float = 0.04
    format: str = "xml"
    events_per_file: int = 20000


@dataclass(frozen=True)
class StreamConf:
    """The ``[stream]`` section (``conf/services-stream.toml``).

    ``source`` is ``kafka`` (``kafka_bootstrap``, ``topic``) or ``files`` (``input_path``).
    An empty ``quarantine_topic`` writes no quarantine topic. The job writes the event log and
    the tables where ``[storage]`` says (:func:`event_log_location`, ``storage.db_url``), so the
    batch commands read what it wrote.
    """

    source: str = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "soads-events"
    quarantine_topic: str = "soads-quarantine"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 200
    min_partitions: int = 0
    """Kafka ``minPartitions``: split a micro-batch's offset ranges into at least this many Spark
    tasks (0: one task per topic partition)."""
    max_records_per_partition: int = 0
    """Kafka ``maxRecordsPerPartition``: at most this many records per Spark task (0: no
    limit). With ``min_partitions`` it sizes the tasks by the batch: a small micro-batch (low
    input rate) runs ``min_partitions`` tasks, a full one more."""
    input_path: str = ""
    max_files_per_trigger: int = 20
    checkpoint_root: str = "soads-data/checkpoints"
    trigger_seconds: float = 5.0
    watermark_seconds: float = 600.0
    idle_seconds: float = 3600.0
    max_visits: int = 1000
    state_operator: str = "jvm"
    """The per-oid state step: ``jvm`` (the Java port, soads/java/RelationUpdater.java, built by
    :mod:`soads.jvm`; needs a JDK) or ``python`` (applyInPandasWithState, the oracle). Part of the
    checkpoint: a checkpoint made with one cannot be resumed with the other."""


# ---------------------------------------------------------------------------------------------
# the sensor jobs (conf/sensor.toml)

SKAB_SENSORS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
                "Thermocouple", "Voltage", "Volume Flow RateRMS")
"""The default ``[sensor.stream] sensors``: SKAB's eight (the same names as
:data:`soads.sensor.skab.SKAB_SENSORS`; config imports no sensor code, a test keeps them equal)."""


@dataclass(frozen=True)
class PresetConf:
    """One ``[sensor.presets.<name>]`` table: :class:`soads.sensor.lstm_ae.LSTMAutoencoder`
    keyword arguments. A key left out (None) takes the model's own default."""

    window: int | None = None
    hidden_size: int | None = None
    latent_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    error_vector: str | None = None
    shrinkage: float | None = None
    smoothing: int | None = None
    score_method: str | None = None
    fpr: float | None = None
    seed: int | None = None
    n_threads: int | None = None

    def kwargs(self) -> dict:
        """The keys that are set, as keyword arguments."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SkabConf:
    """``[sensor.skab]``: :func:`soads.sensor.skab.evaluate_skab` keyword arguments (None:
    its own default); ``pretrain_params`` override the preset for the pre-training run."""

    pretrain: bool | None = None
    pretrain_params: PresetConf | None = None
    threshold_factor: float | None = None
    inflate_scale: bool | None = None
    train_rows: int | None = None

    def kwargs(self) -> dict:
        out = {k: getattr(self, k) for k in ("pretrain", "threshold_factor", "inflate_scale",
                                             "train_rows") if getattr(self, k) is not None}
        if self.pretrain_params is not None:
            out["pretrain_params"] = self.pretrain_params.kwargs()
        return out


@dataclass(frozen=True)
class SensorStreamConf:
    """Sensor job: ``source`` is ``kafka`` (``kafka_bootstrap``, ``topic``) or ``files``
    (``input_path``: a directory of JSON-lines files, one reading a line). Its tables go to
    ``storage.db_url``."""

    source: str = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "soads-sensor-readings"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 5000
    input_path: str = ""
    registry: str = "soads-data/sensor-models"
    checkpoint_root: str = "soads-data/checkpoints"
    trigger_seconds: float = 2.0
    idle_seconds: float = 3600.0
    window: int = 10
    sensors: tuple[str, ...] = SKAB_SENSORS


@dataclass(frozen=True)
class DriftConf:
    window_seconds: int = 3600
    bins: int = 20
    value_range: float = 2.0
    bound: float = 0.1
    min_windows: int = 100


@dataclass(frozen=True)
class TrainConf:
    every_seconds: float = 86400.0
    check_seconds: float = 60.0
    promote: bool = False


@dataclass(frozen=True)
class SensorConf:
    preset: str = "skab"
    presets: dict[str, PresetConf] = field(default_factory=dict)
    skab: SkabConf = field(default_factory=SkabConf)
    stream: SensorStreamConf = field(default_factory=SensorStreamConf)
    drift: DriftConf = field(default_factory=DriftConf)
    train: TrainConf = field(default_factory=TrainConf)

    def params(self, preset: str | None = None) -> dict:
        """LSTMAutoencoder keyword arguments of ``preset`` (default: the configured one)."""
        name = preset or self.preset
        if name not in self.presets:
            raise KeyError(f"unknown sensor preset {name!r}")
        return self.presets[name].kwargs()


# ---------------------------------------------------------------------------------------------
# alerts and actions (conf/alerts.toml, conf/actions.toml; soads.alerts)

SEVERITIES = ("info", "warning", "critical")
"""The ``severity`` label's values, least to most urgent (the pipeline paper's tiers, 004)."""
ACTION_TYPES = ("hold_object", "stop_machine", "slow_machine", "recalibrate",
                "maintenance_order", "notify_team")
"""What an action asks for (paper 003, section 3.7 and Table 8)."""
ACTION_CHANNELS = ("kafka", "webhook")

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


def split_matcher(text: str) -> tuple[str, str, str]:
    """``(name, op, value)`` of a label matcher written as Alertmanager writes one: ``name=value``,
    ``name!=value``, ``name=~regex``, ``name!~regex``; the value may be double-quoted. A bad
    matcher (or regex) is a ValueError with one line.

    >>> split_matcher('line=~"2|3"'), split_matcher("severity = critical")
    (('line', '=~', '2|3'), ('severity', '=', 'critical'))
    >>> split_matcher("line=~(")
    Traceback (most recent call last):
    ...
    ValueError: bad matcher 'line=~(': missing ), unterminated subpattern at position 0
    """
    m = _MATCHER.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad matcher {text!r}: expected name=value, name!=value, "
                         f"name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"bad matcher {text!r}: {e}") from None
    return name, op, value


@dataclass(frozen=True)
class RuleConf:
    """What every alert rule has: ``enabled``; ``for_seconds``, how long its condition must hold
    before the alert fires (pending until then; 0: at once); ``keep_firing_for_seconds``, how long a
    firing alert stays firing after its condition was last seen (Prometheus ``keep_firing_for``;
    for rules fed only new rows, such as an object's verdict); ``severity``, its tier."""

    enabled: bool = True
    for_seconds: float = 0.0
    keep_firing_for_seconds: float = 0.0
    severity: str = "warning"


@dataclass(frozen=True)
class ObjectAnomalyRule(RuleConf):
    """An object's verdict (object_score ``is_anomaly``): ``severity`` at the verdict's threshold,
    critical from ``critical_above`` (``anomaly``, nats of excess surprisal; log(10^4))."""

    keep_firing_for_seconds: float = 900.0
    critical_above: float = 9.210340371976184


@dataclass(frozen=True)
class RateRule(RuleConf):
    """The anomaly rate (flagged / objects) of a read point or a line: the newest
    ``recent_windows`` windows against the ``baseline_windows`` before them. Fires when the recent
    rate is at least ``factor`` x the baseline AND ``min_increase`` above it, over at least
    ``min_objects`` objects (in both parts); critical at ``critical_factor`` x."""

    for_seconds: float = 60.0
    recent_windows: int = 1
    baseline_windows: int = 6
    factor: float = 2.0
    critical_factor: float = 4.0
    min_increase: float = 0.02
    min_objects: int = 20


@dataclass(frozen=True)
class AlignmentDropRule(RuleConf):
    """The alignment score's window mean (alignment_score ``mean_score``): the newest
    ``recent_windows`` against the ``baseline_windows`` before them, weighted by objects; fires on a
    drop of at least ``drop``, over at least ``min_objects`` objects in both parts."""

    for_seconds: float = 60.0
    recent_windows: int = 1
    baseline_windows: int = 6
    drop: float = 0.1
    min_objects: int = 20


@dataclass(frozen=True)
class SensorAnomalyRule(RuleConf):
    """``consecutive`` anomalous windows in a row of one machine (sensor_anomaly); critical from
    ``critical_consecutive``."""

    consecutive: int = 5
    critical_consecutive: int = 20


@dataclass(frozen=True)
class StreamStalledRule(RuleConf):
    """No micro-batch committed (sink_batch ``created_at``) for ``stalled_seconds`` by a sink of
    ``sinks`` (empty: every sink with a row) while its input has a backlog."""

    severity: str = "critical"
    stalled_seconds: float = 120.0
    sinks: tuple[str, ...] = ("events",)


@dataclass(frozen=True)
class ConsumerLagRule(RuleConf):
    """A job's Kafka consumer lag (records behind the newest offsets) above ``max_lag``."""

    for_seconds: float = 30.0
    max_lag: int = 20000


@dataclass(frozen=True)
class QuarantineRateRule(RuleConf):
    """A job's quarantined / read records above ``max_rate`` over at least ``min_records``."""

    max_rate: float = 0.05
    min_records: int = 100


@dataclass(frozen=True)
class InhibitRule:
    """Alertmanager's ``inhibit_rules`` entry: a firing alert matching every ``source_matchers``
    mutes the alerts matching every ``target_matchers`` that have the same values of ``equal``."""

    source_matchers: tuple[str, ...] = ()
    target_matchers: tuple[str, ...] = ()
    equal: tuple[str, ...] = ()


PROCESS_ALERTS = ("ObjectAnomaly|ReadPointAnomalyRate|LineAnomalyRate|AlignmentScoreDrop"
                  "|SensorAnomaly|SensorDrift")
PIPELINE_ALERTS = "StreamStalled|ConsumerLagHigh|QuarantineRateHigh"

DEFAULT_INHIBIT = (
    # a pipeline in trouble mutes the anomaly alerts of its own job it would cause
    InhibitRule((f"alertname=~{PIPELINE_ALERTS}",), (f"alertname=~{PROCESS_ALERTS}",), ("job",)),
    # a critical alert mutes the warning of the same thing (Alertmanager's own example)
    InhibitRule(("severity=critical",), ("severity=warning",),
                ("alertname", "oid", "read_point", "line", "machine_id")),
)


@dataclass(frozen=True)
class AlertsConf:
    """The ``[alerts]`` section (conf/alerts.toml; soads.alerts): evaluation, grouping and
    delivery, one table per rule, and ``[[alerts.inhibit]]`` rules. Durations in seconds."""

    evaluation_seconds: float = 0.5
    line_pattern: str = r"-L(\d+)-"
    """Regex whose group 1 is a read point's line (the simulator's ``CNV-L2-ASM``: line 2)."""
    group_by: tuple[str, ...] = ("alertname", "line")
    group_wait_seconds: float = 10.0
    group_interval_seconds: float = 60.0
    repeat_interval_seconds: float = 14400.0
    """0: a group that has not changed is never notified again."""
    receiver: str = "soads"
    webhook_urls: tuple[str, ...] = ()
    webhook_retries: int = 3
    """Retries of a webhook POST that failed in a way that may pass (5xx, 408, 429, a timeout,
    a refused connection) before it is recorded as failed."""
    webhook_backoff_seconds: float = 0.5
    """Wait before the first retry, doubled at each next one (at most 30 s)."""
    webhook_timeout_seconds: float = 5.0
    """How long one webhook POST may take."""
    alertmanager_url: str = "http://127.0.0.1:9095"
    external_url: str = "http://127.0.0.1:9095"
    alerts_topic: str = "soads-alerts"
    actions_topic: str = "soads-actions"
    object_anomaly: ObjectAnomalyRule = field(default_factory=ObjectAnomalyRule)
    read_point_rate: RateRule = field(default_factory=RateRule)
    line_rate: RateRule = field(default_factory=RateRule)
    alignment_drop: AlignmentDropRule = field(default_factory=AlignmentDropRule)
    sensor_anomaly: SensorAnomalyRule = field(default_factory=SensorAnomalyRule)
    sensor_drift: RuleConf = field(default_factory=RuleConf)
    stream_stalled: StreamStalledRule = field(default_factory=StreamStalledRule)
    consumer_lag: ConsumerLagRule = field(default_factory=ConsumerLagRule)
    quarantine_rate: QuarantineRateRule = field(default_factory=QuarantineRateRule)
    inhibit: tuple[InhibitRule, ...] = DEFAULT_INHIBIT

    def rule(self, name: str) -> RuleConf | None:
        """The settings of rule ``name`` (a field above), None for an unknown name."""
        return getattr(self, name) if name in ALERT_RULES else None


ALERT_RULES = ("object_anomaly", "read_point_rate", "line_rate", "alignment_drop",
               "sensor_anomaly", "sensor_drift", "stream_stalled", "consumer_lag",
               "quarantine_rate")
"""The rule tables of ``[alerts]``: the rule names alerts carry (soads.alerts.rules)."""


@dataclass(frozen=True)
class ActionRule:
    """One ``[[actions.rules]]`` entry: alerts matching every ``matchers`` (and carrying the
    ``target_label``) get action ``name`` of ``type``, sent on ``channel`` (``kafka``: the
    ``[alerts] actions_topic``; ``webhook``: POST to ``url``)."""

    name: str = ""
    type: str = "notify_team"
    matchers: tuple[str, ...] = ()
    target_label: str = ""
    channel: str = "kafka"
    url: str = ""


DEFAULT_ACTIONS = (
    ActionRule("hold_object", "hold_object", ("alertname=ObjectAnomaly", "severity=critical"),
               "oid"),
    ActionRule("inspect_object", "notify_team", ("alertname=ObjectAnomaly", "severity=warning"),
               "oid"),
    ActionRule("line_maintenance", "maintenance_order",
               ("alertname=~ReadPointAnomalyRate|LineAnomalyRate", "severity=critical"), "line"),
    ActionRule("stop_machine", "stop_machine", ("alertname=SensorAnomaly", "severity=critical"),
               "machine_id"),
    ActionRule("slow_machine", "slow_machine", ("alertname=SensorAnomaly", "severity=warning"),
               "machine_id"),
    ActionRule("recalibrate", "recalibrate", ("alertname=SensorDrift",), "model_version"),
    ActionRule("page_operations", "notify_team", (f"alertname=~{PIPELINE_ALERTS}",), "job"),
)


@dataclass(frozen=True)
class ActionsConf:
    """The ``[actions]`` section (conf/actions.toml): which alerts start which actions."""

    enabled: bool = True
    rules: tuple[ActionRule, ...] = DEFAULT_ACTIONS


# ---------------------------------------------------------------------------------------------
# the real services for development and tests (conf/services.toml; soads.services)

@dataclass(frozen=True)
class ServicesConf:
    root: str = "~/.cache/soads/services"
    """Data, logs and pid files of each service under ``<root>/<name>``."""
    jars: str = "~/.cache/soads/jars"
    """Maven jars (Kafka broker, Spark's Kafka connector, HBase) under ``<jars>/...``."""
    start_timeout: float = 180.0


@dataclass(frozen=True)
class KafkaConf:
    version: str = "4.3.1"
    spark_connector_version: str = "4.2.0"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    message_max_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class MariaDBConf:
    host: str = "127.0.0.1"
    port: int = 3306
    database: str = "soads"
    user: str = "soads"
    password: str = field(default="", repr=False)
    """Never read from a file's ``[mariadb]``: :func:`load` fills it from the environment."""


@dataclass(frozen=True)
class HBaseConf:
    host: str = "127.0.0.1"
    master_port: int = 16000
    regionserver_port: int = 16020
    zookeeper_port: int = 2181
    thrift_port: int = 9090
    thrift_bind: str = ""
    """Address the Thrift server listens on; empty: ``host`` (the docker image: 0.0.0.0)."""
    master_heap: str = "2g"
    thrift_heap: str = "256m"
    start_timeout: float = 240.0


@dataclass(frozen=True)
class AlertmanagerConf:
    """Prometheus Alertmanager (soads.services.alertmanager; alerts pushed by
    soads.alerts.delivery to ``http://host:port/api/v2/alerts``)."""
    host: str = "127.0.0.1"
    port: int = 9095
    """Not Alertmanager's usual 9093: that is the Kafka controller's port here."""
    group_by: tuple[str, ...] = ("alertname", "line")
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    resolve_timeout: str = "5m"
    """An alert posted without an end time resolves after this long without a repeat."""
    webhook_url: str = ""
    """Empty: the receiver ``default`` only keeps the alerts (shown by the API and UI)."""
    external_url: str = ""
    """``--web.external-url`` (links in notifications); empty: Alertmanager's default."""
    retention: str = "120h"
    log_level: str = "info"

    @property
    def url(self) -> str:
        """Base URL of its API (``/api/v2/...`` under it).

        >>> AlertmanagerConf().url
        'http://127.0.0.1:9095'
        """
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    spark: SparkConf = field(default_factory=SparkConf)
    storage: StorageConf = field(default_factory=StorageConf)
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)
    sequences: SequencesConf = field(default_factory=SequencesConf)
    mining: MiningConf = field(default_factory=MiningConf)
    scoring: ScoringConf = field(default_factory=ScoringConf)
    detector: DetectorConf = field(default_factory=DetectorConf)
    simulator: SimulatorConf = field(default_factory=SimulatorConf)
    stream: StreamConf = field(default_factory=StreamConf)
    sensor: SensorConf = field(default_factory=SensorConf)
    alerts: AlertsConf = field(default_factory=AlertsConf)
    actions: ActionsConf = field(default_factory=ActionsConf)
    services: ServicesConf = field(default_factory=ServicesConf)
    kafka: KafkaConf = field(default_factory=KafkaConf)
    mariadb: MariaDBConf = field(default_factory=MariaDBConf)
    hbase: HBaseConf = field(default_factory=HBaseConf)
    alertmanager: AlertmanagerConf = field(default_factory=AlertmanagerConf)


class ConfigError(ValueError):
    """A configuration file, override or environment value that does not fit the sections."""


# ---------------------------------------------------------------------------------------------
# loading

PASSWORD_ENV = "SOADS_DB_PASSWORD"
PASSWORD_FILE_ENV = "SOADS_DB_PASSWORD_FILE"
# other environment variable -> key (applied after the files, before the overrides)
ENV_KEYS = {"SOADS_SERVICES_ROOT": "services.root", "SOADS_DB_USER": "mariadb.user"}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str) -> Any:
    """``value`` (from TOML, or a string from an override) as type ``tp``, or a ConfigError.

    Examples
    --------
    >>> _coerce("yes", bool, "k"), _coerce("3", int, "k"), _coerce(2, float, "k")
    (True, 3, 2.0)
    >>> _coerce("a,b", tuple[str, ...], "k")
    ('a', 'b')
    >>> _coerce("maybe", bool, "sensor.train.promote")
    Traceback (most recent call last):
    ...
    soads.config.ConfigError: sensor.train.promote: expected true or false, got 'maybe'
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: None is "unset"
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is dict:  # [sensor.presets.<name>]: named tables of one dataclass
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        item = typing.get_args(tp)[1]
        return {name: _coerce(v, item, f"{key}.{name}") for name, v in value.items()}
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):  # [[arrays]]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{key}: expected an array of tables ([[{key}]]), got {value!r}")
        return tuple(_build(typing.get_args(tp)[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:  # a TOML list, or "a,b,c" from an override
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(i.strip() for i in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or (tp is int and isinstance(value, float)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        if isinstance(value, (int, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # a field this loader lacks


MOVED = {"stream.event_log": "storage.event_log", "stream.db_url": "storage.db_url",
         "sensor.stream.db_url": "storage.db_url"}
"""Keys that moved (old -> new): every job writes and reads the locations of ``[storage]``."""


def _build(cls, values: Mapping[str, Any], where: str = ""):
    """``cls()`` with ``values`` checked and coerced; unknown keys are an error (one that moved
    says where to). A nested table starts from its own defaults, so a file may set one key of it.

    >>> _build(StreamConf, {"db_url": "sqlite:///x.db"}, "stream")
    Traceback (most recent call last):
    ...
    soads.config.ConfigError: stream.db_url: moved to storage.db_url (one database for every job)
    """
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    for key in unknown:
        dotted = f"{where}.{key}" if where else key
        if dotted in MOVED:
            what = "event log" if MOVED[dotted].endswith("event_log") else "database"
            raise ConfigError(f"{dotted}: moved to {MOVED[dotted]} (one {what} for every job)")
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    return dataclasses.replace(cls(), **{
        k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()})


def _merge(into: dict, values: Mapping[str, Any]) -> None:
    """Deep-merge TOML tables: a later file replaces keys, not whole nested tables."""
    for k, v in values.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _set(tree: dict, dotted: str, value: str, item: str) -> None:
    parts = [p.strip() for p in dotted.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {p} is a value, not a table")
    node[parts[-1]] = value


def db_password(env: Mapping[str, str]) -> str | None:
    """The database password from ``SOADS_DB_PASSWORD``, else from the file named by
    ``SOADS_DB_PASSWORD_FILE`` (its first line), else None.

    Examples
    --------
    >>> db_password({"SOADS_DB_PASSWORD": "s3cret"}), db_password({})
    ('s3cret', None)
    """
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    path = env.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            first = fh.readline().rstrip("\r\n")
    except OSError as e:
        raise ConfigError(f"{PASSWORD_FILE_ENV}={path}: cannot read it ({e.strerror})") from e
    if not first:
        raise ConfigError(f"{PASSWORD_FILE_ENV}={path}: the file is empty")
    return first


def redact(text: str) -> str:
    """``text`` with the password of every URL in it masked, for messages and logs (a db_url
    carries the password :func:`with_password` filled in).

    >>> redact("cannot read from mysql+pymysql://soads:s3cret@127.0.0.1:3306/soads: refused")
    'cannot read from mysql+pymysql://soads:***@127.0.0.1:3306/soads: refused'
    >>> redact("sqlite:///soads-data/soads.db")
    'sqlite:///soads-data/soads.db'
    """
    return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def with_password(url: str, password: str | None, key: str) -> str:
    """A MySQL ``url`` with ``password`` filled in when it names a user but no password; any
    other URL unchanged.

    Examples
    --------
    >>> with_password("mysql+pymysql://soads@127.0.0.1:3306/soads", "a'b", "storage.db_url")
    'mysql+pymysql://soads:a%27b@127.0.0.1:3306/soads'
    >>> with_password("sqlite:///soads-data/soads.db", None, "storage.db_url")
    'sqlite:///soads-data/soads.db'
    """
    parts = urlsplit(url)
    if not parts.scheme.startswith("mysql") or parts.password is not None:
        return url
    if password is None:
        raise ConfigError(f"{key}: the MySQL URL has no password; set {PASSWORD_ENV} or "
                          f"{PASSWORD_FILE_ENV} (make up writes a development one)")
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        raise ConfigError(f"{key}: the MySQL URL names no user (mysql+pymysql://USER@host/db)")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote_plus(password)}@{host}"))


def _check_alerts(alerts: AlertsConf, actions: ActionsConf) -> None:
    """The values of ``[alerts]`` and ``[actions]`` a type alone does not check (a tier, a
    matcher, a regex, a channel), as a one-line ConfigError naming the key."""
    def check(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {why}")

    try:
        check(re.compile(alerts.line_pattern).groups >= 1, "alerts.line_pattern",
              "needs a group (the line)")
    except re.error as e:
        raise ConfigError(f"alerts.line_pattern: bad regex ({e})") from None
    for name in ("evaluation_seconds", "group_wait_seconds", "group_interval_seconds",
                 "repeat_interval_seconds", "webhook_retries", "webhook_backoff_seconds"):
        check(getattr(alerts, name) >= 0, f"alerts.{name}", "must be >= 0")
    check(alerts.webhook_timeout_seconds > 0, "alerts.webhook_timeout_seconds", "must be > 0")
    check(alerts.evaluation_seconds > 0 and alerts.group_interval_seconds > 0,
          "alerts.evaluation_seconds", "evaluation and group interval must be > 0")
    for i, url in enumerate(alerts.webhook_urls):
        check(url.startswith(("http://", "https://")), f"alerts.webhook_urls[{i}]",
              f"expected an http(s) URL, got {url!r}")
    check(alerts.alertmanager_url == "" or alerts.alertmanager_url.startswith(
        ("http://", "https://")), "alerts.alertmanager_url",
        f"expected an http(s) URL or \"\" (off), got {alerts.alertmanager_url!r}")
    for name in ALERT_RULES:
        rule = getattr(alerts, name)
        check(rule.severity in SEVERITIES, f"alerts.{name}.severity",
              f"expected one of {', '.join(SEVERITIES)}, got {rule.severity!r}")
        for k, v in dataclasses.asdict(rule).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                check(v >= 0, f"alerts.{name}.{k}", f"must be >= 0, got {v!r}")
    matchers = [(f"alerts.inhibit[{i}].{side}", m) for i, r in enumerate(alerts.inhibit)
                for side in ("source_matchers", "target_matchers") for m in getattr(r, side)]
    for i, a in enumerate(actions.rules):
        key = f"actions.rules[{i}]"
        check(bool(a.name), f"{key}.name", "must not be empty")
        check(a.type in ACTION_TYPES, f"{key}.type",
              f"expected one of {', '.join(ACTION_TYPES)}, got {a.type!r}")
        check(a.channel in ACTION_CHANNELS, f"{key}.channel",
              f"expected kafka or webhook, got {a.channel!r}")
        check(a.channel != "webhook" or a.url.startswith(("http://", "https://")), f"{key}.url",
              "a webhook action needs an http(s) url")
        matchers += [(f"{key}.matchers", m) for m in a.matchers]
    names = [a.name for a in actions.rules]
    check(len(set(names)) == len(names), "actions.rules", "action names must be unique")
    for key, m in matchers:
        try:
            split_matcher(m)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None


def load(paths: Iterable[str | Path] = (), overrides: Iterable[str] = (),
         env: Mapping[str, str] | None = None) -> Config:
    """Read TOML files in order, then the environment, then ``section.key=value`` overrides
    (nested tables with more dots: ``sensor.stream.topic=x``), into a :class:`Config`.

    ``env`` (default ``os.environ``) gives the database password (``SOADS_DB_PASSWORD`` or the
    file named by ``SOADS_DB_PASSWORD_FILE``), which goes into ``mariadb.password`` and into
    ``storage.db_url`` when it is a MySQL URL without one, and ``SOADS_SERVICES_ROOT`` /
    ``SOADS_DB_USER`` (services.root, mariadb.user). Unknown sections or keys, values of the wrong type and a MySQL URL without a
    password raise :class:`ConfigError` so a typo never passes silently.

    Examples
    --------
    >>> load(overrides=["scoring.gap_open=-3"]).scoring.gap_open
    -3.0
    >>> load(overrides=["sensor.stream.window=5"]).sensor.stream.window
    5
    >>> load(overrides=["storage.db_url=mysql+pymysql://soads@db/soads"],
    ...      env={"SOADS_DB_PASSWORD": "pw"}).storage.db_url
    'mysql+pymysql://soads:pw@db/soads'
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    for p in paths:
        try:
            with open(p, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"bad TOML in {p}: {e}") from e
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{p}: top-level key {section!r} is not a [section]")
        if "password" in data.get("mariadb", {}):
            raise ConfigError(f"{p}: mariadb.password does not belong in a file; set "
                              f"{PASSWORD_ENV} or {PASSWORD_FILE_ENV}")
        _merge(merged, data)
    for var, key in ENV_KEYS.items():
        if env.get(var):
            _set(merged, key, env[var], var)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set(merged, key, value.strip(), item)

    unknown = sorted(set(merged) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}")
    cfg = _build(Config, merged)
    _check_alerts(cfg.alerts, cfg.actions)

    password = db_password(env)
    if password is not None:
        cfg = dataclasses.replace(cfg, mariadb=dataclasses.replace(cfg.mariadb,
                                                                   password=password))
    return dataclasses.replace(
        cfg,
        storage=dataclasses.replace(cfg.storage, db_url=with_password(
            cfg.storage.db_url, password, "storage.db_url")))


def event_log_location(cfg: Config) -> str:
    """``hbase://host:port/prefix`` or the Parquet directory of the EVENT LOG TABLE: the one
    rule (``[storage] event_log``, empty: ``[storage] root``) the batch commands, the event job
    and ``soads quarantine`` share, so on the embedded default the event job writes the event
    log the batch commands read.

    >>> event_log_location(load(overrides=["storage.event_log=hbase://h:9090/p"]))
    'hbase://h:9090/p'
    >>> event_log_location(load(overrides=["storage.root=/data/soads"]))
    '/data/soads'
    """
    loc = cfg.storage.event_log
    if loc.startswith("hbase://"):
        return loc
    return os.path.abspath(loc or cfg.storage.root)
