"""Sensor job without services: JSON-lines file source -> windows in state -> scores -> SQLite;
hot swap of the model between micro-batches; restart on the same checkpoint; drift + retraining
trigger; registry promote/rollback."""
import datetime as dt
import json
import os

import numpy as np
import pytest

from soads import schema as S
from soads.sensor import drift, registry
from soads.sensor.settings import DriftConf, SensorStreamConf

torch = pytest.importorskip("torch") if os.environ.get("CI") != "true" else __import__("torch")

T0 = dt.datetime(2024, 3, 4, 8, 0, 0)
SENSORS = ("a", "b")
PARAMS = dict(window=3, hidden_size=4, latent_size=2, epochs=1, seed=0)


def _history(seed, n=200):
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame({S.MACHINE_ID: "m1", S.TS: [T0 + dt.timedelta(seconds=int(i)) for i in t],
                         "a": np.sin(t / 5) + 0.05 * rng.normal(size=n),
                         "b": np.cos(t / 5) + 0.05 * rng.normal(size=n)})


def _write_readings(path, machines, seconds, dup=None):
    with open(path, "w") as fh:
        for s in seconds:
            for m in machines:
                ts = (T0 + dt.timedelta(seconds=s)).isoformat() + "Z"
                fh.write(json.dumps({"machine_id": m, "ts": ts,
                                     "values": {"a": np.sin(s / 5), "b": np.cos(s / 5)}}) + "\n")
        if dup is not None:  # a repeated reading (same machine and ts): makes no window
            m, s = dup
            ts = (T0 + dt.timedelta(seconds=s)).isoformat() + "Z"
            fh.write(json.dumps({"machine_id": m, "ts": ts, "values": {"a": 5.0, "b": 5.0}}) + "\n")


def test_registry_promote_rollback(tmp_path):
    from soads.sensor.train import train_version

    root = str(tmp_path / "reg")
    v1 = train_version(_history(0), PARAMS, root, sensors=SENSORS, promote=True)
    v2 = train_version(_history(1), PARAMS, root, sensors=SENSORS)
    assert (v1, v2) == ("v0001", "v0002")
    assert registry.current_version(root) == "v0001"
    registry.promote(root, v2)
    assert registry.current_version(root) == "v0002"
    assert registry.rollback(root) == "v0001"
    assert registry.current_version(root) == "v0001"
    with pytest.raises(ValueError):
        registry.rollback(root)
    info = registry.training_info(root, v1)
    assert info["sensors"] == list(SENSORS) and info["data"]["rows"] == 200
    assert sum(info["score_histogram"]["counts"]) == 198  # 200 rows, window 3


def test_stream_hot_swap_exactly_once(spark, tmp_path):
    from soads.sensor.streaming import start_sensor_query
    from soads.sensor.train import train_version
    from soads.storage import sensor_sink, tables

    root = str(tmp_path / "reg")
    train_version(_history(0), PARAMS, root, sensors=SENSORS, promote=True)
    train_version(_history(1), PARAMS, root, sensors=SENSORS)
    inp = tmp_path / "in"
    inp.mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    conf = SensorStreamConf(source="files", input_path=str(inp), registry=root, db_url=db,
                            checkpoint_root=str(tmp_path / "ck"), window=3, sensors=SENSORS)
    _write_readings(inp / "1.json", ["m1", "m2"], range(0, 10))
    q = start_sensor_query(spark, conf, trigger=False)
    q.processAllAvailable()
    registry.promote(root, "v0002")  # hot swap between micro-batches, no restart
    _write_readings(inp / "2.json", ["m1", "m2"], range(10, 20), dup=("m1", 15))
    q.processAllAvailable()
    q.stop()

    rows = tables.read_table(db, "sensor_anomaly", order_by=[S.MACHINE_ID, S.WINDOW_END])
    ends = [T0 + dt.timedelta(seconds=s) for s in range(2, 20)]
    assert [(r[S.MACHINE_ID], r[S.WINDOW_END]) for r in rows] == \
        [(m, e) for m in ("m1", "m2") for e in ends]  # every window exactly once
    for r in rows:
        want = "v0001" if r[S.WINDOW_END] < T0 + dt.timedelta(seconds=10) else "v0002"
        assert r[S.MODEL_VERSION] == want
        assert r[S.IS_ANOMALY] == (r[S.SCORE] > r[S.THRESHOLD])
    # the streamed score equals the batch model's score of the same window
    m1 = registry.load(root, "v0001")
    x = np.c_[np.sin(np.arange(3) / 5), np.cos(np.arange(3) / 5)]
    assert rows[0][S.SCORE] == pytest.approx(float(m1.score(x)[0]), rel=1e-5)

    # restart on the same checkpoint: nothing new, nothing changes
    q = start_sensor_query(spark, conf, trigger=False)
    q.processAllAvailable()
    q.stop()
    assert tables.read_table(db, "sensor_anomaly", order_by=[S.MACHINE_ID, S.WINDOW_END]) == rows
    # a replayed batch id is skipped by the ledger
    ledger = tables.read_table(db, "sink_batch")
    assert {r[S.SINK] for r in ledger} == {sensor_sink.SINK_SENSOR}
    empty = spark.createDataFrame([], "machine_id string, window_end timestamp, "
                                      "window array<double>")
    assert sensor_sink.write_sensor_anomalies(empty, ledger[0][S.BATCH_ID], db, root, 3, 2) is None


def test_jensen_shannon_exact():
    assert drift.jensen_shannon([1, 0], [0, 1]) == 1.0
    assert drift.jensen_shannon([2, 2], [5, 5]) == 0.0
    # P = (1/2, 1/2), Q = (1, 0): JSD = 1.5 - 0.75 log2 3
    assert drift.jensen_shannon([1, 1], [1, 0]) == pytest.approx(1.5 - 0.75 * np.log2(3), abs=1e-12)
    # P = (1/2, 0, 1/2), Q = (1/2, 1/2, 0): M = (1/2, 1/4, 1/4), both KLs are 1/2 bit
    assert drift.jensen_shannon([1, 0, 1], [1, 1, 0]) == pytest.approx(0.5, abs=1e-12)
    assert drift.jensen_shannon([1, 3], [3, 1]) == pytest.approx(drift.jensen_shannon([3, 1], [1, 3]))
    with pytest.raises(ValueError):
        drift.jensen_shannon([0, 0], [1, 1])


def test_drift_trigger(tmp_path):
    from soads.sensor.train import record_drift, run_schedule
    from soads.storage import tables

    data = tmp_path / "hist.csv"
    _history(0).to_csv(data, index=False)
    root = str(tmp_path / "reg")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    dconf = DriftConf(window_seconds=60, bins=4, value_range=2.0, bound=0.3, min_windows=5)
    v1 = run_schedule(str(data), PARAMS, root, every_seconds=3600, check_seconds=0, promote=True,
                      drift_conf=dconf, max_runs=1, sleep=lambda s: None)
    assert v1 == ["v0001"] and registry.current_version(root) == "v0001"
    th = registry.training_info(root, "v0001")["metrics"]["threshold"]
    hist = registry.training_info(root, "v0001")["score_histogram"]["counts"]
    # minute 0: the training histogram itself (scores at bin centres); minute 1: all far above
    centres = [th * (0.25 + 0.5 * i) for i in range(4)] + [th * 3]
    scores = [c for c, n in zip(centres, hist) for _ in range(n)]
    rows = [{S.MACHINE_ID: "m1", S.WINDOW_END: T0 + dt.timedelta(milliseconds=250 * i),
             S.SCORE: sc, S.THRESHOLD: th, S.IS_ANOMALY: sc > th, S.MODEL_VERSION: "v0001"}
            for i, sc in enumerate(scores)]
    rows += [{S.MACHINE_ID: "m1", S.WINDOW_END: T0 + dt.timedelta(seconds=60 + s),
              S.SCORE: th * 5, S.THRESHOLD: th, S.IS_ANOMALY: True, S.MODEL_VERSION: "v0001"}
             for s in range(10)]
    from soads.storage import sensor_sink

    sensor_sink.prepare(db)
    tables.write_rows(db, "sensor_anomaly", rows)
    got = record_drift(db, root, dconf, now=T0 + dt.timedelta(seconds=120))
    assert [(r[S.WINDOW_START], r[S.N_WINDOWS], r[S.DRIFTED]) for r in got] == [
        (T0, 198, False), (T0 + dt.timedelta(seconds=60), 10, True)]
    assert got[0][S.JSD] == 0.0
    assert got[1][S.JSD] == pytest.approx(drift.jensen_shannon([0, 0, 0, 0, 10], hist))
    assert record_drift(db, root, dconf, now=T0 + dt.timedelta(seconds=120)) == []  # recorded once
    assert drift.should_retrain(0.0, 0.0, 3600.0, got) == "drift"
    assert drift.should_retrain(0.0, 0.0, 3600.0, got[:1]) is None
