"""Anomaly Evaluator (paper §3.3): Smith-Waterman alignment score of objects against patterns.

``SW(s, p)`` is the local-alignment score (Biopython ``PairwiseAligner``, mode local, affine gaps)
of an object's sequence ``s`` against a pattern ``p``. Per object (DESIGN.md "Alignment score"):

- ``raw(s) = max_p SW(s, p)`` is the paper's score;
- ``score(s) = max_p SW(s, p) / max(SW(s, s), SW(p, p))`` lies in [0, 1]: 1 iff ``s`` is exactly a
  known pattern; missing and extra steps both lower it;
- the stored pattern is the argmax of that ratio (ties: the first pattern in the given order).

An empty sequence, or an empty pattern list, scores 0 with raw 0 and no pattern.

Two implementations of one definition:

- :func:`score_one` calls Biopython pair by pair: the reference (slow oracle, used by the tests);
- :func:`score_batch` runs a numpy Gotoh kernel vectorised over a batch of sequences (batch axis
  last and contiguous). With integer scores it works in int16 and is exact; the tests check that
  it gives identical raw scores, normalised scores and best patterns to Biopython.

The Spark wrappers :func:`score_sequences` and :func:`window_scores` run the fast core inside
``mapInPandas`` and average scores per window of event time.
"""
from __future__ import annotations

import functools
import logging
from itertools import chain, repeat
from typing import Iterator, Sequence

import numpy as np

from soads import schema as S
from soads.config import ScoringConf

logger = logging.getLogger(__name__)

ScoringParams = ScoringConf
"""The four alignment scores (match, mismatch, gap_open, gap_extend) travel as a ScoringConf."""

# Codes of the fast scorer: pattern symbols are 1..K; a symbol found in no pattern can only ever
# mismatch a pattern symbol, so all of them share one code; padding never equals a pattern code.
_UNKNOWN = 0
_PAD = -1
# Chunk size of the fast scorer, in cells (sequence length x patterns x sequences): the working
# arrays (eight of this many int16) stay near the L2 cache.
_CHUNK_CELLS = 1 << 18
_MIN_CHUNK = 16


# -- reference: Biopython --------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _aligner(match: float, mismatch: float, gap_open: float, gap_extend: float):
    from Bio import Align

    aligner = Align.PairwiseAligner(mode="local")
    aligner.match_score = match
    aligner.mismatch_score = mismatch
    # Biopython >= 1.86 changed the default gap scores: set every one of them, end gaps included.
    for kind in ("insertion", "deletion"):
        for where in ("internal", "left", "right"):
            setattr(aligner, f"open_{where}_{kind}_score", gap_open)
            setattr(aligner, f"extend_{where}_{kind}_score", gap_extend)
    return aligner


def biopython_score(s: Sequence[str], p: Sequence[str], params: ScoringConf) -> float:
    """``SW(s, p)``: Biopython's local-alignment score (0 when either side is empty).

    Examples
    --------
    >>> biopython_score(["a", "b", "c"], ["a", "b", "c"], ScoringConf())
    6.0
    >>> biopython_score(["a", "b", "x", "c"], ["a", "b", "c"], ScoringConf())  # one extra step
    4.0
    """
    if len(s) == 0 or len(p) == 0:
        return 0.0
    aligner = _aligner(params.match, params.mismatch, params.gap_open, params.gap_extend)
    return float(aligner.score(list(s), list(p)))


def score_one(
    seq: Sequence[str], patterns: Sequence[Sequence[str]], params: ScoringConf
) -> tuple[float, float, tuple | None]:
    """Normalised score, raw score and best pattern of one sequence, via Biopython (the oracle).

    Examples
    --------
    >>> pats = [["a", "b", "c"], ["a", "d"]]
    >>> score_one(["a", "b", "c"], pats, ScoringConf())
    (1.0, 6.0, ('a', 'b', 'c'))
    >>> score_one(["a", "b", "x", "c"], pats, ScoringConf())  # 4 / max(8, 6)
    (0.5, 4.0, ('a', 'b', 'c'))
    >>> score_one([], pats, ScoringConf())
    (0.0, 0.0, None)
    """
    if len(seq) == 0 or len(patterns) == 0:
        return 0.0, 0.0, None
    self_s = biopython_score(seq, seq, params)
    best, raw, best_p = -1.0, None, None
    for p in patterns:
        sw = biopython_score(seq, p, params)
        den = max(self_s, biopython_score(p, p, params))
        ratio = sw / den if den > 0 else 0.0
        raw = sw if raw is None else max(raw, sw)
        if ratio > best:  # strict: ties keep the first pattern
            best, best_p = ratio, tuple(p)
    return best, raw, best_p


# -- fast scorer: numpy Gotoh kernel over a batch ----------------------------------------------


def _numbers(params: ScoringConf, n: int, m: int):
    """dtype, scores cast to it, and the "minus infinity" of the gap states, for n x m cells.

    Integer scores run in the smallest integer type that holds every intermediate value (int8
    for the paper's lengths: half the memory traffic of int16) and are exact; any other scores
    run in float64 with the same additions in the same order as Biopython's.

    Bounds (gaps <= 0, A = max(|match|, |mismatch|)): a local-alignment score is at most
    A * min(n, m); the prefix scan of :func:`_sw_kernel` shifts by at most |ge| * n; every real
    M, E, F value is >= -(A + |go| + |ge| * n); the sentinel lies below that and only ever gets
    go and ge added once more before a max discards it.
    """
    vals = (params.match, params.mismatch, params.gap_open, params.gap_extend)
    if all(float(v).is_integer() for v in vals):
        a = int(max(abs(params.match), abs(params.mismatch)))
        go, ge = int(abs(params.gap_open)), int(abs(params.gap_extend))
        hi = a * min(n, m) + ge * (n + 1) + 2 * a
        lo = a + go + ge * (n + 1) + 1
        for dtype in (np.int8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if hi <= info.max and lo + go + ge <= -info.min - 1:
                return dtype, tuple(dtype(v) for v in vals), dtype(-lo)
    return np.float64, tuple(float(v) for v in vals), -np.inf


def _sw_kernel(
    eq_rows: Iterator[np.ndarray], n: int, batch: int, params: ScoringConf, m: int
) -> np.ndarray:
    """Column maxima of the local-alignment matrix, for a batch of alignments at once.

    ``eq_rows`` yields, for each pattern position i, whether that symbol equals each sequence
    position: a bool ``(n, w_i)`` array (sequence axis first, batch axis last). The widths w_i
    never grow: alignments whose pattern has ended drop off the right end of the batch. Returns
    the ``(n, batch)`` maxima of ``max(0, M)`` over the pattern positions, for sequence positions
    1..n: ``SW`` of an alignment whose sequence has length L is ``out[:L].max(axis=0)``, so cells
    beyond L (padding) never count, whatever the scores.

    Gotoh's recurrences as Biopython runs them (M: ends in an aligned pair, E/F: ends in a gap
    along the sequence/pattern; a gap opens from M or from the other gap, never from itself)::

        M[i,j] = H[i-1,j-1] + (match if eq[i,j] else mismatch)
        F[i,j] = max(F[i-1,j] + ge, max(M, E)[i-1,j] + go)
        E[i,j] = max(E[i,j-1] + ge, max(M, F)[i,j-1] + go)
        H[i,j] = max(0, M[i,j], E[i,j], F[i,j])
    """
    dtype, (match, mismatch, go, ge), neg = _numbers(params, n, m)
    zeros = np.zeros((n, batch), dtype)  # an array: numpy's maximum with a scalar is not SIMD
    # Row i-1 and row i of each state; column 0 is the empty prefix (H = 0, no M/E/F there).
    H0, H1 = np.zeros((n + 1, batch), dtype), np.zeros((n + 1, batch), dtype)
    M0, M1 = np.full((n, batch), neg, dtype), np.empty((n, batch), dtype)
    E0, E1 = np.full((n, batch), neg, dtype), np.empty((n, batch), dtype)
    F0 = np.full((n, batch), neg, dtype)
    T0 = np.empty((n, batch), dtype)
    colmax = np.zeros((n, batch), dtype)
    # With integer scores E is a prefix maximum (no three-call loop over columns):
    # E[j] = max_{k<j} (G[k] + go + ge*(j-1-k)) with G = max(M, F) of the same row, which does not
    # depend on E. Float scores take the loop: it adds in Biopython's order, so bit-identical.
    exact = dtype is not np.float64
    if exact:
        delta = dtype(match - mismatch)
        ramp_in = (-ge * np.arange(n, dtype=np.int64)).astype(dtype)[1:, None]
        ramp_out = (go + ge * np.arange(n - 1, dtype=np.int64)).astype(dtype)[:, None]
    for eq in eq_rows:
        w = eq.shape[1]
        H, Hn, M, Mn = H0[:, :w], H1[:, :w], M0[:, :w], M1[:, :w]
        E, En, F, T = E0[:, :w], E1[:, :w], F0[:, :w], T0[:, :w]
        # F from the row above: extend F, or open from M or E. When go <= ge, opening from H
        # (which adds F itself and 0) changes nothing that counts: reopening a gap is never
        # better than extending it, and a gap from 0 stays <= 0, below the floor of H.
        if go <= ge:
            np.add(H[1:], go, out=T)
        else:
            np.maximum(M, E, out=T)
            np.add(T, go, out=T)
        np.add(F, ge, out=F)
        np.maximum(F, T, out=F)
        # M: diagonal step (match - mismatch is exact in integers; floats pick the score as is)
        if exact:
            np.multiply(eq, delta, out=T)
            np.add(T, mismatch, out=T)
        else:
            T[...] = np.where(eq, match, mismatch)
        np.add(H[:-1], T, out=Mn)
        # G = max(M, F) of this row, then E along the row
        np.maximum(Mn, F, out=T)
        if exact:
            # arrays index columns 1..n: En[a] = max_{b<a} (T[b] + go + ge*(a-1-b))
            np.add(T[1:], ramp_in, out=T[1:])
            for a in range(1, n):  # running max down the columns (ufunc.accumulate is slower)
                np.maximum(T[a], T[a - 1], out=T[a])
            np.add(T[:-1], ramp_out, out=En[1:])
        else:
            t = np.empty(w, dtype)
            En[0] = neg
            for a in range(1, n):
                np.add(En[a - 1], ge, out=En[a])
                np.add(T[a - 1], go, out=t)
                np.maximum(En[a], t, out=En[a])
        En[0] = neg  # no gap opens from column 0 (the empty prefix)
        # H = max(0, M, E, F)
        np.maximum(Mn, En, out=Hn[1:])
        np.maximum(Hn[1:], F, out=Hn[1:])
        np.maximum(Hn[1:], zeros[:, :w], out=Hn[1:])
        np.maximum(colmax[:, :w], Mn, out=colmax[:, :w])  # a local alignment ends in a pair
        H0, H1, M0, M1, E0, E1 = H1, H0, M1, M0, E1, E0
    return colmax


def _pattern_trie(pcodes: Sequence[np.ndarray]):
    """The patterns as a trie, level by level.

    Returns ``levels`` -- for depth d = 1, 2, ...: ``(parents, symbols)``, the index of each
    depth-d node's parent among the depth-(d-1) nodes (depth 0: the root alone) and its symbol --
    and ``terminal`` -- per pattern, ``(depth, node index)`` of its last symbol.

    >>> levels, terminal = _pattern_trie([np.array([1, 2]), np.array([1, 3]), np.array([1])])
    >>> [(p.tolist(), s.tolist()) for p, s in levels], terminal
    ([([0], [1]), ([0, 0], [2, 3])], [(2, 0), (2, 1), (1, 0)])
    """
    index: list[dict] = [{(): 0}]
    levels: list[tuple[list, list]] = []
    terminal = []
    for codes in pcodes:
        prefix: tuple = ()
        for d, c in enumerate(codes.tolist(), start=1):
            if len(levels) < d:
                levels.append(([], []))
                index.append({})
            node = prefix + (c,)
            if node not in index[d]:
                index[d][node] = len(levels[d - 1][0])
                levels[d - 1][0].append(index[d - 1][prefix])
                levels[d - 1][1].append(c)
            prefix = node
        terminal.append((len(prefix), index[len(prefix)][prefix]))
    return ([(np.array(p, dtype=np.int64), np.array(c, dtype=np.int32)) for p, c in levels],
            terminal)


def _sw_trie_kernel(X: np.ndarray, levels, terminal, params: ScoringConf, m: int) -> np.ndarray:
    """:func:`_sw_kernel` over a pattern trie: patterns that share a prefix share its rows.

    A row of Gotoh's matrices for pattern position i depends only on the pattern's first i
    symbols, so the rows of a common prefix are computed once, for its trie node, and each
    child starts from its parent's row (a gather along the node axis). Work is proportional to
    the trie's nodes instead of the patterns' total length: PrefixSpan's patterns are prefix
    closed, so that is about their number instead of number x mean length. Same recurrences,
    same arithmetic as :func:`_sw_kernel` (the tests compare the two).

    Parameters
    ----------
    X : (n, w) int array
        Sequence codes, sequence axis first, padded with :data:`_PAD`.
    levels, terminal : :func:`_pattern_trie`
    m : int
        Longest pattern (bounds the integer type, as in :func:`_numbers`).

    Returns
    -------
    (n, P, w) array of column maxima per pattern (as ``_sw_kernel(...).reshape(n, P, w)``).
    """
    n, w = X.shape
    dtype, (match, mismatch, go, ge), neg = _numbers(params, n, m)
    exact = dtype is not np.float64
    if exact:
        delta = dtype(match - mismatch)
        ramp_in = (-ge * np.arange(n, dtype=np.int64)).astype(dtype)[1:, None]
        ramp_out = (go + ge * np.arange(n - 1, dtype=np.int64)).astype(dtype)[:, None]
    out = np.zeros((n, len(terminal), w), dtype)
    ends: dict[int, list[tuple[int, int]]] = {}
    for k, (depth, node) in enumerate(terminal):
        ends.setdefault(depth, []).append((k, node))
    # the root: the empty pattern prefix (H = 0, no M/E/F)
    H = np.zeros((n + 1, 1, w), dtype)
    M = np.full((n, 1, w), neg, dtype)
    E = np.full((n, 1, w), neg, dtype)
    F = np.full((n, 1, w), neg, dtype)
    colmax = np.zeros((n, 1, w), dtype)
    for d, (parents, symbols) in enumerate(levels, start=1):
        N = len(parents)
        H, M, E, F, colmax = (np.take(a, parents, axis=1) for a in (H, M, E, F, colmax))
        W = N * w
        H2, M2, E2, F2 = (a.reshape(a.shape[0], W) for a in (H, M, E, F))
        eq = (X[:, None, :] == symbols[None, :, None]).reshape(n, W)
        T = np.empty((n, W), dtype)
        if go <= ge:
            np.add(H2[1:], go, out=T)
        else:
            np.maximum(M2, E2, out=T)
            np.add(T, go, out=T)
        np.add(F2, ge, out=F2)
        np.maximum(F2, T, out=F2)
        Mn = np.empty((n, W), dtype)
        if exact:
            np.multiply(eq, delta, out=T)
            np.add(T, mismatch, out=T)
        else:
            T[...] = np.where(eq, match, mismatch)
        np.add(H2[:-1], T, out=Mn)
        np.maximum(Mn, F2, out=T)
        En = np.empty((n, W), dtype)
        if exact:
            np.add(T[1:], ramp_in, out=T[1:])
            for a in range(1, n):
                np.maximum(T[a], T[a - 1], out=T[a])
            np.add(T[:-1], ramp_out, out=En[1:])
        else:
            t = np.empty(W, dtype)
            En[0] = neg
            for a in range(1, n):
                np.add(En[a - 1], ge, out=En[a])
                np.add(T[a - 1], go, out=t)
                np.maximum(En[a], t, out=En[a])
        En[0] = neg
        Hn = np.zeros((n + 1, W), dtype)
        np.maximum(Mn, En, out=Hn[1:])
        np.maximum(Hn[1:], F2, out=Hn[1:])
        np.maximum(Hn[1:], 0, out=Hn[1:])
        C2 = colmax.reshape(n, W)
        np.maximum(C2, Mn, out=C2)
        H, M, E = Hn.reshape(n + 1, N, w), Mn.reshape(n, N, w), En.reshape(n, N, w)
        F = F2.reshape(n, N, w)
        for k, node in ends.get(d, ()):
            out[:, k, :] = colmax[:, node, :]
    return out


def _pad(codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """Ragged code runs -> ``(n, batch)`` matrix, padded with :data:`_PAD` (batch axis last)."""
    batch = len(lengths)
    out = np.full((batch, n), _PAD, dtype=np.int32)
    total = int(lengths.sum())
    if total:
        row = np.repeat(np.arange(batch), lengths)
        col = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[row, col] = codes[np.repeat(starts, lengths) + col]
    return np.ascontiguousarray(out.T)


def _chunks(lengths_sorted: np.ndarray, n_patterns: int) -> Iterator[tuple[int, int]]:
    """Cut length-sorted sequences into chunks of similar length (padding waste <= ~25%)."""
    a, total = 0, len(lengths_sorted)
    while a < total:
        l0 = int(lengths_sorted[a])
        limit = max(l0 + 4, (l0 * 5) // 4)
        end = int(np.searchsorted(lengths_sorted, limit, side="right"))
        cap = max(_MIN_CHUNK, _CHUNK_CELLS // (max(limit, 1) * n_patterns))
        end = min(end, a + cap)
        yield a, end
        a = end


def _self_scores(code_lists: Sequence[np.ndarray], params: ScoringConf) -> np.ndarray:
    """``SW(x, x)`` for each code sequence x, computed by the kernel (valid for any scores)."""
    out = np.zeros(len(code_lists), dtype=np.float64)
    lengths = np.fromiter(map(len, code_lists), dtype=np.int64, count=len(code_lists))
    for L in np.unique(lengths[lengths > 0]):
        idx = np.flatnonzero(lengths == L)
        X = np.ascontiguousarray(np.stack([code_lists[i] for i in idx]).T)  # (L, batch)
        rows = (X == X[i][None, :] for i in range(int(L)))
        colmax = _sw_kernel(rows, int(L), len(idx), params, int(L))
        out[idx] = colmax.max(axis=0)
    return out


def _identity_is_best(params: ScoringConf) -> bool:
    """True when ``SW(x, x)`` is the score of x aligned to itself without gaps.

    A local alignment of x with itself has at most len(x) aligned pairs, each scoring at most
    max(match, mismatch) = match, and gaps that cost (<= 0): so the identity alignment wins.
    """
    return params.match > 0 and params.mismatch <= params.match and max(
        params.gap_open, params.gap_extend
    ) <= 0


def score_batch(
    seqs: Sequence[Sequence[str]], patterns: Sequence[Sequence[str]], params: ScoringConf,
    trie: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised scores, raw scores and best-pattern indices of many sequences (fast scorer).

    Identical to :func:`score_one` on every sequence (the tests check it against Biopython).

    Parameters
    ----------
    seqs : list of list of str
        Sequences of read points.
    patterns : list of list of str
        Patterns in use; ties in the normalised score go to the first.
    params : ScoringConf
        match, mismatch, gap_open, gap_extend.
    trie : bool, optional
        True runs :func:`_sw_trie_kernel` (shared pattern prefixes computed once), False the
        per-pattern :func:`_sw_kernel` (the tests' second oracle); same results. By default the
        trie runs when it saves at least a third of the rows (a mining run's prefix-closed
        patterns: about a pattern length's worth); unrelated patterns share nothing and the
        per-pattern kernel, which reuses its buffers, is faster there.

    Returns
    -------
    tuple of numpy arrays
        ``scores`` float64 in [0, 1], ``raws`` float64, ``best`` int64 (index into ``patterns``,
        -1 for an empty sequence or when there are no patterns).

    Examples
    --------
    >>> scores, raws, best = score_batch([["a", "b", "c"], ["a", "x"], []],
    ...                                  [["a", "b", "c"], ["a", "x"]], ScoringConf())
    >>> scores.tolist(), raws.tolist(), best.tolist()
    ([1.0, 1.0, 0.0], [6.0, 4.0, 0.0], [0, 1, -1])
    """
    if max(params.gap_open, params.gap_extend) > 0:
        # Biopython's local mode then scores alignments made of gaps alone: not a similarity.
        raise ValueError(f"gap scores must be <= 0, got {params.gap_open}, {params.gap_extend}")
    N = len(seqs)
    scores = np.zeros(N, dtype=np.float64)
    raws = np.zeros(N, dtype=np.float64)
    best = np.full(N, -1, dtype=np.int64)
    if N == 0 or len(patterns) == 0:
        return scores, raws, best

    # One alphabet per call: pattern symbols get codes 1..K, anything else is _UNKNOWN.
    alphabet: dict[str, int] = {}
    for p in patterns:
        for r in p:
            alphabet.setdefault(r, len(alphabet) + 1)
    pcodes = [np.fromiter((alphabet[r] for r in p), dtype=np.int32, count=len(p)) for p in patterns]
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=N)
    flat = list(chain.from_iterable(seqs))
    codes = np.fromiter(map(alphabet.get, flat, repeat(_UNKNOWN)), dtype=np.int32, count=len(flat))
    starts = np.cumsum(lengths) - lengths

    # Normalisers SW(p, p) and SW(s, s).
    self_p = _self_scores(pcodes, params)
    if _identity_is_best(params):
        # Sequential sums, as Biopython adds them along the identity path (exact for floats too).
        top = int(lengths.max())
        self_tab = np.concatenate([[0.0], np.cumsum(np.full(top, float(params.match)))])
        self_s = self_tab[lengths]
    else:
        # every symbol its own code here: two unknown symbols must not match each other
        full: dict[str, int] = {}
        encoded = [np.fromiter((full.setdefault(r, len(full)) for r in s), np.int32, len(s))
                   for s in seqs]
        self_s = _self_scores(encoded, params)

    # Patterns longest first, side by side on the batch axis (pattern-major): a pattern that has
    # ended leaves the right end of the batch, so no cell is computed past its end.
    P = len(patterns)
    p_order = sorted(range(P), key=lambda k: -len(pcodes[k]))
    p_len = np.array([len(pcodes[k]) for k in p_order], dtype=np.int64)
    m_max = int(p_len[0])
    p_mat = np.full((P, m_max), _PAD - 1, dtype=np.int32)
    for r, k in enumerate(p_order):
        p_mat[r, : len(pcodes[k])] = pcodes[k]
    levels, terminal = (None, None)
    if trie is not False:
        levels, terminal = _pattern_trie(pcodes)
        if trie is None:
            trie = 3 * sum(len(p) for p, _ in levels) <= 2 * sum(map(len, pcodes))
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]  # empty sequences keep score 0, raw 0, no pattern
    lengths_sorted = lengths[order]
    # chunk width from the widest trie level (not the pattern count): the trie's rows are that
    # wide at most, and wider chunks amortise numpy's per-call cost
    width = max((len(p) for p, _ in levels), default=1) if trie else P
    for a, b in _chunks(lengths_sorted, width):
        idx = order[a:b]
        n, w = int(lengths_sorted[b - 1]), len(idx)
        X = _pad(codes, starts[idx], lengths[idx], n)[:, None, :]  # (n, 1, batch)
        valid = np.arange(n)[:, None] < lengths[idx][None, :]  # (n, batch)
        sw = np.empty((P, w), dtype=np.float64)
        if trie:
            colmax = _sw_trie_kernel(X[:, 0, :], levels, terminal, params, m_max)
            if params.mismatch <= 0:
                # padding never raises a maximum: a cell past the sequence's end scores a
                # mismatch (<= 0) on top of an earlier cell, and gaps are <= 0 too
                sw[...] = colmax.max(axis=0)
            else:
                sw[...] = np.where(valid[:, None, :], colmax, 0).max(axis=0)
        else:
            def eq_rows():
                for i in range(m_max):
                    live = int(np.count_nonzero(p_len > i))
                    yield (X == p_mat[:live, i][None, :, None]).reshape(n, live * w)

            colmax = _sw_kernel(eq_rows(), n, P * w, params, m_max).reshape(n, P, w)
            sw[p_order] = np.where(valid[:, None, :], colmax, 0).max(axis=0)
        den = np.maximum(self_s[idx][None, :], self_p[:, None])
        ratio = np.zeros_like(sw)
        np.divide(sw, den, out=ratio, where=den > 0)
        k_best = np.argmax(ratio, axis=0)  # first pattern on ties
        best[idx] = k_best
        scores[idx] = ratio[k_best, np.arange(w)]
        raws[idx] = sw.max(axis=0)
    return scores, raws, best


# -- Spark ----------------------------------------------------------------------------------


def object_score_struct():
    """Spark schema of object scores: oid, score, raw, pattern array<string>, last_time."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.OID, T.StringType(), True),
        T.StructField(S.SCORE, T.DoubleType(), False),
        T.StructField(S.RAW, T.DoubleType(), False),
        T.StructField(S.PATTERN, T.ArrayType(T.StringType(), False), True),
        T.StructField(S.LAST_TIME, T.TimestampType(), True),
    ])


def _score_frame(pdf, patterns: list[list[str]], params: ScoringConf):
    """pandas core of :func:`score_sequences`: oid, sequence, last_time -> object scores."""
    import pandas as pd

    missing = pdf[S.SEQUENCE].isna()
    if missing.any():
        raise ValueError(f"null {S.SEQUENCE} for {S.OID} {pdf.loc[missing, S.OID].iloc[0]!r}")
    scores, raws, best = score_batch(pdf[S.SEQUENCE].tolist(), patterns, params)
    return pd.DataFrame({
        S.OID: pdf[S.OID].to_numpy(),
        S.SCORE: scores,
        S.RAW: raws,
        S.PATTERN: [patterns[k] if k >= 0 else None for k in best.tolist()],
        S.LAST_TIME: pdf[S.LAST_TIME].to_numpy(),
    })


def score_sequences(sequences, patterns: Sequence[Sequence[str]], params: ScoringConf):
    """Alignment score of every object against the patterns in use (Spark).

    The patterns (a small list) travel with the closure; the sequences are never collected.

    Parameters
    ----------
    sequences : DataFrame
        ``oid, sequence array<string>`` and optionally ``last_time``.
    patterns : list of list of str
        Patterns in use (order matters only for ties).
    params : ScoringConf
        match, mismatch, gap_open, gap_extend.

    Returns
    -------
    DataFrame
        ``oid, score double, raw double, pattern array<string>, last_time timestamp`` (one row
        per object; pattern is null for an empty sequence or no patterns, last_time is null when
        the input has none).
    """
    from pyspark.sql import functions as F

    pats = [list(p) for p in patterns]
    if S.LAST_TIME in sequences.columns:
        last_time = F.col(S.LAST_TIME).cast("timestamp")
    else:
        last_time = F.lit(None).cast("timestamp")
    df = sequences.select(S.OID, S.SEQUENCE, last_time.alias(S.LAST_TIME))
    # oid, sequence, last_time (one row per object)

    def run(batches):
        for pdf in batches:
            yield _score_frame(pdf, pats, params)

    logger.info("scoring sequences against %d patterns", len(pats))
    return df.mapInPandas(run, object_score_struct())


def window_scores(object_scores, window_seconds: int):
    """Mean alignment score per window of event time (paper §3.3: hourly, per stream).

    Each object counts in the tumbling window (aligned to the epoch, UTC) that contains its
    last_time; objects without a last_time belong to no window and are left out.

    Parameters
    ----------
    object_scores : DataFrame
        At least ``score, last_time`` (as returned by :func:`score_sequences`).
    window_seconds : int
        Window length.

    Returns
    -------
    DataFrame
        ``window_start timestamp, window_end timestamp, mean_score double, n_objects long``
        (one row per window holding at least one object; unordered).
    """
    from pyspark.sql import functions as F

    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    win = F.window(F.col(S.LAST_TIME), f"{int(window_seconds)} seconds")
    agg = (
        object_scores.filter(F.col(S.LAST_TIME).isNotNull())
        .groupBy(win.alias("_window"))
        .agg(F.avg(S.SCORE).alias(S.MEAN_SCORE), F.count(F.lit(1)).alias(S.N_OBJECTS))
    )
    # _window struct<start, end>, mean_score, n_objects (one row per window)
    return agg.select(
        F.col("_window.start").alias(S.WINDOW_START),
        F.col("_window.end").alias(S.WINDOW_END),
        S.MEAN_SCORE,
        S.N_OBJECTS,
    )
