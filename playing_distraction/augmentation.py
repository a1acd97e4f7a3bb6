"""The paper's training augmentation as TensorFlow ops on whole batches.

Morales et al. (2021, Sec. 4.2; PAPERS.md §1) train with Keras' ImageDataGenerator:
horizontal flip, rotation in [-40°, 40°], channel shift in [-30, 30] (0-255 scale)
and brightness factor in [0.5, 1.5]. The ops follow that generator's semantics and
order (rotate, shift, flip, brightness), on [0, 1] images:

- rotation about the image centre, bilinear, the border filled with the nearest
  pixel (the generator's default ``fill_mode="nearest"``);
- "channel shift" adds one intensity per image to every channel and clips to the
  image's own min and max, as ``apply_channel_shift`` does;
- brightness multiplies by the factor and clips to [0, 1] (PIL's
  ``ImageEnhance.Brightness``, without the min-max stretch Keras applies first).

Randomness is stateless and comes from the seed passed with each batch, so the same
seed gives the same augmented batches.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    rotation: float = 40.0
    channel_shift: float = 30.0
    brightness: tuple = (0.5, 1.5)

    def __post_init__(self):
        low, high = self.brightness
        if self.rotation < 0 or self.channel_shift < 0 or not 0 <= low <= high:
            raise ValueError(f"invalid augmentation ranges: {self}")

    @property
    def active(self):
        return self.flip or self.rotation > 0 or self.channel_shift > 0 or tuple(self.brightness) != (1, 1)

    def __call__(self, images, seed):
        """Augment a float32 batch (B, H, W, 3) in [0, 1]; ``seed`` is an int tensor [2]."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
        batch = tf.shape(images)[0]
        mirror = None
        if self.flip:
            mirror = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
        if self.rotation > 0:
            limit = math.radians(self.rotation)
            angles = tf.random.stateless_uniform([batch], seeds[0], -limit, limit)
            # The flip rides along in the same resampling; it commutes with the shift,
            # so the result is the generator's rotate -> shift -> flip order.
            images = rotate(images, angles, mirror)
        elif mirror is not None:
            images = tf.where(mirror[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if self.channel_shift > 0:
            shift = self.channel_shift / 255.0
            intensity = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1], -shift, shift)
            low = tf.reduce_min(images, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(images, axis=(1, 2, 3), keepdims=True)
            images = tf.clip_by_value(images + intensity, low, high)
        low, high = self.brightness
        if (low, high) != (1, 1):
            factor = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[3], low, high)
            # Images and factors are non-negative, so only the top needs clipping.
            images = tf.minimum(images * factor, 1.0)
        return images


def rotate(images, angles, mirror=None):
    """Rotate each image of a batch by its angle (radians) about its centre, then
    mirror it left-right where ``mirror`` (bool (B,)) says; pixels from outside the
    image take the nearest border pixel."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = tf.cos(angles), tf.sin(angles)
    sign = tf.ones_like(angles) if mirror is None else tf.where(mirror, -1.0, 1.0)
    zeros = tf.zeros_like(angles)
    # Output pixel (x, y) is mirrored to (cx + sign (x - cx), y), then samples the
    # input at R(angle) (mirrored - c) + c.
    transforms = tf.stack([
        sign * cos, -sin, cx - sign * cos * cx + sin * cy,
        sign * sin, cos, cy - sign * sin * cx - cos * cy,
        zeros, zeros,
    ], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST",
    )
