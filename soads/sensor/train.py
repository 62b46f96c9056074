"""sensor: LSTM-AE training (the batch box "LSTM-AE training": sensor history -> versioned model
in a registry), drift recording and the retraining scheduler.

Sensor history is a CSV or Parquet file (or a directory of them) of readings, one row per
reading: ``machine_id, ts`` and one column per sensor; SKAB CSV files (``;``-separated,
``datetime`` index, :data:`soads.sensor.skab.SKAB_SENSORS`) are read too, with the file name as
``machine_id`` and rows labelled ``anomaly = 1`` left out (training data must be normal).

Training concatenates the machines' series (each in ts order): the ``window - 1`` windows that
straddle two machines are kept -- a small impurity (0.2% of SKAB's anomaly-free windows would be
affected with 10 machines) accepted to keep one contiguous fit.

Retraining (choice documented in README "Sensor anomaly job"): the scheduler loop
(:func:`run_schedule`, ``soads sensor train --every``) records drift of the serving model from
the SENSOR ANOMALY TABLE into ``sensor_drift`` every ``check_seconds``; a newly drifted time
window, or ``every_seconds`` since the last training, trains a new version. The streaming
job's sink does not train: it must stay within its trigger.
"""
from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import time

import numpy as np
import pandas as pd

from soads import schema as S
from soads.sensor import drift, registry
from soads.sensor.lstm_ae import LSTMAutoencoder
from soads.sensor.skab import SKAB_ANOMALY, SKAB_CHANGEPOINT, SKAB_SENSORS, SKAB_TIME

logger = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1)


def _read_one(path: str) -> pd.DataFrame:
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        with open(path) as fh:
            head = fh.readline()
        if SKAB_TIME in head and ";" in head:  # SKAB's own format
            df = pd.read_csv(path, sep=";")
            if SKAB_ANOMALY in df.columns:
                bad = df[SKAB_ANOMALY] == 1
                if bad.any():
                    logger.info("%s: %d rows labelled anomalous left out of training", path,
                                int(bad.sum()))
                df = df[~bad]
            df = df.drop(columns=[c for c in (SKAB_ANOMALY, SKAB_CHANGEPOINT) if c in df.columns])
            df = df.rename(columns={SKAB_TIME: S.TS})
            df.insert(0, S.MACHINE_ID, os.path.splitext(os.path.basename(path))[0])
        else:
            df = pd.read_csv(path)
    missing = [c for c in (S.MACHINE_ID, S.TS) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (need machine_id, ts, sensor columns)")
    df[S.TS] = pd.to_datetime(df[S.TS], utc=True).dt.tz_localize(None)
    return df


def read_history(path: str) -> pd.DataFrame:
    """Readings from a CSV/Parquet file or every ``*.csv``/``*.parquet`` under a directory.

    Returns
    -------
    pandas.DataFrame: machine_id, ts (naive UTC), then the sensor columns; sorted by
    (machine_id, ts)
    """
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.csv"), recursive=True)
                       + glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    elif os.path.exists(path):
        files = [path]
    else:
        raise FileNotFoundError(path)
    if not files:
        raise ValueError(f"no .csv or .parquet files under {path}")
    df = pd.concat([_read_one(f) for f in files], ignore_index=True)
    return df.sort_values([S.MACHINE_ID, S.TS], kind="mergesort").reset_index(drop=True)


def default_sensors(history: pd.DataFrame) -> list[str]:
    """SKAB's sensors when all present, else every numeric column but machine_id/ts."""
    if all(c in history.columns for c in SKAB_SENSORS):
        return list(SKAB_SENSORS)
    return [c for c in history.columns if c not in (S.MACHINE_ID, S.TS)
            and pd.api.types.is_numeric_dtype(history[c])]


def train_version(history: pd.DataFrame, params: dict, root: str, sensors=None,
                  promote: bool = False, drift_conf=None, source: str = "",
                  reason: str = "manual") -> str:
    """Fit an LSTMAutoencoder on ``history`` and register it as the next version of ``root``.

    The version's ``training.json`` holds: source, reason, sensors, training data range
    (first_ts, last_ts, rows, machines), metrics (loss per epoch, seconds per epoch, fit
    seconds, threshold) and the training score histogram for drift (``drift_conf`` bins).

    Returns
    -------
    str, the new version
    """
    sensors = list(sensors or default_sensors(history))
    X = history[sensors].to_numpy(dtype=np.float64)
    if np.isnan(X).any():
        raise ValueError("training readings contain missing sensor values")
    t0 = time.perf_counter()
    model = LSTMAutoencoder(**params).fit(X)
    fit_seconds = time.perf_counter() - t0
    bins = drift_conf.bins if drift_conf else 20
    value_range = drift_conf.value_range if drift_conf else 2.0
    hist = drift.score_histogram(model.score(X), model.threshold_, bins, value_range)
    meta = {
        "source": source, "reason": reason, "sensors": sensors,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"first_ts": str(history[S.TS].min()), "last_ts": str(history[S.TS].max()),
                 "rows": int(len(history)), "machines": sorted(map(str, history[S.MACHINE_ID]
                                                                     .unique()))},
        "metrics": {"loss": [round(x, 6) for x in model.history_],
                    "epoch_seconds": [round(x, 4) for x in model.epoch_seconds_],
                    "fit_seconds": round(fit_seconds, 3), "threshold": model.threshold_},
        "score_histogram": {"bins": bins, "value_range": value_range,
                            "counts": hist.tolist()},
    }
    version = registry.register(model, root, activate=promote, metadata=meta)
    logger.info("trained %s on %d rows (%s) in %.1f s%s", version, len(history), reason,
                fit_seconds, ", promoted" if promote else "")
    return version


# -- drift (SENSOR ANOMALY TABLE -> sensor_drift) ----------------------------------------------


def _us(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def record_drift(db_url: str, root: str, drift_conf, now: dt.datetime | None = None
                 ) -> list[dict]:
    """Record drift for every closed time window not yet in ``sensor_drift``.

    Reads the scores of windows ending after the newest recorded window start (naive UTC
    ``now``, default the wall clock, decides which time windows are closed).

    Returns
    -------
    list of dict: the new sensor_drift rows (model_version, window_start, window_end,
    n_windows, jsd, drifted)
    """
    import sqlalchemy as sa

    from soads.storage import tables

    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    eng = tables.engine(db_url)
    a, d = tables.TABLE["sensor_anomaly"], tables.TABLE["sensor_drift"]
    try:
        tables.create_tables(eng)
        with eng.begin() as conn:
            newest = conn.execute(sa.select(sa.func.max(d.c[S.WINDOW_START]))).scalar()
            q = sa.select(a.c[S.MODEL_VERSION], a.c[S.WINDOW_END], a.c[S.SCORE])
            if newest is not None:
                q = q.where(a.c[S.WINDOW_END] >= newest + dt.timedelta(
                    seconds=drift_conf.window_seconds))
            scores = [(r[0], _us(r[1]), r[2]) for r in conn.execute(q)]
            reference = {}
            for v in {s[0] for s in scores}:
                info = registry.training_info(root, v)
                h = info.get("score_histogram")
                if h and h["bins"] == drift_conf.bins and h["value_range"] == drift_conf.value_range:
                    reference[v] = (info["metrics"]["threshold"], h["counts"])
            out = drift.drift_rows(scores, reference, drift_conf.window_seconds, drift_conf.bound,
                                   drift_conf.min_windows, _us(now), drift_conf.bins,
                                   drift_conf.value_range)
            rows = [{S.MODEL_VERSION: r["model_version"],
                     S.WINDOW_START: _EPOCH + dt.timedelta(microseconds=r["window_start_us"]),
                     S.WINDOW_END: _EPOCH + dt.timedelta(microseconds=r["window_end_us"]),
                     S.N_WINDOWS: r["n_windows"], S.JSD: r["jsd"], S.DRIFTED: r["drifted"]}
                    for r in out]
            tables.upsert(conn, "sensor_drift", rows)
    finally:
        eng.dispose()
    for r in rows:
        if r[S.DRIFTED]:
            logger.warning("drift: model %s, window %s: JSD %.4f > %.4f over %d windows",
                           r[S.MODEL_VERSION], r[S.WINDOW_START], r[S.JSD], drift_conf.bound,
                           r[S.N_WINDOWS])
    return rows


def run_schedule(data: str, params: dict, root: str, every_seconds: float | None,
                 check_seconds: float, promote: bool, drift_conf=None, db_url: str | None = None,
                 max_runs: int | None = None, sleep=time.sleep, clock=time.time) -> list[str]:
    """The retraining loop: every ``check_seconds`` record drift (when ``db_url`` is given) and
    train a new version from ``data`` when :func:`soads.sensor.drift.should_retrain` says so.
    Runs until killed, or until ``max_runs`` versions were trained. Returns those versions."""
    trained: list[str] = []
    last = None
    while max_runs is None or len(trained) < max_runs:
        new_drift = record_drift(db_url, root, drift_conf) if db_url and drift_conf else []
        reason = drift.should_retrain(clock(), last, every_seconds, new_drift)
        if reason:
            trained.append(train_version(read_history(data), params, root, promote=promote,
                                         drift_conf=drift_conf, source=data, reason=reason))
            last = clock()
            continue
        sleep(check_seconds)
    return trained
