"""sensor: robot-arm simulator (paper 000, section 4.1 and Table 2) and its evaluation (Table 4).

A robot arm repeats one pick-and-place cycle. Three sensors are read once per step:

- ``vibration``: low at rest, high while the arm moves;
- ``voltage``: the supply voltage, about 12 V, dipping slightly while the motors run;
- ``pressure``: the gripper pressure, about 5 while an object is held, 0 otherwise.

Abnormal operation comes in the paper's seven cases (Table 2), each a contiguous episode:

=====================  ==========================================================
case                   effect on the sensors
=====================  ==========================================================
improper_operation     the arm barely moves: vibration stays at rest level, no grab
loose_bolt             vibration much higher and noisier ("not stably fixed")
power_failure          voltage near 0, no motion, no grab
unstable_power         voltage fluctuates strongly around its normal level
overvoltage            voltage about 25% too high
weak_grab              grab pressure too low to hold the object
excessive_grab         grab pressure high enough to damage the object
=====================  ==========================================================

A grab fault is labelled only on the steps where an object is held (elsewhere in its episode
the arm works normally); every other case is labelled over its whole episode.
Case frequencies follow Table 2 (counts 1,436 / 2,226 / 966 / 939 / 1,287 / 1,926 / 1,071 of
59,403 training rows, i.e. 16.6% abnormal). Everything is deterministic for a seed.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from soads.sensor.lstm_ae import LSTMAutoencoder

logger = logging.getLogger(__name__)

SENSORS = ("vibration", "voltage", "pressure")
NORMAL = "normal"
CASES = (
    "improper_operation",
    "loose_bolt",
    "power_failure",
    "unstable_power",
    "overvoltage",
    "weak_grab",
    "excessive_grab",
)
# paper 000, Table 2: rows per abnormal case in the 59,403-row training set
TABLE2_COUNTS = dict(zip(CASES, (1436, 2226, 966, 939, 1287, 1926, 1071)))
TABLE2_TOTAL = 59403

# one cycle: rest, move to the object, grab and carry, move back empty, release
_PHASES = (("rest", 3), ("move", 4), ("carry", 5), ("move", 4), ("rest", 2))
CYCLE = sum(n for _, n in _PHASES)


def _cycle_pattern() -> tuple[np.ndarray, np.ndarray]:
    moving = np.concatenate([np.full(n, p != "rest") for p, n in _PHASES])
    holding = np.concatenate([np.full(n, p == "carry") for p, n in _PHASES])
    return moving, holding


def simulate(
    n: int, seed: int, abnormal_fraction: float = 0.0, episode: tuple[int, int] = (30, 120)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` readings of the robot arm.

    Parameters
    ----------
    n : int
        Number of time steps.
    seed : int
    abnormal_fraction : float, optional (default=0.0)
        Approximate share of rows inside abnormal episodes; episodes of the seven cases are
        drawn with the Table 2 proportions and placed between normal stretches. The labelled
        share is lower, since grab faults are labelled only on held steps.
    episode : (int, int), optional
        Minimum and maximum episode length in steps.

    Returns
    -------
    X : array (n, 3), columns ``SENSORS``
    y : array (n,) of 0/1, 1 = abnormal
    case : array (n,) of str, ``"normal"`` or one of ``CASES``

    Examples
    --------
    >>> X, y, case = simulate(200, seed=1, abnormal_fraction=0.3)
    >>> X.shape, int(y.sum()) == int((case != "normal").sum())
    ((200, 3), True)
    """
    rng = np.random.default_rng(seed)
    moving, holding = _cycle_pattern()
    # cycle phase with a random start and occasional one-step stalls (a real arm is not a clock)
    steps = np.cumsum(rng.random(n) > 0.05) + rng.integers(CYCLE)
    phase = steps % CYCLE
    mov, hold = moving[phase], holding[phase]

    # episodes of abnormal cases
    case = np.full(n, NORMAL, dtype=object)
    if abnormal_fraction > 0:
        weights = np.array([TABLE2_COUNTS[c] for c in CASES], dtype=float)
        weights /= weights.sum()
        mean_len = sum(episode) / 2
        gap_mean = mean_len * (1 - abnormal_fraction) / abnormal_fraction
        t = int(rng.exponential(gap_mean))
        while t < n:
            length = int(rng.integers(episode[0], episode[1] + 1))
            case[t : t + length] = CASES[rng.choice(len(CASES), p=weights)]
            t += length + int(rng.exponential(gap_mean)) + 1

    # normal sensor values (shape (n,) each)
    vibration = np.where(mov, 1.0, 0.15) + 0.05 * rng.standard_normal(n)
    voltage = 12.0 - 0.15 * mov + 0.04 * rng.standard_normal(n)
    pressure = np.where(hold, 5.0, 0.0) + 0.15 * rng.standard_normal(n)

    # abnormal effects
    c = case
    m = c == "improper_operation"
    vibration[m] = 0.15 + 0.05 * rng.standard_normal(m.sum())
    pressure[m] = 0.15 * rng.standard_normal(m.sum())
    m = c == "loose_bolt"
    vibration[m] = vibration[m] * 2.2 + 0.4 * np.abs(rng.standard_normal(m.sum()))
    m = c == "power_failure"
    voltage[m] = 0.3 + 0.1 * rng.standard_normal(m.sum())
    vibration[m] = 0.02 * np.abs(rng.standard_normal(m.sum()))
    pressure[m] = 0.15 * rng.standard_normal(m.sum())
    m = c == "unstable_power"
    voltage[m] = 12.0 + 1.2 * rng.standard_normal(m.sum())
    m = c == "overvoltage"
    voltage[m] = 15.0 - 0.15 * mov[m] + 0.04 * rng.standard_normal(m.sum())
    m = (c == "weak_grab") & hold
    pressure[m] = 1.5 + 0.15 * rng.standard_normal(m.sum())
    m = (c == "excessive_grab") & hold
    pressure[m] = 9.0 + 0.15 * rng.standard_normal(m.sum())

    X = np.c_[vibration, voltage, pressure]
    # a grab fault shows only while an object is held: the rest of its episode is normal operation
    grab_fault = (c == "weak_grab") | (c == "excessive_grab")
    case[grab_fault & ~hold] = NORMAL
    return X, (case != NORMAL).astype(np.int8), case


def classification_metrics(y_true, y_pred) -> dict:
    """Paper 000 Table 4 metrics with anomalies (label 1) as the positive class.

    ``fall_out`` is the false-positive rate FP / (FP + TN). The paper's text defines fall-out as
    "the rate at which abnormalities are misdiagnosed as normal", i.e. it takes NORMAL as the
    positive class; for its convention call this with both label arrays inverted (``1 - y``).

    Examples
    --------
    >>> classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    {'accuracy': 75.0, 'precision': 0.6667, 'recall': 1.0, 'f1': 0.8, 'fall_out': 0.5}
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "accuracy": round(100.0 * (tp + tn) / len(t), 2),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "fall_out": round(fp / (fp + tn) if fp + tn else 0.0, 4),
    }


def evaluate_robot_arm(
    params: dict | None = None,
    seed: int = 0,
    n_fit: int = 20000,
    n_val: int = 10000,
    n_test: int = 17478,
    val_abnormal: float = sum(TABLE2_COUNTS.values()) / TABLE2_TOTAL,
    test_abnormal: float = 1898 / 17478,
    beta: float = 1.0,
) -> dict:
    """Fit the LSTM-AE on normal robot-arm data, choose the F-beta threshold on a labelled
    validation series, and measure the paper's metrics on a test series (three independent
    simulated series, seeds ``seed``, ``seed + 1``, ``seed + 2``).

    Returns
    -------
    dict: accuracy (%), precision, recall, f1, fall_out (anomaly = positive), normal_positive
    (the same five metrics with normal = positive, the paper's convention), roc_auc, threshold,
    recall_per_case, fit_seconds, epoch_seconds (median), test_rows, test_abnormal_rows
    """
    from soads.evaluate import roc_auc

    X_fit, _, _ = simulate(n_fit, seed)
    X_val, y_val, _ = simulate(n_val, seed + 1, val_abnormal)
    X_test, y_test, case_test = simulate(n_test, seed + 2, test_abnormal)
    t0 = time.perf_counter()
    model = LSTMAutoencoder(**(params or {})).fit(X_fit)
    fit_seconds = time.perf_counter() - t0
    model.fit_threshold_fbeta(X_val, y_val, beta)
    y_pred = model.predict(X_test)
    # rows without a window (the first window - 1) are predicted normal, as in SKAB's protocol;
    # ROC-AUC is over the rows that have a score
    result = classification_metrics(y_test, y_pred)
    result["normal_positive"] = classification_metrics(1 - y_test, 1 - y_pred)  # paper's Table 4
    w = model.window
    result["roc_auc"] = round(roc_auc(y_test[w - 1 :], model.score(X_test)), 4)
    result["threshold"] = model.threshold_
    result["recall_per_case"] = {
        c: round(float(y_pred[case_test == c].mean()), 4) for c in CASES if (case_test == c).any()
    }
    result.update(
        fit_seconds=round(fit_seconds, 2),
        epoch_seconds=round(float(np.median(model.epoch_seconds_)), 4),
        test_rows=int(len(y_test)),
        test_abnormal_rows=int(y_test.sum()),
    )
    return result
