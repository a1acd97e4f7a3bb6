"""Run by test_distribute.py in a fresh process: splits the CPU into two logical
devices (possible only before TensorFlow starts), then trains the same model on the
same global batches on one device and on two replicas, and prints the comparison as
JSON on the last line of stdout.

    python tests/two_devices.py scheme   # SGD steps of a scheme, sync and per-replica BN
    python tests/two_devices.py train FASHION_DIR OUT_DIR   # train.py on 1 and 2 devices
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from playing_distraction.backbones import build_classifier  # noqa: E402
from playing_distraction.distribute import (  # noqa: E402
    SyncBatchNormalization, make_strategy, with_batchnorm)
from playing_distraction.schemes import DistractionModel  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from conftest import structured_images  # noqa: E402


def scheme_weights(strategy, batchnorm, probability, images, labels, steps=2, jit=False, epochs=1):
    """(initial, final) classifier weights after ``steps`` SGD steps of batch 16.

    SGD, not Adam: Adam's update does not change when the loss is scaled, so it
    would hide a loss scaled wrongly per replica."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        classifier = build_classifier("small_cnn", 4, 32, "none")
        if batchnorm is not None:
            classifier = with_batchnorm(classifier, batchnorm)
        model = DistractionModel(classifier, probability=probability, seed=0)
        model.compile(keras.optimizers.SGD(0.05),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit)
    start = [w.numpy().copy() for w in classifier.weights]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16).take(steps)
    logs = model.fit(data, epochs=epochs, verbose=0).history
    return start, [w.numpy() for w in classifier.weights], logs


def relative_difference(reference, other):
    """Largest weight difference, relative to the largest update of the reference."""
    start, end = reference
    update = max(float(np.abs(b - a).max()) for a, b in zip(start, end))
    return max(float(np.abs(a - b).max()) for a, b in zip(end, other[1])) / update


def compare_scheme():
    rng = np.random.default_rng(1)
    images = structured_images(48, 32, seed=1)
    labels = rng.integers(0, 4, 48)
    one = make_strategy("none")
    two = make_strategy("mirrored")
    result = {"replicas": two.num_replicas_in_sync}
    for probability in (0.0, 1.0):
        single = scheme_weights(one, None, probability, images, labels)
        synced = scheme_weights(two, SyncBatchNormalization, probability, images, labels)
        local = scheme_weights(two, None, probability, images, labels)
        # The yardstick of float tolerance: one device, the same step compiled by XLA.
        xla = scheme_weights(one, None, probability, images, labels, jit=True)
        result[f"p{probability:g}"] = {
            "xla": relative_difference(single[:2], xla[:2]),
            "sync": relative_difference(single[:2], synced[:2]),
            "per_replica": relative_difference(single[:2], local[:2]),
            "loss": [single[2]["loss"][-1], synced[2]["loss"][-1]],
            "occluded_area": [single[2]["occluded_area"][-1], synced[2]["occluded_area"][-1]],
        }
    # Replicas draw the same Bernoulli sequence as one device: the same steps occlude
    # (one step per epoch, so the history lists every draw).
    result["draws_p0.5"] = [
        scheme_weights(strategy, None, 0.5, images, labels, steps=1, epochs=8)[2]["occluded_steps"]
        for strategy in (one, two)]
    return result


def compare_train(data_dir, out_dir):
    """train.py on one device, on two replicas, and on one device with XLA (the
    yardstick of float tolerance), for distraction and for pairwise + HNC, all in
    this one process (as --repeats would); the test probabilities each wrote."""
    from playing_distraction.cli import train_main

    common = ["--dataset", "fashion-mnist", "--data-dir", data_dir, "--out-dir", out_dir,
              "--epochs", "1", "--verbose", "0", "--no-augment", "--learning-rate", "1e-3"]
    pairwise = ["--method", "pairwise", "--hnc", "mse"]
    runs = {"one": ["--strategy", "none", "--jit-compile", "off"],
            "two": ["--strategy", "mirrored"],
            "xla": ["--strategy", "none", "--jit-compile", "on"],
            "pairwise_one": ["--strategy", "none", "--jit-compile", "off", *pairwise],
            "pairwise_two": ["--strategy", "mirrored", *pairwise],
            "pairwise_xla": ["--strategy", "none", "--jit-compile", "on", *pairwise],
            "pairwise_local": ["--strategy", "mirrored", "--no-sync-batchnorm", *pairwise]}
    codes = {name: train_main(common + flags + ["--run-name", name]) for name, flags in runs.items()}
    probabilities = {
        name: np.loadtxt(os.path.join(out_dir, name, "predictions.csv"), delimiter=",",
                         skiprows=1, usecols=range(3, 13))
        for name in runs}
    saved = keras.models.load_model(os.path.join(out_dir, "two", "model.keras"))
    saved_pairwise = keras.models.load_model(os.path.join(out_dir, "pairwise_two", "model.keras"))
    # A global batch that does not split evenly over the replicas is refused.
    codes["odd_batch"] = train_main(common + ["--strategy", "mirrored", "--batch-size", "15",
                                              "--run-name", "odd"])
    return {
        "codes": codes,
        "replicas": make_strategy("mirrored").num_replicas_in_sync,
        "two": float(np.abs(probabilities["two"] - probabilities["one"]).max()),
        "xla": float(np.abs(probabilities["xla"] - probabilities["one"]).max()),
        "pairwise_two": float(np.abs(probabilities["pairwise_two"]
                                     - probabilities["pairwise_one"]).max()),
        "pairwise_xla": float(np.abs(probabilities["pairwise_xla"]
                                     - probabilities["pairwise_one"]).max()),
        "pairwise_local": float(np.abs(probabilities["pairwise_local"]
                                       - probabilities["pairwise_one"]).max()),
        "saved_layer_types": sorted({type(layer).__name__ for layer in saved.layers}),
        "saved_pairwise_layer_types": sorted({type(layer).__name__
                                              for layer in saved_pairwise.layers}),
        "odd_batch_folder": os.path.exists(os.path.join(out_dir, "odd")),
        "resume": compare_resume(data_dir, os.path.join(out_dir, "resume")),
    }


def compare_resume(data_dir, out_dir):
    """Two replicas, interrupted after the first of two epochs and resumed, against
    the same run uninterrupted: the exit codes and whether the predictions are equal."""
    from playing_distraction import checkpoints
    from playing_distraction.cli import train_main

    args = ["--dataset", "fashion-mnist", "--data-dir", data_dir, "--out-dir", out_dir,
            "--epochs", "2", "--verbose", "0", "--no-augment", "--learning-rate", "1e-3",
            "--strategy", "mirrored"]
    codes = {"whole": train_main(args + ["--run-name", "whole"])}
    original = checkpoints.Checkpoint.on_epoch_end

    def interrupted(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    checkpoints.Checkpoint.on_epoch_end = interrupted
    codes["interrupted"] = train_main(args + ["--run-name", "resumed"])
    checkpoints.Checkpoint.on_epoch_end = original
    codes["resumed"] = train_main(args + ["--run-name", "resumed", "--resume"])
    whole, resumed = (open(os.path.join(out_dir, name, "predictions.csv")).read()
                      for name in ("whole", "resumed"))
    return {"codes": codes, "equal": whole == resumed}


if __name__ == "__main__":
    what = sys.argv[1]
    result = compare_scheme() if what == "scheme" else compare_train(*sys.argv[2:4])
    print(json.dumps(result))
