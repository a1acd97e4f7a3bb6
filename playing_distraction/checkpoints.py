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

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from .errors import UserError
from .storage import atomic_path

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

    def __init__(self, run_dir, early_stopping=None, name=CHECKPOINT, history=None):
        super().__init__()
        self.path = Path(run_dir) / name
        self.early_stopping = early_stopping
        self.history = history  # the stage's history CSV, kept in the checkpoint too

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
                "early_stopping": None, "history": None}
        if self.history is not None and self.history.is_file():
            # The history as of this checkpoint, so that a resumed run takes its epochs
            # and their history from one source.
            meta["history"] = self.history.read_text()
        stopper = self.early_stopping
        if stopper is not None:
            meta["early_stopping"] = stopper.state()
            for i, weight in enumerate(stopper.best_weights or ()):
                arrays[f"best_{i}"] = np.asarray(weight)
        arrays["meta"] = np.array(json.dumps(meta))
        needed = sum(array.nbytes for array in arrays.values())
        with atomic_path(self.path, needed) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


@dataclasses.dataclass
class Restored:
    """What a checkpoint restored: finished epochs, whether early stopping had ended
    the stage, whether the stage was over, and its history CSV (None in checkpoints
    written before it was kept)."""

    epochs: int = 0
    stopped: bool = False
    finished: bool = False
    history: str | None = None


def restore(run_dir, model, early_stopping=None, name=CHECKPOINT):
    """Load the run folder's checkpoint ``name`` into a compiled ``model`` (and the
    early stopping); returns a ``Restored`` (all zero without a checkpoint)."""
    path = Path(run_dir) / name
    if not path.is_file():
        return Restored()
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
        meta = json.loads(str(arrays.pop("meta")))
        epochs_done, stopped = int(meta["epochs_done"]), bool(meta["stopped"])
    except Exception as error:  # zipfile, pickle, EOF, JSON, key errors: a damaged file
        raise UserError(
            f"cannot resume from {path}: the file is damaged ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); delete it to start "
            "the run again from its first epoch with --resume") from None
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
    return Restored(epochs_done, stopped, bool(meta.get("finished", False)),
                    meta.get("history"))


def _count(arrays, prefix):
    return sum(1 for key in arrays if key.startswith(f"{prefix}_"))
