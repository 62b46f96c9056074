"""Sensor job without services: JSON-lines file source -> windows in state -> scores -> SQLite;
hot swap of the model between micro-batches; restart on the same checkpoint; drift + retraining
trigger; registry promote/rollback."""
import datetime as dt
import json

import numpy as np
import pytest

from soads import schema as S
from soads.sensor import drift, registry
from soads.config import DriftConf, SensorStreamConf
import streamtools as st

torch = st.require_module("torch")  # under CI a missing torch fails, never skips

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


def test_parse_reading_reasons():
    from soads.sensor.streaming import ReadingError, parse_reading

    ok = '{"machine_id": "m", "ts": "2024-03-04T09:00:00+01:00", "values": {"a": 1, "b": null}}'
    m, t, v = parse_reading(ok, SENSORS)
    assert (m, t) == ("m", int(T0.replace(tzinfo=dt.timezone.utc).timestamp() * 1e6))
    assert v[0] == 1.0 and np.isnan(v[1])
    cases = {
        None: "malformed_json", "  ": "malformed_json", "{": "malformed_json",
        '"m1"': "not_a_reading",
        '{"machine_id": "", "ts": 0}': "missing_machine_id",
        '{"machine_id": ["m"], "ts": 0}': "bad_machine_id",
        '{"machine_id": "m", "ts": null}': "missing_ts",
        '{"machine_id": "m", "ts": true}': "bad_timestamp",
        '{"machine_id": "m", "ts": 0, "values": [1, 2]}': "bad_value",
        '{"machine_id": "m", "ts": 0, "values": {"a": true}}': "bad_value",
        '{"machine_id": "m", "ts": 0, "values": {"b": Infinity}}': "bad_value",
        '{"machine_id": "m", "ts": 0, "values": {"b": "1.5"}}': "bad_value",
    }
    for text, reason in cases.items():
        with pytest.raises(ReadingError) as e:
            parse_reading(text, SENSORS)
        assert e.value.reason == reason, text
    assert parse_reading('{"machine_id": "m", "ts": 2.5, "values": {"z": "x"}}', SENSORS)[1] \
        == 2_500_000  # epoch seconds; a key that is not a configured sensor is ignored


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
    from soads.sensor.streaming import score_micro_batch, start_sensor_query
    from soads.sensor.train import train_version
    from soads.storage import sensor_sink, tables

    root = str(tmp_path / "reg")
    train_version(_history(0), PARAMS, root, sensors=SENSORS, promote=True)
    train_version(_history(1), PARAMS, root, sensors=SENSORS)
    inp = tmp_path / "in"
    inp.mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    conf = SensorStreamConf(source="files", input_path=str(inp), registry=root,
                            checkpoint_root=str(tmp_path / "ck"), window=3, sensors=SENSORS)
    _write_readings(inp / "1.json", ["m1", "m2"], range(0, 10))
    q = start_sensor_query(spark, conf, db, trigger=False)
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
    q = start_sensor_query(spark, conf, db, trigger=False)
    q.processAllAvailable()
    q.stop()
    assert tables.read_table(db, "sensor_anomaly", order_by=[S.MACHINE_ID, S.WINDOW_END]) == rows
    # a replayed batch id is skipped by the ledger
    ledger = tables.read_table(db, "sink_batch")
    assert {r[S.SINK] for r in ledger} == {sensor_sink.SINK_SENSOR}
    empty = spark.createDataFrame([], "machine_id string, window_end timestamp, "
                                      "window array<double>")
    assert score_micro_batch(empty, ledger[0][S.BATCH_ID], db, root, 3, 2) is None


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


def test_stream_quarantines_every_reading_that_makes_no_window(spark, tmp_path):
    """Unparseable, incomplete, non-numeric, late, duplicate and out-of-order readings each land
    in sensor_quarantine with a reason and their file:line; a rejected reading does not move the
    watermark; a restart on the checkpoint changes nothing."""
    from soads.sensor.streaming import start_sensor_query
    from soads.sensor.train import train_version
    from soads.storage import tables

    root = str(tmp_path / "reg")
    train_version(_history(0), PARAMS, root, sensors=SENSORS, promote=True)
    inp = tmp_path / "in"
    inp.mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    conf = SensorStreamConf(source="files", input_path=str(inp), registry=root,
                            checkpoint_root=str(tmp_path / "ck"), window=3, sensors=SENSORS,
                            idle_seconds=5.0)

    def reading(m, s, values=None):
        return json.dumps({"machine_id": m, "ts": (T0 + dt.timedelta(seconds=s)).isoformat() + "Z",
                           "values": values or {"a": np.sin(s / 5), "b": np.cos(s / 5)}})

    first = [reading("m1", s) for s in range(10)] + [
        "not json",                                                     # line 11
        "[1, 2]",                                                       # 12
        json.dumps({"ts": "2024-03-04T08:00:00Z", "values": {"a": 1}}),  # 13
        json.dumps({"machine_id": "m1", "values": {"a": 1}}),           # 14
        json.dumps({"machine_id": "m1", "ts": "yesterday"}),            # 15
        reading("m1", 1000, {"a": "high", "b": 1.0}),  # 16: far ahead, must not move the watermark
        json.dumps({"machine_id": 7, "ts": "2024-03-04T08:00:00Z"}),    # 17
        "",                                                             # 18: blank, not a reading
    ]
    (inp / "1.json").write_text("\n".join(first) + "\n")
    q = start_sensor_query(spark, conf, db, trigger=False)
    q.processAllAvailable()
    # the watermark is now 9 s - 5 s = 4 s
    second = [reading("m1", 3), reading("m1", 6), reading("m1", 9)] + \
        [reading("m1", s) for s in (10, 11, 12)]
    (inp / "2.json").write_text("\n".join(second) + "\n")
    q.processAllAvailable()
    q.stop()

    rows = tables.read_table(db, "sensor_anomaly", order_by=[S.WINDOW_END])
    assert [r[S.WINDOW_END] for r in rows] == [T0 + dt.timedelta(seconds=s) for s in range(2, 13)]
    got = tables.read_table(db, "sensor_quarantine", order_by=[S.SOURCE])
    f1, f2 = str(inp / "1.json"), str(inp / "2.json")
    at = lambda s: T0 + dt.timedelta(seconds=s)  # noqa: E731
    assert [(r[S.SOURCE], r[S.MACHINE_ID], r[S.TS], r[S.REASON]) for r in got] == [
        (f"{f1}:11", None, None, "malformed_json"),
        (f"{f1}:12", None, None, "not_a_reading"),
        (f"{f1}:13", None, None, "missing_machine_id"),
        (f"{f1}:14", "m1", None, "missing_ts"),
        (f"{f1}:15", "m1", None, "bad_timestamp"),
        (f"{f1}:16", "m1", at(1000), "bad_value"),
        (f"{f1}:17", None, None, "bad_machine_id"),
        (f"{f2}:1", "m1", at(3), "late"),
        (f"{f2}:2", "m1", at(6), "out_of_order"),
        (f"{f2}:3", "m1", at(9), "duplicate"),
    ]
    assert all(r[S.REASON] in S.SENSOR_REASONS and r[S.DETAIL] for r in got)
    assert "high" in got[5][S.DETAIL]

    q = start_sensor_query(spark, conf, db, trigger=False)  # restart: nothing new, nothing changes
    q.processAllAvailable()
    q.stop()
    assert tables.read_table(db, "sensor_quarantine", order_by=[S.SOURCE]) == got
    assert tables.read_table(db, "sensor_anomaly", order_by=[S.WINDOW_END]) == rows
