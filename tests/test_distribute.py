"""Several devices: synchronised BatchNormalization, and two replicas training as one device.

Two logical CPU devices can only be made before TensorFlow starts, so the comparisons
run ``two_devices.py`` in a fresh process.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_classifier, structured_images
from playing_distraction.config import TrainConfig
from playing_distraction.distribute import (
    SyncBatchNormalization, make_strategy, with_batchnorm)
from playing_distraction.stages import compile_model
from playing_distraction.training import build_model, saved_classifier

SCRIPT = Path(__file__).with_name("two_devices.py")


def _two_devices(*args):
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_make_strategy():
    assert make_strategy("none") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert make_strategy("mirrored") is mirrored  # one per process (see make_strategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("tpu")


def test_with_batchnorm_swaps_the_layers_and_keeps_graph_and_weights():
    classifier = make_classifier()
    images = structured_images(4)
    synced = with_batchnorm(classifier, SyncBatchNormalization)
    layers = _batchnorms(synced)
    assert layers and all(type(layer) is SyncBatchNormalization for layer in layers)
    assert [layer.name for layer in synced.layers] == [layer.name for layer in classifier.layers]
    for a, b in zip(classifier.weights, synced.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(synced(images), classifier(images), atol=1e-6)
    plain = saved_classifier(synced)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in _batchnorms(plain))
    np.testing.assert_allclose(plain(images), classifier(images), atol=1e-6)
    assert saved_classifier(classifier) is classifier


def test_sync_batchnorm_on_one_device_is_batchnorm_in_value_and_gradient():
    images = tf.constant(structured_images(6))
    plain = make_classifier()
    synced = with_batchnorm(plain, SyncBatchNormalization)

    def value_and_gradients(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True) ** 2)
        return loss, tape.gradient(loss, model.trainable_weights)

    (loss_a, grads_a), (loss_b, grads_b) = value_and_gradients(plain), value_and_gradients(synced)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # Training mode moved the moving statistics identically.
    for a, b in zip(_batchnorms(plain), _batchnorms(synced)):
        np.testing.assert_allclose(a.moving_mean, b.moving_mean, atol=1e-7)


def test_sync_batchnorm_config_and_keras_file_round_trip(tmp_path):
    layer = SyncBatchNormalization(momentum=0.9, epsilon=1e-4, name="bn")
    copy = SyncBatchNormalization.from_config(layer.get_config())
    assert (copy.momentum, copy.epsilon, copy.name) == (0.9, 1e-4, "bn")
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, layer(inputs))
    model.layers[-1].moving_mean.assign([0.5, -0.5])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[-1]) is SyncBatchNormalization
    x = np.random.default_rng(0).random((2, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_build_model_uses_sync_batchnorm_only_under_a_strategy():
    base = dict(backbone="small_cnn", image_size=32, weights="none", occlusion="zero")
    for strategy, sync, expected in (("none", True, keras.layers.BatchNormalization),
                                     ("mirrored", True, SyncBatchNormalization),
                                     ("mirrored", False, keras.layers.BatchNormalization)):
        config = TrainConfig(strategy=strategy, sync_batchnorm=sync, **base).resolved()
        classifier, scheme = build_model(config, 3)
        assert {type(layer) for layer in _batchnorms(classifier)} == {expected}
        assert scheme.classifier is classifier


def test_compile_leaves_xla_off_under_a_strategy_and_passes_steps_per_execution():
    model = make_classifier()
    compile_model(model, TrainConfig(strategy="mirrored", jit_compile="auto",
                                     steps_per_execution=4).resolved())
    assert model.jit_compile is False and model.steps_per_execution == 4
    compile_model(model, TrainConfig(jit_compile="on").resolved())
    assert model.jit_compile is True


def test_two_replicas_train_the_scheme_like_one_device():
    """Same global batches, SGD (sensitive to a loss scaled wrongly per replica):
    two replicas with synchronised BatchNormalization end where one device ends, within
    the float tolerance that XLA-compiling the same step on one device shows."""
    result = _two_devices("scheme")
    assert result["replicas"] == 2
    for case in ("p0", "p1"):
        figures = result[case]
        assert figures["sync"] <= max(2 * figures["xla"], 0.01), (case, figures)
        # The comparison can fail: per-replica statistics are far off.
        assert figures["per_replica"] > 0.1, (case, figures)
        np.testing.assert_allclose(*figures["loss"], rtol=1e-3)
        np.testing.assert_allclose(*figures["occluded_area"], rtol=1e-3)
    assert result["p1"]["occluded_area"][0] > 0
    one, two = result["draws_p0.5"]
    assert one == two and 0 < sum(one) < len(one)


def test_train_py_strategy_mirrored_matches_one_device(tmp_path, fashion_dir):
    result = _two_devices("train", fashion_dir, tmp_path / "runs")
    assert result["codes"] == {"one": 0, "two": 0, "xla": 0, "pairwise_one": 0,
                               "pairwise_two": 0, "pairwise_xla": 0, "pairwise_local": 0,
                               "odd_batch": 1}
    assert not result["odd_batch_folder"]
    assert result["replicas"] == 2
    assert result["two"] < 1e-3, result
    # Pairwise + HNC (two passes through the backbone per step; terms added to the
    # compiled loss and scaled per replica as Keras scales it) on two replicas:
    # within float tolerance of one device, the tolerance measured by compiling the
    # same run with XLA.
    assert result["pairwise_two"] < max(1e-3, 2 * result["pairwise_xla"]), result
    # ... which the yardstick can tell from per-replica BatchNormalization.
    assert result["pairwise_local"] > 10 * result["pairwise_two"], result
    # The saved classifiers are plain Keras: no layer of this package in them.
    for types in (result["saved_layer_types"], result["saved_pairwise_layer_types"]):
        assert "SyncBatchNormalization" not in types and "CAMModule" not in types
        assert "BatchNormalization" in types
    # Interrupted after its first epoch and resumed, it ends as the uninterrupted run.
    assert result["resume"] == {"codes": {"whole": 0, "interrupted": 130, "resumed": 0},
                                "equal": True}


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_readme_multi_worker_recipe_trains_on_two_local_workers(tmp_path):
    import os
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    recipe = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                  if "MultiWorkerMirroredStrategy" in block)
    model_line = 'build_classifier("resnet50", 196, weights="imagenet")'
    assert model_line in recipe
    # The strategy must come before any other TensorFlow op: the test's data after it.
    strategy_line = "strategy = tf.distribute.MultiWorkerMirroredStrategy()"
    head, tail = recipe.split(strategy_line)
    script = "\n".join([
        head + strategy_line,
        "import numpy as np",
        "rng = np.random.default_rng(0)",
        "images = rng.random((64, 32, 32, 3), dtype=np.float32)",
        "train_dataset = tf.data.Dataset.from_tensor_slices((images, rng.integers(0, 4, 64)))"
        ".batch(16).repeat()",
        "epochs, steps_per_epoch = 2, 4",
        "keras.utils.set_random_seed(0)",
        tail.replace(model_line, 'build_classifier("small_cnn", 4, 32)'),
        "print('weights', sum(float(abs(w.numpy()).sum()) for w in classifier.weights))",
    ])
    (tmp_path / "recipe.py").write_text(script)
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    workers = []
    for index in range(2):
        folder = tmp_path / f"worker{index}"
        folder.mkdir()
        config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="2")
        workers.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "recipe.py")], cwd=folder, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    sums = [next(line for line in out.splitlines() if line.startswith("weights")) for out in outputs]
    assert sums[0] == sums[1]
    # Two epochs were printed, with the scheme's counters.
    assert all(out.count("occluded_steps") == 2 for out in outputs)
    assert (tmp_path / "worker0" / "cars.keras").is_file()
    assert not (tmp_path / "worker1" / "cars.keras").exists()
    saved = keras.models.load_model(tmp_path / "worker0" / "cars.keras")
    assert not any(isinstance(layer, SyncBatchNormalization) for layer in saved.layers)
