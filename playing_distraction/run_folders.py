"""Run folders: their names, never replacing one by accident, resuming, and their files.

A run folder holds ``config.json`` (the resolved config, with the run's split and
the class names; written first), a history per training stage (``history.csv``
for the first), a checkpoint per stage while training (``checkpoints.py``), then
``model.keras`` (the plain classifier), ``predictions.csv`` (per test image: label,
prediction, class probabilities) and ``metrics.json`` (written last, so its
presence marks a finished run). An existing folder is never replaced unless the
config says ``overwrite`` (and then only a run folder), and with ``resume`` an
unfinished run continues from its last finished epoch.

This module does not import TensorFlow.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .errors import UserError
from .methods import flag

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
MODEL = "model.keras"

# Flags that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"resume", "verbose", "overwrite", "repeats", "out_dir", "run_name",
                     "data_dir", "cache_dir", "steps_per_execution"}


def run_name(config):
    """The run folder name: --run-name (with the seed appended for repetitions) or
    <dataset>-<method tag>-<backbone>-seed<seed> (``TrainConfig.method_tag``)."""
    if config.run_name is None:
        return config.default_run_name
    return config.run_name if config.repeats == 1 else f"{config.run_name}-seed{config.seed}"


def open_run_dir(config):
    """The run folder and the state it is in: "new", "resume" or "finished".

    Without ``resume``: a default name gets a number if taken, a given name that
    exists is an error unless ``overwrite``. With ``resume``: the folder of that name
    is continued (if its config matches), skipped if finished, or made.
    """
    out_dir = Path(config.out_dir)
    run_dir = out_dir / run_name(config)
    if run_dir.exists() and config.resume:
        saved = saved_config(run_dir)
        # A flag added since the run started (absent from its config) counts as
        # unchanged at its default value.
        defaults = TrainConfig().to_dict()
        changed = sorted(key for key, value in config.to_dict().items()
                         if key not in RESUMABLE_CHANGES
                         and json.loads(json.dumps(value)) != saved.get(key, defaults[key]))
        if changed:
            flags = ", ".join(flag(key) for key in changed)
            raise UserError(f"cannot resume {run_dir}: it was started with other {flags}")
        return run_dir, "finished" if (run_dir / METRICS).is_file() else "resume"
    if run_dir.exists() and config.run_name is not None:
        if not config.overwrite:
            raise UserError(
                f"run folder {run_dir} exists; choose another --run-name, pass --overwrite, "
                "or --resume to continue it")
        saved_config(run_dir, "--overwrite refused")
        shutil.rmtree(run_dir)
    elif run_dir.exists():
        base, number = run_dir.name, 1
        while run_dir.exists():
            number += 1
            run_dir = out_dir / f"{base}-{number}"
    try:
        run_dir.mkdir(parents=True)
    except OSError as error:
        raise UserError(f"cannot create run folder {run_dir}: {error.strerror}") from None
    return run_dir, "new"


def saved_config(run_dir, refusal="cannot resume"):
    try:
        return json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError):
        raise UserError(f"{refusal}: {run_dir} is not a run folder (no readable config.json)") from None


def write_json(path, values):
    Path(path).write_text(json.dumps(values, indent=2) + "\n")


def read_history(path):
    """{column: [value per epoch]} from a history CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else ())}


def truncate_history(path, epochs):
    """Keep the header and the first ``epochs`` rows (an interruption between the
    history row and the checkpoint of an epoch would otherwise repeat the row)."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: epochs + 1]))


def write_predictions(path, items, labels, probabilities):
    """One row per test image: item (file or index), label, prediction, p0..pK-1."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "label", "prediction",
                         *(f"p{k}" for k in range(probabilities.shape[1]))])
        for item, label, row in zip(items, labels, probabilities):
            writer.writerow([item, int(label), int(np.argmax(row)), *(f"{p:.6g}" for p in row)])
