"""Grad-CAM: agreement with tf-keras-vis, the CAM shortcut, shapes, ranges, graph safety."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier, structured_images
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.utils.scores import CategoricalScore

from playing_distraction import BACKBONES, GradCAM, grad_cam
from playing_distraction.heatmaps import normalize_per_image


def reference(model, images, classes, layer, **options):
    """tf-keras-vis Grad-CAM on logits at exactly ``layer`` (no seeking)."""
    return Gradcam(model, clone=False)(
        CategoricalScore(list(classes)), images,
        penultimate_layer=layer, seek_penultimate_conv_layer=False, **options,
    )


def reference_maps(model, images, classes, layer):
    """tf-keras-vis maps, resized by it, min-max normalised exactly here.

    tf-keras-vis divides by (max - min + 1e-7); with random weights the raw ranges
    are ~1e-4, so its own normalised maps differ from exact ones by ~1e-3. The bound
    on that difference is checked too.
    """
    resized = np.asarray(reference(model, images, classes, layer, normalize_cam=False),
                         dtype=np.float64)
    low = resized.min(axis=(1, 2), keepdims=True)
    span = resized.max(axis=(1, 2), keepdims=True) - low
    exact = np.divide(resized - low, span, out=np.zeros_like(resized), where=span > 0)
    theirs = reference(model, images, classes, layer)
    bound = np.broadcast_to(1e-5 + 2e-7 / np.maximum(span, 1e-12), exact.shape)
    np.testing.assert_array_less(np.abs(theirs - exact), bound)
    return exact


# Sizes that give 3x3 (or larger) final maps, so the maps are not trivially constant.
SIZES = {"resnet50": 96, "resnet152": 96, "inception_v3": 139, "densenet121": 96,
         "small_cnn": 32}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_grad_cam_agrees_with_tf_keras_vis_on_every_backbone(backbone):
    assert set(SIZES) == set(BACKBONES), "add the new backbone to SIZES"
    spec = BACKBONES[backbone]
    model = make_classifier(num_classes=4, size=SIZES[backbone], backbone=backbone)
    images = structured_images(3, SIZES[backbone])
    classes = np.array([0, 3, 1])
    ours = GradCAM(model, shortcut=False)
    assert ours.layer_name == spec.last_conv
    # Before resizing and normalising: the Grad-CAM weights and ReLU themselves.
    raw = np.asarray(reference(model, images, classes, spec.last_conv,
                               expand_cam=False, normalize_cam=False))
    np.testing.assert_allclose(ours.raw(images, classes), raw, rtol=1e-4, atol=1e-6 * raw.max())
    # Full maps: resized to the image and min-max normalised.
    expected = reference_maps(model, images, classes, spec.last_conv)
    assert np.ptp(expected, axis=(1, 2)).max() > 0.5, "degenerate test maps"
    np.testing.assert_allclose(ours(images, classes), expected, atol=1e-4)
    np.testing.assert_allclose(grad_cam(model, images, classes), expected, atol=1e-4)


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet50"])
def test_cam_shortcut_equals_tape_path(backbone):
    model = make_classifier(num_classes=5, size=SIZES[backbone], backbone=backbone)
    images = structured_images(4, SIZES[backbone], seed=1)
    classes = np.array([4, 0, 2, 2])
    shortcut, tape = GradCAM(model), GradCAM(model, shortcut=False)
    assert shortcut.shortcut and not tape.shortcut
    np.testing.assert_allclose(shortcut.raw(images, classes), tape.raw(images, classes),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(shortcut(images, classes), tape(images, classes), atol=1e-5)


def flatten_head_model(size=16, num_classes=3):
    """A classifier whose head is not GAP + linear: only the tape path is exact."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last")(x)
    logits = keras.layers.Dense(num_classes)(keras.layers.Flatten()(x))
    return keras.Model(inputs, logits)


def test_other_heads_use_the_tape_path_and_still_agree():
    model = flatten_head_model()
    images = structured_images(3, 16)
    classes = np.array([0, 1, 2])
    heat = GradCAM(model)
    assert not heat.shortcut and heat.layer_name == "last"
    with pytest.raises(ValueError, match="shortcut"):
        GradCAM(model, shortcut=True)
    np.testing.assert_allclose(heat(images, classes),
                               reference_maps(model, images, classes, "last"), atol=1e-4)


def test_output_shape_range_and_per_image_independence():
    model = make_classifier()
    images = structured_images(6, 32)
    classes = np.array([0, 1, 2, 0, 1, 2])
    maps = grad_cam(model, images, classes)
    assert maps.shape == (6, 32, 32) and maps.dtype == tf.float32
    assert float(tf.reduce_min(maps)) == 0.0 and float(tf.reduce_max(maps)) == 1.0
    one_by_one = np.concatenate([grad_cam(model, images[i:i + 1], classes[i:i + 1])
                                 for i in range(6)])
    np.testing.assert_allclose(maps, one_by_one, atol=1e-5)
    # Heat depends on the class asked for.
    assert not np.allclose(maps, grad_cam(model, images, (classes + 1) % 3))


def test_constant_maps_become_zeros():
    np.testing.assert_array_equal(normalize_per_image(tf.fill((2, 5, 5), 3.0)), 0.0)
    model = make_classifier()
    model.get_layer("logits").kernel.assign(tf.zeros_like(model.get_layer("logits").kernel))
    maps = grad_cam(model, structured_images(2), [0, 1])
    assert np.all(np.isfinite(maps)) and np.all(maps.numpy() == 0.0)


@pytest.mark.parametrize("shortcut", [True, False])
@pytest.mark.parametrize("size", [16, 32])
def test_grad_cam_compiles_with_xla(shortcut, size):
    model = make_classifier(size=size)
    heat = GradCAM(model, shortcut=shortcut)
    images, classes = structured_images(4, size), tf.constant([0, 1, 2, 0])
    compiled = tf.function(lambda x, c: heat(x, c), jit_compile=True)
    np.testing.assert_allclose(compiled(images, classes), heat(images, classes), atol=1e-5)


def test_grad_cam_under_mixed_precision_matches_float32():
    model = make_classifier()
    weights = model.get_weights()
    keras.config.set_dtype_policy("mixed_float16")
    mixed = make_classifier()
    mixed.set_weights(weights)
    images, classes = structured_images(3), np.array([0, 1, 2])
    maps = grad_cam(mixed, images, classes)
    assert maps.dtype == tf.float32
    np.testing.assert_allclose(maps, grad_cam(model, images, classes), atol=0.02)
    np.testing.assert_allclose(GradCAM(mixed, shortcut=False)(images, classes), maps, atol=0.02)


def test_unknown_or_flat_layer_is_an_error():
    model = make_classifier()
    with pytest.raises(ValueError):
        grad_cam(model, structured_images(1), [0], layer_name="no_such_layer")
    with pytest.raises(ValueError, match="feature map"):
        GradCAM(model, "head_pool")


@pytest.mark.parametrize("shape, size", [((4, 4), (16, 16)), ((8, 8), (32, 32)),
                                         ((3, 5), (17, 11)), ((1, 1), (6, 6)), ((7, 7), (7, 7))])
def test_resize_equals_scipy_zoom_eagerly_and_under_xla(shape, size):
    """The corner-aligned bilinear resize of tf-keras-vis (scipy zoom, order 1)."""
    from scipy.ndimage import zoom

    from playing_distraction.heatmaps import resize_bilinear

    maps = np.random.default_rng(0).random((2, *shape)).astype("float32")
    expected = zoom(maps, (1, size[0] / shape[0], size[1] / shape[1]), order=1, grid_mode=False)
    assert expected.shape == (2, *size)
    np.testing.assert_allclose(resize_bilinear(maps, size), expected, atol=1e-5)
    compiled = tf.function(lambda m: resize_bilinear(m, size), jit_compile=True)
    np.testing.assert_allclose(compiled(maps), expected, atol=1e-5)


@pytest.mark.parametrize("shortcut", [True, False])
def test_heat_and_features_are_the_maps_and_the_layer_output(shortcut):
    model = make_classifier()
    images = structured_images(4)
    classes = np.array([0, 1, 2, 1])
    explainer = GradCAM(model, "features", shortcut=shortcut)
    heat, features = explainer.heat_and_features(images, classes)
    np.testing.assert_allclose(heat, explainer(images, classes), atol=1e-6)
    layer_output = keras.Model(model.inputs[0], model.get_layer("features").output)(images)
    np.testing.assert_allclose(features, layer_output, rtol=1e-5, atol=1e-6)
