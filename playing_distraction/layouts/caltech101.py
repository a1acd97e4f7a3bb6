"""Caltech-101 (Fei-Fei, Fergus and Perona, 2004), the dataset of the deep feature
augmentation paper (Cen et al., 2021, Sec. 4.1.1; PAPERS.md §5), in its official
layout: ``101_ObjectCategories/<class>/image_0001.jpg ...``.

The archive has no split: the paper's is drawn here, per class 30 training images at
random and test images from the rest, at most 50 (Sec. 4.1.1), once with a fixed seed,
so that every repetition and method sees the same split."""

import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import IMAGE_SUFFIXES, Part, _dataset, _require_dir

CALTECH101_LAYOUT = ("the Caltech-101 layout 101_ObjectCategories/<class>/image_0001.jpg ... "
                     "(--data-dir: the folder holding 101_ObjectCategories/, or that folder)")
CATEGORIES = "101_ObjectCategories"
# The clutter class of the archive: not an object category, left out as in the paper
# (101 classes) and as usual.
BACKGROUND = "BACKGROUND_Google"

# The 101 object categories of the archive, as its folders spell them, in the order
# the paper uses (Sec. 4.1.1: "in alphabet order"): case ignored, so that "Faces"
# sorts between "ewer" and "ferry" and the list runs from accordion to yin_yang.
CALTECH101_CLASSES = (
    "accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "binocular",
    "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side",
    "ceiling_fan", "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab",
    "crayfish", "crocodile", "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin",
    "dragonfly", "electric_guitar", "elephant", "emu", "euphonium", "ewer", "Faces",
    "Faces_easy", "ferry", "flamingo", "flamingo_head", "garfield", "gerenuk", "gramophone",
    "grand_piano", "hawksbill", "headphone", "hedgehog", "helicopter", "ibis", "inline_skate",
    "joshua_tree", "kangaroo", "ketch", "lamp", "laptop", "Leopards", "llama", "lobster",
    "lotus", "mandolin", "mayfly", "menorah", "metronome", "minaret", "Motorbikes", "nautilus",
    "octopus", "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver",
    "rhino", "rooster", "saxophone", "schooner", "scissors", "scorpion", "sea_horse", "snoopy",
    "soccer_ball", "stapler", "starfish", "stegosaurus", "stop_sign", "strawberry",
    "sunflower", "tick", "trilobite", "umbrella", "watch", "water_lilly", "wheelchair",
    "wild_cat", "windsor_chair", "wrench", "yin_yang",
)

# The classes after "sunflower": the paper's I_op classes of the occlusion-exclusive
# setting (Sec. 4.1.1); the 91 from accordion to sunflower give I_trn and I_tst.
CALTECH101_PAIR_CLASSES = CALTECH101_CLASSES[CALTECH101_CLASSES.index("sunflower") + 1:]


def class_order(names):
    """``names`` in the paper's alphabetical order, case ignored (ties, which the
    archive does not have, by exact spelling)."""
    return sorted(names, key=lambda name: (name.lower(), name))


def _categories_dir(directory):
    """``101_ObjectCategories`` under ``directory``, or ``directory`` itself."""
    directory = Path(directory)
    if directory.name == CATEGORIES and directory.is_dir():
        return directory
    _require_dir(directory / CATEGORIES, CALTECH101_LAYOUT)
    return directory / CATEGORIES


def _images(folder):
    """The image files of a class folder, by name; other files are ignored, and so are
    hidden ones (``._image_0001.jpg`` of archives packed on macOS is no image)."""
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.is_file() and not entry.name.startswith(".")
                  and entry.suffix.lower() in IMAGE_SUFFIXES)


def _draw(class_name, count, train_images, test_images, seed):
    """(train, test) positions in the class's sorted file list: a permutation seeded by
    ``seed`` and the class name (so a class's draw does not depend on which other
    classes are present), its first ``train_images`` and then up to ``test_images``."""
    rng = np.random.default_rng([seed, zlib.crc32(class_name.encode())])
    order = rng.permutation(count)
    train = order[:train_images]
    test = order[train_images:train_images + test_images]
    return np.sort(train), np.sort(test)


def _check_official(folder, class_names):
    missing = sorted(set(CALTECH101_CLASSES) - set(class_names))
    extra = sorted(set(class_names) - set(CALTECH101_CLASSES))
    if not missing and not extra:
        return
    said = []
    for what, names in (("lacks", missing), ("has other", extra)):
        if names:
            shown = ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")
            said.append(f"{what} {len(names)} class folder(s): {shown}")
    warnings.warn(f"{folder} {' and '.join(said)}: not the 101 Caltech-101 classes, so the "
                  "class indices and the paper's class split (CALTECH101_PAIR_CLASSES) do not "
                  "match the paper's", UserWarning, stacklevel=3)


def read_caltech101(directory, train_images=30, test_images=50, split_seed=0,
                    name="caltech101"):
    """Caltech-101: 101 object categories (``BACKGROUND_Google`` left out; ``Faces`` and
    ``Faces_easy`` kept), classes in alphabetical order with case ignored, and the
    split of Cen et al. (2021), Sec. 4.1.1: per class ``train_images`` training images
    drawn at random and up to ``test_images`` test images drawn from the rest (30 and
    50 in the paper), with ``split_seed`` fixed, the same for every run. A class with
    no image left to test on is an error; a folder set other than the official 101
    classes is read, with a warning."""
    for flag, value in (("--caltech-train-images", train_images),
                        ("--caltech-test-images", test_images)):
        if value < 1:
            raise ValueError(f"{flag} must be positive, got {value}")
    folder = _categories_dir(directory)
    class_names = class_order(
        entry.name for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != BACKGROUND)
    if not class_names:
        raise UserError(f"{folder} has no class folders; expected {CALTECH101_LAYOUT}")
    _check_official(folder, class_names)
    chosen = {"train": ([], []), "test": ([], [])}
    for label, class_name in enumerate(class_names):
        files = _images(folder / class_name)
        if not files:
            raise UserError(f"class folder {folder / class_name} holds no images "
                            f"({', '.join(IMAGE_SUFFIXES)}); expected {CALTECH101_LAYOUT}")
        if len(files) <= train_images:
            raise UserError(
                f"class folder {folder / class_name} holds {len(files)} images, and "
                f"--caltech-train-images {train_images} leaves none for the test set")
        drawn = _draw(class_name, len(files), train_images, test_images, split_seed)
        for (paths, labels), positions in zip(chosen.values(), drawn):
            paths += [str(folder / class_name / files[position]) for position in positions]
            labels += [label] * len(positions)
    parts = {part: Part(None, np.array(labels, np.int64), np.array(paths))
             for part, (paths, labels) in chosen.items()}
    return _dataset(name, class_names, parts, folder)
