"""Fashion-MNIST (Xiao et al., 2017) in its official layout: four gzipped IDX files
(LeCun's MNIST format) in one folder. Also writes that layout (the embedded
``data/fashion-mnist-mini`` subset is made so); the toolkit's CPU demo dataset."""

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _dataset, _require_dir, _require_file

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
    """Fashion-MNIST in its official layout: the four gzipped IDX files in one folder.
    Returns the official (train, test) parts."""
    directory = Path(directory)
    layout = f"the Fashion-MNIST files {', '.join(sum(FASHION_MNIST_FILES.values(), ()))}"
    _require_dir(directory, layout)
    parts = {}
    for part, (image_file, label_file) in FASHION_MNIST_FILES.items():
        for name in (image_file, label_file):
            _require_file(directory / name, "the Fashion-MNIST IDX layout")
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


def read_fashion_mnist(directory, name="fashion-mnist"):
    train, test = load_fashion_mnist(directory)
    return _dataset(name, FASHION_MNIST_CLASSES, {"train": train, "test": test}, directory)


def write_fashion_mnist(directory, train, test):
    """Write train and test parts in the official Fashion-MNIST layout."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for (image_file, label_file), part in zip(FASHION_MNIST_FILES.values(), (train, test)):
        write_idx(Path(directory) / image_file, part.images)
        write_idx(Path(directory) / label_file, part.labels)
