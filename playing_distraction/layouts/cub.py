"""CUB-200-2011 (Wah et al., 2011), the "Birds" of the hallucinated-saliency paper
(PAPERS.md §2), in its official layout: ``CUB_200_2011/`` with ``images/``,
``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` and
``classes.txt``."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _check_files_exist, _dataset, _read_lines

CUB_LAYOUT = ("the CUB-200-2011 layout CUB_200_2011/ with images/<class>/<file>.jpg, "
              "images.txt (<id> <path>), image_class_labels.txt (<id> <class>), "
              "train_test_split.txt (<id> <1 train, 0 test>) and classes.txt (<class> <name>)")


def _cub_dir(directory):
    for candidate in (directory / "CUB_200_2011", directory):
        if (candidate / "images.txt").is_file():
            return candidate
    raise UserError(f"no images.txt under {directory}; expected {CUB_LAYOUT}")


def _pairs(path):
    """{first field: rest of the line} of a '<id> <value>' file; a bad line is named."""
    pairs = {}
    for number, line in enumerate(_read_lines(path, CUB_LAYOUT), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value.strip():
            raise UserError(f"{path}:{number}: expected '<number> <value>', got {line!r}")
        if int(key) in pairs:
            raise UserError(f"{path}:{number}: number {key} is listed twice")
        pairs[int(key)] = value.strip()
    return pairs


def read_cub(directory, name="cub"):
    """CUB-200-2011: 11,788 images of 200 bird species, the official split (5,994
    training, 5,794 test). Image and class numbers are 1-based, as in the files;
    class names are those of classes.txt (``001.Black_footed_Albatross``, ...)."""
    root = _cub_dir(Path(directory))
    classes = _pairs(root / "classes.txt")
    images = _pairs(root / "images.txt")
    labels = _pairs(root / "image_class_labels.txt")
    is_train = _pairs(root / "train_test_split.txt")
    numbers = sorted(classes)
    if numbers != list(range(1, len(numbers) + 1)):
        raise UserError(f"{root / 'classes.txt'}: classes must be numbered 1 to {len(numbers)}")
    parts = {"train": ([], []), "test": ([], [])}
    for image, path in sorted(images.items()):
        for source, table in (("image_class_labels.txt", labels),
                              ("train_test_split.txt", is_train)):
            if image not in table:
                raise UserError(f"{root / source}: image {image} of images.txt is not listed")
        label, flag = labels[image], is_train[image]
        if not label.isdigit() or not 1 <= int(label) <= len(numbers):
            raise UserError(f"{root / 'image_class_labels.txt'}: image {image} has class "
                            f"{label!r}, not one of 1 to {len(numbers)}")
        if flag not in ("0", "1"):
            raise UserError(f"{root / 'train_test_split.txt'}: image {image} has {flag!r}, "
                            "not 1 (train) or 0 (test)")
        paths, part_labels = parts["train" if flag == "1" else "test"]
        paths.append(str(root / "images" / path))
        part_labels.append(int(label) - 1)
    result = {}
    for part, (paths, part_labels) in parts.items():
        _check_files_exist(paths, root / "images.txt")
        result[part] = Part(None, np.array(part_labels, np.int64), np.array(paths))
    return _dataset(name, [classes[number] for number in numbers], result, root)
