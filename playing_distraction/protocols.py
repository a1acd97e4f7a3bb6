"""Protocols: the runs an experiment trains, on data decoded once.

Today's protocol is the papers' (Morales et al., Sec. 4.3; PAPERS.md §1): seeded
repetitions, each with its own split (``splits.OfficialSplit``) and run folder,
reported as mean ± std by evaluate.py.
"""

import dataclasses
from pathlib import Path

from .datasets import get_dataset_spec, load_dataset, resolve_data_dir
from .config import shot_count
from .errors import UserError
from .splits import KShotSplit, min_class_size
from .pipeline import prepare
from .training import run_training


@dataclasses.dataclass
class PreparedData:
    """A dataset decoded once at the model's input size, shared by repetitions.
    classes: the indices of the chosen classes in the dataset's list (``--classes``),
    or None for all."""

    name: str
    class_names: tuple
    parts: dict
    path: Path
    classes: tuple | None = None

    @property
    def skipped(self):
        return [{"split": name, "path": path, "reason": reason}
                for name, part in self.parts.items() for path, reason in part.skipped]


def prepare_data(config, log=None):
    """Read the dataset and decode every image once (see ``pipeline.prepare``)."""
    data = load_dataset(config.dataset, config.data_dir, config.classes,
                        **config.dataset_options())
    if data.validation is None and data.train.events is not None and config.validation_fraction:
        # A share of images would put parts of one event in training and validation.
        raise UserError(
            f"dataset {config.dataset} has no validation split by events; give validation a "
            "share in --event-split (or val rows in the manifest's split column), or pass "
            "--validation-fraction 0")
    parts = {
        name: prepare(part, config.image_size, config.cache_dir, config.on_bad_image,
                      f"{config.dataset} {name}", log)
        for name, part in data.parts().items()
    }
    path = resolve_data_dir(get_dataset_spec(config.dataset), config.data_dir)
    return PreparedData(data.name, data.class_names, parts, path, data.class_indices)


def run_protocol(config, log=print, given=None):
    """Train ``config.repeats`` repetitions with seeds seed, seed + 1, ...; with
    ``shots``, that many for every k of the grid (k outer, seeds inner). The data are
    decoded once. Returns the run folders, in that order. given: the fields the
    command line set (``config.given_fields``), for resuming (``run_training``)."""
    classes = config.method_options().training_classes(config)
    if classes != config.classes:
        config = dataclasses.replace(config, classes=classes)
    data = prepare_data(config, log)
    if config.shots:
        check_shots(config.shots, data)
    grid = [(shot,) for shot in config.shots] if config.shots else [None]
    plan = [(shots, config.seed + number) for shots in grid for number in range(config.repeats)]
    run_dirs = []
    for position, (shots, seed) in enumerate(plan, start=1):
        if log:
            k = "" if shots is None else f", k = {shots[0]}"
            log(f"run {position} of {len(plan)} (seed {seed}{k})")
        run_dirs.append(run_training(dataclasses.replace(config, shots=shots, seed=seed),
                                     data, log, given))
    return run_dirs


def check_shots(shots, data):
    """UserError, before any run, when the smallest class of the k-shot pool cannot
    give the largest k of the grid besides its validation and test images."""
    smallest = min_class_size([part.labels for part in data.parts.values()])
    validation, test = KShotSplit.validation, KShotSplit.test_images  # the defaults
    held_out = validation + test
    largest = max(shots, key=lambda shot: shot_count(shot) or 1)  # "all": at least 1
    needed = (shot_count(largest) or 1) + held_out
    if smallest < needed:
        allowed = (f"largest k it allows: {smallest - held_out}" if smallest > held_out
                   else "no k fits")
        raise UserError(
            f"--shots {largest}: the smallest class has {smallest} images, and "
            f"{shot_count(largest) or 1} training + {validation} validation + "
            f"{test} test images per class are needed ({allowed})")
