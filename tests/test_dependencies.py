import random

from soads import schema as S
from soads.dependencies import LastRead, advance, relation_counts, relation_table, relations


def test_relations_counts_every_directly_follows_pair():
    assert relations(["A", "C", "A", "C"]) == {("A", "C"): 2, ("C", "A"): 1}
    assert relations(["A"]) == {}
    assert relations([]) == {}


def test_relation_table_freq_and_support_exact(spark):
    seqs = spark.createDataFrame(
        [("o1", ["A", "B", "A", "B"]), ("o2", ["A", "B", "C"]), ("o3", ["C"]), ("o4", [])],
        "oid string, sequence array<string>")
    got = sorted(tuple(r) for r in relation_table(seqs).select(S.A, S.B, S.FREQ, S.SUPPORT).collect())
    assert got == [("A", "B", 3, 2), ("B", "A", 1, 1), ("B", "C", 1, 1)]


def test_relation_table_equals_oracle_on_random_sequences(spark):
    rng = random.Random(11)
    seqs = [(f"o{i}", [rng.choice("ABCDE") for _ in range(rng.randint(0, 15))]) for i in range(300)]
    df = spark.createDataFrame(seqs, "oid string, sequence array<string>")
    got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT]) for r in relation_table(df).collect()}
    assert got == relation_counts([s for _, s in seqs])


def test_advance_is_the_paper_hash_map_step():
    # paper Fig. 10: OID1 at A (T1), then C (T2) -> relation (A, C)
    state, rel = advance(None, [("A", 1_000_000)], 60)
    assert rel == [] and state == LastRead("A", 1_000_000)
    state, rel = advance(state, [("C", 2_000_000)], 60)
    assert rel == [("A", "C")] and state.read_point == "C"
    # a repeated read within the dwell window is the same visit
    state, rel = advance(state, [("C", 30_000_000)], 60)
    assert rel == [] and state.time_us == 30_000_000
    # ...but after the window it is a new visit
    state, rel = advance(state, [("C", 200_000_000)], 60)
    assert rel == [("C", "C")]


def test_advance_over_a_sequence_gives_its_relations():
    rng = random.Random(5)
    from soads.sequences import dedup_dwell
    for _ in range(100):
        n = rng.randint(0, 20)
        rps = [rng.choice("ABC") for _ in range(n)]
        times = sorted(rng.randint(0, 1000) for _ in range(n))
        state, rel = None, []
        for rp, tm in zip(rps, times):  # one read per micro-batch
            state, out = advance(state, [(rp, tm * 1_000_000)], 60)
            rel += out
        seq = dedup_dwell(rps, times, 60)
        assert rel == list(zip(seq, seq[1:]))
