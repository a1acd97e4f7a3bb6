"""Tables 1-2 of the hallucinated-saliency paper (PAPERS.md §2): accuracy against the
number of training images per class, from the run folders of a k-shot grid
(``train.py --shots 1 2 3 5 ...``).

One row per method, one column per k and an AVG column; cells are test accuracy in
percent, mean ± sample std over the seeds, the best mean of a column in bold. AVG is
the mean over k of each seed's accuracies, then mean ± std over the seeds that have
every k. A second table gives the paired t-test of each method against the baseline
per k (pairs: seeds with that k in both); a PNG plots accuracy against k with error
bars.

This module does not import TensorFlow.
"""

from pathlib import Path

import numpy as np

from .errors import UserError
from .reports import (ALPHA, Table, _best_columns, mean_std, run_rows, save_accuracy_plot,
                      t_test_cell, write_rows, write_tables)
from .runs import Method
from .splits import shot_label, shot_order

FIGURE = "kshot.png"


def grid_of(methods):
    """The k of every run given, in increasing order, "all" last."""
    return sorted({run.shots for m in methods for run in m.runs}, key=shot_order)


def at_k(method, scores, shots):
    """The method restricted to its runs with k = ``shots``, and their scores."""
    chosen = [index for index, run in enumerate(method.runs) if run.shots == shots]
    return (Method(method.name, [method.runs[index] for index in chosen]),
            [scores[method.name][index] for index in chosen])


def seed_averages(method, scores, grid):
    """Each seed's accuracy averaged over the grid's k, for the seeds that have every k."""
    by_seed = {}
    for run, score in zip(method.runs, scores[method.name]):
        by_seed.setdefault(run.seed, {})[run.shots] = score["accuracy"]
    return [np.mean([values[k] for k in grid]) for seed, values in sorted(by_seed.items())
            if set(values) == set(grid)]


def kshot_tables(methods, scores):
    """The accuracy table and the p-value table of a k-shot grid."""
    grid = grid_of(methods)
    columns = [shot_label(k) for k in grid] + ["AVG"]
    values = []  # per method: per column, accuracies in percent
    for method in methods:
        row = [[100 * s["accuracy"] for s in at_k(method, scores, k)[1]] for k in grid]
        row.append([100 * value for value in seed_averages(method, scores, grid)])
        values.append(row)
    cells = [[mean_std(cell, 1) if cell else "—" for cell in row] for row in values]
    bold = set()
    for c in range(len(columns)):
        present = [(r, np.mean(row[c])) for r, row in enumerate(values) if row[c]]
        if present:
            best = _best_columns([mean for _, mean in present])
            bold |= {(present[index][0], c) for index in best}
    counts = ", ".join(f"{m.name}: {len({run.seed for run in m.runs})}" for m in methods)
    accuracy = Table(
        "Accuracy (%) by training images per class (k-shot)", "Method",
        [m.name for m in methods], columns, cells, bold,
        f"Test accuracy in percent, mean ± sample std over seeds ({counts}); k training "
        "images per class, 5 validation and 5 test images per class drawn per seed from "
        "all of a class's images; 'all': every image not drawn for validation or test. "
        "AVG: each seed's mean over k, over the seeds that have every k. Best mean of a "
        "column in bold.")
    p_rows, p_cells = [], []
    baseline = methods[0]
    for method in methods[1:]:
        row = []
        for k in grid:
            ours, our_scores = at_k(method, scores, k)
            theirs, their_scores = at_k(baseline, scores, k)
            row.append(t_test_cell(theirs, ours, {ours.name: our_scores,
                                                  theirs.name: their_scores}))
        p_rows.append(method.name)
        p_cells.append(row)
    p_values = Table(
        f"p-value of the paired t-test on accuracy against {baseline.name} (k-shot)",
        "Method", p_rows, [shot_label(k) for k in grid], p_cells,
        note=f"Two-tailed, over the seeds both have at that k; * marks p < {ALPHA}; n/a "
             "with fewer than two pairs or no spread.")
    return {"kshot": accuracy, "kshot_p": p_values}


def kshot_figure(methods, scores, path):
    """Accuracy (%) against k per method, mean with sample-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = grid_of(methods)
    figure, axes = plt.subplots(figsize=(1.2 + 0.8 * len(grid), 3.6))
    for offset, method in enumerate(methods):
        means, spreads, positions = [], [], []
        for position, k in enumerate(grid):
            accuracies = [100 * s["accuracy"] for s in at_k(method, scores, k)[1]]
            if accuracies:
                positions.append(position + 0.06 * (offset - (len(methods) - 1) / 2))
                means.append(np.mean(accuracies))
                spreads.append(np.std(accuracies, ddof=1) if len(accuracies) > 1 else 0.0)
        axes.errorbar(positions, means, yerr=spreads, marker="o", capsize=3,
                      label=method.name)
    axes.set_xticks(range(len(grid)), [shot_label(k) for k in grid])
    save_accuracy_plot(figure, axes, "training images per class (k)", path)


def write_kshot_reports(methods, out_dir):
    """Write the k-shot tables (.md, .tex, .csv), runs.csv (with a shots column) and
    the figure to ``out_dir``; returns the tables by file stem."""
    scores = {m.name: [run.scores() for run in m.runs] for m in methods}
    tables = kshot_tables(methods, scores)
    rows = run_rows(methods, scores)
    runs = [run for m in methods for run in m.runs]
    for row, run in zip(rows, runs):
        row["shots"] = shot_label(run.shots)
    out_dir = Path(out_dir)
    try:
        write_tables(tables, out_dir)
        write_rows(out_dir / "runs.csv", rows)
        kshot_figure(methods, scores, out_dir / FIGURE)
    except OSError as error:
        raise UserError(f"cannot write the reports to {out_dir}: {error.strerror}") from None
    return tables
