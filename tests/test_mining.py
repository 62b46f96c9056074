"""Frequent Subsequence Miner: the distributed miner equals brute force (DESIGN.md "Pattern")."""
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from soads import schema as S
from soads.mining import mine_patterns
from soads.mining.baselines import mine_mllib, mllib_min_support
from soads.mining.brute_force import frequent_patterns, mark_maximal, minsup_count
from soads.mining.contiguous import grow, local_threshold, mine, mine_local

ROOT = os.path.join(os.path.dirname(__file__), "..")


def random_log(rng: random.Random):
    alphabet = [f"rp{i}" for i in range(rng.randint(2, 6))]
    n = rng.randint(0, 20)
    return [[rng.choice(alphabet) for _ in range(rng.randint(0, 12))] for _ in range(n)]


def random_minsup(rng: random.Random):
    return rng.choice([rng.choice([0.05, 0.1, 0.2, 0.3, 0.5, 1.0]), rng.randint(2, 5)])


def seq_frame(spark, seqs, partitions=2):
    rows = [(f"o{i}", list(s)) for i, s in enumerate(seqs)]
    df = spark.createDataFrame(rows, "oid string, sequence array<string>")
    return df.repartition(partitions) if rows else df


def as_dict(df):
    rows = df.collect()
    return ({tuple(r[S.PATTERN]): r[S.SUPPORT] for r in rows},
            {tuple(r[S.PATTERN]): r[S.MAXIMAL] for r in rows},
            {tuple(r[S.PATTERN]): r[S.LENGTH] for r in rows})


def maximal_by_definition(patterns) -> dict[tuple, bool]:
    """The test's own maximality oracle, independent of the miner's ``mark_maximal`` (which the
    miner imports): a mined pattern is maximal when no other mined pattern contains it as a
    contiguous run. It scans every pair; the miner's rule looks only at one-item extensions
    (the same thing on a downward-closed set of contiguous patterns)."""
    def inside(p, q):
        return len(q) > len(p) and any(q[i:i + len(p)] == p for i in range(len(q) - len(p) + 1))

    return {p: not any(inside(tuple(p), tuple(q)) for q in patterns) for p in patterns}


# -- minsup and the oracle -----------------------------------------------------------------


def test_minsup_count():
    assert minsup_count(0.5, 5) == 3
    assert minsup_count(1.0, 4) == 4
    assert minsup_count(0.1, 30) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert minsup_count(0.01, 55_000) == 550
    assert minsup_count(3, 100) == 3
    assert minsup_count(0.2, 0) == 1
    for bad in (0, -0.5, -3):
        with pytest.raises(ValueError):
            minsup_count(bad, 10)


def test_brute_force_counts_once_per_sequence():
    seqs = [["a", "b", "a", "b", "a"], ["a", "b"], ["b", "a"]]
    assert frequent_patterns(seqs, 2) == {("a", "b"): 2, ("b", "a"): 2}
    assert frequent_patterns(seqs, 1, max_length=3) == {
        ("a", "b"): 2, ("b", "a"): 2, ("a", "b", "a"): 1, ("b", "a", "b"): 1}


def test_mark_maximal_hand_example():
    # [a b c d] [a b c] [b c d] [x a b], minsup 2
    seqs = [list("abcd"), list("abc"), list("bcd"), list("xab")]
    pats = frequent_patterns(seqs, 2)
    assert pats == {("a", "b"): 3, ("b", "c"): 3, ("c", "d"): 2, ("a", "b", "c"): 2,
                    ("b", "c", "d"): 2}
    hand = {("a", "b"): False, ("b", "c"): False, ("c", "d"): False, ("a", "b", "c"): True,
            ("b", "c", "d"): True}
    assert maximal_by_definition(pats) == hand
    assert mark_maximal(pats) == hand
    # with max_length 2 nothing longer was mined: every pair is maximal in the mined set
    assert all(mark_maximal(frequent_patterns(seqs, 2, max_length=2)).values())


# -- pure core: 600 seeded random logs through the same passes Spark runs ---------------------


def test_grow_projected_database():
    # sequences [0 1 2 0 1] and [0 1 2]; (1, 2) is not a frequent relation here
    codes, offsets = np.array([0, 1, 2, 0, 1, 0, 1, 2]), np.array([0, 5, 8])
    ok = np.ones((3, 3), dtype=bool)
    ok[1, 2] = False
    lv = grow(codes, offsets, 3, 10, pairs_ok=ok, min_count=1)
    got = {tuple(p): int(c) for k in lv.key for p, c in zip(lv.matrix(k).tolist(), lv.count[k])}
    assert got == {(0, 1): 2, (2, 0): 1, (2, 0, 1): 1}  # nothing grows through (1, 2)


def test_local_threshold_guarantees_a_frequent_partition():
    # support m split over partitions: some partition reaches its local threshold
    rng = random.Random(5)
    for _ in range(500):
        sizes = [rng.randint(0, 30) for _ in range(rng.randint(1, 5))]
        n = sum(sizes)
        if n == 0:
            continue
        m = rng.randint(1, n)
        sup = [rng.randint(0, s) for s in sizes]
        if sum(sup) >= m:
            assert any(sp >= local_threshold(m, s, n) for sp, s in zip(sup, sizes) if s)


def test_pure_passes_equal_brute_force_on_random_logs():
    rng = random.Random(20261121)
    n_checked = 0
    for _ in range(300):
        seqs = random_log(rng)
        m = minsup_count(random_minsup(rng), len(seqs))
        max_length = rng.choice([2, 3, 4, 25])
        expected = frequent_patterns(seqs, m, max_length)
        for use_relations, parts in ((True, rng.randint(1, 4)), (False, rng.randint(1, 4))):
            assert mine_local(seqs, m, max_length, use_relations, parts) == expected, \
                (seqs, m, max_length, use_relations, parts)
            n_checked += 1
    assert n_checked == 600


def test_mark_maximal_equals_the_definition_on_random_logs():
    rng = random.Random(11)
    n_non_maximal = 0
    for _ in range(300):
        seqs = random_log(rng)
        pats = frequent_patterns(seqs, minsup_count(random_minsup(rng), len(seqs)),
                                 rng.choice([2, 3, 4, 25]))
        assert mark_maximal(pats) == maximal_by_definition(pats), (seqs, pats)
        n_non_maximal += sum(not v for v in maximal_by_definition(pats).values())
    assert n_non_maximal > 100  # the logs exercise both answers


# -- Spark ------------------------------------------------------------------------------------


def test_spark_miner_equals_brute_force(spark):
    from soads.dependencies import relation_table

    rng = random.Random(7)
    for i in range(8):
        seqs = random_log(rng)
        minsup = random_minsup(rng)
        max_length = rng.choice([3, 25])
        df = seq_frame(spark, seqs, partitions=1 + i % 3)
        m = minsup_count(minsup, len(seqs))
        expected = frequent_patterns(seqs, m, max_length)
        got_soads, info = mine(spark, df, relation_table(df), minsup, max_length)
        got_plain, info_plain = mine(spark, df, None, minsup, max_length, use_relations=False)
        support, maximal, length = as_dict(got_soads)
        assert support == expected, (seqs, minsup, max_length)
        assert maximal == maximal_by_definition(expected)
        assert all(length[p] == len(p) for p in length)
        assert as_dict(got_plain) == (support, maximal, length)
        assert info["minsup_count"] == info_plain["minsup_count"] == m
        assert info["n_sequences"] == len(seqs) and info["n_patterns"] == len(expected)
        assert info["algorithm"] == "soads" and info_plain["algorithm"] == "no-relations"


def test_spark_edge_cases(spark):
    cases = [
        ([], 1, {}),                                          # empty input
        ([["a", "b", "c"]], 1.0, {("a", "b"): 1, ("b", "c"): 1, ("a", "b", "c"): 1}),  # one object
        ([list("abc"), list("abd")], 3, {}),                  # minsup above every support
        ([list("abab"), list("ab"), list("ba")], 2,           # repeats count once per sequence
         {("a", "b"): 2, ("b", "a"): 2}),
        ([[], ["a"], ["a", "b"], ["a", "b"]], 0.5, {("a", "b"): 2}),  # lengths 0 and 1
    ]
    for seqs, minsup, expected in cases:
        df = seq_frame(spark, seqs)
        for algorithm in ("soads", "no-relations"):
            patterns, info = mine_patterns(spark, df, None, minsup, algorithm=algorithm)
            assert patterns.columns == [S.PATTERN, S.SUPPORT, S.LENGTH, S.MAXIMAL]
            assert as_dict(patterns)[0] == expected, (seqs, algorithm)
            assert info["n_patterns"] == len(expected)


def test_maximal_flags_exact(spark):
    df = seq_frame(spark, [list("abcd"), list("abc"), list("bcd"), list("xab")])
    patterns, _ = mine_patterns(spark, df, None, 2)
    rows = [(r[S.PATTERN], r[S.SUPPORT], r[S.LENGTH], r[S.MAXIMAL]) for r in patterns.collect()]
    assert rows == [
        (["a", "b"], 3, 2, False), (["b", "c"], 3, 2, False), (["c", "d"], 2, 2, False),
        (["a", "b", "c"], 2, 3, True), (["b", "c", "d"], 2, 3, True),
    ]


def test_soads_uses_the_relation_table(spark):
    # the length-2 patterns come from the given table, not from the log (paper Alg. 1, line 3)
    df = seq_frame(spark, [list("abc"), list("abc")])
    fake = spark.createDataFrame([("a", "b", 9, 9)], "a string, b string, freq long, support long")
    patterns, info = mine(spark, df, fake, 2)
    assert as_dict(patterns)[0] == {("a", "b"): 9}
    assert "relations" in info["timings"]


def test_mllib_baseline_exact(spark):
    # gapped patterns: [a x b c] contains a..b, a..c and a..b..c
    seqs = [list("abc"), list("axbc"), list("ac")]
    df = seq_frame(spark, seqs)
    patterns, info = mine_mllib(spark, df, 2, 25)
    assert as_dict(patterns)[0:2] == (
        {("a", "b"): 2, ("a", "c"): 3, ("b", "c"): 2, ("a", "b", "c"): 2},
        {("a", "b"): False, ("a", "c"): True, ("b", "c"): False, ("a", "b", "c"): True},
    )
    assert info["minsup_count"] == 2 and info["n_patterns"] == 4
    assert info["min_support"] == mllib_min_support(2, 3)
    # the contiguous miner on the same log: only b c is a frequent contiguous run
    assert as_dict(mine_patterns(spark, df, None, 2)[0])[0] == {("b", "c"): 2}
    patterns.unpersist()


def test_mllib_min_support_rounds_to_the_count():
    import math

    for n in (1, 2, 3, 7, 55_000, 494_000):
        for m in {1, 2, n // 3 + 1, n}:
            assert math.ceil(mllib_min_support(m, n) * n) == m


def test_mine_patterns_dispatch(spark):
    df = seq_frame(spark, [list("ab"), list("ab")])
    for algorithm in ("soads", "no-relations", "mllib"):
        patterns, info = mine_patterns(spark, df, None, 1.0, algorithm=algorithm)
        assert as_dict(patterns)[0] == {("a", "b"): 2}
        assert info["algorithm"] == algorithm
    with pytest.raises(ValueError):
        mine_patterns(spark, df, None, 1.0, algorithm="apriori")


LOCAL_CLUSTER = textwrap.dedent("""
    import random
    from soads.config import SparkConf
    from soads.session import build
    from soads.mining import mine_patterns
    from soads.mining.brute_force import frequent_patterns, minsup_count
    from soads import schema as S

    spark = build(SparkConf(master="local-cluster[2,1,1024]", shuffle_partitions=4,
                            driver_memory="1g"))
    rng = random.Random(11)
    seqs = [[rng.choice("abcde") for _ in range(rng.randint(0, 10))] for _ in range(300)]
    df = spark.createDataFrame([(str(i), s) for i, s in enumerate(seqs)],
                               "oid string, sequence array<string>").repartition(4)
    expected = frequent_patterns(seqs, minsup_count(0.05, len(seqs)), 25)
    for algorithm in ("soads", "no-relations"):
        patterns, info = mine_patterns(spark, df, None, 0.05, algorithm=algorithm)
        got = {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in patterns.collect()}
        print(algorithm, got == expected, len(got), len(expected) > 10)
    spark.stop()
""")


@pytest.mark.slow
def test_local_cluster_mode(tmp_path):
    import streamtools as st

    env = st.job_env()
    script = tmp_path / "local_cluster.py"
    script.write_text(LOCAL_CLUSTER)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("soads", "no-relations"))]
    assert [ln.split()[:2] for ln in lines] == [["soads", "True"], ["no-relations", "True"]]
    assert all(ln.endswith("True") for ln in lines)
