"""sensor: the ``[sensor.stream]``, ``[sensor.drift]`` and ``[sensor.train]`` sections of
``conf/sensor.toml`` as frozen dataclasses (config enters at the job / CLI, travels as arguments).
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field

from soads.sensor.skab import SKAB_SENSORS


@dataclass(frozen=True)
class SensorStreamConf:
    """Sensor job: ``source`` is ``kafka`` (``kafka_bootstrap``, ``topic``) or ``files``
    (``input_path``: a directory of JSON-lines files, one reading a line)."""

    source: str = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "soads-sensor-readings"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 5000
    input_path: str = ""
    registry: str = "soads-data/sensor-models"
    db_url: str = "sqlite:///soads-data/soads.db"
    checkpoint_root: str = "soads-data/checkpoints"
    trigger_seconds: float = 2.0
    idle_seconds: float = 3600.0
    window: int = 10
    sensors: tuple = tuple(SKAB_SENSORS)


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
    presets: dict = field(default_factory=dict)
    skab: dict = field(default_factory=dict)
    stream: SensorStreamConf = field(default_factory=SensorStreamConf)
    drift: DriftConf = field(default_factory=DriftConf)
    train: TrainConf = field(default_factory=TrainConf)

    def params(self, preset: str | None = None) -> dict:
        """LSTMAutoencoder keyword arguments of ``preset`` (default: the configured one)."""
        name = preset or self.preset
        if name not in self.presets:
            raise KeyError(f"unknown sensor preset {name!r}")
        return dict(self.presets[name])


def _section(cls, values: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    base = cls()
    out = {}
    for k, v in values.items():
        like = getattr(base, k)
        if isinstance(like, tuple):
            out[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        elif isinstance(like, bool) and isinstance(v, str):
            out[k] = v.lower() in ("true", "1", "yes")
        else:
            out[k] = type(like)(v)
    return dataclasses.replace(base, **out)


def load(path: str = "conf/sensor.toml", overrides=()) -> SensorConf:
    """Read the ``[sensor]`` table of ``path`` then ``stream.topic=x``-style overrides
    (``sensor.`` prefix optional)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)["sensor"]
    for item in overrides:
        key, _, value = item.partition("=")
        parts = key.strip().removeprefix("sensor.").split(".")
        d = data
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value.strip()
    return SensorConf(
        preset=data.get("preset", "skab"), presets=data.get("presets", {}),
        skab=data.get("skab", {}),
        stream=_section(SensorStreamConf, data.get("stream", {}), "sensor.stream"),
        drift=_section(DriftConf, data.get("drift", {}), "sensor.drift"),
        train=_section(TrainConf, data.get("train", {}), "sensor.train"),
    )
