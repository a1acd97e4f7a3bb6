"""One training run: config -> split -> classifier -> the method's model -> its stages
-> test predictions and metrics in the run folder.

The pieces live apart: ``protocols.py`` decodes the data once and runs the seeded
repetitions, ``run_folders.py`` names, opens and writes run folders, ``stages.py``
compiles and fits one stage, ``methods.py`` builds each method's model.
"""

import dataclasses

import keras
import numpy as np
from scipy.special import logsumexp

from .backbones import file_sha256, get_backbone, save_backbone, weights_file
from .checkpoints import checkpoint_name
from .config import shot_count
from .distribute import SyncBatchNormalization, make_strategy, with_batchnorm
from .errors import UserError
from .run_folders import (BACKBONE, CONFIG, METRICS, MODEL, PREDICTIONS, open_run_dir,
                          resumed, write_predictions)
from .storage import atomic_path, write_json
from .splits import KShotSplit, OfficialSplit
from .stages import make_split_dataset, run_stage, switch


def build_model(config, num_classes, class_names=None):
    """The classifier and the model to fit: the chosen method's classifier (``methods.py``:
    the plain one, or e.g. a modulated one) and what its ``build`` makes of it - the
    classifier itself for plain training, or a training scheme - with the add-ons'
    settings. class_names: the run's classes in label order (default: their numbers).

    Under a distribution strategy with ``sync_batchnorm``, the classifier's
    BatchNormalization layers are ``SyncBatchNormalization`` (see ``distribute.py``);
    ``saved_classifier`` turns them back.
    """
    options = config.method_options()
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
    classifier = options.classifier(config, num_classes, names)
    if config.strategy != "none" and config.sync_batchnorm:
        classifier = with_batchnorm(classifier, SyncBatchNormalization)
    try:
        model = options.build(classifier, config, **config.scheme_kwargs())
    except ValueError as error:
        raise UserError(str(error)) from None
    return classifier, model


def saved_classifier(classifier):
    """The classifier as users get it: plain BatchNormalization layers, same weights."""
    if any(isinstance(layer, SyncBatchNormalization) for layer in classifier.layers):
        return with_batchnorm(classifier, keras.layers.BatchNormalization)
    return classifier


def run_training(config, data, log=print, given=None):
    """Train one model as ``config`` says (its seed) on ``data``
    (``protocols.prepare_data``); returns the run folder. given: the fields the
    command line set; with ``resume``, the others continue a run folder with the
    values it was started with (``run_folders.resumed``)."""
    try:
        config = config.for_classes(len(data.class_names))
    except ValueError as error:
        raise UserError(str(error)) from None
    # Classes given by name are recorded by index: both spellings name the same run.
    config = dataclasses.replace(config, classes=data.classes)
    if config.resume and given is not None:
        config = resumed(config, given, log)
    split = split_of_config(config)  # recorded in its config.json
    splits = split.assign(data.parts)
    if config.shots and _count(splits["train"]) < config.batch_size:
        # A k-shot grid's small k: one batch of every training image.
        config = dataclasses.replace(config, batch_size=_count(splits["train"]))
        if log:
            log(f"--shots {config.shots[0]}: --batch-size cut to the "
                f"{config.batch_size} training images")
    strategy = make_strategy(config.strategy)
    steps = steps_per_epoch(config, _count(splits["train"]), strategy.num_replicas_in_sync)
    options = config.method_options()
    stages = options.stages(config)
    checkpoints = [checkpoint_name(index, stage.name) for index, stage in enumerate(stages)]
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if switch(config.mixed_precision) else "float32")
    try:
        with strategy.scope():
            keras.utils.set_random_seed(config.seed)
            classifier, model = build_model(config, len(data.class_names), data.class_names)
            # The method's own data (e.g. image pairs): checked before the folder is made.
            preparation = options.prepare_training(model, config, data, splits, log)
        if preparation.splits is not splits:  # e.g. images added to the training set
            splits = preparation.splits
            steps = steps_per_epoch(config, _count(splits["train"]),
                                    strategy.num_replicas_in_sync)
        # The folder is made only once data and model are known to be good, so a
        # user error leaves nothing behind; it stays locked while this process
        # trains in it.
        run_dir, state, lock = open_run_dir(config, log)
        try:
            if state == "finished":
                if log:
                    log(f"{run_dir}: finished before, skipped")
                return run_dir
            if not any((run_dir / name).is_file() for name in checkpoints):
                write_json(run_dir / CONFIG, config.to_dict() | {
                    "run_name": run_dir.name, "class_names": list(data.class_names),
                    "data_path": str(data.path), "split": split.to_dict(),
                    "weights_sha256": _weights_sha256(config)} | options.record()
                    | preparation.record)
            # The stages freeze what they do not train; the saved classifier trains whole.
            trainable = {layer.name: layer.trainable for layer in classifier.layers}
            histories = [run_stage(model, config, stage, index, splits, steps, run_dir,
                                   strategy, resuming=state == "resume",
                                   last=index == len(stages) - 1, log=log,
                                   callbacks=preparation.callbacks)
                         for index, stage in enumerate(stages)]
            for layer in classifier.layers:
                layer.trainable = trainable[layer.name]
            # The predictions come from the model that is saved, on one device.
            classifier = saved_classifier(classifier)
            test_part, test_indices = splits["test"]
            if test_indices is not None:
                test_part = test_part.take(test_indices)
            test_set = make_split_dataset((test_part, None), config, training=False)
            logits = np.asarray(classifier.predict(test_set, verbose=0), np.float64)
            with atomic_path(run_dir / MODEL, classifier.count_params() * 4) as temporary:
                classifier.save(temporary)
            with atomic_path(run_dir / BACKBONE, classifier.count_params() * 4) as temporary:
                save_backbone(classifier, config.backbone, temporary)
            for name, write in options.files(config).items():
                with atomic_path(run_dir / name, classifier.count_params() * 4) as temporary:
                    write(classifier, temporary)
            metrics = write_test_results(run_dir, test_part, logits) | {
                "test_images": _count(splits["test"]),
                "train_images": _count(splits["train"]),
                "validation_images": _count(splits["validation"]),
                "skipped_images": data.skipped,
                "test_images_sha256": test_part.digest(),
            } | stage_results(stages, histories, splits["validation"] is not None)
            write_json(run_dir / METRICS, metrics)
            for name in checkpoints:
                (run_dir / name).unlink(missing_ok=True)
        finally:
            lock.release()
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return run_dir


def split_of_config(config):
    """The split a run's config asks for: a k-shot draw of its one --shots value, or the
    official split."""
    if config.shots:
        return KShotSplit(shot_count(config.shots[0]), config.seed)
    return OfficialSplit.from_config(config.to_dict())


def steps_per_epoch(config, train_images, replicas):
    """Training steps per epoch; a UserError naming the flag where the batch size or
    steps per execution do not fit the training images or the replicas."""
    if train_images < config.batch_size:
        raise UserError(f"--batch-size {config.batch_size} exceeds the {train_images} training "
                        "images")
    if config.batch_size % replicas:
        raise UserError(f"--batch-size {config.batch_size} is not a multiple of the {replicas} "
                        f"replicas of --strategy {config.strategy}")
    steps = train_images // config.batch_size
    if steps % config.steps_per_execution:
        raise UserError(
            f"--steps-per-execution {config.steps_per_execution} does not divide the {steps} "
            "training steps per epoch (Keras would run the last call into the next epoch's "
            f"batches); divisors of {steps}: {_divisors(steps)}")
    return steps


def write_test_results(run_dir, test_part, logits):
    """Write predictions.csv from the test logits; returns the test accuracy and loss.
    One pass over the test set gives both: the loss is the same sparse cross-entropy on
    logits that training minimises, in float64."""
    log_probabilities = logits - logsumexp(logits, axis=1, keepdims=True)
    probabilities = np.exp(log_probabilities)
    write_predictions(run_dir / PREDICTIONS, test_part.items, test_part.labels, probabilities)
    return {
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == test_part.labels)),
        "test_loss": float(-np.mean(log_probabilities[np.arange(len(logits)),
                                                      test_part.labels])),
    }


def stage_results(stages, histories, validated):
    """The cost and early stopping of the stage whose model is tested (the last), and,
    with several stages, of each."""
    results = _stage_metrics(histories[-1], validated)
    if len(stages) > 1:
        results["stages"] = [{"stage": stage.name, **_stage_metrics(history, validated)}
                             for stage, history in zip(stages, histories)]
    return results


def _stage_metrics(history, validated):
    monitored = history.get("val_accuracy", history["accuracy"])
    return {
        "epochs_run": len(monitored),
        "best_epoch": int(np.argmax(monitored)) + 1,
        "best_val_accuracy": float(np.max(monitored)) if validated else None,
        "seconds_per_epoch": float(np.mean(history["seconds"])),
        "train_seconds": float(np.sum(history["seconds"])),
    }


def _weights_sha256(config):
    """The SHA-256 of the weights file the run started from (None: imagenet, none)."""
    path = weights_file(get_backbone(config.backbone), config.weights)
    return None if path is None else file_sha256(path)


def _count(split):
    if split is None:
        return 0
    prepared, indices = split
    return len(prepared) if indices is None else len(indices)


def _divisors(number):
    return ", ".join(str(d) for d in range(1, number + 1) if number % d == 0)
