"""Training configuration: one dataclass field per command-line flag.

Defaults are the papers': for distraction (Morales et al., 2021, Sec. 4.2; PAPERS.md
§1) Adam with lr 5e-5, beta_1 0.9, beta_2 0.999, epsilon 7e-7; batch 16; early
stopping on validation accuracy with patience 30; p = 0.25; th = 0.85;
0-occlusion; 25 % stratified validation split. Pairwise (PAPERS.md §3): gamma 0.7,
alpha 1, beta 2. HNC (§4): weight 0.07 (mse) or 0.005 (kd), k = ⌈0.1 K⌉, T = 1.
Fields left at None are resolved from the dataset and backbone registries by
``resolved()`` (and the number of classes by ``for_classes()``); the resolved
config is saved with every run.

This module does not import TensorFlow, so a bad flag is reported at once.
"""

import argparse
import dataclasses
import math
import os
import typing

from .backbones import BACKBONES, get_backbone
from .datasets import DATASETS, get_dataset_spec

SWITCHES = ("auto", "on", "off")
# The names of distribute.STRATEGIES (kept here so this module stays free of
# TensorFlow; a test keeps them in step).
STRATEGIES = ("none", "mirrored")
# "none" trains the baseline; the others are the fills of occlusion.FILLS (kept here
# as names so that this module stays free of TensorFlow; a test keeps them in step).
OCCLUSIONS = ("none", "zero", "one", "random")
METHODS = ("distraction", "pairwise")
# The names of schemes.PAIRWISE_LOSSES and ("none", *losses.HNC_FORMS), kept here so
# that this module stays free of TensorFlow; a test keeps them in step.
PAIRWISE_LOSSES = ("full", "category", "instance", "attention_mining")
HNC_CHOICES = ("none", "mse", "kd")
# The authors' weights of the two HNC forms (PAPERS.md §4).
HNC_WEIGHTS = {"mse": 0.07, "kd": 0.005}


def default_top_k(num_classes):
    """HNC: ⌈0.1 K⌉ negative classes (100 of ImageNet's 1,000), at most the K - 1 there are."""
    return max(1, min(num_classes - 1, math.ceil(0.1 * num_classes)))


def _field(default, help, **options):
    return dataclasses.field(default=default, metadata={"help": help, **options})


@dataclasses.dataclass
class TrainConfig:
    dataset: str = _field(
        "fashion-mnist-mini", "dataset name", choices=tuple(DATASETS))
    data_dir: str | None = _field(None, "dataset folder (default: data/<dataset>)")
    crop_to_box: bool = _field(
        False, "cars: crop every image to its annotated bounding box (off in the paper)")
    aircraft_level: str | None = _field(
        None, "aircraft: label level (default variant, 100 classes)",
        choices=("variant", "family", "manufacturer"))
    remove_banner: bool = _field(
        False, "aircraft: cut the 20-pixel copyright banner from the bottom of every image")
    event_split: tuple[float, float, float] | None = _field(
        None, "egofoodplaces: train, validation and test shares of the split by events "
        "(default 0.7 0.1 0.2; a split column in the manifest takes precedence)",
        metavar=("TRAIN", "VAL", "TEST"))
    oversample: int | None = _field(
        None, "oversample every class smaller than the k-th largest to its size, training "
        "split only; 0 turns it off (default: 4 for egofoodplaces, else 0)")
    on_bad_image: str = _field(
        "skip", "an image file that cannot be decoded is skipped and counted, or stops the run",
        choices=("skip", "error"))
    cache_dir: str | None = _field(
        None, "keep the decoded, resized images in .npy files in this folder, reused by later "
        "runs (default: in memory)")
    backbone: str | None = _field(
        None, "backbone (default: the dataset's; small_cnn for the Fashion-MNIST sets)",
        choices=tuple(BACKBONES))
    weights: str | None = _field(
        None, "'imagenet', 'none' or a weights file of the backbone without its top "
        "(default: imagenet where the backbone has it, else none)")
    method: str = _field(
        "distraction", "training scheme: distraction (playing to distraction; with "
        "--occlusion none, plain fine-tuning) or pairwise (CAM erasing with pairwise "
        "consistency)", choices=METHODS)
    occlusion: str | None = _field(
        None, "distraction: fill of the occluded pixels; 'none' trains the fine-tuned "
        "baseline (default: zero; none with --method pairwise)", choices=OCCLUSIONS)
    probability: float = _field(0.25, "distraction: probability p of occluding a mini-batch")
    threshold: float = _field(
        0.85, "distraction: heat threshold th: pixels with heat > th are occluded")
    cam_layer: str | None = _field(
        None, "layer for Grad-CAM (default: the backbone's last convolutional block)")
    gamma: float = _field(
        0.7, "pairwise: pixels where the CAM of the predicted class is above gamma are erased")
    alpha: float = _field(1.0, "pairwise: weight of the erased image's cross-entropy")
    beta: float = _field(2.0, "pairwise: weight of KL(erased || original)")
    pairwise_loss: str = _field(
        "full", "pairwise: all terms, or an ablation: category (category-level consistency "
        "only: no KL), instance (instance-level only: no erased cross-entropy), "
        "attention_mining (alpha x the main classifier's probability of the true class on "
        "the erased image, minimised, instead of both)", choices=PAIRWISE_LOSSES)
    cam_module_layer: str | None = _field(
        None, "pairwise: layer the CAM module is attached to (default: the backbone's input "
        "of its last down-sampling stage, e.g. conv4_block6_out for resnet50)")
    cam_module_filters: int | None = _field(
        None, "pairwise: channels of the CAM module's 1x1 convolution (default: those of "
        "its layer)")
    hnc: str = _field(
        "none", "add the homogeneous negative-CAM loss in this form to any method",
        choices=HNC_CHOICES)
    hnc_weight: float | None = _field(
        None, "weight of the HNC loss (default: 0.07 for mse, 0.005 for kd)")
    hnc_top_k: int | None = _field(
        None, "negative classes per image in the HNC loss (default: ceil(0.1 x classes))")
    hnc_temperature: float = _field(1.0, "temperature T of the kd form of the HNC loss")
    epochs: int | None = _field(
        None, "maximum number of epochs (default: the dataset's, 6 for the embedded set)")
    patience: int = _field(30, "early-stopping patience in epochs, on validation accuracy")
    batch_size: int = _field(16, "mini-batch size")
    learning_rate: float = _field(5e-5, "Adam learning rate")
    beta_1: float = _field(0.9, "Adam beta_1")
    beta_2: float = _field(0.999, "Adam beta_2")
    epsilon: float = _field(7e-7, "Adam epsilon")
    image_size: int | None = _field(
        None, "square input size (default: the dataset's, 250 for egofoodplaces, else the "
        "backbone's)")
    validation_fraction: float = _field(
        0.25, "share of the official training set held out for validation (stratified); "
        "unused where the dataset has its own validation split")
    augment: bool = _field(True, "apply the training augmentation below (--no-augment: none)")
    flip: bool = _field(True, "augmentation: random horizontal flip")
    rotation: float = _field(40.0, "augmentation: rotation by up to this many degrees either way")
    channel_shift: float = _field(
        30.0, "augmentation: intensity shift by up to this much either way, on the 0-255 scale")
    brightness: tuple[float, float] = _field(
        (0.5, 1.5), "augmentation: brightness factor range LOW HIGH (1 1: none)",
        metavar=("LOW", "HIGH"))
    seed: int = _field(0, "seed of the split, the shuffling, the weights and the occlusion draws")
    repeats: int = _field(
        1, "seeded repetitions: seeds SEED, SEED+1, ..., each with its own validation split "
        "and run folder (the paper: 5)")
    resume: bool = _field(
        False, "continue the runs of this command where they stopped: an unfinished run "
        "folder of the same name resumes after its last finished epoch, a finished one is "
        "skipped")
    out_dir: str = _field("models", "folder that receives the run folder")
    run_name: str | None = _field(
        None, "run folder name (default: <dataset>-<method>-<backbone>-seed<seed>, with "
        "<method> the fill or pairwise, and -hnc_<form> if on; "
        "numbered if taken)")
    overwrite: bool = _field(False, "replace an existing run folder of the same name")
    jit_compile: str = _field(
        "auto", "XLA-compile the training step (auto: on when a GPU is present, off under "
        "--strategy mirrored)", choices=SWITCHES)
    mixed_precision: str = _field(
        "auto", "mixed_float16 training (auto: on when a GPU is present)", choices=SWITCHES)
    steps_per_execution: int = _field(
        1, "training steps per call into TensorFlow (Keras' steps_per_execution): more "
        "saves Python overhead per step on a GPU; must divide the steps per epoch")
    strategy: str = _field(
        "none", "mirrored: tf.distribute.MirroredStrategy over every GPU (without one, over "
        "the logical CPU devices); --batch-size stays the global batch", choices=STRATEGIES)
    sync_batchnorm: bool = _field(
        True, "under --strategy mirrored, BatchNormalization statistics over the global batch, "
        "as on one device (--no-sync-batchnorm: over each replica's share)")
    verbose: int = _field(2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")

    def resolved(self):
        """A copy with every None default filled in, checked; ValueError names the flag."""
        self.check()
        dataset = get_dataset_spec(self.dataset)
        backbone = get_backbone(self.backbone or dataset.default_backbone)
        weights = self.weights or ("imagenet" if backbone.has_imagenet_weights else "none")
        config = dataclasses.replace(
            self,
            backbone=backbone.name,
            weights=weights,
            epochs=self.epochs or dataset.default_epochs,
            image_size=self.image_size or dataset.image_size or backbone.input_size,
            cam_layer=self.cam_layer or backbone.last_conv,
            occlusion=self.occlusion or ("zero" if self.method == "distraction" else "none"),
            oversample=dataset.oversample if self.oversample is None else self.oversample,
        )
        if self.method == "pairwise":
            config.cam_module_layer = self.cam_module_layer or backbone.cam_module_layer
        if self.hnc != "none" and self.hnc_weight is None:
            config.hnc_weight = HNC_WEIGHTS[self.hnc]
        for name, value in _DATASET_OPTION_DEFAULTS.items():
            if name in dataset.options and getattr(config, name) is None:
                setattr(config, name, value)
        config.check()
        if config.weights == "imagenet" and not backbone.has_imagenet_weights:
            raise ValueError(
                f"--weights imagenet: backbone {backbone.name} has no ImageNet weights "
                "(use --weights none or a weights file)")
        backbone.check_input_size(config.image_size)
        return config

    def check(self):
        """Range and cross-field checks; ValueError with the flag's name."""
        for name in ("probability", "threshold", "gamma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{_flag(name)} must be in [0, 1], got {value}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        for name in ("patience", "batch_size", "epochs", "image_size", "repeats",
                     "steps_per_execution"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "patience" else 1):
                raise ValueError(f"--{_flag(name)} must be positive, got {value}")
        for name in ("alpha", "beta", "hnc_weight"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{_flag(name)} must be 0 or more, got {value}")
        for name in ("hnc_top_k", "cam_module_filters"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{_flag(name)} must be positive, got {value}")
        for name in ("learning_rate", "epsilon", "hnc_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.oversample is not None and self.oversample < 0:
            raise ValueError(f"--oversample must be 0 or more, got {self.oversample}")
        if self.event_split is not None:
            shares = self.event_split
            if min(shares) < 0 or shares[0] == 0 or shares[2] == 0 or abs(sum(shares) - 1) > 1e-6:
                raise ValueError(
                    "--event-split needs three shares that sum to 1, with train and test "
                    f"above 0, got {' '.join(map(str, shares))}")
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
        self._check_method_options()
        options = get_dataset_spec(self.dataset).options
        for name, (datasets, default) in _DATASET_OPTIONS.items():
            if name not in options and getattr(self, name) not in (None, default):
                raise ValueError(f"--{_flag(name)} applies to --dataset {datasets} only")
        if self.weights not in (None, "imagenet", "none"):
            if not os.path.isfile(self.weights):
                raise ValueError(f"--weights: no such file: {self.weights}")
            if not os.access(self.weights, os.R_OK):
                raise ValueError(f"--weights: file is not readable: {self.weights}")
        if self.run_name is not None and (not self.run_name or os.sep in self.run_name
                                          or self.run_name in (".", "..")):
            raise ValueError(f"--run-name must be a plain folder name, got {self.run_name!r}")

    def _check_method_options(self):
        """A flag of another method than the one chosen is an error, not ignored."""
        if self.method == "pairwise" and self.occlusion not in (None, "none"):
            raise ValueError(f"--occlusion {self.occlusion} applies to --method distraction "
                             "(pairwise erases with its own CAM module)")
        for name, (method, default) in _METHOD_OPTIONS.items():
            if self.method != method and getattr(self, name) != default:
                raise ValueError(f"--{_flag(name)} applies to --method {method} only")
        if self.hnc == "none":
            for name in ("hnc_weight", "hnc_top_k", "hnc_temperature"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ValueError(f"--{_flag(name)} needs --hnc mse or --hnc kd")

    def for_classes(self, num_classes):
        """A copy with the defaults that depend on the number of classes filled in
        (``hnc_top_k``), checked; ValueError names the flag."""
        if self.hnc == "none":
            return self
        top_k = self.hnc_top_k or default_top_k(num_classes)
        if not 1 <= top_k < num_classes:
            raise ValueError(f"--hnc-top-k {top_k} exceeds the {num_classes - 1} negative "
                             f"classes of {self.dataset}")
        return dataclasses.replace(self, hnc_top_k=top_k)

    @property
    def method_tag(self):
        """Short name of the method: the fill (distraction) or pairwise[-ablation],
        with -hnc_<form> appended when the HNC loss is on."""
        tag = self.occlusion if self.method == "distraction" else "pairwise"
        if self.method == "pairwise" and self.pairwise_loss != "full":
            tag += f"-{self.pairwise_loss}"
        return tag if self.hnc == "none" else f"{tag}-hnc_{self.hnc}"

    @property
    def default_run_name(self):
        return f"{self.dataset}-{self.method_tag}-{self.backbone}-seed{self.seed}"

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
        and lists (from nargs or JSON) become the tuples the fields hold."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items() if key in names})


# Dataset-specific flags: the datasets they apply to, and their value when not given.
_DATASET_OPTIONS = {
    "crop_to_box": ("cars", False),
    "aircraft_level": ("aircraft", None),
    "remove_banner": ("aircraft", False),
    "event_split": ("egofoodplaces", None),
}
_DATASET_OPTION_DEFAULTS = {"aircraft_level": "variant", "event_split": (0.7, 0.1, 0.2)}
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
# Method-specific flags: the method they apply to, and their value when not given.
_METHOD_OPTIONS = {
    **{name: ("distraction", _DEFAULTS[name]) for name in ("probability", "threshold")},
    **{name: ("pairwise", _DEFAULTS[name])
       for name in ("gamma", "alpha", "beta", "pairwise_loss", "cam_module_layer",
                    "cam_module_filters")},
}


def _flag(name):
    return name.replace("_", "-")


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
    """An argument parser with one ``--flag`` per dataclass field, defaults shown."""
    parser = OneLineParser(
        prog=prog, description=description,
        formatter_class=_DefaultsFormatter,
    )
    for field in dataclasses.fields(cls):
        meta = field.metadata
        flag = f"--{_flag(field.name)}"
        if field.type is bool:
            # A switch that is on by default gets a --no-... form.
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            parser.add_argument(flag, action=action, default=field.default, help=meta["help"])
            continue
        kind, count = _value_type(field.type)
        parser.add_argument(
            flag, type=kind, default=field.default, choices=meta.get("choices"), nargs=count,
            help=meta["help"],
            metavar=meta.get("metavar", None if meta.get("choices") else field.name.upper()),
        )
    return parser


def _value_type(annotation):
    """(element type, nargs) of a field: int, float, str, a tuple of them, or Optional."""
    if annotation in (int, float, str):
        return annotation, None
    if typing.get_origin(annotation) is tuple:
        kinds = typing.get_args(annotation)
        return kinds[0], len(kinds)
    for option in typing.get_args(annotation):
        if option is not type(None):
            return _value_type(option)
    raise TypeError(f"unsupported field type {annotation}")


def parse_config(argv=None, cls=TrainConfig):
    """Parse a command line into a resolved config (argparse exits 2 on a bad flag)."""
    return cls.from_dict(vars(build_parser(cls).parse_args(argv))).resolved()
