"""The clean/occluded image pairs I_op of deep feature augmentation (Cen et al., 2021,
Sec. 4.1.1-4.1.2, Tables 1 and 3; PAPERS.md §5).

- Occlusion-exclusive (I_op ∩ I_trn = ∅): ``pair_images`` clean images per class,
  drawn from the official training images of classes that are not trained on
  (``--pair-classes``; Caltech-101: the paper's last 10 classes).
- Occlusion-inclusive (I_op ⊂ I_trn): ``pair_images`` per class, drawn from the run's
  training images of ``pair_class_count`` training classes drawn at random (or the
  ``--pair-classes`` given); with ``train_on_pairs`` (the paper's "F" models) the
  occluded pair images join the training set.

Every clean image is occluded by every pattern of the chosen subset (Full, 10C,
20C; ``occluders.py``). The draws depend on the run's seed alone. This module does
not import TensorFlow.
"""

import dataclasses

import numpy as np

from . import occluders as occluders_module
from .datasets import load_dataset
from .errors import UserError
from .layouts.base import find_class
from .pipeline import Prepared, prepare


@dataclasses.dataclass
class PairSet:
    """Clean images (N, H, W, 3) uint8 with their labels and items, and their
    occluded versions (N × P) in clean-major order: ``occluded[j * P + p]`` is clean
    image j under pattern p."""

    setting: str
    class_names: tuple
    clean: np.ndarray
    labels: np.ndarray
    items: list
    patterns: list
    occluded: np.ndarray
    occluder_digests: dict

    def __len__(self):
        return len(self.occluded)

    @property
    def pair_of(self):
        """The index of the clean image of every occluded image."""
        return np.repeat(np.arange(len(self.clean)), len(self.patterns))

    def record(self):
        """What config.json keeps of the pair set: which images, which patterns."""
        return {"pair_set": {
            "setting": self.setting, "classes": list(self.class_names),
            "items": [str(item) for item in self.items],
            "patterns": [pattern.to_dict() for pattern in self.patterns],
            "occluders_sha256": self.occluder_digests}}


def chosen_patterns(options):
    """(occluders, patterns) of the feature-augmentation options ``options``: the
    subset ``pair_patterns`` of the patterns of ``occluders``, ``occlusion_ratios``,
    ``random_positions`` and ``pattern_seed``."""
    shapes = occluders_module.load_occluders(options.occluders)
    try:
        patterns = occluders_module.make_patterns(
            shapes, tuple(options.occlusion_ratios), options.random_positions,
            options.pattern_seed)
        return shapes, occluders_module.pattern_subset(patterns, options.pair_patterns)
    except ValueError as error:
        raise UserError(str(error)) from None


def occlude_all(clean, patterns, shapes):
    """uint8 (N × P, H, W, 3): every clean uint8 image under every pattern, clean-major."""
    height, width = clean.shape[1:3]
    images = np.asarray(clean, np.float32) / 255.0
    occluded = np.empty((len(clean), len(patterns), *clean.shape[1:]), np.uint8)
    for p, pattern in enumerate(patterns):
        rgb, mask = occluders_module.render(pattern, shapes, height, width)
        pasted = occluders_module.occlude_numpy(images, rgb, mask)
        occluded[:, p] = np.clip(np.round(pasted * 255.0), 0, 255).astype(np.uint8)
    return occluded.reshape(-1, *clean.shape[1:])


def _draw(labels, classes, count, rng, where):
    """``count`` positions per class of ``classes`` in ``labels``, drawn without
    replacement, class by class; UserError if a class has fewer."""
    chosen = []
    for label, name in classes:
        positions = np.flatnonzero(labels == label)
        if len(positions) < count:
            raise UserError(f"--pair-images {count}: class {name!r} has only "
                            f"{len(positions)} {where}")
        chosen.append(np.sort(rng.choice(positions, count, replace=False)))
    return np.concatenate(chosen)


def draw_pairs(options, config, data, train_split, log=None):
    """The run's ``PairSet`` for the feature-augmentation options ``options`` (resolved),
    the run ``config``, its ``protocols.PreparedData`` and its training split
    ``(Prepared, indices)``."""
    shapes, patterns = chosen_patterns(options)
    rng = np.random.default_rng([config.seed, 5])
    if options.pairs == "exclusive":
        pair_data = load_dataset(config.dataset, str(data.path), options.pair_classes,
                                 **config.dataset_options())
        refuse_trained_pairs(zip(pair_data.class_names, pair_data.class_indices),
                             set(data.classes if data.classes is not None
                                 else range(len(data.class_names))))
        part = pair_data.train
        classes = list(enumerate(pair_data.class_names))
        picked = _draw(part.labels, classes, options.pair_images, rng,
                       "official training images")
        prepared = prepare(part.take(picked), config.image_size, None, config.on_bad_image)
        if len(prepared) < len(picked):
            raise UserError(f"a pair image could not be decoded: {prepared.skipped[0][0]}")
        # Items as the dataset names them: the files, or positions in its official
        # training part (a class subset keeps them in ``positions``).
        positions = picked if part.positions is None else part.positions[picked]
        items = (list(part.paths[picked]) if part.paths is not None
                 else [f"train {position}" for position in positions])
        clean, labels, names = prepared.images, prepared.labels, pair_data.class_names
    else:
        train, indices = train_split
        # Each training image once (oversampling repeats some).
        indices = np.arange(len(train)) if indices is None else np.unique(indices)
        labels = train.labels[indices]
        present = np.unique(labels)
        if options.pair_classes is not None:
            wanted = [_training_class(data.class_names, name) for name in options.pair_classes]
        else:
            count = min(options.pair_class_count, len(present))
            wanted = sorted(int(label) for label in rng.choice(present, count, replace=False))
        classes = [(label, data.class_names[label]) for label in wanted]
        picked = indices[_draw(labels, classes, options.pair_images, rng, "training images")]
        clean, labels = train.images[picked], train.labels[picked]
        items = [str(item) for item in np.asarray(train.items)[picked]]
        names = tuple(name for _, name in classes)
    if log:
        log(f"pairs: {len(clean)} clean images of {len(names)} classes × {len(patterns)} "
            f"occlusion patterns ({options.pairs})")
    return PairSet(options.pairs, tuple(names), np.asarray(clean), np.asarray(labels), items,
                   patterns, occlude_all(np.asarray(clean), patterns, shapes),
                   {shape.name: shape.sha256 for shape in shapes})


def refuse_trained_pairs(pair_classes, trained):
    """UserError if a pair class - (name as given, index in the dataset) - is among
    the ``trained`` dataset indices: occlusion-exclusive pairs come from classes that
    are not trained on."""
    overlap = [str(name) for name, index in pair_classes if index in trained]
    if overlap:
        raise UserError(
            f"--pair-classes {' '.join(overlap)}: trained on as well, but "
            "occlusion-exclusive pairs (--pairs exclusive) come from classes that are not "
            "trained on; leave them out of --classes, or use --pairs inclusive")


def _training_class(class_names, name):
    """The label of a training class given by name or index among the run's classes."""
    label = find_class(class_names, str(name))
    if label is not None:
        return label
    raise UserError(f"--pair-classes {name}: not one of the training classes "
                    f"({', '.join(class_names)}) that inclusive pairs are drawn from")


def with_occluded_pairs(train_split, pairs):
    """The training split with the occluded pair images added (the "F" models'
    I_trn = I_trn^c ∪ I_op^o), as ``(Prepared, indices)``."""
    train, indices = train_split
    if indices is None:
        indices = np.arange(len(train))
    occluded_labels = np.repeat(pairs.labels, len(pairs.patterns))
    items = [f"{item} occluded {pattern.name}" for item in pairs.items
             for pattern in pairs.patterns]
    joined = Prepared(np.concatenate([train.images, pairs.occluded]),
                      np.concatenate([train.labels, occluded_labels.astype(train.labels.dtype)]),
                      list(train.skipped), np.concatenate([np.asarray(train.items, object),
                                                           np.asarray(items, object)]))
    return joined, np.concatenate([indices, len(train) + np.arange(len(pairs.occluded))])
