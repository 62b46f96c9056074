"""sensor: drift of the anomaly-score distribution (papers 003/004)  [numpy, pure core].

A model's scores on its own training windows give a reference histogram (stored in the
registry's ``training.json``). The streaming job's scores of each time window (``window_seconds``
of ``window_end``) give another over the SAME fixed bins; their Jensen-Shannon divergence

    JSD(P || Q) = 1/2 KL(P || M) + 1/2 KL(Q || M),   M = (P + Q) / 2      (seeds/004)

in bits (base 2, so 0 <= JSD <= 1) is recorded per time window in table ``sensor_drift``; a
window with at least ``min_windows`` scores and ``JSD > bound`` is *drifted*, which is a drift
event and starts a retraining run (the scheduler loop, :mod:`soads.sensor.train`).

Bins are fixed in units of the model's threshold, so every model version shares them:
``bins`` equal bins over ``[0, range x threshold)`` plus one overflow bin for everything above.

Note: seeds/004 compares ``scipy.spatial.distance.jensenshannon`` (the *distance*, the square
root of the divergence, natural log) to 0.15; we store the divergence in bits. Distance d (nats)
and divergence D (bits) relate by ``D = d**2 / ln 2``: d = 0.15 is D ~= 0.032.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def bin_edges(threshold: float, bins: int = 20, value_range: float = 2.0) -> np.ndarray:
    """Edges of the fixed score histogram: ``bins + 1`` edges over ``[0, range x threshold]``
    then ``+inf`` (overflow bin); scores below 0 fall in the first bin.

    Examples
    --------
    >>> bin_edges(10.0, bins=4, value_range=2.0).tolist()
    [0.0, 5.0, 10.0, 15.0, 20.0, inf]
    """
    return np.r_[np.linspace(0.0, value_range * threshold, bins + 1), np.inf]


def score_histogram(scores, threshold: float, bins: int = 20, value_range: float = 2.0
                    ) -> np.ndarray:
    """Counts of ``scores`` in the fixed bins (``bins + 1`` counts, the last is overflow).

    Examples
    --------
    >>> score_histogram([-1.0, 1.0, 6.0, 19.0, 25.0, 100.0], 10.0, bins=4).tolist()
    [2, 1, 0, 1, 2]
    """
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), np.inf, np.maximum(s, 0.0))  # NaN (missing sensor) -> overflow
    edges = bin_edges(threshold, bins, value_range)
    idx = np.searchsorted(edges, s, side="right") - 1
    return np.bincount(np.clip(idx, 0, bins), minlength=bins + 1).astype(np.int64)


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon divergence in bits of two histograms (normalised here; 0 log 0 = 0).

    Examples
    --------
    >>> jensen_shannon([1, 0], [0, 1])
    1.0
    >>> jensen_shannon([3, 1], [6, 2])
    0.0
    >>> round(jensen_shannon([1, 1], [1, 0]), 6)  # 1.5 - 0.75 log2 3
    0.311278
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("an empty histogram has no distribution")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0))


def window_start_us(ts_us: int, window_seconds: int) -> int:
    """Start (epoch microseconds) of the epoch-aligned time window holding ``ts_us``.

    >>> window_start_us(7_500_000, 5)
    5000000
    """
    w = int(window_seconds) * 1_000_000
    return int(ts_us) // w * w


def drift_rows(scores: Iterable[tuple[str, int, float]], reference: dict, window_seconds: int,
               bound: float, min_windows: int, closed_before_us: int, bins: int = 20,
               value_range: float = 2.0) -> list[dict]:
    """One drift record per (model_version, closed time window) of scored windows.

    Parameters
    ----------
    scores : iterable of (model_version, window_end_us, score)
    reference : dict
        model_version -> (threshold, training histogram counts); versions missing here are
        skipped (with a warning).
    window_seconds, bound, min_windows, bins, value_range
        See the module docstring.
    closed_before_us : int
        Only time windows that END at or before this instant are complete and recorded.

    Returns
    -------
    list of dict, sorted by (window_start, model_version): model_version, window_start_us,
    window_end_us, n_windows, jsd, drifted

    Examples
    --------
    >>> ref = {"v1": (10.0, [5, 5, 0])}
    >>> drift_rows([("v1", 1_000_000, 1.0), ("v1", 2_000_000, 25.0), ("v1", 9_000_000, 1.0)],
    ...            ref, 5, 0.4, 2, 5_000_000, bins=2, value_range=2.0)
    [{'model_version': 'v1', 'window_start_us': 0, 'window_end_us': 5000000, 'n_windows': 2, \
'jsd': 0.5, 'drifted': True}]
    """
    groups: dict[tuple[str, int], list[float]] = {}
    for version, end_us, score in scores:
        start = window_start_us(end_us, window_seconds)
        if start + window_seconds * 1_000_000 <= closed_before_us:
            groups.setdefault((version, start), []).append(score)
    out = []
    for (version, start), values in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if version not in reference:
            logger.warning("no training histogram for model %s: drift not measured", version)
            continue
        threshold, ref_hist = reference[version]
        hist = score_histogram(values, threshold, bins, value_range)
        jsd = jensen_shannon(hist, ref_hist)
        out.append({"model_version": version, "window_start_us": start,
                    "window_end_us": start + window_seconds * 1_000_000,
                    "n_windows": len(values), "jsd": round(jsd, 12),
                    "drifted": bool(len(values) >= min_windows and jsd > bound)})
    return out


def should_retrain(now_s: float, last_train_s: float | None, every_s: float | None,
                   new_drift: Sequence[dict]) -> str | None:
    """Why the scheduler should train now: ``"drift"`` (a new drifted window), ``"schedule"``
    (``every_s`` elapsed since the last training, or none yet), or None.

    Examples
    --------
    >>> should_retrain(100.0, 50.0, 60.0, [])
    >>> should_retrain(120.0, 50.0, 60.0, [])
    'schedule'
    >>> should_retrain(60.0, 50.0, 60.0, [{"drifted": True}])
    'drift'
    >>> should_retrain(60.0, 50.0, None, [{"drifted": False}])
    """
    if any(r["drifted"] for r in new_drift):
        return "drift"
    if every_s is not None and (last_train_s is None or now_s - last_train_s >= every_s):
        return "schedule"
    return None
