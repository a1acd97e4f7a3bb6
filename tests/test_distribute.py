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
from playing_distraction import config as config_module
from playing_distraction.config import TrainConfig
from playing_distraction.distribute import (
    STRATEGIES, SyncBatchNormalization, make_strategy, with_batchnorm)
from playing_distraction.training import build_model, compile_model, saved_classifier

SCRIPT = Path(__file__).with_name("two_devices.py")


def _two_devices(*args):
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_strategy_names_match_the_config():
    assert config_module.STRATEGIES == STRATEGIES


def test_make_strategy():
    assert make_strategy("none") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
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
        config = TrainConfig(strategy=strategy, sync_batchnorm=sync, **base)
        classifier, scheme = build_model(config, 3)
        assert {type(layer) for layer in _batchnorms(classifier)} == {expected}
        assert scheme.classifier is classifier


def test_compile_leaves_xla_off_under_a_strategy_and_passes_steps_per_execution():
    model = make_classifier()
    compile_model(model, TrainConfig(strategy="mirrored", jit_compile="auto",
                                     steps_per_execution=4))
    assert model.jit_compile is False and model.steps_per_execution == 4
    compile_model(model, TrainConfig(jit_compile="on"))
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
    assert result["codes"] == {"one": 0, "two": 0, "xla": 0}
    assert result["replicas"] == 2
    assert result["two"] < 1e-3, result
    # The saved classifier is plain Keras: no layer of this package in it.
    assert "SyncBatchNormalization" not in result["saved_layer_types"]
    assert "BatchNormalization" in result["saved_layer_types"]
