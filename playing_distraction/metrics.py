"""Classification metrics and the paired t-test, from saved predictions.

The paper reports accuracy, precision, recall and F1 (Tables 1 and 3), their macro
and weighted averages and the per-class true-positive rate (Tables 5 and 6), and
compares methods with a paired two-tailed t-test over repetitions at α = 0.05
(Morales et al., 2021, Sec. 4.3; PAPERS.md §1). Top-5 accuracy is the CAM papers'
second measure (PAPERS.md §3).

The numbers come from the maintained implementations rather than our own:
scikit-learn's ``confusion_matrix``, ``precision_recall_fscore_support`` and
``top_k_accuracy_score``, and SciPy's ``ttest_rel``. What is ours is the choice of
their arguments and the degenerate cases they leave open or warn about:

- Averages run over all K classes of the dataset (``labels=range(K)``), also when
  a class is absent from the test labels or never predicted; such a class scores 0
  (``zero_division=0``) and still counts in the macro averages, while the weighted
  averages weight each class by its support.
- Top-k with k >= K is 1.0 (scikit-learn's value, without its warning). Among equal
  scores the higher class index ranks first, as in ``top_k_accuracy_score``; with
  K = 2, which scikit-learn takes only as one column of scores, the same ranking is
  kept.
- The t-test with fewer than two pairs or identical pairs gives (nan, nan), and a
  constant nonzero difference (±inf, 0.0), decided here so that no SciPy warning
  leaks (the values are SciPy's).

The tests check every number against scikit-learn and SciPy.

This module does not import TensorFlow. scikit-learn and SciPy are imported on
first use: together they take about a second to import, which ``evaluate.py``
would otherwise spend before it can reject a bad flag.
"""

import math
import warnings

import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    """counts[i, j] = images of class i predicted as class j; (K, K) int64.

    scikit-learn would silently leave out a class outside 0..K-1; here it is an error,
    so every image is counted."""
    from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be classes 0 to {num_classes - 1}")
    return sklearn_confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def top_k_accuracy(labels, probabilities, k):
    """Share of images whose class is among the k highest probabilities
    (scikit-learn's ``top_k_accuracy_score``: among equal scores the higher class
    index ranks first). k >= K gives 1.0."""
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = probabilities.shape[1]
    if k >= num_classes:
        return 1.0
    from sklearn.metrics import top_k_accuracy_score

    if num_classes == 2:
        # scikit-learn reads two classes as a binary problem, scored by one column
        # against a threshold. A third class below every score keeps the ranking.
        lowest = np.nextafter(probabilities.min(), -np.inf)
        probabilities = np.column_stack([probabilities,
                                         np.full(len(probabilities), lowest)])
    # labels=: the test set need not contain every class.
    return float(top_k_accuracy_score(labels, probabilities, k=k,
                                      labels=np.arange(probabilities.shape[1])))


def classification_metrics(labels, probabilities):
    """Every metric of the paper's tables for one run.

    labels: (N,) true classes; probabilities: (N, K). Returns a dict of floats plus
    ``per_class_tpr`` (K,) and ``confusion`` (K, K).
    """
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, np.float64)
    classes = np.arange(probabilities.shape[1])
    predictions = np.argmax(probabilities, axis=1)
    counts = confusion_matrix(labels, predictions, len(classes))
    result = {"accuracy": float(np.trace(counts) / counts.sum())}
    for average in ("macro", "weighted"):
        scores = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                 average=average, zero_division=0)
        for name, value in zip(("precision", "recall", "f1"), scores):
            result[f"{name}_{average}"] = float(value)
    result["top5_accuracy"] = top_k_accuracy(labels, probabilities, 5)
    _, recall, _, _ = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                      average=None, zero_division=0)
    result["per_class_tpr"] = recall
    result["confusion"] = counts
    return result


def paired_t_test(first, second):
    """Two-tailed paired t-test of ``first`` against ``second`` (the same seeds in the
    same order): (t, p) from SciPy's ``ttest_rel``. Fewer than two pairs or identical
    pairs: (nan, nan); a constant nonzero difference: (±inf, 0.0)."""
    first = np.asarray(first, np.float64)
    second = np.asarray(second, np.float64)
    differences = first - second
    if len(differences) < 2:  # SciPy: nan with a RuntimeWarning
        return math.nan, math.nan
    if np.all(differences == differences[0]):  # no spread; SciPy warns on a nonzero one
        mean = float(differences[0])
        return (math.nan, math.nan) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        # Differences equal but for float rounding: SciPy's result, without its warning.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        result = ttest_rel(first, second)
    return float(result.statistic), float(result.pvalue)
