"""Batched augmentation ops: each op's semantics, ranges, and seeded determinism."""

import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from playing_distraction.augmentation import Augmentation, rotate
from playing_distraction.pipeline import make_dataset

OFF = dict(flip=False, rotation=0, channel_shift=0, brightness=(1, 1))


def random_images(count=8, height=32, width=32, seed=0, low=0.0, high=1.0):
    rng = np.random.default_rng(seed)
    return (low + (high - low) * rng.random((count, height, width, 3))).astype(np.float32)


def smooth_image(height=48, width=48):
    """Smooth, asymmetric content: bilinear sampling of it is well defined."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([0.5 + 0.5 * np.sin(xx / 5 + yy / 11),
                     0.5 + 0.5 * np.cos(yy / 7),
                     (xx + 2 * yy) / (width + 2 * height)], axis=-1).astype(np.float32)


def seed(*values):
    return tf.constant(values or (1, 2), tf.int64)


def augment(augmentation, images, *seed_values):
    return augmentation(tf.constant(images), seed(*seed_values)).numpy()


def cv2_rotate(image, degrees):
    """Counter-clockwise (as displayed) rotation about the pixel-grid centre."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def test_everything_off_is_identity_and_inactive():
    off = Augmentation(**OFF)
    assert not off.active
    images = random_images()
    np.testing.assert_array_equal(augment(off, images), images)
    assert Augmentation().active
    for option in (dict(flip=True), dict(rotation=5), dict(channel_shift=1),
                   dict(brightness=(0.9, 1.1))):
        assert Augmentation(**{**OFF, **option}).active, option


def test_invalid_ranges_are_rejected():
    for option in (dict(rotation=-1), dict(channel_shift=-1), dict(brightness=(1.5, 0.5)),
                   dict(brightness=(-0.1, 1))):
        with pytest.raises(ValueError):
            Augmentation(**{**OFF, **option})


def test_full_augmentation_keeps_shape_dtype_and_unit_range():
    images = random_images(8, 40, 48)
    images[0] = 0.0
    images[1] = 1.0
    out = augment(Augmentation(), images)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


def test_brightness_multiplies_each_image_by_one_factor_in_range():
    images = random_images(64, low=0.02, high=0.48)
    out = augment(Augmentation(**{**OFF, "brightness": (0.5, 1.5)}), images)
    flat_in, flat_out = images.reshape(64, -1), out.reshape(64, -1)
    factors = (flat_in * flat_out).sum(axis=1) / (flat_in * flat_in).sum(axis=1)
    np.testing.assert_allclose(flat_out, flat_in * factors[:, None], rtol=1e-5, atol=1e-6)
    assert np.all(factors >= 0.5 - 1e-6) and np.all(factors <= 1.5 + 1e-6)
    # Spread over the range, not one factor for the batch.
    assert factors.min() < 0.65 and factors.max() > 1.35
    assert np.histogram(factors, bins=4, range=(0.5, 1.5))[0].min() >= 5


def test_brightness_clips_to_unit_range():
    images = np.full((16, 32, 32, 3), 0.9, np.float32)
    out = augment(Augmentation(**{**OFF, "brightness": (1.5, 1.5)}), images)
    np.testing.assert_allclose(out, 1.0)


def test_channel_shift_adds_one_intensity_clipped_to_the_images_own_range():
    # Values in [0.3, 0.7]: a clip to [0, 1] would never act, the image's own one does.
    images = random_images(32, low=0.3, high=0.7)
    out = augment(Augmentation(**{**OFF, "channel_shift": 30}), images)
    limit = 30 / 255
    shifts = []
    for image, result in zip(images, out):
        low, high = image.min(), image.max()
        assert result.min() >= low - 1e-6 and result.max() <= high + 1e-6
        inside = (result > low + 1e-6) & (result < high - 1e-6)
        shift = float(np.median((result - image)[inside]))
        assert abs(shift) <= limit + 1e-6
        np.testing.assert_allclose(result, np.clip(image + shift, low, high), atol=1e-5)
        shifts.append(shift)
    shifts = np.array(shifts)
    assert shifts.min() < -0.5 * limit and shifts.max() > 0.5 * limit
    # The clipping really happened for large shifts.
    assert np.any(np.isclose(out, images.max(axis=(1, 2, 3), keepdims=True)).sum(axis=(1, 2, 3))
                  > 100)


def test_flip_mirrors_some_images_horizontally_and_keeps_the_others():
    images = random_images(32, 24, 40)
    out = augment(Augmentation(**{**OFF, "flip": True}), images)
    flipped = []
    for image, result in zip(images, out):
        same = np.array_equal(result, image)
        mirrored = np.array_equal(result, image[:, ::-1])
        assert same != mirrored
        flipped.append(mirrored)
    assert 4 <= sum(flipped) <= 28


def test_rotate_by_zero_is_identity_and_by_90_degrees_is_rot90():
    images = random_images(2, 33, 33)
    np.testing.assert_allclose(rotate(images, tf.zeros([2])).numpy(), images, atol=1e-6)
    # A positive angle turns the image counter-clockwise as displayed (rows down).
    out = rotate(images, tf.constant([math.pi / 2, -math.pi / 2])).numpy()
    np.testing.assert_allclose(out[0], np.rot90(images[0], 1), atol=1e-5)
    np.testing.assert_allclose(out[1], np.rot90(images[1], -1), atol=1e-5)


@pytest.mark.parametrize("height, width", [(48, 48), (40, 56)])
def test_rotate_matches_opencv(height, width):
    image = smooth_image(height, width)
    angles = [30.0, -17.5]
    out = rotate(np.stack([image, image]), tf.constant(np.radians(angles), tf.float32)).numpy()
    for result, degrees in zip(out, angles):
        reference = cv2_rotate(image, degrees)
        np.testing.assert_allclose(result[6:-6, 6:-6], reference[6:-6, 6:-6], atol=1e-4)
        # The border is filled with the nearest pixel, like BORDER_REPLICATE.
        np.testing.assert_allclose(result, reference, atol=1e-3)


@pytest.mark.parametrize("height, width", [(48, 48), (40, 56)])
def test_rotate_with_mirror_is_the_rotated_image_mirrored(height, width):
    """The flip folded into the rotation's resampling: rotate first, then mirror."""
    image = smooth_image(height, width)
    angles = tf.constant(np.radians([25.0, 25.0, -10.0]), tf.float32)
    batch = np.stack([image] * 3)
    plain = rotate(batch, angles).numpy()
    mirrored = rotate(batch, angles, tf.constant([True, False, True])).numpy()
    np.testing.assert_allclose(mirrored[0], plain[0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(mirrored[1], plain[1], atol=1e-6)
    np.testing.assert_allclose(mirrored[2], plain[2][:, ::-1], atol=1e-5)


def test_rotation_and_flip_together_flip_some_rotated_images():
    image = smooth_image(33, 33)
    batch = np.repeat(image[None], 24, axis=0)
    out = augment(Augmentation(**{**OFF, "rotation": 40, "flip": True}), batch, 5, 6)
    grid = np.arange(-41, 41.25, 0.25)
    references = np.stack([cv2_rotate(image, degrees)[5:-5, 5:-5] for degrees in grid])
    mirrored = []
    for result in out:
        plain = np.abs(references - result[5:-5, 5:-5]).max(axis=(1, 2, 3)).min()
        flipped = np.abs(references[:, :, ::-1] - result[5:-5, 5:-5]).max(axis=(1, 2, 3)).min()
        assert min(plain, flipped) < 0.05
        mirrored.append(flipped < plain)
    assert 3 <= sum(mirrored) <= 21


def test_random_rotation_stays_within_the_range_and_spreads():
    image = smooth_image(33, 33)
    batch = np.repeat(image[None], 24, axis=0)
    out = augment(Augmentation(**{**OFF, "rotation": 40}), batch, 3, 4)
    grid = np.arange(-60, 60.25, 0.25)
    references = np.stack([cv2_rotate(image, degrees)[5:-5, 5:-5] for degrees in grid])
    recovered = []
    for result in out:
        errors = np.abs(references - result[5:-5, 5:-5]).max(axis=(1, 2, 3))
        best = int(np.argmin(errors))
        assert errors[best] < 0.05  # it is a rotation of the image
        recovered.append(grid[best])
    recovered = np.array(recovered)
    assert np.all(np.abs(recovered) <= 40.25), recovered
    assert recovered.min() < -15 and recovered.max() > 15


def test_same_seed_same_output_other_seed_different():
    augmentation = Augmentation()
    images = random_images(8)
    first = augment(augmentation, images, 7, 0)
    np.testing.assert_array_equal(first, augment(augmentation, images, 7, 0))
    assert not np.allclose(first, augment(augmentation, images, 8, 0))
    assert not np.allclose(first, augment(augmentation, images, 7, 1))


def epochs(dataset, count=2):
    """Per epoch: a dict label -> augmented image, and the label order."""
    result = []
    for _ in range(count):
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
        images, labels = np.concatenate(images), np.concatenate(labels)
        result.append((dict(zip(labels.tolist(), images)), labels))
    return result


def test_augmentation_in_tf_data_is_seeded_and_new_every_epoch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.uint8)
    labels = np.arange(24)
    augmentation = Augmentation()

    def build(seed_value):
        return make_dataset(images, labels, 8, training=True, seed=seed_value,
                            augmentation=augmentation)

    first, second = epochs(build(11)), epochs(build(11))
    for (images_a, order_a), (images_b, order_b) in zip(first, second):
        np.testing.assert_array_equal(order_a, order_b)
        for label in order_a:
            np.testing.assert_array_equal(images_a[label], images_b[label])
    # Augmented: no image is its plain source.
    plain = images.astype(np.float32) / 255
    for label, image in first[0][0].items():
        assert not np.allclose(image, plain[label])
    # The second epoch augments every image anew.
    (epoch1, _), (epoch2, _) = first
    assert all(not np.allclose(epoch1[label], epoch2[label]) for label in epoch1)
    other, = epochs(build(12), 1)
    assert all(not np.allclose(epoch1[label], other[0][label]) for label in epoch1)


def test_tf_data_draws_new_augmentation_seeds_every_epoch():
    # Identical images: only the seeds, not the shuffling, can make epochs differ.
    images = np.repeat((255 * smooth_image(32, 32)).astype(np.uint8)[None], 16, axis=0)
    dataset = make_dataset(images, np.arange(16), 8, training=True, seed=3,
                           augmentation=Augmentation())
    first, second = [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(2)]
    assert not np.allclose(first, second)
