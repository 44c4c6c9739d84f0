import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crossdisc import metrics


def test_mcc_matches_the_binary_formula():
    y = [1, 1, 0, 0, 1, 0, 1, 0]
    p = [1, 0, 0, 0, 1, 1, 1, 0]
    tp, tn, fp, fn = 3, 3, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.mcc(y, p) == pytest.approx(expected)


def test_mcc_is_zero_when_one_class_is_predicted():
    assert metrics.mcc([0, 1, 0, 1], [0, 0, 0, 0]) == 0.0


def test_f1_of_the_positive_class():
    assert metrics.f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)


def test_vote_takes_the_majority_per_piece():
    groups = ["a", "a", "a", "b", "b"]
    labels = [2, 2, 2, 0, 0]
    preds = [2, 1, 2, 1, 1]
    truth, voted = metrics.vote(groups, labels, preds)
    assert truth == [2, 0] and voted == [2, 1]
    assert metrics.evaluate("vote_classification", labels, preds, groups)["vote_accuracy"] == 0.5


def test_regression_metrics_are_pearson_and_spearman():
    y = np.array([0.1, 0.4, 0.2, 0.9])
    p = np.array([0.0, 0.5, 0.1, 1.0])
    result = metrics.evaluate("regression", y, p)
    assert result["spearman"] == pytest.approx(stats.spearmanr(y, p)[0])
    assert result["pearson"] == pytest.approx(stats.pearsonr(y, p)[0])


def test_subsets_are_scored_apart_and_the_headline_is_their_mean():
    frame = pd.DataFrame({"label": [0, 1, 0, 1], "group": list("abcd"), "subset": ["matched"] * 2 + ["mismatched"] * 2})
    result = metrics.score(frame, np.array([0, 1, 1, 1]), "classification")
    assert result["matched"]["accuracy"] == 1.0 and result["mismatched"]["accuracy"] == 0.5
    assert result["accuracy"] == 0.75
