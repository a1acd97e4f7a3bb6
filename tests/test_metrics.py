"""Classification metrics and the paired t-test, checked against scikit-learn and SciPy."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import ttest_rel
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from playing_distraction.metrics import (
    classification_metrics,
    confusion_matrix,
    paired_t_test,
    top_k_accuracy,
)

# No warning may leak from the metrics (SciPy's and scikit-learn's are RuntimeWarning
# and UserWarning subclasses); the reference helpers below silence their own.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")

RTOL = 1e-12
SCALAR_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro",
               "precision_weighted", "recall_weighted", "f1_weighted", "top5_accuracy")


def random_run(seed, num_classes, count, concentration=0.5):
    """Labels with uneven class frequencies and Dirichlet probabilities that lean
    towards the true class for about half of the images."""
    rng = np.random.default_rng(seed)
    frequencies = rng.dirichlet(np.ones(num_classes))
    labels = rng.choice(num_classes, count, p=frequencies)
    probabilities = rng.dirichlet(np.full(num_classes, concentration), count)
    lean = rng.random(count) < 0.5
    probabilities[lean, labels[lean]] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return labels, probabilities


def sklearn_top_k(labels, probabilities, k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # k >= K
        if probabilities.shape[1] == 2:  # scikit-learn's binary form: one column
            return skm.top_k_accuracy_score(labels, probabilities[:, 1], k=k,
                                            labels=range(2))
        return skm.top_k_accuracy_score(labels, probabilities, k=k,
                                        labels=range(probabilities.shape[1]))


def reference(labels, probabilities):
    """Every number of ``classification_metrics`` from scikit-learn."""
    num_classes = probabilities.shape[1]
    classes = list(range(num_classes))
    predictions = np.argmax(probabilities, axis=1)
    expected = {"accuracy": skm.accuracy_score(labels, predictions)}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            labels, predictions, labels=classes, average=average, zero_division=0)
        expected[f"precision_{average}"] = precision
        expected[f"recall_{average}"] = recall
        expected[f"f1_{average}"] = f1
    expected["top5_accuracy"] = sklearn_top_k(labels, probabilities, 5)
    expected["per_class_tpr"] = skm.recall_score(labels, predictions, labels=classes,
                                                 average=None, zero_division=0)
    expected["confusion"] = skm.confusion_matrix(labels, predictions, labels=classes)
    return expected


def assert_matches_sklearn(labels, probabilities):
    result = classification_metrics(labels, probabilities)
    expected = reference(np.asarray(labels), np.asarray(probabilities, np.float64))
    assert set(result) == set(expected)
    for key in SCALAR_KEYS:
        assert isinstance(result[key], float), key
        np.testing.assert_allclose(result[key], expected[key], rtol=RTOL, atol=0,
                                   err_msg=key)
    np.testing.assert_allclose(result["per_class_tpr"], expected["per_class_tpr"],
                               rtol=RTOL, atol=0)
    np.testing.assert_array_equal(result["confusion"], expected["confusion"])
    assert result["confusion"].shape == (probabilities.shape[1],) * 2
    assert np.issubdtype(result["confusion"].dtype, np.integer)
    assert result["per_class_tpr"].shape == (probabilities.shape[1],)
    return result


# ------------------------------------------------------------------ classification metrics


@pytest.mark.parametrize("num_classes, count", [(3, 50), (7, 120), (20, 300), (20, 50),
                                                (6, 200)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn_on_random_runs(seed, num_classes, count):
    labels, probabilities = random_run(seed, num_classes, count)
    result = assert_matches_sklearn(labels, probabilities)
    # The cases are not degenerate: some images right, some wrong.
    assert 0 < result["accuracy"] < 1


def test_a_class_never_predicted_has_precision_zero_and_counts_in_the_macro_average():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    predictions = np.array([0, 1, 1, 1, 0, 1, 0, 0])  # class 2 is never predicted
    probabilities = np.eye(3)[predictions] * 0.8 + 0.2 / 3
    result = assert_matches_sklearn(labels, probabilities)
    precision = np.array([2 / 4, 2 / 4, 0.0])
    recall = np.array([2 / 3, 2 / 2, 0 / 3])
    assert result["precision_macro"] == pytest.approx(precision.mean())
    assert result["recall_macro"] == pytest.approx(recall.mean())
    np.testing.assert_allclose(result["per_class_tpr"], recall)
    assert result["precision_weighted"] == pytest.approx((3 * 0.5 + 2 * 0.5 + 3 * 0.0) / 8)


def test_a_class_absent_from_the_labels_counts_in_macro_with_weight_zero_in_weighted():
    labels = np.array([0, 0, 0, 1, 1, 3, 3, 3, 3])  # class 2 absent
    predictions = np.array([0, 0, 2, 1, 0, 3, 3, 3, 2])
    probabilities = np.eye(4)[predictions] * 0.7 + 0.3 / 4
    result = assert_matches_sklearn(labels, probabilities)
    recall = np.array([2 / 3, 1 / 2, 0.0, 3 / 4])
    np.testing.assert_allclose(result["per_class_tpr"], recall)
    assert result["recall_macro"] == pytest.approx(recall.mean())
    assert result["recall_weighted"] == pytest.approx((2 + 1 + 3) / 9)  # = accuracy
    assert result["recall_weighted"] == pytest.approx(result["accuracy"])

    # A class absent from both labels and predictions: all its scores are 0, and it
    # still pulls the macro averages down, not the weighted ones.
    probabilities = np.eye(4)[np.array([0, 0, 1, 1, 3])] * 0.9 + 0.1 / 4
    result = assert_matches_sklearn(np.array([0, 0, 1, 1, 3]), probabilities)
    assert result["per_class_tpr"][2] == 0
    assert result["f1_macro"] == pytest.approx(0.75)
    assert result["f1_weighted"] == pytest.approx(1.0)


def test_macro_and_weighted_averages_differ_when_supports_differ():
    # Class 0: 6 images, all right; class 1: 2 images, both predicted as 0.
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    probabilities = np.tile([0.9, 0.1], (8, 1))
    result = assert_matches_sklearn(labels, probabilities)
    assert result["recall_macro"] == pytest.approx((1 + 0) / 2)
    assert result["recall_weighted"] == pytest.approx((6 * 1 + 2 * 0) / 8)
    assert result["precision_macro"] == pytest.approx((6 / 8 + 0) / 2)
    assert result["precision_weighted"] == pytest.approx((6 * 6 / 8 + 2 * 0) / 8)
    f1 = 2 * (6 / 8) / (6 / 8 + 1)
    assert result["f1_macro"] == pytest.approx(f1 / 2)
    assert result["f1_weighted"] == pytest.approx(6 * f1 / 8)


def test_a_test_set_with_few_of_the_classes_still_averages_over_all_of_them():
    # 8 classes, only classes 2 and 5 in the labels; top-5 needs every class (k < K).
    labels = np.array([2, 2, 2, 5, 5])
    probabilities = np.full((5, 8), 0.05)
    probabilities[:, 2] = [0.60, 0.10, 0.01, 0.20, 0.06]  # true class ranks 1, 2, 8, 1, 1
    probabilities[:, 5] = [0.20, 0.50, 0.60, 0.50, 0.60]
    probabilities[2, :] = [0.02, 0.06, 0.01, 0.07, 0.08, 0.60, 0.09, 0.07]
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    result = assert_matches_sklearn(labels, probabilities)
    predictions = probabilities.argmax(axis=1)
    np.testing.assert_array_equal(predictions, [2, 5, 5, 5, 5])
    recall = np.zeros(8)
    recall[2], recall[5] = 1 / 3, 2 / 2
    np.testing.assert_allclose(result["per_class_tpr"], recall)
    assert result["recall_macro"] == pytest.approx(recall.sum() / 8)
    assert result["recall_weighted"] == pytest.approx(result["accuracy"]) == 3 / 5
    assert result["top5_accuracy"] == 4 / 5  # image 2's class ranks last


def test_perfect_predictions_give_one_everywhere():
    labels = np.random.default_rng(4).permutation(np.arange(40) % 8)
    probabilities = np.full((40, 8), 0.02)
    probabilities[np.arange(40), labels] = 0.86
    result = assert_matches_sklearn(labels, probabilities)
    for key in SCALAR_KEYS:
        assert result[key] == 1.0, key
    np.testing.assert_array_equal(result["per_class_tpr"], np.ones(8))
    np.testing.assert_array_equal(result["confusion"], np.diag(np.bincount(labels)))


@pytest.mark.parametrize("num_classes", [3, 4, 5])
def test_top5_is_one_when_there_are_at_most_five_classes(num_classes):
    labels, probabilities = random_run(7, num_classes, 60)
    result = assert_matches_sklearn(labels, probabilities)
    assert result["top5_accuracy"] == 1.0
    assert result["accuracy"] < 1


def test_two_classes_top5_is_one_like_sklearn_on_the_binary_score():
    labels, probabilities = random_run(8, 2, 40)
    result = classification_metrics(labels, probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = skm.top_k_accuracy_score(labels, probabilities[:, 1], k=5)
    assert result["top5_accuracy"] == expected == 1.0
    assert result["accuracy"] == skm.accuracy_score(labels, probabilities.argmax(axis=1))


def test_tied_probabilities_predict_the_lowest_tied_class():
    # argmax semantics for the prediction behind accuracy, precision, recall, F1.
    labels = np.array([1, 2, 0, 2])
    probabilities = np.array([[0.4, 0.4, 0.2],
                              [0.1, 0.45, 0.45],
                              [1 / 3, 1 / 3, 1 / 3],
                              [0.2, 0.3, 0.5]])
    result = assert_matches_sklearn(labels, probabilities)
    expected = np.zeros((3, 3), np.int64)
    for label, prediction in zip(labels, [0, 1, 0, 2]):
        expected[label, prediction] += 1
    np.testing.assert_array_equal(result["confusion"], expected)
    assert result["accuracy"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_with_many_ties_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 9, 150)
    probabilities = rng.integers(0, 3, (150, 9)).astype(np.float64) + 1e-3
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert_matches_sklearn(labels, probabilities)


# ------------------------------------------------------------------ top-k and confusion


@pytest.mark.parametrize("num_classes", [1, 2, 3, 10])
def test_top_k_is_one_when_k_is_at_least_the_number_of_classes(num_classes):
    labels, probabilities = random_run(5, num_classes, 30)
    probabilities = 1 - probabilities  # mostly wrong, but every class is in the top K
    for k in (num_classes, num_classes + 1, 100):
        assert top_k_accuracy(labels, probabilities, k) == 1.0  # and no warning
    if num_classes > 1:
        assert top_k_accuracy(labels, probabilities, num_classes - 1) < 1


@pytest.mark.parametrize("labels", [[3, 3, 3], [0, 6], [1, 1, 6, 6]])
def test_top_k_accuracy_when_only_some_classes_are_in_the_labels(labels):
    labels = np.array(labels)
    rng = np.random.default_rng(len(labels))
    probabilities = rng.dirichlet(np.ones(7), len(labels))
    true_scores = probabilities[np.arange(len(labels)), labels]
    ranks = (probabilities > true_scores[:, None]).sum(axis=1)  # 0: the top class
    for k in range(1, 7):
        assert top_k_accuracy(labels, probabilities, k) == pytest.approx(
            np.mean(ranks < k)), k
        assert top_k_accuracy(labels, probabilities, k) == sklearn_top_k(
            labels, probabilities, k)


def test_top_1_of_two_classes_ranks_as_with_more_classes():
    # scikit-learn takes two classes as a binary problem with one column of scores;
    # the ranking stays the multiclass one: argmax, the higher class on a tie.
    probabilities = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 0, 1])
    assert top_k_accuracy(labels, probabilities, 1) == 2 / 5
    three = np.column_stack([probabilities, np.zeros(5)])
    assert top_k_accuracy(labels, probabilities, 1) == sklearn_top_k(labels, three, 1)
    # Scores outside [0, 1] (logits) rank the same way.
    assert top_k_accuracy(labels, 10 * probabilities - 20, 1) == 2 / 5
    assert top_k_accuracy([1], [[0.5, 0.5]], 1) == 1.0
    assert top_k_accuracy([0], [[0.5, 0.5]], 1) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_classes", [3, 7, 12])
def test_top_k_accuracy_matches_sklearn_for_every_k(seed, num_classes):
    labels, probabilities = random_run(seed, num_classes, 100)
    values = [top_k_accuracy(labels, probabilities, k) for k in range(1, num_classes + 2)]
    for k, value in enumerate(values, start=1):
        assert value == pytest.approx(sklearn_top_k(labels, probabilities, k), rel=RTOL), k
    assert np.all(np.diff(values) >= 0)
    assert values[0] < 1 and values[-1] == 1.0
    assert values[0] == pytest.approx(skm.accuracy_score(labels, probabilities.argmax(1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_accuracy_breaks_ties_like_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, 200)
    scores = rng.integers(0, 3, (200, 8)).astype(np.float64)  # many equal scores
    for k in range(1, 8):
        assert top_k_accuracy(labels, scores, k) == pytest.approx(
            sklearn_top_k(labels, scores, k), rel=RTOL), k
    # Explicitly: between two equal scores scikit-learn ranks the higher class first.
    tied = np.array([[0.5, 0.5, 0.0]])
    assert top_k_accuracy([0], tied, 1) == sklearn_top_k(np.array([0]), tied, 1) == 0.0
    assert top_k_accuracy([1], tied, 1) == sklearn_top_k(np.array([1]), tied, 1) == 1.0


def test_confusion_matrix_matches_sklearn_and_counts_every_image():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 250)
    predictions = np.where(rng.random(250) < 0.6, labels, rng.integers(0, 6, 250))
    predictions[predictions == 4] = 5  # class 4 never predicted
    counts = confusion_matrix(labels, predictions, 7)  # class 6 nowhere
    np.testing.assert_array_equal(
        counts, skm.confusion_matrix(labels, predictions, labels=range(7)))
    assert counts.sum() == 250
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(labels, minlength=7))
    np.testing.assert_array_equal(counts.sum(axis=0),
                                  np.bincount(predictions, minlength=7))
    assert counts[:, 4].sum() == 0 and counts[6].sum() == counts[:, 6].sum() == 0
    # Rows are true classes, columns predictions.
    np.testing.assert_array_equal(confusion_matrix([0, 0, 1], [1, 1, 1], 2),
                                  [[0, 2], [0, 1]])
    assert np.issubdtype(counts.dtype, np.integer)


@pytest.mark.parametrize("labels, predictions", [([0, 3], [0, 1]), ([0, 1], [3, 1]),
                                                 ([-1, 1], [0, 1])])
def test_confusion_matrix_refuses_a_class_outside_the_dataset(labels, predictions):
    # scikit-learn would leave such an image out of the counts.
    with pytest.raises(ValueError, match="classes 0 to 2"):
        confusion_matrix(labels, predictions, 3)


# ------------------------------------------------------------------ paired t-test


def scipy_t_test(first, second):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns on degenerate samples
        result = ttest_rel(first, second)
    return float(result.statistic), float(result.pvalue)


@pytest.mark.parametrize("length", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paired_t_test_matches_scipy(seed, length):
    rng = np.random.default_rng(seed)
    first = 0.8 + 0.05 * rng.standard_normal(length)
    second = first - rng.normal(0.01, 0.02, length)
    statistic, p_value = paired_t_test(first, second)
    expected_statistic, expected_p = scipy_t_test(first, second)
    assert isinstance(statistic, float) and isinstance(p_value, float)
    assert statistic == pytest.approx(expected_statistic, rel=RTOL, abs=0)
    assert p_value == pytest.approx(expected_p, rel=RTOL, abs=0)
    assert 0 < p_value <= 1
    # Swapping the methods flips the sign only.
    swapped = paired_t_test(second, first)
    assert swapped[0] == pytest.approx(-statistic, rel=RTOL)
    assert swapped[1] == pytest.approx(p_value, rel=RTOL)


def test_paired_t_test_sign_convention_and_a_known_value():
    better = [0.91, 0.88, 0.93, 0.90, 0.92]
    worse = [0.85, 0.86, 0.88, 0.87, 0.84]
    statistic, p_value = paired_t_test(better, worse)
    assert statistic > 0
    assert (statistic, p_value) == pytest.approx(scipy_t_test(better, worse), rel=RTOL)
    assert p_value < 0.05
    # Hand computation: differences 0.06, 0.02, 0.05, 0.03, 0.08.
    differences = np.array([0.06, 0.02, 0.05, 0.03, 0.08])
    by_hand = differences.mean() / (differences.std(ddof=1) / math.sqrt(5))
    assert statistic == pytest.approx(by_hand, rel=1e-9)
    assert paired_t_test(worse, better)[0] < 0


@pytest.mark.parametrize("values", [[0.7, 0.75, 0.8, 0.72], [0.5, 0.5], [0.1] * 3])
def test_paired_t_test_identical_inputs_give_nan_like_scipy(values):
    assert all(math.isnan(x) for x in scipy_t_test(values, values))
    assert all(math.isnan(x) for x in paired_t_test(values, values))


@pytest.mark.parametrize("first, second", [([0.8], [0.7]), ([0.8], [0.8]), ([], [])])
def test_paired_t_test_fewer_than_two_pairs_gives_nan_like_scipy(first, second):
    assert all(math.isnan(x) for x in scipy_t_test(first, second))
    assert all(math.isnan(x) for x in paired_t_test(first, second))


@pytest.mark.parametrize("shift", [0.25, -0.5, 1.0])
def test_paired_t_test_constant_nonzero_difference_matches_scipy(shift):
    # Exactly representable shifts: the differences are exactly equal, variance 0.
    second = np.array([0.5, 0.25, 0.75, 0.125])
    first = second + shift
    assert np.all(first - second == shift)
    expected_statistic, expected_p = scipy_t_test(first, second)
    assert expected_statistic == math.copysign(math.inf, shift) and expected_p == 0.0
    statistic, p_value = paired_t_test(first, second)
    assert statistic == expected_statistic
    assert p_value == expected_p
    assert isinstance(statistic, float) and isinstance(p_value, float)


@pytest.mark.parametrize("count", [3, 6])
def test_paired_t_test_equal_differences_whose_mean_rounds_give_inf(count):
    # Every difference is exactly 0.1, but their float mean is not: SciPy sees a tiny
    # spread and gives a huge finite t. No spread is no spread: (inf, 0.0), so that
    # the reports print n/a.
    first, second = [0.1] * count, [0.0] * count
    assert np.mean(np.subtract(first, second)) != 0.1
    assert math.isfinite(scipy_t_test(first, second)[0])
    assert paired_t_test(first, second) == (math.inf, 0.0)
    assert paired_t_test(second, first) == (-math.inf, 0.0)


def test_paired_t_test_differences_equal_but_for_rounding_are_scipys_without_warning():
    # 0.4 - 0.3 != 0.6 - 0.5 in floats: a tiny spread, a huge t, and SciPy warns of
    # precision loss (the reports test counts of correct images instead).
    first, second = [0.4, 0.6], [0.3, 0.5]
    assert np.ptp(np.subtract(first, second)) > 0
    with pytest.warns(RuntimeWarning, match="Precision loss"):
        ttest_rel(first, second)
    statistic, p_value = paired_t_test(first, second)
    assert (statistic, p_value) == pytest.approx(scipy_t_test(first, second), rel=RTOL)
    assert statistic > 1e12 and p_value < 1e-12


def test_importing_the_reports_loads_neither_tensorflow_nor_sklearn_nor_scipy():
    # evaluate.py imports them before parsing its flags; scikit-learn and SciPy take
    # about a second to import, so the metrics import them on first use.
    code = ("import sys, playing_distraction.reports; print(sorted("
            "{'tensorflow', 'keras', 'sklearn', 'scipy'} & set(sys.modules)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"
