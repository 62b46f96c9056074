"""Frequent Subsequence Miner: modified PrefixSpan (paper §3.2.4, Alg. 1), distributed on Spark.

DESIGN.md "Modified PrefixSpan": the length-2 frequent patterns come straight from the
RELATIONAL DEPENDENCY TABLE (``support(a, b) >= minsup``) with no scan of the log; a frequent
prefix grows by one read point x only where ``(last(p), x)`` is itself a frequent relation, and
its support is counted in the prefix-projected database.

Distributed design (two passes over the sequences, whatever the pattern length)
---------------------------------------------------------------------------
Read points are encoded to ints with a small dictionary broadcast to the workers (for "soads" the
read points of frequent relations only: any other read point cannot occur in a frequent pattern,
so it becomes -1 and cuts the run). A partition's sequences become one flat int32 array plus
offsets, and the *projected database* is a numpy array of start positions, one per occurrence of
a prefix; growing every prefix by one read point is one vectorised step over that array
(:func:`grow`). The projected database never leaves the worker.

Counting level by level across the cluster would cost one Spark job per pattern length. We use
the partition-then-verify scheme of Savasere, Omiecinski and Navathe (SON, VLDB 1995) instead:

1. *local mining*: every partition mines, with the exact projected-database growth, the patterns
   with local support ``>= ceil(m * n_i / N)`` (``n_i`` its sequences, ``N`` all, ``m`` the
   minimum support count). A pattern with global support ``>= m`` reaches that threshold in at
   least one partition (else the local supports would sum to less than ``m``), so the union of
   local results is a superset of the answer. Only these candidate patterns reach the driver.
2. *verification*: the candidates (prefix-closed, ids per length) are broadcast; every partition
   grows its projected database again, along candidates only, and emits exact local supports
   ``(length, id, count)``; Spark sums them by key; the driver keeps ``support >= m``.

Both passes grow along frequent relations only (paper Alg. 1, line 8); the "no-relations"
baseline runs the same two passes with length-2 patterns counted from the log and growth
unrestricted, and must give the identical result.

Maximal (DESIGN.md): no frequent one-item extension on either side, judged within the mined set;
with ``max_length`` K a length-K pattern is maximal iff no mined pattern extends it (none of
length K + 1 was mined).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from soads import schema as S
from soads.mining.brute_force import mark_maximal, minsup_count

logger = logging.getLogger(__name__)

__all__ = ["mine", "mine_local", "grow", "minsup_count", "pattern_struct"]


# ---------------------------------------------------------------------------------------------
# pure core: one partition's flat encoded sequences -> projected-database growth
# ---------------------------------------------------------------------------------------------

@dataclass
class Levels:
    """Patterns per length as a trie of sorted tables (ids are row indices of each table).

    ``key[k]`` holds, for the length-k patterns, ``parent_id * R + last`` sorted ascending, where
    ``parent_id`` is the id of the length-(k-1) prefix (for k = 2, the first read point's code)
    and ``R`` the number of read points. ``count[k]`` is the support of each row (local or global
    depending on the producer).
    """

    n_symbols: int
    key: dict[int, np.ndarray] = field(default_factory=dict)
    count: dict[int, np.ndarray] = field(default_factory=dict)

    def matrix(self, k: int) -> np.ndarray:
        """The length-k patterns as a ``(n, k)`` int array of codes, in id order."""
        r = self.n_symbols
        key = self.key[k]
        if k == 2:
            return np.stack([key // r, key % r], axis=1).astype(np.int64)
        prefix = self.matrix(k - 1)[key // r]
        return np.concatenate([prefix, (key % r)[:, None]], axis=1)


def _distinct_counts(sid: np.ndarray, key: np.ndarray, n_seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, the number of distinct sequence ids it occurs in.

    Sort + neighbour difference (numpy 2.4's ``np.unique`` on int64 is a slow hash path).
    """
    if len(key) == 0:
        return key[:0], np.zeros(0, dtype=np.int64)
    n_seq = max(int(n_seq), 1)
    if int(key.max()) < (2**62) // n_seq:
        comb = np.sort(key * n_seq + sid)
        first = np.r_[True, comb[1:] != comb[:-1]]
        k = comb[first] // n_seq
    else:  # too many keys to pack with the sequence id: two-key sort
        order = np.lexsort((sid, key))
        ks, ss = key[order], sid[order]
        first = np.r_[True, (ks[1:] != ks[:-1]) | (ss[1:] != ss[:-1])]
        k = ks[first]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, len(k)])
    return k[starts], counts.astype(np.int64)


def grow(codes: np.ndarray, offsets: np.ndarray, n_symbols: int, max_length: int,
         pairs_ok: np.ndarray | None = None, min_count: int = 1,
         candidates: Levels | None = None) -> Levels:
    """Grow contiguous patterns over one batch of encoded sequences (pure numpy).

    Parameters
    ----------
    codes : int array
        All sequences concatenated, read points as codes ``0..n_symbols-1``; -1 means "cannot be
        part of a pattern" and cuts the run.
    offsets : int array
        ``len(sequences) + 1`` boundaries into ``codes``.
    n_symbols : int
        Number of read point codes ``R``.
    max_length : int
        Longest pattern grown.
    pairs_ok : bool array (R, R), optional
        The frequent relations: a prefix grows by x only where ``pairs_ok[last, x]``
        (paper Alg. 1). None: every pair may grow.
    min_count : int
        Without ``candidates``: keep the patterns whose support here is ``>= min_count``.
    candidates : Levels, optional
        Grow along these patterns only (keyed as in :class:`Levels`) and report their support
        here, including zero-count ones as 0.

    Returns
    -------
    Levels
        Without candidates: the frequent patterns here with their supports. With candidates:
        ``count[k][i]`` is the support here of candidate ``i`` of length k (ids of
        ``candidates``); ``key`` is that of ``candidates``.

    Examples
    --------
    >>> lv = grow(np.array([0, 1, 2, 0, 1, 0, 1, 2]), np.array([0, 5, 8]), 3, 10, min_count=2)
    >>> [(tuple(p), int(c)) for k in sorted(lv.key) for p, c in zip(lv.matrix(k).tolist(), lv.count[k])]
    [((0, 1), 2), ((1, 2), 2), ((0, 1, 2), 2)]
    """
    codes = np.asarray(codes, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    r = int(n_symbols)
    n_seq = len(offsets) - 1
    out = Levels(r)
    if n_seq <= 0 or len(codes) < 2 or max_length < 2:
        return out
    lengths = np.diff(offsets)
    sid = np.repeat(np.arange(n_seq, dtype=np.int64), lengths)
    end = offsets[1:][sid]  # end (exclusive) of each position's sequence
    # a position can start or continue a pattern if it has a successor in its sequence and the
    # step (c[i], c[i+1]) is allowed
    step_ok = np.zeros(len(codes), dtype=bool)
    a, b = codes[:-1], codes[1:]
    valid = (np.arange(1, len(codes)) < end[:-1]) & (a >= 0) & (b >= 0)
    if pairs_ok is not None:
        valid[valid] = pairs_ok[a[valid], b[valid]]
    step_ok[:-1] = valid

    # level 2: the projected database of every pair is the list of its start positions
    pos = np.flatnonzero(step_ok)
    key = codes[pos] * r + codes[pos + 1]
    k = 2
    while len(pos):
        uniq, cnt = _distinct_counts(sid[pos], key, n_seq)
        if candidates is not None:
            ckeys = candidates.key.get(k, np.zeros(0, dtype=np.int64))
            idx = np.searchsorted(ckeys, uniq)
            idx_c = np.minimum(idx, max(len(ckeys) - 1, 0))
            hit = (idx < len(ckeys)) & (ckeys[idx_c] == uniq) if len(ckeys) else np.zeros(len(uniq), bool)
            counts = np.zeros(len(ckeys), dtype=np.int64)
            counts[idx[hit]] = cnt[hit]
            out.key[k], out.count[k] = ckeys, counts
            # position -> candidate id (or -1)
            pidx = np.searchsorted(ckeys, key)
            pidx_c = np.minimum(pidx, max(len(ckeys) - 1, 0))
            pid = np.where((pidx < len(ckeys)) & (ckeys[pidx_c] == key), pidx, -1) \
                if len(ckeys) else np.full(len(key), -1)
        else:
            keep = cnt >= min_count
            kept = uniq[keep]
            out.key[k], out.count[k] = kept, cnt[keep]
            pidx = np.searchsorted(kept, key)
            pidx_c = np.minimum(pidx, max(len(kept) - 1, 0))
            pid = np.where((pidx < len(kept)) & (kept[pidx_c] == key), pidx, -1) \
                if len(kept) else np.full(len(key), -1)
        if k >= max_length:
            break
        # project: occurrences of a kept prefix whose next step is allowed grow by one read point
        nxt = pos + k  # index of the read point that would extend the pattern
        live = (pid >= 0) & step_ok[nxt - 1]
        pos, pid = pos[live], pid[live]
        key = pid * r + codes[pos + k]
        k += 1
    return out


def levels_from_patterns(patterns: dict[int, np.ndarray], n_symbols: int) -> Levels:
    """Candidate trie from pattern matrices per length (must be prefix-closed down to length 2).

    ``patterns[k]`` is an ``(n, k)`` int array (duplicates allowed).
    """
    r = n_symbols
    lv = Levels(r)
    prev_keys = None
    for k in sorted(patterns):
        mat = np.asarray(patterns[k], dtype=np.int64).reshape(-1, k)
        if k == 2:
            keys = mat[:, 0] * r + mat[:, 1]
        else:
            parent = _ids_of(lv, mat[:, :-1], prev_keys)
            if (parent < 0).any():
                raise ValueError(f"candidate set is not prefix-closed at length {k}")
            keys = parent * r + mat[:, -1]
        lv.key[k] = np.unique(keys)
        lv.count[k] = np.zeros(len(lv.key[k]), dtype=np.int64)
        prev_keys = lv.key[k]
    return lv


def _ids_of(lv: Levels, mat: np.ndarray, keys_k: np.ndarray | None) -> np.ndarray:
    """Ids in ``lv`` of the patterns ``mat`` (n, k); -1 where absent."""
    k = mat.shape[1]
    r = lv.n_symbols
    if k == 2:
        key = mat[:, 0] * r + mat[:, 1]
    else:
        parent = _ids_of(lv, mat[:, :-1], lv.key.get(k - 1))
        key = np.where(parent >= 0, parent * r + mat[:, -1], -1)
    ks = lv.key.get(k) if keys_k is None else keys_k
    if ks is None or len(ks) == 0:
        return np.full(len(mat), -1, dtype=np.int64)
    idx = np.searchsorted(ks, key)
    idx_c = np.minimum(idx, len(ks) - 1)
    return np.where((key >= 0) & (idx < len(ks)) & (ks[idx_c] == key), idx, -1)


def local_threshold(m: int, n_local: int, n_total: int) -> int:
    """SON local threshold ``ceil(m * n_local / n_total)`` (at least 1).

    A pattern with support >= m over all partitions has support >= this in at least one.
    """
    if n_total <= 0:
        return max(m, 1)
    return max(1, -(-m * n_local // n_total))


# ---------------------------------------------------------------------------------------------
# the two passes on one partition (pure; the Spark functions below call these)
# ---------------------------------------------------------------------------------------------

def local_candidates(codes, offsets, n_symbols, max_length, pairs_ok, m, n_total,
                     min_length: int) -> list[np.ndarray]:
    """Pass 1 on one partition: its locally frequent patterns of length >= ``min_length``."""
    n_local = len(offsets) - 1
    lv = grow(codes, offsets, n_symbols, max_length, pairs_ok,
              min_count=local_threshold(m, n_local, n_total))
    return [lv.matrix(k) for k in sorted(lv.key) if k >= min_length and len(lv.key[k])]


def verify_counts(codes, offsets, n_symbols, max_length, pairs_ok, candidates: Levels,
                  min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2 on one partition: local support of every candidate, as ``(length, id, count)``."""
    lv = grow(codes, offsets, n_symbols, max_length, pairs_ok, candidates=candidates)
    ls, ids, cs = [], [], []
    for k in sorted(lv.count):
        if k < min_length:
            continue
        nz = np.flatnonzero(lv.count[k])
        ls.append(np.full(len(nz), k, dtype=np.int32))
        ids.append(nz.astype(np.int64))
        cs.append(lv.count[k][nz])
    if not ls:
        e = np.zeros(0, dtype=np.int64)
        return e.astype(np.int32), e, e
    return np.concatenate(ls), np.concatenate(ids), np.concatenate(cs)


def _encode_lists(sequences: Sequence[Sequence[str]], index: dict[str, int]):
    codes = np.fromiter((index.get(x, -1) for s in sequences for x in s), dtype=np.int64)
    offsets = np.r_[0, np.cumsum([len(s) for s in sequences], dtype=np.int64)].astype(np.int64)
    return codes, offsets


def mine_local(sequences: Sequence[Sequence[str]], minsup_count: int, max_length: int = 25,
               use_relations: bool = True, n_partitions: int = 1
               ) -> dict[tuple[str, ...], int]:
    """The distributed algorithm run in-process on lists (same passes, same driver logic).

    ``n_partitions`` splits the sequences into that many contiguous chunks, exercising the
    local-mining / verification scheme exactly as Spark partitions would.

    Examples
    --------
    >>> sorted(mine_local([["a", "b", "c"], ["x", "a", "b"], ["a", "b", "c"]], 2).items())
    [(('a', 'b'), 3), (('a', 'b', 'c'), 2), (('b', 'c'), 2)]
    """
    from soads.dependencies import relation_counts

    seqs = [list(s) for s in sequences]
    n = len(seqs)
    m = minsup_count
    chunks = [seqs[i * n // n_partitions:(i + 1) * n // n_partitions]
              for i in range(n_partitions)] if n else []
    if use_relations:
        rel = {p: sup for p, (_, sup) in relation_counts(seqs).items()}
        frequent_pairs = {p: s for p, s in rel.items() if s >= m}
        symbols = sorted({x for p in frequent_pairs for x in p})
    else:
        frequent_pairs = None
        symbols = sorted({x for s in seqs for x in s})
    index = {x: i for i, x in enumerate(symbols)}
    r = len(symbols)
    pairs_ok, level2 = _pairs(frequent_pairs, index, r)
    if r == 0 or max_length < 2:
        return {}
    min_len = 3 if use_relations else 2
    encoded = [_encode_lists(c, index) for c in chunks]
    found: dict[int, list[np.ndarray]] = {}
    if use_relations:
        found[2] = [level2]
    for codes, offsets in encoded:
        for mat in local_candidates(codes, offsets, r, max_length, pairs_ok, m, n, min_len):
            found.setdefault(mat.shape[1], []).append(mat)
    cands = levels_from_patterns({k: np.concatenate(v) for k, v in found.items()}, r)
    totals = {k: np.zeros(len(v), dtype=np.int64) for k, v in cands.key.items()}
    for codes, offsets in encoded:
        ls, ids, cs = verify_counts(codes, offsets, r, max_length, pairs_ok, cands, min_len)
        for k in np.unique(ls):
            sel = ls == k
            np.add.at(totals[int(k)], ids[sel], cs[sel])
    result = {}
    if use_relations:
        result.update(frequent_pairs)
    for k in sorted(totals):
        if k < min_len:
            continue
        mat = cands.matrix(k)
        for i in np.flatnonzero(totals[k] >= m):
            result[tuple(symbols[c] for c in mat[i])] = int(totals[k][i])
    return result


def _pairs(frequent_pairs, index, r):
    """(pairs_ok matrix or None, level-2 pattern matrix) from frequent relations."""
    if frequent_pairs is None:
        return None, np.zeros((0, 2), dtype=np.int64)
    ok = np.zeros((max(r, 1), max(r, 1)), dtype=bool)
    mat = np.array([[index[a], index[b]] for a, b in frequent_pairs], dtype=np.int64).reshape(-1, 2)
    if len(mat):
        ok[mat[:, 0], mat[:, 1]] = True
    return ok, mat


# ---------------------------------------------------------------------------------------------
# Spark: DataFrame -> DataFrame around the pure passes
# ---------------------------------------------------------------------------------------------

def pattern_struct():
    """Spark schema of mined patterns: pattern array<string>, support long, length int, maximal."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.PATTERN, T.ArrayType(T.StringType(), False), False),
        T.StructField(S.SUPPORT, T.LongType(), False),
        T.StructField(S.LENGTH, T.IntegerType(), False),
        T.StructField(S.MAXIMAL, T.BooleanType(), False),
    ])


def _pattern_bytes_struct():
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.PATTERN, T.BinaryType(), False),
        T.StructField(S.SUPPORT, T.LongType(), False),
    ])


def _encoded_partition(batches, symbols: list[str]):
    """Arrow batches of ``sequence`` -> (int64 codes, offsets) of the whole partition."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = [b.column(0) for b in batches if b.num_rows]
    if not lists:
        return None
    lst = pa.concat_arrays(lists) if len(lists) > 1 else lists[0]
    lengths = pc.fill_null(pc.list_value_length(lst), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lst)
    codes = pc.fill_null(pc.index_in(values, value_set=pa.array(symbols, pa.string())), -1)
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return codes, offsets


def _blob_struct():
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.N_SEQUENCES, T.LongType(), False),
        T.StructField(S.SEQUENCE, T.BinaryType(), False),
    ])


def _blob_batch(codes: np.ndarray, offsets: np.ndarray):
    """Encoded sequences -> one row ``n_sequences, sequence`` (int32: n, offsets, codes)."""
    import pyarrow as pa

    n = len(offsets) - 1
    blob = np.concatenate([[n], offsets, codes]).astype("<i4").tobytes()
    return pa.RecordBatch.from_arrays([pa.array([n], pa.int64()), pa.array([blob], pa.binary())],
                                      [S.N_SEQUENCES, S.SEQUENCE])


def _from_blobs(batches):
    """Arrow batches of blobs (one partition) -> (int64 codes, offsets) of the whole partition."""
    codes, offsets, base = [], [np.zeros(1, dtype=np.int64)], 0
    for batch in batches:
        for blob in batch.column(1).to_pylist():
            arr = np.frombuffer(blob, dtype="<i4").astype(np.int64)
            n = int(arr[0])
            off, c = arr[1:n + 2], arr[n + 2:]
            codes.append(c)
            offsets.append(off[1:] + base)
            base += len(c)
    if len(offsets) == 1:
        return None
    return np.concatenate(codes), np.concatenate(offsets)


def _patterns_batch(mats: list[np.ndarray], counts: list[np.ndarray]):
    """Pattern matrices (codes) and counts -> one arrow batch ``pattern binary, support long``."""
    import pyarrow as pa

    keys = [row.tobytes() for mat in mats for row in mat.astype("<i4")]
    cnt = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, pa.binary()), pa.array(cnt, pa.int64())], [S.PATTERN, S.SUPPORT])


def _decode(key: bytes) -> np.ndarray:
    return np.frombuffer(key, dtype="<i4").astype(np.int64)


def mine(spark, sequences, relations, minsup: float, max_length: int = 25,
         use_relations: bool = True):
    """Frequent contiguous patterns of the sequences (modified PrefixSpan, distributed).

    Parameters
    ----------
    spark : SparkSession
    sequences : DataFrame
        ``oid, sequence array<string>`` (one row per object).
    relations : DataFrame or None
        The RELATIONAL DEPENDENCY TABLE ``a, b, freq, support`` of the same sequences; required
        when ``use_relations`` (ignored otherwise).
    minsup : float
        A fraction of the objects in (0, 1], or a count (> 1); see :func:`minsup_count`.
    max_length : int
        Longest pattern mined.
    use_relations : bool
        False runs the "no-relations" baseline: length-2 patterns counted from the log and
        growth not restricted by the relation table (identical result).

    Returns
    -------
    tuple[DataFrame, dict]
        Patterns ``pattern array<string>, support long, length int, maximal boolean`` (one row
        per frequent pattern, ordered by length then pattern) and run information: algorithm,
        minsup_count, n_sequences, n_patterns, seconds, per-step seconds (``timings``), pattern
        counts per length (``per_length``) and number of verified candidates.
    """
    from pyspark.sql import functions as F

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name, t):
        timings[name] = round(time.perf_counter() - t, 4)
        return time.perf_counter()

    t = time.perf_counter()
    seq_col = sequences.select(S.SEQUENCE)
    # the dictionary of read points: from the relation table (paper Alg. 1: no log scan), or,
    # without relations, from a distinct over the log
    if use_relations:
        if relations is None:
            raise ValueError("use_relations=True needs the relation table")
        rel_rows = relations.select(S.A, S.B, S.SUPPORT).collect()
        symbols = sorted({r[S.A] for r in rel_rows} | {r[S.B] for r in rel_rows})
    else:
        rows = seq_col.select(F.explode(S.SEQUENCE).alias(S.READ_POINT)).distinct().collect()
        symbols = sorted(r[S.READ_POINT] for r in rows if r[S.READ_POINT] is not None)
    t = lap("relations" if use_relations else "dictionary", t)

    # encode once, cache the int codes (4 bytes per read point) for both passes; counting the
    # sequences materialises the cache
    def encode(batches):
        for batch in batches:
            enc = _encoded_partition([batch], symbols)
            if enc is not None:
                yield _blob_batch(*enc)

    encoded = seq_col.mapInArrow(encode, _blob_struct()).persist()
    # n_sequences, sequence (one row per arrow batch: its sequences as a binary blob of int32)
    n = sum(r[S.N_SEQUENCES] for r in encoded.select(S.N_SEQUENCES).collect())
    m = minsup_count(minsup, n)
    t = lap("encode_count", t)
    if use_relations:
        # paper Alg. 1, lines 2-4: length-2 patterns straight from the relation table
        frequent_pairs = {(r[S.A], r[S.B]): int(r[S.SUPPORT]) for r in rel_rows
                          if r[S.SUPPORT] >= m}
    else:
        frequent_pairs = None
    index = {x: i for i, x in enumerate(symbols)}
    r = len(symbols)
    pairs_ok, level2 = _pairs(frequent_pairs, index, r)
    min_len = 3 if use_relations else 2

    supports: dict[tuple[str, ...], int] = dict(frequent_pairs or {})
    n_candidates = 0
    if r and n and max_length >= (3 if use_relations else 2) and (level2.size or not use_relations):
        # pass 1: locally frequent patterns per partition (SON); only patterns reach the driver
        def pass1(batches):
            enc = _from_blobs(batches)
            if enc is None:
                return
            mats = local_candidates(enc[0], enc[1], r, max_length, pairs_ok, m, n, min_len)
            yield _patterns_batch(mats, [np.zeros(len(x), dtype=np.int64) for x in mats])

        cand_rows = encoded.mapInArrow(pass1, _pattern_bytes_struct()).select(S.PATTERN) \
            .distinct().collect()
        t = lap("pass1_local_mining", t)
        found: dict[int, list[np.ndarray]] = {2: [level2]} if use_relations else {}
        for row in cand_rows:
            p = _decode(row[S.PATTERN])
            found.setdefault(len(p), []).append(p[None, :])
        cands = levels_from_patterns({k: np.concatenate(v) for k, v in found.items()}, r)
        n_candidates = len(cand_rows)
        t = lap("candidates", t)

        # pass 2: exact support of every candidate, summed over partitions
        def pass2(batches):
            enc = _from_blobs(batches)
            if enc is None:
                return
            ls, ids, cs = verify_counts(enc[0], enc[1], r, max_length, pairs_ok, cands, min_len)
            mats = [cands.matrix(int(k))[ids[ls == k]] for k in np.unique(ls)]
            yield _patterns_batch(mats, [cs[ls == k] for k in np.unique(ls)])

        counted = encoded.mapInArrow(pass2, _pattern_bytes_struct()) \
            .groupBy(S.PATTERN).agg(F.sum(S.SUPPORT).alias(S.SUPPORT)) \
            .filter(F.col(S.SUPPORT) >= m).collect()
        # pattern (codes as bytes), support (one row per frequent pattern of length >= min_len)
        for row in counted:
            supports[tuple(symbols[c] for c in _decode(row[S.PATTERN]))] = int(row[S.SUPPORT])
        t = lap("pass2_verify", t)
    encoded.unpersist()
    if max_length < 2:
        supports = {}

    df = patterns_frame(spark, supports)
    lap("assemble", t)
    per_length: dict[int, int] = {}
    for p in supports:
        per_length[len(p)] = per_length.get(len(p), 0) + 1
    info = {
        "algorithm": "soads" if use_relations else "no-relations",
        "minsup": minsup,
        "minsup_count": m,
        "max_length": max_length,
        "n_sequences": n,
        "n_patterns": len(supports),
        "n_candidates": n_candidates,
        "per_length": dict(sorted(per_length.items())),
        "timings": timings,
        "seconds": round(time.perf_counter() - t_start, 4),
    }
    logger.info("mined %(n_patterns)d patterns (%(algorithm)s, minsup_count %(minsup_count)d, "
                "%(n_sequences)d sequences) in %(seconds).2f s", info)
    return df, info


def patterns_frame(spark, supports: dict[tuple[str, ...], int]):
    """Driver-side patterns (small) -> DataFrame ``pattern, support, length, maximal``."""
    import pyarrow as pa

    maximal = mark_maximal(supports)
    ordered = sorted(supports, key=lambda p: (len(p), p))
    table = pa.table({
        S.PATTERN: pa.array([list(p) for p in ordered], pa.list_(pa.string())),
        S.SUPPORT: pa.array([supports[p] for p in ordered], pa.int64()),
        S.LENGTH: pa.array([len(p) for p in ordered], pa.int32()),
        S.MAXIMAL: pa.array([maximal[p] for p in ordered], pa.bool_()),
    })
    return spark.createDataFrame(table, schema=pattern_struct())
