"""Occlusion of the hottest pixels (PAPERS.md §1, step 4).

Pixels whose normalised heat is strictly above the threshold ``th`` are replaced in
all channels by a fill, in the [0, 1] pixel space the classifiers take:
``zero`` (0-occlusion, black, the paper's choice), ``one`` (1-occlusion, white) or
``random`` (R-occlusion, i.i.d. uniform values in [0, 1) per pixel and channel).
"""

import keras
import tensorflow as tf


def _zero(shape, dtype, seed):
    return tf.zeros(shape, dtype)


def _one(shape, dtype, seed):
    return tf.ones(shape, dtype)


def _random(shape, dtype, seed):
    return keras.random.uniform(shape, dtype=dtype, seed=seed)


# The names are ``choices.FILLS`` (for the flags, without TensorFlow); a test keeps
# them in step.
FILLS = {"zero": _zero, "one": _one, "random": _random}


def occlusion_mask(heatmaps, threshold):
    """Boolean (B, H, W) mask of the pixels with heat > threshold (strict)."""
    return tf.convert_to_tensor(heatmaps) > threshold


def occlude(images, mask, fill="zero", seed=None):
    """Replace the masked pixels of (B, H, W, C) ``images`` by ``fill`` in every channel.

    seed: a ``keras.random.SeedGenerator`` (or int) for the ``random`` fill; inside a
    compiled step it must be a SeedGenerator, or every step draws the same values.
    The mask is boolean, so no gradient flows through it (nor through the fill);
    gradients with respect to the kept pixels pass unchanged.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r} (choose from {', '.join(FILLS)})")
    images = tf.convert_to_tensor(images)
    values = FILLS[fill](tf.shape(images), images.dtype, seed)
    return tf.where(tf.cast(mask, tf.bool)[..., None], values, images)
