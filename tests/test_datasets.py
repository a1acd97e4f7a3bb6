"""Datasets: the IDX format, the Fashion-MNIST loader, the embedded subset, splits."""

import gzip
import re
import struct
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from playing_distraction.datasets import load_dataset
from playing_distraction.layouts import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    Part,
    load_fashion_mnist,
    read_idx,
    write_idx,
)
from playing_distraction.splits import balanced_subset, split_train_validation
from playing_distraction.errors import UserError

FULL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ALL_FILES = sum(FASHION_MNIST_FILES.values(), ())


def gz_bytes(path):
    with gzip.open(path, "rb") as handle:
        return handle.read()


def write_gz(path, data):
    with gzip.open(path, "wb") as handle:
        handle.write(data)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("shape", [(5, 7, 3), (11,)])
def test_write_idx_read_idx_round_trip(tmp_path, shape):
    array = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    path = tmp_path / "a-idx.gz"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_write_idx_writes_gzip_with_idx_magic_and_big_endian_shape(tmp_path):
    array = np.zeros((3, 4, 5), np.uint8)
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, array)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    data = gz_bytes(path)
    assert data[:4] == bytes([0, 0, 0x08, 3])
    assert struct.unpack(">3I", data[4:16]) == (3, 4, 5)
    assert len(data) == 16 + 3 * 4 * 5

    write_idx(tmp_path / "labels.gz", np.arange(7, dtype=np.uint8))
    assert gz_bytes(tmp_path / "labels.gz")[:8] == bytes([0, 0, 0x08, 1, 0, 0, 0, 7])


def test_read_idx_big_endian_int32_and_plain_file(tmp_path):
    data = bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + struct.pack(">3i", 1, -2, 70000)
    for path in (tmp_path / "ints.gz", tmp_path / "ints-idx1"):
        if path.suffix == ".gz":
            write_gz(path, data)
        else:
            path.write_bytes(data)
        array = read_idx(path)
        assert array.dtype == np.int32 and array.dtype.isnative
        np.testing.assert_array_equal(array, [1, -2, 70000])


@pytest.mark.parametrize("magic", [bytes([1, 2, 0x08, 1]), bytes([0, 0, 0x07, 1])],
                         ids=["bad-magic-number", "unknown-type-code"])
def test_read_idx_bad_magic(tmp_path, magic):
    path = tmp_path / "bad.gz"
    write_gz(path, magic + bytes([0, 0, 0, 2, 9, 9]))
    with pytest.raises(UserError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_data_shorter_than_header_says(tmp_path):
    path = tmp_path / "short.gz"
    write_idx(path, np.ones((4, 6, 6), np.uint8))
    write_gz(path, gz_bytes(path)[:-10])
    with pytest.raises(UserError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "(4, 6, 6)" in message and "144" in message  # header shape and bytes needed


def test_read_idx_header_cut_short(tmp_path):
    path = tmp_path / "cut-header.gz"
    write_gz(path, bytes([0, 0, 0x08, 3, 0, 0, 0, 4]))
    with pytest.raises(UserError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_non_gzip_garbage(tmp_path):
    path = tmp_path / "garbage.gz"
    path.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_cut_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (20, 28, 28)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------- Fashion-MNIST


def test_load_fashion_mnist_on_fixture(fashion_dir):
    train, test = load_fashion_mnist(fashion_dir)
    assert train.images.shape == (120, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (40, 28, 28) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(10), 12))
    np.testing.assert_array_equal(test.labels, np.repeat(np.arange(10), 4))
    assert np.issubdtype(train.labels.dtype, np.integer)
    # The fixture's class-dependent brightness survives the round trip.
    means = [train.images[train.labels == k].mean() for k in range(10)]
    assert np.all(np.diff(means) > 0)


def test_load_fashion_mnist_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as info:
        load_fashion_mnist(missing)
    message = str(info.value)
    assert str(missing) in message
    for name in ALL_FILES:
        assert name in message


@pytest.mark.parametrize("name", ALL_FILES)
def test_load_fashion_mnist_missing_file(fashion_dir, name):
    (fashion_dir / name).unlink()
    with pytest.raises(UserError) as info:
        load_fashion_mnist(fashion_dir)
    assert str(fashion_dir / name) in str(info.value)


def test_load_fashion_mnist_count_mismatch(fashion_dir):
    write_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(39, np.uint8))
    with pytest.raises(UserError, match="do not match") as info:
        load_fashion_mnist(fashion_dir)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_load_fashion_mnist_label_out_of_range(fashion_dir):
    labels = np.repeat(np.arange(10), 12).astype(np.uint8)
    labels[17] = 10
    path = fashion_dir / "train-labels-idx1-ubyte.gz"
    write_idx(path, labels)
    with pytest.raises(UserError) as info:
        load_fashion_mnist(fashion_dir)
    message = str(info.value)
    assert str(path) in message
    assert "label 10" in message and "17" in message


def test_load_dataset_with_data_dir(fashion_dir):
    dataset = load_dataset("fashion-mnist", data_dir=fashion_dir)
    assert dataset.num_classes == 10
    assert len(dataset.train) == 120 and len(dataset.test) == 40


def test_embedded_fashion_mnist_mini():
    dataset = load_dataset("fashion-mnist-mini")
    assert dataset.class_names == FASHION_MNIST_CLASSES and dataset.num_classes == 10
    assert dataset.train.images.shape == (6000, 28, 28)
    assert dataset.test.images.shape == (1000, 28, 28)
    assert dataset.train.images.dtype == np.uint8
    assert Counter(dataset.train.labels.tolist()) == {k: 600 for k in range(10)}
    assert Counter(dataset.test.labels.tolist()) == {k: 100 for k in range(10)}
    # Real images, not blanks or noise: every image has dark background and bright parts.
    assert dataset.train.images.max(axis=(1, 2)).min() > 50
    assert np.median(dataset.train.images) == 0


def test_load_dataset_unknown_name():
    with pytest.raises(UserError) as info:
        load_dataset("birds")
    message = str(info.value)
    assert "birds" in message
    words = set(re.findall(r"[\w-]+", message))
    assert {"fashion-mnist-mini", "fashion-mnist", "cars", "aircraft", "egofoodplaces",
            "folder"} <= words


@pytest.mark.skipif(not FULL_FASHION_MNIST.is_dir(),
                    reason="full Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
def test_embedded_subset_is_taken_from_real_fashion_mnist():
    full_train, full_test = load_fashion_mnist(FULL_FASHION_MNIST)
    mini = load_dataset("fashion-mnist-mini")
    for full, part in ((full_train, mini.train), (full_test, mini.test)):
        labels_of = defaultdict(set)
        for image, label in zip(full.images, full.labels):
            labels_of[image.tobytes()].add(int(label))
        for index, (image, label) in enumerate(zip(part.images, part.labels)):
            assert int(label) in labels_of.get(image.tobytes(), ()), f"image {index}"
        assert len({image.tobytes() for image in part.images}) == len(part)


@pytest.mark.skipif(not FULL_FASHION_MNIST.is_dir(),
                    reason="full Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
def test_embedded_subset_is_what_make_script_writes(tmp_path):
    """data/make_fashion_mnist_mini.py's recipe reproduces the committed files byte for byte."""
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "data" / "make_fashion_mnist_mini.py"
    spec = importlib.util.spec_from_file_location("make_mini", script)
    make_mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_mini)
    make_mini.main(FULL_FASHION_MNIST, target=tmp_path)
    committed = script.parent / "fashion-mnist-mini"
    for name in ALL_FILES:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


# ---------------------------------------------------------------------- splits


def indexed_part(counts):
    """A Part whose image i is the number i, with class k repeated counts[k] times (shuffled)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = np.random.default_rng(5).permutation(labels)
    return Part(np.arange(len(labels)), labels)


COUNTS = [40, 30, 21, 13, 9, 7]


def test_split_train_validation_stratified_disjoint_covering():
    labels = indexed_part(COUNTS).labels
    train, val = split_train_validation(labels, 0.25, seed=3)
    assert len(val) == int(np.ceil(0.25 * len(labels)))
    # Disjoint and covering, both in file order.
    assert set(train).isdisjoint(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    # Stratified: every class has 25 % of its items in validation, +-1.
    for label, count in enumerate(COUNTS):
        assert abs(np.sum(labels[val] == label) - 0.25 * count) <= 1, label


def test_split_train_validation_on_fashion_fixture_is_stratified(fashion_dir):
    train_part, _ = load_fashion_mnist(fashion_dir)
    train, val = split_train_validation(train_part.labels, 0.25, seed=0)
    assert len(val) == 30 and len(train) == 90
    assert Counter(train_part.labels[val].tolist()) == {k: 3 for k in range(10)}


def test_split_train_validation_seeded():
    labels = indexed_part(COUNTS).labels
    _, first = split_train_validation(labels, 0.25, seed=7)
    _, again = split_train_validation(labels, 0.25, seed=7)
    _, other = split_train_validation(labels, 0.25, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_split_train_validation_fraction_zero():
    labels = indexed_part(COUNTS).labels
    train, val = split_train_validation(labels, 0, seed=0)
    np.testing.assert_array_equal(train, np.arange(len(labels)))
    assert len(val) == 0


def test_split_train_validation_impossible_is_user_error():
    with pytest.raises(UserError, match="25%"):
        split_train_validation(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]), 0.25, seed=0)


def test_balanced_subset_per_class_in_file_order():
    part = indexed_part(COUNTS)
    subset = balanced_subset(part, 5, seed=1)
    assert Counter(subset.labels.tolist()) == {k: 5 for k in range(len(COUNTS))}
    assert np.all(np.diff(subset.images) > 0)  # file order, no repeats
    np.testing.assert_array_equal(part.labels[subset.images], subset.labels)
    np.testing.assert_array_equal(balanced_subset(part, 5, seed=1).images, subset.images)
    assert not np.array_equal(balanced_subset(part, 5, seed=2).images, subset.images)


def test_write_idx_refuses_values_outside_a_byte(tmp_path):
    with pytest.raises(ValueError, match="0..255"):
        write_idx(tmp_path / "labels.gz", np.array([1, 300]))
