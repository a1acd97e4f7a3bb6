"""Training configuration: one dataclass field per command-line flag.

Defaults are the paper's (Morales et al., 2021, Sec. 4.2; PAPERS.md §1): Adam with
lr 5e-5, beta_1 0.9, beta_2 0.999, epsilon 7e-7; batch 16; early stopping on
validation accuracy with patience 30; p = 0.25; th = 0.85; 0-occlusion; 25 %
stratified validation split. Fields left at None are resolved from the dataset and
backbone registries by ``resolved()``; the resolved config is saved with every run.

This module does not import TensorFlow, so a bad flag is reported at once.
"""

import argparse
import dataclasses
import os

from .backbones import BACKBONES, get_backbone
from .datasets import DATASETS

SWITCHES = ("auto", "on", "off")
# "none" trains the baseline; the others are the fills of occlusion.FILLS (kept here
# as names so that this module stays free of TensorFlow; a test keeps them in step).
OCCLUSIONS = ("none", "zero", "one", "random")


def _field(default, help, **options):
    return dataclasses.field(default=default, metadata={"help": help, **options})


@dataclasses.dataclass
class TrainConfig:
    dataset: str = _field(
        "fashion-mnist-mini", "dataset name", choices=tuple(DATASETS))
    data_dir: str | None = _field(None, "dataset folder (default: data/<dataset>)")
    backbone: str | None = _field(
        None, "backbone (default: the dataset's; small_cnn for the Fashion-MNIST sets)",
        choices=tuple(BACKBONES))
    weights: str | None = _field(
        None, "'imagenet', 'none' or a weights file of the backbone without its top "
        "(default: imagenet where the backbone has it, else none)")
    occlusion: str = _field(
        "zero", "fill of the occluded pixels; 'none' trains the fine-tuned baseline",
        choices=OCCLUSIONS)
    probability: float = _field(0.25, "probability p of occluding a mini-batch")
    threshold: float = _field(0.85, "heat threshold th: pixels with heat > th are occluded")
    cam_layer: str | None = _field(
        None, "layer for Grad-CAM (default: the backbone's last convolutional block)")
    epochs: int | None = _field(
        None, "maximum number of epochs (default: the dataset's, 15 for the embedded set)")
    patience: int = _field(30, "early-stopping patience in epochs, on validation accuracy")
    batch_size: int = _field(16, "mini-batch size")
    learning_rate: float = _field(5e-5, "Adam learning rate")
    beta_1: float = _field(0.9, "Adam beta_1")
    beta_2: float = _field(0.999, "Adam beta_2")
    epsilon: float = _field(7e-7, "Adam epsilon")
    image_size: int | None = _field(None, "square input size (default: the backbone's)")
    validation_fraction: float = _field(
        0.25, "share of the official training set held out for validation (stratified)")
    seed: int = _field(0, "seed of the split, the shuffling, the weights and the occlusion draws")
    out_dir: str = _field("models", "folder that receives the run folder")
    run_name: str | None = _field(
        None, "run folder name (default: <dataset>-<occlusion>-<backbone>-seed<seed>, "
        "numbered if taken)")
    overwrite: bool = _field(False, "replace an existing run folder of the same name")
    jit_compile: str = _field(
        "auto", "XLA-compile the training step (auto: on when a GPU is present)",
        choices=SWITCHES)
    mixed_precision: str = _field(
        "auto", "mixed_float16 training (auto: on when a GPU is present)", choices=SWITCHES)
    verbose: int = _field(2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")

    def resolved(self):
        """A copy with every None default filled in, checked; ValueError names the flag."""
        self.check()
        from .datasets import get_dataset_spec

        dataset = get_dataset_spec(self.dataset)
        backbone = get_backbone(self.backbone or dataset.default_backbone)
        weights = self.weights or ("imagenet" if backbone.has_imagenet_weights else "none")
        config = dataclasses.replace(
            self,
            backbone=backbone.name,
            weights=weights,
            epochs=self.epochs or dataset.default_epochs,
            image_size=self.image_size or backbone.input_size,
            cam_layer=self.cam_layer or backbone.last_conv,
        )
        config.check()
        if config.weights == "imagenet" and not backbone.has_imagenet_weights:
            raise ValueError(
                f"--weights imagenet: backbone {backbone.name} has no ImageNet weights "
                "(use --weights none or a weights file)")
        if config.image_size < backbone.min_input_size:
            raise ValueError(
                f"--image-size {config.image_size} is below the {backbone.min_input_size} "
                f"pixels that {backbone.name} needs")
        return config

    def check(self):
        """Range and cross-field checks; ValueError with the flag's name."""
        for name in ("probability", "threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{_flag(name)} must be in [0, 1], got {value}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        for name in ("patience", "batch_size", "epochs", "image_size"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "patience" else 1):
                raise ValueError(f"--{_flag(name)} must be positive, got {value}")
        for name in ("learning_rate", "epsilon"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.weights not in (None, "imagenet", "none"):
            if not os.path.isfile(self.weights):
                raise ValueError(f"--weights: no such file: {self.weights}")
            if not os.access(self.weights, os.R_OK):
                raise ValueError(f"--weights: file is not readable: {self.weights}")
        if self.run_name is not None and (not self.run_name or os.sep in self.run_name
                                          or self.run_name in (".", "..")):
            raise ValueError(f"--run-name must be a plain folder name, got {self.run_name!r}")

    @property
    def default_run_name(self):
        return f"{self.dataset}-{self.occlusion}-{self.backbone}-seed{self.seed}"

    def to_dict(self):
        return dataclasses.asdict(self)


def _flag(name):
    return name.replace("_", "-")


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(cls=TrainConfig, prog="train.py", description=None):
    """An argument parser with one ``--flag`` per dataclass field, defaults shown."""
    parser = _OneLineParser(
        prog=prog, description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(cls):
        meta = field.metadata
        flag = f"--{_flag(field.name)}"
        if field.type is bool:
            parser.add_argument(flag, action="store_true", help=meta["help"])
            continue
        kind = field.type if field.type in (int, float, str) else _optional_type(field.type)
        parser.add_argument(
            flag, type=kind, default=field.default, choices=meta.get("choices"),
            help=meta["help"], metavar=None if meta.get("choices") else field.name.upper(),
        )
    return parser


def _optional_type(annotation):
    for kind in (int, float, str):
        if kind in getattr(annotation, "__args__", ()):
            return kind
    raise TypeError(f"unsupported field type {annotation}")


def parse_config(argv=None, cls=TrainConfig):
    """Parse a command line into a resolved config (argparse exits 2 on a bad flag)."""
    args = build_parser(cls).parse_args(argv)
    return cls(**vars(args)).resolved()
