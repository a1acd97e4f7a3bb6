"""Oxford Flowers 102 (Nilsback and Zisserman, 2008), one of the hallucinated-saliency
paper's datasets (PAPERS.md §2), in its official layout: ``jpg/image_<05d>.jpg``,
``imagelabels.mat`` and ``setid.mat``."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _check_files_exist, _dataset, _load_mat, _require_dir

FLOWERS_LAYOUT = ("the Oxford Flowers 102 layout: jpg/image_00001.jpg ..., imagelabels.mat "
                  "(labels, 1-based) and setid.mat (trnid, valid, tstid: 1-based image numbers)")


def _integers(mat, key, path):
    if key not in mat:
        raise UserError(f"{path} has no '{key}'; expected {FLOWERS_LAYOUT}")
    values = np.atleast_1d(np.asarray(mat[key]))
    if values.dtype.kind not in "iuf" or not np.all(values == np.round(values)):
        raise UserError(f"{path}: '{key}' must hold whole numbers")
    return values.astype(np.int64)


def read_flowers(directory, name="flowers"):
    """Oxford Flowers 102: 8,189 images of 102 classes; the official split of 10
    training and 10 validation images per class (1,020 each) and 6,149 test images.
    The dataset's own validation split is kept. Classes have no names in the
    official files: they are ``flower 1`` ... ``flower 102``, by their label."""
    directory = Path(directory)
    image_dir = directory / "jpg"
    _require_dir(image_dir, FLOWERS_LAYOUT)
    labels_path, split_path = directory / "imagelabels.mat", directory / "setid.mat"
    labels = _integers(_load_mat(labels_path, FLOWERS_LAYOUT), "labels", labels_path)
    if labels.size == 0 or labels.min() < 1:
        raise UserError(f"{labels_path}: labels are 1-based class numbers, found "
                        f"{labels.min() if labels.size else 'none'}")
    num_classes = int(labels.max())
    split = _load_mat(split_path, FLOWERS_LAYOUT)
    parts = {}
    for part, key in (("train", "trnid"), ("validation", "valid"), ("test", "tstid")):
        numbers = _integers(split, key, split_path)
        bad = numbers[(numbers < 1) | (numbers > len(labels))]
        if bad.size:
            raise UserError(f"{split_path}: '{key}' lists image {bad[0]}, but imagelabels.mat "
                            f"labels images 1 to {len(labels)}")
        paths = [str(image_dir / f"image_{number:05d}.jpg") for number in numbers]
        _check_files_exist(paths, split_path)
        parts[part] = Part(None, labels[numbers - 1] - 1, np.array(paths))
    class_names = [f"flower {number}" for number in range(1, num_classes + 1)]
    return _dataset(name, class_names, parts, directory)
