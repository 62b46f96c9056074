"""Context detector (beyond the paper, beside the alignment score; DESIGN.md "Context detector").

Pure core: numpy and dicts, no Spark. Fitted without labels on an event log, it asks of every
step of an object's path two questions:

- **control flow**: how likely is this read point after the read points before it? The context
  is the longest run of preceding read points (a START marker before the first; an END marker
  after the last when the object is finished) seen at least ``min_count`` times, backing off to
  shorter runs (Katz-style back-off; order 0 is the overall read-point frequency);
- **attributes**: how likely is each event attribute's value (bizStep, disposition, bizLocation,
  action in EPCIS; resource, group, ... in process logs) given its read point and the read
  point before it, backing off to the read point alone and then to the attribute's overall
  distribution.

**Excess surprisal.** A step's score is ``-log p(x | c) - H(c)``: the surprisal of what happened
minus the entropy of its context, the surprisal a *typical* step in that context has. A context
where one thing always happens has ``H = 0``, so anything else is as surprising as its
probability says; a context where ten things happen equally often has ``H = log 10``, so none of
them looks anomalous however small its probability. The score is thus measured against what is
normal in each context and one threshold fits them all. ``p`` is smoothed,
``p = (count + pseudo_count) / (N + pseudo_count)``, so a value never seen in a context seen N
times scores ``log(N + 1) - H``: evidence grows with how often the context was observed, and a
context seen a handful of times cannot raise an alarm on its own.

An attribute whose values are nearly unique per event (more distinct values than
``unique_ratio`` of its occurrences: timestamps, event ids, lab measurements) carries no evidence
about the process; it is left out when the model is fitted (the model lists it in ``skipped_``).

**Object score and verdict.** ``anomaly`` is the worst step's excess surprisal (0 when nothing is
less likely than typical). ``is_anomaly = anomaly >= threshold`` with the fixed, label-free
``threshold = log(100)``: a step at least 100 times less likely than a typical step in its context.
That is the "decisive" Bayes factor of Jeffreys' scale; it reads no labels and does not depend on
the log's size, because the score is already relative to each context. It was fixed before the
evaluation on labelled logs (``soads bench detect``, docs/detection.md).

**Explanation.** The worst step: its index (``len(sequence)`` for the END step), read point, kind
(``control``, ``end`` or ``attribute``), attribute and value, the smoothed probability, the most
likely value in that context, and the context itself (nearest read point first; ``<start>`` and
``<end>`` name the markers).

**Model run.** The counts are rows ``(feature, order, context, value, count)`` (:meth:`to_rows`):
``feature`` is ``""`` for control flow or the attribute's name; ``context`` lists the context's
read points nearest first (``None`` is START); ``value`` is the next read point (``None`` is END)
or the attribute's value. Rows from any number of partitions add up
(:func:`count_rows` on each, sum the counts): that is how the batch job fits on Spark.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from soads.config import DetectorConf

logger = logging.getLogger(__name__)

CONTROL = ""
"""The ``feature`` of control-flow rows (attribute rows carry the attribute's name)."""

KIND_CONTROL, KIND_END, KIND_ATTRIBUTE = "control", "end", "attribute"
START, END = "<start>", "<end>"
"""How explanations name the markers before the first and after the last read."""

_BOUNDARY = 0  # code of START (in contexts) and END (as a value); real values are 1..V


@dataclass(frozen=True)
class Verdict:
    """One object's score: ``anomaly`` (>= 0, higher = more anomalous), ``is_anomaly`` and the
    ``explanation`` of its worst step (None when no step was less likely than typical)."""

    anomaly: float
    is_anomaly: bool
    explanation: dict | None = None


# ---------------------------------------------------------------------------------------------
# counting


def _positions(sequence: Sequence[str], attributes, closed: bool, k_ctl: int, k_att: int):
    """Every (feature, context nearest-first, value) a case contributes, one per step."""
    pad = [None] * k_ctl
    s = pad + list(sequence)
    targets = list(sequence) + ([None] if closed else [])
    for i, x in enumerate(targets):
        j = i + k_ctl  # index of the step in s
        yield CONTROL, tuple(s[j - k_ctl:j][::-1]), x
    if attributes:
        prev = [None] + list(sequence)
        for i, (x, attrs) in enumerate(zip(sequence, attributes)):
            ctx = (x, prev[i])[:k_att]
            for key, value in attrs.items():
                yield key, ctx, value


def count_rows(cases: Iterable, conf: DetectorConf = DetectorConf(),
               skipped: Sequence[str] | None = None) -> tuple[list[tuple], tuple[str, ...]]:
    """Aggregated counts of a set of cases: rows ``(feature, order, context, value, count)``,
    in no particular order (:meth:`ContextModel.to_rows` sorts them), and the attributes left
    out as nearly unique.

    ``cases`` yields ``(sequence, attributes)`` or ``(sequence, attributes, closed)``: the fitting
    log's objects are finished unless they say otherwise. Every order from 0 to the longest is
    counted, so the rows of two partitions of a log add up to the rows of the whole log, as long
    as every partition leaves out the same attributes: pass ``skipped`` (found on the whole log,
    :func:`unique_features`) when counting a part; by default they are found on ``cases``.

    Examples
    --------
    >>> rows, skipped = count_rows([(["a", "b"], [{"d": "x"}, {"d": "y"}])],
    ...                            DetectorConf(max_context=1, unique_ratio=1.0))
    >>> sorted((r for r in rows if r[0] == ""), key=_row_key)
    [('', 0, (), None, 1), ('', 0, (), 'a', 1), ('', 0, (), 'b', 1), ('', 1, (None,), 'a', 1), ('', 1, ('a',), 'b', 1), ('', 1, ('b',), None, 1)]
    """
    k_ctl, k_att = conf.max_context, conf.attribute_context
    # one pass over the cases: read points to codes (1..V; 0 is START/END), each object a block
    # [K START pads, its codes, END?] of one flat list, attributes gathered per attribute
    rp_index: dict[str, int] = {}
    names: list = [None]
    flat: list[int] = []
    starts, n_targets = [], []
    pad = [_BOUNDARY] * k_ctl
    by_feature: dict[str, tuple[list, list, list]] = {}
    for case in cases:
        sequence, attributes = case[0], case[1]
        closed = case[2] if len(case) > 2 else True
        _check_case(sequence, attributes)
        codes = []
        for x in sequence:
            c = rp_index.get(x)
            if c is None:
                c = rp_index[x] = len(names)
                names.append(x)
            codes.append(c)
        starts.append(len(flat) + k_ctl)
        flat.extend(pad)
        flat.extend(codes)
        if closed:
            flat.append(_BOUNDARY)
        n_targets.append(len(codes) + bool(closed))
        if attributes:
            prev = _BOUNDARY
            for c, d in zip(codes, attributes):
                for key, value in d.items():
                    cols = by_feature.get(key)
                    if cols is None:
                        cols = by_feature[key] = ([], [], [])
                    cols[0].append(c)
                    cols[1].append(prev)
                    cols[2].append(value)
                prev = c
    rows: list[tuple] = []
    n_t = np.array(n_targets, dtype=np.int64)
    if n_t.sum():
        arr = np.array(flat, dtype=np.int64)
        pos = (np.repeat(np.array(starts, dtype=np.int64), n_t) + np.arange(int(n_t.sum()))
               - np.repeat(np.cumsum(n_t) - n_t, n_t))
        ctx = [arr[pos - 1 - j] for j in range(k_ctl)]
        rows += _distinct_rows(CONTROL, ctx, arr[pos], names, names)
    if skipped is None:
        skipped = [key for key, (_, _, values) in by_feature.items()
                   if len(set(values)) > conf.unique_ratio * len(values)]
    drop = set(skipped)
    for key, (rp_codes, prev_codes, values) in by_feature.items():
        if key in drop:
            continue
        vocab: dict = {}
        v_names: list = [None]
        v_codes = []
        for v in values:
            c = vocab.get(v)
            if c is None:
                c = vocab[v] = len(v_names)
                v_names.append(v)
            v_codes.append(c)
        ctx = [np.array(rp_codes, dtype=np.int64), np.array(prev_codes, dtype=np.int64)][:k_att]
        rows += _distinct_rows(key, ctx, np.array(v_codes, dtype=np.int64), names, v_names)
    return rows, tuple(sorted(drop))


def _distinct_rows(feature: str, ctx: list[np.ndarray], values: np.ndarray, ctx_names: list,
                   value_names: list) -> list[tuple]:
    """Rows ``(feature, order, context, value, count)`` of every order 0..len(ctx) from coded
    positions (context columns nearest first; code 0 is START in a context, END as a value)."""
    out = []
    for order in range(len(ctx) + 1):
        cols = [values] + ctx[:order]
        idx = np.lexsort(cols[::-1])
        sorted_cols = [c[idx] for c in cols]
        change = np.zeros(len(idx), dtype=bool)
        if len(idx):
            change[0] = True
        for c in sorted_cols:
            change[1:] |= c[1:] != c[:-1]
        first = np.flatnonzero(change)
        counts = np.diff(np.r_[first, len(idx)])
        firsts = [c[first].tolist() for c in sorted_cols]
        for j, n in enumerate(counts.tolist()):
            out.append((feature, order, tuple(ctx_names[firsts[1 + i][j]] for i in range(order)),
                        value_names[firsts[0][j]], n))
    return out


def count_rows_slow(cases: Iterable, conf: DetectorConf = DetectorConf(),
                    skipped: Sequence[str] | None = None) -> tuple[list[tuple], tuple[str, ...]]:
    """:func:`count_rows`, step by step with a Counter: the oracle the tests hold it to."""
    k_ctl, k_att = conf.max_context, conf.attribute_context

    def positions():
        for case in cases:
            sequence, attributes = case[0], case[1]
            closed = case[2] if len(case) > 2 else True
            _check_case(sequence, attributes)
            yield from _positions(sequence, attributes, closed, k_ctl, k_att)

    by_position = Counter(positions())  # counted in C
    if skipped is None:
        order0: Counter = Counter()
        for (feature, _, value), n in by_position.items():
            if feature != CONTROL:
                order0[(feature, value)] += n
        skipped = unique_features(((f, 0, (), v, n) for (f, v), n in order0.items()),
                                  conf.unique_ratio)
    drop = set(skipped)
    # spread each position over its orders (0 .. its context's length)
    counts: Counter = Counter()
    for (feature, ctx, value), n in by_position.items():
        if feature in drop:
            continue
        for order in range(len(ctx) + 1):
            counts[(feature, order, ctx[:order], value)] += n
    return [(f, o, c, v, n) for (f, o, c, v), n in counts.items()], tuple(sorted(drop))


def _row_key(row):
    f, o, c, v, _ = row
    return (f, o, tuple("" if x is None else "\x01" + x for x in c), "" if v is None else "\x01" + v)


def _check_case(sequence, attributes) -> None:
    if isinstance(sequence, str):
        raise ValueError("sequence must be a list of read points, not a string")
    if attributes is not None and len(attributes) != len(sequence):
        raise ValueError(f"attributes has {len(attributes)} entries for a sequence of "
                         f"{len(sequence)} steps (one per step)")


def unique_features(rows: Iterable[tuple], ratio: float) -> list[str]:
    """Attributes with more distinct values than ``ratio`` of their occurrences (order-0 rows).

    Examples
    --------
    >>> rows = [("id", 0, (), "1", 1), ("id", 0, (), "2", 1), ("d", 0, (), "x", 2)]
    >>> unique_features(rows, 0.5)
    ['id']
    """
    distinct: Counter = Counter()
    occurrences: Counter = Counter()
    for f, o, _, _, n in rows:
        if f != CONTROL and o == 0:
            distinct[f] += 1
            occurrences[f] += n
    return sorted(f for f in distinct if distinct[f] > ratio * occurrences[f])


# ---------------------------------------------------------------------------------------------
# the fitted tables


class _Table:
    """Counts of one feature: a trie of contexts (orders 0..K) and value counts per context.

    Order-k context ids index ``keys[k]``, the sorted ``parent_id * base + code`` of the
    context's k-th (farthest) element under its order-(k-1) context; the value counts of a
    context are in ``pair_keys[k]`` (``ctx_id * vbase + value``) / ``pair_counts[k]``.
    """

    def __init__(self, rows, ctx_vocab: dict, val_vocab: dict, ctx_base: int):
        self.ctx_base = ctx_base
        self.val_vocab = val_vocab
        self.val_names = [None] * (len(val_vocab) + 1)
        for name, code in val_vocab.items():
            self.val_names[code] = name
        self.vbase = len(val_vocab) + 2  # one more code for a value never seen
        by_order: dict[int, list] = {}
        for _, o, c, v, n in rows:
            by_order.setdefault(o, []).append((c, v, n))
        self.K = max(by_order) if by_order else 0
        self.keys, self.pair_keys, self.pair_counts = [], [], []
        self.total, self.entropy, self.expected = [], [], []
        for k in range(self.K + 1):
            part = by_order.get(k, [])
            ctx = np.array([[ctx_vocab.get(x, 0) if x is not None else _BOUNDARY for x in c]
                            for c, _, _ in part], dtype=np.int64).reshape(len(part), k)
            val = np.array([val_vocab[v] if v is not None else _BOUNDARY for _, v, _ in part],
                           dtype=np.int64)
            cnt = np.array([n for _, _, n in part], dtype=np.float64)
            if k == 0:
                ids = np.zeros(len(part), dtype=np.int64)
                self.keys.append(np.zeros(1, dtype=np.int64))
            else:
                parent = self._lookup_ids([ctx[:, j] for j in range(k - 1)], len(part))
                if (parent < 0).any():
                    raise ValueError("model rows are not closed under shorter contexts "
                                     "(an order-k context without its order-(k-1) part)")
                key = parent * self.ctx_base + ctx[:, k - 1]
                uniq, ids = np.unique(key, return_inverse=True)
                self.keys.append(uniq)
            pk = ids * self.vbase + val
            order = np.argsort(pk, kind="stable")
            pk, cnt_sorted = pk[order], cnt[order]
            uk, start = np.unique(pk, return_index=True)
            pc = np.add.reduceat(cnt_sorted, start) if len(pk) else np.zeros(0)
            n_ctx = len(self.keys[k])
            pid = uk // self.vbase
            tot = np.bincount(pid, weights=pc, minlength=n_ctx)
            p = pc / tot[pid]
            ent = -np.bincount(pid, weights=p * np.log(p), minlength=n_ctx)
            # most likely value per context (ties: the smallest code, i.e. the earliest name)
            best = np.lexsort((uk % self.vbase, -pc, pid))
            first = best[np.r_[True, pid[best][1:] != pid[best][:-1]]] if len(best) else best
            exp = np.full(n_ctx, -1, dtype=np.int64)
            exp[pid[first]] = uk[first] % self.vbase
            self.pair_keys.append(uk)
            self.pair_counts.append(pc)
            self.total.append(tot)
            self.entropy.append(np.maximum(ent, 0.0))
            self.expected.append(exp)

    def _lookup_ids(self, cols: list[np.ndarray], n: int) -> np.ndarray:
        """Context ids of ``n`` rows whose context codes are ``cols`` (nearest first, one column
        per order); -1 where that context was never seen."""
        ids = np.zeros(n, dtype=np.int64)
        for j, col in enumerate(cols):
            keys = self.keys[j + 1]
            key = ids * self.ctx_base + col
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            ids = np.where((ids >= 0) & (keys[pos] == key), pos, -1)
        return ids

    def score(self, cols: list[np.ndarray], values: np.ndarray, min_count: int, a: float):
        """Excess surprisal of each value in its longest well-seen context.

        Returns (excess, probability, expected value code, order used)."""
        n = len(values)
        ids = np.zeros(n, dtype=np.int64)
        use_id = np.zeros(n, dtype=np.int64)
        use_order = np.zeros(n, dtype=np.int64)
        for j in range(min(len(cols), self.K)):
            keys = self.keys[j + 1]
            key = ids * self.ctx_base + cols[j]
            pos = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
            ok = (ids >= 0) & (keys[pos] == key) if len(keys) else np.zeros(n, dtype=bool)
            ids = np.where(ok, pos, -1)
            good = ok & (self.total[j + 1][np.maximum(ids, 0)] >= min_count)
            use_id = np.where(good, ids, use_id)
            use_order = np.where(good, j + 1, use_order)
        excess = np.zeros(n)
        prob = np.zeros(n)
        expected = np.zeros(n, dtype=np.int64)
        for k in np.unique(use_order):
            m = use_order == k
            cid = use_id[m]
            pk = cid * self.vbase + values[m]
            keys = self.pair_keys[k]
            pos = np.minimum(np.searchsorted(keys, pk), max(len(keys) - 1, 0))
            hit = keys[pos] == pk if len(keys) else np.zeros(len(pk), dtype=bool)
            c = np.where(hit, self.pair_counts[k][pos] if len(keys) else 0.0, 0.0)
            tot = self.total[k][cid]
            p = (c + a) / (tot + a)
            prob[m] = p
            excess[m] = np.maximum(-np.log(p) - self.entropy[k][cid], 0.0)
            expected[m] = self.expected[k][cid]
        return excess, prob, expected, use_order


@dataclass
class ContextModel:
    """The context detector (PyOD's contract: :meth:`fit`, then :meth:`score`; higher = more
    anomalous; ``threshold_`` is the verdict's cut). Build it with :meth:`fit` on cases or
    :meth:`from_rows` on a stored model run's counts."""

    conf: DetectorConf = field(default_factory=DetectorConf)

    @classmethod
    def fit(cls, cases: Iterable, conf: DetectorConf | None = None) -> "ContextModel":
        """Fit on ``(sequence, attributes[, closed])`` cases (see :func:`count_rows`).

        Examples
        --------
        >>> log = [(["a", "b", "c"], None)] * 500 + [(["a", "c", "b"], None)]
        >>> model = ContextModel.fit(log)
        >>> model.score(["a", "b", "c"]).is_anomaly, model.score(["a", "c", "b"]).is_anomaly
        (False, True)
        >>> model.score(["a", "c", "b"]).explanation["read_point"]
        'c'
        """
        conf = conf or DetectorConf()
        rows, skipped = count_rows(cases, conf)
        return cls.from_rows(rows, conf, skipped)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple], conf: DetectorConf | None = None,
                  skipped: Sequence[str] | None = None) -> "ContextModel":
        """The model of the count rows ``(feature, order, context, value, count)``.

        ``skipped`` names the attributes left out as nearly unique (their rows, if any, are
        dropped); by default they are found from the rows (:func:`unique_features`).
        """
        model = cls(conf or DetectorConf())
        rows = [(f, int(o), tuple(c), v, float(n)) for f, o, c, v, n in rows]
        if skipped is None:
            skipped = unique_features(rows, model.conf.unique_ratio)
        model.skipped_ = tuple(sorted(skipped))
        dropped = set(model.skipped_)
        rows = [r for r in rows if r[0] not in dropped]
        model.rows_ = rows
        # read-point vocabulary: every read point seen anywhere (1..V; 0 is START/END)
        names = sorted({v for f, _, _, v, _ in rows if f == CONTROL and v is not None}
                       | {x for _, _, c, _, _ in rows for x in c if x is not None})
        model.read_points_ = {name: i + 1 for i, name in enumerate(names)}
        base = len(names) + 2  # one code more for a read point never seen
        model._unknown = base - 1
        by_feature: dict[str, list] = {}
        for r in rows:
            by_feature.setdefault(r[0], []).append(r)
        model.tables_ = {}
        for feature, part in sorted(by_feature.items()):
            if feature == CONTROL:
                vocab = model.read_points_
            else:
                vals = sorted({v for _, _, _, v, _ in part if v is not None})
                vocab = {name: i + 1 for i, name in enumerate(vals)}
            model.tables_[feature] = _Table(part, model.read_points_, vocab, base)
        model.threshold_ = model.conf.threshold
        return model

    def to_rows(self) -> list[tuple]:
        """The count rows this model was built from (a model run's stored form)."""
        return sorted(((f, o, c, v, int(n)) for f, o, c, v, n in self.rows_), key=_row_key)

    # -----------------------------------------------------------------------------------------

    def score(self, sequence: Sequence[str], attributes: Sequence[Mapping[str, str]] | None = None,
              closed: bool = True) -> Verdict:
        """The verdict on one object (see :meth:`score_many`)."""
        return self.score_many([sequence], [attributes], [closed])[0]

    def score_many(self, sequences: Sequence[Sequence[str]], attributes=None, closed=True
                   ) -> list[Verdict]:
        """Verdicts of many objects at once (vectorised over all their steps).

        Parameters
        ----------
        sequences : list of list of str
            Read points (activities) in order. An empty sequence of a finished object scores
            its START -> END step (an object that was never read); of an open one, nothing (0).
        attributes : list of (list of dict | None), optional
            One dict per step (attribute -> value); values are strings.
        closed : bool or list of bool
            Whether each object is finished, so that its end is scored. A live stream scores
            objects that may still move on with ``closed=False``.
        """
        n_obj = len(sequences)
        if attributes is None:
            attributes = [None] * n_obj
        if isinstance(closed, bool):
            closed = [closed] * n_obj
        if not (len(attributes) == len(closed) == n_obj):
            raise ValueError("sequences, attributes and closed must have one entry per object")
        rp = self.read_points_
        unknown = self._unknown
        K = self.conf.max_context
        a, m = self.conf.pseudo_count, self.conf.min_count

        # control flow: one row per step (and the END step of closed objects); each object is a
        # block [K START pads, its codes, END?] of one flat array, contexts are shifted reads
        flat: list[int] = []
        starts, n_targets = [], []
        pad = [_BOUNDARY] * K
        for seq, attrs, cl in zip(sequences, attributes, closed):
            _check_case(seq, attrs)
            starts.append(len(flat) + K)
            flat.extend(pad)
            flat.extend([rp.get(x, unknown) for x in seq])
            if cl:
                flat.append(_BOUNDARY)
            n_targets.append(len(seq) + bool(cl))
        ctl = self.tables_.get(CONTROL)
        parts = []
        n_t = np.array(n_targets, dtype=np.int64)
        total = int(n_t.sum())
        if ctl is not None and total:
            arr = np.array(flat, dtype=np.int64)
            obj = np.repeat(np.arange(n_obj), n_t)
            step = np.arange(total) - np.repeat(np.cumsum(n_t) - n_t, n_t)
            pos = np.repeat(np.array(starts, dtype=np.int64), n_t) + step
            vals = arr[pos]
            ex, pr, expd, order = ctl.score([arr[pos - 1 - j] for j in range(K)], vals, m, a)
            parts.append((obj, step, ex, pr, expd, order, None, vals))
        # attributes: one row per (step, attribute), gathered per attribute in parallel lists
        by_feature: dict[str, tuple[list, list, list, list, list]] = {}
        for o, (seq, attrs) in enumerate(zip(sequences, attributes)):
            if not attrs:
                continue
            prev = _BOUNDARY
            for i, (x, d) in enumerate(zip(seq, attrs)):
                code = rp.get(x, unknown)
                for key, value in d.items():
                    cols = by_feature.get(key)
                    if cols is None:
                        cols = by_feature[key] = ([], [], [], [], [])
                    cols[0].append(o)
                    cols[1].append(i)
                    cols[2].append(code)
                    cols[3].append(prev)
                    cols[4].append(value)
                prev = code
        for key, (o_l, i_l, c_l, p_l, v_l) in by_feature.items():
            table = self.tables_.get(key)
            if table is None:  # skipped as unique, or an attribute the model never saw
                continue
            unseen = len(table.val_vocab) + 1
            get = table.val_vocab.get
            v = np.array([get(val, unseen) for val in v_l], dtype=np.int64)
            cols = [np.array(c_l, dtype=np.int64), np.array(p_l, dtype=np.int64)]
            ex, pr, expd, order = table.score(cols[:self.conf.attribute_context], v, m, a)
            parts.append((np.array(o_l, dtype=np.int64), np.array(i_l, dtype=np.int64),
                          ex, pr, expd, order, key, v_l))
        return self._verdicts(n_obj, parts, sequences)

    def _verdicts(self, n_obj, parts, sequences) -> list[Verdict]:
        # each object's first worst step: highest excess, then control flow before attributes
        # (part order), then the earliest step, as in slow_score
        best = np.zeros(n_obj)
        where: list = [None] * n_obj
        if parts:
            obj = np.concatenate([p[0] for p in parts])
            ex = np.concatenate([p[2] for p in parts])
            part = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
            step = np.concatenate([p[1] for p in parts])
            idx = np.concatenate([np.arange(len(p[0])) for p in parts])
            order = np.lexsort((step, part, -ex, obj))
            first = order[np.r_[True, obj[order][1:] != obj[order][:-1]]] if len(order) else order
            first = first[ex[first] > 0.0]
            best[obj[first]] = ex[first]
            for f in first:
                where[int(obj[f])] = (int(part[f]), int(step[f]), int(idx[f]))
        out = []
        for o in range(n_obj):
            if where[o] is None:
                out.append(Verdict(0.0, False, None))
                continue
            pi, step, idx = where[o]
            obj, st, ex, pr, expd, order, feature, vals = parts[pi]
            seq = sequences[o]
            table = self.tables_[CONTROL if feature is None else feature]
            if feature is None:
                at_end = step == len(seq)
                kind = KIND_END if at_end else KIND_CONTROL
                read_point = None if at_end else seq[step]
                value = None
            else:
                kind, read_point, value = KIND_ATTRIBUTE, seq[step], vals[idx]
            k = int(order[idx])
            if feature is None:
                ctx = [START if j < 0 else seq[j] for j in range(step - 1, step - 1 - k, -1)]
            else:
                ctx = [seq[step], START if step == 0 else seq[step - 1]][:k]
            e_code = int(expd[idx])
            expected = (table.val_names[e_code] if 0 < e_code < len(table.val_names)
                        else END if e_code == _BOUNDARY and feature is None else None)
            out.append(Verdict(float(best[o]), bool(best[o] >= self.threshold_), {
                "step": int(step), "read_point": read_point, "kind": kind,
                "attribute": feature, "value": value, "probability": float(pr[idx]),
                "expected": expected, "context": ctx,
            }))
        return out


def score_cases(model: ContextModel, cases: Iterable) -> list[Verdict]:
    """Verdicts of ``(sequence, attributes[, closed])`` cases, in order."""
    cases = list(cases)
    return model.score_many([c[0] for c in cases], [c[1] for c in cases],
                            [c[2] if len(c) > 2 else True for c in cases])


# ---------------------------------------------------------------------------------------------
# the slow, obvious version: the oracle the tests hold the vectorised one to


def slow_score(rows: Iterable[tuple], sequence, attributes=None, closed=True,
               conf: DetectorConf = DetectorConf(), skipped=()) -> tuple[float, tuple | None]:
    """Worst excess surprisal of one object straight from the count rows, step by step.

    Returns (anomaly, (step, feature or None)) of the first worst step (None if none scores)."""
    counts: dict = {}
    for f, o, c, v, n in rows:
        if f in skipped:
            continue
        counts.setdefault((f, tuple(c)), Counter())[v] += n

    def excess(feature, ctx, value):
        use = counts.get((feature, ()), Counter())
        for k in range(1, len(ctx) + 1):
            cnt = counts.get((feature, ctx[:k]))
            if cnt is None:
                break
            if sum(cnt.values()) >= conf.min_count:
                use = cnt
        total = sum(use.values())
        if total == 0:
            return 0.0
        h = -sum(n / total * math.log(n / total) for n in use.values())
        p = (use.get(value, 0) + conf.pseudo_count) / (total + conf.pseudo_count)
        return max(-math.log(p) - h, 0.0)

    worst, at = 0.0, None
    s = [None] * conf.max_context + list(sequence)
    targets = list(sequence) + ([None] if closed else [])
    for i, x in enumerate(targets):
        ctx = tuple(s[i:i + conf.max_context][::-1])
        e = excess(CONTROL, ctx, x)
        if e > worst + 1e-12:
            worst, at = e, (i, None)
    if attributes:
        prev = [None] + list(sequence)
        for i, (x, d) in enumerate(zip(sequence, attributes)):
            for key, value in d.items():
                if (key, ()) not in counts:
                    continue
                e = excess(key, (x, prev[i])[:conf.attribute_context], value)
                if e > worst + 1e-12:
                    worst, at = e, (i, key)
    return worst, at
