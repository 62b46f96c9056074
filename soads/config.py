"""Configuration: one frozen dataclass per ``conf/*.toml`` section.

Config enters at the job (``jobs/`` or the CLI) and travels as arguments; library functions never
read files or environment variables.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


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
    root: str = "soads-data"
    db_url: str = "sqlite:///soads-data/soads.db"
    event_log: str = ""
    """Where the EVENT LOG TABLE lives: ``hbase://host:port/prefix`` or a directory (Parquet);
    empty means ``<root>`` (Parquet)."""


@dataclass(frozen=True)
class PreprocessConf:
    max_document_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class SequencesConf:
    dwell_seconds: float = 60.0


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
class SimulatorConf:
    objects: int = 20000
    seed: int = 7
    anomaly_rate: float = 0.04
    noise_rate: float = 0.05
    format: str = "xml"
    events_per_file: int = 20000


@dataclass(frozen=True)
class StreamConf:
    """The ``[stream]`` section (``conf/services-stream.toml``).

    ``source`` is ``kafka`` (``kafka_bootstrap``, ``topic``) or ``files`` (``input_path``).
    ``event_log`` is ``hbase://host:port/prefix`` or a directory (Parquet). ``db_url`` is a
    SQLAlchemy URL (MySQL or SQLite). An empty ``quarantine_topic`` writes no quarantine topic.
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
    event_log: str = "hbase://127.0.0.1:9090/soads"
    db_url: str = "sqlite:///soads-data/soads.db"
    checkpoint_root: str = "soads-data/checkpoints"
    trigger_seconds: float = 5.0
    watermark_seconds: float = 600.0
    idle_seconds: float = 3600.0
    max_visits: int = 1000
    state_operator: str = "jvm"
    """The per-oid state step: ``jvm`` (the Java port, soads/java/RelationUpdater.java, built by
    :mod:`soads.jvm`; needs a JDK) or ``python`` (applyInPandasWithState, the oracle). Part of the
    checkpoint: a checkpoint made with one cannot be resumed with the other."""


@dataclass(frozen=True)
class Config:
    spark: SparkConf = field(default_factory=SparkConf)
    storage: StorageConf = field(default_factory=StorageConf)
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)
    sequences: SequencesConf = field(default_factory=SequencesConf)
    mining: MiningConf = field(default_factory=MiningConf)
    scoring: ScoringConf = field(default_factory=ScoringConf)
    simulator: SimulatorConf = field(default_factory=SimulatorConf)
    stream: StreamConf = field(default_factory=StreamConf)


class ConfigError(ValueError):
    """A configuration file or override that does not fit the sections above."""


def _coerce(value: Any, like: Any, key: str) -> Any:
    if isinstance(like, bool):
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return bool(value)
    try:
        return type(like)(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: expected {type(like).__name__}, got {value!r}") from e


def load(paths: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> Config:
    """Read TOML files in order, then ``section.key=value`` overrides, into a :class:`Config`.

    Unknown sections or keys raise :class:`ConfigError` so a typo never passes silently.

    Examples
    --------
    >>> load(overrides=["scoring.gap_open=-3"]).scoring.gap_open
    -3.0
    """
    merged: dict[str, dict[str, Any]] = {}
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
            merged.setdefault(section, {}).update(values)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        merged.setdefault(section, {})[name] = value.strip()

    defaults = Config()
    sections = {}
    for f in dataclasses.fields(Config):
        base = getattr(defaults, f.name)
        values = merged.pop(f.name, {})
        known = {g.name for g in dataclasses.fields(base)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown key(s) in [{f.name}]: {', '.join(sorted(unknown))}")
        sections[f.name] = dataclasses.replace(
            base, **{k: _coerce(v, getattr(base, k), f"{f.name}.{k}") for k, v in values.items()}
        )
    if merged:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(merged))}")
    return Config(**sections)
