"""Run folders read back for evaluate.py: a run's config, metrics and test predictions,
checked, and runs grouped by method.

What is read is checked first: a damaged file (config.json or metrics.json that is
not a JSON object or holds NaN, predictions that are not probabilities, a saved
model cut short), a folder given twice or two runs of one method with one seed is a
``UserError`` line naming the file and what to do, never a wrong cell in a table.

This module does not import TensorFlow.
"""

import csv
import dataclasses
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .errors import UserError
from .methods import METHODS
from .metrics import classification_metrics
from .splits import shot_label
from .storage import read_json_object


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

    @property
    def k_shot(self):
        """The run is one of a k-shot grid (``splits.KShotSplit``)."""
        split = self.config.get("split")
        return isinstance(split, dict) and split.get("kind") == "k-shot"

    @property
    def shots(self):
        """Its k (None: all) in a k-shot grid."""
        return self.config["split"].get("shots") if self.k_shot else None

    @property
    def key(self):
        """What pairs runs of two methods: the seed, and k in a k-shot grid (one seed
        draws the same test images at every k, but k changes the training set)."""
        return (self.shots, self.seed) if self.k_shot else self.seed

    def describe_key(self):
        if not self.k_shot:
            return f"seed {self.seed}"
        return f"seed {self.seed} and k = {shot_label(self.shots)}"

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
    split = config.get("split")
    if isinstance(split, dict) and split.get("kind") == "k-shot":
        shots = split.get("shots")
        if not (shots is None or (_is_integer(shots) and shots > 0)):
            raise _damaged(path / "config.json",
                           f"its k-shot split's shots must be a positive integer or null, "
                           f"not {shots!r}")
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
        if run.key in indices:
            first = method.runs[indices[run.key]]
            raise UserError(f"{first.path} and {run.path} are both {method.name} runs with "
                            f"{run.describe_key()}; the paired t-test pairs runs by seed: give "
                            "one run per seed")
        indices[run.key] = index
    return indices


def _check_comparable(runs):
    """One dataset and class list, and one protocol; the same test images for every run
    (the official split), or for every run of one seed (a k-shot grid, whose draw
    depends on the seed only)."""
    first = runs[0]
    tested = {}
    for run in runs:
        for key, what in (("dataset", "datasets"), ("class_names", "class lists")):
            if run.config.get(key) != first.config.get(key):
                raise UserError(f"{run.path} and {first.path} have different {what}; "
                                "compare runs of one dataset")
        if run.k_shot != first.k_shot:
            grid = run if run.k_shot else first
            other = first if run.k_shot else run
            raise UserError(f"{grid.path} is a k-shot run (--shots), {other.path} is not; "
                            "compare runs of one protocol")
        same = tested.setdefault(run.seed if run.k_shot else None, run)
        if run.items != same.items or not np.array_equal(run.labels, same.labels):
            raise UserError(f"{run.path} and {same.path} were tested on different images")


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
