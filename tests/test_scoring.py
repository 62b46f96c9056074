"""Anomaly Evaluator: the fast scorer must equal Biopython; exact values on tiny inputs."""
import datetime as dt
import random

import numpy as np
import pytest

from soads import schema as S
from soads.config import ScoringConf
from soads.scoring import (
    biopython_score,
    score_batch,
    score_one,
    score_sequences,
    window_scores,
)

DEFAULT = ScoringConf()  # match 2, mismatch -1, gap_open -2, gap_extend -1
PARAMS = [
    DEFAULT,
    ScoringConf(match=1.0, mismatch=-1.0, gap_open=-1.0, gap_extend=-1.0),
    ScoringConf(match=3.0, mismatch=-2.0, gap_open=-1.0, gap_extend=-2.0),  # open > extend
    ScoringConf(match=1.0, mismatch=0.0, gap_open=0.0, gap_extend=0.0),
    ScoringConf(match=1.5, mismatch=-0.75, gap_open=-1.25, gap_extend=-0.5),  # non-integer
    ScoringConf(match=0.3, mismatch=-0.7, gap_open=-1.1, gap_extend=-0.2),  # not even dyadic
    # mismatch above match: SW(s, s) is no longer match * len(s), the kernel computes it
    ScoringConf(match=1.0, mismatch=2.0, gap_open=-1.0, gap_extend=0.0),
]


def _fast(seqs, pats, params):
    scores, raws, best = score_batch(seqs, pats, params)
    return [(float(a), float(r), tuple(pats[k]) if k >= 0 else None)
            for a, r, k in zip(scores, raws, best)]


# -- exact values by hand --------------------------------------------------------------------


def test_exact_hand_computed_values():
    pats = [["a", "b", "c", "d"], ["x", "y"]]
    cases = [
        (["a", "b", "c", "d"], (1.0, 8.0, ("a", "b", "c", "d"))),  # s == p
        # one extra step: ab (4) + gap (-2) + cd (4) = 6; / max(SW(s,s)=10, SW(p,p)=8)
        (["a", "b", "z", "c", "d"], (0.6, 6.0, ("a", "b", "c", "d"))),
        # one missing step: ab (4) + gap (-2) + d (2) = 4 < abc... best is "ab" or "cd" = 4 / 8
        (["a", "b", "d"], (0.5, 4.0, ("a", "b", "c", "d"))),
        (["q", "r", "s"], (0.0, 0.0, ("a", "b", "c", "d"))),  # shares nothing: ties -> first
        (["x", "y"], (1.0, 4.0, ("x", "y"))),
        ([], (0.0, 0.0, None)),
    ]
    for seq, expected in cases:
        assert score_one(seq, pats, DEFAULT) == expected, seq
    assert _fast([c[0] for c in cases], pats, DEFAULT) == [c[1] for c in cases]


def test_no_patterns_and_no_sequences():
    assert score_one(["a"], [], DEFAULT) == (0.0, 0.0, None)
    assert _fast([["a"], []], [], DEFAULT) == [(0.0, 0.0, None), (0.0, 0.0, None)]
    scores, raws, best = score_batch([], [["a"]], DEFAULT)
    assert scores.shape == raws.shape == best.shape == (0,)


def test_empty_pattern_scores_zero():
    pats = [[], ["a"]]
    seqs = [["a"], ["b"]]
    assert _fast(seqs, pats, DEFAULT) == [score_one(s, pats, DEFAULT) for s in seqs] == [
        (1.0, 2.0, ("a",)), (0.0, 0.0, ()),
    ]


def test_biopython_gap_scores_are_set_explicitly():
    # Biopython >= 1.86 changed the default gaps; ours: open -2 then extend -1 per extra step
    assert biopython_score(list("abcd"), list("abxxcd"), DEFAULT) == 5.0  # 4 - 3 + 4
    assert biopython_score(list("abcd"), list("abxcd"), DEFAULT) == 6.0  # 4 - 2 + 4
    assert biopython_score(list("abc"), [], DEFAULT) == 0.0


def test_unknown_symbols_share_one_code_without_changing_scores():
    # read points outside every pattern can only mismatch: one shared code is enough
    pats = [["a", "b", "c"]]
    seqs = [["u", "a", "b", "v", "c", "w"], ["u", "v", "w"], ["u", "u", "a"]]
    assert _fast(seqs, pats, DEFAULT) == [score_one(s, pats, DEFAULT) for s in seqs]


def test_positive_gap_scores_are_refused():
    with pytest.raises(ValueError, match="gap scores"):
        score_batch([["a"]], [["a"]], ScoringConf(gap_open=1.0))


# -- oracle: Biopython -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", PARAMS, ids=lambda p: f"{p.match}/{p.mismatch}/{p.gap_open}/{p.gap_extend}"
)
def test_fast_scorer_equals_biopython(params):
    rng = random.Random(11)
    n_checked = 0
    for _ in range(12):
        k = rng.randint(1, 9)
        alphabet = [f"urn:epc:id:sgln:0614141.{i:05d}.0" for i in range(k)]
        outside = ["urn:epc:id:sgln:9.1.0", "urn:epc:id:sgln:9.2.0"]
        pats = [[rng.choice(alphabet) for _ in range(rng.randint(1, 25))]
                for _ in range(rng.randint(1, 6))]
        seqs = [[rng.choice(alphabet + outside) for _ in range(rng.randint(0, 25))]
                for _ in range(60)]
        seqs += [list(pats[0]), pats[-1][1:], []]  # exact pattern, a missing step, empty
        assert _fast(seqs, pats, params) == [score_one(s, pats, params) for s in seqs]
        n_checked += len(seqs) * len(pats)
    assert n_checked > 2000


def test_fast_scorer_equals_biopython_on_long_sequences():
    # lengths that need int32 cells and several chunks of different lengths
    rng = random.Random(3)
    alphabet = list("abcdef")
    pats = [[rng.choice(alphabet) for _ in range(rng.randint(30, 120))] for _ in range(3)]
    seqs = [[rng.choice(alphabet + ["z"]) for _ in range(rng.randint(0, 400))] for _ in range(40)]
    params = ScoringConf(match=200.0, mismatch=-100.0, gap_open=-150.0, gap_extend=-50.0)
    assert _fast(seqs, pats, params) == [score_one(s, pats, params) for s in seqs]


def test_fast_scorer_at_the_edge_of_int8_cells():
    # int8 holds the default scores up to about 40 x 40 cells: exact copies reach the top score,
    # gap-heavy variants the bottom; lengths step across the switch to int16
    rng = random.Random(5)
    alphabet = [f"rp{i}" for i in range(6)]
    for length in range(36, 46):
        pats = [[rng.choice(alphabet) for _ in range(length)]]
        p = pats[0]
        seqs = [list(p), p[: length // 2] + ["zz"] * 7 + p[length // 2:], p[::2], p[1:-1] + p[:3],
                [rng.choice(alphabet) for _ in range(length)]]
        assert _fast(seqs, pats, DEFAULT) == [score_one(s, pats, DEFAULT) for s in seqs], length


# -- Spark ----------------------------------------------------------------------------------


def test_score_sequences(spark):
    pats = [["a", "b", "c", "d"], ["x", "y"]]
    t = dt.datetime(2024, 5, 1, 10, 30)
    rows = [("o1", ["a", "b", "c", "d"], t), ("o2", ["a", "b", "z", "c", "d"], t),
            ("o3", [], None), ("o4", ["x", "y"], t)]
    seqs = spark.createDataFrame(
        rows, f"{S.OID} string, {S.SEQUENCE} array<string>, {S.LAST_TIME} timestamp"
    )
    out = score_sequences(seqs, pats, DEFAULT)
    assert out.columns == [S.OID, S.SCORE, S.RAW, S.PATTERN, S.LAST_TIME]
    got = sorted(tuple(r) for r in out.collect())
    assert got == [
        ("o1", 1.0, 8.0, ["a", "b", "c", "d"], t),
        ("o2", 0.6, 6.0, ["a", "b", "c", "d"], t),
        ("o3", 0.0, 0.0, None, None),
        ("o4", 1.0, 4.0, ["x", "y"], t),
    ]


def test_score_sequences_without_last_time(spark):
    seqs = spark.createDataFrame([("o1", ["a"])], f"{S.OID} string, {S.SEQUENCE} array<string>")
    got = [tuple(r) for r in score_sequences(seqs, [["a"]], DEFAULT).collect()]
    assert got == [("o1", 1.0, 2.0, ["a"], None)]


def test_window_scores(spark):
    from pyspark.testing import assertDataFrameEqual

    def t(h, m):
        return dt.datetime(2024, 5, 1, h, m)

    scores = spark.createDataFrame(
        [("o1", 1.0, t(10, 0)), ("o2", 0.5, t(10, 59)), ("o3", 0.2, t(11, 0)), ("o4", 0.9, None)],
        f"{S.OID} string, {S.SCORE} double, {S.LAST_TIME} timestamp",
    )
    out = window_scores(scores, 3600)
    assert out.columns == [S.WINDOW_START, S.WINDOW_END, S.MEAN_SCORE, S.N_OBJECTS]
    expected = spark.createDataFrame(
        [(t(10, 0), t(11, 0), 0.75, 2), (t(11, 0), t(12, 0), 0.2, 1)],
        f"{S.WINDOW_START} timestamp, {S.WINDOW_END} timestamp, {S.MEAN_SCORE} double, "
        f"{S.N_OBJECTS} long",
    )
    assertDataFrameEqual(out, expected)


@pytest.mark.parametrize("params", PARAMS)
def test_trie_kernel_equals_per_pattern_kernel(params):
    """Shared prefixes (PrefixSpan's prefix-closed runs), duplicates, one-symbol patterns,
    sequences with unknown symbols and empty ones: both kernels give identical arrays."""
    rnd = random.Random(17)
    for _ in range(25):
        alpha = "ABCDEFG"[:rnd.randrange(2, 8)]
        pats = [[rnd.choice(alpha) for _ in range(rnd.randrange(1, 9))]
                for _ in range(rnd.randrange(1, 30))]
        if rnd.random() < 0.5:
            pats += [p[:k] for p in pats for k in range(1, len(p))]
        seqs = [[rnd.choice(alpha + "XY") for _ in range(rnd.randrange(0, 16))]
                for _ in range(rnd.randrange(1, 50))]
        fast = score_batch(seqs, pats, params, trie=True)
        plain = score_batch(seqs, pats, params, trie=False)
        for a, b in zip(fast, plain):
            np.testing.assert_array_equal(a, b)
