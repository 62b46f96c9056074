"""Context detector (beyond the paper, beside the alignment score; DESIGN.md "Context detector").

Pure core: numpy and dicts, no Spark. Fitted without labels on an event log, it asks of every
step of an object's path:

- **control flow**: how likely is this read point after the read points before it? The context
  is a run of preceding read points (a START marker before the first; an END marker after the
  last when the object is finished). The longest context seen *often enough* is used, backing
  off to shorter runs (Katz-style back-off; order 0 is the overall read-point frequency);
- **attributes**: how likely is each event attribute's value (bizStep, disposition, bizLocation,
  action in EPCIS; resource, group, ... in process logs) given its read point and the read
  point before it, backing off to the read point alone and then to the attribute's overall
  distribution;
- **revisits**: the pseudo-attribute ``<revisit>`` says whether the read point already occurred
  earlier in the path ("1") or not ("0"), scored like an attribute. A rework that re-enters a
  stage the process never repeats, or an activity done twice, is rare *as a revisit* even where
  the step itself is an ordinary one.

**Excess surprisal.** A step's score is ``-log p(x | c) - H(c)``: the surprisal of what happened
minus the entropy of its context, the surprisal a *typical* step in that context has. A context
where one thing always happens has ``H = 0``, so anything else is as surprising as its
probability says; a context where ten things happen equally often has ``H = log 10``, so none of
them looks anomalous however small its probability. The score is thus measured against what is
normal in each context, and one threshold fits them all. ``p`` is smoothed,
``p = (count + pseudo_count) / (N + pseudo_count)``: a value never seen in a context seen N times
scores ``log(N + 1) - H``.

**Often enough.** That bound says how much evidence a context can give: a context seen 30 times
cannot show that something is 100 times rarer than typical. So a context is used only when a
value never seen there would cross the verdict's threshold, ``log(N + 1) - H(c) >= threshold``;
otherwise the detector backs off to a shorter context, which has seen more. (A fixed minimum
count either trusts small contexts too early, and an anomaly seen once in 50 looks only mildly
rare, or throws away the long contexts that tell a loop from a rework.)

**Missed reads.** RFID readers miss reads (reader noise, not an anomaly: DESIGN.md). With a
``missed_read_rate`` eps > 0, a control step x may also be explained as the read point *two*
steps on from its context, the one in between missed: that explanation costs ``-log eps`` plus
x's excess among the read points two steps on (the ``<skip>`` counts), in the context most
favourable to it; the step scores the cheaper of the two explanations. One missed read is thus
forgiven, two in a row (a skipped stage: its facility and its transfer) are not. A recorded
process log misses nothing (eps = 0, the default).

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
``feature`` is ``""`` for control flow, ``<skip>`` for the read point two steps on, or the
attribute's name (``<revisit>`` included); ``context`` lists the context's read points nearest
first (``None`` is START); ``value`` is the next read point (``None`` is END) or the attribute's
value. Rows from any number of partitions add up (:func:`count_rows` on each, sum the counts):
that is how the batch job fits on Spark.
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
SKIP = "<skip>"
"""The ``feature`` of the read point two steps on (the missed-read explanation)."""
REVISIT = "<revisit>"
"""The pseudo-attribute: "1" when the step's read point already occurred in the path, else "0"."""
_READ_POINT_FEATURES = (CONTROL, SKIP)

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


def _check_case(sequence, attributes) -> None:
    if isinstance(sequence, str):
        raise ValueError("sequence must be a list of read points, not a string")
    if attributes is not None and len(attributes) != len(sequence):
        raise ValueError(f"attributes has {len(attributes)} entries for a sequence of "
                         f"{len(sequence)} steps (one per step)")


def _revisits(codes) -> list[str]:
    seen: set = set()
    out = []
    for c in codes:
        out.append("1" if c in seen else "0")
        seen.add(c)
    return out


def _positions(sequence: Sequence[str], attributes, closed: bool, k_ctl: int, k_att: int):
    """Every (feature, context nearest-first, value) a case contributes, step by step."""
    s = [None] * k_ctl + list(sequence)
    targets = list(sequence) + ([None] if closed else [])
    for i, x in enumerate(targets):
        ctx = tuple(s[i:i + k_ctl][::-1])
        yield CONTROL, ctx, x
        if i + 1 < len(targets):
            yield SKIP, ctx, targets[i + 1]
    prev = [None] + list(sequence)
    for i, (x, again) in enumerate(zip(sequence, _revisits(sequence))):
        ctx = (x, prev[i])[:k_att]
        yield REVISIT, ctx, again
        if attributes:
            for key, value in attributes[i].items():
                yield key, ctx, value


@dataclass
class _Steps:
    """A batch of cases flattened for the vectorised passes (fit and score alike).

    ``flat`` holds each case as a block [K START pads, its read-point codes, END if closed];
    ``starts`` / ``n_targets`` say where each block's steps start and how many it scores
    (END included). Per step, across all cases: ``codes``, ``prevs`` (the read point before,
    START for a first step), ``revisit`` ("1" when the read point occurred earlier in the case)
    and ``lengths`` per case; ``by_feature`` maps each attribute to (step numbers, values).
    """

    flat: list
    starts: list
    n_targets: list
    codes: list
    prevs: list
    revisit: list
    lengths: list
    by_feature: dict

    @classmethod
    def gather(cls, cases: Iterable, encode, k_ctl: int) -> "_Steps":
        """One pass over ``(sequence, attributes[, closed])`` cases; ``encode(sequence)`` gives
        the read-point codes of one case."""
        st = cls([], [], [], [], [], [], [], {})
        flat, all_codes, by_feature = st.flat, st.codes, st.by_feature
        pad = [_BOUNDARY] * k_ctl
        for case in cases:
            sequence, attributes = case[0], case[1]
            closed = case[2] if len(case) > 2 else True
            _check_case(sequence, attributes)
            codes = encode(sequence)
            st.starts.append(len(flat) + k_ctl)
            flat.extend(pad)
            flat.extend(codes)
            if closed:
                flat.append(_BOUNDARY)
            st.n_targets.append(len(codes) + bool(closed))
            st.lengths.append(len(codes))
            base = len(all_codes)
            all_codes.extend(codes)
            st.prevs.extend(([_BOUNDARY] + codes)[:len(codes)])
            st.revisit.extend(_revisits(sequence))
            if attributes:
                for g, d in enumerate(attributes, base):
                    for key, value in d.items():
                        cols = by_feature.get(key)
                        if cols is None:
                            cols = by_feature[key] = ([], [])
                        cols[0].append(g)
                        cols[1].append(value)
        return st

    def control_positions(self):
        """(flat array, position of every scored step in it, step index within its case)."""
        n_t = np.array(self.n_targets, dtype=np.int64)
        step = np.arange(int(n_t.sum())) - np.repeat(np.cumsum(n_t) - n_t, n_t)
        pos = np.repeat(np.array(self.starts, dtype=np.int64), n_t) + step
        return np.array(self.flat, dtype=np.int64), pos, step, n_t


def _codes(values, index: dict, names: list) -> list[int]:
    """Codes of ``values`` (1, 2, ... in order of first appearance), growing ``index`` (value ->
    code) and ``names`` (code -> value; ``names[0]`` is the marker's)."""
    codes = []
    for x in values:
        c = index.get(x)
        if c is None:
            c = index[x] = len(names)
            names.append(x)
        codes.append(c)
    return codes


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
    # read points to codes (1..V; 0 is START/END) as they come
    rp_index: dict[str, int] = {}
    names: list = [None]
    st = _Steps.gather(cases, lambda seq: _codes(seq, rp_index, names), k_ctl)
    by_feature = st.by_feature
    rows: list[tuple] = []
    if st.codes or any(st.n_targets):
        arr, pos, step, n_t = st.control_positions()
        ctx = [arr[pos - 1 - j] for j in range(k_ctl)]
        rows += _distinct_rows(CONTROL, ctx, arr[pos], names, names)
        # the read point two steps on, for the missed-read explanation
        on = step < np.repeat(n_t, n_t) - 1
        rows += _distinct_rows(SKIP, [c[on] for c in ctx], arr[pos[on] + 1], names, names)
    if skipped is None:
        skipped = [key for key, (_, values) in by_feature.items()
                   if len(set(values)) > conf.unique_ratio * len(values)]
    drop = set(skipped)
    step_rp = np.array(st.codes, dtype=np.int64)
    step_prev = np.array(st.prevs, dtype=np.int64)
    features = [(REVISIT, (None, st.revisit))] + sorted(by_feature.items())
    for key, (steps, values) in features:
        if key in drop or not values:
            continue
        v_names: list = [None]
        v_codes = _codes(values, {}, v_names)
        g = slice(None) if steps is None else np.array(steps, dtype=np.int64)
        ctx = [step_rp[g], step_prev[g]][:k_att]
        rows += _distinct_rows(key, ctx, np.array(v_codes, dtype=np.int64), names, v_names)
    return rows, tuple(sorted(drop))


def _distinct_rows(feature: str, ctx: list[np.ndarray], values: np.ndarray, ctx_names: list,
                   value_names: list) -> list[tuple]:
    """Rows ``(feature, order, context, value, count)`` of every order 0..len(ctx) from coded
    positions (context columns nearest first; code 0 is START in a context, END as a value)."""
    out: list[tuple] = []
    ctx_obj = np.empty(len(ctx_names), dtype=object)
    ctx_obj[:] = ctx_names
    val_obj = np.empty(len(value_names), dtype=object)
    val_obj[:] = value_names
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
        counts = np.diff(np.r_[first, len(idx)]).tolist()
        contexts = zip(*[ctx_obj[c[first]].tolist() for c in sorted_cols[1:]]) if order \
            else [()] * len(first)
        out.extend(zip([feature] * len(first), [order] * len(first), contexts,
                       val_obj[sorted_cols[0][first]].tolist(), counts))
    return out


def count_rows_slow(cases: Iterable, conf: DetectorConf = DetectorConf(),
                    skipped: Sequence[str] | None = None) -> tuple[list[tuple], tuple[str, ...]]:
    """:func:`count_rows`, step by step with a Counter: the oracle the tests hold it to."""
    k_ctl, k_att = conf.max_context, conf.attribute_context
    by_position: Counter = Counter()
    for case in cases:
        sequence, attributes = case[0], case[1]
        closed = case[2] if len(case) > 2 else True
        _check_case(sequence, attributes)
        by_position.update(_positions(sequence, attributes, closed, k_ctl, k_att))
    if skipped is None:
        order0: Counter = Counter()
        for (feature, _, value), n in by_position.items():
            if feature not in (CONTROL, SKIP, REVISIT):
                order0[(feature, value)] += n
        skipped = unique_features(((f, 0, (), v, n) for (f, v), n in order0.items()),
                                  conf.unique_ratio)
    drop = set(skipped)
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
        if f not in (CONTROL, SKIP, REVISIT) and o == 0:
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

    def lookup(self, cols: list[np.ndarray], values: np.ndarray, a: float, threshold: float,
               favourable: bool = False):
        """Each value's smoothed probability in its context, with the context's entropy, most
        likely value and that value's probability, and the order used.

        Contexts are eligible when seen often enough: ``log(N + a) - H >= threshold``. By
        default the longest eligible one is used (back-off); where none of orders >= 1 is, the
        one of them with the largest ``log(N + a) - H`` (the most evidence a small log has), and
        order 0 only where no context was ever seen. ``favourable`` picks,
        among the eligible orders >= 1, the one where the value has the least excess (the
        missed-read explanation takes the context most favourable to it), with a NaN
        probability where none is eligible.
        """
        n = len(values)
        ids = np.zeros(n, dtype=np.int64)
        use_id = np.zeros(n, dtype=np.int64)
        use_order = np.zeros(n, dtype=np.int64)
        decided = np.zeros(n, dtype=bool)
        # where no context is decisive (a small log), the one with the most evidence
        most_id = np.zeros(n, dtype=np.int64)
        most_order = np.zeros(n, dtype=np.int64)
        most_bound = np.full(n, -np.inf)
        cands = []
        for j in range(min(len(cols), self.K)):
            keys = self.keys[j + 1]
            key = ids * self.ctx_base + cols[j]
            pos = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
            ok = (ids >= 0) & (keys[pos] == key) if len(keys) else np.zeros(n, dtype=bool)
            ids = np.where(ok, pos, -1)
            cid = np.maximum(ids, 0)
            bound = np.log(self.total[j + 1][cid] + a) - self.entropy[j + 1][cid]
            good = ok & (bound >= threshold)
            use_id = np.where(good, ids, use_id)
            use_order = np.where(good, j + 1, use_order)
            decided |= good
            more = ok & (bound > most_bound)
            most_id = np.where(more, ids, most_id)
            most_order = np.where(more, j + 1, most_order)
            most_bound = np.where(more, bound, most_bound)
            cands.append((j + 1, cid, good))
        use_id = np.where(decided, use_id, most_id)
        use_order = np.where(decided, use_order, most_order)
        if favourable:
            best = np.full(n, np.inf)
            prob = np.full(n, np.nan)
            entropy = np.zeros(n)
            for k, cid, good in cands:
                p = (self._count(k, cid, values) + a) / (self.total[k][cid] + a)
                ex = -np.log(p) - self.entropy[k][cid]
                upd = good & (ex < best)
                best = np.where(upd, ex, best)
                prob = np.where(upd, p, prob)
                entropy = np.where(upd, self.entropy[k][cid], entropy)
            return prob, entropy, None, None, None
        prob = np.zeros(n)
        entropy = np.zeros(n)
        expected = np.zeros(n, dtype=np.int64)
        p_expected = np.zeros(n)
        for k in np.unique(use_order):
            m = use_order == k
            cid = use_id[m]
            tot = self.total[k][cid]
            prob[m] = (self._count(k, cid, values[m]) + a) / (tot + a)
            entropy[m] = self.entropy[k][cid]
            e = self.expected[k][cid]
            expected[m] = e
            p_expected[m] = (self._count(k, cid, e) + a) / (tot + a)
        return prob, entropy, expected, p_expected, use_order

    def _count(self, k: int, cid: np.ndarray, values: np.ndarray) -> np.ndarray:
        keys = self.pair_keys[k]
        if not len(keys):
            return np.zeros(len(cid))
        pk = cid * self.vbase + values
        pos = np.minimum(np.searchsorted(keys, pk), len(keys) - 1)
        return np.where(keys[pos] == pk, self.pair_counts[k][pos], 0.0)


@dataclass
class ContextModel:
    """The context detector (PyOD's contract: :meth:`fit`, then :meth:`score`; higher = more
    anomalous; ``threshold_`` is the verdict's cut). Build it with :meth:`fit` on cases or
    :meth:`from_rows` on a stored model run's counts.

    ``missed_read_rate`` (eps) is the chance a reader misses a read: > 0 for RFID reads
    (``[sequences] missed_read_rate``), 0 for a recorded log (the module docstring says how it
    is used).
    """

    conf: DetectorConf = field(default_factory=DetectorConf)
    missed_read_rate: float = 0.0

    @classmethod
    def fit(cls, cases: Iterable, conf: DetectorConf | None = None,
            missed_read_rate: float = 0.0) -> "ContextModel":
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
        return cls.from_rows(rows, conf, skipped, missed_read_rate)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple], conf: DetectorConf | None = None,
                  skipped: Sequence[str] | None = None, missed_read_rate: float = 0.0
                  ) -> "ContextModel":
        """The model of the count rows ``(feature, order, context, value, count)``.

        ``skipped`` names the attributes left out as nearly unique (their rows, if any, are
        dropped); by default they are found from the rows (:func:`unique_features`).
        """
        if not 0.0 <= missed_read_rate < 1.0:
            raise ValueError(f"missed_read_rate must be in [0, 1), not {missed_read_rate}")
        model = cls(conf or DetectorConf(), float(missed_read_rate))
        rows = [(f, int(o), tuple(c), v, float(n)) for f, o, c, v, n in rows]
        if skipped is None:
            skipped = unique_features(rows, model.conf.unique_ratio)
        model.skipped_ = tuple(sorted(skipped))
        dropped = set(model.skipped_)
        rows = [r for r in rows if r[0] not in dropped]
        model.rows_ = rows
        # read-point vocabulary: every read point seen anywhere (1..V; 0 is START/END)
        names = sorted({v for f, _, _, v, _ in rows if f in _READ_POINT_FEATURES and v is not None}
                       | {x for _, _, c, _, _ in rows for x in c if x is not None})
        model.read_points_ = {name: i + 1 for i, name in enumerate(names)}
        base = len(names) + 2  # one code more for a read point never seen
        model._unknown = base - 1
        by_feature: dict[str, list] = {}
        for r in rows:
            by_feature.setdefault(r[0], []).append(r)
        model.tables_ = {}
        for feature, part in sorted(by_feature.items()):
            if feature in _READ_POINT_FEATURES:
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
        # control flow: one row per step (and the END step of closed objects), contexts shifted
        # reads of the flat blocks; attributes (and the revisit flag): one row per (step, key)
        st = _Steps.gather(zip(sequences, attributes, closed),
                           lambda seq: [rp.get(x, unknown) for x in seq], self.conf.max_context)
        features = [(REVISIT, None, ["0", "1"],
                     np.array([v == "1" for v in st.revisit], dtype=np.int64))]
        for key, (steps, values) in st.by_feature.items():
            names: list = []
            features.append((key, np.array(steps, dtype=np.int64), names,
                             np.array(_codes(values, {}, names), dtype=np.int64)))
        return self._judge(n_obj, np.array(st.lengths, dtype=np.int64),
                           np.array([bool(c) for c in closed], dtype=bool),
                           np.array(st.codes, dtype=np.int64), features, sequences)

    def score_steps(self, lengths, closed, names: Sequence[str], ids, features,
                    sequences: Sequence[Sequence[str]]) -> list[Verdict]:
        """:meth:`score_many` on objects already flattened into arrays (the event job's score
        stage builds them from its Arrow columns without a Python object per visit).

        Parameters
        ----------
        lengths : int array
            Steps per object; the objects' steps are consecutive in ``ids``.
        closed : bool array
            Per object (see :meth:`score_many`).
        names, ids : list of str, int array
            The distinct read points and, per step, the index of its read point in ``names``.
        features : list of (key, steps, value names, value ids)
            Per attribute, in order of its first appearance over the steps: the (ascending)
            step numbers that carry it (into ``ids``), the distinct values and each step's
            index into them.
        sequences : list of list of str
            The objects' read points (the explanations name them).
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        n_obj = len(lengths)
        if len(sequences) != n_obj or int(lengths.sum()) != len(ids):
            raise ValueError("lengths, ids and sequences must describe the same objects")
        rp, unknown = self.read_points_, self._unknown
        codes = np.array([rp.get(x, unknown) for x in names], dtype=np.int64)
        step_obj = np.repeat(np.arange(n_obj), lengths)
        # "1" where the read point (as a string: unknown ones share a code) occurred earlier
        # in the object's path
        revisit = np.ones(len(ids), dtype=np.int64)
        revisit[np.unique(step_obj * max(len(names), 1) + ids, return_index=True)[1]] = 0
        return self._judge(n_obj, lengths, np.asarray(closed, dtype=bool),
                           codes[ids] if len(ids) else np.zeros(0, dtype=np.int64),
                           [(REVISIT, None, ["0", "1"], revisit)] + list(features), sequences)

    def _judge(self, n_obj, n_len, closed, step_rp, features, sequences) -> list[Verdict]:
        """The vectorised passes of :meth:`score_many` and :meth:`score_steps`: ``n_len`` steps
        per object, ``closed`` per object, ``step_rp`` the read-point code of every step,
        ``features`` as :meth:`score_steps` takes them, the revisit flag first (steps None:
        every step)."""
        K = self.conf.max_context
        a, tau = self.conf.pseudo_count, self.conf.threshold
        starts_obj = np.cumsum(n_len) - n_len
        step_obj = np.repeat(np.arange(n_obj), n_len)
        step_idx = np.arange(int(n_len.sum())) - np.repeat(starts_obj, n_len)
        # the read point before each step: START (0) for a first step
        step_prev = np.zeros(len(step_rp), dtype=np.int64)
        step_prev[1:] = step_rp[:-1]
        step_prev[starts_obj[n_len > 0]] = _BOUNDARY
        parts = []
        ctl = self.tables_.get(CONTROL)
        n_t = n_len + closed.astype(np.int64)
        if ctl is not None and n_t.any():
            # each object as a block [K START pads, its codes, END if closed] (START and END
            # are both code 0), so a step's context is the K codes before it in its block
            block = K + n_t
            starts = np.cumsum(block) - block + K
            arr = np.zeros(int(block.sum()), dtype=np.int64)
            arr[np.repeat(starts, n_len) + step_idx] = step_rp
            step = np.arange(int(n_t.sum())) - np.repeat(np.cumsum(n_t) - n_t, n_t)
            pos = np.repeat(starts, n_t) + step
            obj = np.repeat(np.arange(n_obj), n_t)
            vals = arr[pos]
            ctx = [arr[pos - 1 - j] for j in range(K)]
            pr, ent, expd, _, order = ctl.lookup(ctx, vals, a, tau)
            ex = np.maximum(-np.log(pr) - ent, 0.0)
            skip = self.tables_.get(SKIP)
            eps = self.missed_read_rate
            if eps > 0 and skip is not None:
                # x as the read point two steps on, the one in between missed (module docstring)
                p2, ent2, *_ = skip.lookup(ctx, vals, a, tau, favourable=True)
                via_miss = -math.log(eps) + np.maximum(-np.log(p2) - ent2, 0.0)
                ex = np.where(np.isnan(p2), ex, np.minimum(ex, via_miss))
            parts.append((obj, step, ex, pr, expd, order, None, None))
        for key, steps, names, ids in features:
            table = self.tables_.get(key)
            if table is None or not len(ids):  # skipped as unique, or never seen when fitting
                continue
            unseen = len(table.val_vocab) + 1
            get = table.val_vocab.get
            v = np.array([get(val, unseen) for val in names], dtype=np.int64)[ids]
            g = slice(None) if steps is None else steps
            cols = [step_rp[g], step_prev[g]][:self.conf.attribute_context]
            pr, ent, expd, _, order = table.lookup(cols, v, a, tau)
            ex = np.maximum(-np.log(pr) - ent, 0.0)
            parts.append((step_obj[g], step_idx[g], ex, pr, expd, order, key, (names, ids)))
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
            _, _, _, pr, expd, order, feature, vals = parts[pi]
            seq = sequences[o]
            table = self.tables_[CONTROL if feature is None else feature]
            if feature is None:
                at_end = step == len(seq)
                kind = KIND_END if at_end else KIND_CONTROL
                read_point = None if at_end else seq[step]
                value = None
            else:
                kind, read_point, value = KIND_ATTRIBUTE, seq[step], vals[0][vals[1][idx]]
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
               conf: DetectorConf = DetectorConf(), skipped=(), missed_read_rate: float = 0.0
               ) -> tuple[float, tuple | None]:
    """Worst excess surprisal of one object straight from the count rows, step by step.

    Returns (anomaly, (step, feature or None)) of the first worst step (None if none scores)."""
    counts: dict = {}
    for f, o, c, v, n in rows:
        if f in skipped:
            continue
        counts.setdefault((f, tuple(c)), Counter())[v] += n
    a, tau = conf.pseudo_count, conf.threshold

    def excess_in(cnt, value):
        total = sum(cnt.values())
        h = -sum(n / total * math.log(n / total) for n in cnt.values())
        p = (cnt.get(value, 0) + a) / (total + a)
        return -math.log(p) - h, math.log(total + a) - h >= tau

    def excess(feature, ctx, value):
        """In the longest context seen often enough (order 0 otherwise)."""
        use = counts.get((feature, ()))
        if not use:
            return 0.0
        decisive, most, most_bound = None, None, -math.inf
        for k in range(1, len(ctx) + 1):
            cnt = counts.get((feature, ctx[:k]))
            if cnt is None:
                break
            total = sum(cnt.values())
            bound = math.log(total + a) + sum(n / total * math.log(n / total)
                                              for n in cnt.values())
            if bound >= tau:
                decisive = cnt
            if bound > most_bound:
                most, most_bound = cnt, bound
        use = decisive or most or use
        return max(excess_in(use, value)[0], 0.0)

    def via_miss(ctx, value):
        """The missed-read explanation: the most favourable order >= 1 seen often enough."""
        best = None
        for k in range(1, len(ctx) + 1):
            cnt = counts.get((SKIP, ctx[:k]))
            if cnt is None:
                break
            e, ok = excess_in(cnt, value)
            if ok and (best is None or e < best):
                best = e
        return None if best is None else -math.log(missed_read_rate) + max(best, 0.0)

    worst, at = 0.0, None
    s = [None] * conf.max_context + list(sequence)
    targets = list(sequence) + ([None] if closed else [])
    for i, x in enumerate(targets):
        ctx = tuple(s[i:i + conf.max_context][::-1])
        e = excess(CONTROL, ctx, x)
        if missed_read_rate > 0:
            m = via_miss(ctx, x)
            if m is not None:
                e = min(e, m)
        if e > worst + 1e-12:
            worst, at = e, (i, None)
    prev = [None] + list(sequence)
    features = [{REVISIT: r} for r in _revisits(sequence)]
    for i, d in enumerate(attributes or []):
        features[i].update(d)
    for i, (x, d) in enumerate(zip(sequence, features)):
        for key, value in d.items():
            if (key, ()) not in counts:
                continue
            e = excess(key, (x, prev[i])[:conf.attribute_context], value)
            if e > worst + 1e-12:
                worst, at = e, (i, key)
    return worst, at
