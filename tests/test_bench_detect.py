"""`soads bench detect` on a small labelled log written by the simulator (the real logs are a
download: docs/detection.md)."""
import gzip
import json
import subprocess
import sys

import pytest

from soads.simulator.generate import iter_cases


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """One labelled log in the --input format: 3,000 simulated cells with process and attribute
    anomalies; NAME.jsonl.gz beside NAME.truth.jsonl.gz. No reader noise: a case file is a
    recorded log, taken as given (no missed reads forgiven)."""
    d = tmp_path_factory.mktemp("logs")
    with gzip.open(d / "plant.jsonl.gz", "wt") as out, \
            gzip.open(d / "plant.truth.jsonl.gz", "wt") as truth:
        for obj, seq, attrs in iter_cases(3000, seed=11, anomaly_rate=0.08, noise_rate=0.0,
                                          attribute_anomaly_rate=0.08):
            out.write(json.dumps({"oid": obj.oid, "sequence": seq, "attributes": attrs}) + "\n")
            truth.write(json.dumps({"oid": obj.oid,
                                    "anomaly": obj.anomaly_type or "normal"}) + "\n")
    return d


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "soads.cli", "bench", "detect", *args],
                          capture_output=True, text=True, timeout=600)


def test_bench_detect_prints_the_detectors_side_by_side(logs):
    r = run_bench("--logs", str(logs))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "plant: 3,000 cases" in r.stderr
    rows = {tuple(line.split()[:2]) for line in lines if line.startswith(("plant", "mean"))}
    for d in ("alignment", "surprisal", "context"):
        assert ("plant", d) in rows and ("mean", d) in rows
    summary = json.loads(lines[-1])
    det = summary["logs"]["plant"]["detectors"]
    assert summary["logs"]["plant"]["cases"] == 3000
    ctx, sur, ali = det["context"], det["surprisal"], det["alignment"]
    # relation surprisal is blind to attributes; the context detector sees both
    assert ctx["roc_auc"] > 0.95 and ctx["best_f1"] > 0.8
    assert ctx["best_f1"] > sur["best_f1"] > 0 and ctx["best_f1"] > ali["best_f1"]
    assert "verdict_f1" in ctx and "verdict_f1" not in sur
    # a small log gives less evidence: the verdict is cautious (precise, lower recall)
    assert ctx["verdict_precision"] > 0.95 and ctx["verdict_f1"] > 0.6
    assert ctx["per_type_roc_auc"]["wrong_disposition"] > 0.95
    assert sur["per_type_roc_auc"]["wrong_disposition"] < 0.7
    assert 0 <= ctx["false_positive_rate"] < 0.05
    assert ctx["events_per_s"] > 0 and ali["patterns"] > 0


def test_bench_detect_bad_input_is_one_line(tmp_path, logs):
    r = run_bench("--logs", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no such directory" in r.stderr
    (tmp_path / "x.jsonl").write_text('{"oid": "a", "sequence": ["p"]}\n')
    r = run_bench("--logs", str(tmp_path))
    assert r.returncode == 2 and "no labelled log" in r.stderr, r.stderr
    (tmp_path / "x.truth.jsonl").write_text('{"oid": "b", "anomaly": "normal"}\n')
    r = run_bench("--logs", str(tmp_path))
    assert r.returncode == 2 and "no label for 1 case(s), e.g. 'a'" in r.stderr, r.stderr
    (tmp_path / "x.truth.jsonl").write_text('{"oid": "a"}\n')
    r = run_bench("--logs", str(tmp_path), "--detector", "context")
    assert r.returncode == 2 and "x.truth.jsonl:1: not a truth line" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
