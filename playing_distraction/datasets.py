"""Datasets: official on-disk layouts -> arrays of images and labels, and splits.

A loader returns a ``Dataset`` with the official train and test parts; the
validation part is carved from the official training set by
``split_train_validation`` (PAPERS.md §1, Sec. 4.3: a seeded, class-stratified 25 %).

This module does not import TensorFlow; ``pipeline.py`` turns arrays into
``tf.data`` pipelines.
"""

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np

from .errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type codes (LeCun's MNIST format); Fashion-MNIST uses unsigned bytes.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass
class Part:
    """Images as uint8 (N, H, W) or (N, H, W, 3) and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        return Part(self.images[indices], self.labels[indices])


@dataclasses.dataclass
class Dataset:
    name: str
    class_names: tuple
    train: Part
    test: Part

    @property
    def num_classes(self):
        return len(self.class_names)


def read_idx(path):
    """Read an IDX file (optionally gzipped) into a NumPy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"cannot read IDX file {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is truncated (header of {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{path} holds {len(data) - header} bytes of data; its header "
            f"{tuple(shape)} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write a uint8 array as a gzipped IDX file (the format Fashion-MNIST ships in)."""
    array = np.asarray(array)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"IDX unsigned-byte data must be in 0..255, got {array.min()}..{array.max()}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    # mtime=0 makes the bytes depend on the data only (reproducible files).
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(header + array.tobytes())


def load_fashion_mnist(directory):
    """Fashion-MNIST in its official layout: the four gzipped IDX files in one folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(
            f"dataset directory {directory} does not exist; expected the Fashion-MNIST "
            f"files {', '.join(sum(FASHION_MNIST_FILES.values(), ()))} in it"
        )
    parts = {}
    for part, (image_file, label_file) in FASHION_MNIST_FILES.items():
        for name in (image_file, label_file):
            if not (directory / name).is_file():
                raise UserError(f"missing file {directory / name} (Fashion-MNIST IDX layout)")
        images = read_idx(directory / image_file)
        labels = read_idx(directory / label_file).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{directory / image_file} and {directory / label_file} do not match: "
                f"images {images.shape}, labels {labels.shape}"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= len(FASHION_MNIST_CLASSES)))
        if bad.size:
            raise UserError(
                f"{directory / label_file}: label {labels[bad[0]]} of item {bad[0]} is out of "
                f"range 0..{len(FASHION_MNIST_CLASSES) - 1}"
            )
        parts[part] = Part(images, labels)
    return parts["train"], parts["test"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset and the defaults that suit it.

    default_backbone / default_epochs: used where the flag is not given; the
    embedded demo uses the small CNN and a few epochs so that it runs on a CPU.
    """

    name: str
    loader: object
    default_dir: str
    default_backbone: str
    default_epochs: int
    description: str


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "fashion-mnist-mini", load_fashion_mnist, "data/fashion-mnist-mini",
            "small_cnn", 15,
            "embedded default: a class-balanced subset of real Fashion-MNIST "
            "(6,000 train / 1,000 test, MIT licence), committed in the repository",
        ),
        DatasetSpec(
            "fashion-mnist", load_fashion_mnist, "data/fashion-mnist",
            "small_cnn", 30,
            "full Fashion-MNIST (60,000 / 10,000) from its four IDX files, e.g. "
            "--data-dir /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)",
        ),
    )
}


def get_dataset_spec(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(
            f"unknown dataset {name!r} (available: {', '.join(DATASETS)}; loaders for "
            "cars, aircraft and egofoodplaces come in a later release)"
        ) from None


def resolve_data_dir(spec, data_dir=None):
    """An explicit --data-dir as given; otherwise ``data/<name>`` in the working
    directory if it exists there, else in the project checkout."""
    if data_dir:
        return Path(data_dir)
    local = Path(spec.default_dir)
    return local if local.exists() else PROJECT_ROOT / spec.default_dir


def load_dataset(name, data_dir=None):
    spec = get_dataset_spec(name)
    train, test = spec.loader(resolve_data_dir(spec, data_dir))
    names = FASHION_MNIST_CLASSES
    for part_name, part in (("training", train), ("test", test)):
        if len(part) == 0:
            raise UserError(f"dataset {name}: the {part_name} set is empty")
    return Dataset(name, names, train, test)


def split_train_validation(part, fraction, seed):
    """Seeded, class-stratified split of the official training set (Sec. 4.3)."""
    from sklearn.model_selection import train_test_split

    if fraction == 0:
        return part, None
    indices = np.arange(len(part))
    try:
        train_idx, val_idx = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=part.labels
        )
    except ValueError as error:
        raise UserError(f"cannot split a {fraction:.0%} validation set: {error}") from None
    return part.take(np.sort(train_idx)), part.take(np.sort(val_idx))


def balanced_subset(part, per_class, seed):
    """``per_class`` items of every class, drawn without replacement, in file order."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(part.labels == label), per_class, replace=False)
        for label in np.unique(part.labels)
    ]
    return part.take(np.sort(np.concatenate(chosen)))


def write_fashion_mnist(directory, train, test):
    """Write train and test parts in the official Fashion-MNIST layout."""
    os.makedirs(directory, exist_ok=True)
    for (image_file, label_file), part in zip(FASHION_MNIST_FILES.values(), (train, test)):
        write_idx(Path(directory) / image_file, part.images)
        write_idx(Path(directory) / label_file, part.labels)
