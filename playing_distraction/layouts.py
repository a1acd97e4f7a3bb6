"""Official on-disk dataset layouts -> lists of images (files or arrays) and labels.

A reader checks the layout and the annotations and returns a ``Dataset`` of parts;
it decodes no image (``pipeline.prepare`` does, in parallel). Every problem a user
can cause - a missing folder or file, an unknown label, a class index out of range,
an empty class - is a ``UserError`` naming the path (and line) and the layout
expected. Layouts and where to obtain each dataset: ``data/README.md``.

This module does not import TensorFlow.
"""

import csv
import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Part:
    """One split of a dataset: integer labels (N,) and the images, either decoded in
    memory (uint8 (N, H, W) or (N, H, W, 3)) or as image files.

    boxes: optional int (N, 4) crop per image, ``x0, y0, x1, y1`` in 0-indexed pixels,
    half-open. trim_bottom: rows cut from the bottom of every image (the FGVC-Aircraft
    copyright banner). events: optional event id per image (EgoFoodPlaces).
    """

    images: np.ndarray | None
    labels: np.ndarray
    paths: np.ndarray | None = None
    boxes: np.ndarray | None = None
    events: np.ndarray | None = None
    trim_bottom: int = 0

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        def pick(array):
            return None if array is None else array[indices]

        return Part(pick(self.images), self.labels[indices], pick(self.paths),
                    pick(self.boxes), pick(self.events), self.trim_bottom)

    def name_of(self, index):
        """How to name an item in a message: its file, or its position."""
        return str(self.paths[index]) if self.paths is not None else f"item {index}"


@dataclasses.dataclass
class Dataset:
    """Class names and the official parts; ``validation`` is None unless the dataset
    defines its own (then it is not carved from ``train``)."""

    name: str
    class_names: tuple
    train: Part
    test: Part
    validation: Part | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def parts(self):
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: part for name, part in named.items() if part is not None}


# ------------------------------------------------------------------ helpers


def _require_dir(path, layout):
    if not Path(path).is_dir():
        raise UserError(f"missing folder {path}; expected {layout}")


def _require_file(path, layout):
    if not Path(path).is_file():
        raise UserError(f"missing file {path}; expected {layout}")


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


# ------------------------------------------------------------- Fashion-MNIST

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


# --------------------------------------------------------------- Stanford Cars

CARS_LAYOUT = (
    "the Stanford Cars layout: cars_train/, cars_test/, devkit/cars_meta.mat, "
    "devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat"
)
_CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _load_mat(path):
    from scipy.io import loadmat

    _require_file(path, CARS_LAYOUT)
    try:
        return loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy raises several types for a damaged file
        raise UserError(f"cannot read MATLAB file {path}: {error}") from None


def _cars_annotations(path, image_dir, num_classes):
    annotations = _load_mat(path).get("annotations")
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
    meta = _load_mat(directory / "devkit" / "cars_meta.mat")
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


# --------------------------------------------------------------- FGVC-Aircraft

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


def _read_lines(path, layout):
    _require_file(path, layout)
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


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


# ---------------------------------------------------- manifests and class folders

MANIFEST = "manifest.csv"
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


@dataclasses.dataclass
class ManifestRow:
    line: int
    path: str
    label: str
    event: str | None
    split: str | None


def read_manifest(path, required=("path", "label")):
    """Rows of a CSV manifest with a header naming at least ``required`` (and optionally
    ``event`` and ``split``); paths are relative to the manifest's folder."""
    path = Path(path)
    _require_file(path, f"a CSV manifest with the header {','.join(required)}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or ()]
            missing = [name for name in required if name not in header]
            if missing:
                raise UserError(
                    f"{path}:1: the header {','.join(header) or '(empty)'} lacks the "
                    f"column(s) {', '.join(missing)}")
            rows = []
            for record in reader:
                line = reader.line_num
                if None in record:  # DictReader's key for fields beyond the header
                    raise UserError(
                        f"{path}:{line}: {len(header) + len(record[None])} fields but the header "
                        f"has {len(header)} (quote a field that holds a comma)")
                record = {key.strip(): (value or "").strip() for key, value in record.items()}
                for name in required:
                    if not record.get(name):
                        raise UserError(f"{path}:{line}: empty '{name}'")
                split = record.get("split") or None
                if split is not None and split not in SPLIT_NAMES:
                    raise UserError(
                        f"{path}:{line}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}")
                rows.append(ManifestRow(line, str(path.parent / record["path"]), record["label"],
                                        record.get("event") or None,
                                        SPLIT_NAMES[split] if split else None))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not rows:
        raise UserError(f"{path} lists no images")
    return rows


def _parts_from_rows(rows, source, class_names=None):
    """Group manifest rows by their split; labels must be classes of the training split."""
    if class_names is None:
        class_names = sorted({row.label for row in rows if row.split in (None, "train")})
    index = {label: i for i, label in enumerate(class_names)}
    grouped = {}
    for row in rows:
        if row.label not in index:
            raise UserError(f"{source}:{row.line}: label {row.label!r} has no training images")
        grouped.setdefault(row.split, []).append(row)
    _check_files_exist([row.path for row in rows], source)
    has_events = any(row.event is not None for row in rows)
    parts = {
        split: Part(None, np.array([index[row.label] for row in group], np.int64),
                    np.array([row.path for row in group]),
                    events=np.array([row.event or "" for row in group]) if has_events else None)
        for split, group in grouped.items()
    }
    return class_names, parts


def read_egofoodplaces(directory, event_split=(0.7, 0.1, 0.2), split_seed=0, name="egofoodplaces"):
    """EgoFoodPlaces (Sarker et al.): egocentric photo-streams of 15 food-related places.

    No public layout exists; ours is ``manifest.csv`` with ``path,label,event[,split]``
    (see data/README.md). Without a split column the images are split by event,
    70/10/20 by default, so that no event is in two splits (``splits.split_by_events``).
    """
    from .splits import split_by_events

    manifest = Path(directory) / MANIFEST
    rows = read_manifest(manifest, required=("path", "label", "event"))
    has_split = [row.split is not None for row in rows]
    if any(has_split) and not all(has_split):
        line = rows[has_split.index(False)].line
        raise UserError(f"{manifest}:{line}: empty 'split' (give it on every line or on none)")
    if all(has_split):
        class_names, parts = _parts_from_rows(rows, manifest)
        _check_events_disjoint(parts, manifest)
    else:
        class_names = sorted({row.label for row in rows})
        _, grouped = _parts_from_rows(rows, manifest, class_names)
        parts = split_by_events(grouped[None], event_split, split_seed, source=manifest)
    for split in ("train", "test"):
        if split not in parts:
            raise UserError(f"{manifest}: no image is in the {split} split")
    return _dataset(name, class_names, parts, manifest)


def _check_events_disjoint(parts, source):
    seen = {}
    for split, part in parts.items():
        for event in np.unique(part.events):
            if event in seen and seen[event] != split:
                raise UserError(
                    f"{source}: event {event!r} is in both the {seen[event]} and {split} splits")
            seen[event] = split


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
