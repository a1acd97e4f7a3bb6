"""Stanford Cars (Krause et al., 2013), one of the paper's datasets, in its official
layout: ``cars_train/``, ``cars_test/`` and the devkit's MATLAB annotation files
(``cars_meta.mat``, ``cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``)."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _check_files_exist, _dataset, _load_mat, _require_dir

CARS_LAYOUT = (
    "the Stanford Cars layout: cars_train/, cars_test/, devkit/cars_meta.mat, "
    "devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat"
)
_CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _cars_annotations(path, image_dir, num_classes):
    annotations = _load_mat(path, CARS_LAYOUT).get("annotations")
    if annotations is None or annotations.dtype.names is None:
        raise UserError(f"{path} has no 'annotations' struct array")
    missing = [field for field in _CARS_FIELDS if field not in annotations.dtype.names]
    if missing:
        raise UserError(f"{path}: the annotations lack the field(s) {', '.join(missing)}")
    annotations = np.atleast_1d(annotations)
    labels = np.array([int(value) for value in annotations["class"]], np.int64) - 1
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        index = bad[0]
        raise UserError(
            f"{path}: annotation {index + 1} ({annotations['fname'][index]}) has class "
            f"{labels[index] + 1}, outside 1..{num_classes}")
    # MATLAB boxes are 1-indexed and inclusive; ours are 0-indexed and half-open.
    x1, y1, x2, y2 = (np.array([int(v) for v in annotations[field]], np.int64)
                      for field in _CARS_FIELDS[:4])
    boxes = np.stack([x1 - 1, y1 - 1, x2, y2], axis=1)
    paths = np.array([str(image_dir / str(name)) for name in annotations["fname"]])
    _check_files_exist(paths, path)
    return paths, labels, boxes


def _cars_image_dir(directory, name):
    folder = directory / name
    # Some mirrors unpack into cars_train/cars_train/.
    if (folder / name).is_dir():
        folder = folder / name
    _require_dir(folder, CARS_LAYOUT)
    return folder


def read_cars(directory, crop_to_box=False, name="cars"):
    """Stanford Cars (Krause et al., 2013): 196 classes, 8,144 train / 8,041 test.

    Class indices in the annotations are 1-indexed; class names from cars_meta.mat.
    crop_to_box crops every image to its bounding box (off in the paper).
    """
    directory = Path(directory)
    _require_dir(directory, CARS_LAYOUT)
    meta = _load_mat(directory / "devkit" / "cars_meta.mat", CARS_LAYOUT)
    if "class_names" not in meta:
        raise UserError(f"{directory / 'devkit' / 'cars_meta.mat'} has no 'class_names'")
    class_names = [str(value) for value in np.atleast_1d(meta["class_names"])]
    test_annotations = directory / "cars_test_annos_withlabels.mat"
    if not test_annotations.is_file() and (directory / "devkit" / test_annotations.name).is_file():
        test_annotations = directory / "devkit" / test_annotations.name
    parts = {}
    for part, annotations, folder in (
        ("train", directory / "devkit" / "cars_train_annos.mat", "cars_train"),
        ("test", test_annotations, "cars_test"),
    ):
        paths, labels, boxes = _cars_annotations(
            annotations, _cars_image_dir(directory, folder), len(class_names))
        parts[part] = Part(None, labels, paths, boxes if crop_to_box else None)
    return _dataset(name, class_names, parts, directory)
