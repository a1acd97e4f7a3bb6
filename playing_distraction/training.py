"""One training run: config -> data -> classifier -> scheme -> fit -> run folder.

The run folder holds ``config.json`` (resolved, written first), ``history.csv`` (per
epoch), ``model.keras`` (the plain classifier) and ``metrics.json`` (written last, so
its presence marks a finished run). An existing folder is never replaced unless the
config says ``overwrite``, and then only if it is a run folder.
"""

import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .backbones import build_classifier
from .datasets import load_dataset
from .errors import UserError
from .pipeline import make_dataset, prepare
from .splits import oversample, split_train_validation
from .schemes import DistractionModel


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


def _switch(value):
    return has_gpu() if value == "auto" else value == "on"


def create_run_dir(config):
    """Make the run folder; a default name gets a number if taken, a given one is an error."""
    out_dir = Path(config.out_dir)
    if config.run_name is not None:
        run_dir = out_dir / config.run_name
        if run_dir.exists():
            if not config.overwrite:
                raise UserError(
                    f"run folder {run_dir} exists; choose another --run-name or pass --overwrite")
            if not (run_dir / "config.json").is_file():
                raise UserError(
                    f"--overwrite refused: {run_dir} is not a run folder (no config.json)")
            shutil.rmtree(run_dir)
    else:
        base = config.default_run_name
        run_dir, number = out_dir / base, 1
        while run_dir.exists():
            number += 1
            run_dir = out_dir / f"{base}-{number}"
    try:
        run_dir.mkdir(parents=True)
    except OSError as error:
        raise UserError(f"cannot create run folder {run_dir}: {error.strerror}") from None
    return run_dir


class EpochTimer(keras.callbacks.Callback):
    """Adds the wall time of each epoch to the logs as ``seconds`` (Table 2)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def build_model(config, num_classes):
    """The classifier and the model to fit: itself (baseline) or a DistractionModel."""
    classifier = build_classifier(config.backbone, num_classes, config.image_size, config.weights)
    if config.occlusion == "none":
        return classifier, classifier
    scheme = DistractionModel(
        classifier, probability=config.probability, threshold=config.threshold,
        fill=config.occlusion, layer_name=config.cam_layer, seed=config.seed,
    )
    return classifier, scheme


def compile_model(model, config):
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=config.learning_rate, beta_1=config.beta_1,
            beta_2=config.beta_2, epsilon=config.epsilon,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=_switch(config.jit_compile),
    )


def prepare_data(config, log=None):
    """Read the dataset, decode it once at the model's size, and split it.

    Returns (class_names, {"train", "validation", "test"} -> (Prepared, indices or
    None), skipped files). Validation is the dataset's own split where it has one,
    else a seeded, stratified share of the official training set; oversampling
    touches the training indices only.
    """
    data = load_dataset(config.dataset, config.data_dir, **config.dataset_options())
    if data.validation is None and data.train.events is not None and config.validation_fraction:
        # A share of images would put parts of one event in training and validation.
        raise UserError(
            f"dataset {config.dataset} has no validation split by events; give validation a "
            "share in --event-split (or val rows in the manifest's split column), or pass "
            "--validation-fraction 0")
    prepared = {
        name: prepare(part, config.image_size, config.cache_dir, config.on_bad_image,
                      f"{config.dataset} {name}", log)
        for name, part in data.parts().items()
    }
    train = prepared["train"]
    if "validation" in prepared:
        train_idx, validation = np.arange(len(train)), (prepared["validation"], None)
    else:
        train_idx, val_idx = split_train_validation(
            train.labels, config.validation_fraction, config.seed)
        validation = (train, val_idx) if len(val_idx) else None
    train_idx = train_idx[oversample(train.labels[train_idx], config.oversample, config.seed)]
    if len(train_idx) < config.batch_size:
        raise UserError(
            f"--batch-size {config.batch_size} exceeds the {len(train_idx)} training images")
    splits = {"train": (train, train_idx), "validation": validation, "test": (prepared["test"], None)}
    skipped = [{"split": name, "path": path, "reason": reason}
               for name, part in prepared.items() for path, reason in part.skipped]
    return data.class_names, splits, skipped


def _count(split):
    if split is None:
        return 0
    prepared, indices = split
    return len(prepared) if indices is None else len(indices)


def run_training(config):
    """Train one model as ``config`` says; returns the run folder."""
    class_names, splits, skipped = prepare_data(config, log=print if config.verbose else None)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if _switch(config.mixed_precision) else "float32")
    try:
        keras.utils.set_random_seed(config.seed)
        classifier, model = build_model(config, len(class_names))
        compile_model(model, config)
        # The folder is made only once data and model are known to be good, so a
        # user error leaves nothing behind.
        run_dir = create_run_dir(config)
        saved = config.to_dict() | {"run_name": run_dir.name, "class_names": list(class_names)}
        (run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
        datasets = {}
        for name, split in splits.items():
            if split is not None:
                prepared, indices = split
                datasets[name] = make_dataset(
                    prepared.images, prepared.labels, config.batch_size, training=name == "train",
                    seed=config.seed, indices=indices, augmentation=config.augmentation())
        val_ds = datasets.get("validation")
        callbacks = [EpochTimer(), keras.callbacks.CSVLogger(str(run_dir / "history.csv"))]
        if val_ds is not None:
            callbacks.insert(1, keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=config.patience,
                restore_best_weights=True))
        start = time.perf_counter()
        history = model.fit(
            datasets["train"], validation_data=val_ds, epochs=config.epochs,
            callbacks=callbacks, verbose=config.verbose, shuffle=False,  # shuffled by tf.data
        ).history
        train_seconds = time.perf_counter() - start
        test = model.evaluate(datasets["test"], verbose=0, return_dict=True)
        classifier.save(run_dir / "model.keras")
    finally:
        keras.config.set_dtype_policy(previous_policy)

    monitored = history.get("val_accuracy", history["accuracy"])
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "test_images": _count(splits["test"]),
        "train_images": _count(splits["train"]),
        "validation_images": _count(splits["validation"]),
        "skipped_images": skipped,
        "epochs_run": len(monitored),
        "best_epoch": int(np.argmax(monitored)) + 1,
        "best_val_accuracy": float(np.max(monitored)) if val_ds is not None else None,
        "seconds_per_epoch": float(np.mean(history["seconds"])),
        "train_seconds": train_seconds,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return run_dir
