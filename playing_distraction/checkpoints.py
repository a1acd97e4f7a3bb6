"""Resumable training: a checkpoint after every epoch, and early stopping that survives.

An interrupted run restarts from its last finished epoch with everything a fresh
continuation would have had: the model's variables (including the seed-generator
state that draws the occluded batches), the optimizer's variables, the number of
finished epochs, and the early-stopping state (best value, its epoch, epochs
without improvement, best weights). The training batches of every epoch depend
on (seed, epoch) only (``pipeline.make_dataset``), so a resumed run follows the
uninterrupted one.

A method with several training stages keeps one checkpoint per stage
(``checkpoint_name``); a finished stage's checkpoint is marked finished and kept
until the run ends, so a run interrupted between two stages resumes with the
weights the first one ended with.
"""

import json
import os
from pathlib import Path

import keras
import numpy as np

from .errors import UserError

CHECKPOINT = "checkpoint.npz"


def checkpoint_name(stage_index, stage_name):
    """The checkpoint file of a training stage: ``checkpoint.npz`` for the first
    (as for every run before stages existed), ``checkpoint-<stage>.npz`` after it."""
    return CHECKPOINT if stage_index == 0 else f"checkpoint-{stage_name}.npz"


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping, able to start from a saved state (see ``Checkpoint``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored is not None:
            state, best_weights = self.restored
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
            self.best_weights = best_weights

    def state(self):
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}


class Checkpoint(keras.callbacks.Callback):
    """Writes the stage's checkpoint ``name`` in the run folder at the end of every
    epoch, after early stopping has seen the epoch; the file is replaced atomically,
    so an interruption leaves the previous checkpoint whole."""

    def __init__(self, run_dir, early_stopping=None, name=CHECKPOINT):
        super().__init__()
        self.path = Path(run_dir) / name
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        self.write(epoch + 1, stopped=bool(self.model.stop_training))

    def write(self, epochs_done, stopped=False, finished=False):
        """Write the model's and optimizer's variables and the state of the stage;
        ``finished``: the stage is over, and the variables are those it ended with."""
        arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(self.model.variables)}
        arrays |= {f"optimizer_{i}": np.asarray(v)
                   for i, v in enumerate(self.model.optimizer.variables)}
        # "stopped": early stopping ended training at this epoch; a resumed run
        # must not train another one.
        meta = {"epochs_done": epochs_done, "stopped": stopped, "finished": finished,
                "early_stopping": None}
        stopper = self.early_stopping
        if stopper is not None:
            meta["early_stopping"] = stopper.state()
            for i, weight in enumerate(stopper.best_weights or ()):
                arrays[f"best_{i}"] = np.asarray(weight)
        arrays["meta"] = np.array(json.dumps(meta))
        partial = self.path.with_name(self.path.name + ".partial.npz")
        np.savez(partial, **arrays)
        os.replace(partial, self.path)


def restore(run_dir, model, early_stopping=None, name=CHECKPOINT):
    """Load the run folder's checkpoint ``name`` into a compiled ``model`` (and the
    early stopping); returns (finished epochs, whether early stopping had ended the
    stage, whether the stage was over), (0, False, False) if there is no checkpoint."""
    path = Path(run_dir) / name
    if not path.is_file():
        return 0, False, False
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot read the checkpoint {path}: {error}") from None
    model.optimizer.build(model.trainable_variables)
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        values = [arrays[f"{prefix}_{i}"] for i in range(_count(arrays, prefix))]
        if [v.shape for v in values] != [tuple(v.shape) for v in variables]:
            raise UserError(
                f"the checkpoint {path} does not match this model ({prefix} variables differ); "
                "was the run started with other flags?")
        for variable, value in zip(variables, values):
            variable.assign(value)
    if early_stopping is not None and meta["early_stopping"] is not None:
        best = [arrays[f"best_{i}"] for i in range(_count(arrays, "best"))]
        early_stopping.restored = (meta["early_stopping"], best or None)
    return int(meta["epochs_done"]), bool(meta["stopped"]), bool(meta.get("finished", False))


def _count(arrays, prefix):
    return sum(1 for key in arrays if key.startswith(f"{prefix}_"))
