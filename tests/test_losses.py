"""Loss terms of the CAM-based schemes against NumPy references written out by hand."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier, structured_images

from playing_distraction import choices, losses
from playing_distraction.heatmaps import class_activation_maps, linear_head

B, H, W, K = 4, 3, 3, 5


def random_logits(seed=0, scale=3.0, shape=(B, K)):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype("float32")


def random_cams(seed=0, shape=(B, H, W, K)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


LABELS = np.array([0, 3, 4, 1], dtype="int32")


def log_softmax_ref(x):
    """Log-softmax of a 1-D vector in float64, by log-sum-exp around the maximum."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max()
    return shifted - math.log(sum(math.exp(v) for v in shifted))


def cross_entropy_ref(labels, logits):
    return np.array([-log_softmax_ref(row)[label] for label, row in zip(labels, logits)])


def kl_ref(target_logits, logits):
    out = []
    for target, row in zip(target_logits, logits):
        log_q, log_p = log_softmax_ref(row), log_softmax_ref(target)
        out.append(sum(math.exp(lq) * (lq - lp) for lq, lp in zip(log_q, log_p)))
    return np.array(out)


def attention_mining_ref(labels, logits):
    return np.array([math.exp(log_softmax_ref(row)[label]) for label, row in zip(labels, logits)])


def negative_classes_ref(labels, cams, top_k):
    """Per image, the top_k classes other than the label, by spatial sum, highest first."""
    chosen = []
    for label, cam in zip(labels, np.asarray(cams, np.float64)):
        sums = {k: cam[..., k].sum() for k in range(cam.shape[-1]) if k != label}
        chosen.append(sorted(sums, key=lambda k: -sums[k])[:top_k])
    return chosen


def hnc_ref(labels, cams, top_k, form, temperature=1.0):
    cams = np.asarray(cams, np.float64)
    hw = cams.shape[1] * cams.shape[2]
    out = []
    for b, classes in enumerate(negative_classes_ref(labels, cams, top_k)):
        if form == "mse":
            out.append(np.mean([cams[b, :, :, k] ** 2 for k in classes]))
        else:
            total = 0.0
            for k in classes:
                log_soft = log_softmax_ref(cams[b, :, :, k].ravel() / temperature)
                total += -sum(log_soft) / hw
            out.append(total)
    return np.array(out)


def test_cross_entropy_is_minus_log_softmax_of_the_label():
    logits = random_logits()
    result = losses.cross_entropy(LABELS, logits)
    assert result.shape == (B,) and result.dtype == tf.float32
    np.testing.assert_allclose(result, cross_entropy_ref(LABELS, logits), rtol=1e-5)


def test_kl_divergence_matches_reference_and_is_zero_for_equal_logits():
    target, logits = random_logits(1), random_logits(2)
    result = losses.kl_divergence(target, logits)
    assert result.shape == (B,) and result.dtype == tf.float32
    np.testing.assert_allclose(result, kl_ref(target, logits), rtol=1e-5)
    assert np.all(result.numpy() > 0)
    np.testing.assert_allclose(losses.kl_divergence(logits, logits), 0.0, atol=1e-6)


def test_kl_divergence_is_non_negative_on_many_pairs():
    target, logits = random_logits(3, shape=(64, K)), random_logits(4, shape=(64, K))
    assert np.all(losses.kl_divergence(target, logits).numpy() >= -1e-6)


def test_kl_divergence_is_asymmetric_with_q_the_second_argument():
    """KL(q || p) with q = softmax(logits) (2nd argument), p = softmax(target) (1st)."""
    p_logits = np.array([[2.0, 0.0, -1.0, 0.5, 0.0]], np.float32)
    q_logits = np.array([[0.0, 3.0, 0.0, -2.0, 1.0]], np.float32)
    forward = losses.kl_divergence(p_logits, q_logits).numpy()
    backward = losses.kl_divergence(q_logits, p_logits).numpy()
    np.testing.assert_allclose(forward, kl_ref(p_logits, q_logits), rtol=1e-5)
    np.testing.assert_allclose(backward, kl_ref(q_logits, p_logits), rtol=1e-5)
    assert abs(forward[0] - backward[0]) > 0.1


def test_kl_divergence_is_finite_and_exact_for_extreme_logits():
    """At +-80, exp(-160) underflows in float32: naive log(softmax) gives inf or nan."""
    target = np.array([[-80.0, 80.0, 0.0], [80.0, 0.0, -80.0]], np.float32)
    logits = np.array([[80.0, -80.0, 0.0], [80.0, -80.0, 0.0]], np.float32)
    probabilities = tf.nn.softmax(target).numpy()
    assert np.any(probabilities == 0.0), "the example does not underflow"
    result = losses.kl_divergence(target, logits).numpy()
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, kl_ref(target, logits), rtol=1e-5, atol=1e-5)
    assert result[0] == pytest.approx(160.0, rel=1e-5)


def test_attention_mining_is_the_probability_of_the_label():
    logits = random_logits(5)
    result = losses.attention_mining(LABELS, logits)
    assert result.shape == (B,) and result.dtype == tf.float32
    np.testing.assert_allclose(result, attention_mining_ref(LABELS, logits), rtol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2, K - 1])
def test_negative_cams_exclude_the_label_and_rank_by_spatial_sum(top_k):
    """The label is excluded even when its CAM has the largest sum; highest sum first."""
    cams = random_cams(6)
    for b, label in enumerate(LABELS):
        cams[b, :, :, label] += 10.0  # the true class has by far the largest sum
    kept = losses.negative_cams(LABELS, cams, top_k).numpy()
    assert kept.shape == (B, top_k, H, W)
    for b, classes in enumerate(negative_classes_ref(LABELS, cams, top_k)):
        assert LABELS[b] not in classes
        np.testing.assert_array_equal(kept[b], np.moveaxis(cams[b][..., classes], -1, 0))
        sums = kept[b].sum(axis=(1, 2))
        assert np.all(np.diff(sums) < 0)


@pytest.mark.parametrize("form", losses.HNC_FORMS)
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_homogeneous_negative_cam_matches_reference(form, top_k, temperature):
    cams = random_cams(7)
    result = losses.homogeneous_negative_cam(LABELS, cams, top_k, form, temperature)
    assert result.shape == (B,) and result.dtype == tf.float32
    np.testing.assert_allclose(result, hnc_ref(LABELS, cams, top_k, form, temperature),
                               rtol=1e-5)


def test_hnc_temperature_matters_in_kd_form():
    cams = random_cams(8)
    one = losses.homogeneous_negative_cam(LABELS, cams, 2, "kd", 1.0).numpy()
    three = losses.homogeneous_negative_cam(LABELS, cams, 2, "kd", 3.0).numpy()
    assert np.all(np.abs(one - three) > 1e-3)


@pytest.mark.parametrize("top_k", [1, 3])
def test_hnc_floors_kd_of_flat_maps_and_mse_of_zero_maps(top_k):
    """kd of flat maps is k log(h w), its minimum; mse of zero maps is 0."""
    flat = np.broadcast_to(np.arange(K, dtype=np.float32) - 2.0, (B, H, W, K)).copy()
    kd = losses.homogeneous_negative_cam(LABELS, flat, top_k, "kd").numpy()
    np.testing.assert_allclose(kd, top_k * math.log(H * W), rtol=1e-6)
    random_kd = losses.homogeneous_negative_cam(LABELS, random_cams(9), top_k, "kd").numpy()
    assert np.all(random_kd > top_k * math.log(H * W))
    zeros = np.zeros((B, H, W, K), np.float32)
    np.testing.assert_array_equal(losses.homogeneous_negative_cam(LABELS, zeros, top_k, "mse"), 0.0)


def test_hnc_unknown_form_is_an_error():
    with pytest.raises(ValueError, match="unknown HNC form"):
        losses.homogeneous_negative_cam(LABELS, random_cams(), 1, "l1")


@pytest.mark.parametrize("form", losses.HNC_FORMS)
def test_hnc_gradient_reaches_only_the_kept_cams(form):
    """Zero for the true class and the negatives left out, non-zero for the kept ones;
    for mse it is exactly 2 cam / (k h w) per image."""
    top_k = 2
    cams = tf.Variable(random_cams(10))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.homogeneous_negative_cam(LABELS, cams, top_k, form))
    gradient = tape.gradient(loss, cams).numpy()
    values = cams.numpy()
    for b, classes in enumerate(negative_classes_ref(LABELS, values, top_k)):
        for k in range(K):
            if k in classes:
                assert np.all(gradient[b, :, :, k] != 0.0), (b, k)
                if form == "mse":
                    np.testing.assert_allclose(gradient[b, :, :, k],
                                               2 * values[b, :, :, k] / (top_k * H * W), rtol=1e-5)
            else:
                np.testing.assert_array_equal(gradient[b, :, :, k], 0.0)


def test_class_activation_maps_is_a_1x1_linear_layer():
    rng = np.random.default_rng(11)
    features = rng.standard_normal((B, H, W, 6)).astype("float32")
    kernel = rng.standard_normal((6, K)).astype("float32")
    bias = rng.standard_normal(K).astype("float32")
    expected = np.zeros((B, H, W, K))
    for b, y, x, k in np.ndindex(B, H, W, K):
        expected[b, y, x, k] = sum(features[b, y, x, c] * kernel[c, k] for c in range(6))
    maps = class_activation_maps(features, kernel)
    assert maps.shape == (B, H, W, K) and maps.dtype == tf.float32
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(class_activation_maps(features, kernel, bias), expected + bias,
                               rtol=1e-5, atol=1e-6)


def test_class_activation_maps_average_to_the_classifier_logits():
    model = make_classifier(num_classes=4)
    dense, _, feature_tensor = linear_head(model)
    features = keras.Model(model.inputs[0], feature_tensor)
    images = structured_images(3, 32)
    maps = class_activation_maps(features(images), dense.kernel, dense.bias)
    assert maps.shape == (3, 8, 8, 4)
    logits = model(images, training=False).numpy()
    assert np.ptp(logits) > 1e-3, "degenerate logits"
    np.testing.assert_allclose(tf.reduce_mean(maps, axis=(1, 2)), logits, atol=1e-5)


def test_default_top_k_is_a_tenth_rounded_up_within_the_negatives():
    for classes in range(2, 1001):
        expected = min(max(-(-classes // 10), 1), classes - 1)  # integer ceiling
        assert choices.default_top_k(classes) == expected, classes
    spot = {10: 1, 11: 2, 1000: 100, 2: 1, 20: 2, 21: 3, 5: 1}
    assert {k: choices.default_top_k(k) for k in spot} == spot


XLA_CASES = {
    "cross_entropy": lambda: (losses.cross_entropy, (LABELS, random_logits(12))),
    "kl_divergence": lambda: (losses.kl_divergence, (random_logits(13), random_logits(14))),
    "attention_mining": lambda: (losses.attention_mining, (LABELS, random_logits(15))),
    "negative_cams": lambda: (lambda y, c: losses.negative_cams(y, c, 2), (LABELS, random_cams(16))),
    "hnc_mse": lambda: (lambda y, c: losses.homogeneous_negative_cam(y, c, 2, "mse"),
                        (LABELS, random_cams(17))),
    "hnc_kd": lambda: (lambda y, c: losses.homogeneous_negative_cam(y, c, 2, "kd", 2.0),
                       (LABELS, random_cams(18))),
    "class_activation_maps": lambda: (
        class_activation_maps, (random_cams(19, (B, H, W, 6)), random_cams(20, (6, K)),
                                random_cams(21, (K,)))),
}


@pytest.mark.parametrize("name", sorted(XLA_CASES))
def test_every_function_compiles_with_xla_and_agrees_with_eager(name):
    function, args = XLA_CASES[name]()
    eager = function(*args).numpy()
    compiled = tf.function(function, jit_compile=True)(*args).numpy()
    assert compiled.shape == eager.shape
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
