"""Table 2 of Cen et al. (2021; PAPERS.md §5): accuracy on synthetically occluded test
images, the summary of evaluate.py's ``occlusion`` corruption (``corruptions.py``).

One row per method; columns Clean, then per ratio (in the order given) the centre
and the random positions, then "Avg. over occlusions". A group's accuracy for a run
is its accuracy over every test image of every pattern of the group (all
occluders, and all random positions); the average over occlusions is each run's
mean of the group columns (a decision: the paper does not say how it weighs its
centre and random columns, and the mean of the columns is what a reader of the
table can check). Clean is the run's own test accuracy, from its predictions.
Cells are percent, mean ± sample std over runs, the best mean of a column in
bold; a second table gives the paired t-test of each method against the
baseline per column (as ``kshot_reports`` does for its k), and ``<name>.png``
plots accuracy against the occlusion ratio, solid for centre, dashed for random.

This module does not import TensorFlow.
"""

import math
from fractions import Fraction

import numpy as np

from .corruptions import Summary
from .reports import (ALPHA, Table, _best_columns, mean_std, p_value_text,
                      save_accuracy_plot, seed_pairs)

CLEAN = "clean"
AVERAGE = "avg"


def _percent(ratio):
    return f"{round(ratio * 100, 6):g}"


def _correct(score):
    """(correct images, images) of one run's metrics, from its confusion matrix."""
    confusion = np.asarray(score["confusion"])
    return int(np.trace(confusion)), int(confusion.sum())


def group_columns(patterns):
    """{group: (label, ratio, kind)} in pattern order: the ratios as given, centre
    before random; groups without a pattern do not appear."""
    groups = {}
    for pattern in patterns:
        kind = "centre" if pattern.position == "centre" else "random"
        groups.setdefault(pattern.group, (f"{_percent(pattern.ratio)} % {kind}",
                                          pattern.ratio, kind))
    return groups


def run_accuracies(corruption, methods, scores):
    """({method: {column key: [exact accuracy (Fraction) of each run]}}, groups): the
    keys are ``CLEAN``, every group of ``group_columns`` and ``AVERAGE``."""
    patterns = [corruption.settings[setting]["pattern"] for setting in scores]
    groups = group_columns(patterns)
    values = {}
    for method in methods:
        columns = {CLEAN: [Fraction(*_correct(run.scores())) for run in method.runs]}
        for group in groups:
            totals = np.zeros((len(method.runs), 2), np.int64)
            for setting, pattern in zip(scores, patterns):
                if pattern.group == group:
                    totals += [_correct(score) for score in scores[setting][method.name]]
            columns[group] = [Fraction(int(correct), int(images)) for correct, images in totals]
        columns[AVERAGE] = [sum(run, Fraction(0)) / len(groups)
                            for run in zip(*(columns[group] for group in groups))]
        values[method.name] = columns
    return values, groups


def p_value_cell(baseline, method, ours, theirs):
    """The two-tailed paired t-test of ``ours`` (the method's per-run accuracies)
    against ``theirs`` (the baseline's) over the seeds both have
    (``reports.seed_pairs``); "n/a" with fewer than two pairs or no spread."""
    pairs = [(ours[index], theirs[paired]) for index, paired in seed_pairs(baseline, method)]
    # On integers (every accuracy times one common denominator): the same p as on the
    # accuracies (t is scale-free), with no float noise to fake a spread.
    scale = math.lcm(*(value.denominator for pair in pairs for value in pair))
    return p_value_text([(int(a * scale), int(b * scale)) for a, b in pairs])


def occlusion_tables(corruption, methods, scores):
    """The accuracy table (stem ``<name>``) and the p-value table (``<name>_p``);
    also returns the per-run values and the groups."""
    values, groups = run_accuracies(corruption, methods, scores)
    keys = [CLEAN, *groups, AVERAGE]
    labels = ["Clean", *(label for label, _, _ in groups.values()), "Avg. over occlusions"]
    percents = [[[100 * float(value) for value in values[m.name][key]] for key in keys]
                for m in methods]
    cells = [[mean_std(column, 2) for column in row] for row in percents]
    bold = set()
    for c in range(len(keys)):
        best = _best_columns([np.mean(row[c]) for row in percents])
        bold |= {(r, c) for r in best}
    counts = ", ".join(f"{m.name}: {len(m.runs)}" for m in methods)
    patterns = [corruption.settings[setting]["pattern"] for setting in scores]
    occluder_names = sorted({pattern.occluder_name for pattern in patterns})
    randoms = {pattern.position for pattern in patterns} - {"centre"}
    accuracy = Table(
        "Accuracy (%) on test images with a synthetic occluder (Cen et al., 2021, Table 2)",
        "Method", [m.name for m in methods], labels, cells, bold,
        f"Test accuracy in percent, mean ± sample std over runs ({counts}). Clean: the "
        "test set as is. 'r % centre' / 'r % random': accuracy over every test image "
        "with every pattern of the group pasted on it - the occluders "
        f"({', '.join(occluder_names)}) scaled so that their opaque pixels cover r % of "
        "the image, at the centre or at "
        f"{len(randoms)} random position{'' if len(randoms) == 1 else 's'} fixed per "
        "occluder and ratio, clipped at the border. Avg. over occlusions: each run's mean "
        "of the occluded columns (centre and random columns weigh alike, whatever their "
        "number of patterns). Best mean of a column in bold.")
    baseline = methods[0]
    p_cells = [[p_value_cell(baseline, method, values[method.name][key],
                             values[baseline.name][key]) for key in keys]
               for method in methods[1:]]
    p_values = Table(
        f"p-value of the paired t-test on accuracy against {baseline.name} (occlusion)",
        "Method", [m.name for m in methods[1:]], labels, p_cells,
        note=f"Two-tailed, over the seeds both have; * marks p < {ALPHA}; n/a with fewer "
             "than two pairs or no spread.")
    return {corruption.name: accuracy, f"{corruption.name}_p": p_values}, values, groups


def occlusion_figure(methods, values, groups, path):
    """Accuracy (%) against the occlusion ratio (0: clean) per method: solid line for
    the centre patterns, dashed for the random ones; error bars the sample std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.2, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ratios = sorted({ratio for _, ratio, _ in groups.values()})
    for number, method in enumerate(methods):
        colour = colours[number % len(colours)]
        offset = 0.25 * (number - (len(methods) - 1) / 2)  # keeps the error bars apart
        for kind, style in (("centre", "-"), ("random", "--")):
            keys = [CLEAN] + [group for ratio in ratios for group, (_, r, k) in groups.items()
                              if r == ratio and k == kind]
            if len(keys) == 1:
                continue
            xs = [0.0] + [100 * groups[key][1] for key in keys[1:]]
            accuracies = [[100 * float(value) for value in values[method.name][key]]
                          for key in keys]
            axes.errorbar([x + offset for x in xs], [np.mean(a) for a in accuracies],
                          yerr=[np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in accuracies],
                          color=colour, linestyle=style, marker="o", capsize=3,
                          label=f"{method.name}, {kind}")
    axes.set_xticks([0.0] + [100 * ratio for ratio in ratios],
                    ["clean"] + [f"{_percent(ratio)} %" for ratio in ratios])
    save_accuracy_plot(figure, axes, "occluded share of the image", path)


def occlusion_summary(corruption, methods, scores):
    """The ``corruptions.Summary`` of the occlusion corruption: the two tables, one
    runs.csv column per group and the average (``<name>_<group>_accuracy``,
    ``<name>_avg_accuracy``) and ``<name>.png``."""
    tables, values, groups = occlusion_tables(corruption, methods, scores)
    columns = {f"{corruption.name}_{key}_accuracy":
               {m.name: [float(value) for value in values[m.name][key]] for m in methods}
               for key in [*groups, AVERAGE]}

    def draw(path):
        occlusion_figure(methods, values, groups, path)

    return Summary(tables, columns, {f"{corruption.name}.png": draw})
