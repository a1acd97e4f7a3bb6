"""Paper-style tables from run folders: rows of results in, Markdown, LaTeX and CSV out.

A run folder (``training.py``) holds its resolved config, its metrics and the
per-image test predictions; every number here is recomputed from the predictions
(``metrics.py``), so a table can be re-made at any time without re-training. The
run folders are read and checked by ``runs.py``.
Runs are grouped by method; a table has metric rows and one column per method,
cells "mean ± std" over the runs (sample standard deviation), the best mean of a
row in bold, and the paired t-test of each method's accuracy against the baseline
(Morales et al., 2021, Tables 1-3, 5, 6; PAPERS.md §1).

This module does not import TensorFlow.
"""

import csv
import dataclasses
import io
import math
from html import escape as escape_html
from pathlib import Path

import numpy as np

from .corruptions import RESERVED_STEMS
from .corruptions import get as get_corruption
from .errors import UserError
from .metrics import paired_t_test
from .runs import runs_by_seed

ALPHA = 0.05
METRIC_ROWS = (
    ("accuracy", "Accuracy"),
    ("precision_macro", "Precision (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("precision_weighted", "Precision (weighted)"),
    ("recall_weighted", "Recall (weighted)"),
    ("f1_weighted", "F1 (weighted)"),
    ("top5_accuracy", "Top-5 accuracy"),
)
COST_ROWS = (("epochs_run", "Epochs", 1), ("seconds_per_epoch", "Seconds per epoch", 1))
# Tables evaluate.py writes but does not print (a row per class can be long); it
# prints every other table it writes.
UNPRINTED_TABLES = ("per_class_tpr", "cost")


# ------------------------------------------------------------------ tables


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
          "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$", "<": r"$<$", ">": r"$>$"}


@dataclasses.dataclass
class Table:
    """Rendered cells with their marks; ``bold`` holds (row, column) positions."""

    title: str
    corner: str
    rows: list
    columns: list
    cells: list
    bold: set = dataclasses.field(default_factory=set)
    note: str = ""

    def markdown(self):
        lines = [f"**{self.title}**", "",
                 "| " + " | ".join([self.corner, *self.columns]) + " |",
                 "|" + "---|" * (len(self.columns) + 1)]
        for r, (name, cells) in enumerate(zip(self.rows, self.cells)):
            cells = [cell.replace("|", "\\|") for cell in cells]
            shown = [f"**{cell}**" if (r, c) in self.bold else cell for c, cell in enumerate(cells)]
            lines.append("| " + " | ".join([name.replace("|", "\\|"), *shown]) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def latex(self):
        def escape(text):
            return "".join(_LATEX.get(char, char) for char in text)

        lines = [r"\begin{table}", r"\centering", f"\\caption{{{escape(self.title)}}}",
                 r"\begin{tabular}{l" + "c" * len(self.columns) + "}", r"\hline",
                 " & ".join(escape(text) for text in [self.corner, *self.columns]) + r" \\",
                 r"\hline"]
        for r, (name, cells) in enumerate(zip(self.rows, self.cells)):
            shown = [f"\\textbf{{{escape(cell)}}}" if (r, c) in self.bold else escape(cell)
                     for c, cell in enumerate(cells)]
            lines.append(" & ".join([escape(name), *shown]) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        if self.note:
            lines.append(f"\\par\\smallskip{{\\footnotesize {escape(self.note)}}}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def csv(self):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([self.corner, *self.columns])
        for name, cells in zip(self.rows, self.cells):
            writer.writerow([name, *cells])
        return buffer.getvalue()

    def html(self):
        """An HTML ``<table>`` (every text escaped, bold cells in ``<strong>``), the title
        its caption, the note a paragraph after it; for ``report_index``."""
        def cell(tag, text, strong=False, scope=""):
            text = escape_html(text)
            return f"<{tag}{scope}>{f'<strong>{text}</strong>' if strong else text}</{tag}>"

        lines = ["<table>", f"<caption>{escape_html(self.title)}</caption>",
                 "<thead><tr>" + "".join(cell("th", text, scope=' scope="col"')
                                         for text in [self.corner, *self.columns])
                 + "</tr></thead>", "<tbody>"]
        for r, (name, cells) in enumerate(zip(self.rows, self.cells)):
            lines.append("<tr>" + cell("th", name, scope=' scope="row"')
                         + "".join(cell("td", text, (r, c) in self.bold)
                                   for c, text in enumerate(cells)) + "</tr>")
        lines += ["</tbody>", "</table>"]
        if self.note:
            lines.append(f'<p class="note">{escape_html(self.note)}</p>')
        return "\n".join(lines) + "\n"


def mean_std(values, digits):
    """"mean ± std" (sample std); one value alone has no spread to show."""
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _best_columns(means):
    # Equal means can differ in their last float bits (0.1 + 0.2 vs 0.15 + 0.15).
    best = max(means)
    return [c for c, mean in enumerate(means) if math.isclose(mean, best, rel_tol=1e-9, abs_tol=1e-12)]


def metrics_table(methods, scores, digits=3, title="Test metrics"):
    """Tables 1, 3 and 5 (and 7 on the erased test set): metric rows × method
    columns, then the t-test row."""
    rows, cells, bold = [], [], set()
    shown = [(key, label) for key, label in METRIC_ROWS
             if key != "top5_accuracy" or _num_classes(methods) > 5]
    for r, (key, label) in enumerate(shown):
        values = [[score[key] for score in scores[m.name]] for m in methods]
        rows.append(label)
        cells.append([mean_std(v, digits) for v in values])
        bold |= {(r, c) for c in _best_columns([np.mean(v) for v in values])}
    rows.append("p-value (paired t-test on accuracy vs baseline)")
    cells.append(["—"] + [t_test_cell(methods[0], method, scores) for method in methods[1:]])
    runs = ", ".join(f"{m.name}: {len(m.runs)}" for m in methods)
    note = f"Mean ± sample std over runs ({runs}); best mean in bold"
    if len(methods) > 1:
        note += (f"; * marks p < {ALPHA} (two-tailed paired t-test over the seeds both have: "
                 f"{'; '.join(_pairs_text(methods[0], m) for m in methods[1:])})")
    return Table(title, "Metric", rows, [m.name for m in methods], cells, bold, note + ".")


def _num_classes(methods):
    """The runs' number of classes (top-5 accuracy is always 1 with five or fewer, so the
    tables leave its row out; runs.csv keeps it)."""
    return len(methods[0].runs[0].config["class_names"])


def seed_pairs(baseline, method):
    """(method run index, baseline run index) of every seed both have, in the method's
    run order; the method's other runs stay unpaired."""
    paired = runs_by_seed(baseline)
    return [(index, paired[seed]) for seed, index in runs_by_seed(method).items()
            if seed in paired]


def _pairs_text(baseline, method):
    """"pairwise 2 pairs, 1 run unpaired": what the method's p-value rests on."""
    def counted(count, noun):
        return f"{count} {noun}{'' if count == 1 else 's'}"

    pairs = len(seed_pairs(baseline, method))
    unpaired = len(method.runs) - pairs
    return (f"{method.name} {counted(pairs, 'pair')}"
            + (f", {counted(unpaired, 'run')} unpaired" if unpaired else ""))


def t_test_cell(baseline, method, scores):
    """The p-value of the method's accuracy against the baseline's, over the seeds
    both have (``seed_pairs``); "n/a" with fewer than two pairs or no spread."""
    # On counts of correct images: the same p as on accuracies (t is scale-free),
    # without float noise that would turn equal differences into a tiny spread.
    def correct(group, index):
        return round(scores[group.name][index]["accuracy"] * len(group.runs[index].labels))

    return p_value_text([(correct(method, ours), correct(baseline, theirs))
                         for ours, theirs in seed_pairs(baseline, method)])


def p_value_text(pairs):
    """The cell of the two-tailed paired t-test of (ours, theirs) pairs: the p-value,
    * when below ``ALPHA``; "n/a" with fewer than two pairs or no spread."""
    if len(pairs) < 2:
        return "n/a"
    statistic, p = paired_t_test(*zip(*pairs))
    if not math.isfinite(statistic):  # no spread in the differences: no test
        return "n/a"
    return f"{p:.3f}{'*' if p < ALPHA else ''}"


def per_class_table(methods, scores, class_names, digits=3):
    """Table 6: the true-positive rate of every class, per method."""
    cells, bold = [], set()
    for k in range(len(class_names)):
        values = [[score["per_class_tpr"][k] for score in scores[m.name]] for m in methods]
        cells.append([mean_std(v, digits) for v in values])
        bold |= {(k, c) for c in _best_columns([np.mean(v) for v in values])}
    return Table("True-positive rate per class", "Class", list(class_names),
                 [m.name for m in methods], cells, bold,
                 "Mean ± sample std over runs; best mean in bold.")


def cost_table(methods):
    """Table 2: epochs run (early stopping) and seconds per epoch."""
    cells = [[mean_std([run.metrics[key] for run in m.runs], digits) for m in methods]
             for key, _, digits in COST_ROWS]
    return Table("Training cost", "", [label for _, label, _ in COST_ROWS],
                 [m.name for m in methods], cells, note="Mean ± sample std over runs.")


def inspection_table(methods, heat_share, focus_area, digits=3):
    """Per method, mean ± std over test images (all runs pooled): the share of the
    image with Grad-CAM heat > th, and the focus-area coverage (PAPERS.md §3)."""
    cells = [[mean_std(values[m.name], digits) for m in methods]
             for values in (heat_share, focus_area)]
    return Table("Model inspection", "", ["Share of the image with Grad-CAM heat > th",
                                          "Focus area (channel mean above its mean)"],
                 [m.name for m in methods], cells,
                 note="Mean ± sample std over test images of every run; Grad-CAM for the "
                      "true class at the backbone's Grad-CAM layer.")


def run_rows(methods, scores, corrupted_accuracy=None):
    """One row per run: the data every table is made from. ``corrupted_accuracy``
    ({runs.csv column: {method: [accuracy of each run]}}) adds one column each."""
    rows = []
    for method in methods:
        for number, (run, score) in enumerate(zip(method.runs, scores[method.name])):
            row = {"method": method.name, "run": str(run.path), "seed": run.seed}
            row |= {key: score[key] for key, _ in METRIC_ROWS}
            row |= {column: values[method.name][number]
                    for column, values in (corrupted_accuracy or {}).items()}
            row |= {key: run.metrics.get(key) for key in ("epochs_run", "best_epoch",
                                                          "seconds_per_epoch")}
            rows.append(row)
    return rows


def corruption_rows(corrupted):
    """``corruptions.csv``: one row per run × corruption × setting with the main
    metrics, from ``evaluation.ModelResults.corrupted``."""
    return [{"corruption": row["corruption"], "setting": row["setting"],
             "method": row["method"], "run": str(row["run"].path), "seed": row["run"].seed}
            | {key: row["scores"][key] for key, _ in METRIC_ROWS}
            for row in corrupted]


def corruption_outputs(methods, model_results):
    """The tables (by file stem), runs.csv accuracy columns ({column: {method: [value
    per run]}}) and figures ({file name: draw(path)}) of every corruption in
    ``model_results``: one metrics table and column per setting, or what the
    corruption's ``summary`` renders instead. The corruption objects come from
    ``model_results.corruptions`` (evaluate.py builds ``occlusion`` from its flags),
    names it does not hold from the registry."""
    by_corruption = {}
    for (name, setting), scores in model_results.corrupted_scores.items():
        by_corruption.setdefault(name, {})[setting] = scores
    given = model_results.corruptions
    tables, columns, figures = {}, {}, {}
    for name, by_setting in by_corruption.items():
        corruption = given.get(name) or get_corruption(name)
        if corruption.summary is not None:
            own_tables, own_columns, own_figures = corruption.summarize(methods, by_setting)
        else:
            own_tables, own_columns, own_figures = {}, {}, {}
            for setting, scores in by_setting.items():
                own_tables[corruption.table_stem(setting)] = metrics_table(
                    methods, scores, title=corruption.table_title(setting))
                own_columns[corruption.accuracy_column(setting)] = {
                    method: [score["accuracy"] for score in values]
                    for method, values in scores.items()}
        for kind, taken, own in (("table", tables, own_tables), ("runs.csv column", columns,
                                                                 own_columns),
                                 ("figure", figures, own_figures)):
            clashes = sorted(set(taken) & set(own))
            if clashes:
                raise ValueError(f"corruption {name}: {kind} {', '.join(clashes)} is not unique")
            taken.update(own)
    return tables, columns, figures


def save_accuracy_plot(figure, axes, xlabel, path):
    """Label, grid and legend an accuracy-against-x plot of matplotlib's, save it as a
    PNG at ``path`` and close it (the k-shot and occlusion figures)."""
    import matplotlib.pyplot as plt

    axes.set_xlabel(xlabel)
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _slug(name):
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in name)


def confusion_file(method):
    """The file name of a method's confusion matrix."""
    return f"confusion_{_slug(method.name)}.csv"


def data_files(methods, model_results=None):
    """The CSV files ``write_evaluation`` writes besides the tables: runs.csv,
    corruptions.csv (with corrupted rows) and a confusion matrix per method."""
    rows = ["corruptions.csv"] if model_results is not None and model_results.corrupted else []
    return ["runs.csv", *rows, *map(confusion_file, methods)]


def write_confusion(path, matrices, class_names):
    """The confusion matrix summed over a method's runs: rows true, columns predicted."""
    total = np.sum(matrices, axis=0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, total):
            writer.writerow([name, *(int(count) for count in row)])


def write_reports(methods, out_dir, model_results=None):
    """Compute every table, write them (.md, .tex, .csv) and runs.csv to ``out_dir``;
    returns the tables by file stem (``write_evaluation`` without the figure names)."""
    return write_evaluation(methods, out_dir, model_results)[0]


def write_evaluation(methods, out_dir, model_results=None):
    """Compute every table, write them (.md, .tex, .csv), runs.csv and the figures to
    ``out_dir``; returns (tables by file stem, figure file names). ``model_results``
    (``evaluation.ModelResults``) adds each corruption's tables, runs.csv columns and
    figures (``corruption_outputs``), the accuracy by erased area of Random Erasing
    (``plots.area_outputs``), corruptions.csv and the inspection table."""
    scores = {m.name: [run.scores() for run in m.runs] for m in methods}
    class_names = methods[0].runs[0].config["class_names"]
    tables = {"metrics": metrics_table(methods, scores),
              "per_class_tpr": per_class_table(methods, scores, class_names),
              "cost": cost_table(methods)}
    corrupted_accuracy, figures = {}, {}
    if model_results is not None:
        corrupted_tables, corrupted_accuracy, figures = corruption_outputs(methods,
                                                                           model_results)
        # Accuracy by erased area, from the Random Erasing rows (``plots``).
        from .plots import area_outputs

        area_tables, area_figures = area_outputs(methods, model_results)
        clashes = sorted(set(corrupted_tables) & (RESERVED_STEMS | set(area_tables)))
        if clashes:
            raise ValueError(f"a corruption's table would replace {', '.join(clashes)}")
        tables |= corrupted_tables | area_tables
        figures |= area_figures
        tables["inspection"] = inspection_table(
            methods, model_results.heat_share, model_results.focus_area)
        if model_results.faithfulness:
            from .faithfulness_reports import (faithfulness_columns, faithfulness_tables,
                                               road_figure)

            settings = model_results.faithfulness_settings
            tables |= faithfulness_tables(methods, model_results.faithfulness, settings)
            corrupted_accuracy |= faithfulness_columns(methods, model_results.faithfulness)

            def draw_road(path):
                road_figure(methods, model_results.faithfulness, settings, path)

            figures["faithfulness.png"] = draw_road
    out_dir = Path(out_dir)
    try:
        write_tables(tables, out_dir)
        for method in methods:
            write_confusion(out_dir / confusion_file(method),
                            [score["confusion"] for score in scores[method.name]], class_names)
        write_rows(out_dir / "runs.csv", run_rows(methods, scores, corrupted_accuracy))
        if model_results is not None and model_results.corrupted:
            write_rows(out_dir / "corruptions.csv", corruption_rows(model_results.corrupted))
        for name, draw in figures.items():
            draw(out_dir / name)
    except OSError as error:
        raise UserError(f"cannot write the reports to {out_dir}: {error.strerror}") from None
    return tables, list(figures)


def write_tables(tables, out_dir):
    """Every table as ``<stem>.md``, ``.tex`` and ``.csv`` in ``out_dir`` (made)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, table in tables.items():
        for suffix, text in (("md", table.markdown()), ("tex", table.latex()),
                             ("csv", table.csv())):
            (out_dir / f"{stem}.{suffix}").write_text(text)


def write_rows(path, rows):
    """Rows (dicts with the same keys) as a CSV file with a header."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
