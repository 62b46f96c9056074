"""Detection quality against the simulator's ground truth: ROC-AUC and best F1, overall and per
anomaly type (the paper reports none; we do, DESIGN.md "The battery factory simulator"), and for
a detector with a verdict (a yes/no per object from a threshold chosen without labels) the
verdict's precision, recall and F1, and how often it flags objects that have reader noise only.

Scores here are *anomaly* scores: higher means more anomalous (1 - normalised alignment score).
Per anomaly type T, the positives are the objects of type T and the negatives every normal object
(objects of the other types are left out), for the scores and for the verdict alike.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

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


def verdict_quality(labels, verdicts) -> dict:
    """Precision, recall and F1 of a boolean verdict against the labels.

    Precision is NaN when nothing is flagged, recall when there is no positive, F1 when there is
    neither (each is undefined then); otherwise F1 = 2 tp / (2 tp + fp + fn).

    Examples
    --------
    >>> q = verdict_quality([1, 1, 1, 0, 0], [True, True, False, True, False])
    >>> q["tp"], q["fp"], q["fn"], round(q["precision"], 4), round(q["recall"], 4), q["f1"]
    (2, 1, 1, 0.6667, 0.6667, 0.666666666667)
    >>> verdict_quality([1, 0], [False, False])["precision"]
    nan
    """
    y = np.asarray(labels, dtype=bool)
    v = np.asarray(verdicts, dtype=bool)
    if y.shape != v.shape:
        raise ValueError(f"labels and verdicts differ in length: {len(y)} vs {len(v)}")
    tp = int((y & v).sum())
    fp = int((~y & v).sum())
    fn = int((y & ~v).sum())

    def ratio(a, b):
        return a / b if b else float("nan")

    return {"tp": tp, "fp": fp, "fn": fn, "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "f1": round(2 * tp / (2 * tp + fp + fn), 12) if 2 * tp + fp + fn else float("nan")}


def detection_quality(labels, anomaly_types, scores, verdicts=None) -> list[dict]:
    """ROC-AUC and best F1 overall and per anomaly type; with ``verdicts``, the verdict's
    precision, recall and F1 beside them.

    Parameters
    ----------
    labels : array of 0/1
    anomaly_types : array of str ("" for normal objects)
    scores : array of float, higher = more anomalous
    verdicts : array of bool, optional
        The detector's own yes/no per object (e.g. the context detector's ``is_anomaly``).

    Returns
    -------
    list of dict
        ``anomaly_type ("all" first), n_positive, n_negative, roc_auc, best_f1, threshold``;
        with ``verdicts`` also ``precision, recall, f1, n_flagged`` (:func:`verdict_quality`).
        Per type, as for the scores, the negatives are the normal objects: ``recall`` is the
        share of that type flagged, ``precision`` and ``f1`` count only the flagged normal
        objects as false positives (the overall precision counts them all once).

    Examples
    --------
    >>> rows = detection_quality([0, 0, 0, 1, 1], ["", "", "", "a", "b"],
    ...                          [0.1, 0.2, 0.3, 0.9, 0.25], [False, False, True, True, False])
    >>> for r in rows:
    ...     print(r["anomaly_type"], round(r["roc_auc"], 4), r["precision"], r["recall"])
    all 0.8333 0.5 0.5
    a 1.0 0.5 1.0
    b 0.6667 0.0 0.0
    """
    y = np.asarray(labels, dtype=bool)
    types = np.asarray(anomaly_types, dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    v = None if verdicts is None else np.asarray(verdicts, dtype=bool)
    if len(types) != len(y) or len(s) != len(y) or (v is not None and len(v) != len(y)):
        raise ValueError("labels, anomaly_types, scores and verdicts must be equally long")
    out = []
    groups = [("all", y)] + [(t, types == t) for t in sorted(set(types[y]) - {""})]
    for name, pos in groups:
        keep = pos | ~y
        f1, thr = best_f1(pos[keep], s[keep])
        row = {
            "anomaly_type": name, "n_positive": int(pos.sum()), "n_negative": int((~y).sum()),
            "roc_auc": roc_auc(pos[keep], s[keep]), "best_f1": f1, "threshold": thr,
        }
        if v is not None:
            q = verdict_quality(pos[keep], v[keep])
            row.update(precision=q["precision"], recall=q["recall"], f1=q["f1"],
                       n_flagged=q["tp"] + q["fp"])
        out.append(row)
    return out


def noise_false_positives(labels, noise, verdicts) -> list[dict]:
    """How often a verdict flags objects whose only trouble is reader noise (repeated or missed
    reads, which are not anomalies): the simulator's ``truth.csv`` column ``noise``.

    Parameters
    ----------
    labels : array of 0/1
    noise : array of str, the object's noise type ("" or None: no noise)
    verdicts : array of bool

    Returns
    -------
    list of dict
        ``noise, n, n_flagged, rate`` (rate = n_flagged / n, NaN for n = 0): first ``all`` (every
        normal object with noise), then each noise type, then ``none`` (normal objects without
        noise: the false-positive rate to compare with).

    Examples
    --------
    >>> rows = noise_false_positives([0, 0, 0, 0, 1], ["missed_read", "repeated_read", "", "",
    ...                              "missed_read"], [True, False, False, False, True])
    >>> for r in rows:
    ...     print(r["noise"], r["n"], r["n_flagged"], r["rate"])
    all 2 1 0.5
    missed_read 1 1 1.0
    repeated_read 1 0 0.0
    none 2 0 0.0
    """
    y = np.asarray(labels, dtype=bool)
    kinds = np.array(["" if k is None or (isinstance(k, float) and math.isnan(k)) else str(k)
                      for k in noise], dtype=object)
    v = np.asarray(verdicts, dtype=bool)
    if len(kinds) != len(y) or len(v) != len(y):
        raise ValueError("labels, noise and verdicts must be equally long")
    normal = ~y
    noisy = normal & (kinds != "")
    groups = [("all", noisy)] + [(k, normal & (kinds == k)) for k in sorted(set(kinds[noisy]))]
    groups.append(("none", normal & (kinds == "")))
    out = []
    for name, mask in groups:
        n, flagged = int(mask.sum()), int((mask & v).sum())
        out.append({"noise": name, "n": n, "n_flagged": flagged,
                    "rate": flagged / n if n else float("nan")})
    return out


def _cell(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def quality_table(quality: Mapping[str, Sequence[dict]],
                  noise: Mapping[str, Sequence[dict]] | None = None) -> list[str]:
    """Detectors side by side, one line per anomaly type (``all`` first), as text lines.

    Parameters
    ----------
    quality : ``{detector: detection_quality(...) rows}``, in the column order wanted. A
        detector whose rows carry a verdict (``precision``) gets verdict P / R / F1 columns
        beside ROC-AUC and best F1.
    noise : optional ``{detector: noise_false_positives(...) rows}``: adds a line with the
        share of noise-only objects each verdict flags.

    Examples
    --------
    >>> q = {"surprisal": detection_quality([0, 0, 1], ["", "", "a"], [0.1, 0.5, 0.4]),
    ...      "context": detection_quality([0, 0, 1], ["", "", "a"], [0.1, 0.2, 0.9],
    ...                                   [False, False, True])}
    >>> nf = {"context": noise_false_positives([0, 0, 1], ["missed_read", "", ""],
    ...                                        [False, False, True])}
    >>> for line in quality_table(q, nf):
    ...     print(line)
                                   surprisal                     context
    anomaly type              n  ROC-AUC  best F1  ROC-AUC  best F1      P      R     F1
    all                       1   0.5000   0.6667   1.0000   1.0000  1.000  1.000  1.000
    a                         1   0.5000   0.6667   1.0000   1.0000  1.000  1.000  1.000
    reader noise flagged (normal objects with noise only): context 0/1 (0.0%; clean normal 0.0%)
    """
    detectors = list(quality)
    verdict = {d: any("precision" in r for r in quality[d]) for d in detectors}
    by_type: dict[str, dict[str, dict]] = {}
    n_positive: dict[str, int] = {}
    for d in detectors:
        for r in quality[d]:
            by_type.setdefault(r["anomaly_type"], {})[d] = r
            n_positive.setdefault(r["anomaly_type"], r["n_positive"])
    order = sorted(by_type, key=lambda t: (t != "all", t))
    # one group per detector: ROC-AUC and best F1 (9 wide), verdict P, R, F1 (7 wide)
    columns = {d: [("ROC-AUC", "roc_auc", 9, 4), ("best F1", "best_f1", 9, 4)]
               + ([("P", "precision", 7, 3), ("R", "recall", 7, 3), ("F1", "f1", 7, 3)]
                  if verdict[d] else []) for d in detectors}
    width = {d: sum(c[2] for c in columns[d]) for d in detectors}
    lines = [(" " * 27 + "".join(f"{d:^{width[d]}}" for d in detectors)).rstrip(),
             f"{'anomaly type':<20}{'n':>7}" + "".join(
                 f"{label:>{w}}" for d in detectors for label, _, w, _ in columns[d])]
    for t in order:
        cells = []
        for d in detectors:
            r = by_type[t].get(d, {})
            cells += [f"{_cell(r.get(key), digits):>{w}}" for _, key, w, digits in columns[d]]
        lines.append(f"{t:<20}{n_positive[t]:>7,}" + "".join(cells))
    if noise:
        parts = []
        for d, rows in noise.items():
            rows = {r["noise"]: r for r in rows}
            a, clean = rows.get("all"), rows.get("none")
            if a is None:
                continue
            pct = "-" if math.isnan(a["rate"]) else f"{100 * a['rate']:.1f}%"
            base = "-" if clean is None or math.isnan(clean["rate"]) else \
                f"{100 * clean['rate']:.1f}%"
            parts.append(f"{d} {a['n_flagged']:,}/{a['n']:,} ({pct}; clean normal {base})")
        lines.append("reader noise flagged (normal objects with noise only): " + "; ".join(parts))
    return lines
