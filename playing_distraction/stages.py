"""One training stage: compile, fit, checkpoint, early stopping, resume.

A method declares its stages (``methods.Stage``; one by default). Each stage sets
what trains, compiles the model with its optimizer (the config's, with the stage's
overrides), continues from its own checkpoint if a run is resumed, and fits with
early stopping on validation accuracy (best weights restored, Morales et al.,
Sec. 4.2) and a checkpoint after every epoch. The first stage's files are
``history.csv`` and ``checkpoint.npz``, as for every run before stages existed;
a later stage's are ``history-<stage>.csv`` and ``checkpoint-<stage>.npz``. With
``--tensorboard``, each stage also logs to TensorBoard (``tensorboard.py``).
"""

import dataclasses
import math
import time

import keras
import tensorflow as tf

from .checkpoints import Checkpoint, EarlyStopping, Restored, checkpoint_name, restore
from .errors import UserError
from .pipeline import make_dataset
from .run_folders import read_history
from .storage import write_text
from .tensorboard import stage_log


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


def switch(value):
    """An "auto" / "on" / "off" flag: auto is on when a GPU is present."""
    return has_gpu() if value == "auto" else value == "on"


def make_optimizer(config):
    """The optimizer the config names, with its flags: Adam (the papers', default) or
    SGD with momentum; ``weight_decay`` is Keras' decoupled weight decay (None at 0, so
    that the optimizer holds exactly the variables it held before the flag existed)."""
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.learning_rate,
                                    momentum=config.momentum, weight_decay=decay)
    return keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.beta_1,
                                 beta_2=config.beta_2, epsilon=config.epsilon,
                                 weight_decay=decay)


def compile_model(model, config):
    # Under a strategy, "auto" leaves XLA off, as Keras' own "auto" does: Keras
    # compiles the step of all replicas as one program (config refuses "on").
    jit = switch(config.jit_compile) and config.strategy == "none"
    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
        steps_per_execution=config.steps_per_execution,
    )


class EpochTimer(keras.callbacks.Callback):
    """Adds the wall time of each epoch to the logs as ``seconds`` (Table 2)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


class StopOnNonFinite(keras.callbacks.Callback):
    """Ends the run with one line when an epoch's loss or metrics are not finite
    (a learning rate too high, say), before that epoch is written to the history or
    the checkpoint: the last good checkpoint stays, and no NaN reaches a file."""

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        bad = {key: value for key, value in (logs or {}).items()
               if isinstance(value, float) and not math.isfinite(value)}
        if bad:
            kept = (f"the checkpoint of epoch {epoch} is kept" if epoch
                    else "no epoch had finished")
            raise UserError(
                f"training diverged in epoch {epoch + 1}: {', '.join(sorted(bad))} = "
                f"{next(iter(bad.values()))}; {kept} ({self.checkpoint}); try a lower "
                "--learning-rate")


def resume_history(path, restored, log=None):
    """Make the stage's history CSV hold exactly the ``restored.epochs`` finished
    epochs the checkpoint records: taken from the checkpoint where it kept them
    (rewritten if the file was lost; refused if the file says otherwise), else cut
    to that many rows (checkpoints before the history was kept in them)."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else None
    if restored.history is not None:
        recorded = restored.history.splitlines(keepends=True)[: restored.epochs + 1]
        if lines is None:
            if log:
                log(f"{path} was missing; rewritten from the checkpoint")
        elif lines[: len(recorded)] != recorded:
            raise UserError(
                f"cannot resume: {path} does not match the {restored.epochs} epochs its "
                "checkpoint recorded (was it edited?); restore it, or delete it to have "
                "it rewritten from the checkpoint")
        write_text(path, "".join(recorded))
        return
    if lines is None or len(lines) < restored.epochs + 1:
        held = 0 if lines is None else max(len(lines) - 1, 0)
        raise UserError(
            f"cannot resume: {path} holds {held} of the {restored.epochs} epochs the "
            "checkpoint has finished; start the run again (delete the folder, or pass "
            "--overwrite with --run-name)")
    # An interruption between an epoch's history row and its checkpoint would
    # otherwise repeat the row.
    write_text(path, "".join(lines[: restored.epochs + 1]))


def history_name(stage_index, stage_name):
    return "history.csv" if stage_index == 0 else f"history-{stage_name}.csv"


def stage_config(config, stage):
    """The run config as the stage trains with it: its epochs and optimizer settings."""
    return dataclasses.replace(config, epochs=stage.epochs or config.epochs, **stage.optimizer)


def set_trainable(model, stage):
    """Let every layer train, then let the stage freeze what it does not train."""
    model.trainable = True
    if stage.trainable is not None:
        stage.trainable(model)


def freeze_narrow_layers(model, minimum):
    """Freeze every layer of the classifier (``model``, or a scheme's ``classifier``)
    whose weights have fewer than ``minimum`` output channels, but its last linear
    layer: Cen et al. (2021, Sec. 4.3) fine-tune only the layers with 512 channels or
    more on ImageNet."""
    from .heatmaps import linear_head

    classifier = getattr(model, "classifier", model)
    head = linear_head(classifier)
    for layer in classifier.layers:
        if layer.weights and (head is None or layer is not head[0]):
            if layer.weights[0].shape[-1] < minimum:
                layer.trainable = False


def make_split_dataset(split, config, training, epochs=None):
    prepared, indices = split
    return make_dataset(prepared.images, prepared.labels, config.batch_size, training=training,
                        seed=config.seed, indices=indices, augmentation=config.augmentation(),
                        epochs=epochs)


def run_stage(model, config, stage, index, splits, steps, run_dir, strategy, resuming,
              last=True, log=None, callbacks=()):
    """Train ``model`` through one stage in ``run_dir``; returns the stage's whole
    history (every epoch, also those before an interruption).

    resuming: continue from the stage's checkpoint where there is one (a finished
    stage's checkpoint restores the weights it ended with, and nothing trains).
    last: the run's last stage; an earlier one leaves a finished checkpoint behind,
    so that a run interrupted before the next stage's first epoch resumes from it.
    callbacks: the method's own (``methods.Preparation``), run after the epoch timer
    starts, so that their work counts in the epoch's seconds.
    """
    config = stage_config(config, stage)
    set_trainable(model, stage)
    with strategy.scope():
        compile_model(model, config)
    stopper = None
    if splits["validation"] is not None:
        stopper = EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience,
                                restore_best_weights=True)
    name = checkpoint_name(index, stage.name)
    history_file = run_dir / history_name(index, stage.name)
    with strategy.scope():
        restored = restore(run_dir, model, stopper, name) if resuming else Restored()
    first_epoch = restored.epochs
    if first_epoch:
        resume_history(history_file, restored, log)
    if restored.finished:
        if log:
            log(f"{run_dir}: stage {stage.name} finished before")
        return read_history(history_file)
    if first_epoch and log:
        log(f"{run_dir}: resuming after epoch {first_epoch}"
            + (f" of stage {stage.name}" if index else ""))
    checkpoint = Checkpoint(run_dir, stopper, name, history_file)
    callbacks = [EpochTimer(), *callbacks, StopOnNonFinite(checkpoint.path)]
    if stopper is not None:
        callbacks.append(stopper)
    if config.tensorboard:
        # After early stopping, which tells it the last epoch; before the checkpoint, so
        # that a checkpointed epoch is in the logs.
        callbacks.append(stage_log(config, splits, run_dir, index, stage.name))
    callbacks += [keras.callbacks.CSVLogger(str(history_file), append=first_epoch > 0),
                  checkpoint]
    first_epoch = config.epochs if restored.stopped else first_epoch
    with strategy.scope():
        train_set = make_split_dataset(splits["train"], config, True,
                                       epochs=(first_epoch, config.epochs))
        val_set = (None if splits["validation"] is None
                   else make_split_dataset(splits["validation"], config, False))
        model.fit(train_set, validation_data=val_set, epochs=config.epochs,
                  initial_epoch=first_epoch, steps_per_epoch=steps, callbacks=callbacks,
                  verbose=config.verbose, shuffle=False)  # shuffled by make_dataset
    history = read_history(history_file)
    if not last:
        checkpoint.write(len(history.get("seconds", ())), finished=True)
    return history
