"""Training runs: config -> data -> classifier -> scheme -> fit -> run folder.

``run_protocol`` trains ``--repeats`` seeded repetitions on data decoded once;
``run_training`` trains one. A run folder holds ``config.json`` (resolved, written
first), ``history.csv`` (per epoch), ``checkpoint.npz`` while training (see
``checkpoints.py``), then ``model.keras`` (the plain classifier), ``predictions.csv``
(per test image: label, prediction, class probabilities) and ``metrics.json``
(written last, so its presence marks a finished run). An existing folder is never
replaced unless the config says ``overwrite`` (and then only a run folder), and
with ``resume`` an unfinished run continues from its last finished epoch.
"""

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from .backbones import build_classifier
from .checkpoints import CHECKPOINT, Checkpoint, EarlyStopping, restore
from .config import TrainConfig
from .datasets import get_dataset_spec, load_dataset, resolve_data_dir
from .distribute import SyncBatchNormalization, make_strategy, with_batchnorm
from .errors import UserError
from .pipeline import make_dataset, prepare
from .schemes import DistractionModel, PairwiseModel, TrainingScheme
from .splits import oversample, split_train_validation

# Flags that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"resume", "verbose", "overwrite", "repeats", "out_dir", "run_name",
                      "data_dir", "cache_dir", "steps_per_execution"}


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


def _switch(value):
    return has_gpu() if value == "auto" else value == "on"


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
        saved = _saved_config(run_dir)
        # A flag added since the run started (absent from its config) counts as
        # unchanged at its default value.
        defaults = TrainConfig().to_dict()
        changed = sorted(key for key, value in config.to_dict().items()
                         if key not in _RESUMABLE_CHANGES
                         and json.loads(json.dumps(value)) != saved.get(key, defaults[key]))
        if changed:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in changed)
            raise UserError(f"cannot resume {run_dir}: it was started with other {flags}")
        return run_dir, "finished" if (run_dir / "metrics.json").is_file() else "resume"
    if run_dir.exists() and config.run_name is not None:
        if not config.overwrite:
            raise UserError(
                f"run folder {run_dir} exists; choose another --run-name, pass --overwrite, "
                "or --resume to continue it")
        _saved_config(run_dir, "--overwrite refused")
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


def _saved_config(run_dir, refusal="cannot resume"):
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{refusal}: {run_dir} is not a run folder (no readable config.json)") from None


class EpochTimer(keras.callbacks.Callback):
    """Adds the wall time of each epoch to the logs as ``seconds`` (Table 2)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def build_model(config, num_classes):
    """The classifier and the model to fit: the classifier itself (baseline), a
    ``TrainingScheme`` (baseline + HNC), a ``DistractionModel`` or a ``PairwiseModel``.

    Under a distribution strategy with ``sync_batchnorm``, the classifier's
    BatchNormalization layers are ``SyncBatchNormalization`` (see ``distribute.py``);
    ``saved_classifier`` turns them back.
    """
    classifier = build_classifier(config.backbone, num_classes, config.image_size, config.weights)
    if config.strategy != "none" and config.sync_batchnorm:
        classifier = with_batchnorm(classifier, SyncBatchNormalization)
    hnc = {} if config.hnc == "none" else {
        "hnc": config.hnc, "hnc_weight": config.hnc_weight, "hnc_top_k": config.hnc_top_k,
        "hnc_temperature": config.hnc_temperature}
    try:
        if config.method == "pairwise":
            scheme = PairwiseModel(
                classifier, _layer_name(classifier, config.cam_module_layer, "--cam-module-layer"),
                gamma=config.gamma, alpha=config.alpha, beta=config.beta,
                pairwise_loss=config.pairwise_loss, module_filters=config.cam_module_filters,
                seed=config.seed, **hnc)
        elif config.occlusion != "none":
            scheme = DistractionModel(
                classifier, probability=config.probability, threshold=config.threshold,
                fill=config.occlusion, layer_name=_layer_name(classifier, config.cam_layer,
                                                              "--cam-layer"),
                seed=config.seed, **hnc)
        else:
            scheme = TrainingScheme(classifier, **hnc) if hnc else classifier
    except ValueError as error:
        raise UserError(str(error)) from None
    return classifier, scheme


def _layer_name(model, name, flag):
    """``name`` if ``model`` has such a layer (None: the scheme's default); a UserError
    naming the flag otherwise."""
    if name is None:
        return None
    try:
        model.get_layer(name)
    except ValueError:
        raise UserError(f"{flag} {name}: {model.name} has no layer of that name") from None
    return name


def saved_classifier(classifier):
    """The classifier as users get it: plain BatchNormalization layers, same weights."""
    if any(isinstance(layer, SyncBatchNormalization) for layer in classifier.layers):
        return with_batchnorm(classifier, keras.layers.BatchNormalization)
    return classifier


def compile_model(model, config):
    # Under a strategy, "auto" leaves XLA off, as Keras' own "auto" does: Keras
    # compiles the step of all replicas as one program (config refuses "on").
    jit = _switch(config.jit_compile) and config.strategy == "none"
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=config.learning_rate, beta_1=config.beta_1,
            beta_2=config.beta_2, epsilon=config.epsilon,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
        steps_per_execution=config.steps_per_execution,
    )


@dataclasses.dataclass
class PreparedData:
    """A dataset decoded once at the model's input size, shared by repetitions."""

    name: str
    class_names: tuple
    parts: dict
    path: Path

    @property
    def skipped(self):
        return [{"split": name, "path": path, "reason": reason}
                for name, part in self.parts.items() for path, reason in part.skipped]


def prepare_data(config, log=None):
    """Read the dataset and decode every image once (see ``pipeline.prepare``)."""
    data = load_dataset(config.dataset, config.data_dir, **config.dataset_options())
    if data.validation is None and data.train.events is not None and config.validation_fraction:
        # A share of images would put parts of one event in training and validation.
        raise UserError(
            f"dataset {config.dataset} has no validation split by events; give validation a "
            "share in --event-split (or val rows in the manifest's split column), or pass "
            "--validation-fraction 0")
    parts = {
        name: prepare(part, config.image_size, config.cache_dir, config.on_bad_image,
                      f"{config.dataset} {name}", log)
        for name, part in data.parts().items()
    }
    path = resolve_data_dir(get_dataset_spec(config.dataset), config.data_dir)
    return PreparedData(data.name, data.class_names, parts, path)


def split_data(data, config):
    """{"train", "validation", "test"} -> (Prepared, indices or None) for this run's
    seed. Validation is the dataset's own split where it has one, else a seeded,
    stratified share of the official training set; oversampling touches the
    training indices only."""
    train = data.parts["train"]
    if "validation" in data.parts:
        train_idx, validation = np.arange(len(train)), (data.parts["validation"], None)
    else:
        train_idx, val_idx = split_train_validation(
            train.labels, config.validation_fraction, config.seed)
        validation = (train, val_idx) if len(val_idx) else None
    train_idx = train_idx[oversample(train.labels[train_idx], config.oversample, config.seed)]
    if len(train_idx) < config.batch_size:
        raise UserError(
            f"--batch-size {config.batch_size} exceeds the {len(train_idx)} training images")
    return {"train": (train, train_idx), "validation": validation,
            "test": (data.parts["test"], None)}


def _count(split):
    if split is None:
        return 0
    prepared, indices = split
    return len(prepared) if indices is None else len(indices)


def run_protocol(config, log=print):
    """Train ``config.repeats`` repetitions with seeds seed, seed + 1, ...; the data
    are decoded once. Returns the run folders, in seed order."""
    data = prepare_data(config, log)
    return [run_training(dataclasses.replace(config, seed=config.seed + number), data, log)
            for number in range(config.repeats)]


def run_training(config, data=None, log=print):
    """Train one model as ``config`` says (its seed); returns the run folder."""
    data = data if data is not None else prepare_data(config, log)
    try:
        config = config.for_classes(len(data.class_names))
    except ValueError as error:
        raise UserError(str(error)) from None
    splits = split_data(data, config)
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(f"--batch-size {config.batch_size} is not a multiple of the {replicas} "
                        f"replicas of --strategy {config.strategy}")
    steps = _count(splits["train"]) // config.batch_size
    if steps % config.steps_per_execution:
        raise UserError(
            f"--steps-per-execution {config.steps_per_execution} does not divide the {steps} "
            "training steps per epoch (Keras would run the last call into the next epoch's "
            f"batches); divisors of {steps}: {_divisors(steps)}")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if _switch(config.mixed_precision) else "float32")
    try:
        with strategy.scope():
            keras.utils.set_random_seed(config.seed)
            classifier, model = build_model(config, len(data.class_names))
            compile_model(model, config)
        # The folder is made only once data and model are known to be good, so a
        # user error leaves nothing behind.
        run_dir, state = open_run_dir(config)
        if state == "finished":
            if log:
                log(f"{run_dir}: finished before, skipped")
            return run_dir
        stopper = None
        if splits["validation"] is not None:
            stopper = EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience,
                                    restore_best_weights=True)
        with strategy.scope():
            first_epoch, stopped = (restore(run_dir, model, stopper) if state == "resume"
                                    else (0, False))
        if first_epoch:
            _truncate_history(run_dir / "history.csv", first_epoch)
            if log:
                log(f"{run_dir}: resuming after epoch {first_epoch}")
        else:
            saved = config.to_dict() | {"run_name": run_dir.name,
                                        "class_names": list(data.class_names),
                                        "data_path": str(data.path)}
            (run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
        with strategy.scope():
            history = _fit(model, config, splits, steps, run_dir, stopper,
                           config.epochs if stopped else first_epoch)
        # The predictions come from the model that is saved, on one device.
        classifier = saved_classifier(classifier)
        test_set = _dataset(splits["test"], config, training=False)
        logits = np.asarray(classifier.predict(test_set, verbose=0), np.float64)
        classifier.save(run_dir / "model.keras")
    finally:
        keras.config.set_dtype_policy(previous_policy)

    test_part = splits["test"][0]
    # One pass over the test set gives both: the loss is the same sparse cross-entropy
    # on logits that training minimises, in float64.
    log_probabilities = logits - logsumexp(logits, axis=1, keepdims=True)
    probabilities = np.exp(log_probabilities)
    test_loss = -np.mean(log_probabilities[np.arange(len(logits)), test_part.labels])
    _write_predictions(run_dir / "predictions.csv", test_part, probabilities)
    monitored = history.get("val_accuracy", history["accuracy"])
    metrics = {
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == test_part.labels)),
        "test_loss": float(test_loss),
        "test_images": _count(splits["test"]),
        "train_images": _count(splits["train"]),
        "validation_images": _count(splits["validation"]),
        "skipped_images": data.skipped,
        "test_images_sha256": test_part.digest(),
        "epochs_run": len(monitored),
        "best_epoch": int(np.argmax(monitored)) + 1,
        "best_val_accuracy": float(np.max(monitored)) if stopper is not None else None,
        "seconds_per_epoch": float(np.mean(history["seconds"])),
        "train_seconds": float(np.sum(history["seconds"])),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return run_dir


def _divisors(number):
    return ", ".join(str(d) for d in range(1, number + 1) if number % d == 0)


def _dataset(split, config, training, epochs=None):
    prepared, indices = split
    return make_dataset(prepared.images, prepared.labels, config.batch_size, training=training,
                        seed=config.seed, indices=indices, augmentation=config.augmentation(),
                        epochs=epochs)


def _fit(model, config, splits, steps, run_dir, stopper, first_epoch):
    """Fit ``steps`` batches per epoch from ``first_epoch``; returns the whole history
    (all epochs) from history.csv."""
    train_set = _dataset(splits["train"], config, True, epochs=(first_epoch, config.epochs))
    val_set = None if splits["validation"] is None else _dataset(splits["validation"], config, False)
    history_file = run_dir / "history.csv"
    callbacks = [EpochTimer()]
    if stopper is not None:
        callbacks.append(stopper)
    callbacks += [keras.callbacks.CSVLogger(str(history_file), append=first_epoch > 0),
                  Checkpoint(run_dir, stopper)]
    model.fit(train_set, validation_data=val_set, epochs=config.epochs,
              initial_epoch=first_epoch, steps_per_epoch=steps, callbacks=callbacks,
              verbose=config.verbose, shuffle=False)  # shuffled by make_dataset
    return _read_history(history_file)


def _read_history(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else ())}


def _truncate_history(path, epochs):
    """Keep the header and the first ``epochs`` rows (an interruption between the
    history row and the checkpoint of an epoch would otherwise repeat the row)."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: epochs + 1]))


def _write_predictions(path, part, probabilities):
    """One row per test image: item (file or index), label, prediction, p0..pK-1."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "label", "prediction",
                         *(f"p{k}" for k in range(probabilities.shape[1]))])
        for item, label, row in zip(part.items, part.labels, probabilities):
            writer.writerow([item, int(label), int(np.argmax(row)), *(f"{p:.6g}" for p in row)])
