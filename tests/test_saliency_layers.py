"""The layers of the hallucinated-saliency method (PAPERS.md §2): the modulation
l * (s + 1) and its gradients against NumPy, the saliency branch's shapes, range,
initialisation and variants, saving and XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from playing_distraction.layers import SaliencyBranch, SaliencyModulation
from playing_distraction.layers.saliency_branch import SHAPES


def modulation_inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    saliency = rng.random((2, 5, 4, 1)).astype("float32") * 2
    return features, saliency


def test_modulation_is_l_times_s_plus_one_for_every_channel():
    features, saliency = modulation_inputs()
    out = keras.ops.convert_to_numpy(SaliencyModulation()([features, saliency]))
    expected = np.empty_like(features)
    for c in range(features.shape[-1]):
        expected[..., c] = features[..., c] * (saliency[..., 0] + 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # A zero map is the identity (the skip connection).
    same = SaliencyModulation()([features, np.zeros_like(saliency)])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same), features)


def test_modulation_gradients_match_eq_3():
    features, saliency = modulation_inputs(1)
    upstream = np.random.default_rng(2).normal(size=features.shape).astype("float32")
    l, s = tf.Variable(features), tf.Variable(saliency)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(SaliencyModulation()([l, s]) * upstream)
    grad_l, grad_s = tape.gradient(loss, [l, s])
    # dL/dl = dL/dl^ * (s + 1), the same map for every channel (Eq. 3).
    np.testing.assert_allclose(grad_l.numpy(), upstream * (saliency + 1.0), rtol=1e-6)
    # dL/ds = sum over channels of dL/dl^ * l: the branch learns from the loss.
    np.testing.assert_allclose(grad_s.numpy(), (upstream * features).sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_modulation_keeps_the_features_dtype_under_mixed_precision():
    features, saliency = modulation_inputs()
    out = SaliencyModulation(dtype="mixed_float16")(
        [tf.constant(features, tf.float16), tf.constant(saliency)])
    assert out.dtype == tf.float16
    np.testing.assert_allclose(out.numpy(), features * (saliency + 1), rtol=2e-3, atol=2e-3)


def kernels(branch):
    return [w for w in branch.weights if len(w.shape) == 4]


def test_alexnet_branch_has_the_papers_shapes_and_a_non_negative_map():
    branch = SaliencyBranch((27, 27), seed=0)
    images = np.random.default_rng(0).random((2, 227, 227, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(branch(images))
    assert out.shape == (2, 27, 27, 1) and out.min() >= 0.0
    assert [tuple(w.shape) for w in kernels(branch)] == [
        (11, 11, 3, 96), (5, 5, 96, 256), (3, 3, 256, 384), (3, 3, 384, 384), (1, 1, 384, 1)]
    # 227 px -> conv1 55 -> pool 27 -> conv2 27 -> pool 13 -> conv3, conv4 13 x 13 x 384.
    x = images
    for step in branch.steps:
        x = step(x)
    assert tuple(x.shape) == (2, 13, 13, 384)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_the_number_of_convolutions_is_a_setting(count):
    branch = SaliencyBranch((16, 16), conv_layers=count, shape="narrow", seed=0)
    out = branch(np.ones((1, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (1, 16, 16, 1)
    shapes = [tuple(w.shape) for w in kernels(branch)]
    filters = [f for f, _, _ in SHAPES["narrow"][:count]]
    assert [shape[-1] for shape in shapes] == [*filters, 1]
    pools = [step for step in branch.steps if isinstance(step, keras.layers.MaxPooling2D)]
    assert len(pools) == min(count, 2)


@pytest.mark.parametrize("count, shape", [(0, "alexnet"), (5, "alexnet"), (2, "vgg")])
def test_a_bad_branch_setting_is_a_value_error(count, shape):
    with pytest.raises(ValueError, match="saliency branch"):
        SaliencyBranch((8, 8), conv_layers=count, shape=shape)


def test_kernels_are_glorot_uniform_seeded_and_biases_zero():
    branch = SaliencyBranch((8, 8), shape="narrow", seed=3)
    branch.build((None, 32, 32, 3))
    for kernel in kernels(branch):
        height, width, fan_in, fan_out = kernel.shape
        limit = np.sqrt(6.0 / (height * width * (fan_in + fan_out)))
        values = keras.ops.convert_to_numpy(kernel)
        assert np.abs(values).max() <= limit
        # Uniform on [-limit, limit]: its standard deviation is limit / sqrt(3).
        if values.size > 1000:
            assert np.std(values) == pytest.approx(limit / np.sqrt(3), rel=0.1)
    for bias in (w for w in branch.weights if len(w.shape) == 1):
        assert not keras.ops.convert_to_numpy(bias).any()
    again = SaliencyBranch((8, 8), shape="narrow", seed=3)
    again.build((None, 32, 32, 3))
    for a, b in zip(branch.weights, again.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def modulated_model(seed=0):
    """A tiny model: image -> conv features, modulated by the branch's map -> logits."""
    images = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(images)
    saliency = SaliencyBranch((16, 16), conv_layers=3, shape="narrow", seed=seed)(images)
    modulated = SaliencyModulation()([features, saliency])
    pooled = keras.layers.GlobalAveragePooling2D()(modulated)
    return keras.Model(images, keras.layers.Dense(3)(pooled))


def test_a_model_with_both_layers_saves_and_loads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    model = modulated_model()
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    path = tmp_path / "modulated.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)
    branch = next(layer for layer in loaded.layers if isinstance(layer, SaliencyBranch))
    assert branch.output_size == (16, 16) and branch.conv_layers == 3 and branch.shape == "narrow"


def test_a_training_step_through_both_layers_compiles_with_xla():
    keras.utils.set_random_seed(0)
    model = modulated_model()
    images = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return value, tape.gradient(value, model.trainable_variables)

    eager_loss, eager_grads = step(images, labels)
    compiled = tf.function(step, jit_compile=True)
    xla_loss, xla_grads = compiled(images, labels)
    np.testing.assert_allclose(xla_loss.numpy(), eager_loss.numpy(), rtol=1e-5)
    # The branch's kernels get gradients through the modulation, in both.
    assert len(xla_grads) == len(model.trainable_variables)
    for eager, xla in zip(eager_grads, xla_grads):
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-3, atol=1e-5)
    branch_grads = [g for v, g in zip(model.trainable_variables, xla_grads)
                    if "saliency_branch" in v.path]
    assert branch_grads and any(np.abs(g.numpy()).sum() > 0 for g in branch_grads)
    # It ran as one XLA program (a function TensorFlow cannot compile raises instead).
    assert "ENTRY" in compiled.experimental_get_compiler_ir(images, labels)(stage="hlo")
