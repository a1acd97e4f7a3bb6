"""Splits and sampling over labels: validation split, event split, oversampling, k-shot,
and the split object a run records.

Functions take integer labels and return index arrays (sorted, so that items keep
their file order), which ``pipeline.make_dataset`` reads from the decoded images
without copying them. All are seeded: the same seed gives the same indices.

This module does not import TensorFlow.
"""

import dataclasses
import typing

import numpy as np

from .errors import UserError


def split_train_validation(labels, fraction, seed):
    """Seeded, class-stratified split of the official training set (PAPERS.md §1,
    Sec. 4.3: 75 % train / 25 % validation). Returns (train, validation) indices;
    validation is empty when ``fraction`` is 0."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if fraction == 0:
        return indices, indices[:0]
    try:
        train, validation = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as error:
        raise UserError(f"cannot split a {fraction:.0%} validation set: {error}") from None
    return np.sort(train), np.sort(validation)


def oversample(labels, k, seed):
    """Training indices with every class smaller than the k-th largest class topped
    up to that class's count (PAPERS.md §1, EgoFoodPlaces; k = 4 in the paper).

    A class is repeated whole as often as it fits, and the remainder is drawn without
    replacement, so no image is used more than once above the others. k = 0: no change.
    """
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    if k == 0:
        return indices
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    target = np.sort(counts[present])[::-1][min(k, len(present)) - 1]
    rng = np.random.default_rng(seed)
    extra = []
    for label in present:
        members = np.flatnonzero(labels == label)
        missing = target - len(members)
        if missing <= 0:
            continue
        whole, rest = divmod(missing, len(members))
        extra += [np.tile(members, whole), rng.choice(members, rest, replace=False)]
    return np.sort(np.concatenate([indices, *extra])) if extra else indices


def split_by_events(part, fractions, seed, source="the manifest"):
    """Split a ``layouts.Part`` with ``events`` into train / validation / test parts so
    that no event is in two splits (EgoFoodPlaces: 70/10/20 of the images).

    Events are visited in a seeded random order, largest first, and each goes to the
    split whose per-class image counts it brings closest to their targets, so the
    splits are as class-stratified as whole events allow.
    """
    fractions = np.asarray(fractions, np.float64)
    events, event_of = np.unique(part.events, return_inverse=True)
    if "" in events:
        raise UserError(f"{source}: every image needs an event id for an event split")
    num_classes = int(part.labels.max()) + 1
    per_event = np.zeros((len(events), num_classes))
    np.add.at(per_event, (event_of, part.labels), 1)
    target = fractions[:, None] * per_event.sum(axis=0)[None, :]
    current = np.zeros_like(target)
    order = np.random.default_rng(seed).permutation(len(events))
    order = order[np.argsort(-per_event[order].sum(axis=1), kind="stable")]
    split_of_event = np.empty(len(events), np.int64)
    for event in order:
        counts = per_event[event]
        # Change of the squared distance to the targets if the event joins each split.
        cost = ((current + counts - target) ** 2 - (current - target) ** 2).sum(axis=1)
        cost[fractions == 0] = np.inf
        chosen = int(np.argmin(cost))
        split_of_event[event] = chosen
        current[chosen] += counts
    split_of_image = split_of_event[event_of]
    names = ("train", "validation", "test")
    return {name: part.take(np.flatnonzero(split_of_image == number))
            for number, name in enumerate(names) if np.any(split_of_image == number)}


def k_shot_split(labels, k, seed, validation=5, test=5):
    """k training, ``validation`` validation and ``test`` test images of every class,
    drawn without replacement (the few-shot protocol of PAPERS.md §2): per class one
    seeded permutation, whose first images are the validation ones, the next the test
    ones and the following k the training ones (k None: all the rest). Returns three
    disjoint sorted index arrays; a class with too few images is an error."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = ([], [], [])
    held_out = validation + test
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < (k or 1) + held_out:
            raise UserError(
                f"--shots {shot_label(k)}: class {label} has {len(members)} images, and "
                f"{shot_label(k)}-shot needs {k or 1} + {validation} + {test}")
        drawn = rng.permutation(members)
        stop = len(drawn) if k is None else held_out + k
        for target, part in zip(chosen, (drawn[held_out:stop], drawn[:validation],
                                         drawn[validation:held_out])):
            target.append(part)
    return tuple(np.sort(np.concatenate(group)) for group in chosen)


def per_class_subset(labels, per_class, seed):
    """Sorted indices of ``per_class`` items of every class, drawn without replacement;
    a class with fewer items is an error."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise UserError(f"--train-per-class {per_class}: class {label} has only "
                            f"{len(members)} training images")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def balanced_subset(part, per_class, seed):
    """``per_class`` items of every class of a ``layouts.Part``, drawn without
    replacement, in file order (how the embedded Fashion-MNIST subset is made)."""
    return part.take(per_class_subset(part.labels, per_class, seed))


# ------------------------------------------------------------------ the split of a run

# The seed of the --train-per-class draw: fixed, so every repetition has the same images.
TRAIN_SUBSET_SEED = 0


@dataclasses.dataclass(frozen=True)
class OfficialSplit:
    """The split of one run under the papers' protocol (Morales et al., Sec. 4.3;
    PAPERS.md §1): the official test set; validation = the dataset's own validation
    split where it has one, else a seeded, class-stratified ``validation_fraction`` of
    the official training set; classes oversampled in the training indices only.

    Written into the run's config.json (``to_dict``), so evaluate.py re-creates
    exactly the test set the run was tested on (``test``). Another protocol (a k-shot
    draw, say) is another class with the same three methods, registered in ``SPLITS``.

    train_per_class: the official training set is first cut to this many images of
    every class, drawn with a fixed seed (``TRAIN_SUBSET_SEED``), the same for every
    repetition, so that repetitions and methods learn from the same images; the
    validation split is then carved from them.
    """

    validation_fraction: float
    seed: int
    oversample: int = 0
    train_per_class: int | None = None

    kind: typing.ClassVar[str] = "official"
    # The dataset parts evaluate.py must decode to re-create the test set.
    test_parts: typing.ClassVar[tuple] = ("test",)

    def assign(self, parts):
        """{"train", "validation", "test"} -> (part, indices or None) from the decoded
        parts ({name: object with ``labels``}); validation is None without images."""
        train = parts["train"]
        pool = np.arange(len(train.labels))
        if self.train_per_class:
            pool = per_class_subset(train.labels, self.train_per_class, TRAIN_SUBSET_SEED)
        if "validation" in parts:
            train_idx, validation = pool, (parts["validation"], None)
        else:
            train_idx, val_idx = split_train_validation(
                train.labels[pool], self.validation_fraction, self.seed)
            train_idx, val_idx = pool[train_idx], pool[val_idx]
            validation = (train, val_idx) if len(val_idx) else None
        train_idx = train_idx[oversample(train.labels[train_idx], self.oversample, self.seed)]
        return {"train": (train, train_idx), "validation": validation, "test": self.test(parts)}

    @classmethod
    def from_config(cls, config):
        """The split of a run with the config values ``config`` (its flags, or a
        config.json written before the split was recorded in it)."""
        return cls(config.get("validation_fraction", 0.25), config.get("seed", 0),
                   config.get("oversample") or 0, config.get("train_per_class"))

    def test(self, parts):
        """The test set alone: (part, indices or None); needs only ``test_parts``."""
        return parts["test"], None

    def to_dict(self):
        return {"kind": self.kind, **dataclasses.asdict(self)}


# The parts a k-shot pool is made of, in this order.
POOL_PARTS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class KShotSplit:
    """The k-shot protocol of the hallucinated-saliency paper (Sec. 4.1; PAPERS.md §2):
    the pool of a class is all of its images (the dataset's parts together, as the
    protocol makes its own test split); per seed, ``validation`` and ``test`` images of
    every class are drawn first, then ``shots`` training images from the rest (None:
    all the rest, the paper's "K").

    The draw is one seeded permutation per class, so for one seed the test and
    validation images are the same at every k, and the training images of a smaller
    k are among those of a larger one. Items are named ``<part>:<item>``, since the
    pool spans parts whose items may share names.
    """

    shots: int | None
    seed: int
    validation: int = 5
    test_images: int = 5

    kind: typing.ClassVar[str] = "k-shot"
    test_parts: typing.ClassVar[tuple] = POOL_PARTS

    def assign(self, parts):
        pool = _Pool(parts)
        train, validation, test = self._draw(pool.labels)
        return {"train": (pool.take(train), None), "validation": (pool.take(validation), None),
                "test": (pool.take(test), None)}

    def test(self, parts):
        pool = _Pool(parts)
        return pool.take(self._draw(pool.labels)[2]), None

    def _draw(self, labels):
        return k_shot_split(labels, self.shots, self.seed, self.validation, self.test_images)

    def to_dict(self):
        return {"kind": self.kind, **dataclasses.asdict(self)}


class _Pool:
    """The decoded parts ({name: ``pipeline.Prepared``}) seen as one, in ``POOL_PARTS``
    order; ``take`` copies only the images it takes, and names items
    ``<part>:<item>``."""

    def __init__(self, parts):
        self.parts = [(name, parts[name]) for name in POOL_PARTS if name in parts]
        self.labels = np.concatenate([part.labels for _, part in self.parts])
        self.starts = np.cumsum([0] + [len(part.labels) for _, part in self.parts])

    def take(self, indices):
        pieces = []
        for (name, part), start, stop in zip(self.parts, self.starts, self.starts[1:]):
            inside = indices[(indices >= start) & (indices < stop)] - start
            if len(inside):
                taken = part.take(inside)
                taken.items = np.asarray([f"{name}:{item}" for item in taken.items], object)
                pieces.append(taken)
        first = pieces[0]
        return type(first)(np.concatenate([piece.images for piece in pieces]),
                           np.concatenate([piece.labels for piece in pieces]), [],
                           np.concatenate([piece.items for piece in pieces]))


def shot_label(shots):
    """A k-shot run's k as shown: ``5``, or ``all`` (None)."""
    return "all" if shots is None else str(shots)


def shot_order(shots):
    """Sort key of k: increasing, "all" last."""
    return float("inf") if shots is None else shots


def shots_tag(shots):
    """The run-name part of a k-shot run: ``k5``, or ``kall``."""
    return f"k{shot_label(shots)}"


def min_class_size(label_arrays):
    """The image count of the smallest class over all the given label arrays together."""
    counts = np.bincount(np.concatenate([np.asarray(labels) for labels in label_arrays]))
    return int(counts[counts > 0].min())


SPLITS = {cls.kind: cls for cls in (OfficialSplit, KShotSplit)}


def split_of_run(config):
    """The split a run's config.json records, as an object; runs written before the
    split was recorded used the official split of their validation fraction and seed."""
    values = config.get("split")
    if values is None:
        return OfficialSplit.from_config(config)
    values = dict(values)
    kind = values.pop("kind", None)
    if kind not in SPLITS:
        raise UserError(f"unknown split kind {kind!r} in the run's config.json (known: "
                        f"{', '.join(SPLITS)}); was it written by a newer version?")
    try:
        return SPLITS[kind](**values)
    except TypeError as error:
        raise UserError(f"the split in the run's config.json does not fit: {error}") from None
