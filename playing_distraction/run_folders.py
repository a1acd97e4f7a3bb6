"""Run folders: their names, never replacing one by accident, resuming, and their files.

A run folder holds ``config.json`` (the resolved config, with the run's split and
the class names; written first), a history per training stage (``history.csv``
for the first), a checkpoint per stage while training (``checkpoints.py``), then
``model.keras`` (the plain classifier), ``backbone.weights.h5`` (its backbone
without the head, for ``--weights``), ``predictions.csv`` (per test image: label,
prediction, class probabilities) and ``metrics.json`` (written last, so its
presence marks a finished run). An existing folder is never replaced unless the
config says ``overwrite`` (and then only a run folder), and with ``resume`` an
unfinished run continues from its last finished epoch.

This module does not import TensorFlow.
"""

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from .backbones import BACKBONE_FILE as BACKBONE
from .config import TrainConfig, shot_count
from .errors import UserError
from .methods import flag
from .splits import shots_tag
from .storage import LOCK, PARTIAL, RunLock, atomic_path, read_json_object

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
MODEL = "model.keras"

# Flags that may differ between an interrupted run and its resumption (the logging
# settings among them: a run resumed with or without --tensorboard trains the same).
RESUMABLE_CHANGES = {"resume", "verbose", "overwrite", "repeats", "out_dir", "run_name",
                     "data_dir", "cache_dir", "steps_per_execution", "tensorboard",
                     "tensorboard_images_every", "tensorboard_images"}


def run_name(config):
    """The run folder name: --run-name (with the seed appended for repetitions) or
    <dataset>-<method tag>-<backbone>-seed<seed> (``TrainConfig.method_tag``)."""
    if config.run_name is None:
        return config.default_run_name
    name = config.run_name
    if config.shots:  # a run of the k-shot grid
        name += f"-{shots_tag(shot_count(config.shots[0]))}"
    return name if config.repeats == 1 else f"{name}-seed{config.seed}"


def open_run_dir(config, log=None):
    """The run folder, the state it is in ("new", "resume" or "finished") and its
    lock (``storage.RunLock``, held: release it when done).

    Without ``resume``: a default name gets a number if taken, a given name that
    exists is an error unless ``overwrite`` (and then only a run folder is
    replaced). With ``resume``: the folder of that name is continued (if its config
    matches), skipped if finished, or made; a folder that an interruption left
    before anything was written in it counts as new.
    """
    out_dir = Path(config.out_dir)
    run_dir = out_dir / run_name(config)
    if run_dir.exists() and config.resume:
        lock = RunLock(run_dir, log).acquire()
        try:
            return run_dir, _resume_state(run_dir, config), lock
        except BaseException:
            lock.release()
            raise
    if run_dir.exists() and config.run_name is not None:
        if not config.overwrite:
            raise UserError(
                f"run folder {run_dir} exists; choose another --run-name, pass --overwrite, "
                "or --resume to continue it")
        if not is_run_folder(run_dir):
            raise UserError(f"--overwrite refused: {run_dir} is not a run folder (no "
                            "config.json or other file a run writes)")
        RunLock(run_dir, log).acquire()  # not while another process trains in it
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
    return run_dir, "new", RunLock(run_dir, log).acquire()


def resumed(config, given, log=None):
    """The config that continues the run folder ``config`` names, if it has one: the
    fields the command line did not set (not in ``given``) take the values the run
    was started with, so a default changed since (a new version's) does not stop
    it. Fields that shape the decoded data (the data group, ``image_size``) are
    not taken: the data are decoded before the run folders are seen, so such a
    change is refused by ``open_run_dir``, as is every field the command line set."""
    run_dir = Path(config.out_dir) / run_name(config)
    if not (run_dir / CONFIG).is_file():
        return config
    saved_values = saved_config(run_dir)
    saved = TrainConfig.from_dict(saved_values)
    taken = {}
    for field in dataclasses.fields(config):
        name = field.name
        if (name in given or name in RESUMABLE_CHANGES or name not in saved_values
                or field.metadata.get("group") == "data" or name == "image_size"):
            continue
        if getattr(saved, name) != getattr(config, name):
            taken[name] = getattr(saved, name)
    if taken and log:
        log(f"{run_dir}: resumed with the values it was started with: " + ", ".join(
            f"{flag(name)} {_shown(value)}" for name, value in taken.items()))
    return dataclasses.replace(config, **taken)


def _shown(value):
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _resume_state(run_dir, config):
    if not (run_dir / CONFIG).exists() and _only_leftovers(run_dir):
        return "new"  # made, but interrupted before its config.json was written
    saved = saved_config(run_dir)
    # A flag added since the run started (absent from its config) counts as
    # unchanged at its default value (``from_dict``: the optimizer settings of then).
    defaults = json.loads(json.dumps(TrainConfig.from_dict({}).to_dict()))  # tuples: lists
    changed = sorted(key for key, value in config.to_dict().items()
                     if key not in RESUMABLE_CHANGES
                     and json.loads(json.dumps(value)) != saved.get(key, defaults[key]))
    if changed:
        flags = ", ".join(flag(key) for key in changed)
        raise UserError(f"cannot resume {run_dir}: it was started with other {flags}")
    return "finished" if (run_dir / METRICS).is_file() else "resume"


def _only_leftovers(run_dir):
    """The folder holds nothing but what a write cut short or a lock leaves."""
    return all(path.name == LOCK or path.name.startswith(PARTIAL) for path in run_dir.iterdir())


def is_run_folder(path):
    """``path`` holds a file that only a run writes (so --overwrite may replace it), or
    nothing but the leftovers of an interrupted start."""
    names = {entry.name for entry in Path(path).iterdir()}
    return (bool(names & {CONFIG, METRICS, PREDICTIONS, MODEL, BACKBONE, LOCK})
            or any(name.startswith(("checkpoint", "history", PARTIAL)) for name in names)
            or not names)


def saved_config(run_dir, refusal="cannot resume"):
    """The run's config.json, checked to be a JSON object."""
    if not (run_dir / CONFIG).exists():
        raise UserError(f"{refusal}: {run_dir} is not a run folder (no config.json)")
    return read_json_object(
        run_dir / CONFIG, f"{refusal} {run_dir}: start the run again (delete the folder, or "
        f"pass --overwrite --run-name {run_dir.name})")


def read_history(path):
    """{column: [value per epoch]} from a history CSV. Columns Keras' CSVLogger fills
    with "NA" alone (the val_ columns it adds to a run without validation) are left
    out."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else ())
            if any(row[key] != "NA" for row in rows)}


def write_predictions(path, items, labels, probabilities):
    """One row per test image: item (file or index), label, prediction, p0..pK-1."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "label", "prediction",
                         *(f"p{k}" for k in range(probabilities.shape[1]))])
        for item, label, row in zip(items, labels, probabilities):
            writer.writerow([item, int(label), int(np.argmax(row)), *(f"{p:.6g}" for p in row)])
