"""Detection quality on labelled process logs: the paper's evaluator, relation surprisal and the
context detector side by side (issue: a detector strong enough to trust live).

Protocol of the literature (the BPAD benchmark of Guan et al.; GAMA, Information Systems 2024):
unsupervised and transductive. Each detector is fitted on the whole contaminated log, without
labels, and scores every case. Reported per log and on average:

- ``best_f1``: the best F1 over all thresholds. It uses the labels to pick the threshold, so it
  shows what a detector *could* do;
- ``ap``: average precision;
- ``roc_auc``;
- ``verdict_f1``: the F1 of the label-free verdict a deployment would actually use. Only the
  context detector has a verdict;
- ``cases_per_s``, ``events_per_s``: fitting plus scoring, one core, the pure cores (no Spark);
  for the context detector also fitting and scoring apart.

The paper's evaluator mines the log's frequent contiguous patterns (modified PrefixSpan,
``mining.minsup`` and ``max_length`` of the config) and scores ``1 - normalised alignment score``.
Relation surprisal uses the log's RELATIONAL DEPENDENCY TABLE. The context detector uses the
``[detector]`` section. Nothing here is tuned per log.

A log is ``NAME.jsonl.gz`` (or ``.jsonl``, ``.xes``, ``.xes.gz``), read by
:func:`soads.cases.read_cases`. Beside it, ``NAME.truth.jsonl.gz`` (or ``.jsonl``) holds one line
per case: ``{"oid", "anomaly": "normal" | type}``.

Usage::

    soads bench detect --logs DIR
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import time

import numpy as np

from soads.config import Config
from soads.evaluate import average_precision, best_f1, roc_auc

logger = logging.getLogger(__name__)

DETECTORS = ("alignment", "surprisal", "context")
_LOG_SUFFIXES = (".jsonl.gz", ".jsonl", ".xes.gz", ".xes")


class TruthError(ValueError):
    """A truth file that is not one ``{"oid", "anomaly"}`` line per case of its log."""


def find_logs(logs_dir: str) -> list[tuple[str, str, str]]:
    """``(name, log path, truth path)`` of every labelled log in ``logs_dir``, by name."""
    if not os.path.isdir(logs_dir):
        raise FileNotFoundError(f"{logs_dir}: no such directory (a folder of labelled logs: "
                                "NAME.jsonl.gz beside NAME.truth.jsonl.gz)")
    found = []
    for entry in sorted(os.listdir(logs_dir)):
        if ".truth." in entry:
            continue
        for suffix in _LOG_SUFFIXES:
            if entry.endswith(suffix):
                name = entry[:-len(suffix)]
                truth = [os.path.join(logs_dir, name + t) for t in
                         (".truth.jsonl.gz", ".truth.jsonl")]
                truth = [t for t in truth if os.path.exists(t)]
                if truth:
                    found.append((name, os.path.join(logs_dir, entry), truth[0]))
                else:
                    logger.warning("%s: no %s.truth.jsonl[.gz] beside it; left out", entry, name)
                break
    if not found:
        raise FileNotFoundError(f"{logs_dir}: no labelled log (NAME.jsonl.gz beside "
                                "NAME.truth.jsonl.gz)")
    return found


def read_truth(path: str) -> dict[str, str]:
    """oid -> anomaly type ("normal" for a normal case)."""
    opener = gzip.open if path.endswith(".gz") else open
    out = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    out[str(rec["oid"])] = str(rec["anomaly"])
                except (ValueError, KeyError, TypeError) as e:
                    raise TruthError(f"{path}:{n}: not a truth line ({{\"oid\", \"anomaly\"}}): "
                                     f"{e}") from None
    return out


def context_scores(cases, conf) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Context detector fitted on ``cases`` and scoring them: (anomaly, is_anomaly, fit
    seconds, score seconds)."""
    from soads.detect import context

    t0 = time.perf_counter()
    model = context.ContextModel.fit(((c.sequence, c.attributes) for c in cases), conf)
    t1 = time.perf_counter()
    verdicts = model.score_many([c.sequence for c in cases], [c.attributes for c in cases])
    t2 = time.perf_counter()
    return (np.array([v.anomaly for v in verdicts]),
            np.array([v.is_anomaly for v in verdicts], dtype=bool), t1 - t0, t2 - t1)


def surprisal_scores(cases) -> np.ndarray:
    """Relation surprisal over the log's own RELATIONAL DEPENDENCY TABLE."""
    from soads import conformance
    from soads.dependencies import relation_counts

    seqs = [c.sequence for c in cases]
    freq, out = conformance.transition_model(
        (a, b, f) for (a, b), (f, _) in relation_counts(seqs).items())
    return np.array([conformance.surprisal(s, freq, out) for s in seqs])


def alignment_scores(cases, cfg: Config) -> tuple[np.ndarray, int]:
    """``1 - normalised alignment score`` against the log's own mined patterns, and how many
    patterns were in use."""
    from soads.mining.brute_force import minsup_count
    from soads.mining.contiguous import mine_local
    from soads.scoring import score_batch

    seqs = [c.sequence for c in cases]
    found = mine_local(seqs, minsup_count(cfg.mining.minsup, len(seqs)), cfg.mining.max_length)
    patterns = [list(p) for p in found]
    if cfg.scoring.maximal_only:
        from soads.mining.brute_force import mark_maximal
        maximal = mark_maximal(found)
        patterns = [list(p) for p in found if maximal[p]]
    # the miner's order (support, then length, then pattern) settles ties between patterns
    patterns.sort(key=lambda p: (-found[tuple(p)], -len(p), p))
    scores, _, _ = score_batch(seqs, patterns, cfg.scoring)
    return 1.0 - scores, len(patterns)


def _quality(y: np.ndarray, s: np.ndarray, verdict: np.ndarray | None) -> dict:
    f1, _ = best_f1(y, s)
    row = {"best_f1": f1, "ap": average_precision(y, s), "roc_auc": roc_auc(y, s)}
    if verdict is not None:
        tp, flagged = int((verdict & y).sum()), int(verdict.sum())
        row["verdict_f1"] = 2 * tp / (flagged + int(y.sum()))
        row["verdict_precision"] = tp / flagged if flagged else float("nan")
        row["verdict_recall"] = tp / int(y.sum())
        row["flagged"] = flagged
    return row


def evaluate_log(path: str, truth_path: str, cfg: Config,
                 detectors: tuple[str, ...] = DETECTORS) -> dict:
    """Quality and speed of each detector on one labelled log."""
    from soads.cases import read_cases

    cases = list(read_cases(path))
    truth = read_truth(truth_path)
    missing = [c.oid for c in cases if c.oid not in truth]
    if missing:
        raise TruthError(f"{truth_path}: no label for {len(missing)} case(s), e.g. {missing[0]!r}")
    types = np.array([truth[c.oid] for c in cases], dtype=object)
    y = types != "normal"
    n_events = sum(len(c.sequence) for c in cases)
    out = {"cases": len(cases), "events": n_events, "anomalous": int(y.sum()), "detectors": {}}
    for name in detectors:
        t0 = time.perf_counter()
        verdict, extra = None, {}
        if name == "context":
            s, verdict, fit_s, score_s = context_scores(cases, cfg.detector)
            extra["fit_events_per_s"] = n_events / fit_s
            extra["score_events_per_s"] = n_events / score_s
        elif name == "surprisal":
            s = surprisal_scores(cases)
        else:
            s, extra["patterns"] = alignment_scores(cases, cfg)
        seconds = time.perf_counter() - t0
        row = _quality(y, s, verdict)
        row.update(extra, seconds=seconds, cases_per_s=len(cases) / seconds,
                   events_per_s=n_events / seconds)
        per_type = {}
        for t in sorted(set(types[y])):
            keep = (types == t) | ~y  # that type against every normal case
            per_type[t] = roc_auc(types[keep] == t, s[keep])
        row["per_type_roc_auc"] = per_type
        if verdict is not None:
            row["per_type_recall"] = {t: float(verdict[types == t].mean())
                                      for t in sorted(set(types[y]))}
            row["false_positive_rate"] = float(verdict[~y].mean())
        out["detectors"][name] = row
    return out


def run(logs_dir: str, cfg: Config | None = None, detectors: tuple[str, ...] = DETECTORS
        ) -> list[str]:
    """Evaluate every labelled log in ``logs_dir``; the printed lines, a JSON summary last."""
    cfg = cfg or Config()
    lines: list[str] = []
    results = {}
    logs = find_logs(logs_dir)
    for name, path, truth in logs:
        r = evaluate_log(path, truth, cfg, detectors)
        results[name] = r
        print(f"[soads] bench detect: {name}: {r['cases']:,} cases, {r['events']:,} events, "
              f"{r['anomalous']:,} anomalous", file=sys.stderr, flush=True)
    cols = ("best_f1", "ap", "roc_auc", "verdict_f1", "cases_per_s", "events_per_s")
    head = f"{'log':<14} {'detector':<10} " + " ".join(f"{c:>12}" for c in cols)
    lines += ["detection quality (fit on the whole log without labels, score every case):",
              head, "-" * len(head)]
    means: dict[str, dict[str, list]] = {d: {c: [] for c in cols} for d in detectors}
    for name, r in results.items():
        for d in detectors:
            row = r["detectors"][d]
            cells = []
            for c in cols:
                v = row.get(c)
                if v is not None:
                    means[d][c].append(v)
                cells.append(f"{v:>12,.0f}" if c.endswith("_per_s") and v is not None else
                             f"{v:>12.3f}" if v is not None else f"{'-':>12}")
            lines.append(f"{name:<14} {d:<10} " + " ".join(cells))
    lines.append("-" * len(head))
    mean_rows = {}
    for d in detectors:
        m = {c: float(np.mean(v)) for c, v in means[d].items() if v}
        mean_rows[d] = m
        lines.append(f"{'mean':<14} {d:<10} " + " ".join(
            f"{m[c]:>12,.0f}" if c.endswith("_per_s") and c in m else
            f"{m[c]:>12.3f}" if c in m else f"{'-':>12}" for c in cols))
    if "context" in detectors:
        lines.append("")
        lines.append("context detector speed, one core (events/s): " + ", ".join(
            f"{name} fit {r['detectors']['context']['fit_events_per_s']:,.0f} / score "
            f"{r['detectors']['context']['score_events_per_s']:,.0f}"
            for name, r in results.items()))
        lines.append("context detector per anomaly type: ROC-AUC / verdict recall; "
                     "false-positive rate of the verdict on normal cases")
        for name, r in results.items():
            row = r["detectors"]["context"]
            cells = ", ".join(f"{t} {row['per_type_roc_auc'][t]:.3f}/{row['per_type_recall'][t]:.2f}"
                              for t in row["per_type_roc_auc"])
            lines.append(f"{name:<14} {cells}; FPR {row['false_positive_rate']:.3f}")
    lines.append(json.dumps({"logs": results, "mean": mean_rows}, sort_keys=True))
    return lines
