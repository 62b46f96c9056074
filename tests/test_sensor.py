"""soads.sensor: windows, LSTMAutoencoder, SKAB protocol, robot-arm simulator."""
import os

import numpy as np
import pytest

import streamtools as st

torch = st.require_module("torch")  # under CI a missing torch fails, never skips

from soads.evaluate import roc_auc
from soads.sensor import robot_arm, skab
from soads.sensor.lstm_ae import LSTMAutoencoder, Standardizer, fbeta_threshold
from soads.sensor.windows import sliding_windows, window_end_index, window_to_points

SMALL = dict(window=5, hidden_size=16, latent_size=3, epochs=8, seed=3)


@pytest.fixture(scope="module")
def synthetic():
    """Three coupled periodic sensors with noise; the test part has an obvious fault
    (sensor 1 decoupled and shifted) on rows 700-799."""
    rng = np.random.default_rng(42)
    t = np.arange(1200)
    X = np.c_[np.sin(t / 6), np.cos(t / 6), np.sin(t / 6) * np.cos(t / 6)]
    X = X + 0.05 * rng.standard_normal(X.shape)
    y = np.zeros(len(X), dtype=np.int8)
    X[700:800, 1] = 1.5 + 0.05 * rng.standard_normal(100)
    y[700:800] = 1
    return X[:600], X[600:], y[600:]


@pytest.fixture(scope="module")
def fitted(synthetic):
    X_train, _, _ = synthetic
    return LSTMAutoencoder(**SMALL).fit(X_train)


# ---------------------------------------------------------------- windows
def test_sliding_windows_exact():
    X = np.array([[0, 10], [1, 11], [2, 12], [3, 13]])
    w = sliding_windows(X, 2)
    assert w.tolist() == [
        [[0, 10], [1, 11]],
        [[1, 11], [2, 12]],
        [[2, 12], [3, 13]],
    ]
    assert w.dtype == np.float32 and w.flags["C_CONTIGUOUS"]
    assert sliding_windows(X, 2, step=2).tolist() == [[[0, 10], [1, 11]], [[2, 12], [3, 13]]]
    assert sliding_windows(X, 4).shape == (1, 4, 2)
    assert sliding_windows(X, 5).shape == (0, 5, 2)
    assert window_end_index(4, 2).tolist() == [1, 2, 3]
    assert window_to_points(np.array([7.0, 8.0, 9.0]), 4, 2, fill=0.0).tolist() == [0, 7, 8, 9]
    with pytest.raises(ValueError):
        sliding_windows(np.arange(4), 2)


# ---------------------------------------------------------------- model
def test_fit_sets_attributes_and_shapes(fitted, synthetic):
    _, X_test, _ = synthetic
    for attr in ("model_", "scaler_", "threshold_", "error_mean_", "error_precision_"):
        assert hasattr(fitted, attr)
    assert fitted.score(X_test).shape == (len(X_test) - SMALL["window"] + 1,)
    assert fitted.score_points(X_test).shape == (len(X_test),)
    assert np.isnan(fitted.score_points(X_test)[: SMALL["window"] - 1]).all()
    p = fitted.predict(X_test)
    assert p.shape == (len(X_test),) and set(np.unique(p)) <= {0, 1}
    assert len(fitted.history_) == SMALL["epochs"]


def test_quality_floor(fitted, synthetic):
    _, X_test, y_test = synthetic
    s = fitted.score_points(X_test)
    w = SMALL["window"]
    assert roc_auc(y_test[w - 1 :], s[w - 1 :]) > 0.95
    # the fpr threshold from training data alone catches most of the fault, few false alarms
    p = fitted.predict(X_test)
    assert p[y_test == 1].mean() > 0.8
    assert p[y_test == 0].mean() < 0.1


def test_fit_is_deterministic(fitted, synthetic):
    X_train, X_test, _ = synthetic
    again = LSTMAutoencoder(**SMALL).fit(X_train)
    np.testing.assert_array_equal(again.score(X_test), fitted.score(X_test))


def test_save_load_round_trip(fitted, synthetic, tmp_path):
    _, X_test, _ = synthetic
    fitted.save(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == [
        "config.json",
        "scaler.npz",
        "threshold.json",
        "weights.pt",
    ]
    loaded = LSTMAutoencoder.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(X_test), fitted.score(X_test))
    assert loaded.threshold_ == fitted.threshold_
    assert loaded.get_params() == fitted.get_params()


def test_mahalanobis_matches_numpy(fitted, synthetic):
    X_train, X_test, _ = synthetic
    # hand computation of paper eq. 2 from the reconstruction errors
    e_train = fitted.reconstruction_errors(X_train).astype(np.float64).reshape(len(X_train) - 4, -1)
    mu = e_train.mean(axis=0)
    cov = np.cov(e_train, rowvar=False)
    d = cov.shape[0]
    s = fitted.shrinkage
    cov = (1 - s) * cov + s * np.trace(cov) / d * np.eye(d) + 1e-9 * np.eye(d)
    e = fitted.reconstruction_errors(X_test).astype(np.float64).reshape(len(X_test) - 4, -1)
    expected = np.array([(v - mu) @ np.linalg.solve(cov, v - mu) for v in e])
    np.testing.assert_allclose(fitted.score(X_test), expected, rtol=1e-6)


def test_thresholds(fitted, synthetic):
    X_train, X_test, y_test = synthetic
    model = LSTMAutoencoder(**SMALL).fit(X_train)
    th = model.infer_threshold(X_train, fpr=0.05)
    assert th == pytest.approx(np.quantile(model.score(X_train), 0.95))
    assert model.predict(X_train).mean() == pytest.approx(0.05, abs=0.01)
    model.fit_threshold_fbeta(X_test, y_test, beta=1.0)
    p = model.predict(X_test)
    tp = int((p & y_test).sum())
    f1 = 2 * tp / (2 * tp + int((p & (1 - y_test)).sum()) + int(((1 - p) & y_test).sum()))
    assert f1 == pytest.approx(model.threshold_info_["fbeta_val"])
    assert f1 > 0.9


def test_fbeta_threshold_exact():
    # scores sorted: 0.8(1) 0.4(0) 0.35(1) 0.1(0): best F1 flags the top three (tp 2, fp 1)
    t, f = fbeta_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert t == pytest.approx(0.225) and f == 0.8
    # beta = 0.5 favours precision: flag only 0.8 -> P 1, R 0.5, F0.5 = 1.25*0.5/(0.25+0.5)
    t, f = fbeta_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], beta=0.5)
    assert t == pytest.approx(0.6) and f == pytest.approx(0.625 / 0.75)


def test_standardizer_constant_column():
    s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert s.transform(np.array([[2.0, 5.0]])).tolist() == [[0.0, 0.0]]


def test_torch_not_imported_by_package():
    import subprocess
    import sys

    code = "import soads.sensor.lstm_ae, soads.sensor.skab, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- SKAB
# The SKAB protocol runs here on synthetic files in SKAB's format (the SKAB data is GPL and not
# part of the repository; `soads sensor evaluate --data DIR` evaluates on it). The readings come
# from the project's robot-arm simulator, spread over SKAB's eight columns.
_MIX = np.random.default_rng(0).uniform(-1.0, 1.0, size=(3, len(skab.SKAB_SENSORS)))


def skab_like(n_test, seed, abnormal_fraction=0.3, train_rows=skab.TRAIN_ROWS, labels=True):
    """A SKAB-format frame (``datetime`` index at 1 s, the eight SKAB columns, ``anomaly`` and
    ``changepoint``): ``train_rows`` normal robot-arm readings, then ``n_test`` readings with
    abnormal episodes (the labels are the simulator's), each mixed into eight noisy sensors."""
    import pandas as pd

    X0, y0, _ = robot_arm.simulate(train_rows, seed=seed)
    X1, y1, _ = robot_arm.simulate(n_test, seed=seed + 1, abnormal_fraction=abnormal_fraction)
    X, y = np.r_[X0, X1], np.r_[y0, y1]
    rng = np.random.default_rng(seed + 2)
    values = X @ _MIX + 0.02 * rng.standard_normal((len(X), _MIX.shape[1]))
    df = pd.DataFrame(values, columns=list(skab.SKAB_SENSORS),
                      index=pd.date_range("2020-03-09 10:00:00", periods=len(X), freq="s",
                                          name=skab.SKAB_TIME))
    if labels:
        df[skab.SKAB_ANOMALY] = y.astype(float)
        df[skab.SKAB_CHANGEPOINT] = np.r_[0, (np.diff(y) == 1).astype(int)].astype(float)
    return df


def write_skab_like(path, df):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.to_csv(path, sep=";")
    return str(path)


def test_skab_metrics_exact():
    # tp 60, fp 10, fn 20, tn 110: F1 = 60 / (60 + 15) = 0.8, FAR = 10/120, MAR = 20/80
    assert skab.skab_metrics(tp=60, fp=10, fn=20, tn=110) == {"f1": 0.8, "far": 8.33, "mar": 25.0}
    assert skab.confusion([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}


def test_skab_two_files(tmp_path):
    data = tmp_path / "data"
    files = [write_skab_like(data / "valve1" / f"{k}.csv", skab_like(800, seed=10 * k + 1))
             for k in range(2)]
    assert skab.read_skab_csv(files[0]).shape == (1200, len(skab.SKAB_SENSORS) + 2)
    # the drift-aware scaling (on by default) reads the anomaly-free record
    write_skab_like(data / skab.ANOMALY_FREE,
                    skab_like(1600, seed=5, abnormal_fraction=0.0, labels=False))
    params = dict(window=10, hidden_size=16, latent_size=4, epochs=5, seed=0)
    r = skab.evaluate_skab(str(data), files=files, params=params, pretrain=False)
    assert r["files"] == 2
    n_rows = sum(len(skab.read_skab_csv(f)) for f in files)
    assert r["points"] == n_rows - 2 * 400 == r["tp"] + r["fp"] + r["fn"] + r["tn"]
    assert r["tp"] + r["fn"] > 0 and r["fp"] + r["tn"] > 0
    assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["far"] <= 100.0 and 0.0 <= r["mar"] <= 100.0
    assert r["f1"] == skab.skab_metrics(r["tp"], r["fp"], r["fn"], r["tn"])["f1"]
    # a useful detector: measured F1 0.91, FAR 3.60 %, MAR 4.98 % (tp 305, fp 46, fn 16,
    # tn 1,233); flagging every test row would give F1 0.33, FAR 100 %
    assert r["tp"] + r["fn"] == 321
    assert r["f1"] >= 0.85 and r["far"] <= 6.0 and r["mar"] <= 10.0, r
    assert [os.path.basename(p["file"]) for p in r["per_file"]] == ["0.csv", "1.csv"]


def test_false_alarm_replay_chunks_and_pooling():
    # 1,000 normal rows -> halves of 500 -> two chunks of 100 train + 150 test rows each
    rng = np.random.default_rng(5)
    t = np.arange(1000)
    X = np.c_[np.sin(t / 6), np.cos(t / 6)] + 0.05 * rng.standard_normal((1000, 2))
    params = dict(window=5, hidden_size=8, latent_size=2, epochs=2, seed=0)
    r = skab.false_alarm_replay(X, params, pretrain=True, pretrain_params={"epochs": 1},
                                inflate_scale=True, train_rows=100, test_rows=150)
    assert r["chunks"] == 4 and r["test_rows"] == 4 * 150
    assert [h["chunks"] for h in r["per_half"]] == [2, 2]
    assert r["fp"] == sum(h["fp"] for h in r["per_half"])
    assert r["far"] == round(100.0 * r["fp"] / 600, 2)
    assert r["far"] < 50.0  # a normal record: most rows are not flagged


def test_sensor_evaluate_select_reads_only_the_anomaly_free_file(tmp_path, capsys):
    import json

    from soads import cli

    # a 2,300-row normal record in the anomaly-free file's format, and NO labelled file: --select must not
    # need one (halves of 1,150 rows = one 400 + 750 chunk each)
    free = skab_like(2300 - skab.TRAIN_ROWS, seed=7, abnormal_fraction=0.0, labels=False)
    write_skab_like(tmp_path / "data" / skab.ANOMALY_FREE, free)
    conf = tmp_path / "sensor.toml"
    conf.write_text(
        '[sensor]\npreset = "tiny"\n[sensor.presets.tiny]\nwindow = 10\nhidden_size = 8\n'
        'latent_size = 2\nepochs = 1\n[sensor.skab]\npretrain_params = { epochs = 1 }\n'
    )
    argv = ["sensor", "evaluate", "--data", str(tmp_path / "data"), "--sensor-conf", str(conf),
            "--select", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cands = out["candidates"]
    assert [(c["pretrain"], c["inflate_scale"]) for c in cands] == [
        (False, False), (False, True), (True, False), (True, True)]
    assert all(c["test_rows"] == 2 * 750 and c["chunks"] == 2 for c in cands)
    assert out["chosen"] == skab.choose_design(cands)


def test_choose_design_tie_prefers_fewer_add_ons():
    assert skab.choose_design([{"far": 9.0}, {"far": 4.5}, {"far": 4.0}, {"far": 1.0}]) == 3
    assert skab.choose_design([{"far": 1.9}, {"far": 4.5}, {"far": 4.0}, {"far": 1.0}]) == 0
    assert skab.choose_design([{"far": 2.1}, {"far": 1.5}, {"far": 4.0}, {"far": 1.0}]) == 1


def test_drift_inflation():
    t = np.arange(2000.0)
    assert np.round(skab.drift_inflation(np.c_[np.sin(t), t / 100]), 1).tolist() == [1.0, 5.0]


# ---------------------------------------------------------------- robot arm
def test_robot_arm_simulator_deterministic():
    a = robot_arm.simulate(3000, seed=5, abnormal_fraction=0.2)
    b = robot_arm.simulate(3000, seed=5, abnormal_fraction=0.2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    X, y, case = a
    assert X.shape == (3000, 3)
    assert 0.05 < y.mean() < 0.35  # episodes are random; grab faults count held steps only
    assert set(np.unique(case)) <= {robot_arm.NORMAL, *robot_arm.CASES}
    assert (y == (case != robot_arm.NORMAL)).all()
    X0, y0, _ = robot_arm.simulate(500, seed=5)
    assert y0.sum() == 0


def test_classification_metrics_exact():
    m = robot_arm.classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert m == {"accuracy": 75.0, "precision": 0.6667, "recall": 1.0, "f1": 0.8, "fall_out": 0.5}


def test_robot_arm_evaluation_small():
    params = dict(window=3, hidden_size=16, latent_size=2, epochs=3, seed=0)
    r = robot_arm.evaluate_robot_arm(params, seed=1, n_fit=3000, n_val=3000, n_test=3000)
    assert r["roc_auc"] > 0.9
    assert r["f1"] > 0.7
    assert set(r["recall_per_case"]) <= set(robot_arm.CASES)
    assert r["normal_positive"]["accuracy"] == r["accuracy"]


# ---------------------------------------------------------------- registry
def test_registry_versions_and_rollback(fitted, synthetic, tmp_path):
    from soads.sensor import registry

    _, X_test, _ = synthetic
    root = tmp_path / "models"
    assert registry.list_versions(root) == [] and registry.current_version(root) is None
    v1 = registry.register(fitted, root, activate=True)
    other = LSTMAutoencoder(**{**SMALL, "seed": 4}).fit(synthetic[0])
    v2 = registry.register(other, root)
    assert (v1, v2) == ("v0001", "v0002")
    assert registry.list_versions(root) == ["v0001", "v0002"]
    assert registry.current_version(root) == "v0001"  # registering does not promote
    registry.set_current(root, v2)
    assert registry.load(root).model_version_ == "v0002"
    registry.set_current(root, v1)  # roll back
    m = registry.load(root)
    assert m.model_version_ == "v0001"
    np.testing.assert_array_equal(m.score(X_test), fitted.score(X_test))
    with pytest.raises(KeyError):
        registry.set_current(root, "v0009")
    # CURRENT: the version in use; PROMOTIONS: the promotion stack that `rollback` pops
    assert sorted(os.listdir(root)) == ["CURRENT", "PROMOTIONS", "v0001", "v0002"]


def test_throughput_smoke():
    from soads.sensor.lstm_ae import throughput

    r = throughput(n_train_windows=300, n_score_windows=500, repeats=1, hidden_size=8)
    assert set(r) == {
        "epoch_seconds",
        "forward_windows_per_s",
        "forward_windows_per_cpu_s",
        "score_windows_per_s",
        "score_windows_per_cpu_s",
    }
    assert all(v > 0 for v in r.values())
