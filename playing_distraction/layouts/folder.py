"""A generic dataset of your own (no paper dataset): class-per-folder ``train/``,
``test/`` (and optional ``val/``) trees, as torchvision's ``ImageFolder`` reads, or a
``manifest.csv`` with ``path,label,split`` (``manifest.py``)."""

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import IMAGE_SUFFIXES, Part, _dataset, _require_dir
from .manifest import MANIFEST, _parts_from_rows, read_manifest

FOLDER_LAYOUT = (
    "class folders train/<class>/*.jpg and test/<class>/*.jpg (optionally val/<class>/), "
    "or a manifest.csv with the header path,label,split"
)


def _scan_class_folders(folder):
    """(paths, class names) of ``folder/<class>/<image>``; an empty class is an error."""
    paths, labels = [], []
    classes = sorted(entry.name for entry in folder.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserError(f"{folder} has no class folders; expected {FOLDER_LAYOUT}")
    for label in classes:
        files = sorted(entry for entry in (folder / label).iterdir()
                       if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(
                f"class folder {folder / label} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += [str(file) for file in files]
        labels += [label] * len(files)
    return paths, labels


def read_folder(directory, name="folder"):
    """A generic dataset: class-per-folder train/ and test/ (and val/) trees, or a
    ``manifest.csv`` with ``path,label,split``. Classes are the training folders
    (or labels), sorted by name."""
    directory = Path(directory)
    _require_dir(directory, FOLDER_LAYOUT)
    if (directory / MANIFEST).is_file():
        rows = read_manifest(directory / MANIFEST, required=("path", "label", "split"))
        class_names, parts = _parts_from_rows(rows, directory / MANIFEST)
        if "test" not in parts or "train" not in parts:
            raise UserError(f"{directory / MANIFEST}: the train and test splits must not be empty")
        return _dataset(name, class_names, parts, directory / MANIFEST)
    for split in ("train", "test"):
        _require_dir(directory / split, FOLDER_LAYOUT)
    folders = {split: directory / folder
               for split, folder in (("train", "train"), ("validation", "val"), ("test", "test"))
               if (directory / folder).is_dir()}
    scanned = {split: _scan_class_folders(folder) for split, folder in folders.items()}
    class_names = sorted(set(scanned["train"][1]))
    index = {label: i for i, label in enumerate(class_names)}
    parts = {}
    for split, (paths, labels) in scanned.items():
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise UserError(
                f"{folders[split]}: class folder {unknown[0]!r} has no match in {folders['train']}")
        parts[split] = Part(None, np.array([index[label] for label in labels], np.int64),
                            np.array(paths))
    return _dataset(name, class_names, parts, directory)
