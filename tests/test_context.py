"""The context detector's pure core against its slow, obvious oracle and on small logs whose
right answer is known (soads.detect.context)."""
import math
import random

import pytest

from soads.detect import context as C


def random_log(rng: random.Random, n_cases: int, n_rp: int, n_attr_vals: int):
    """Cases drawn from a small random Markov chain with attributes that depend on the read
    point, plus a few random cases (the anomalies), plus open ones."""
    rps = [f"r{i}" for i in range(n_rp)]
    nxt = {r: rng.sample(rps, k=min(3, n_rp)) for r in rps}
    cases = []
    for c in range(n_cases):
        seq = [rng.choice(rps[:2])]
        while len(seq) < rng.randint(1, 9):
            seq.append(rng.choice(nxt[seq[-1]]) if rng.random() > 0.05 else rng.choice(rps))
        attrs = [{"d": f"v{(int(r[1:]) + (rng.random() < 0.03)) % n_attr_vals}",
                  "id": f"e{c}-{i}"} for i, r in enumerate(seq)]
        if rng.random() < 0.2:
            for a in attrs:
                a.pop("d")
        cases.append((seq, attrs if rng.random() > 0.1 else None, rng.random() > 0.2))
    return cases


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_slow_oracle(seed):
    rng = random.Random(seed)
    conf = C.DetectorConf(max_context=rng.choice([1, 2, 3]), attribute_context=rng.choice([1, 2]),
                          threshold=rng.choice([2.0, 3.0, math.log(100)]))
    eps = [0.0, 0.05][seed % 2]
    log = random_log(rng, 300, rng.choice([3, 6, 12]), 4)
    model = C.ContextModel.fit(log, conf, missed_read_rate=eps)
    assert model.skipped_ == ("id",)  # one value per event: no evidence
    rows = model.to_rows()
    probe = random_log(random.Random(seed + 100), 80, 14, 5)  # unseen read points and values too
    probe += [([], None, True), ([], None, False), (["zz"], [{"d": "v0"}], True)]
    verdicts = C.score_cases(model, probe)
    for (seq, attrs, closed), v in zip(probe, verdicts):
        want, at = C.slow_score(rows, seq, attrs, closed, conf, skipped=model.skipped_,
                                missed_read_rate=eps)
        assert v.anomaly == pytest.approx(want, abs=1e-9)
        assert v.is_anomaly == (want >= conf.threshold)
        if at is None:
            assert v.explanation is None
        else:
            e = v.explanation
            assert (e["step"], e["attribute"]) == at or v.anomaly == pytest.approx(want)
            assert e["kind"] == (C.KIND_ATTRIBUTE if e["attribute"] else
                                 C.KIND_END if e["step"] == len(seq) else C.KIND_CONTROL)


@pytest.mark.parametrize("seed", range(4))
def test_count_rows_equals_the_slow_count(seed):
    rng = random.Random(seed)
    conf = C.DetectorConf(max_context=rng.choice([1, 2, 3]), attribute_context=rng.choice([1, 2]))
    log = random_log(rng, 250, rng.choice([3, 8]), 4) + [([], None, True), ([], [], False)]
    fast, fast_skipped = C.count_rows(log, conf)
    slow, slow_skipped = C.count_rows_slow(log, conf)
    assert fast_skipped == slow_skipped == ("id",)
    assert sorted(fast, key=C._row_key) == sorted(slow, key=C._row_key)


def test_rows_of_partitions_add_up_to_the_whole():
    rng = random.Random(3)
    log = random_log(rng, 200, 6, 3)
    whole_rows, skipped = C.count_rows(log)
    assert skipped == ("id",)
    whole = sorted(whole_rows, key=C._row_key)
    summed: dict = {}
    for part in (log[:70], log[70:150], log[150:]):
        for f, o, c, v, n in C.count_rows(part, skipped=skipped)[0]:
            summed[(f, o, c, v)] = summed.get((f, o, c, v), 0) + n
    assert sorted(summed.items(), key=lambda kv: C._row_key(kv[0] + (0,))) == \
        [((f, o, c, v), n) for f, o, c, v, n in whole]
    a = C.ContextModel.fit(log)
    b = C.ContextModel.from_rows(a.to_rows())
    probe = random_log(random.Random(9), 50, 8, 4)
    assert [v.anomaly for v in C.score_cases(a, probe)] == [v.anomaly for v in C.score_cases(b, probe)]


def test_known_answers():
    normal = [(["a", "b", "c"], [{"disp": "active"}, {"disp": "active"}, {"disp": "done"}])] * 400
    branchy = [([x, "c"], None) for x in "defghijklm"] * 40  # ten equally normal starts
    model = C.ContextModel.fit(normal + branchy)
    ok = model.score(["a", "b", "c"], [{"disp": "active"}, {"disp": "active"}, {"disp": "done"}])
    assert (ok.anomaly, ok.is_anomaly, ok.explanation) == (0.0, False, None)
    # many normal values in a context: none of them is anomalous
    assert all(not model.score([x, "c"]).is_anomaly for x in "defghijklm")
    swapped = model.score(["a", "c", "b"])
    # c after a is unseen (p = 1/401), but b after c, where every object ends, is worse (1/801)
    assert swapped.is_anomaly
    assert {k: swapped.explanation[k] for k in ("step", "read_point", "expected", "context")} == \
        {"step": 2, "read_point": "b", "expected": "<end>", "context": ["c"]}
    assert swapped.explanation["probability"] == pytest.approx(1 / 801)
    wrong = model.score(["a", "b", "c"], [{"disp": "active"}, {"disp": "done"}, {"disp": "done"}])
    assert wrong.is_anomaly
    e = wrong.explanation
    assert (e["step"], e["kind"], e["attribute"], e["value"], e["expected"]) == \
        (1, "attribute", "disp", "done", "active")
    assert e["probability"] == pytest.approx(1 / 401)
    # an open object is not blamed for ending early; a closed one is
    assert not model.score(["a", "b"], closed=False).is_anomaly
    end = model.score(["a", "b"], closed=True)
    assert end.is_anomaly and end.explanation["kind"] == "end" and end.explanation["step"] == 2
    unknown = model.score(["a", "x", "c"])
    assert unknown.is_anomaly and unknown.explanation["read_point"] == "x"
    assert unknown.explanation["probability"] == pytest.approx(1 / 401)


def test_bad_input_is_a_clear_error():
    model = C.ContextModel.fit([(["a", "b"], None)] * 20)
    with pytest.raises(ValueError, match="one per step"):
        model.score(["a", "b"], [{"d": "x"}])
    with pytest.raises(ValueError, match="list of read points"):
        model.score("ab")
