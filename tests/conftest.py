"""Shared fixtures: tiny models and datasets written in the real on-disk formats.

Nothing here downloads anything: backbones use random or locally saved weights.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from playing_distraction.backbones import build_classifier  # noqa: E402
from playing_distraction.layouts import Part, write_fashion_mnist  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts and ends in float32, whatever it set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def make_classifier(num_classes=3, size=32, seed=0, backbone="small_cnn"):
    keras.utils.set_random_seed(seed)
    return build_classifier(backbone, num_classes, size, "none")


def images_and_labels(count=8, size=32, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, num_classes, count).astype("int32")
    return images, labels


def structured_images(count=8, size=32, seed=0):
    """Images with a bright blob at a random place: gives non-trivial heat maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = 0.2 * rng.random((count, size, size, 3), dtype=np.float32)
    for image in images:
        cy, cx = rng.integers(4, size - 4, 2)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size / 4) ** 2)[..., None]
    return np.clip(images, 0, 1).astype("float32")


def fashion_part(rng, per_class):
    """A Fashion-MNIST-like part of ``per_class`` random 28 x 28 images of each of 10
    classes, drawn from ``rng``, with a class-dependent brightness so that a model can
    learn something."""
    labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
    images = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.uint8)
    return Part((images // 4 + labels[:, None, None] * 18).astype(np.uint8), labels)


@pytest.fixture
def fashion_dir(tmp_path):
    """A small dataset in the official Fashion-MNIST IDX layout: 12 train, 4 test per class."""
    rng = np.random.default_rng(0)
    directory = tmp_path / "fmnist"
    write_fashion_mnist(directory, fashion_part(rng, 12), fashion_part(rng, 4))
    return directory
