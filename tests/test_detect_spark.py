"""The context detector on Spark (soads.detect.spark) against the pure core on the same
sequences: the fitted rows, the verdicts, the closed rule and the anomaly rate."""
import datetime as dt
import json
import random
import subprocess
import sys
import textwrap

import pytest

from soads import dependencies, schema as S
from soads.config import DetectorConf
from soads.detect import context as C, runs
from soads.detect import spark as D

T0 = dt.datetime(2024, 3, 4, 8, 0, 0)
IDLE = 600.0
CONF = DetectorConf(max_context=2)


def random_objects(seed: int, n: int = 200, attributes: bool = True):
    """(oid, sequence, attributes or None, last_time): a small Markov chain of read points with
    attributes that depend on the read point, an event id per visit (nearly unique: left out)
    and last reads spread over two hours (the newest ones still open at the horizon)."""
    rng = random.Random(seed)
    rps = [f"r{i}" for i in range(6)]
    nxt = {r: rng.sample(rps, 3) for r in rps}
    out = []
    for i in range(n):
        seq = [rng.choice(rps[:2])]
        while len(seq) < rng.randint(1, 7):
            seq.append(rng.choice(nxt[seq[-1]]) if rng.random() > 0.05 else rng.choice(rps))
        attrs = None
        if attributes and rng.random() > 0.1:
            attrs = [{"step": f"s{int(r[1:]) % 3 if rng.random() > 0.03 else 9}",
                      "id": f"e{i}-{j}"} for j, r in enumerate(seq)]
            if rng.random() < 0.2:
                attrs[0].pop("step")
        out.append((f"o{i:04d}", seq, attrs, T0 + dt.timedelta(seconds=rng.randint(0, 7200))))
    return out


def frame(spark, objects, attributes: bool = True):
    if attributes:
        return spark.createDataFrame(
            objects, "oid string, sequence array<string>, attributes array<map<string,string>>, "
                     "last_time timestamp").repartition(3)
    return spark.createDataFrame(
        [(o, s, t) for o, s, _, t in objects],
        "oid string, sequence array<string>, last_time timestamp").repartition(3)


def us(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + t.microsecond


def core_cases(objects, attributes: bool = True):
    horizon = max(us(t) for *_, t in objects)
    return [(s, a if attributes else None, bool(runs.is_closed(us(t), horizon, IDLE)))
            for _, s, a, t in objects]


@pytest.mark.parametrize("attributes", [True, False])
def test_spark_fit_equals_the_core_fit(spark, attributes):
    objects = random_objects(1, attributes=attributes)
    df = frame(spark, objects, attributes)
    cases = core_cases(objects, attributes)
    assert 0 < sum(not c for _, _, c in cases) < len(cases)  # open and finished objects both
    want = C.ContextModel.fit(cases, CONF)
    got = D.fit(df, None, CONF, IDLE)
    assert got.skipped == want.skipped_ == (("id",) if attributes else ())
    assert got.rows == want.to_rows()
    assert got.n_objects == len(objects)
    assert got.horizon_us == max(us(t) for *_, t in objects)
    # the order-1 control rows between two read points taken from the relation table instead
    rel = dependencies.relation_table(df)
    with_rel = D.fit(df, rel, CONF, IDLE)
    assert with_rel.rows == want.to_rows()
    pairs = {((r[0],), r[1]): r[2] for r in rel.select(S.A, S.B, S.FREQ).collect()}
    order1 = {(c, v): n for f, o, c, v, n in with_rel.rows
              if f == "" and o == 1 and c[0] is not None and v is not None}
    assert order1 == pairs


def test_spark_verdicts_equal_the_core_verdicts(spark):
    fitted = random_objects(2, n=400)
    model = C.ContextModel.fit(core_cases(fitted), CONF)
    # scored: the fitting log and objects with a read point / an attribute value never seen
    objects = fitted + [("p1", ["zz"], None, T0),
                        ("p2", ["r1"], [{"step": "zz"}], T0 + dt.timedelta(seconds=7200))]
    df = frame(spark, objects)
    cases = core_cases(objects)
    horizon = max(us(t) for *_, t in objects)
    got = {r[S.OID]: r for r in D.score(df, model, "context-x", horizon, IDLE).collect()}
    want = C.score_cases(model, cases)
    assert len(got) == len(objects)
    flagged = 0
    for (oid, *_), v in zip(objects, want):
        r = got[oid]
        assert (r[S.ANOMALY], r[S.IS_ANOMALY], r[S.MODEL_RUN_ID]) == \
            (v.anomaly, v.is_anomaly, "context-x")
        assert (None if r[S.EXPLANATION] is None else json.loads(r[S.EXPLANATION])) == \
            v.explanation
        flagged += v.is_anomaly
    assert flagged > 0


def test_closed_rule_decides_which_end_steps_count(spark):
    # a path that ends early is an anomaly once the object is finished, not while it may move on
    normal = [(f"n{i}", ["a", "b", "c"], None, T0) for i in range(200)]
    early = ("x", ["a", "b"], None, T0 + dt.timedelta(seconds=100))
    model = C.ContextModel.fit([(s, None) for _, s, _, _ in normal])
    df = frame(spark, normal + [early], attributes=False)
    newest = us(T0) + 100_000_000
    for horizon, flagged in ((newest, False), (newest + int(IDLE * 1e6) + 1, True)):
        row = D.score(df.filter("oid = 'x'"), model, "m", horizon, IDLE).first()
        assert row[S.IS_ANOMALY] is flagged
    assert runs.is_closed(newest - int(IDLE * 1e6) - 1, newest, IDLE)
    assert not runs.is_closed(newest - int(IDLE * 1e6), newest, IDLE)


def test_anomaly_rate_on_a_small_log(spark):
    # two windows of an hour; objects flagged at the read point of their worst step only
    objs = [  # oid, sequence, last_time, is_anomaly, explanation
        ("o1", ["a", "b", "c"], T0 + dt.timedelta(minutes=10), False, None),
        ("o2", ["a", "b", "b"], T0 + dt.timedelta(minutes=20), True,
         {"step": 2, "read_point": "b", "kind": "control"}),
        ("o3", ["a", "c"], T0 + dt.timedelta(minutes=30), True,
         {"step": 2, "read_point": None, "kind": "end"}),  # charged to its last read point
        ("o4", ["a", "b", "c"], T0 + dt.timedelta(minutes=70), True,
         {"step": 0, "read_point": "a", "kind": "attribute"}),
    ]
    seqs = spark.createDataFrame([(o, s, t) for o, s, t, _, _ in objs],
                                 "oid string, sequence array<string>, last_time timestamp")
    verdicts = spark.createDataFrame(
        [(o, 1.0, f, None if e is None else json.dumps(e), "m") for o, _, _, f, e in objs],
        "oid string, anomaly double, is_anomaly boolean, explanation string, "
        "model_run_id string")
    got = {(r[S.WINDOW_START], r[S.READ_POINT]):
           (r[S.N_OBJECTS], r[S.FLAGGED], r[S.RATE], r[S.WINDOW_END], r[S.MODEL_RUN_ID])
           for r in D.anomaly_rate(seqs, verdicts, 3600).collect()}
    h0, h1 = T0, T0 + dt.timedelta(hours=1)
    assert got == {
        (h0, "a"): (3, 0, 0.0, h1, "m"), (h0, "b"): (2, 1, 0.5, h1, "m"),
        (h0, "c"): (2, 1, 0.5, h1, "m"),
        (h1, "a"): (1, 1, 1.0, h1 + dt.timedelta(hours=1), "m"),
        (h1, "b"): (1, 0, 0.0, h1 + dt.timedelta(hours=1), "m"),
        (h1, "c"): (1, 0, 0.0, h1 + dt.timedelta(hours=1), "m"),
    }
    oracle = runs.anomaly_rate(((s, us(t), f, e) for _, s, t, f, e in objs), 3600)
    assert {(dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=w), rp): v
            for (w, rp), v in oracle.items()} == {k: v[:2] for k, v in got.items()}


LOCAL_CLUSTER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from soads.config import SparkConf
    from soads.session import build
    from soads.detect import context as C, spark as D
    import test_detect_spark as t

    spark = build(SparkConf(master="local-cluster[2,1,1024]", shuffle_partitions=4,
                            driver_memory="1g"))
    objects = t.random_objects(5)
    df = t.frame(spark, objects).repartition(4)
    want = C.ContextModel.fit(t.core_cases(objects), t.CONF)
    got = D.fit(df, None, t.CONF, t.IDLE)
    print("rows", got.rows == want.to_rows(), len(got.rows) > 50)
    spark.stop()
""")


@pytest.mark.slow
def test_local_cluster_fit_equals_the_core(tmp_path):
    import os

    import streamtools as st

    script = tmp_path / "local_cluster.py"
    script.write_text(LOCAL_CLUSTER.format(tests=os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=st.job_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("rows")] == ["rows True True"]
