"""Official on-disk dataset layouts -> lists of images (files or arrays) and labels.

A reader checks the layout and the annotations and returns a ``Dataset`` of parts;
it decodes no image (``pipeline.prepare`` does, in parallel). Every problem a user
can cause - a missing folder or file, an unknown label, a class index out of range,
an empty class - is a ``UserError`` naming the path (and line) and the layout
expected. Layouts and where to obtain each dataset: ``data/README.md``.

One module per official layout, as torchvision does:

- ``base``: the ``Part`` and ``Dataset`` records, ``IMAGE_SUFFIXES`` and the shared
  checks (missing folder or file, listed images that do not exist, empty classes);
- ``manifest``: the toolkit's CSV manifest (``read_manifest``), shared by
  ``egofoodplaces`` and ``folder``;
- ``fashion_mnist``: Fashion-MNIST's gzipped IDX files (read and write);
- ``cars``: Stanford Cars, images and devkit ``.mat`` annotations;
- ``aircraft``: FGVC-Aircraft 2013b, images and split text files;
- ``flowers``: Oxford Flowers 102, images and ``.mat`` labels and split;
- ``cub``: CUB-200-2011, images and its text files;
- ``caltech101``: Caltech-101, class folders, split as the feature-augmentation
  paper does (30 training, at most 50 test images per class);
- ``egofoodplaces``: EgoFoodPlaces from a manifest with events, split by event;
- ``folder``: any dataset as class folders or a manifest.

Every public name is re-exported here (``from playing_distraction.layouts import
read_cars``). This package does not import TensorFlow.
"""

from .aircraft import AIRCRAFT_BANNER_ROWS, AIRCRAFT_LAYOUT, AIRCRAFT_LEVELS, read_aircraft
from .base import IMAGE_SUFFIXES, Dataset, Part
from .caltech101 import (
    CALTECH101_CLASSES,
    CALTECH101_LAYOUT,
    CALTECH101_PAIR_CLASSES,
    read_caltech101,
)
from .cars import CARS_LAYOUT, read_cars
from .cub import CUB_LAYOUT, read_cub
from .egofoodplaces import read_egofoodplaces
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    load_fashion_mnist,
    read_fashion_mnist,
    read_idx,
    write_fashion_mnist,
    write_idx,
)
from .flowers import FLOWERS_LAYOUT, read_flowers
from .folder import FOLDER_LAYOUT, read_folder
from .manifest import MANIFEST, SPLIT_NAMES, ManifestRow, read_manifest

__all__ = [
    "AIRCRAFT_BANNER_ROWS",
    "AIRCRAFT_LAYOUT",
    "AIRCRAFT_LEVELS",
    "CALTECH101_CLASSES",
    "CALTECH101_LAYOUT",
    "CALTECH101_PAIR_CLASSES",
    "CARS_LAYOUT",
    "CUB_LAYOUT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FLOWERS_LAYOUT",
    "FOLDER_LAYOUT",
    "IMAGE_SUFFIXES",
    "MANIFEST",
    "SPLIT_NAMES",
    "Dataset",
    "ManifestRow",
    "Part",
    "load_fashion_mnist",
    "read_aircraft",
    "read_caltech101",
    "read_cars",
    "read_cub",
    "read_egofoodplaces",
    "read_fashion_mnist",
    "read_flowers",
    "read_folder",
    "read_idx",
    "read_manifest",
    "write_fashion_mnist",
    "write_idx",
]
