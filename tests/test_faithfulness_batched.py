"""Sanity checks of the batched faithfulness code (``playing_distraction/faithfulness.py``):
graph safety, batch independence, seeded noise, and exact removal sets seen through
probe models whose outputs reveal which pixels a step image changed. The per-image
NumPy/SciPy reference lives in test_faithfulness.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_classifier, structured_images
from playing_distraction import faithfulness as F


def probe_model(function, size, channels=3):
    """A Keras model whose logits are ``function(images)`` (keras.ops only)."""
    inputs = keras.Input((size, size, channels))
    return keras.Model(inputs, keras.layers.Lambda(function)(inputs))


def linear_probe(weights):
    """Logits [sum(x * weights), 0]: the class-0 probability is sigmoid(sum(x * weights))."""
    constant = keras.ops.convert_to_tensor(weights[None], "float32")

    def logits(images):
        score = keras.ops.sum(images * constant, axis=(1, 2, 3))
        return keras.ops.stack([score, keras.ops.zeros_like(score)], axis=1)

    return probe_model(logits, weights.shape[0], weights.shape[2])


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def blur_numpy(image, sigma):
    """Petsiuk's blur written independently: np.convolve with zero padding per row/column."""
    length = 2 * int(np.ceil(sigma)) + 1
    kernel = np.exp(-(np.arange(length) - length // 2) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    rows = np.apply_along_axis(np.convolve, 0, image, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, rows, kernel, mode="same")


def test_pixel_order_is_a_stable_descending_sort_also_in_a_graph():
    heat = np.array([[[0.5, 0.2, 0.5], [0.0, 0.9, 0.2]]], np.float32)
    order = F.pixel_order(heat).numpy()
    assert order.tolist() == [[4, 0, 2, 1, 5, 3]]
    heat = np.random.default_rng(0).integers(0, 4, (3, 5, 7)).astype(np.float32)  # many ties
    expected = np.stack([np.argsort(-h.reshape(-1), kind="stable") for h in heat])
    assert np.array_equal(F.pixel_order(heat).numpy(), expected)
    traced = tf.function(F.pixel_order, input_signature=[tf.TensorSpec([None, 5, 7])])
    assert np.array_equal(traced(heat).numpy(), expected)


def test_auc_is_the_trapezoid_over_unit_x():
    curves = np.array([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.0]])
    assert np.allclose(F.auc(curves), [1.0, 0.5, 0.25])
    with pytest.raises(ValueError):
        F.auc(np.ones((2, 1)))


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.3])
def test_blur_is_a_zero_padded_separable_gaussian_in_a_graph(sigma):
    images = np.random.default_rng(1).random((2, 9, 11, 3)).astype(np.float32)
    expected = np.stack([np.stack([blur_numpy(image[..., c], sigma) for c in range(3)], -1)
                         for image in images])
    traced = tf.function(lambda x: F.gaussian_blur(x, sigma),
                         input_signature=[tf.TensorSpec([None, None, None, 3])])
    assert np.allclose(traced(images).numpy(), expected, atol=1e-6)
    # Zero padding: a constant image darkens at its border only.
    flat = F.gaussian_blur(np.ones((1, 9, 11, 1), np.float32), sigma).numpy()[0, ..., 0]
    assert flat[0, 0] < flat[0, 5] < 1.0 and np.isclose(flat[4, 5], 1.0, atol=1e-6)


def test_causal_curves_match_a_linear_probe_step_by_step():
    """With logits linear in the image, each point reveals exactly which pixels the step
    image took from where."""
    size, step = 6, 5
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(size, size, 3)).astype(np.float32)
    model = linear_probe(weights)
    images = rng.random((3, size, size, 3)).astype(np.float32)
    heat = rng.random((3, size, size)).astype(np.float32)
    heat[0] = 0.0  # all ties: flat index order
    classes = np.array([0, 1, 0])
    for substrate in ("zero", "mean"):
        curves = F.causal_curves(model, images, heat, classes, step=step, substrate=substrate,
                                 sigma=1.5, batch_size=8)
        steps = int(np.ceil(size * size / step))
        assert curves["deletion"].shape == curves["insertion"].shape == (3, steps + 1)
        assert curves["deletion"].dtype == np.float64
        for b in range(3):
            order = np.argsort(-heat[b].reshape(-1), kind="stable")
            fill = 0.0 if substrate == "zero" else images[b].mean(axis=(0, 1))
            blurred = np.stack([blur_numpy(images[b][..., c], 1.5) for c in range(3)], -1)
            for i in range(steps + 1):
                moved = np.zeros(size * size, bool)
                moved[order[:min(i * step, size * size)]] = True
                moved = moved.reshape(size, size, 1)
                deleted = np.where(moved, fill, images[b])
                inserted = np.where(moved, images[b], blurred)
                for curve, image in (("deletion", deleted), ("insertion", inserted)):
                    p0 = sigmoid(np.sum(image * weights, dtype=np.float64))
                    expected = p0 if classes[b] == 0 else 1.0 - p0
                    assert abs(curves[curve][b, i] - expected) < 1e-4, (substrate, curve, b, i)


def test_causal_curves_of_an_image_do_not_depend_on_its_batch():
    model = make_classifier(num_classes=5)
    images = structured_images(5, 32, seed=3)
    heat = np.random.default_rng(3).random((5, 32, 32)).astype(np.float32)
    classes = np.array([0, 1, 2, 3, 4])
    whole = F.causal_curves(model, images, heat, classes, batch_size=70)
    part = F.causal_curves(model, images[3:], heat[3:], classes[3:], batch_size=256)
    for curve in ("deletion", "insertion"):
        assert np.allclose(whole[curve][3:], part[curve], atol=1e-5)
        assert np.all((whole[curve] >= 0) & (whole[curve] <= 1))


def neighbour_mean(image, i, j):
    """The weighted mean of pixel (i, j)'s in-image 8-neighbours (ROAD's weights)."""
    total, weight = 0.0, 0.0
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            a, c = i + di, j + dj
            if (di or dj) and 0 <= a < image.shape[0] and 0 <= c < image.shape[1]:
                w = 1 / 6 if di == 0 or dj == 0 else 1 / 12
                total, weight = total + w * image[a, c].astype(np.float64), weight + w
    return total / weight


@pytest.mark.parametrize("shape", [(7, 9), (9, 7), (1, 6), (6, 1)])
def test_imputed_pixels_are_the_mean_of_their_neighbours(shape):
    rng = np.random.default_rng(4)
    images = rng.random((3, *shape, 2)).astype(np.float32)
    removed = rng.random((3, *shape)) < 0.6
    removed[:, 0, 0] = False
    removed[1] = True
    removed[1, -1, -1] = False  # one kept pixel: the worst-conditioned system
    filled = F.noisy_linear_impute(images, removed, noise=0).numpy()
    assert np.array_equal(filled[~removed], images[~removed])
    for b, i, j in zip(*np.nonzero(removed)):
        assert np.allclose(filled[b, i, j], neighbour_mean(filled[b], i, j), atol=1e-5)


def test_imputation_of_a_constant_image_is_that_constant():
    removed = np.random.default_rng(5).random((4, 32, 32)) < 0.9
    removed[:, 16, 16] = False
    images = np.full((4, 32, 32, 3), 0.3, np.float32)
    assert np.allclose(F.noisy_linear_impute(images, removed, noise=0).numpy(), 0.3, atol=1e-6)


def test_imputation_works_in_a_graph_with_unknown_batch():
    rng = np.random.default_rng(6)
    images = rng.random((3, 8, 10, 3)).astype(np.float32)
    removed = rng.random((3, 8, 10)) < 0.5
    indices = np.array([4, 9, 2])
    traced = tf.function(
        lambda x, m, k: F.noisy_linear_impute(x, m, noise=0.1, seed=3, indices=k),
        input_signature=[tf.TensorSpec([None, 8, 10, 3]), tf.TensorSpec([None, 8, 10], tf.bool),
                         tf.TensorSpec([None], tf.int32)])
    eager = F.noisy_linear_impute(images, removed, noise=0.1, seed=3, indices=indices)
    assert np.allclose(traced(images, removed, indices).numpy(), eager.numpy(), atol=1e-6)
    removed[1] = True
    with pytest.raises(tf.errors.InvalidArgumentError):
        traced(images, removed, indices)


def test_noise_is_a_stateless_draw_per_image_index():
    rng = np.random.default_rng(7)
    images = rng.random((4, 8, 8, 3)).astype(np.float32)
    removed = rng.random((4, 8, 8)) < 0.5
    clean = F.noisy_linear_impute(images, removed, noise=0).numpy()
    noisy = F.noisy_linear_impute(images, removed, noise=0.5, seed=11).numpy()
    for b in range(4):
        field = tf.random.stateless_normal((8, 8, 3), seed=(11, b)).numpy()
        expected = np.where(removed[b][..., None], clean[b] + 0.5 * field, clean[b])
        assert np.allclose(noisy[b], expected, atol=1e-5)
    # The same image at another position of another batch, with its own index.
    part = F.noisy_linear_impute(images[2:], removed[2:], noise=0.5, seed=11, indices=[2, 3])
    assert np.allclose(part.numpy(), noisy[2:], atol=1e-6)
    again = F.noisy_linear_impute(images, removed, noise=0.5, seed=11).numpy()
    other = F.noisy_linear_impute(images, removed, noise=0.5, seed=12).numpy()
    assert np.array_equal(again, noisy) and not np.allclose(other[removed], noisy[removed])


def test_an_image_with_every_pixel_removed_is_a_value_error():
    removed = np.zeros((2, 4, 4), bool)
    removed[1] = True
    with pytest.raises(ValueError, match="image 1 has every pixel removed"):
        F.noisy_linear_impute(np.zeros((2, 4, 4, 3), np.float32), removed)
    with pytest.raises(ValueError, match="percentile 99.99"):
        F.road_correct(None, np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4)), [0],
                       percentiles=(50, 99.99))


def change_probe(original, inside, size):
    """Class 0 exactly when the pixels that differ from ``original`` (any channel) are
    the ``inside`` mask: every pixel in it, none outside."""
    original = keras.ops.convert_to_tensor(original[None], "float32")
    inside = keras.ops.convert_to_tensor(inside[None].astype("float32"))

    def logits(images):
        changed = keras.ops.cast(keras.ops.max(keras.ops.abs(images - original), axis=-1)
                                 > 1e-6, "float32")
        wrong = (keras.ops.sum(changed * (1 - inside), axis=(1, 2))
                 + keras.ops.sum((1 - changed) * inside, axis=(1, 2)))
        return keras.ops.stack([keras.ops.full_like(wrong, 0.5), wrong], axis=1)

    return probe_model(logits, size)


def test_morf_with_a_mask_as_heat_removes_exactly_the_mask():
    size = 8
    rng = np.random.default_rng(8)
    image = rng.random((size, size, 3)).astype(np.float32)
    mask = np.zeros((size, size), bool)
    mask[2:6, 3:7] = True  # 16 pixels = 25 % of 64
    heat = mask.astype(np.float32)[None]
    model = change_probe(image, mask, size)
    result = F.road_correct(model, image[None], heat, [0], percentiles=(25,), noise=0.5)
    assert result["morf"].tolist() == [[True]]
    # LeRF removes the 16 last pixels of the order: zero heat, highest flat indices.
    last = np.zeros(size * size, bool)
    last[-16:] = True
    model = change_probe(image, last.reshape(size, size), size)
    result = F.road_correct(model, image[None], heat, [0], percentiles=(25,), noise=0.5)
    assert result["lerf"].tolist() == [[True]] and result["morf"].tolist() == [[False]]


def test_road_of_an_image_does_not_depend_on_its_batch_and_is_seeded():
    model = make_classifier(num_classes=5)
    images = structured_images(4, 32, seed=9)
    heat = np.random.default_rng(9).random((4, 32, 32)).astype(np.float32)
    labels = np.argmax(model(images, training=False), axis=1)
    whole = F.road_correct(model, images, heat, labels, noise=0.2, seed=1, batch_size=7)
    part = F.road_correct(model, images[1:3], heat[1:3], labels[1:3], noise=0.2, seed=1,
                          indices=[1, 2], batch_size=256)
    for kind in ("morf", "lerf"):
        assert whole[kind].shape == (4, 9) and whole[kind].dtype == bool
        assert np.array_equal(whole[kind][1:3], part[kind])


def test_faithfulness_of_model_returns_per_image_arrays():
    model = make_classifier(num_classes=5)
    images = (structured_images(6, 32, seed=10) * 255).astype(np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 0])
    settings = F.FaithfulnessSettings(percentiles=(20, 60))
    lines = []
    result = F.faithfulness_of_model(model, images, labels, None, settings, batch_size=4,
                                     log=lines.append)
    assert len(lines) == 2 and lines[-1].endswith("6/6 test images")
    assert result["deletion_auc"].shape == result["insertion_auc"].shape == (6,)
    assert result["road_morf"].shape == result["road_lerf"].shape == (6, 2)
    for key in ("deletion_auc", "insertion_auc"):
        assert np.all((result[key] >= 0) & (result[key] <= 1))
    for key in ("road_morf", "road_lerf"):
        assert set(np.unique(result[key])) <= {0.0, 1.0}
    # The same images as floats in [0, 1], in one batch: the same values.
    floats = F.faithfulness_of_model(model, images / np.float32(255), labels, "features",
                                     settings, batch_size=64)
    for key in result:
        assert np.allclose(floats[key], result[key], atol=1e-5), key


@pytest.mark.parametrize("field, value, flag", [
    ("step", 0, "--deletion-step"),
    ("step", 2.5, "--deletion-step"),
    ("substrate", "blur", "--deletion-substrate"),
    ("sigma", 0.0, "--insertion-sigma"),
    ("sigma", float("nan"), "--insertion-sigma"),
    ("percentiles", (10, 100), "--road-percentiles"),
    ("percentiles", (0, 50), "--road-percentiles"),
    ("percentiles", (50, 50), "--road-percentiles"),
    ("percentiles", (60, 20), "--road-percentiles"),
    ("percentiles", (), "--road-percentiles"),
    ("noise", -0.1, "--road-noise"),
])
def test_settings_check_names_the_flag(field, value, flag):
    F.FaithfulnessSettings().check()
    with pytest.raises(ValueError, match=flag):
        F.FaithfulnessSettings(**{field: value}).check()
