import math

from soads import schema as S
from soads.conformance import surprisal, surprisal_scores, transition_model


def test_surprisal_is_the_rarest_transition():
    freq, out = transition_model([("A", "B", 90), ("A", "C", 10), ("B", "C", 100)])
    assert surprisal(["A", "B", "C"], freq, out) == -math.log(90.5 / 101)
    assert surprisal(["A", "C"], freq, out) == -math.log(10.5 / 101)
    # a read point never seen: P = 0.5 / 1
    assert surprisal(["Z", "A"], freq, out) == -math.log(0.5)
    assert surprisal([], freq, out) == 0.0


def test_surprisal_scores_spark_equals_core(spark):
    rows = [("A", "B", 90), ("A", "C", 10), ("B", "C", 100)]
    seqs = spark.createDataFrame([("o1", ["A", "B", "C"]), ("o2", ["A", "C"]), ("o3", ["B"])],
                                 "oid string, sequence array<string>")
    got = {r[S.OID]: r[S.SURPRISAL] for r in surprisal_scores(seqs, rows).collect()}
    freq, out = transition_model(rows)
    assert got == {"o1": surprisal(["A", "B", "C"], freq, out),
                   "o2": surprisal(["A", "C"], freq, out), "o3": 0.0}
