import numpy as np
import pytest

from soads.evaluate import best_f1, detection_quality, roc_auc


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_best_f1_exact():
    assert best_f1([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == (1.0, 0.8)
    f1, thr = best_f1([1, 0, 1], [0.5, 0.5, 0.1])
    assert (f1, thr) == (pytest.approx(2 * 2 / (2 * 2 + 1)), 0.1)


def test_detection_quality_per_type_uses_normals_as_negatives():
    labels = [0, 0, 0, 1, 1]
    types = ["", "", "", "skipped_stage", "swapped_stages"]
    scores = [0.1, 0.2, 0.3, 0.9, 0.25]
    q = {r["anomaly_type"]: r for r in detection_quality(labels, types, scores)}
    assert list(q) == ["all", "skipped_stage", "swapped_stages"]
    assert q["skipped_stage"]["roc_auc"] == 1.0
    assert q["swapped_stages"]["roc_auc"] == pytest.approx(2 / 3)
    assert q["all"]["n_positive"] == 2 and q["all"]["n_negative"] == 3


# -- the verdict ------------------------------------------------------------------------------


def test_verdict_quality_matches_the_definitions_on_random_verdicts():
    from soads.evaluate import verdict_quality

    rng = np.random.default_rng(1)
    for _ in range(50):
        y = rng.integers(0, 2, rng.integers(1, 40)).astype(bool)
        v = rng.random(len(y)) < rng.random()
        q = verdict_quality(y, v)
        tp, fp, fn = sum(y & v), sum(~y & v), sum(y & ~v)
        assert (q["tp"], q["fp"], q["fn"]) == (tp, fp, fn)
        if tp + fp:
            assert q["precision"] == pytest.approx(tp / (tp + fp))
        else:
            assert np.isnan(q["precision"])
        if tp + fn:
            assert q["recall"] == pytest.approx(tp / (tp + fn))
            p, r = q["precision"], q["recall"]
            assert q["f1"] == pytest.approx(0.0 if tp == 0 else 2 * p * r / (p + r))
    with pytest.raises(ValueError, match="length"):
        verdict_quality([1, 0], [True])


def test_detection_quality_with_a_verdict_per_type():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    types = ["", "", "", "", "a", "a", "b", "b"]
    scores = [0.1, 0.2, 0.3, 0.7, 0.9, 0.8, 0.6, 0.2]
    verdict = [False, False, False, True, True, True, True, False]
    q = {r["anomaly_type"]: r for r in detection_quality(labels, types, scores, verdict)}
    # overall: 3 of 4 anomalies flagged, 1 normal object flagged
    assert (q["all"]["precision"], q["all"]["recall"], q["all"]["n_flagged"]) == (0.75, 0.75, 4)
    assert q["all"]["f1"] == pytest.approx(0.75)
    # per type: recall of that type; the flagged normal object is the one false positive
    assert (q["a"]["recall"], q["a"]["precision"], q["a"]["n_flagged"]) == (1.0, 2 / 3, 3)
    assert (q["b"]["recall"], q["b"]["precision"]) == (0.5, 0.5)
    # without a verdict the rows are as before
    plain = detection_quality(labels, types, scores)
    assert all("precision" not in r for r in plain)
    assert [{k: r[k] for k in p} for r, p in zip(q.values(), plain)] == plain


def test_noise_false_positives_counts_normal_objects_with_noise_only():
    from soads.evaluate import noise_false_positives

    labels = [0, 0, 0, 0, 0, 1, 1]
    noise = ["repeated_read", "missed_read", "missed_read", None, float("nan"), "missed_read", ""]
    verdict = [True, False, True, False, True, True, True]
    rows = {r["noise"]: r for r in noise_false_positives(labels, noise, verdict)}
    assert list(rows) == ["all", "missed_read", "repeated_read", "none"]
    assert (rows["all"]["n"], rows["all"]["n_flagged"]) == (3, 2)
    assert rows["missed_read"]["rate"] == 0.5 and rows["repeated_read"]["rate"] == 1.0
    # None and NaN (a truth file read by pandas) are no noise
    assert (rows["none"]["n"], rows["none"]["n_flagged"]) == (2, 1)
    assert np.isnan(noise_false_positives([1], ["missed_read"], [True])[0]["rate"])


def test_quality_table_puts_detectors_side_by_side():
    from soads.evaluate import noise_false_positives, quality_table

    labels = [0, 0, 0, 1, 1, 1]
    types = ["", "", "", "skipped_stage", "wrong_action", "wrong_action"]
    quality = {
        "alignment": detection_quality(labels, types, [0.1, 0.2, 0.3, 0.4, 0.2, 0.1]),
        "context": detection_quality(labels, types, [0.1, 0.2, 0.3, 0.9, 0.8, 0.7],
                                     [False, False, False, True, True, False]),
    }
    noise = {"context": noise_false_positives([0, 0, 0, 1, 1, 1],
                                              ["missed_read", "repeated_read", "", "", "", ""],
                                              [True, False, False, True, True, False])}
    lines = quality_table(quality, noise)
    assert lines[0].split() == ["alignment", "context"]
    assert lines[1].split() == ["anomaly", "type", "n", "ROC-AUC", "best", "F1", "ROC-AUC",
                                "best", "F1", "P", "R", "F1"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert list(rows) == ["all", "skipped_stage", "wrong_action"]
    assert rows["all"] == ["3", "0.5556", "0.6667", "1.0000", "1.0000", "1.000", "0.667",
                           "0.800"]
    assert rows["wrong_action"][:1] == ["2"] and rows["wrong_action"][-3:] == ["1.000", "0.500",
                                                                               "0.667"]
    assert lines[-1] == ("reader noise flagged (normal objects with noise only): "
                         "context 1/2 (50.0%; clean normal 0.0%)")
    # a type one detector has not seen, a NaN: "-"
    quality["surprisal"] = detection_quality([0, 1], ["", "skipped_stage"], [0.5, 0.5])
    quality["surprisal"][0]["roc_auc"] = float("nan")
    rows = {line.split()[0]: line for line in quality_table(quality)[2:]}
    assert rows["wrong_action"].endswith("-        -") and rows["all"].endswith("-   0.6667")


def test_read_truth_accepts_the_noise_column_and_the_old_header(spark, tmp_path):
    from soads import schema as S
    from soads.pipeline import read_truth

    new = tmp_path / "new.csv"
    new.write_text("oid,label,anomaly_type,noise\na,0,,missed_read\nb,1,wrong_action,\nc,0,,\n")
    old = tmp_path / "old.csv"
    old.write_text("oid,label,anomaly_type\na,0,\nb,1,skipped_stage\n")
    rows = sorted(tuple(r) for r in read_truth(spark, str(new)).collect())
    assert rows == [("a", 0, None, "missed_read"), ("b", 1, "wrong_action", None),
                    ("c", 0, None, None)]
    old_df = read_truth(spark, str(old))
    assert old_df.columns == [S.OID, S.LABEL, S.ANOMALY_TYPE, S.NOISE]
    assert sorted(tuple(r) for r in old_df.collect()) == [("a", 0, None, None),
                                                          ("b", 1, "skipped_stage", None)]
    bad = tmp_path / "bad.csv"
    bad.write_text("oid,label\n")
    with pytest.raises(ValueError, match="expected header"):
        read_truth(spark, str(bad))
