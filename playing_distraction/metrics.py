"""Classification metrics and the paired t-test, from saved predictions.

The paper reports accuracy, precision, recall and F1 (Tables 1 and 3), their macro
and weighted averages and the per-class true-positive rate (Tables 5 and 6), and
compares methods with a paired two-tailed t-test over repetitions at α = 0.05
(Morales et al., 2021, Sec. 4.3; PAPERS.md §1). Top-5 accuracy is the CAM papers'
second measure (PAPERS.md §3).

Averages run over all K classes of the dataset, and a class that is never predicted
has precision 0 (scikit-learn with ``labels=range(K), zero_division=0``). The tests
check every number against scikit-learn and SciPy.

This module does not import TensorFlow.
"""

import math

import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    """counts[i, j] = images of class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def top_k_accuracy(labels, probabilities, k):
    """Share of images whose class is among the k highest probabilities (among equal
    scores the higher class index ranks first, as in scikit-learn's
    ``top_k_accuracy_score``)."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if k >= probabilities.shape[1]:
        return 1.0
    order = np.argsort(probabilities, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=1)))


def _safe_divide(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)),
                     where=denominator > 0)


def classification_metrics(labels, probabilities):
    """Every metric of the paper's tables for one run.

    labels: (N,) true classes; probabilities: (N, K). Returns a dict of floats plus
    ``per_class_tpr`` (K,) and ``confusion`` (K, K).
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = probabilities.shape[1]
    predictions = np.argmax(probabilities, axis=1)
    counts = confusion_matrix(labels, predictions, num_classes)
    true_positives = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1).astype(np.float64)
    predicted = counts.sum(axis=0).astype(np.float64)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    weights = support / support.sum()
    return {
        "accuracy": float(true_positives.sum() / len(labels)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float(weights @ precision),
        "recall_weighted": float(weights @ recall),
        "f1_weighted": float(weights @ f1),
        "top5_accuracy": top_k_accuracy(labels, probabilities, 5),
        "per_class_tpr": recall,
        "confusion": counts,
    }


def paired_t_test(first, second):
    """Two-tailed paired t-test of ``first`` against ``second`` (the same seeds in the
    same order): (t, p), as SciPy's ``ttest_rel`` gives. Fewer than two pairs or
    identical pairs: (nan, nan); a constant nonzero difference: (±inf, 0)."""
    from scipy.stats import t as student_t

    differences = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    count = len(differences)
    if count < 2:
        return math.nan, math.nan
    deviation = differences.std(ddof=1)
    if deviation == 0:
        mean = differences.mean()
        return (math.nan, math.nan) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    statistic = differences.mean() / (deviation / math.sqrt(count))
    return float(statistic), float(2 * student_t.sf(abs(statistic), count - 1))
