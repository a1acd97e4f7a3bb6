"""Caltech-101 in its official layout (``101_ObjectCategories/<class>/image_0001.jpg``)
and the split of the feature-augmentation paper (Cen et al., 2021, Sec. 4.1.1; PAPERS.md
§5): per class N training images at random, at most M test images from the rest, drawn
once with a fixed seed. On a small fixture written in that format: a few classes of
mixed case and of different sizes, BACKGROUND_Google, and files that are not images."""

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from playing_distraction.cli import train_main
from playing_distraction.config import parse_config
from playing_distraction.datasets import load_dataset
from playing_distraction.errors import UserError
from playing_distraction.layouts import (
    CALTECH101_CLASSES,
    CALTECH101_PAIR_CLASSES,
    read_caltech101,
)

# The fixture's classes and their sizes: fewer than the 101 official ones, so reading
# it warns (checked in its own test, ignored elsewhere).
SIZES = {"Faces": 35, "Faces_easy": 31, "accordion": 42, "tick": 33, "yin_yang": 60,
         "BACKGROUND_Google": 12}
ORDER = ("accordion", "Faces", "Faces_easy", "tick", "yin_yang")  # case ignored
NOT_OFFICIAL = "not the 101 Caltech-101 classes"
pytestmark = pytest.mark.filterwarnings(f"ignore:.*{NOT_OFFICIAL}:UserWarning")


def write_caltech101(root, sizes=SIZES):
    """``root/101_ObjectCategories/<class>/image_0001.jpg ...``: 8x8 JPEGs, each class
    a shade of its own so that a model can tell them apart; plus a text file and a
    macOS ``._`` file in one class, which are not images."""
    for shade, (name, count) in enumerate(sizes.items()):
        folder = root / "101_ObjectCategories" / name
        folder.mkdir(parents=True)
        for number in range(1, count + 1):
            pixels = np.full((8, 8, 3), (20 + 40 * shade) % 256, np.uint8)
            pixels[number % 8] = 255 - pixels[0, 0]
            assert cv2.imwrite(str(folder / f"image_{number:04d}.jpg"), pixels)
    yin_yang = root / "101_ObjectCategories" / "yin_yang"
    if yin_yang.is_dir():
        (yin_yang / "notes.txt").write_text("not an image")
        (yin_yang / "._image_0001.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    return root


@pytest.fixture
def caltech(tmp_path):
    return write_caltech101(tmp_path / "caltech101")


def by_class(data, part):
    """{class name: [file names]} of a part."""
    files = {name: [] for name in data.class_names}
    for path, label in zip(part.paths, part.labels):
        files[data.class_names[label]].append(Path(path).name)
    return files


def test_classes_background_left_out_and_case_ignored(caltech):
    data = read_caltech101(caltech, train_images=3, test_images=2)
    assert data.class_names == ORDER
    for part in (data.train, data.test):
        for path, label in zip(part.paths, part.labels):
            assert Path(path).parent.name == data.class_names[label]
            assert Path(path).parent.parent.name == "101_ObjectCategories"
    assert data.validation is None  # the toolkit carves it from the training part


@pytest.mark.parametrize("train, test", [(3, 2), (30, 50), (30, 4)])
def test_per_class_counts_and_disjoint_parts(caltech, train, test):
    data = read_caltech101(caltech, train_images=train, test_images=test)
    training, testing = by_class(data, data.train), by_class(data, data.test)
    for name in data.class_names:
        assert len(training[name]) == train
        assert len(testing[name]) == min(SIZES[name] - train, test)
        assert not set(training[name]) & set(testing[name])
        assert len(set(training[name])) == train  # no image twice
        # Only the class's images, never notes.txt or the "._" file.
        assert all(file.startswith("image_") and file.endswith(".jpg")
                   for file in training[name] + testing[name])


def test_the_draw_is_random_not_the_first_files(caltech):
    data = read_caltech101(caltech, train_images=3, test_images=2)
    first = [f"image_{number:04d}.jpg" for number in range(1, 4)]
    training = by_class(data, data.train)
    assert any(sorted(training[name]) != first for name in data.class_names)
    # Different classes get different draws (a shared permutation would repeat them).
    assert len({tuple(sorted(files)) for files in training.values()}) > 1


def test_the_draw_is_fixed_and_independent_of_listing_order(caltech, monkeypatch):
    first = read_caltech101(caltech, train_images=3, test_images=2)
    again = read_caltech101(caltech, train_images=3, test_images=2)
    original = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: reversed(list(original(self))))
    reversed_listing = read_caltech101(caltech, train_images=3, test_images=2)
    for other in (again, reversed_listing):
        assert other.class_names == first.class_names
        for part in ("train", "test"):
            assert getattr(other, part).paths.tolist() == getattr(first, part).paths.tolist()
            assert (getattr(other, part).labels == getattr(first, part).labels).all()


def test_a_class_draw_does_not_depend_on_the_other_classes(caltech, tmp_path):
    fewer = write_caltech101(tmp_path / "fewer", {"tick": 33, "Faces": 35})
    whole = read_caltech101(caltech, train_images=3, test_images=2)
    part = read_caltech101(fewer, train_images=3, test_images=2)
    for name in ("tick", "Faces"):
        assert by_class(part, part.train)[name] == by_class(whole, whole.train)[name]
        assert by_class(part, part.test)[name] == by_class(whole, whole.test)[name]


def test_data_dir_may_be_the_categories_folder_itself(caltech):
    holder = read_caltech101(caltech, train_images=3, test_images=2)
    itself = read_caltech101(caltech / "101_ObjectCategories", train_images=3, test_images=2)
    assert itself.class_names == holder.class_names
    assert itself.train.paths.tolist() == holder.train.paths.tolist()
    assert itself.test.paths.tolist() == holder.test.paths.tolist()


def test_through_the_registry_with_the_flags_names(caltech):
    data = load_dataset("caltech101", caltech, ["tick", "accordion"],
                        caltech_train_images=4, caltech_test_images=3)
    assert data.class_names == ("tick", "accordion")
    assert np.bincount(data.train.labels).tolist() == [4, 4]
    assert np.bincount(data.test.labels).tolist() == [3, 3]
    # Unset options (None) keep the paper's counts.
    default = load_dataset("caltech101", caltech, caltech_train_images=None)
    assert np.bincount(default.train.labels).tolist() == [30] * 5


def test_pair_classes_are_the_ten_after_sunflower():
    assert len(CALTECH101_CLASSES) == len(set(CALTECH101_CLASSES)) == 101
    assert "BACKGROUND_Google" not in CALTECH101_CLASSES
    ordered = sorted(CALTECH101_CLASSES, key=str.lower)
    assert ordered[0] == "accordion" and ordered[90] == "sunflower"
    assert CALTECH101_PAIR_CLASSES == tuple(ordered[-10:]) == (
        "tick", "trilobite", "umbrella", "watch", "water_lilly", "wheelchair", "wild_cat",
        "windsor_chair", "wrench", "yin_yang")


def test_the_official_classes_read_without_warning_in_the_papers_order(tmp_path):
    sizes = {"BACKGROUND_Google": 3, **{name: 2 for name in CALTECH101_CLASSES[::-1]}}
    root = write_caltech101(tmp_path / "full", sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_caltech101(root, train_images=1, test_images=1)
    assert data.class_names == CALTECH101_CLASSES
    assert data.class_names[-10:] == CALTECH101_PAIR_CLASSES
    assert len(data.train) == len(data.test) == 101
    # Every class draws on its own: not the same position in each class's 2 images.
    assert {Path(path).name for path in data.train.paths} == {"image_0001.jpg",
                                                               "image_0002.jpg"}


def test_other_class_folders_are_read_with_a_one_line_warning(caltech):
    with pytest.warns(UserWarning, match=NOT_OFFICIAL) as caught:
        read_caltech101(caltech, train_images=3, test_images=2)
    message = str(caught[0].message)
    assert "lacks 96 class folder(s): 'Leopards', 'Motorbikes'" in message
    assert "\n" not in message


def one_line(error):
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_categories_folder(tmp_path):
    (tmp_path / "caltech-101").mkdir()
    with pytest.raises(UserError) as error:
        read_caltech101(tmp_path / "caltech-101")
    message = one_line(error)
    assert f"missing folder {tmp_path / 'caltech-101' / '101_ObjectCategories'}" in message
    assert "101_ObjectCategories/<class>/image_0001.jpg" in message


def test_no_class_folders_but_background(tmp_path):
    write_caltech101(tmp_path, {"BACKGROUND_Google": 5})
    with pytest.raises(UserError) as error:
        read_caltech101(tmp_path)
    assert one_line(error).startswith(f"{tmp_path / '101_ObjectCategories'} has no class "
                                      "folders; expected the Caltech-101 layout")


def test_a_class_folder_without_images(caltech):
    empty = caltech / "101_ObjectCategories" / "ant"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(UserError) as error:
        read_caltech101(caltech, train_images=3, test_images=2)
    assert one_line(error).startswith(f"class folder {empty} holds no images")


def test_a_class_with_nothing_left_to_test_on(caltech):
    read_caltech101(caltech, train_images=30)  # Faces_easy: 31 images, 1 to test on
    with pytest.raises(UserError) as error:
        read_caltech101(caltech, train_images=31)
    assert one_line(error) == (
        f"class folder {caltech / '101_ObjectCategories' / 'Faces_easy'} holds 31 images, "
        "and --caltech-train-images 31 leaves none for the test set")


@pytest.mark.parametrize("flag, keyword", [("--caltech-train-images", "train_images"),
                                           ("--caltech-test-images", "test_images")])
@pytest.mark.parametrize("value", [0, -3])
def test_counts_must_be_positive(caltech, flag, keyword, value):
    expected = f"{flag} must be positive, got {value}"
    with pytest.raises(ValueError) as error:
        parse_config(["--dataset", "caltech101", "--weights", "none", flag, str(value)])
    assert one_line(error) == expected
    with pytest.raises(ValueError) as error:
        read_caltech101(caltech, **{keyword: value})
    assert one_line(error) == expected


def test_flags_resolve_for_caltech101_only():
    config = parse_config(["--dataset", "caltech101", "--weights", "none"])
    assert config.dataset_options() == {"caltech_train_images": 30, "caltech_test_images": 50}
    assert (config.backbone, config.image_size) == ("resnet50", 224)
    other = parse_config(["--dataset", "cub", "--weights", "none"])
    assert other.caltech_train_images is None and "caltech_train_images" not in (
        other.dataset_options())
    for flag in ("--caltech-train-images", "--caltech-test-images"):
        with pytest.raises(ValueError) as error:
            parse_config(["--dataset", "cub", "--weights", "none", flag, "30"])
        assert one_line(error) == f"{flag} applies to --dataset caltech101 only"


def test_train_py_on_caltech101(caltech, tmp_path, capsys):
    code = train_main(["--dataset", "caltech101", "--data-dir", str(caltech),
                       "--backbone", "small_cnn", "--weights", "none", "--image-size", "32",
                       "--epochs", "1", "--batch-size", "4", "--caltech-train-images", "4",
                       "--caltech-test-images", "2", "--out-dir", str(tmp_path / "models"),
                       "--run-name", "r", "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "models" / "r"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] + metrics["validation_images"] == 5 * 4
    assert metrics["validation_images"] == 5  # 25 %, one per class
    assert metrics["test_images"] == 5 * 2
    config = json.loads((run / "config.json").read_text())
    assert (config["caltech_train_images"], config["caltech_test_images"]) == (4, 2)


def test_train_py_reports_a_short_class_in_one_line(caltech, tmp_path, capsys):
    code = train_main(["--dataset", "caltech101", "--data-dir", str(caltech),
                       "--backbone", "small_cnn", "--weights", "none",
                       "--caltech-train-images", "31", "--out-dir", str(tmp_path / "models")])
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train.py: error: class folder ") and "Faces_easy" in error
    assert not (tmp_path / "models").exists()
