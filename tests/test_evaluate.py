"""Tests for siamese_core.learn.evaluate: closed-form answers on tiny inputs, agreement between the
fast and the direct paths on random data, and SiameseError on bad input.

Reminder of the conventions: label 0 = same place (the positive class), 1 = different place;
lower score = more alike; predicted same iff score <= threshold.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siamese_core.core.errors import SiameseError
from siamese_core.learn.evaluate import (Metrics, Report, Suggestions, ThresholdSweep, auc, average_precision,
    confusion, metrics_at, pr_curve, report, roc_auc, roc_curve, suggest_thresholds)

SEPARATED_SCORES = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
SEPARATED_LABELS = [0, 0, 0, 1, 1, 1]


def brute_force_auc(scores, labels) -> float:
    """P(random same pair scores lower than random different pair), ties count 1/2."""
    same = [s for s, lab in zip(scores, labels) if lab == 0]
    diff = [s for s, lab in zip(scores, labels) if lab == 1]
    wins = sum(1.0 if a < b else 0.5 if a == b else 0.0 for a in same for b in diff)
    return wins / (len(same) * len(diff))


def random_pairs(rng: np.random.Generator, n: int, *, ties: bool):
    labels = rng.integers(0, 2, n)
    scores = rng.normal(labels.astype(float), 1.0)  # different pairs score higher on average
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


# ---------------------------------------------------------------------------------------------
# Closed-form answers
# ---------------------------------------------------------------------------------------------


def test_perfectly_separated():
    assert roc_auc(SEPARATED_SCORES, SEPARATED_LABELS) == 1.0
    assert average_precision(SEPARATED_SCORES, SEPARATED_LABELS) == 1.0
    m = metrics_at(SEPARATED_SCORES, SEPARATED_LABELS, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn, m.n) == (3, 0, 3, 0, 6)
    assert m.accuracy == m.precision == m.recall == m.f1 == m.specificity == 1.0


def test_reversed_scores_give_auc_zero():
    reversed_labels = [1 - lab for lab in SEPARATED_LABELS]
    assert roc_auc(SEPARATED_SCORES, reversed_labels) == 0.0
    assert metrics_at(SEPARATED_SCORES, reversed_labels, 0.5).accuracy == 0.0


def test_all_ties_give_auc_half():
    assert roc_auc([0.4] * 5, [0, 1, 0, 1, 1]) == 0.5


def test_hand_computed_confusion_matrix():
    #        score: 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8
    #        label:  0   0   1   0   1   0   1   1      threshold 0.45 -> first four predicted same
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    labels = [0, 0, 1, 0, 1, 0, 1, 1]
    # predicted same: 0.1(0) 0.2(0) 0.3(1) 0.4(0) -> tp 3, fp 1; predicted different:
    # 0.5(1) 0.6(0) 0.7(1) 0.8(1) -> tn 3, fn 1
    expected = np.array([[3, 1], [1, 3]], dtype=np.int64)  # rows true [same, diff], cols predicted
    got = confusion(scores, labels, 0.45)
    assert got.dtype == np.int64 and got.shape == (2, 2)
    np.testing.assert_array_equal(got, expected)

    m = metrics_at(scores, labels, 0.45)
    np.testing.assert_array_equal(m.matrix, expected)
    assert m.matrix.dtype == np.int64
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 3, 1)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(3 / 4)
    assert m.accuracy == pytest.approx(6 / 8)
    assert m.specificity == pytest.approx(3 / 4)


def test_asymmetric_matrix_precision_recall_f1():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    labels = [0, 1, 1, 0, 0]
    m = metrics_at(scores, labels, 0.35)  # predicted same: 0.1(0) 0.2(1) 0.3(1)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 2, 0, 2)
    p, r = 1 / 3, 1 / 3
    assert m.precision == pytest.approx(p)
    assert m.recall == pytest.approx(r)
    assert m.f1 == pytest.approx(2 * p * r / (p + r))
    assert m.specificity == 0.0
    assert m.accuracy == pytest.approx(1 / 5)


def test_threshold_equal_to_score_predicts_same():
    m = metrics_at([0.5, 0.5], [0, 1], 0.5)  # score > threshold -> different, so 0.5 is "same"
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 1, 0, 0)


def test_scores_outside_unit_interval_are_fine():
    m = metrics_at([-3.0, 12.5, 40.0], [0, 1, 1], 10.0)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 0, 2, 0)


def test_roc_curve_closed_form():
    fpr, tpr, thr = roc_curve([0.1, 0.2, 0.2, 0.4], [0, 0, 1, 1])
    np.testing.assert_array_equal(thr, [-np.inf, 0.1, 0.2, 0.4])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    # trapezoid: 0 + (0.5)*(1+1)/2 + 0.5*(1+1)/2 with the tie segment counted half
    assert auc(fpr, tpr) == pytest.approx(0.875)
    assert roc_auc([0.1, 0.2, 0.2, 0.4], [0, 0, 1, 1]) == pytest.approx(0.875)


def test_pr_curve_and_average_precision_closed_form():
    scores = [0.1, 0.2, 0.3, 0.4]
    labels = [0, 1, 0, 1]
    precision, recall, thr = pr_curve(scores, labels)
    np.testing.assert_array_equal(thr, scores)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])
    # AP = 0.5 * 1 + 0 * 0.5 + 0.5 * 2/3 + 0 * 0.5
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)


def test_auc_trapezoid():
    assert auc([0, 1], [0, 1]) == pytest.approx(0.5)
    assert auc([0, 0.5, 1], [1, 1, 1]) == pytest.approx(1.0)
    assert auc([1, 0.5, 0], [0, 1, 0]) == pytest.approx(0.5)  # decreasing x: still positive
    assert math.isnan(auc([0.3], [1.0]))
    assert math.isnan(auc([0, 1], [0, float("nan")]))


def test_one_class_only_does_not_crash():
    only_same = ([0.1, 0.2, 0.3], [0, 0, 0])
    only_diff = ([0.1, 0.2, 0.3], [1, 1, 1])
    assert math.isnan(roc_auc(*only_same))
    assert math.isnan(roc_auc(*only_diff))
    assert average_precision(*only_same) == 1.0
    assert math.isnan(average_precision(*only_diff))
    fpr, tpr, _ = roc_curve(*only_same)
    assert np.isnan(fpr).all() and not np.isnan(tpr).any()
    _, recall, _ = pr_curve(*only_diff)
    assert np.isnan(recall).all()

    m = metrics_at(*only_diff, 0.0)  # nothing predicted same, no same pairs
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 0, 3, 0)
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0
    assert m.specificity == 1.0 and m.accuracy == 1.0
    m = metrics_at(*only_same, 1.0)
    assert m.specificity == 0.0 and m.precision == 1.0

    s = suggest_thresholds(*only_diff)
    assert s.target_precision is None
    assert metrics_at(*only_diff, s.best_accuracy).accuracy == 1.0
    suggest_thresholds(*only_same)
    r = report(*only_diff, 0.5)
    assert r["all"]["roc_auc"] is None and r["all"]["average_precision"] is None
    json.dumps(r, allow_nan=False)


def test_precision_with_no_predicted_same_is_zero():
    m = metrics_at([0.4, 0.6], [0, 1], 0.1)
    assert m.tp + m.fp == 0
    assert m.precision == 0.0


def test_single_pair():
    m = metrics_at([0.3], [0], 0.5)
    assert m.n == 1 and m.accuracy == 1.0
    assert math.isnan(roc_auc([0.3], [0]))
    assert ThresholdSweep([0.3], [0]).score_range == (0.3, 0.3)


def test_labels_as_bools_and_floats():
    a = metrics_at([0.1, 0.9], [False, True], 0.5)
    b = metrics_at([0.1, 0.9], [0.0, 1.0], 0.5)
    c = metrics_at(np.array([0.1, 0.9], dtype=np.float32), np.array([0, 1], dtype=np.uint8), 0.5)
    assert a == b == c


# ---------------------------------------------------------------------------------------------
# Dataclasses and JSON
# ---------------------------------------------------------------------------------------------


def test_dataclasses_are_frozen_and_json_safe():
    m = metrics_at(SEPARATED_SCORES, SEPARATED_LABELS, 0.5)
    with pytest.raises(AttributeError):
        m.tp = 7  # type: ignore[misc]
    d = m.to_dict()
    assert set(d) == {
        "threshold", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "specificity", "n",
    }
    assert all(type(v) in (int, float) for v in d.values())
    json.dumps(d, allow_nan=False)

    s = suggest_thresholds(SEPARATED_SCORES, SEPARATED_LABELS)
    assert isinstance(s, Suggestions)
    assert set(s.to_dict()) == {"best_f1", "best_accuracy", "target_precision", "target"}
    json.dumps(s.to_dict(), allow_nan=False)


def test_report_structure():
    r = report(SEPARATED_SCORES, SEPARATED_LABELS, 0.5)
    assert set(r) == {"all", "without_identical"}
    assert r["without_identical"] is None
    assert set(r["all"]) == {"n_pairs", "roc_auc", "average_precision", "metrics", "suggestions"}
    assert r["all"]["n_pairs"] == 6
    assert r["all"]["roc_auc"] == 1.0
    assert r["all"]["metrics"] == metrics_at(SEPARATED_SCORES, SEPARATED_LABELS, 0.5).to_dict()
    assert r["all"]["suggestions"] == suggest_thresholds(SEPARATED_SCORES, SEPARATED_LABELS).to_dict()
    json.dumps(r, allow_nan=False)
    assert {f for f in Report.__dataclass_fields__} == set(r["all"])


def test_report_without_identical_excludes_masked_pairs():
    # two self-pairs (score 0, label same) inflate the "all" numbers; the rest is imperfect
    scores = [0.0, 0.0, 0.2, 0.6, 0.4, 0.8]
    labels = [0, 0, 0, 0, 1, 1]
    identical = [True, True, False, False, False, False]
    r = report(scores, labels, 0.5, identical)
    assert r["all"]["n_pairs"] == 6
    assert r["all"] == report(scores, labels, 0.5)["all"]
    w = r["without_identical"]
    assert w["n_pairs"] == 4
    assert w["metrics"] == metrics_at(scores[2:], labels[2:], 0.5).to_dict()
    assert w["roc_auc"] == pytest.approx(roc_auc(scores[2:], labels[2:]))
    assert w["suggestions"] == suggest_thresholds(scores[2:], labels[2:]).to_dict()
    assert w["metrics"]["tp"] == 1 and r["all"]["metrics"]["tp"] == 3

    # a 0/1 mask works too; a mask marking nothing gives the same numbers as "all"
    assert report(scores, labels, 0.5, [1, 1, 0, 0, 0, 0]) == r
    none_marked = report(scores, labels, 0.5, [False] * 6)
    assert none_marked["without_identical"] == none_marked["all"]
    # marking every pair leaves nothing to report on
    assert report(scores, labels, 0.5, [True] * 6)["without_identical"] is None


def test_report_target_precision_passed_through():
    r = report(SEPARATED_SCORES, SEPARATED_LABELS, 0.5, target_precision=0.5)
    assert r["all"]["suggestions"]["target"] == 0.5


# ---------------------------------------------------------------------------------------------
# Fast paths agree with the direct ones
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_sweep_agrees_with_metrics_at_seeded(seed):
    rng = np.random.default_rng(seed)
    scores, labels = random_pairs(rng, 500, ties=seed % 2 == 0)
    sweep = ThresholdSweep(scores, labels)
    lo, hi = sweep.score_range
    assert (lo, hi) == (scores.min(), scores.max())
    thresholds = np.concatenate(
        [rng.uniform(lo - 1, hi + 1, 100), np.unique(scores)[:50], [lo, hi, lo - 1e-9, -np.inf, np.inf]]
    )
    for t in thresholds:
        assert sweep.at(t) == metrics_at(scores, labels, t)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(-5, 5), st.integers(0, 1)), min_size=1, max_size=40),
    thresholds=st.lists(st.integers(-12, 12), min_size=1, max_size=10),
)
def test_sweep_agrees_with_metrics_at_hypothesis(pairs, thresholds):
    scores = [s / 2 for s, _ in pairs]  # many ties; thresholds hit scores and midpoints exactly
    labels = [lab for _, lab in pairs]
    sweep = ThresholdSweep(scores, labels)
    for t in thresholds:
        m = sweep.at(t / 4)
        assert m == metrics_at(scores, labels, t / 4)
        assert m.matrix.sum() == len(pairs)
        np.testing.assert_array_equal(m.matrix, confusion(scores, labels, t / 4))


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_matches_brute_force_mann_whitney(seed):
    rng = np.random.default_rng(100 + seed)
    scores, labels = random_pairs(rng, 120, ties=seed % 2 == 0)
    expected = brute_force_auc(scores.tolist(), labels.tolist())
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert auc(fpr, tpr) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1)), min_size=2, max_size=30))
def test_roc_auc_matches_brute_force_hypothesis(pairs):
    scores = [float(s) for s, _ in pairs]
    labels = [lab for _, lab in pairs]
    if len(set(labels)) < 2:
        assert math.isnan(roc_auc(scores, labels))
    else:
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_curves_are_monotonic_and_end_at_one():
    scores, labels = random_pairs(np.random.default_rng(7), 300, ties=True)
    fpr, tpr, thr = roc_curve(scores, labels)
    assert (np.diff(thr) > 0).all()
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    precision, recall, pthr = pr_curve(scores, labels)
    assert len(precision) == len(recall) == len(pthr)
    assert (np.diff(recall) >= 0).all() and recall[-1] == 1.0
    # curve points agree with metrics_at at the same thresholds
    for i in range(0, len(pthr), 17):
        m = metrics_at(scores, labels, pthr[i])
        assert precision[i] == pytest.approx(m.precision)
        assert recall[i] == pytest.approx(m.recall)
        assert tpr[i + 1] == pytest.approx(m.recall)
        assert fpr[i + 1] == pytest.approx(1 - m.specificity)


# ---------------------------------------------------------------------------------------------
# Suggestions
# ---------------------------------------------------------------------------------------------


def _candidates(scores) -> np.ndarray:
    d = np.unique(scores)
    return np.concatenate([[np.nextafter(d[0], -np.inf)], (d[:-1] + d[1:]) / 2, [d[-1]]])


@pytest.mark.parametrize("seed", range(4))
def test_suggestions_are_optimal_over_candidates(seed):
    scores, labels = random_pairs(np.random.default_rng(200 + seed), 200, ties=seed % 2 == 0)
    s = suggest_thresholds(scores, labels, target_precision=0.8)
    at = {t: metrics_at(scores, labels, t) for t in _candidates(scores)}
    best_acc = metrics_at(scores, labels, s.best_accuracy).accuracy
    best_f1 = metrics_at(scores, labels, s.best_f1).f1
    assert all(best_acc >= m.accuracy for m in at.values())
    assert all(best_f1 >= m.f1 for m in at.values())
    # a few arbitrary thresholds can't beat them either
    for t in np.random.default_rng(seed).uniform(scores.min() - 1, scores.max() + 1, 50):
        m = metrics_at(scores, labels, t)
        assert best_acc >= m.accuracy and best_f1 >= m.f1

    assert s.target == 0.8
    reaching = [m for m in at.values() if m.precision >= 0.8]
    if reaching:
        chosen = metrics_at(scores, labels, s.target_precision)
        assert chosen.precision >= 0.8
        assert chosen.recall == max(m.recall for m in reaching)
        assert s.target_precision == min(t for t, m in at.items() if m in reaching and m.recall == chosen.recall)
    else:
        assert s.target_precision is None


def test_suggestions_closed_form():
    s = suggest_thresholds(SEPARATED_SCORES, SEPARATED_LABELS)
    assert s.best_f1 == pytest.approx(0.5)  # midpoint of the gap between 0.3 and 0.7
    assert s.best_accuracy == pytest.approx(0.5)
    assert s.target_precision == pytest.approx(0.5)
    assert s.target == 0.99


def test_target_precision_unreachable_is_none():
    # the lowest score is a different pair, so precision never exceeds 2/3
    s = suggest_thresholds([0.1, 0.2, 0.3, 0.4], [1, 0, 0, 1], target_precision=0.9)
    assert s.target_precision is None
    assert s.to_dict()["target_precision"] is None


def test_target_precision_prefers_recall_then_smallest_threshold():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [0, 0, 1, 0, 0, 1]
    # precision >= 0.75 at cuts 0.15 (1/1), 0.25 (2/2), 0.45 (3/4) and 0.55 (4/5): best recall 4/4 at 0.55
    s = suggest_thresholds(scores, labels, target_precision=0.75)
    assert s.target_precision == pytest.approx(0.55)
    s = suggest_thresholds(scores, labels, target_precision=0.99)
    assert s.target_precision == pytest.approx(0.25)


def test_all_scores_tied_suggestions():
    s = suggest_thresholds([0.5, 0.5, 0.5], [0, 1, 1])
    # candidates: just below 0.5 (all different, accuracy 2/3) and 0.5 (all same, accuracy 1/3)
    assert s.best_accuracy < 0.5
    assert s.best_f1 == 0.5
    assert s.target_precision is None


def test_suggestions_with_extreme_scores_do_not_overflow():
    s = suggest_thresholds([-1e308, 1e308], [0, 1])
    assert math.isfinite(s.best_f1)
    assert metrics_at([-1e308, 1e308], [0, 1], s.best_f1).accuracy == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, labels, fragment",
    [
        ([0.1, 0.2], [0, 1, 1], "2 values but labels has 3"),
        ([], [], "no pairs"),
        ([[0.1, 0.2]], [0, 1], "1-D"),
        ([0.1, 0.2], [[0, 1]], "1-D"),
        (0.5, [0], "1-D"),
        ([0.1, 0.2], [0, 2], "got 2 at index 1"),
        ([0.1, 0.2], [0, 0.5], "got 0.5 at index 1"),
        ([0.1, 0.2], [0, -1], "got -1 at index 1"),
        ([0.1, 0.2], ["0", "1"], "dtype"),
        ([0.1, float("nan")], [0, 1], "nan at index 1"),
        ([0.1, float("inf")], [0, 1], "inf at index 1"),
        ([0.1, None], [0, 1], "None at index 1"),
        (["a", "b"], [0, 1], "'a' at index 0"),
        ([True, False], [0, 1], "dtype bool"),
    ],
)
def test_bad_inputs_raise_siamese_error(scores, labels, fragment):
    calls = [
        lambda: confusion(scores, labels, 0.5),
        lambda: metrics_at(scores, labels, 0.5),
        lambda: ThresholdSweep(scores, labels),
        lambda: roc_curve(scores, labels),
        lambda: pr_curve(scores, labels),
        lambda: roc_auc(scores, labels),
        lambda: average_precision(scores, labels),
        lambda: suggest_thresholds(scores, labels),
        lambda: report(scores, labels, 0.5),
    ]
    for call in calls:
        with pytest.raises(SiameseError) as info:
            call()
        message = str(info.value)
        assert fragment in message
        assert "\n" not in message and ";" in message  # one line, value then the fix


@pytest.mark.parametrize("threshold", [float("nan"), "0.5", None, True, [0.5], np.array([0.5, 0.6])])
def test_bad_threshold_raises(threshold):
    with pytest.raises(SiameseError):
        metrics_at([0.1, 0.2], [0, 1], threshold)
    with pytest.raises(SiameseError):
        ThresholdSweep([0.1, 0.2], [0, 1]).at(threshold)
    with pytest.raises(SiameseError):
        confusion([0.1, 0.2], [0, 1], threshold)
    with pytest.raises(SiameseError):
        report([0.1, 0.2], [0, 1], threshold)


def test_numpy_scalar_thresholds_accepted():
    ref = metrics_at([0.1, 0.2], [0, 1], 0.15)
    assert metrics_at([0.1, 0.2], [0, 1], np.float32(0.15)).tp == ref.tp
    assert metrics_at([0.1, 0.2], [0, 1], np.array(0.15)) == ref
    assert metrics_at([0.1, 0.2], [0, 1], 1) == metrics_at([0.1, 0.2], [0, 1], 1.0)


@pytest.mark.parametrize("target", [1.5, -0.1, float("nan"), "0.9", None])
def test_bad_target_precision_raises(target):
    with pytest.raises(SiameseError):
        suggest_thresholds([0.1, 0.2], [0, 1], target_precision=target)


@pytest.mark.parametrize("identical", [[True], [[True, False]], ["yes", "no"], [0, 2]])
def test_bad_identical_mask_raises(identical):
    with pytest.raises(SiameseError):
        report([0.1, 0.2], [0, 1], 0.5, identical)


def test_bad_auc_inputs_raise():
    with pytest.raises(SiameseError):
        auc([0, 1, 2], [0, 1])
    with pytest.raises(SiameseError, match="turns back at index 2"):
        auc([0, 1, 0.5], [0, 1, 1])


def test_metrics_is_the_exported_type():
    assert isinstance(ThresholdSweep([0.1], [0]).at(0.0), Metrics)
