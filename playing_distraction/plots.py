"""evaluate.py's figures of the training curves and of the accuracy against the erased
area, from the run folders and the model results.

- ``curves.png``: per method, the training and validation accuracy and loss against
  the epoch, mean over its runs (seeds) with a ± sample-std band. Each run's history
  is that of the stage whose model was tested, its last (``stages.py``: ``history.csv``,
  or ``history-<stage>.csv`` for a later stage): the stage ``metrics.json``'s
  epochs and best epoch describe. Runs stop early at different epochs: an epoch's mean
  is over the runs that reached it, its band where two or more did.
- ``robustness_by_area`` (a table and a PNG): Random Erasing erases one region of
  area S_e ~ U(0.02, 0.4) of each test image (Zhong et al., 2017; PAPERS.md §1; Table 7
  of Morales et al., 2021; ``robustness.py``). The test images are binned by the share
  of the image their box erased (equal-width bins over the area range); per run, the
  accuracy in each bin; per method and bin, mean ± sample std over runs.

The numbers a figure draws come from small functions (``curve``, ``accuracy_by_area``,
``over_runs``) that the tests check against NumPy. This module does not import
TensorFlow; matplotlib only when a figure is drawn.
"""

import csv
import dataclasses
from pathlib import Path

import numpy as np

from .errors import UserError
from .reports import Table, _best_columns, mean_std, save_accuracy_plot
from .robustness import AREA, erased_shares
from .run_folders import read_history
from .runs import retrain_advice

CURVES = "curves.png"
CURVE_COLUMNS = ("accuracy", "val_accuracy", "loss", "val_loss")
AREA_STEM = "robustness_by_area"
AREA_BINS = 5
DPI = 120
CURVES_SIZE = (10.0, 4.0)  # inches: 1200 x 480 pixels at DPI


# ------------------------------------------------------------------ training curves


def tested_history(run):
    """The history CSV of the stage whose model the run tested: its last. A run of
    several stages lists them in ``metrics.json`` (``training.stage_results``); the
    file names are ``stages.history_name``'s."""
    stages = run.metrics.get("stages")
    if not stages:
        return run.path / "history.csv"
    if not (isinstance(stages, list)
            and all(isinstance(stage, dict) and isinstance(stage.get("stage"), str)
                    for stage in stages)):
        raise UserError(f"{run.path / 'metrics.json'} is damaged (stages must be a list of "
                        f"named stages); {retrain_advice(run.path)}")
    return run.path / ("history.csv" if len(stages) == 1
                       else f"history-{stages[-1]['stage']}.csv")


def read_tested_history(run):
    """{column: [value per epoch]} of ``tested_history(run)``; a file missing, not a
    CSV of numbers or without accuracy and loss is one ``UserError`` line naming it."""
    path = tested_history(run)
    try:
        history = read_history(path)
    except FileNotFoundError:
        raise UserError(f"missing {path}: curves.png needs the training history of every "
                        f"run; {retrain_advice(run.path)}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError, csv.Error) as error:
        # float() of a word or "NA" in a column with numbers; None: a row cut short.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path} ({reason}); the file is damaged: "
                        f"{retrain_advice(run.path)}") from None
    missing = [column for column in ("accuracy", "loss") if column not in history]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)} column: not a history "
                        "train.py wrote?")
    return history


@dataclasses.dataclass(frozen=True)
class Curve:
    """One history column of a method: per epoch (1, 2, ...) the mean over the runs that
    reached it, the sample std (NaN where fewer than two did) and how many did."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    runs: np.ndarray


def curve(series):
    """The ``Curve`` of ``series``: one list of per-epoch values per run, of any lengths
    (early stopping)."""
    length = max(len(values) for values in series)
    means, stds, counts = [], [], []
    for epoch in range(length):
        reached = np.array([values[epoch] for values in series if len(values) > epoch],
                           np.float64)
        means.append(reached.mean())
        stds.append(reached.std(ddof=1) if len(reached) > 1 else np.nan)
        counts.append(len(reached))
    return Curve(np.arange(1, length + 1), np.array(means), np.array(stds), np.array(counts))


def method_curves(histories):
    """{column: Curve} of one method's histories, for the ``CURVE_COLUMNS`` its runs
    have (a run without validation has no val_ columns), over the runs that have it."""
    curves = {}
    for column in CURVE_COLUMNS:
        series = [history[column] for history in histories if column in history]
        if series:
            curves[column] = curve(series)
    return curves


def training_curves(methods):
    """{method name: {column: Curve}} from every run's tested history, read now: call it
    before slow work, so that a run without its history fails at once."""
    return {method.name: method_curves([read_tested_history(run) for run in method.runs])
            for method in methods}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(axes, x, mean, std, color):
    """A ± std band where there is a std (two or more runs)."""
    spread = np.isfinite(std)
    if spread.any():
        axes.fill_between(x, mean - np.where(spread, std, 0), mean + np.where(spread, std, 0),
                          where=spread, color=color, alpha=0.2, linewidth=0)


def curves_figure(curves, path):
    """``curves.png``: accuracy and loss panels; per method (one colour) training solid,
    validation dashed, each the mean over runs with its ± std band."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=CURVES_SIZE)
    for axes, metric in zip(panels, ("accuracy", "loss")):
        for number, (name, columns) in enumerate(curves.items()):
            color = f"C{number % 10}"
            for column, style, part in ((metric, "-", "training"),
                                        (f"val_{metric}", "--", "validation")):
                if column in columns:
                    line = columns[column]
                    # Markers only where they do not hide the dashes (a few epochs).
                    marker = "o" if len(line.epochs) <= 20 else None
                    axes.plot(line.epochs, line.mean, style, color=color, marker=marker,
                              markersize=3, linewidth=1.2, label=f"{name} ({part})")
                    _band(axes, line.epochs, line.mean, line.std, color)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric.capitalize()}: mean ± std over runs", fontsize=10)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def write_curves(curves, out_dir):
    """Draw ``curves`` as ``<out_dir>/curves.png``; returns the file name."""
    out_dir = Path(out_dir)
    try:
        curves_figure(curves, out_dir / CURVES)
    except OSError as error:
        raise UserError(f"cannot write {out_dir / CURVES}: {error.strerror}") from None
    return CURVES


# ------------------------------------------------------------------ robustness by area


def area_edges(area=AREA, bins=AREA_BINS):
    """``bins`` equal-width bins over the drawn area range: their ``bins + 1`` edges."""
    return np.linspace(area[0], area[1], bins + 1)


def bin_label(low, high):
    """"2-9.6 %": a bin of erased shares, in percent."""
    return f"{100 * low:.4g}-{100 * high:.4g} %"


def area_bins(shares, edges):
    """The bin of each image by its erased share, -1 for an image left whole (share 0).
    A box rounded to whole pixels can fall just outside the edges: it counts in the
    outer bin."""
    shares = np.asarray(shares, np.float64)
    bins = np.searchsorted(edges[1:-1], shares, side="right")
    return np.where(shares > 0, bins, -1)


def accuracy_by_area(correct, shares, edges):
    """(accuracy in each bin, NaN where it holds no image; image count of each bin) of
    one run: ``correct`` per test image, ``shares`` its erased share."""
    correct = np.asarray(correct, bool)
    bins = area_bins(shares, edges)
    counts = np.array([np.sum(bins == b) for b in range(len(edges) - 1)])
    accuracy = np.array([correct[bins == b].mean() if count else np.nan
                         for b, count in enumerate(counts)])
    return accuracy, counts


def over_runs(accuracies):
    """(mean, sample std, runs) per bin over the runs' accuracies (arrays of one length),
    leaving out a run's empty bins; NaN mean without a value, NaN std with one."""
    values = np.array(accuracies, np.float64)
    present = np.isfinite(values)
    runs = present.sum(axis=0)
    mean = np.array([values[present[:, b], b].mean() if runs[b] else np.nan
                     for b in range(values.shape[1])])
    std = np.array([values[present[:, b], b].std(ddof=1) if runs[b] > 1 else np.nan
                    for b in range(values.shape[1])])
    return mean, std, runs


def area_accuracies(methods, rows, seed, parameters, bins=AREA_BINS):
    """({method: [per-bin accuracy (%) of each run]}, per-bin image counts of each run,
    images left whole per run, edges) from Random Erasing result rows that carry
    ``correct`` (``evaluation.evaluate_models``), erased with ``seed`` and the
    setting's ``parameters`` (``robustness.erase``'s area and aspect)."""
    edges = area_edges(parameters.get("area", AREA), bins)
    accuracies = {method.name: [] for method in methods}
    counts, whole, shares = [], [], {}
    for row in rows:
        size, images = row["run"].config["image_size"], len(row["correct"])
        if (size, images) not in shares:
            shares[size, images] = erased_shares(size, size, np.arange(images), seed,
                                                 **parameters)
        accuracy, count = accuracy_by_area(row["correct"], shares[size, images], edges)
        accuracies[row["method"]].append(100 * accuracy)
        counts.append(count)
        whole.append(int(np.sum(shares[size, images] == 0)))
    return accuracies, np.array(counts), whole, edges


def _range(values):
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def area_table(methods, accuracies, counts, whole, edges, seed, digits=1):
    """``robustness_by_area``: a row per bin (with its image count), a column per method,
    cells accuracy (%) mean ± sample std over runs, the best mean of a row in bold."""
    stats = [over_runs(accuracies[m.name]) for m in methods]
    rows, cells, bold = [], [], set()
    for b in range(len(edges) - 1):
        rows.append(f"{bin_label(edges[b], edges[b + 1])} ({_range(counts[:, b])} images)")
        row, means = [], []
        for (mean, _, _), method in zip(stats, methods):
            values = [value[b] for value in accuracies[method.name] if np.isfinite(value[b])]
            row.append(mean_std(values, digits) if values else "—")
            means.append(mean[b])
        cells.append(row)
        present = [c for c, mean in enumerate(means) if np.isfinite(mean)]
        if present:
            best = _best_columns([means[c] for c in present])
            bold |= {(b, present[c]) for c in best}
    left = (f"; {_range(whole)} images without a box (none fitted) are left out"
            if max(whole) else "")
    note = (f"Test accuracy (%) on the Random Erasing test set (--erase-seed {seed}) of the "
            f"images whose erased region covers that share of the image: {len(edges) - 1} "
            f"equal-width bins over the drawn area range {bin_label(edges[0], edges[-1])} (a "
            "box rounded to whole pixels just outside it counts in the outer bin)"
            f"{left}. Mean ± sample std over runs; best mean of a bin in bold; — : no image.")
    return Table("Accuracy (%) by erased share of the image (Random Erasing)", "Erased share",
                 rows, [m.name for m in methods], cells, bold, note)


def area_figure(methods, accuracies, edges, path):
    """``robustness_by_area.png``: accuracy (%) against the bin centre, per method the
    mean over runs with a ± std band."""
    plt = _pyplot()
    centres = 100 * (edges[:-1] + edges[1:]) / 2
    figure, axes = plt.subplots(figsize=(6.0, 3.6))
    for number, method in enumerate(methods):
        mean, std, _ = over_runs(accuracies[method.name])
        color = f"C{number % 10}"
        axes.plot(centres, mean, "-", color=color, marker="o", label=method.name)
        _band(axes, centres, mean, std, color)
    axes.set_xlim(100 * edges[0], 100 * edges[-1])
    save_accuracy_plot(figure, axes, "erased share of the image (%, bin centre)", path)


def area_outputs(methods, model_results, name="random_erasing", bins=AREA_BINS):
    """The ``robustness_by_area`` table ({stem: Table}) and figure ({file name: draw})
    of the corruption ``name``'s rows in ``model_results`` (``evaluation.ModelResults``;
    its first setting); empty without such rows carrying ``correct``."""
    corruption = model_results.corruptions.get(name)
    rows = [row for row in model_results.corrupted
            if row["corruption"] == name and "correct" in row]
    if corruption is None or not rows or model_results.erase_seed is None:
        return {}, {}
    rows = [row for row in rows if row["setting"] == rows[0]["setting"]]
    seed = model_results.erase_seed
    accuracies, counts, whole, edges = area_accuracies(
        methods, rows, seed, dict(corruption.settings[rows[0]["setting"]]), bins)

    def draw(path):
        area_figure(methods, accuracies, edges, path)

    return ({AREA_STEM: area_table(methods, accuracies, counts, whole, edges, seed)},
            {f"{AREA_STEM}.png": draw})
