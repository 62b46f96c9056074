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
