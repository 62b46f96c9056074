"""Detection quality against the simulator's ground truth: ROC-AUC and best F1, overall and per
anomaly type (the paper reports none; we do, DESIGN.md "The battery factory simulator").

Scores here are *anomaly* scores: higher means more anomalous (1 - normalised alignment score).
Per anomaly type T, the positives are the objects of type T and the negatives every normal object.
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). NaN if a class is empty.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1], [0.5, 0.5])
    0.5
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def best_f1(labels, scores) -> tuple[float, float]:
    """The best F1 over every threshold ``score >= t``, and that threshold.

    Examples
    --------
    >>> best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.8, 0.35)
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # a threshold can only sit after the last of a run of tied scores
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp, thr = tp[last_of_tie], fp[last_of_tie], s_sorted[last_of_tie]
    fn = y.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    i = int(np.argmax(f1))
    return float(round(f1[i], 12)), float(thr[i])


def average_precision(labels, scores) -> float:
    """Average precision: the mean of the precision at each positive's rank, tied scores taken
    together (scikit-learn's ``average_precision_score``). NaN without positives.

    Examples
    --------
    >>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision = tp / seen
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_step * precision).sum())


def detection_quality(labels, anomaly_types, scores) -> list[dict]:
    """ROC-AUC and best F1 overall and per anomaly type.

    Parameters
    ----------
    labels : array of 0/1
    anomaly_types : array of str ("" for normal objects)
    scores : array of float, higher = more anomalous

    Returns
    -------
    list of dict
        ``anomaly_type ("all" first), n_positive, n_negative, roc_auc, best_f1, threshold``.
    """
    y = np.asarray(labels, dtype=bool)
    types = np.asarray(anomaly_types, dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    out = []
    groups = [("all", y)] + [(t, types == t) for t in sorted(set(types[y]) - {""})]
    for name, pos in groups:
        keep = pos | ~y
        f1, thr = best_f1(pos[keep], s[keep])
        out.append({
            "anomaly_type": name, "n_positive": int(pos.sum()), "n_negative": int((~y).sum()),
            "roc_auc": roc_auc(pos[keep], s[keep]), "best_f1": f1, "threshold": thr,
        })
    return out
