"""Readers of the hallucinated-saliency paper's datasets in their official layouts:
Oxford Flowers 102 and CUB-200-2011 (PAPERS.md §2), on small fixtures written in
those formats - 1-based indices, a grey and a CMYK JPEG among the images - and
decoded by the real pipeline."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from playing_distraction.datasets import load_dataset
from playing_distraction.errors import UserError
from playing_distraction.layouts import read_cub, read_flowers
from playing_distraction.pipeline import prepare


def write_jpeg(path, kind, seed):
    """A 20x24 JPEG: RGB, grey ("L") or CMYK, as the real datasets hold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    {"rgb": image, "grey": image.convert("L"), "cmyk": image.convert("CMYK")}[kind].save(
        path, "JPEG", quality=90)


# ------------------------------------------------------------------ Oxford Flowers 102

# Image n (1-based) has class FLOWER_LABELS[n - 1] (1-based): 3 classes, 12 images.
FLOWER_LABELS = [2, 1, 3, 1, 2, 3, 3, 1, 2, 1, 2, 3]
FLOWER_SPLIT = {"trnid": [2, 1, 3], "valid": [4, 5, 6], "tstid": [12, 7, 8, 9, 10, 11]}


def write_flowers(root, labels=FLOWER_LABELS, split=FLOWER_SPLIT):
    for number in range(1, len(labels) + 1):
        kind = {1: "grey", 2: "cmyk"}.get(number, "rgb")
        write_jpeg(root / "jpg" / f"image_{number:05d}.jpg", kind, number)
    # As distributed: 1 x N arrays of doubles.
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([labels], np.float64)})
    scipy.io.savemat(root / "setid.mat", {key: np.array([value], np.float64)
                                          for key, value in split.items()})
    return root


def test_flowers_official_split_with_its_own_validation(tmp_path):
    root = write_flowers(tmp_path / "flowers")
    data = read_flowers(root)
    assert data.class_names == ("flower 1", "flower 2", "flower 3")
    for part, key in ((data.train, "trnid"), (data.validation, "valid"), (data.test, "tstid")):
        numbers = FLOWER_SPLIT[key]
        assert [str(p) for p in part.paths] == [str(root / "jpg" / f"image_{n:05d}.jpg")
                                               for n in numbers]
        assert part.labels.tolist() == [FLOWER_LABELS[n - 1] - 1 for n in numbers]
    # Decoded by the pipeline: grey and CMYK JPEGs become RGB.
    decoded = prepare(data.train, 16)
    assert decoded.images.shape == (3, 16, 16, 3) and not decoded.skipped


def test_flowers_through_the_registry_keeps_its_validation_split(tmp_path):
    data = load_dataset("flowers", write_flowers(tmp_path / "flowers"), ["flower 3", "1"])
    assert data.validation is not None and data.class_names == ("flower 3", "flower 2")


def test_flowers_missing_image_is_one_line(tmp_path):
    root = write_flowers(tmp_path / "flowers")
    (root / "jpg" / "image_00009.jpg").unlink()
    with pytest.raises(UserError, match=r"1 image file\(s\) listed in .*setid.mat do not "
                                        r"exist, e.g. .*image_00009.jpg") as info:
        read_flowers(root)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("split, words", [
    ({**FLOWER_SPLIT, "tstid": [13]}, "lists image 13"),
    ({key: value for key, value in FLOWER_SPLIT.items() if key != "valid"}, "has no 'valid'"),
])
def test_flowers_bad_split_file_is_one_line(tmp_path, split, words):
    root = write_flowers(tmp_path / "flowers", split=split)
    with pytest.raises(UserError, match=words):
        read_flowers(root)


def test_flowers_missing_files_name_the_layout(tmp_path):
    root = write_flowers(tmp_path / "flowers")
    (root / "setid.mat").unlink()
    with pytest.raises(UserError, match="missing file .*setid.mat; expected the Oxford Flowers"):
        read_flowers(root)
    with pytest.raises(UserError, match="missing folder .*jpg"):
        read_flowers(tmp_path / "nowhere")


# ------------------------------------------------------------------ CUB-200-2011

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (image number, path, class number, 1 = train): numbered from 1, listed out of order.
CUB_IMAGES = [
    (3, "002.Laysan_Albatross/Laysan_0003.jpg", 2, 1),
    (1, "001.Black_footed_Albatross/Black_0001.jpg", 1, 1),
    (2, "001.Black_footed_Albatross/Black_0002.jpg", 1, 0),
    (4, "002.Laysan_Albatross/Laysan_0004.jpg", 2, 0),
    (5, "003.Sooty_Albatross/Sooty_0005.jpg", 3, 1),
    (6, "003.Sooty_Albatross/Sooty_0006.jpg", 3, 0),
]


def write_cub(parent, images=CUB_IMAGES, classes=CUB_CLASSES):
    root = parent / "CUB_200_2011"
    root.mkdir(parents=True)
    for number, path, _, _ in images:
        write_jpeg(root / "images" / path, {1: "grey", 4: "cmyk"}.get(number, "rgb"), number)
    lines = {"images.txt": [f"{n} {p}" for n, p, _, _ in images],
             "image_class_labels.txt": [f"{n} {c}" for n, _, c, _ in images],
             "train_test_split.txt": [f"{n} {t}" for n, _, _, t in images],
             "classes.txt": [f"{k} {name}" for k, name in enumerate(classes, start=1)]}
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


def test_cub_official_split_in_image_number_order(tmp_path):
    root = write_cub(tmp_path)
    for where in (tmp_path, root):  # the parent folder or CUB_200_2011/ itself
        data = read_cub(where)
        assert data.class_names == tuple(CUB_CLASSES) and data.validation is None
        ordered = sorted(CUB_IMAGES)
        for part, flag in ((data.train, 1), (data.test, 0)):
            chosen = [row for row in ordered if row[3] == flag]
            assert [str(p) for p in part.paths] == [str(root / "images" / row[1])
                                                   for row in chosen]
            assert part.labels.tolist() == [row[2] - 1 for row in chosen]
    decoded = prepare(read_cub(root).test, 16)
    assert decoded.images.shape == (3, 16, 16, 3) and not decoded.skipped


def test_cub_through_the_registry(tmp_path):
    write_cub(tmp_path)
    data = load_dataset("cub", tmp_path)
    assert data.num_classes == 3 and len(data.train) == 3 and len(data.test) == 3


def test_cub_missing_image_is_one_line(tmp_path):
    root = write_cub(tmp_path)
    (root / "images" / CUB_IMAGES[4][1]).unlink()
    with pytest.raises(UserError, match=r"listed in .*images.txt do not exist, e.g. "
                                        r".*Sooty_0005.jpg") as info:
        read_cub(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("file, text, words", [
    ("image_class_labels.txt", "1 1\n2 1\n3 2\n4 2\n5 3\n6 4\n", "image 6 has class '4'"),
    ("train_test_split.txt", "1 1\n2 0\n3 1\n4 0\n5 1\n6 2\n", "image 6 has '2'"),
    ("train_test_split.txt", "1 1\n2 0\n3 1\n4 0\n5 1\n", "image 6 of images.txt is not"),
    ("images.txt", "1 a.jpg\nx b.jpg\n", r"images.txt:2: expected '<number> <value>'"),
    ("classes.txt", "1 A\n3 C\n", "classes must be numbered 1 to 2"),
])
def test_cub_bad_annotation_is_one_line_naming_the_file(tmp_path, file, text, words):
    root = write_cub(tmp_path)
    (root / file).write_text(text)
    with pytest.raises(UserError, match=words) as info:
        read_cub(tmp_path)
    assert "\n" not in str(info.value)


def test_cub_without_its_files_names_the_layout(tmp_path):
    with pytest.raises(UserError, match="no images.txt under .*; expected the CUB-200-2011"):
        read_cub(tmp_path)
