"""evaluate.py and its tables: cells from chosen predictions, marks, formats, bad input."""

import csv
import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, recall_score

from playing_distraction.cli import evaluate_main
from playing_distraction.reports import (cost_table, metrics_table, per_class_table,
                                         t_test_cell, write_reports)
from playing_distraction.runs import load_methods

EVALUATE = str(Path(__file__).resolve().parent.parent / "evaluate.py")
LABELS = [0, 1] * 5  # ten test images, two classes: accuracy k / 10
OCCLUSION_NAMES = {"none": "baseline", "zero": "0-occlusion", "one": "1-occlusion",
                   "random": "R-occlusion"}


def hits(labels, correct, num_classes=2):
    """Predictions with the first ``correct`` images right and the rest wrong."""
    return [label if i < correct else (label + 1) % num_classes
            for i, label in enumerate(labels)]


def write_run(directory, labels, predictions, *, seed=0, occlusion="none", dataset="toy",
              class_names=("cat", "dog"), items=None, epochs_run=10, best_epoch=5,
              seconds_per_epoch=3.0):
    """A finished run folder as training.py leaves it, with the given predictions."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    num_classes = len(class_names)
    (directory / "config.json").write_text(json.dumps(
        {"dataset": dataset, "occlusion": occlusion, "seed": seed,
         "class_names": list(class_names)}))
    (directory / "metrics.json").write_text(json.dumps(
        {"epochs_run": epochs_run, "best_epoch": best_epoch,
         "seconds_per_epoch": seconds_per_epoch}))
    # One history row per epoch run (evaluate.py draws curves.png from it).
    (directory / "history.csv").write_text("epoch,accuracy,loss\n" + "".join(
        f"{epoch},0.5,1.0\n" for epoch in range(epochs_run)))
    items = items if items is not None else [f"img{i:03d}.jpg" for i in range(len(labels))]
    with open(directory / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "label", "prediction", *(f"p{k}" for k in range(num_classes))])
        for item, label, prediction in zip(items, labels, predictions):
            probabilities = [0.2 / (num_classes - 1)] * num_classes
            probabilities[prediction] = 0.8
            writer.writerow([item, label, prediction, *probabilities])
    return directory


def write_group(root, occlusion, accuracies, seeds, **kwargs):
    """One run per (accuracy, seed) on LABELS, in the given order."""
    return [write_run(Path(root) / f"{occlusion}-seed{seed}", LABELS,
                      hits(LABELS, round(accuracy * len(LABELS))), seed=seed,
                      occlusion=occlusion, **kwargs)
            for accuracy, seed in zip(accuracies, seeds)]


def expected_cell(values, digits=3):
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def scores_of(methods):
    return {m.name: [run.scores() for run in m.runs] for m in methods}


def markdown_row(table, name):
    return next(line for line in table.markdown().splitlines() if line.startswith(f"| {name} |"))


@pytest.fixture
def three_methods(tmp_path):
    """baseline 0.5/0.6/0.7, 0-occlusion 0.6/0.8/0.9, 1-occlusion one run at 0.5."""
    baseline = write_group(tmp_path, "none", [0.5, 0.6, 0.7], [0, 1, 2])
    zero = write_group(tmp_path, "zero", [0.6, 0.8, 0.9], [0, 1, 2])
    one = write_group(tmp_path, "one", [0.5], [0])
    return load_methods(baseline, [zero, one])


# ------------------------------------------------------------------ metrics table


def test_metrics_cells_are_mean_and_sample_std_of_sklearns_metrics(three_methods):
    table = metrics_table(three_methods, scores_of(three_methods))
    assert table.columns == ["baseline", "0-occlusion", "1-occlusion"]
    # Hand-computed: the sample std of 0.5, 0.6, 0.7 is 0.1 (the population std is 0.082).
    assert table.cells[0] == ["0.600 ± 0.100", "0.767 ± 0.153", "0.500"]
    expected = {key: [] for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro",
                                    "precision_weighted", "recall_weighted", "f1_weighted")}
    for method in three_methods:
        values = {key: [] for key in expected}
        for run in method.runs:
            predictions = np.argmax(run.probabilities, axis=1)
            values["accuracy"].append(accuracy_score(run.labels, predictions))
            for average in ("macro", "weighted"):
                p, r, f, _ = precision_recall_fscore_support(
                    run.labels, predictions, labels=[0, 1], average=average, zero_division=0)
                values[f"precision_{average}"].append(p)
                values[f"recall_{average}"].append(r)
                values[f"f1_{average}"].append(f)
        for key in expected:
            expected[key].append(expected_cell(values[key]))
    assert table.rows[:7] == ["Accuracy", "Precision (macro)", "Recall (macro)", "F1 (macro)",
                              "Precision (weighted)", "Recall (weighted)", "F1 (weighted)"]
    assert table.cells[:7] == list(expected.values())
    # Two classes: the true class is always among the top five, so the row says
    # nothing and is left out (it is there with more than five classes, below).
    assert "Top-5 accuracy" not in table.rows
    assert table.rows[7].startswith("p-value")


def test_the_top5_row_is_there_with_more_than_five_classes(tmp_path):
    names = tuple(f"c{k}" for k in range(6))
    labels = [k % 6 for k in range(12)]
    baseline = [write_run(tmp_path / f"none-seed{seed}", labels, hits(labels, 6, 6),
                          seed=seed, class_names=names) for seed in (0, 1)]
    zero = [write_run(tmp_path / f"zero-seed{seed}", labels, hits(labels, 9, 6), seed=seed,
                      occlusion="zero", class_names=names) for seed in (0, 1)]
    methods = load_methods(baseline, [zero])
    table = metrics_table(methods, scores_of(methods))
    assert table.rows[7] == "Top-5 accuracy"
    # The written probabilities put 0.8 on the prediction and 0.04 elsewhere: ties that
    # top_k_accuracy breaks by class order; the cell is the mean of per-run values.
    expected = [expected_cell([run.scores()["top5_accuracy"] for run in m.runs])
                for m in methods]
    assert table.cells[7] == expected


def test_markdown_bolds_the_best_mean_and_every_tie(three_methods):
    table = metrics_table(three_methods, scores_of(three_methods))
    markdown = table.markdown()
    assert markdown.startswith("**Test metrics**\n")
    assert "| Metric | baseline | 0-occlusion | 1-occlusion |" in markdown
    assert markdown_row(table, "Accuracy") == \
        "| Accuracy | 0.600 ± 0.100 | **0.767 ± 0.153** | 0.500 |"
    # Two classes: no Top-5 row (it would be 1 everywhere).
    assert "| Top-5 accuracy |" not in markdown
    # The t-test row is never bold.
    assert "**" not in markdown_row(table, "p-value (paired t-test on accuracy vs baseline)")


def test_a_tie_between_two_of_three_columns_is_bold_in_both(tmp_path):
    baseline = write_group(tmp_path, "none", [0.6, 0.8], [0, 1])
    zero = write_group(tmp_path, "zero", [0.8, 0.6], [1, 0])
    one = write_group(tmp_path, "one", [0.5, 0.7], [0, 1])
    methods = load_methods(baseline, [zero, one])
    table = metrics_table(methods, scores_of(methods))
    assert {(0, 0), (0, 1)} <= table.bold and (0, 2) not in table.bold
    assert markdown_row(table, "Accuracy") == \
        "| Accuracy | **0.700 ± 0.141** | **0.700 ± 0.141** | 0.600 ± 0.141 |"


def test_equal_means_are_a_tie_even_when_their_floats_differ(tmp_path):
    # Accuracies 0.10 and 0.20 against 0.15 twice: both means are exactly 3/20, but
    # (0.1 + 0.2) / 2 is 0.15000000000000002 in floating point.
    labels = [0, 1] * 10
    baseline = [write_run(tmp_path / f"b{seed}", labels, hits(labels, correct), seed=seed)
                for seed, correct in ((0, 2), (1, 4))]
    zero = [write_run(tmp_path / f"z{seed}", labels, hits(labels, 3), seed=seed,
                      occlusion="zero") for seed in (0, 1)]
    methods = load_methods(baseline, [zero])
    table = metrics_table(methods, scores_of(methods))
    assert table.cells[0] == ["0.150 ± 0.071", "0.150 ± 0.000"]
    assert {(0, 0), (0, 1)} <= table.bold, "a tie of means must be bold in both columns"


def test_latex_escapes_and_bolds(three_methods):
    latex = metrics_table(three_methods, scores_of(three_methods)).latex()
    assert "±" not in latex
    assert r"Accuracy & 0.600 $\pm$ 0.100 & \textbf{0.767 $\pm$ 0.153} & 0.500 \\" in latex
    assert "**" not in latex and "Top-5" not in latex
    assert r"p $<$ 0.05" in latex and "p < 0.05" not in latex
    assert latex.startswith("\\begin{table}\n") and latex.endswith("\\end{table}\n")
    assert r"\begin{tabular}{lccc}" in latex


def test_latex_escapes_underscore_percent_and_less_than_in_class_names(tmp_path):
    names = ("cat_1", "100% dog", "x<y")
    labels = [0, 1, 2] * 2
    runs = [write_run(tmp_path / "b", labels, labels, class_names=names)]
    methods = load_methods(runs, [])
    latex = per_class_table(methods, scores_of(methods), names).latex()
    assert r"cat\_1 & \textbf{1.000} \\" in latex
    assert r"100\% dog & " in latex
    assert r"x$<$y & " in latex
    for raw in ("cat_1", "100% dog", "x<y"):
        assert raw not in latex


def test_csv_has_no_marks_and_parses_back_to_the_cells(three_methods):
    table = metrics_table(three_methods, scores_of(three_methods))
    rows = list(csv.reader(io.StringIO(table.csv())))
    assert rows[0] == ["Metric", "baseline", "0-occlusion", "1-occlusion"]
    assert rows[1:] == [[name, *cells] for name, cells in zip(table.rows, table.cells)]
    assert rows[1] == ["Accuracy", "0.600 ± 0.100", "0.767 ± 0.153", "0.500"]
    assert "**" not in table.csv() and "textbf" not in table.csv()


# ------------------------------------------------------------------ t-test


def t_test_of(tmp_path, baseline, method):
    """baseline, method: lists of (accuracy, seed) in folder order."""
    base_runs = write_group(tmp_path, "none", *zip(*baseline))
    method_runs = write_group(tmp_path, "zero", *zip(*method))
    methods = load_methods(base_runs, [method_runs])
    scores = scores_of(methods)
    cell = t_test_cell(methods[0], methods[1], scores)
    assert metrics_table(methods, scores).cells[-1] == ["—", cell]
    return cell


@pytest.mark.parametrize("baseline, method, significant", [
    # By seed the differences are 0.1, 0.2, 0.1 (p = 0.057); by position 0.4, 0, 0.
    ([(0.5, 1), (0.6, 2), (0.8, 3)], [(0.9, 3), (0.6, 1), (0.8, 2)], False),
    # By seed 0.1, 0.2, 0.1, 0.2 (p = 0.014); by position something else.
    ([(0.5, 1), (0.6, 2), (0.3, 3), (0.4, 4)],
     [(0.6, 4), (0.4, 3), (0.6, 1), (0.8, 2)], True),
])
def test_t_test_pairs_runs_by_seed(tmp_path, baseline, method, significant):
    cell = t_test_of(tmp_path, baseline, method)
    by_seed = dict((seed, accuracy) for accuracy, seed in method)
    first = [by_seed[seed] for _, seed in baseline]
    second = [accuracy for accuracy, _ in baseline]
    p = ttest_rel(first, second).pvalue
    assert (p < 0.05) == significant and abs(p - 0.05) > 0.005
    assert cell == f"{p:.3f}" + ("*" if significant else "")
    by_position = ttest_rel([accuracy for accuracy, _ in method], second).pvalue
    assert f"{by_position:.3f}" not in cell


@pytest.mark.parametrize("baseline, method", [
    pytest.param([(0.5, 0)], [(0.7, 0)], id="one-run-each"),
    pytest.param([(0.5, 0), (0.6, 1)], [(0.7, 2), (0.9, 3)], id="no-common-seed"),
    pytest.param([(0.5, 0), (0.6, 1)], [(0.7, 1), (0.9, 3)], id="one-common-seed"),
    pytest.param([(0.5, 0), (0.6, 1)], [(0.5, 0), (0.6, 1)], id="no-differences"),
    pytest.param([(0.5, 0), (0.6, 1)], [(0.6, 0), (0.7, 1)], id="equal-differences"),
    # The differences are 1/10 twice, exactly, but 0.4 - 0.3 != 0.6 - 0.5 in floats.
    pytest.param([(0.3, 0), (0.5, 1)], [(0.4, 0), (0.6, 1)], id="equal-differences-in-floats"),
])
def test_t_test_is_na_without_two_pairs_or_without_spread(tmp_path, baseline, method):
    assert t_test_of(tmp_path, baseline, method) == "n/a"


# ------------------------------------------------------------------ per class, cost


def test_per_class_cells_are_sklearn_recall(tmp_path):
    names = ("apple", "pear", "plum")
    labels = [0, 1, 2] * 4
    rng = np.random.default_rng(0)
    groups = []
    for occlusion in ("none", "random"):
        runs = []
        for seed in (0, 1):
            predictions = [label if rng.random() < 0.6 else int(rng.integers(3))
                           for label in labels]
            runs.append(write_run(tmp_path / f"{occlusion}{seed}", labels, predictions,
                                  seed=seed, occlusion=occlusion, class_names=names))
        groups.append(runs)
    methods = load_methods(groups[0], groups[1:])
    table = per_class_table(methods, scores_of(methods), names)
    assert table.rows == list(names)
    assert table.columns == ["baseline", "R-occlusion"]
    expected, bold = [], set()
    recalls = [[recall_score(labels, np.argmax(run.probabilities, axis=1), labels=[0, 1, 2],
                             average=None, zero_division=0) for run in m.runs] for m in methods]
    for k in range(3):
        expected.append([expected_cell([r[k] for r in method]) for method in recalls])
        sums = [sum(Fraction(r[k]) for r in method) for method in recalls]  # exact: quarters
        bold |= {(k, c) for c, total in enumerate(sums) if total == max(sums)}
    assert table.cells == expected
    assert table.bold == bold
    assert len({cell for row in expected for cell in row}) > 2  # the data are not trivial


def test_cost_cells_come_from_metrics_json(tmp_path):
    baseline = [write_run(tmp_path / f"b{seed}", LABELS, LABELS, seed=seed, epochs_run=epochs,
                          seconds_per_epoch=seconds)
                for seed, epochs, seconds in ((0, 10, 2.0), (1, 11, 2.5), (2, 15, 4.0))]
    one = [write_run(tmp_path / "o", LABELS, LABELS, occlusion="one", epochs_run=7,
                     seconds_per_epoch=12.34)]
    table = cost_table(load_methods(baseline, [one]))
    assert table.rows == ["Epochs", "Seconds per epoch"]
    assert table.cells == [["12.0 ± 2.6", "7.0"], ["2.8 ± 1.0", "12.3"]]
    assert table.cells[0][0] == expected_cell([10, 11, 15], digits=1)
    assert table.cells[1][0] == expected_cell([2.0, 2.5, 4.0], digits=1)


# ------------------------------------------------------------------ write_reports


def test_write_reports_writes_every_table_and_runs_csv(tmp_path, three_methods):
    out = tmp_path / "out" / "reports"
    tables = write_reports(three_methods, out)
    assert set(tables) == {"metrics", "per_class_tpr", "cost"}
    expected = {f"{stem}.{suffix}" for stem in tables for suffix in ("md", "tex", "csv")}
    confusions = {f"confusion_{name}.csv" for name in ("baseline", "0-occlusion", "1-occlusion")}
    assert {path.name for path in out.iterdir()} == expected | {"runs.csv"} | confusions
    for stem, table in tables.items():
        assert (out / f"{stem}.md").read_text() == table.markdown()
        assert (out / f"{stem}.tex").read_text() == table.latex()
        assert (out / f"{stem}.csv").read_text() == table.csv()
    assert tables["per_class_tpr"].rows == ["cat", "dog"]
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["method"], row["seed"], float(row["accuracy"])) for row in rows] == [
        ("baseline", "0", 0.5), ("baseline", "1", 0.6), ("baseline", "2", 0.7),
        ("0-occlusion", "0", 0.6), ("0-occlusion", "1", 0.8), ("0-occlusion", "2", 0.9),
        ("1-occlusion", "0", 0.5)]
    assert [Path(row["run"]) for row in rows] == [run.path for m in three_methods for run in m.runs]
    for key in ("precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "top5_accuracy", "epochs_run",
                "seconds_per_epoch"):
        assert key in rows[0]
    assert float(rows[0]["top5_accuracy"]) == 1.0 and rows[0]["epochs_run"] == "10"


def test_confusion_matrix_is_sklearns_summed_over_a_methods_runs(tmp_path, three_methods):
    from sklearn.metrics import confusion_matrix

    write_reports(three_methods, tmp_path)
    with open(tmp_path / "confusion_0-occlusion.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["true \\ predicted", "cat", "dog"]
    assert [row[0] for row in rows[1:]] == ["cat", "dog"]
    expected = sum(confusion_matrix(run.labels, run.probabilities.argmax(axis=1), labels=[0, 1])
                   for run in three_methods[1].runs)
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], int), expected)


# ------------------------------------------------------------------ occlusion (Table 2)


def one_hot(labels, predictions, num_classes=2):
    return np.eye(num_classes)[predictions] * 0.8 + 0.1


def occlusion_results(methods, corruption, correct):
    """``evaluation.ModelResults`` as evaluate_models makes it, with the predictions
    of run ``r`` of method ``m`` on pattern ``p`` right on ``correct[m][p][r]`` of the
    ten LABELS images."""
    from playing_distraction.evaluation import ModelResults
    from playing_distraction.metrics import classification_metrics

    rows = []
    for p, setting in enumerate(corruption.settings):
        for m, method in enumerate(methods):
            for r, run in enumerate(method.runs):
                predictions = hits(LABELS, correct[m][p][r])
                rows.append({"corruption": corruption.name, "setting": setting,
                             "method": method.name, "run": run,
                             "scores": classification_metrics(LABELS,
                                                              one_hot(LABELS, predictions))})
    shares = {method.name: np.linspace(0.1, 0.3, 10) for method in methods}
    return ModelResults(rows, shares, shares, corruptions={corruption.name: corruption})


def test_occlusion_is_summarised_in_table_2_s_layout(tmp_path):
    from playing_distraction.corruptions import occlusion_corruption
    from playing_distraction.occluders import load_occluders
    from playing_distraction.reports import write_evaluation

    # Ratios the registered entry does not have: the tables must come from the object
    # the results carry, not from the registry.
    corruption = occlusion_corruption(load_occluders(), ratios=(0.3, 0.1), random_positions=1)
    patterns = [parameters["pattern"] for parameters in corruption.settings.values()]
    assert len(patterns) == 12
    baseline = write_group(tmp_path, "none", [0.5, 0.6, 0.7], [0, 1, 2])
    # Seeds in another order than the baseline's: the t-test pairs by seed.
    zero = write_group(tmp_path, "zero", [0.6, 0.8, 0.9], [2, 0, 1])
    methods = load_methods(baseline, [zero])
    rng = np.random.default_rng(4)
    correct = rng.integers(0, 11, (2, 12, 3))
    correct[1] = np.minimum(correct[1] + rng.integers(0, 4, (12, 3)), 10)
    out = tmp_path / "reports"
    tables, figures = write_evaluation(methods, out, occlusion_results(methods, corruption,
                                                                       correct))
    assert list(tables) == ["metrics", "per_class_tpr", "cost", "occlusion", "occlusion_p",
                            "inspection"]
    assert figures == ["occlusion.png"]
    assert (out / "occlusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(out.glob("occlusion_r*"))  # no table per pattern
    table = tables["occlusion"]
    assert table.rows == ["baseline", "0-occlusion"]
    assert table.columns == ["Clean", "30 % centre", "30 % random", "10 % centre",
                             "10 % random", "Avg. over occlusions"]
    assert "mean of the occluded columns" in table.note

    # Expected, computed here: a group pools the images of its three patterns (ten
    # each, so its accuracy is the mean of theirs); Avg. is the mean of the groups.
    groups = ["r30-centre", "r30-random", "r10-centre", "r10-random"]
    expected = {}  # method -> column -> accuracy (fraction) per run
    for m, method in enumerate(methods):
        columns = {"clean": [np.mean(run.probabilities.argmax(1) == run.labels)
                             for run in method.runs]}
        for group in groups:
            chosen = [p for p, pattern in enumerate(patterns) if pattern.group == group]
            assert len(chosen) == 3
            columns[group] = [np.mean([correct[m][p][r] / 10 for p in chosen]) for r in range(3)]
        columns["avg"] = list(np.mean([columns[group] for group in groups], axis=0))
        expected[method.name] = columns
    keys = ["clean", *groups, "avg"]
    assert table.cells == [[expected_cell(100 * np.array(expected[m.name][key]), digits=2)
                            for key in keys] for m in methods]
    for c, key in enumerate(keys):
        means = [np.mean(expected[m.name][key]) for m in methods]
        best = {r for r, mean in enumerate(means) if mean > max(means) - 1e-9}
        assert {r for r, col in table.bold if col == c} == best, key
    assert (out / "occlusion.md").read_text() == table.markdown()
    assert (out / "occlusion.csv").read_text() == table.csv()

    # p-values: SciPy's paired t-test over the seeds, per column.
    p_table = tables["occlusion_p"]
    assert p_table.rows == ["0-occlusion"] and p_table.columns == table.columns
    order = [2, 0, 1]  # the seeds of zero's runs, in run order
    for c, key in enumerate(keys):
        ours = [expected["0-occlusion"][key][order.index(seed)] for seed in (0, 1, 2)]
        p = ttest_rel(ours, expected["baseline"][key]).pvalue
        assert p_table.cells[0][c] == f"{p:.3f}" + ("*" if p < 0.05 else ""), key

    # runs.csv: a column per group and the average, after the metrics.
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [f"occlusion_{key}_accuracy" for key in [*groups, "avg"]]
    header = list(rows[0])
    assert header[header.index("top5_accuracy") + 1:][:5] == columns
    for row, (m, r) in zip(rows, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]):
        for key, column in zip([*groups, "avg"], columns):
            assert float(row[column]) == pytest.approx(expected[methods[m].name][key][r])
    # corruptions.csv keeps one row per pattern and run.
    with open(out / "corruptions.csv", newline="") as handle:
        corrupted = list(csv.DictReader(handle))
    assert [(row["setting"], row["method"]) for row in corrupted] == [
        (pattern.name, method) for pattern in patterns
        for method in ["baseline"] * 3 + ["0-occlusion"] * 3]
    assert float(corrupted[0]["accuracy"]) == correct[0][0][0] / 10


def test_occlusion_columns_follow_the_ratios_given_and_skip_empty_groups(tmp_path):
    from playing_distraction.corruptions import occlusion_corruption
    from playing_distraction.occluders import load_occluders

    corruption = occlusion_corruption(load_occluders(), ratios=(0.1, 0.2), random_positions=0)
    methods = load_methods(write_group(tmp_path, "none", [0.5], [0]), [])
    correct = np.full((1, 6, 1), 7)
    summary = corruption.summarize(methods, {
        setting: {"baseline": [row["scores"]]} for setting, row in zip(
            corruption.settings, occlusion_results(methods, corruption, correct).corrupted)})
    table = summary.tables["occlusion"]
    assert table.columns == ["Clean", "10 % centre", "20 % centre", "Avg. over occlusions"]
    assert table.cells == [["50.00", "70.00", "70.00", "70.00"]]
    assert summary.tables["occlusion_p"].rows == []
    assert list(summary.columns) == ["occlusion_r10-centre_accuracy",
                                     "occlusion_r20-centre_accuracy", "occlusion_avg_accuracy"]
    assert list(summary.figures) == ["occlusion.png"]


# ------------------------------------------------------------------ evaluate.py


def test_evaluate_main_end_to_end(tmp_path, capsys):
    baseline = write_group(tmp_path, "none", [0.5, 0.6], [0, 1])
    others = [write_group(tmp_path, occlusion, [0.7, 0.8], [0, 1])
              for occlusion in ("zero", "one", "random")]
    out = tmp_path / "reports"
    argv = ["--baseline", *map(str, baseline), "--out-dir", str(out), "--no-models"]
    for group in others:
        argv += ["--method", *map(str, group)]
    assert evaluate_main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    markdown = (out / "metrics.md").read_text()
    assert captured.out.startswith(markdown)
    assert "| Metric | baseline | 0-occlusion | 1-occlusion | R-occlusion |" in markdown
    assert "| Accuracy | 0.550 ± 0.071 | **0.750 ± 0.071** | **0.750 ± 0.071** | " \
           "**0.750 ± 0.071** |" in markdown
    assert (out / "runs.csv").is_file() and (out / "cost.tex").is_file()


def test_method_names_come_from_the_configs_not_the_order(tmp_path, capsys):
    baseline = write_group(tmp_path, "none", [0.5], [0])
    random = write_group(tmp_path, "random", [0.6], [0])
    zero = write_group(tmp_path, "zero", [0.7], [0])
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(baseline[0]), "--method", str(random[0]),
                          "--method", str(zero[0]), "--out-dir", str(out), "--no-models"]) == 0
    assert "| Metric | baseline | R-occlusion | 0-occlusion |" in capsys.readouterr().out


def test_runs_without_saved_models_need_no_models(tmp_path, capsys):
    """Robustness and inspection load model.keras; without it, one line says what to do."""
    baseline = write_group(tmp_path, "none", [0.5], [0])
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(baseline[0]), "--out-dir", str(out)]) == 1
    line = one_error_line(capsys.readouterr())
    assert "--no-models" in line and str(baseline[0]) in line


def one_error_line(captured):
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("evaluate.py: error: ")
    return lines[0]


def _other_dataset(root):
    return [write_group(root, "zero", [0.6], [0], dataset="other")[0]], "different datasets"


def _other_classes(root):
    return [write_group(root, "zero", [0.6], [0], class_names=("cat", "cow"))[0]], \
        "different class lists"


def _other_labels(root):
    labels = [1, 0] * 5
    return [write_run(root / "zero", labels, labels, occlusion="zero")], "different images"


def _other_items(root):
    items = [f"other{i}.jpg" for i in range(10)]
    return [write_run(root / "zero", LABELS, LABELS, occlusion="zero", items=items)], \
        "different images"


def _no_predictions(root):
    run = write_group(root, "zero", [0.6], [0])[0]
    (run / "predictions.csv").unlink()
    return [run], str(run / "predictions.csv")


def _no_folder(root):
    return [root / "nowhere"], str(root / "nowhere")


def _bad_row(root):
    run = write_group(root, "zero", [0.6], [0])[0]
    lines = (run / "predictions.csv").read_text().splitlines()
    lines[3] = "img002.jpg,zero,0,0.8,0.2"
    (run / "predictions.csv").write_text("\n".join(lines) + "\n")
    return [run], f"{run / 'predictions.csv'}:4: "


def _short_row(root):
    run = write_group(root, "zero", [0.6], [0])[0]
    lines = (run / "predictions.csv").read_text().splitlines()
    lines[5] = "img004.jpg,0,0,0.8"
    (run / "predictions.csv").write_text("\n".join(lines) + "\n")
    return [run], f"{run / 'predictions.csv'}:6: "


def _not_text(root):
    run = write_group(root, "zero", [0.6], [0])[0]
    with open(run / "predictions.csv", "ab") as handle:
        handle.write(b"\xff\xfe\x00broken,1,1,0.5,0.5\n")
    return [run], str(run / "predictions.csv")


def _two_occlusions(root):
    return [write_group(root / "a", "zero", [0.6], [0])[0],
            write_group(root / "b", "one", [0.6], [1])[0]], "several methods"


def _config_without_class_names(root):
    run = write_group(root, "zero", [0.6], [0])[0]
    config = json.loads((run / "config.json").read_text())
    del config["class_names"]
    (run / "config.json").write_text(json.dumps(config))
    return [run], f"{run / 'config.json'} lacks class_names"


@pytest.mark.parametrize("make", [_other_dataset, _other_classes, _other_labels, _other_items,
                                  _no_predictions, _no_folder, _bad_row, _short_row, _not_text,
                                  _two_occlusions, _config_without_class_names])
def test_bad_runs_give_one_line_and_exit_1(tmp_path, capsys, make):
    baseline = write_group(tmp_path / "base", "none", [0.5], [0])
    method, message = make(tmp_path / "method")
    out = tmp_path / "reports"
    code = evaluate_main(["--baseline", str(baseline[0]), "--method", *map(str, method),
                          "--out-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert message in one_error_line(captured)
    assert captured.out == ""
    assert not out.exists()


def test_a_baseline_of_two_occlusions_is_refused_like_a_method(tmp_path, capsys):
    baseline = [write_group(tmp_path / "a", "none", [0.5], [0])[0],
                write_group(tmp_path / "b", "zero", [0.6], [1])[0]]
    code = evaluate_main(["--baseline", *map(str, baseline),
                          "--out-dir", str(tmp_path / "reports")])
    captured = capsys.readouterr()
    assert code == 1, "a --baseline mixing occlusions none and zero made a table"
    one_error_line(captured)


def test_missing_baseline_is_an_argparse_error(tmp_path, capsys):
    run = write_group(tmp_path, "zero", [0.6], [0])[0]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--method", str(run)])
    assert exit_info.value.code == 2
    assert "--baseline" in one_error_line(capsys.readouterr())


def test_the_script_reports_a_bad_run_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, EVALUATE, "--baseline", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"evaluate.py: error: no run folder {tmp_path / 'nowhere'}\n"
    assert not (tmp_path / "reports").exists()
