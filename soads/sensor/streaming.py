"""Sensor job wiring: readings -> per-machine windows (Spark state) -> LSTM-AE scores with the
promoted model -> SENSOR ANOMALY TABLE (DESIGN.md "Sensor job")::

    Kafka topic / JSON-lines files   {"machine_id", "ts", "values": {sensor: value}}
      -> parse_readings              machine_id, ts, values (map)
      -> machine_windows             applyInPandasWithState per machine_id: state = the last
                                     window - 1 readings (bounded); one row per complete window
      -> foreachBatch                soads.storage.sensor_sink.write_sensor_anomalies:
                                     model version read ONCE per micro-batch (driver), windows
                                     scored on the executors (model cached per executor process
                                     and version), rows + ledger in one transaction

Hot swap: ``soads sensor promote|rollback`` moves the registry's CURRENT; the next micro-batch
reads it, so the switch takes effect within one trigger with no restart. Every window of one
micro-batch is scored by the same version, and a batch id already in the ledger is skipped, so
no window is lost or scored twice (a replayed batch after a crash is rescored with the version
then current only if its first attempt never committed).

Late and duplicate policy: a machine's readings are taken in ts order; a reading whose ts is not
later than the machine's last accepted reading (a duplicate, or out of order across
micro-batches) is dropped -- it makes no window. Readings missing machine_id or ts are dropped by
the parser (counted in the job's log, not stored: a quarantine table for readings is future
work). A sensor missing from a reading is NaN and makes its windows' scores NaN.
State is evicted by an event-time timeout: the query's watermark is the newest reading's ts
minus ``idle_seconds``; a machine whose last reading is behind the watermark loses its state
(its next readings start a new series: their first ``window - 1`` make no window), and a
reading behind the watermark is dropped by Spark before the state step (it is late). An
event-time timeout, not a processing-time one: with the latter Spark runs empty micro-batches
back to back and ``processAllAvailable`` never returns.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from soads import schema as S

logger = logging.getLogger(__name__)

_TS_US = "ts_us"


# -- pure core: the per-machine state step ---------------------------------------------------


@dataclass(frozen=True)
class MachineState:
    """The last ``window - 1`` accepted readings of one machine, oldest first."""

    ts_us: tuple = ()
    values: tuple = ()  # tuple of tuples (one per reading, sensors in configured order)


def advance(state: MachineState | None, readings: Iterable[tuple[int, Sequence[float]]],
            window: int) -> tuple[MachineState, list[tuple[int, list]]]:
    """Add new readings ``(ts_us, values)`` to a machine's state.

    Returns the new state (last ``window - 1`` readings) and the complete windows that end at a
    new reading: ``(window_end_us, [values of the window's readings, oldest first])``.

    Examples
    --------
    >>> st, out = advance(None, [(2, [2.0]), (1, [1.0]), (3, [3.0])], 3)
    >>> st.ts_us, out
    ((2, 3), [(3, [[1.0], [2.0], [3.0]])])
    >>> st, out = advance(st, [(3, [9.0]), (4, [4.0])], 3)  # ts 3 again: a duplicate
    >>> st.ts_us, out
    ((3, 4), [(4, [[2.0], [3.0], [4.0]])])
    """
    ts = list(state.ts_us) if state else []
    vals = [list(v) for v in state.values] if state else []
    out = []
    for t, v in sorted(readings, key=lambda r: r[0]):  # stable: equal ts keep arrival order
        if ts and t <= ts[-1]:
            continue  # duplicate or out of order: no window (module docstring)
        ts.append(int(t))
        vals.append([float(x) for x in v])
        if len(ts) >= window:
            out.append((int(t), vals[-window:]))
    keep = max(window - 1, 0)
    ts, vals = ts[len(ts) - keep:] if keep else [], vals[len(vals) - keep:] if keep else []
    return MachineState(tuple(ts), tuple(tuple(v) for v in vals)), out


# -- Spark -----------------------------------------------------------------------------------


def reading_struct():
    """Schema of one JSON reading: machine_id, ts, values map<string, double>."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.MACHINE_ID, T.StringType(), True),
        T.StructField(S.TS, T.TimestampType(), True),
        T.StructField(S.VALUES, T.MapType(T.StringType(), T.DoubleType()), True),
    ])


def read_readings(spark, stream):
    """The raw readings (one JSON text per row) of ``stream`` (SensorStreamConf).

    Returns
    -------
    DataFrame (streaming): ``value`` string
    """
    if stream.source == "kafka":
        reader = (spark.readStream.format("kafka")
                  .option("kafka.bootstrap.servers", stream.kafka_bootstrap)
                  .option("subscribe", stream.topic)
                  .option("startingOffsets", stream.starting_offsets)
                  .option("failOnDataLoss", "false"))
        if stream.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(int(stream.max_offsets_per_trigger)))
        return reader.load().selectExpr("CAST(value AS STRING) AS value")
    if stream.source == "files":
        return (spark.readStream.option("maxFilesPerTrigger", 100)
                .text(stream.input_path))
    raise ValueError(f"sensor stream.source must be kafka or files, not {stream.source!r}")


def parse_readings(raw, sensors: Sequence[str]):
    """JSON readings -> one row per valid reading.

    Returns
    -------
    DataFrame: machine_id, ts, ts_us (epoch microseconds), then one double column per sensor
    (in ``sensors`` order; NaN when the reading lacks it)
    """
    from pyspark.sql import functions as F

    r = raw.select(F.from_json("value", reading_struct()).alias("r")).select("r.*")
    r = r.filter(F.col(S.MACHINE_ID).isNotNull() & F.col(S.TS).isNotNull())
    return r.select(S.MACHINE_ID, S.TS, F.unix_micros(S.TS).alias(_TS_US),
                    *[F.coalesce(F.col(S.VALUES)[s], F.lit(float("nan"))).alias(f"s{i}")
                      for i, s in enumerate(sensors)])


def window_struct():
    """Schema of :func:`machine_windows` rows: machine_id, window_end, window array<double>."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.MACHINE_ID, T.StringType(), False),
        T.StructField(S.WINDOW_END, T.TimestampType(), False),
        T.StructField(S.WINDOW, T.ArrayType(T.DoubleType(), False), False),
    ])


def _state_struct():
    # JSON text: array columns in a state schema fail to deserialise in the Python worker of
    # pyspark 4.x (KeyError 'elementType'), so the state is two JSON lists, as the event job's
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(_TS_US, T.StringType(), False),
        T.StructField(S.VALUES, T.StringType(), False),
    ])


def machine_windows(readings, window: int, n_sensors: int, idle_seconds: float):
    """Per-machine sliding windows kept in Spark state (:func:`advance` in
    ``applyInPandasWithState``; event-time timeout ``idle_seconds``, module docstring).

    Returns
    -------
    DataFrame: machine_id, window_end (timestamp of the window's last reading),
    window array<double> (``window x n_sensors``, row-major: reading by reading)
    """
    import pandas as pd
    from pyspark.sql.streaming.state import GroupStateTimeout

    cols = [f"s{i}" for i in range(n_sensors)]
    timeout_ms = int(idle_seconds * 1000)

    def run(key, frames, state):
        machine = key[0]
        if state.hasTimedOut:
            state.remove()  # idle machine: bounded state
            return
        current = None
        if state.exists:
            ts, vals = state.get
            current = MachineState(tuple(json.loads(ts)),
                                   tuple(tuple(v) for v in json.loads(vals)))
        readings = []
        for pdf in frames:
            readings.extend(zip(pdf[_TS_US].tolist(), pdf[cols].to_numpy().tolist()))
        new, out = advance(current, readings, window)
        state.update((json.dumps(list(new.ts_us)), json.dumps([list(v) for v in new.values])))
        if new.ts_us:
            state.setTimeoutTimestamp(new.ts_us[-1] // 1000 + timeout_ms)
        yield pd.DataFrame({
            S.MACHINE_ID: [machine] * len(out),
            S.WINDOW_END: pd.to_datetime([t for t, _ in out], unit="us"),
            S.WINDOW: [np.asarray(w, dtype=np.float64).ravel() for _, w in out],
        })

    # machine_id, ts, ts_us, s0..s{n-1} (one row per reading)
    watermarked = readings.withWatermark(S.TS, f"{timeout_ms} milliseconds")
    return watermarked.groupBy(S.MACHINE_ID).applyInPandasWithState(
        run, window_struct(), _state_struct(), "append", GroupStateTimeout.EventTimeTimeout)


# -- scoring on the executors ------------------------------------------------------------------

_MODELS: dict = {}  # (registry root, version) -> model: loaded once per executor process


def cached_model(root: str, version: str):
    """The registry model ``version``, loaded at most once per process."""
    key = (os.path.abspath(root), version)
    if key not in _MODELS:
        from soads.sensor import registry

        _MODELS.clear()  # one version serves at a time; keep memory bounded
        _MODELS[key] = registry.load(root, version)
        logger.info("loaded sensor model %s from %s (pid %d)", version, root, os.getpid())
    return _MODELS[key]


def scored_struct():
    """Schema of :func:`score_windows` rows: the SENSOR ANOMALY TABLE's columns."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.MACHINE_ID, T.StringType(), False),
        T.StructField(S.WINDOW_END, T.TimestampType(), False),
        T.StructField(S.SCORE, T.DoubleType(), True),
        T.StructField(S.THRESHOLD, T.DoubleType(), False),
        T.StructField(S.IS_ANOMALY, T.BooleanType(), False),
        T.StructField(S.MODEL_VERSION, T.StringType(), False),
    ])


def score_windows(windows, root: str, version: str, window: int, n_sensors: int):
    """Score :func:`machine_windows` rows with registry model ``version`` (``mapInPandas``).

    Returns
    -------
    DataFrame: machine_id, window_end, score, threshold, is_anomaly, model_version
    """
    import pandas as pd

    def run(frames):
        import torch

        torch.set_num_threads(1)
        model = cached_model(root, version)
        if model.window != window or model.n_features_ != n_sensors:
            raise ValueError(f"model {version} has window {model.window} and "
                             f"{model.n_features_} sensors; the job has {window} and {n_sensors}")
        for pdf in frames:
            if len(pdf) == 0:
                continue
            w = np.stack(pdf[S.WINDOW].to_numpy()).reshape(len(pdf), window, n_sensors)
            scores = model.score_windows(w)
            yield pd.DataFrame({
                S.MACHINE_ID: pdf[S.MACHINE_ID], S.WINDOW_END: pdf[S.WINDOW_END],
                S.SCORE: scores, S.THRESHOLD: model.threshold_,
                S.IS_ANOMALY: scores > model.threshold_, S.MODEL_VERSION: version,
            })

    return windows.mapInPandas(run, scored_struct())


def start_sensor_query(spark, stream, trigger: bool = True):
    """Start the checkpointed sensor query (module docstring).

    Parameters
    ----------
    spark : SparkSession (with the Kafka connector when ``stream.source == "kafka"``)
    stream : soads.sensor.settings.SensorStreamConf
    trigger : bool
        Processing-time trigger of ``stream.trigger_seconds`` (tests pass False and use
        ``processAllAvailable``).

    Returns
    -------
    StreamingQuery
    """
    from soads.storage import sensor_sink

    sensor_sink.prepare(stream.db_url)
    n = len(stream.sensors)
    # machine_id, ts_us, s0..s{n-1} (one row per valid reading)
    readings = parse_readings(read_readings(spark, stream), stream.sensors)
    # machine_id, window_end, window (one row per complete window)
    windows = machine_windows(readings, stream.window, n, stream.idle_seconds)
    w = (windows.writeStream.queryName("sensor_anomaly")
         .foreachBatch(sensor_sink.anomaly_writer(stream.db_url, stream.registry, stream.window, n))
         .option("checkpointLocation",
                 os.path.join(os.path.expanduser(stream.checkpoint_root), "sensor_anomaly")))
    if trigger:
        w = w.trigger(processingTime=f"{int(stream.trigger_seconds * 1000)} milliseconds")
    q = w.start()
    logger.info("started query sensor_anomaly (%s)", q.id)
    return q
