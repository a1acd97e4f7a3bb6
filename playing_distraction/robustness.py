"""The robustness test of Table 7: the test set with one random region erased per image.

Random Erasing (Zhong et al., 2017, Algorithm 1): draw an area S_e ~ U(0.02, 0.4)·S,
an aspect ratio r_e ~ U(0.3, 1/0.3) and a position uniform over the image; keep the
H_e = sqrt(S_e r_e) by W_e = sqrt(S_e / r_e) rectangle there if it fits, else draw
again; fill it with uniform random values (PAPERS.md §1). Decision: one region per test
image, drawn from (seed, image index) alone, so the erased test set is the same for
every model compared and for any batching. ``corruptions.py`` registers it as
the corruption ``random_erasing``.

This module does not import TensorFlow.
"""

import math

import numpy as np

AREA = (0.02, 0.4)
ASPECT = (0.3, 1 / 0.3)
ATTEMPTS = 100


def erase_box(height, width, rng, area=AREA, aspect=ASPECT):
    """(top, left, bottom, right) of one Random Erasing rectangle, half-open; None if
    no draw fits in ``ATTEMPTS`` tries (then the image stays whole, as in the paper's
    algorithm)."""
    for _ in range(ATTEMPTS):
        target = rng.uniform(*area) * height * width
        ratio = rng.uniform(*aspect)
        box_height = int(round(math.sqrt(target * ratio)))
        box_width = int(round(math.sqrt(target / ratio)))
        # As in Zhong et al.: a position anywhere, kept only if the box fits there.
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        # Strictly smaller than the image, as in the reference code (w < W, h < H).
        if 0 < box_height < height and 0 < box_width < width \
                and top + box_height <= height and left + box_width <= width:
            return top, left, top + box_height, left + box_width
    return None


def image_generator(seed, index):
    """The generator of test image ``index``'s region: (seed, index) alone decide it."""
    return np.random.default_rng([seed, int(index)])


def erase(images, indices, seed, area=AREA, aspect=ASPECT):
    """Float images (B, H, W, C) in [0, 1] with one region erased each; image i is
    erased from the generator seeded by (seed, indices[i])."""
    erased = np.array(images, dtype=np.float32, copy=True)
    height, width, channels = erased.shape[1:]
    for image, index in zip(erased, indices):
        rng = image_generator(seed, index)
        box = erase_box(height, width, rng, area, aspect)
        if box is not None:
            top, left, bottom, right = box
            image[top:bottom, left:right] = rng.random(
                (bottom - top, right - left, channels), dtype=np.float32)
    return erased


def erased_shares(height, width, indices, seed, area=AREA, aspect=ASPECT):
    """The share of the image that ``erase`` erases in each test image of ``indices``
    (images of ``height`` by ``width`` pixels): the area of the very box ``erase``
    draws from the same (seed, index) generator, 0 where no box fits. The box is
    rounded to whole pixels, so a share can fall just outside ``area``."""
    shares = np.zeros(len(indices))
    for position, index in enumerate(indices):
        box = erase_box(height, width, image_generator(seed, index), area, aspect)
        if box is not None:
            top, left, bottom, right = box
            shares[position] = (bottom - top) * (right - left) / (height * width)
    return shares


def erased_batches(images, batch_size, seed):
    """Batches of the erased test set from prepared uint8 images, in order."""
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32) / 255.0
        yield erase(batch, np.arange(start, start + len(batch)), seed)
