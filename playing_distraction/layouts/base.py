"""What every layout reader shares: the ``Part`` and ``Dataset`` records it returns,
the image suffixes a folder scan accepts, and the checks that turn a missing folder or
file, a listed image that does not exist or an empty class into a ``UserError``."""

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Part:
    """One split of a dataset: integer labels (N,) and the images, either decoded in
    memory (uint8 (N, H, W) or (N, H, W, 3)) or as image files.

    boxes: optional int (N, 4) crop per image, ``x0, y0, x1, y1`` in 0-indexed pixels,
    half-open. trim_bottom: rows cut from the bottom of every image (the FGVC-Aircraft
    copyright banner). events: optional event id per image (EgoFoodPlaces).
    positions: for images in memory, each one's position in the official file, where
    that is not its position here (a subset of classes); None: its position here.
    """

    images: np.ndarray | None
    labels: np.ndarray
    paths: np.ndarray | None = None
    boxes: np.ndarray | None = None
    events: np.ndarray | None = None
    trim_bottom: int = 0
    positions: np.ndarray | None = None

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        def pick(array):
            return None if array is None else array[indices]

        return Part(pick(self.images), self.labels[indices], pick(self.paths),
                    pick(self.boxes), pick(self.events), self.trim_bottom,
                    pick(self.positions))

    def name_of(self, index):
        """How to name an item in a message: its file, or its position."""
        return str(self.paths[index]) if self.paths is not None else f"item {index}"


@dataclasses.dataclass
class Dataset:
    """Class names and the official parts; ``validation`` is None unless the dataset
    defines its own (then it is not carved from ``train``). ``class_indices``: for a
    subset of classes (``subset``), the index of each in the whole dataset's list."""

    name: str
    class_names: tuple
    train: Part
    test: Part
    validation: Part | None = None
    class_indices: tuple | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def subset(self, classes):
        """The dataset restricted to ``classes`` (names, or indices into
        ``class_names``: an int, or a string of digits that is not a class name),
        relabelled 0..n-1 in the given order, every part filtered alike. An unknown
        or repeated class is a ``UserError`` naming the valid ones."""
        if len(classes) < 2:
            raise UserError(f"--classes needs at least two classes, got {len(classes)}")
        chosen = [self.class_index(name) for name in classes]
        for position, index in enumerate(chosen):
            if index in chosen[:position]:
                raise UserError(f"--classes: class {self.class_names[index]!r} of {self.name} "
                                "is given twice")
        relabel = np.full(self.num_classes, -1, np.int64)
        relabel[chosen] = np.arange(len(chosen))

        def restrict(part):
            if part is None:
                return None
            indices = np.flatnonzero(relabel[part.labels] >= 0)
            kept = part.take(indices)
            kept.labels = relabel[kept.labels]
            if kept.positions is None:
                kept.positions = indices  # items keep their names in the official file
            return kept

        subset = Dataset(self.name, tuple(self.class_names[index] for index in chosen),
                         restrict(self.train), restrict(self.test), restrict(self.validation),
                         tuple(chosen))
        for name, part in subset.parts().items():
            if len(part) == 0:
                raise UserError(f"--classes: the {name} set of {self.name} has no image of "
                                "these classes")
        return subset

    def class_index(self, name, flag="--classes"):
        """The index of a class given by name or index (see ``subset``); a UserError
        naming ``flag`` if there is no such class."""
        index = find_class(self.class_names, name)
        if index is None:
            listed = ", ".join(f"{index} {value!r}"
                               for index, value in enumerate(self.class_names))
            raise UserError(f"{flag}: {self.name} has no class {str(name)!r}; its classes "
                            f"are {listed}")
        return index

    def parts(self):
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: part for name, part in named.items() if part is not None}


# ------------------------------------------------------------------ helpers


def find_class(class_names, name):
    """The index in ``class_names`` of a class given by name, or by index (an int, or
    a string of digits that is not a class name); None if there is none."""
    if isinstance(name, str) and name in class_names:
        return list(class_names).index(name)
    text = str(name)
    if text.isascii() and text.isdigit() and int(text) < len(class_names):
        return int(text)
    return None


def _require_dir(path, layout):
    if not Path(path).is_dir():
        raise UserError(f"missing folder {path}; expected {layout}")


def _require_file(path, layout):
    if not Path(path).is_file():
        raise UserError(f"missing file {path}; expected {layout}")


def _read_lines(path, layout):
    """The lines of a text annotation file; missing or unreadable is a ``UserError``."""
    _require_file(path, layout)
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def _load_mat(path, layout):
    """A MATLAB annotation file (``scipy.io.loadmat``, squeezed); missing or damaged is
    a ``UserError``."""
    from scipy.io import loadmat

    _require_file(path, layout)
    try:
        return loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy raises several types for a damaged file
        raise UserError(f"cannot read MATLAB file {path}: {error}") from None


def _check_files_exist(paths, source):
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image file(s) listed in {source} do not exist, e.g. {missing[0]}")


def _check_no_empty_class(labels, class_names, source):
    counts = np.bincount(labels, minlength=len(class_names))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        names = ", ".join(repr(class_names[i]) for i in empty[:5])
        raise UserError(f"{source}: {empty.size} class(es) have no training images: {names}")


def _dataset(name, class_names, parts, source):
    _check_no_empty_class(parts["train"].labels, class_names, source)
    for part_name, part in parts.items():
        if part is not None and len(part) == 0:
            raise UserError(f"{source}: the {part_name} set is empty")
    return Dataset(name, tuple(class_names), parts["train"], parts["test"],
                   parts.get("validation"))
