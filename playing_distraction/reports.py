"""Paper-style tables from run folders: rows of results in, Markdown, LaTeX and CSV out.

A run folder (``training.py``) holds its resolved config, its metrics and the
per-image test predictions; every number here is recomputed from the predictions
(``metrics.py``), so a table can be re-made at any time without re-training. What
is read is checked first: a damaged file, a folder given twice or two runs of one
method with one seed is a ``UserError`` line naming the file and what to do, never
a wrong cell.
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
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .corruptions import get as get_corruption
from .errors import UserError
from .storage import read_json_object
from .methods import METHODS
from .metrics import classification_metrics, paired_t_test

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


@dataclasses.dataclass
class Run:
    path: Path
    config: dict
    metrics: dict
    items: list
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def seed(self):
        return self.config["seed"]

    def scores(self):
        return classification_metrics(self.labels, self.probabilities)


# Probabilities are written with 6 significant digits: a row sums to 1 within about
# 5e-6 (each value within half a unit of its 6th digit), so 1e-3 is a wide margin
# that still catches an edited value.
SUM_TOLERANCE = 1e-3


def retrain_advice(run_dir):
    """What to do about a damaged file of a finished run: train the run again. With
    --resume, train.py skips the command's other runs that finished and makes this
    one anew (--overwrite alone would not: it replaces --run-name folders only)."""
    return f"delete {run_dir} and run its train.py command again with --resume"


def _read_json(path):
    """The JSON object in ``path`` (a run's config.json or metrics.json), checked."""
    path = Path(path)
    return read_json_object(path, retrain_advice(path.parent),
                            missing=f"missing {path}: is {path.parent} a finished run folder?")


def _damaged(path, reason):
    return UserError(f"{path} is damaged ({reason}); {retrain_advice(Path(path).parent)}")


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


# (file, key, check, what it must be) for what the tables read from a run's JSON files.
_FIELDS = (
    ("config.json", "dataset", lambda value: isinstance(value, str), "a dataset name"),
    ("config.json", "seed", _is_integer, "an integer"),
    ("config.json", "class_names",
     lambda value: (isinstance(value, list) and value
                    and all(isinstance(name, str) for name in value)),
     "a list of class names"),
    ("metrics.json", "epochs_run", lambda value: _is_integer(value) and value >= 0,
     "a whole number of 0 or more"),
    ("metrics.json", "seconds_per_epoch", lambda value: _is_number(value) and value >= 0,
     "a number of 0 or more"),
)


def read_predictions(path, num_classes):
    """(items, labels, probabilities) from a run's predictions.csv, checked row by row:
    every probability in [0, 1], each row summing to 1 (``SUM_TOLERANCE``), and the
    prediction the most probable class, as train.py wrote them."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise UserError(f"missing {path}: the run has no saved test predictions") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    expected = ["item", "label", "prediction", *(f"p{k}" for k in range(num_classes))]
    if not rows or rows[0] != expected:
        raise UserError(f"{path}:1: expected the header {','.join(expected[:4])},...,"
                        f"p{num_classes - 1}")
    items, labels, predictions, probabilities = [], [], [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(expected):
                raise ValueError(f"{len(row)} fields")
            label = int(row[1])
            if not 0 <= label < num_classes:
                raise ValueError(f"label {label} out of range")
            prediction = int(row[2])
            if not 0 <= prediction < num_classes:
                raise ValueError(f"prediction {prediction} out of range")
            probabilities.append([float(value) for value in row[3:]])
        except ValueError as error:
            raise UserError(f"{path}:{number}: {error}") from None
        items.append(row[0])
        labels.append(label)
        predictions.append(prediction)
    if not items:
        raise UserError(f"{path} holds no predictions")
    probabilities = np.array(probabilities)
    _check_probabilities(path, rows, np.array(predictions), probabilities)
    return items, np.array(labels), probabilities


def _check_probabilities(path, rows, predictions, probabilities):
    """One line naming the first impossible row: a probability outside [0, 1] (NaN
    and infinities included), a row not summing to 1, or a prediction that is not the
    row's most probable class (6-digit rounding keeps that class the largest, ties
    aside, so the check is exact)."""
    def refuse(index, what):
        raise UserError(f"{path}:{index + 2}: {what}; the file is damaged: "
                        f"{retrain_advice(Path(path).parent)}")

    outside = ~((probabilities >= 0) & (probabilities <= 1))  # NaN compares False
    if outside.any():
        index, k = np.argwhere(outside)[0]
        refuse(index, f"p{k} is {rows[index + 1][3 + k]}, not a probability between 0 and 1")
    totals = probabilities.sum(axis=1)
    off = np.flatnonzero(np.abs(totals - 1) > SUM_TOLERANCE)
    if off.size:
        refuse(off[0], f"the probabilities sum to {totals[off[0]]:.4g}, not 1")
    chosen = probabilities[np.arange(len(predictions)), predictions]
    wrong = np.flatnonzero(chosen < probabilities.max(axis=1))
    if wrong.size:
        index = wrong[0]
        refuse(index, f"prediction {predictions[index]} is not the most probable class "
                      f"({int(np.argmax(probabilities[index]))})")


def load_run(path):
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no run folder {path}")
    records = {"config.json": _read_json(path / "config.json"),
               "metrics.json": _read_json(path / "metrics.json")}
    for name, record in records.items():
        missing = [key for file, key, _, _ in _FIELDS if file == name and key not in record]
        if missing:
            raise UserError(f"{path / name} lacks {', '.join(missing)}: not written by train.py?")
    for name, key, valid, what in _FIELDS:
        value = records[name][key]
        if not valid(value):
            raise _damaged(path / name, f"{key} must be {what}, not {value!r}")
    config, metrics = records["config.json"], records["metrics.json"]
    predictions = path / "predictions.csv"
    items, labels, probabilities = read_predictions(predictions, len(config["class_names"]))
    # A file cut short at the end of a row reads well: its length gives it away.
    recorded = metrics.get("test_images")
    if _is_integer(recorded) and recorded != len(items):
        raise UserError(f"{predictions} holds {len(items)} predictions, but "
                        f"{path / 'metrics.json'} records {recorded} test images; the file is "
                        f"damaged: {retrain_advice(path)}")
    return Run(path, config, metrics, items, labels, probabilities)


@dataclasses.dataclass
class Method:
    name: str
    runs: list


def method_name(config):
    """The column name of a run's method, from its config.json values
    (``TrainConfig.column``: the method's ``column`` with the add-ons'; configs
    written before --method and --hnc existed are distraction runs)."""
    method = config.get("method", "distraction")
    if not isinstance(method, str) or method not in METHODS:
        raise UserError(f"a run was trained with --method {method}, which this version does "
                        f"not know (known: {', '.join(METHODS)})")
    return TrainConfig.from_dict(config).column


def load_methods(baseline, methods):
    """Methods from lists of run folders: the baseline first, then each method, named
    from its runs' configs. All runs must share the dataset, classes and test set; a
    folder may be given once (whatever the spelling of its path), and a method may
    have one run per seed (the t-test pairs runs by seed)."""
    groups = [("baseline", baseline)] + [(None, group) for group in methods]
    _check_given_once([path for _, paths in groups for path in paths])
    loaded, names = [], set()
    for name, paths in groups:
        runs = [load_run(path) for path in paths]
        kinds = sorted({method_name(run.config) for run in runs})
        if len(kinds) > 1:
            flag = "--baseline" if name else "one --method"
            raise UserError(f"{flag} got runs of several methods ({', '.join(kinds)}); give "
                            "each method its own --method")
        name = name or kinds[0]
        base, number = name, 1
        while name in names:
            number += 1
            name = f"{base} ({number})"
        names.add(name)
        loaded.append(Method(name, runs))
        runs_by_seed(loaded[-1])
    _check_comparable([run for method in loaded for run in method.runs])
    return loaded


def _check_given_once(paths):
    """A run given twice would count twice in its method's mean, or be compared with
    itself; paths are resolved, so ``runs/a``, ``./runs/a/`` and a link to it match."""
    seen = {}
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            also = "" if str(seen[key]) == str(path) else f" (also as {seen[key]})"
            raise UserError(f"run folder {path} is given twice{also}; give each run once")
        seen[key] = path


def runs_by_seed(method):
    """{seed: index of the run in ``method.runs``}; two runs of one seed (a copy, or a
    re-run kept beside the first) are an error, as the t-test could not pair them."""
    indices = {}
    for index, run in enumerate(method.runs):
        if run.seed in indices:
            first = method.runs[indices[run.seed]]
            raise UserError(f"{first.path} and {run.path} are both {method.name} runs with "
                            f"seed {run.seed}; the paired t-test pairs runs by seed: give one "
                            "run per seed")
        indices[run.seed] = index
    return indices


def _check_comparable(runs):
    first = runs[0]
    for run in runs[1:]:
        for key, what in (("dataset", "datasets"), ("class_names", "class lists")):
            if run.config.get(key) != first.config.get(key):
                raise UserError(f"{run.path} and {first.path} have different {what}; "
                                "compare runs of one dataset")
        if run.items != first.items or not np.array_equal(run.labels, first.labels):
            raise UserError(f"{run.path} and {first.path} were tested on different images")


# ------------------------------------------------------------------ saved models


# (key, check, what it must be) of the config.json values the model-based tables use.
_MODEL_FIELDS = (
    ("image_size", lambda value: _is_integer(value) and value > 0, "a positive integer"),
    ("cam_layer", lambda value: isinstance(value, str) and value, "a layer name"),
    ("threshold", _is_number, "a number"),
)


def saved_model_problem(path):
    """Why the saved model ``path`` is damaged, or None. A .keras file is a zip
    archive: reading every member checks its CRC, so a file cut short, emptied or
    garbled is found in a fraction of a second, without TensorFlow (Keras itself says
    "File not found" for a file that is there, or fails with zipfile's BadZipFile)."""
    try:
        if Path(path).stat().st_size == 0:
            return "it is empty"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return "not a zip archive, as a .keras file is: cut short or overwritten"
    except (EOFError, zlib.error, NotImplementedError) as error:
        return f"its zip archive is unreadable: {error}"
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    return None if bad is None else f"{bad} in it fails its CRC check"


def damaged_model(path, reason):
    """The one-line error for the damaged saved model ``path`` of a run folder."""
    return UserError(f"cannot load {path}: the file is damaged ({reason}); "
                     f"{retrain_advice(Path(path).parent)}")


def check_saved_models(methods):
    """Every run has what robustness and inspection need - its config.json values and
    an intact model.keras - checked before TensorFlow is imported or anything slow
    begins."""
    for method in methods:
        for run in method.runs:
            missing = [key for key, _, _ in _MODEL_FIELDS if key not in run.config]
            model = run.path / "model.keras"
            if missing or not model.is_file():
                what = f"{', '.join(missing)} in config.json" if missing else "model.keras"
                raise UserError(f"{run.path} has no {what}; --no-models makes the tables "
                                "from the saved predictions alone")
            for key, valid, what in _MODEL_FIELDS:
                if not valid(run.config[key]):
                    raise _damaged(run.path / "config.json",
                                   f"{key} must be {what}, not {run.config[key]!r}")
            problem = saved_model_problem(model)
            if problem:
                raise damaged_model(model, problem)


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
    for r, (key, label) in enumerate(METRIC_ROWS):
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

    pairs = [(correct(method, ours), correct(baseline, theirs))
             for ours, theirs in seed_pairs(baseline, method)]
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


def corruption_tables(methods, model_results):
    """One metrics table per (corruption, setting) of ``model_results``, by file stem,
    and the runs.csv accuracy columns ({column: {method: [accuracy per run]}})."""
    tables, columns = {}, {}
    for (name, setting), scores in model_results.corrupted_scores.items():
        corruption = get_corruption(name)
        tables[corruption.table_stem(setting)] = metrics_table(
            methods, scores, title=corruption.table_title(setting))
        columns[corruption.accuracy_column(setting)] = {
            method: [score["accuracy"] for score in values] for method, values in scores.items()}
    return tables, columns


def _slug(name):
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in name)


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
    returns the tables by file stem. ``model_results`` (``evaluation.ModelResults``)
    adds a table per corruption × setting (``corruption_tables``), its accuracy
    column in runs.csv, corruptions.csv and the inspection table."""
    scores = {m.name: [run.scores() for run in m.runs] for m in methods}
    class_names = methods[0].runs[0].config["class_names"]
    tables = {"metrics": metrics_table(methods, scores),
              "per_class_tpr": per_class_table(methods, scores, class_names),
              "cost": cost_table(methods)}
    corrupted_accuracy = {}
    if model_results is not None:
        corrupted_tables, corrupted_accuracy = corruption_tables(methods, model_results)
        tables |= corrupted_tables
        tables["inspection"] = inspection_table(
            methods, model_results.heat_share, model_results.focus_area)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stem, table in tables.items():
            for suffix, text in (("md", table.markdown()), ("tex", table.latex()),
                                 ("csv", table.csv())):
                (out_dir / f"{stem}.{suffix}").write_text(text)
        for method in methods:
            write_confusion(out_dir / f"confusion_{_slug(method.name)}.csv",
                            [score["confusion"] for score in scores[method.name]], class_names)
        written = [("runs.csv", run_rows(methods, scores, corrupted_accuracy))]
        if model_results is not None and model_results.corrupted:
            written.append(("corruptions.csv", corruption_rows(model_results.corrupted)))
        for name, rows in written:
            with open(out_dir / name, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    except OSError as error:
        raise UserError(f"cannot write the reports to {out_dir}: {error.strerror}") from None
    return tables
