"""The dataset registry: names -> layout readers, default folders and defaults.

``load_dataset(name, data_dir, classes, **options)`` reads a dataset in its official layout
(``layouts/``, one module per layout) and returns a ``layouts.Dataset`` of official
parts; the validation part is carved later from the official training set
(``splits.py``) unless the dataset defines its own. Layouts and sources: ``data/README.md``.

This module does not import TensorFlow.
"""

import dataclasses
import functools
from pathlib import Path

from . import layouts
from .errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset and the defaults that suit it.

    default_backbone / default_epochs: used where the flag is not given; the embedded
    demo uses the small CNN and a few epochs so that it runs on a CPU. image_size:
    the input size the paper used for this dataset (None: the backbone's). oversample:
    default k of class oversampling (0: none). options: the config fields the reader
    takes as keyword arguments. pair_classes: the classes a paper draws
    occlusion-exclusive image pairs from (``--method feataug``; PAPERS.md §5).
    """

    name: str
    reader: object
    default_dir: str
    default_backbone: str
    default_epochs: int
    description: str
    image_size: int | None = None
    oversample: int = 0
    options: tuple = ()
    pair_classes: tuple = ()


# The paper trains until validation accuracy has not improved for 30 epochs (its
# Table 2 reports up to 130 epochs); 300 is a ceiling that early stopping reaches first.
_PAPER_EPOCHS = 300

DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "fashion-mnist-mini",
            functools.partial(layouts.read_fashion_mnist, name="fashion-mnist-mini"),
            "data/fashion-mnist-mini", "small_cnn", 6,
            "embedded default: a class-balanced subset of real Fashion-MNIST "
            "(6,000 train / 1,000 test, MIT licence), committed in the repository",
        ),
        DatasetSpec(
            "fashion-mnist", layouts.read_fashion_mnist, "data/fashion-mnist", "small_cnn", 30,
            "full Fashion-MNIST (60,000 / 10,000) from its four IDX files, e.g. "
            "--data-dir /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)",
        ),
        DatasetSpec(
            "cars", layouts.read_cars, "data/cars", "resnet50", _PAPER_EPOCHS,
            "Stanford Cars (196 classes, 8,144 train / 8,041 test) in its official layout",
            options=("crop_to_box",),
        ),
        DatasetSpec(
            "aircraft", layouts.read_aircraft, "data/aircraft", "resnet50", _PAPER_EPOCHS,
            "FGVC-Aircraft 2013b (100 variants, 6,667 trainval / 3,333 test)",
            options=("aircraft_level", "remove_banner"),
        ),
        DatasetSpec(
            "flowers", layouts.read_flowers, "data/flowers", "resnet50", _PAPER_EPOCHS,
            "Oxford Flowers 102 (102 classes, 1,020 train / 1,020 validation / 6,149 test) "
            "in its official layout (jpg/, imagelabels.mat, setid.mat)",
        ),
        DatasetSpec(
            "cub", layouts.read_cub, "data/cub", "resnet50", _PAPER_EPOCHS,
            "CUB-200-2011 birds (200 classes, 5,994 train / 5,794 test) in its official "
            "layout (CUB_200_2011/ with images.txt and its other text files)",
        ),
        # Cen et al. (2021, Sec. 4.1.1; PAPERS.md §5) fine-tune a ResNet18, which
        # keras.applications lacks: resnet50 is the nearest registered backbone. They
        # resize to 224 x 224 but give no schedule: the toolkit's early stopping on
        # validation accuracy decides, under the same 300-epoch ceiling as the others.
        DatasetSpec(
            "caltech101", layouts.read_caltech101, "data/caltech101", "resnet50",
            _PAPER_EPOCHS,
            "Caltech-101 (101 classes, BACKGROUND_Google left out) in its official layout "
            "(101_ObjectCategories/<class>/); the feature-augmentation paper's split, per "
            "class 30 training and at most 50 test images drawn with a fixed seed; 224 px; "
            "resnet50 by default (the paper's ResNet18 is not in keras.applications)",
            image_size=224, options=("caltech_train_images", "caltech_test_images"),
            pair_classes=layouts.CALTECH101_PAIR_CLASSES,
        ),
        DatasetSpec(
            "egofoodplaces", layouts.read_egofoodplaces, "data/egofoodplaces", "resnet50",
            _PAPER_EPOCHS,
            "EgoFoodPlaces (15 places) from a manifest.csv path,label,event[,split]; "
            "split by events, 250 px, classes oversampled to the 4th largest",
            image_size=250, oversample=4, options=("event_split",),
        ),
        DatasetSpec(
            "folder", layouts.read_folder, "data/folder", "resnet50", _PAPER_EPOCHS,
            "any dataset as train/<class>/ and test/<class>/ folders, or a manifest.csv "
            "path,label,split",
        ),
    )
}

# Config field -> reader keyword, where the names differ.
_READER_ARGUMENTS = {"aircraft_level": "level", "caltech_train_images": "train_images",
                     "caltech_test_images": "test_images"}


def get_dataset_spec(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r} (available: {', '.join(DATASETS)})") from None


def resolve_data_dir(spec, data_dir=None):
    """An explicit --data-dir; otherwise ``data/<name>`` in the working directory if it
    exists there, else in the project checkout. Absolute, so that the image paths
    recorded with a run stay valid from any folder."""
    if data_dir:
        return Path(data_dir).absolute()
    local = Path(spec.default_dir)
    return local.absolute() if local.exists() else PROJECT_ROOT / spec.default_dir


def load_dataset(name, data_dir=None, classes=None, **options):
    """Read a registered dataset; ``options`` are the spec's reader options (unset
    ones, given as None, keep the reader's defaults); ``classes``: only these classes
    (``layouts.Dataset.subset``), or all."""
    spec = get_dataset_spec(name)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise TypeError(f"dataset {name} takes no option(s) {', '.join(sorted(unknown))}")
    arguments = {_READER_ARGUMENTS.get(key, key): value
                 for key, value in options.items() if value is not None}
    data = spec.reader(resolve_data_dir(spec, data_dir), **arguments)
    return data if classes is None else data.subset(classes)
