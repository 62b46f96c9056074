"""Sensor job wiring: readings -> per-machine windows (Spark state) -> LSTM-AE scores with the
promoted model -> SENSOR ANOMALY TABLE (DESIGN.md "Sensor job")::

    Kafka topic / JSON-lines files   {"machine_id", "ts", "values": {sensor: value}}
      -> read_readings               value (text), source (topic/partition/offset | file:line)
      -> parse_readings              mapInPandas(parse_reading): a valid reading, or a
                                     quarantine row with a reason (nothing is dropped)
      -> machine_windows             applyInPandasWithState per machine_id: state = the last
                                     window - 1 readings (bounded); one row per complete window,
                                     one quarantine row per late / duplicate / out-of-order reading
      -> foreachBatch                score_micro_batch: model version read ONCE per
                                     micro-batch (driver), windows scored on the executors
                                     (model cached per executor process and version), then
                                     soads.storage.sensor_sink.write_sensor_anomalies:
                                     sensor_anomaly + sensor_quarantine rows + ledger in one
                                     transaction

Hot swap: ``soads sensor promote|rollback`` moves the registry's CURRENT; the next micro-batch
reads it, so the switch takes effect within one trigger with no restart. Every window of one
micro-batch is scored by the same version, and a batch id already in the ledger is skipped, so
no window is lost or scored twice (a replayed batch after a crash is rescored with the version
then current only if its first attempt never committed).

Bad input (project rule: quarantine with a reason, never a silent drop). Every reading that
makes no window of its own lands in ``sensor_quarantine`` (source, machine_id, ts, reason,
detail; :data:`soads.schema.SENSOR_REASONS`):

- parse (:func:`parse_reading`): ``malformed_json`` (also an empty Kafka record),
  ``not_a_reading``, ``missing_machine_id``, ``bad_machine_id``, ``missing_ts``,
  ``bad_timestamp``, ``bad_value`` (``values`` not an object, or a value that is not a finite
  number or null). A sensor missing from a valid reading (or null) is NaN and makes its
  windows' scores NaN; keys that are not configured sensors are ignored. Blank lines of a file
  are not readings.
- order (:func:`advance`): a machine's readings are taken in ts order; a reading whose ts
  equals the machine's last accepted one is a ``duplicate``, an earlier one ``out_of_order``
  (across micro-batches; inside one micro-batch readings are sorted first).
- ``late``: the query's watermark is the newest reading's ts minus ``idle_seconds``; a reading
  behind it is late. Spark itself drops such rows before an event-time-timeout state function
  sees them, so (as the event job does, :mod:`soads.stream.state`) the ts travels as an untagged
  copy and the operator's watermark column is a constant no row is ever behind; the state step
  compares each reading with ``getCurrentWatermarkMs`` itself.

State is evicted by an event-time timeout: a machine whose last reading is behind the watermark
loses its state (its next readings start a new series: their first ``window - 1`` make no
window, and they are not quarantined -- they are the start of the next windows). An event-time
timeout, not a processing-time one: with the latter Spark runs empty micro-batches back to back
and ``processAllAvailable`` never returns.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from soads import schema as S
from soads.sensor import registry
from soads.storage import sensor_sink

logger = logging.getLogger(__name__)


# -- pure core: the per-machine state step ---------------------------------------------------


@dataclass(frozen=True)
class MachineState:
    """The last ``window - 1`` accepted readings of one machine, oldest first."""

    ts_us: tuple = ()
    values: tuple = ()  # tuple of tuples (one per reading, sensors in configured order)


def advance(state: MachineState | None, readings: Iterable[tuple], window: int,
            watermark_us: int | None = None
            ) -> tuple[MachineState, list[tuple[int, list]], list[tuple[int, str, str]]]:
    """Add new readings ``(ts_us, values, source)`` to a machine's state.

    Returns the new state (last ``window - 1`` readings), the complete windows that end at a
    new reading: ``(window_end_us, [values of the window's readings, oldest first])``, and the
    readings that make no window: ``(ts_us, source, reason)`` with reason ``late`` (ts below
    ``watermark_us``), ``duplicate`` or ``out_of_order`` (module docstring).

    Examples
    --------
    >>> st, out, bad = advance(None, [(2, [2.0], "k/0/1"), (1, [1.0], "k/0/0"),
    ...                               (3, [3.0], "k/0/2")], 3)
    >>> st.ts_us, out, bad
    ((2, 3), [(3, [[1.0], [2.0], [3.0]])], [])
    >>> st, out, bad = advance(st, [(3, [9.0], "k/0/3"), (4, [4.0], "k/0/4"),
    ...                             (1, [1.0], "k/0/5")], 3, watermark_us=0)
    >>> st.ts_us, out, bad
    ((3, 4), [(4, [[2.0], [3.0], [4.0]])], [(1, 'k/0/5', 'out_of_order'), (3, 'k/0/3', 'duplicate')])
    >>> advance(st, [(2, [2.0], "k/0/6")], 3, watermark_us=3)[2]
    [(2, 'k/0/6', 'late')]
    """
    ts = list(state.ts_us) if state else []
    vals = [list(v) for v in state.values] if state else []
    out, rejected = [], []
    for t, v, src in sorted(readings, key=lambda r: r[0]):  # stable: equal ts keep arrival order
        if watermark_us is not None and t < watermark_us:
            rejected.append((int(t), src, "late"))
            continue
        if ts and t <= ts[-1]:
            rejected.append((int(t), src, "duplicate" if t == ts[-1] else "out_of_order"))
            continue
        ts.append(int(t))
        vals.append([float(x) for x in v])
        if len(ts) >= window:
            out.append((int(t), vals[-window:]))
    keep = max(window - 1, 0)
    ts, vals = ts[len(ts) - keep:] if keep else [], vals[len(vals) - keep:] if keep else []
    return MachineState(tuple(ts), tuple(tuple(v) for v in vals)), out, rejected


class ReadingError(ValueError):
    """A reading that cannot be used; ``reason`` is one of :data:`soads.schema.SENSOR_REASONS`.
    ``machine_id`` / ``ts_us`` carry what was readable (for the quarantine row)."""

    def __init__(self, reason: str, detail: str, machine_id=None, ts_us=None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.machine_id, self.ts_us = reason, detail, machine_id, ts_us


def _ts_us(value) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, (int, float)):  # epoch seconds, as Spark's JSON reader takes numbers
        if not math.isfinite(value):
            raise ValueError("not finite")
        return int(round(value * 1_000_000))
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__}")
    t = dt.datetime.fromisoformat(value)  # naive = UTC (the session time zone)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (t - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


def parse_reading(text: str | None, sensors: Sequence[str]) -> tuple[str, int, list[float]]:
    """One JSON reading -> ``(machine_id, ts_us, values in sensors order)``, NaN for a sensor the
    reading lacks or gives as null.

    Raises
    ------
    ReadingError with the reason code (module docstring).

    Examples
    --------
    >>> parse_reading('{"machine_id": "m1", "ts": "1970-01-01T00:00:01Z", "values": {"a": 2}}',
    ...               ["a", "b"])
    ('m1', 1000000, [2.0, nan])
    >>> parse_reading('{"machine_id": "m1", "ts": 1.5, "values": {"a": "high"}}', ["a"])
    Traceback (most recent call last):
    ...
    soads.sensor.streaming.ReadingError: bad_value: sensor 'a' is not a number: 'high'
    >>> parse_reading('{"ts": 1}', ["a"])
    Traceback (most recent call last):
    ...
    soads.sensor.streaming.ReadingError: missing_machine_id: no machine_id
    """
    if text is None or not text.strip():
        raise ReadingError("malformed_json", "empty record")
    try:
        doc = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise ReadingError("malformed_json", str(e)) from None
    if not isinstance(doc, dict):
        raise ReadingError("not_a_reading", f"a JSON {type(doc).__name__}, not an object")
    machine = doc.get(S.MACHINE_ID)
    if machine is None or machine == "":
        raise ReadingError("missing_machine_id", f"no {S.MACHINE_ID}")
    if not isinstance(machine, str):
        raise ReadingError("bad_machine_id", f"{S.MACHINE_ID} is a {type(machine).__name__}")
    raw_ts = doc.get(S.TS)
    if raw_ts is None:
        raise ReadingError("missing_ts", f"no {S.TS}", machine)
    try:
        ts_us = _ts_us(raw_ts)
    except (ValueError, OverflowError) as e:
        raise ReadingError("bad_timestamp", f"{S.TS} {raw_ts!r}: {e}", machine) from None
    values = doc.get(S.VALUES, {})
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ReadingError("bad_value", f"{S.VALUES} is a {type(values).__name__}", machine, ts_us)
    out = []
    for name in sensors:
        v = values.get(name)
        if v is None:
            out.append(float("nan"))
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v):
            raise ReadingError("bad_value", f"sensor {name!r} is not a number: {v!r}",
                               machine, ts_us)
        out.append(float(v))
    return machine, ts_us, out


# -- Spark -----------------------------------------------------------------------------------


_WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"  # Spark's EventTimeWatermark.delayKey
_NEVER_LATE = "2200-01-01 00:00:00"


def read_readings(spark, stream):
    """The raw readings of ``stream`` (SensorStreamConf), one JSON text per row.

    Returns
    -------
    DataFrame (streaming): ``value`` string (null for an empty Kafka record), ``source``
    (``topic/partition/offset``, or ``path:line`` for a file, lines from 1; blank lines are
    not readings)
    """
    from pyspark.sql import functions as F

    if stream.source == "kafka":
        reader = (spark.readStream.format("kafka")
                  .option("kafka.bootstrap.servers", stream.kafka_bootstrap)
                  .option("subscribe", stream.topic)
                  .option("startingOffsets", stream.starting_offsets)
                  .option("failOnDataLoss", "false"))
        if stream.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(int(stream.max_offsets_per_trigger)))
        return reader.load().select(
            F.col("value").cast("string").alias("value"),
            F.concat_ws("/", "topic", F.col("partition").cast("string"),
                        F.col("offset").cast("string")).alias(S.SOURCE))
    if stream.source == "files":
        # whole files, split here, so that every line keeps its file:line identity
        files = (spark.readStream.option("maxFilesPerTrigger", 100)
                 .text(stream.input_path, wholetext=True)
                 .select(F.regexp_replace(F.input_file_name(), "^file:(//)?", "").alias("path"),
                         F.posexplode(F.split("value", "\n")).alias("line", "value")))
        return (files.where(F.trim("value") != "")
                .select(F.regexp_replace("value", "\r$", "").alias("value"),
                        F.concat_ws(":", "path", (F.col("line") + 1).cast("string"))
                        .alias(S.SOURCE)))
    raise ValueError(f"sensor stream.source must be kafka or files, not {stream.source!r}")


def parsed_struct(n_sensors: int):
    """Schema of :func:`parse_readings` rows."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.MACHINE_KEY, T.StringType(), False),
        T.StructField(S.MACHINE_ID, T.StringType(), True),
        T.StructField(S.TS_US, T.LongType(), True),
        T.StructField(S.SOURCE, T.StringType(), False),
        T.StructField(S.REASON, T.StringType(), True),
        T.StructField(S.DETAIL, T.StringType(), True),
    ] + [T.StructField(f"s{i}", T.DoubleType(), True) for i in range(n_sensors)])


def parse_readings(raw, sensors: Sequence[str]):
    """JSON readings -> one row per record: a valid reading (``reason`` null) or a rejected one
    (:func:`parse_reading` in ``mapInPandas``).

    Returns
    -------
    DataFrame: _key (machine_id; "" for a rejected reading), machine_id, ts (event time; null
    for a rejected reading, which must not move the watermark), ts_us (epoch microseconds, kept
    for a rejected reading when readable), source, reason, detail, then one double column per
    sensor (in ``sensors`` order; NaN when the reading lacks it, and in a rejected row).
    """
    import pandas as pd
    from pyspark.sql import functions as F

    n = len(sensors)
    cols = [f"s{i}" for i in range(n)]

    def run(frames):
        for pdf in frames:
            key, mid, ts, reason, detail, vals = [], [], [], [], [], []
            for text in pdf["value"].tolist():
                try:
                    m, t, v = parse_reading(text, sensors)
                    key.append(m), mid.append(m), ts.append(t)
                    reason.append(None), detail.append(None), vals.append(v)
                except ReadingError as e:
                    key.append(""), mid.append(e.machine_id), ts.append(e.ts_us)
                    reason.append(e.reason), detail.append(e.detail[:S.DETAIL_CHARS])
                    vals.append([None] * n)
            out = pd.DataFrame({
                S.MACHINE_KEY: key, S.MACHINE_ID: mid, S.TS_US: pd.array(ts, dtype="Int64"),
                S.SOURCE: pdf[S.SOURCE].to_numpy(), S.REASON: reason, S.DETAIL: detail,
            })
            block = np.asarray(vals, dtype=np.float64).reshape(len(vals), n)
            for i, c in enumerate(cols):
                out[c] = block[:, i]
            yield out

    parsed = raw.mapInPandas(run, parsed_struct(n))
    # ts (the event time the watermark follows) only for valid readings: a rejected reading
    # must not move the watermark
    ts = F.when(F.col(S.REASON).isNull(), F.timestamp_micros(S.TS_US))
    return parsed.select(S.MACHINE_KEY, S.MACHINE_ID, ts.alias(S.TS), S.TS_US, S.SOURCE,
                         S.REASON, S.DETAIL, *cols)


def window_struct():
    """Schema of :func:`machine_windows` rows: kind, machine_id, window_end, window
    array<double>, ts_us, source, reason, detail."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.KIND, T.StringType(), False),
        T.StructField(S.MACHINE_ID, T.StringType(), True),
        T.StructField(S.WINDOW_END, T.TimestampType(), True),
        T.StructField(S.WINDOW, T.ArrayType(T.DoubleType(), False), True),
        T.StructField(S.TS_US, T.LongType(), True),
        T.StructField(S.SOURCE, T.StringType(), True),
        T.StructField(S.REASON, T.StringType(), True),
        T.StructField(S.DETAIL, T.StringType(), True),
    ])


def _state_struct():
    # JSON text: array columns in a state schema fail to deserialise in the Python worker of
    # pyspark 4.x (KeyError 'elementType'), so the state is two JSON lists, as the event job's
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.TS_US, T.StringType(), False),
        T.StructField(S.VALUES, T.StringType(), False),
    ])


def _ints(series) -> list:
    """A nullable long column (float with NaN in pandas when it holds nulls) -> ints / None."""
    return [None if x is None or x != x else int(x) for x in series.tolist()]


def machine_windows(readings, window: int, n_sensors: int, idle_seconds: float):
    """Per-machine sliding windows kept in Spark state (:func:`advance` in
    ``applyInPandasWithState``; event-time timeout ``idle_seconds``, module docstring).

    Parameters
    ----------
    readings : DataFrame (streaming), :func:`parse_readings` rows

    Returns
    -------
    DataFrame: kind, machine_id, window_end, window, ts_us, source, reason, detail.
    ``window`` rows: machine_id, window_end (timestamp of the window's last reading), window
    array<double> (``window x n_sensors``, row-major: reading by reading).
    ``quarantine`` rows: machine_id and ts_us (null when unreadable), source, reason, detail --
    the parser's rejects and the late / duplicate / out-of-order readings.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    cols = [f"s{i}" for i in range(n_sensors)]
    timeout_ms = int(idle_seconds * 1000)
    idle_us = timeout_ms * 1000

    def frame(windows, bad):
        nq = len(bad)
        return pd.DataFrame({
            S.KIND: [S.KIND_WINDOW] * len(windows) + [S.KIND_QUARANTINE] * nq,
            S.MACHINE_ID: [w[0] for w in windows] + [b[0] for b in bad],
            S.WINDOW_END: pd.to_datetime([t for _, t, _ in windows] + [None] * nq, unit="us"),
            S.WINDOW: [np.asarray(w, dtype=np.float64).ravel() for _, _, w in windows]
            + [None] * nq,
            S.TS_US: pd.array([None] * len(windows) + [b[1] for b in bad], dtype="Int64"),
            S.SOURCE: [None] * len(windows) + [b[2] for b in bad],
            S.REASON: [None] * len(windows) + [b[3] for b in bad],
            S.DETAIL: [None] * len(windows) + [b[4] for b in bad],
        })

    def run(key, frames, state):
        machine = key[0]
        if machine == "":  # the parser's rejects: straight to quarantine, no state
            bad = []
            for pdf in frames:
                bad.extend(zip(pdf[S.MACHINE_ID].tolist(), _ints(pdf[S.TS_US]),
                               pdf[S.SOURCE].tolist(), pdf[S.REASON].tolist(),
                               pdf[S.DETAIL].tolist()))
            yield frame([], bad)
            return
        if state.hasTimedOut:
            state.remove()  # idle machine: bounded state
            return
        watermark_us = state.getCurrentWatermarkMs() * 1000
        current = None
        if state.exists:
            ts, vals = state.get
            current = MachineState(tuple(json.loads(ts)),
                                   tuple(tuple(v) for v in json.loads(vals)))
            if current.ts_us and watermark_us > current.ts_us[-1] + idle_us:
                current = None  # idle past the watermark: a new series (module docstring)
        readings = []
        for pdf in frames:
            readings.extend(zip(_ints(pdf[S.TS_US]), pdf[cols].to_numpy().tolist(),
                                pdf[S.SOURCE].tolist()))
        new, out, rejected = advance(current, readings, window, watermark_us)
        state.update((json.dumps(list(new.ts_us)), json.dumps([list(v) for v in new.values])))
        if new.ts_us:
            state.setTimeoutTimestamp(new.ts_us[-1] // 1000 + timeout_ms)
        detail = {"late": "ts behind the watermark (newest ts - idle_seconds)",
                  "duplicate": "same ts as the machine's last accepted reading",
                  "out_of_order": "ts before the machine's last accepted reading"}
        if out or rejected:
            yield frame([(machine, t, w) for t, w in out],
                        [(machine, t, src, why, detail[why]) for t, src, why in rejected])

    # _key, machine_id, ts, ts_us, source, reason, detail, s0..s{n-1} (one row per record)
    readings = readings.withWatermark(S.TS, f"{timeout_ms} milliseconds")
    # Spark drops rows below the watermark before an event-time-timeout state function sees
    # them; our policy quarantines them as late instead (soads.stream.state does the same): ts
    # travels as an untagged copy and the operator's watermark column is a constant no row is
    # ever behind (the watermark itself is still computed from ts above).
    untagged = readings.select(
        S.MACHINE_KEY, S.MACHINE_ID, S.TS_US, S.SOURCE, S.REASON, S.DETAIL, *cols,
        F.lit(_NEVER_LATE).cast("timestamp").alias(
            S.NEVER_LATE, metadata={_WATERMARK_DELAY_KEY: timeout_ms}),
    )
    return untagged.groupBy(S.MACHINE_KEY).applyInPandasWithState(
        run, window_struct(), _state_struct(), "append", GroupStateTimeout.EventTimeTimeout)


# -- scoring on the executors ------------------------------------------------------------------

_MODELS: dict = {}  # (registry root, version) -> model: loaded once per executor process


def cached_model(root: str, version: str):
    """The registry model ``version``, loaded at most once per process."""
    key = (os.path.abspath(root), version)
    if key not in _MODELS:
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


def _from_micros(us: int) -> dt.datetime:
    """Naive UTC datetime (the tables store naive UTC)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def score_micro_batch(windows, batch_id: int, db_url: str, root: str, window: int,
                      n_sensors: int) -> str | None:
    """The foreachBatch body: score one micro-batch of windows with the registry's CURRENT
    version (read once, here on the driver) and write them, and its quarantined readings, with
    the ledger row in one transaction (:func:`soads.storage.sensor_sink.write_sensor_anomalies`).

    Parameters
    ----------
    windows : DataFrame, :func:`machine_windows` rows (``kind`` window or quarantine); without a
        ``kind`` column every row is a window.

    Returns the version used, or None when the batch id was already written (nothing changes).
    """
    from pyspark.sql import functions as F

    if sensor_sink.batch_done(db_url, batch_id):
        logger.info("batch %d already in the ledger for %s: skipped", batch_id,
                    sensor_sink.SINK_SENSOR)
        return None
    version = registry.current_version(root)
    if version is None:
        raise RuntimeError(f"no promoted sensor model in {root}: run soads sensor train --promote")
    quarantine = []
    if S.KIND in windows.columns:
        quarantine = [
            {S.SOURCE: r[S.SOURCE], S.MACHINE_ID: r[S.MACHINE_ID],
             S.TS: None if r[S.TS_US] is None else _from_micros(r[S.TS_US]),
             S.REASON: r[S.REASON], S.DETAIL: r[S.DETAIL]}
            for r in windows.where(F.col(S.KIND) == S.KIND_QUARANTINE).select(
                S.SOURCE, S.MACHINE_ID, S.TS_US, S.REASON, S.DETAIL).collect()]
        windows = windows.where(F.col(S.KIND) == S.KIND_WINDOW)
    windows = windows.select(S.MACHINE_ID, S.WINDOW_END, S.WINDOW)
    scored = score_windows(windows, root, version, window, n_sensors).select(
        S.MACHINE_ID, F.unix_micros(S.WINDOW_END).alias(S.WINDOW_END), S.SCORE, S.THRESHOLD,
        S.IS_ANOMALY, S.MODEL_VERSION).collect()
    rows = [{S.MACHINE_ID: r[S.MACHINE_ID], S.WINDOW_END: _from_micros(r[S.WINDOW_END]),
             S.SCORE: None if r[S.SCORE] != r[S.SCORE] else float(r[S.SCORE]),  # NaN -> NULL
             S.THRESHOLD: float(r[S.THRESHOLD]), S.IS_ANOMALY: bool(r[S.IS_ANOMALY]),
             S.MODEL_VERSION: r[S.MODEL_VERSION]} for r in scored]
    if not sensor_sink.write_sensor_anomalies(rows, quarantine, batch_id, db_url):
        return None
    logger.info("batch %d: %d windows scored with model %s, %d readings quarantined", batch_id,
                len(rows), version, len(quarantine))
    return version


def anomaly_writer(db_url: str, root: str, window: int, n_sensors: int):
    """``foreachBatch`` writer of :func:`machine_windows` rows (windows and quarantined
    readings): :func:`score_micro_batch`."""

    def write(batch_df, batch_id):
        windows = batch_df.persist()  # the state step runs once, not once per action
        try:
            score_micro_batch(windows, batch_id, db_url, root, window, n_sensors)
        finally:
            windows.unpersist()

    return write


def start_sensor_query(spark, stream, db_url: str, trigger: bool = True):
    """Start the checkpointed sensor query (module docstring).

    Parameters
    ----------
    spark : SparkSession (with the Kafka connector when ``stream.source == "kafka"``)
    stream : soads.config.SensorStreamConf
    db_url : str
        SQLAlchemy URL of the SENSOR ANOMALY TABLE and its quarantine: ``storage.db_url``, the
        database of every job.
    trigger : bool
        Processing-time trigger of ``stream.trigger_seconds`` (tests pass False and use
        ``processAllAvailable``).

    Returns
    -------
    StreamingQuery
    """
    sensor_sink.prepare(db_url)
    if stream.source == "kafka":  # as the event job: Spark's Kafka source fails on a missing topic
        from soads import ingest

        ingest.ensure_topics(stream.kafka_bootstrap, [stream.topic])
    n = len(stream.sensors)
    # value, source (one row per record)
    raw = read_readings(spark, stream)
    # _key, machine_id, ts, ts_us, source, reason, detail, s0..s{n-1} (one row per record)
    readings = parse_readings(raw, stream.sensors)
    # kind, machine_id, window_end, window, ts_us, source, reason, detail
    # (one row per complete window, one per quarantined reading)
    windows = machine_windows(readings, stream.window, n, stream.idle_seconds)
    w = (windows.writeStream.queryName("sensor_anomaly")
         .foreachBatch(anomaly_writer(db_url, stream.registry, stream.window, n))
         .option("checkpointLocation",
                 os.path.join(os.path.expanduser(stream.checkpoint_root), "sensor_anomaly")))
    if trigger:
        w = w.trigger(processingTime=f"{int(stream.trigger_seconds * 1000)} milliseconds")
    q = w.start()
    logger.info("started query sensor_anomaly (%s)", q.id)
    return q
