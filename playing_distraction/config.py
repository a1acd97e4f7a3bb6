"""Training configuration: one dataclass field per command-line flag.

``TrainConfig`` is the shared settings below (data, model, optimization,
augmentation, protocol and run folder, speed) plus the fields of every registered
method's and add-on's options (``methods.py``), assembled from the registry: a new
method brings its flags, their ``--help`` group and their checks with it. The
config stays flat, as config.json is, so runs saved by every version read back.

Defaults are the papers': for distraction (Morales et al., 2021, Sec. 4.2; PAPERS.md
§1) Adam with lr 5e-5, beta_1 0.9, beta_2 0.999, epsilon 7e-7; batch 16; early
stopping on validation accuracy with patience 30; 25 % stratified validation split
(the methods' own defaults are in ``methods.py``). Fields left at None are resolved
from the dataset and backbone registries by ``resolved()`` (and the number of
classes by ``for_classes()``); the resolved config is saved with every run.

This module does not import TensorFlow, so a bad flag is reported at once.
"""

import argparse
import dataclasses
import functools
import hashlib
import math
import os
import typing

from .backbones import BACKBONES, check_weights_file, get_backbone
from .choices import STRATEGIES
from .datasets import DATASETS, get_dataset_spec
from .methods import ADDONS, METHODS, flag
from .splits import shots_tag

SWITCHES = ("auto", "on", "off")
# The names of the weight sets shipped with the package (``--weights NAME``).
SHIPPED_WEIGHTS = tuple(spec.pretrained for spec in BACKBONES.values() if spec.pretrained)
_SHIPPED_HELP = ", ".join(f"{spec.pretrained} for {spec.name}"
                          for spec in BACKBONES.values() if spec.pretrained)
OPTIMIZERS = ("adam", "sgd")


def _field(default, help, group, **options):
    return dataclasses.field(default=default, metadata={"help": help, "group": group, **options})


# The --help groups of the shared settings, in the order they are shown.
_data = functools.partial(_field, group="data")
_model = functools.partial(_field, group="model")
_optimization = functools.partial(_field, group="optimization")
_augment = functools.partial(_field, group="augmentation")
_run = functools.partial(_field, group="protocol and run folder")
_speed = functools.partial(_field, group="speed and devices")


# Shared settings whose default a method changes (``Method.shared_defaults``), and
# their defaults otherwise; fields left at None resolve to them.
_OPTIMIZATION_DEFAULTS = {"optimizer": "adam", "learning_rate": 5e-5, "weight_decay": 0.0}


def _method_defaults_help(name):
    """"; <value> for --method <m>" for every method that changes the default of ``name``."""
    return "".join(f"; {cls.shared_defaults[name]} for --method {cls.name}"
                   for cls in METHODS.values() if name in cls.shared_defaults)


@dataclasses.dataclass
class SharedConfig:
    """The settings every method shares; ``TrainConfig`` adds the methods' options."""

    dataset: str = _data(
        "fashion-mnist-mini", "dataset name", choices=tuple(DATASETS))
    data_dir: str | None = _data(None, "dataset folder (default: data/<dataset>)")
    classes: tuple[str, ...] | None = _data(
        None, "train and test on these classes only, by name or index in the dataset's class "
        "list, relabelled 0..n-1 in this order (at least two; default: every class)",
        metavar="CLASS")
    train_per_class: int | None = _data(
        None, "train on this many images of every class of the official training set "
        "(the validation split included), drawn once with a fixed seed, the same for every "
        "repetition (default: all)", metavar="N")
    crop_to_box: bool = _data(
        False, "cars: crop every image to its annotated bounding box (off in the paper)")
    aircraft_level: str | None = _data(
        None, "aircraft: label level (default variant, 100 classes)",
        choices=("variant", "family", "manufacturer"))
    remove_banner: bool = _data(
        False, "aircraft: cut the 20-pixel copyright banner from the bottom of every image")
    event_split: tuple[float, float, float] | None = _data(
        None, "egofoodplaces: train, validation and test shares of the split by events "
        "(default 0.7 0.1 0.2; a split column in the manifest takes precedence)",
        metavar=("TRAIN", "VAL", "TEST"))
    caltech_train_images: int | None = _data(
        None, "caltech101: training images drawn per class, once with a fixed seed (default "
        "30, the feature-augmentation paper's; validation is taken out of them)", metavar="N")
    caltech_test_images: int | None = _data(
        None, "caltech101: test images per class, at most, drawn from the rest of the class "
        "(default 50, the paper's)", metavar="N")
    oversample: int | None = _data(
        None, "oversample every class smaller than the k-th largest to its size, training "
        "split only; 0 turns it off (default: 4 for egofoodplaces, else 0)")
    on_bad_image: str = _data(
        "skip", "an image file that cannot be decoded is skipped and counted, or stops the run",
        choices=("skip", "error"))
    cache_dir: str | None = _data(
        None, "keep the decoded, resized images in .npy files in this folder, reused by later "
        "runs (default: in memory)")
    backbone: str | None = _model(
        None, "backbone (default: the dataset's; small_cnn for the Fashion-MNIST sets)",
        choices=tuple(BACKBONES))
    weights: str | None = _model(
        None, "'imagenet', 'none', a weight set shipped for the backbone "
        f"({_SHIPPED_HELP}) or a weights file of the backbone "
        "without its top, e.g. a run's backbone.weights.h5 (default: imagenet where the "
        "backbone has it, else its shipped set)")
    image_size: int | None = _model(
        None, "square input size (default: the dataset's, 250 for egofoodplaces, else the "
        "backbone's)")
    method: str = _model(
        "distraction", "training method; its own flags are in its group below: "
        + "; ".join(f"{name}: {cls.title.split(': ', 1)[-1]}" for name, cls in METHODS.items()),
        choices=tuple(METHODS))
    cam_layer: str | None = _model(
        None, "layer for Grad-CAM, in training (distraction) and in evaluate.py's inspection "
        "(default: the backbone's last convolutional block)")
    epochs: int | None = _optimization(
        None, "maximum number of epochs (default: the dataset's, 6 for the embedded set"
        f"{_method_defaults_help('epochs')})")
    patience: int = _optimization(
        30, "early-stopping patience in epochs, on validation accuracy")
    batch_size: int = _optimization(16, "mini-batch size")
    optimizer: str | None = _optimization(
        None, "optimizer: adam (the papers' Adam, below) or sgd (with --momentum) (default: "
        f"adam{_method_defaults_help('optimizer')})", choices=OPTIMIZERS)
    learning_rate: float | None = _optimization(
        None, f"learning rate (default: 5e-05{_method_defaults_help('learning_rate')})")
    beta_1: float = _optimization(0.9, "Adam beta_1")
    beta_2: float = _optimization(0.999, "Adam beta_2")
    epsilon: float = _optimization(7e-7, "Adam epsilon")
    momentum: float = _optimization(0.9, "SGD momentum")
    weight_decay: float | None = _optimization(
        None, "decoupled weight decay of either optimizer (Keras' weight_decay: each step "
        "shrinks the weights by learning rate x weight decay); 0: none (default: 0"
        f"{_method_defaults_help('weight_decay')})")
    augment: bool = _augment(True, "apply the training augmentation below (--no-augment: none)")
    flip: bool = _augment(True, "augmentation: random horizontal flip")
    rotation: float = _augment(
        40.0, "augmentation: rotation by up to this many degrees either way")
    channel_shift: float = _augment(
        30.0, "augmentation: intensity shift by up to this much either way, on the 0-255 scale")
    brightness: tuple[float, float] = _augment(
        (0.5, 1.5), "augmentation: brightness factor range LOW HIGH (1 1: none)",
        metavar=("LOW", "HIGH"))
    validation_fraction: float = _run(
        0.25, "share of the official training set held out for validation (stratified); "
        "unused where the dataset has its own validation split")
    shots: tuple[str, ...] | None = _run(
        None, "the k-shot protocol (PAPERS.md §2): per class, k training images (or 'all' "
        "the rest) and 5 validation and 5 test images drawn per seed from all of the class's "
        "images; several values run the grid, every k with every seed; a --batch-size above "
        "a run's training images is cut to them (default: the official split)", metavar="K")
    seed: int = _run(0, "seed of the split, the shuffling, the weights and the occlusion draws")
    repeats: int = _run(
        1, "seeded repetitions: seeds SEED, SEED+1, ..., each with its own validation split "
        "and run folder (the paper: 5)")
    resume: bool = _run(
        False, "continue the runs of this command where they stopped: an unfinished run "
        "folder of the same name resumes after its last finished epoch, a finished one is "
        "skipped")
    out_dir: str = _run("models", "folder that receives the run folder")
    run_name: str | None = _run(
        None, "run folder name (default: <dataset>-<method>-<backbone>-seed<seed>, with "
        "<method> the fill or pairwise, and -hnc_<form> if on; "
        "numbered if taken)")
    overwrite: bool = _run(False, "replace an existing run folder of the same name")
    verbose: int = _run(
        2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")
    # Logging settings, as --verbose: they neither name a run nor stop it resuming.
    tensorboard: bool = _run(
        False, "write TensorBoard logs in the run folder's tensorboard/: Keras' epoch "
        "scalars, and panels of validation images with their Grad-CAM and what the method "
        "does to them (tensorboard --logdir models/)")
    tensorboard_images_every: int = _run(
        5, "with --tensorboard: write the image panels every N epochs, and at the first and "
        "last", metavar="N")
    tensorboard_images: int = _run(
        8, "with --tensorboard: validation images in the panels (training images where the "
        "run has no validation split), drawn once from the run's seed", metavar="M")
    jit_compile: str = _speed(
        "auto", "XLA-compile the training step (auto: on when a GPU is present, off under "
        "--strategy mirrored)", choices=SWITCHES)
    mixed_precision: str = _speed(
        "auto", "mixed_float16 training (auto: on when a GPU is present)", choices=SWITCHES)
    steps_per_execution: int = _speed(
        1, "training steps per call into TensorFlow (Keras' steps_per_execution): more "
        "saves Python overhead per step on a GPU; must divide the steps per epoch")
    strategy: str = _speed(
        "none", "mirrored: tf.distribute.MirroredStrategy over every GPU (without one, over "
        "the logical CPU devices); --batch-size stays the global batch", choices=STRATEGIES)
    sync_batchnorm: bool = _speed(
        True, "under --strategy mirrored, BatchNormalization statistics over the global batch, "
        "as on one device (--no-sync-batchnorm: over each replica's share)")

    # ------------------------------------------------------------ the methods

    def method_options(self):
        """The chosen method's options (a ``methods.Method``), from this config's fields."""
        return METHODS[self.method].from_values(self.to_dict())

    def addons(self):
        """The options of every add-on (``methods.Addon``), on or off."""
        return self._options(ADDONS.values())

    def scheme_kwargs(self):
        """Keyword arguments of the add-ons that are on, for the method's scheme."""
        return {key: value for addon in self.addons() for key, value in addon.scheme_kwargs().items()}

    @property
    def method_tag(self):
        """Short name of the method for the run folder (``Method.tag``, extended by the
        add-ons that are on): the fill, pairwise[-ablation], -hnc_<form>, ..."""
        tag = self.method_options().tag()
        for addon in self.addons():
            tag = addon.tag(tag)
        return tag

    @property
    def column(self):
        """The method's column name in evaluate.py's tables."""
        column = self.method_options().column()
        for addon in self.addons():
            column = addon.column(column)
        return column

    @property
    def default_run_name(self):
        dataset = self.dataset
        if self.classes is not None:
            dataset += f"-{classes_tag(self.classes)}"
        if self.train_per_class is not None:
            dataset += f"-n{self.train_per_class}"
        if self.shots is not None and len(self.shots) == 1:
            dataset += f"-{shots_tag(shot_count(self.shots[0]))}"
        return f"{dataset}-{self.method_tag}-{self.backbone}-seed{self.seed}"

    # ------------------------------------------------------------ resolving and checks

    def resolved(self):
        """A copy with every None default filled in, checked; ValueError names the flag."""
        self.check()
        method = self.method_options()
        method.check_shared(self)
        dataset = get_dataset_spec(self.dataset)
        backbone = get_backbone(self.backbone or dataset.default_backbone)
        weights = self.weights or method.default_weights() or backbone.default_weights
        shared = {name: getattr(self, name) if getattr(self, name) is not None
                  else method.shared_defaults.get(name, default)
                  for name, default in _OPTIMIZATION_DEFAULTS.items()}
        config = dataclasses.replace(
            self,
            backbone=backbone.name,
            weights=weights,
            **shared,
            epochs=self.epochs or method.shared_defaults.get("epochs") or dataset.default_epochs,
            image_size=self.image_size or dataset.image_size or backbone.input_size,
            cam_layer=self.cam_layer or backbone.last_conv,
            oversample=((0 if self.shots else dataset.oversample) if self.oversample is None
                        else self.oversample),
        )
        for options in self._all_options():
            config = dataclasses.replace(config, **dataclasses.asdict(
                options.resolve(backbone, active=options.name in (self.method, *ADDONS),
                                dataset=dataset)))
        for name, value in _DATASET_OPTION_DEFAULTS.items():
            if name in dataset.options and getattr(config, name) is None:
                setattr(config, name, value)
        config.check()
        if config.weights == "imagenet" and not backbone.has_imagenet_weights:
            raise ValueError(
                f"--weights imagenet: backbone {backbone.name} has no ImageNet weights "
                "(use --weights none or a weights file)")
        backbone.check_input_size(config.image_size)
        check_weights_file(backbone, config.weights)
        return config

    def _all_options(self):
        return self._options((*METHODS.values(), *ADDONS.values()))

    def _options(self, classes):
        values = self.to_dict()
        return [cls.from_values(values) for cls in classes]

    def check(self):
        """Range and cross-field checks; ValueError with the flag's name."""
        # First, so that it wins over the range checks: NaN fails every comparison,
        # and a NaN or infinite float would otherwise reach training (or a range
        # check's message). Covers every field, the methods' options and tuples too.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
                if isinstance(value, tuple):
                    raise ValueError(f"{flag(field.name)} must be finite numbers, got "
                                     f"{' '.join(map(str, value))}")
                raise ValueError(f"{flag(field.name)} must be a finite number, got {value}")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method}: not a method (choose from "
                             f"{', '.join(METHODS)})")
        for name in ("learning_rate", "epsilon"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("beta_1", "beta_2", "momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay is not None and not 0.0 <= self.weight_decay:
            raise ValueError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        _check_unused_optimizer_flags(self)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        for name in ("patience", "batch_size", "epochs", "image_size", "repeats",
                     "steps_per_execution", "train_per_class"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "patience" else 1):
                raise ValueError(f"{flag(name)} must be positive, got {value}")
        if self.oversample is not None and self.oversample < 0:
            raise ValueError(f"--oversample must be 0 or more, got {self.oversample}")
        for name in ("tensorboard_images_every", "tensorboard_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
            if not self.tensorboard and getattr(self, name) != _SHARED_DEFAULTS[name]:
                raise ValueError(f"{flag(name)} applies to --tensorboard only")
        if self.event_split is not None:
            shares = self.event_split
            if min(shares) < 0 or shares[0] == 0 or shares[2] == 0 or abs(sum(shares) - 1) > 1e-6:
                raise ValueError(
                    "--event-split needs three shares that sum to 1, with train and test "
                    f"above 0, got {' '.join(map(str, shares))}")
        for name in ("caltech_train_images", "caltech_test_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        if self.strategy != "none" and self.jit_compile == "on":
            raise ValueError(
                f"--jit-compile on does not work with --strategy {self.strategy}: Keras "
                "compiles the step of all replicas as one XLA program, which cannot span "
                "devices (use --jit-compile off)")
        if not 0.0 <= self.rotation <= 180.0:
            raise ValueError(f"--rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0.0 <= self.channel_shift <= 255.0:
            raise ValueError(f"--channel-shift must be in [0, 255], got {self.channel_shift}")
        low, high = self.brightness
        if not 0.0 <= low <= high:
            raise ValueError(f"--brightness needs 0 <= LOW <= HIGH, got {low} {high}")
        for options in self._all_options():
            # An inactive method's flag given is reported as such, before its checks.
            if options.name in METHODS and options.name != self.method:
                options.check_unused(f"applies to --method {options.name} only")
            options.check()
        options = get_dataset_spec(self.dataset).options
        for name, (datasets, default) in _DATASET_OPTIONS.items():
            if name not in options and getattr(self, name) not in (None, default):
                raise ValueError(f"{flag(name)} applies to --dataset {datasets} only")
        if self.classes is not None:
            _check_classes(self.classes)
        if self.shots is not None:
            _check_shots(self)
        if self.weights not in (None, "imagenet", "none", *SHIPPED_WEIGHTS):
            if not os.path.isfile(self.weights):
                raise ValueError(f"--weights: no such file: {self.weights}")
            if not os.access(self.weights, os.R_OK):
                raise ValueError(f"--weights: file is not readable: {self.weights}")
        if self.run_name is not None and (not self.run_name or os.sep in self.run_name
                                          or self.run_name in (".", "..")):
            raise ValueError(f"--run-name must be a plain folder name, got {self.run_name!r}")

    def for_classes(self, num_classes):
        """A copy with the defaults that depend on the number of classes filled in
        (the add-ons', e.g. ``hnc_top_k``), checked; ValueError names the flag."""
        config = self
        for addon in self.addons():
            try:
                resolved = addon.for_classes(num_classes)
            except ValueError as error:
                raise ValueError(f"{error} of {self.dataset}") from None
            config = dataclasses.replace(config, **dataclasses.asdict(resolved))
        return config

    # ------------------------------------------------------------ the rest

    def augmentation(self):
        """The training augmentation this config asks for, or None."""
        from .augmentation import Augmentation

        if not self.augment:
            return None
        return Augmentation(self.flip, self.rotation, self.channel_shift, tuple(self.brightness))

    def dataset_options(self):
        """Keyword options for ``datasets.load_dataset``."""
        return {name: getattr(self, name) for name in get_dataset_spec(self.dataset).options}

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A config from parsed flags or a saved config.json: other keys are ignored,
        lists (from nargs or JSON) become the tuples the fields hold, and optimizer
        settings a config.json lacks are those of the versions that wrote it."""
        names = {field.name for field in dataclasses.fields(cls)}
        # A config.json written before a method could change them holds no optimizer
        # settings where they were at their defaults of then.
        return cls(**{**_OPTIMIZATION_DEFAULTS} | {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in values.items() if key in names})


def classes_tag(classes):
    """The run-name part of a class subset: ``c`` and the class indices (``c0.2.3.4.6``),
    or, for a long list (or names not yet resolved to indices), ``c<count>-`` and a
    digest of the list."""
    text = ".".join(map(str, classes))
    if all(isinstance(name, int) for name in classes) and len(text) <= 24:
        return f"c{text}"
    digest = hashlib.sha256("\n".join(map(str, classes)).encode()).hexdigest()[:6]
    return f"c{len(classes)}-{digest}"


def _check_classes(classes):
    """What --classes can be checked for before the dataset is read (its names are
    checked by ``layouts.Dataset.subset``)."""
    if len(classes) < 2:
        raise ValueError(f"--classes needs at least two classes, got {len(classes)}")
    seen = set()
    for name in map(str, classes):
        if name in seen:
            raise ValueError(f"--classes: class {name!r} is given twice")
        seen.add(name)


def shot_count(value):
    """The number of training images per class of a --shots value (None: all)."""
    return None if str(value) == "all" else int(value)


def _check_shots(config):
    seen = set()
    for value in config.shots:
        if str(value) != "all" and not (str(value).isdigit() and int(value) > 0):
            raise ValueError(f"--shots takes positive whole numbers or 'all', got {value}")
        if shot_count(value) in seen:
            raise ValueError(f"--shots: {value} is given twice")
        seen.add(shot_count(value))
    if config.train_per_class is not None:
        raise ValueError("--train-per-class does not apply to --shots (the k-shot draw "
                         "picks the training images)")
    if config.oversample:
        raise ValueError("--oversample does not apply to --shots (every class has k "
                         "training images)")
    if config.validation_fraction != _SHARED_DEFAULTS["validation_fraction"]:
        raise ValueError("--validation-fraction does not apply to --shots (5 validation "
                         "images per class)")


def _check_unused_optimizer_flags(config):
    """An optimizer's flag given with the other optimizer is an error, not ignored."""
    own = {"adam": ("beta_1", "beta_2", "epsilon"), "sgd": ("momentum",)}
    for optimizer, names in own.items():
        if config.optimizer in (optimizer, None):  # None: resolved later, checked again
            continue
        for name in names:
            if getattr(config, name) != _SHARED_DEFAULTS[name]:
                raise ValueError(f"{flag(name)} applies to --optimizer {optimizer} only")


def _assemble():
    """``TrainConfig``: the shared fields, then those of every registered method and
    add-on, each field's ``--help`` group the title of its options class."""
    fields = []
    for cls in (*METHODS.values(), *ADDONS.values()):
        for field in dataclasses.fields(cls):
            metadata = {**field.metadata, "group": cls.title}
            fields.append((field.name, field.type,
                           dataclasses.field(default=field.default, metadata=metadata)))
    config = dataclasses.make_dataclass("TrainConfig", fields, bases=(SharedConfig,))
    config.__module__ = __name__
    config.__doc__ = ("The configuration of a training run: the shared settings "
                      "(``SharedConfig``) and every registered method's options.")
    return config


TrainConfig = _assemble()

# Dataset-specific flags: the datasets they apply to, and their value when not given.
_DATASET_OPTIONS = {
    "crop_to_box": ("cars", False),
    "aircraft_level": ("aircraft", None),
    "remove_banner": ("aircraft", False),
    "event_split": ("egofoodplaces", None),
    "caltech_train_images": ("caltech101", None),
    "caltech_test_images": ("caltech101", None),
}
_DATASET_OPTION_DEFAULTS = {"aircraft_level": "variant", "event_split": (0.7, 0.1, 0.2),
                            "caltech_train_images": 30, "caltech_test_images": 50}
_SHARED_DEFAULTS = {field.name: field.default for field in dataclasses.fields(SharedConfig)}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says what the default is."""

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(cls=TrainConfig, prog="train.py", description=None):
    """An argument parser with one ``--flag`` per dataclass field, defaults shown, in
    the groups the fields name (the shared ones, then one per method and add-on)."""
    parser = OneLineParser(
        prog=prog, description=description,
        formatter_class=_DefaultsFormatter,
    )
    groups = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        title = meta.get("group", "options")
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        group = groups[title]
        if field.type is bool:
            # A switch that is on by default gets a --no-... form.
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            group.add_argument(flag(field.name), action=action, default=field.default,
                               help=meta["help"])
            continue
        kind, count = _value_type(field.type)
        group.add_argument(
            flag(field.name), type=kind, default=field.default, choices=meta.get("choices"),
            nargs=count, help=meta["help"],
            metavar=meta.get("metavar", None if meta.get("choices") else field.name.upper()),
        )
    return parser


def _value_type(annotation):
    """(element type, nargs) of a field: int, float, str, a tuple of them, or Optional."""
    if annotation in (int, float, str):
        return annotation, None
    if typing.get_origin(annotation) is tuple:
        kinds = typing.get_args(annotation)
        return kinds[0], "+" if kinds[-1] is Ellipsis else len(kinds)
    for option in typing.get_args(annotation):
        if option is not type(None):
            return _value_type(option)
    raise TypeError(f"unsupported field type {annotation}")


def parse_config(argv=None, cls=TrainConfig):
    """Parse a command line into a resolved config (argparse exits 2 on a bad flag)."""
    return cls.from_dict(vars(build_parser(cls).parse_args(argv))).resolved()


def given_fields(argv=None, cls=TrainConfig):
    """The config fields a command line sets explicitly (see ``run_folders.resumed``)."""
    parser = build_parser(cls)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return frozenset(vars(parser.parse_args(argv)))
