"""Masks and fills (PAPERS.md §1 step 4)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from playing_distraction import FILLS, occlude, occlusion_mask
from playing_distraction import choices


def ramp_maps(batch=2, size=10):
    """Heat values 0, 0.01, ..., 0.99 over a 10x10 map: fraction above th is known."""
    return np.tile(np.arange(size * size, dtype=np.float32).reshape(size, size) / 100, (batch, 1, 1))


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.85, 0.99, 1.0])
def test_fraction_occluded_matches_threshold_strictly(threshold):
    mask = occlusion_mask(ramp_maps(), threshold)
    expected = np.mean(np.arange(100) / 100 > threshold)  # strict '>'
    assert mask.dtype == tf.bool
    assert float(tf.reduce_mean(tf.cast(mask, tf.float32))) == pytest.approx(expected)


def test_heat_equal_to_threshold_is_kept():
    mask = occlusion_mask(np.full((1, 4, 4), 0.85, np.float32), 0.85)
    assert not mask.numpy().any()


def test_constant_maps_occlude_nothing():
    assert not occlusion_mask(np.zeros((3, 8, 8), np.float32), 0.85).numpy().any()


@pytest.mark.parametrize("fill, value", [("zero", 0.0), ("one", 1.0)])
def test_constant_fills_replace_masked_pixels_in_every_channel(fill, value):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (2, 10, 10, 3)).astype("float32")
    mask = occlusion_mask(ramp_maps(), 0.85)
    out = occlude(images, mask, fill).numpy()
    m = mask.numpy()
    assert np.all(out[m] == value)
    np.testing.assert_array_equal(out[~m], images[~m])


def test_random_fill_is_uniform_per_pixel_and_channel_and_seeded():
    images = np.full((4, 32, 32, 3), 0.5, np.float32)
    mask = np.ones((4, 32, 32), bool)
    out = occlude(images, mask, "random", seed=keras.random.SeedGenerator(1)).numpy()
    assert 0.0 <= out.min() and out.max() < 1.0
    assert abs(out.mean() - 0.5) < 0.02 and abs(out.std() - np.sqrt(1 / 12)) < 0.02
    assert not np.allclose(out[..., 0], out[..., 1])  # i.i.d. per channel
    again = occlude(images, mask, "random", seed=keras.random.SeedGenerator(1)).numpy()
    np.testing.assert_array_equal(out, again)
    generator = keras.random.SeedGenerator(1)
    first = occlude(images, mask, "random", seed=generator).numpy()
    second = occlude(images, mask, "random", seed=generator).numpy()
    assert not np.allclose(first, second)  # a generator advances between calls


def test_random_fill_keeps_unmasked_pixels():
    images = np.random.default_rng(1).random((2, 10, 10, 3)).astype("float32")
    mask = occlusion_mask(ramp_maps(), 0.5).numpy()
    out = occlude(images, mask, "random", seed=keras.random.SeedGenerator(0)).numpy()
    np.testing.assert_array_equal(out[~mask], images[~mask])
    assert not np.allclose(out[mask], images[mask])


def test_no_gradient_through_mask_and_identity_gradient_elsewhere():
    images = tf.Variable(np.random.default_rng(2).random((1, 10, 10, 3)).astype("float32"))
    mask = occlusion_mask(ramp_maps(1), 0.85)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(occlude(images, mask, "zero"))
    grad = tape.gradient(total, images).numpy()
    np.testing.assert_array_equal(grad[0][mask.numpy()[0]], 0.0)
    np.testing.assert_array_equal(grad[0][~mask.numpy()[0]], 1.0)


def test_unknown_fill_is_an_error():
    with pytest.raises(ValueError, match="unknown fill"):
        occlude(np.zeros((1, 2, 2, 3), np.float32), np.zeros((1, 2, 2), bool), "blue")


def test_command_line_fill_names_match_the_fills():
    assert choices.FILLS == tuple(FILLS)
