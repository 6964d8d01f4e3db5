"""Confidence-quality metrics (report/calibration.py) against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from batchlabel.report.calibration import (
    auroc,
    calibration_report,
    coverage_curve,
    expected_calibration_error,
    reliability_bins,
    thresholds_for,
)


def test_ece_and_reliability_bins_by_hand():
    # 2 bins: [0, .5] holds 0.2 (wrong), 0.4 (right); (.5, 1] holds 0.6, 0.8 (right), 1.0 (wrong)
    conf = [0.2, 0.4, 0.6, 0.8, 1.0]
    right = [False, True, True, True, False]
    bins = reliability_bins(conf, right, bins=2)
    assert [b["rows"] for b in bins] == [2, 3]
    assert bins[0]["mean_confidence"] == pytest.approx(0.3) and bins[0]["accuracy"] == pytest.approx(0.5)
    assert bins[1]["mean_confidence"] == pytest.approx(0.8) and bins[1]["accuracy"] == pytest.approx(2 / 3)
    expected = 2 / 5 * abs(0.5 - 0.3) + 3 / 5 * abs(2 / 3 - 0.8)
    assert expected_calibration_error(conf, right, bins=2) == pytest.approx(expected)
    # edges: 0.5 belongs to the lower bin, 0 to the first, NaN confidences are dropped
    assert [b["rows"] for b in reliability_bins([0.0, 0.5, 0.5000001, np.nan], [1, 1, 1, 1], bins=2)] == [2, 1]
    assert expected_calibration_error([], [], bins=15) == 0.0
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_auroc_equals_scikit_learn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    conf = np.round(rng.random(500), 1)  # many ties
    right = rng.random(500) < conf
    assert auroc(conf, right) == pytest.approx(roc_auc_score(right, conf), abs=1e-12)
    # and the definition, pair by pair: P(a correct row's confidence > a wrong row's), ties count 1/2
    pos, neg = conf[right][:, None], conf[~right][None, :]
    assert auroc(conf, right) == pytest.approx(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def test_auroc_undefined_with_one_class():
    assert auroc([0.3, 0.9], [True, True]) is None
    assert auroc([0.3, 0.9], [False, False]) is None
    assert auroc([0.9, 0.3], [True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5


def test_coverage_curve_keeps_ties_together():
    curve = coverage_curve([0.5, 0.9, 0.9, 0.7], [True, True, False, True])
    assert curve["threshold"].tolist() == [0.9, 0.7, 0.5]
    assert curve["rows"].tolist() == [2, 3, 4]
    assert curve["coverage"].tolist() == [0.5, 0.75, 1.0]
    assert curve["accuracy"].tolist() == pytest.approx([0.5, 2 / 3, 0.75])


def test_thresholds_are_the_lowest_reaching_the_target():
    # sorted by confidence: .95 R, .9 R, .8 R, .7 W, .6 R, .5 R, .4 W, .3 W, .2 W, .1 W
    conf = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    right = [True, True, True, False, True, True, False, False, False, False]
    by_target = {t["target"]: t for t in thresholds_for(conf, right, targets=(0.8, 0.99, 0.5))}
    # >= .5: 5 right of 6 = .833 (>= .8); >= .4: 5/7 = .714
    assert by_target[0.8] == pytest.approx({"target": 0.8, "threshold": 0.5, "coverage": 0.6, "rows": 6,
                                            "accuracy": 5 / 6})
    assert by_target[0.99]["threshold"] == 0.8 and by_target[0.99]["coverage"] == 0.3
    assert by_target[0.5]["threshold"] == 0.1 and by_target[0.5]["coverage"] == 1.0
    unreachable = thresholds_for([0.9, 0.8], [False, False], targets=(0.9,))[0]
    assert unreachable["threshold"] is None and unreachable["rows"] == 0


def test_summary_is_json_ready():
    import json

    rng = np.random.default_rng(0)
    conf = rng.random(200)
    summary = calibration_report(conf, rng.random(200) < conf)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["rows"] == 200 and len(summary["reliability"]) == 15
    assert 0.4 < summary["auroc"] < 1.0 and summary["ece"] < 0.2
    curve = summary["curve"]
    assert len(curve["coverage"]) == 101 and curve["coverage"][-1] == 1.0 and curve["coverage"][0] == 0.005
    assert curve["threshold"] == sorted(curve["threshold"], reverse=True)
