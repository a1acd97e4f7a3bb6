"""FGVC-Aircraft 2013b (Maji et al., 2013), one of the paper's datasets, in its official
layout: ``fgvc-aircraft-2013b/data/`` with ``images/<id>.jpg``, the class-name files and
the ``images_<level>_{trainval,test}.txt`` split files."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Part, _check_files_exist, _dataset, _read_lines

AIRCRAFT_LEVELS = {"variant": "variants.txt", "family": "families.txt",
                   "manufacturer": "manufacturers.txt"}
AIRCRAFT_BANNER_ROWS = 20  # the copyright banner at the bottom of every image
AIRCRAFT_LAYOUT = (
    "the FGVC-Aircraft layout fgvc-aircraft-2013b/data/ with images/<id>.jpg, "
    "variants.txt (or families.txt, manufacturers.txt) and images_<level>_{trainval,test}.txt"
)


def _aircraft_data_dir(directory):
    for candidate in (directory / "fgvc-aircraft-2013b" / "data", directory / "data", directory):
        if (candidate / "images").is_dir():
            return candidate
    raise UserError(f"no images/ folder under {directory}; expected {AIRCRAFT_LAYOUT}")


def read_aircraft(directory, level="variant", remove_banner=False, name="aircraft"):
    """FGVC-Aircraft 2013b (Maji et al.): the official trainval (6,667) and test (3,333)
    splits at the given level (variant: 100 classes; family: 70; manufacturer: 30).

    A split file line is ``<image id> <label>``, and a label may contain spaces.
    remove_banner cuts the 20-pixel copyright banner from the bottom of every image.
    """
    if level not in AIRCRAFT_LEVELS:
        raise UserError(f"unknown aircraft level {level!r} (one of {', '.join(AIRCRAFT_LEVELS)})")
    data_dir = _aircraft_data_dir(Path(directory))
    names_file = data_dir / AIRCRAFT_LEVELS[level]
    class_names = [line.strip() for line in _read_lines(names_file, AIRCRAFT_LAYOUT) if line.strip()]
    index = {label: i for i, label in enumerate(class_names)}
    parts = {}
    for part, split in (("train", "trainval"), ("test", "test")):
        split_file = data_dir / f"images_{level}_{split}.txt"
        paths, labels = [], []
        for number, line in enumerate(_read_lines(split_file, AIRCRAFT_LAYOUT), start=1):
            if not line.strip():
                continue
            image_id, _, label = line.strip().partition(" ")
            if not label:
                raise UserError(f"{split_file}:{number}: expected '<image id> <label>', got {line!r}")
            if label not in index:
                raise UserError(f"{split_file}:{number}: unknown {level} {label!r} (not in {names_file.name})")
            paths.append(str(data_dir / "images" / f"{image_id}.jpg"))
            labels.append(index[label])
        _check_files_exist(paths, split_file)
        parts[part] = Part(None, np.array(labels, np.int64), np.array(paths),
                           trim_bottom=AIRCRAFT_BANNER_ROWS if remove_banner else 0)
    return _dataset(name, class_names, parts, data_dir)
