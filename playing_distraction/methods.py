"""The method registry: a training method is one registered options dataclass.

A method's options class holds its flags (dataclass fields with the paper's defaults
and their help), and says everything else about the method in one place:

- ``check()``: range checks of its own flags (ValueError naming the flag);
- ``resolve(backbone, active, dataset)``: its defaults that depend on the backbone or
  dataset registry;
- ``tag()``: its part of the run-folder name; ``column()``: its evaluate.py column;
- ``build(classifier, config, **addons)``: the model to fit (a scheme from
  ``schemes/``, imported there, so that this module stays free of TensorFlow);
- ``stages(config)``: its training stages (``Stage``: one, unless it says more),
  each with its own epochs, optimizer and trainable parts;
- ``training_classes(config)`` and ``prepare_training(...)``: what it needs from the
  data before a run folder is made (e.g. image pairs, and callbacks that use them).

Add-ons (today the homogeneous negative-CAM loss, usable with every method) are
options classes too: their ``scheme_kwargs()`` go to every method's scheme, and
they extend the method's tag and column.

Everything else is derived from here: the fields of ``config.TrainConfig`` and so
the command-line flags and their ``--help`` groups, the choices of ``--method``, the
run-folder names, the columns of evaluate.py, and the scheme contract tests
(``tests/test_contract.py``). A new method registers one class here and adds its
scheme module. config.json stays flat, so field names are unique over all
registered classes: a new method names its flags for itself (seed 004's alpha and
beta, say, as ``dv_probability`` and ``dv_scale``), never reusing one.

This module does not import TensorFlow.
"""

import dataclasses
import math
import os
import typing

from .choices import (APPROACHES, BRANCH_FILE, FILLS, HNC_FORMS, HNC_WEIGHTS, PAIR_PATTERNS,
                      PAIR_SETTINGS, PAIRWISE_LOSSES, SALIENCY_SHAPES, default_top_k)

METHODS = {}  # --method name -> options class
ADDONS = {}  # add-on name -> options class


def option(default, help, **options):
    """A field of an options class: its default and its ``--help`` text (and, in
    ``options``, argparse's choices or metavar)."""
    return dataclasses.field(default=default, metadata={"help": help, **options})


def flag(name):
    """The command-line flag of a field."""
    return f"--{name.replace('_', '-')}"


@dataclasses.dataclass
class Options:
    """Base of the options of a method or add-on: one field per flag.

    title: the heading of its flags in ``--help``.
    """

    name: typing.ClassVar[str]
    title: typing.ClassVar[str]

    def check(self):
        """Range checks of the fields; ValueError naming the flag."""

    def resolve(self, backbone, active, dataset=None):
        """A copy with the defaults that depend on the backbone (a
        ``backbones.BackboneSpec``) or the dataset (a ``datasets.DatasetSpec``) filled
        in; ``active``: the method is the one chosen."""
        return self

    def inactive_values(self):
        """What the fields hold in a run that does not use these options: their defaults
        as ``resolve`` leaves them for an inactive method."""
        return dataclasses.asdict(self.resolve(None, active=False))

    def check_unused(self, requirement):
        """A flag of options that the run does not use is an error, not ignored:
        ValueError "--flag <requirement>"."""
        defaults = type(self)()
        unused = defaults.inactive_values()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value not in (getattr(defaults, field.name), unused[field.name]):
                raise ValueError(f"{flag(field.name)} {requirement}")

    @classmethod
    def from_values(cls, values):
        """The options held in a mapping of field values (a config's or config.json's);
        missing fields take their defaults."""
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)
                      if field.name in values})


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage of a method: compiled, fitted, checkpointed and early-stopped
    on its own, and resumable (``stages.run_stage``).

    name: names its files (history, checkpoint) after the first stage's.
    epochs: its maximum number of epochs (None: ``--epochs``).
    optimizer: the config's optimizer settings it overrides, by field name (e.g.
        {"optimizer": "sgd", "learning_rate": 1e-4, "weight_decay": 5e-3}).
    trainable: called with the model to fit before the stage compiles, to freeze what
        the stage does not train; None: every layer trains.
    """

    name: str = "train"
    epochs: int | None = None
    optimizer: dict = dataclasses.field(default_factory=dict)
    trainable: typing.Callable | None = None


class Method(Options):
    """Options of a training method (see the module docstring).

    saved_model_needs_package: the classifier a run saves for users holds layers of
    this package (it then loads after ``import playing_distraction.layers``, which
    registers them all, with ``safe_mode=True``); False: plain Keras layers only.
    """

    saved_model_needs_package: typing.ClassVar[bool] = False
    # The method's own defaults of shared optimization settings (``optimizer``,
    # ``learning_rate``, ``weight_decay``, ``epochs``): its paper's, taken where the
    # command line leaves the flag out.
    shared_defaults: typing.ClassVar[dict] = {}

    def tag(self):
        """The method's part of the run-folder name."""
        raise NotImplementedError

    def column(self):
        """The method's column name in evaluate.py's tables."""
        raise NotImplementedError

    def build(self, classifier, config, **addons):
        """The model to fit on ``classifier``: a scheme, or the classifier itself for
        plain training. ``config``: the resolved run config (shared settings such as
        the seed and the Grad-CAM layer); ``addons``: keyword arguments of the add-ons,
        for the scheme. ValueError on a setting that does not fit the classifier."""
        raise NotImplementedError

    def stages(self, config):
        """The method's training stages, in order (one by default)."""
        return [Stage()]

    def check_shared(self, config):
        """Checks of shared flags against the method's options, on the config as the
        command line gave it (None: a flag left out); ValueError naming the flag."""

    def default_weights(self):
        """``--weights`` when not given, if the method decides it (None: the backbone's
        default)."""
        return None

    def classifier(self, config, num_classes, class_names):
        """The classifier the run trains and saves (raw [0, 1] RGB -> logits): by
        default the plain one of ``backbones.build_classifier``. ``class_names``: the
        run's classes, in label order. UserError on a problem with a file it reads."""
        from .backbones import build_classifier

        return build_classifier(config.backbone, num_classes, config.image_size,
                                config.weights)

    def record(self):
        """Values config.json keeps beside the flags (e.g. digests of files read)."""
        return {}

    def files(self, config):
        """{file name: write(classifier, path)}: what the run folder keeps beside the
        saved model (written atomically once the run has finished)."""
        return {}

    def training_classes(self, config):
        """The classes the runs train on (``--classes``; None: all), decided before
        the dataset is decoded; UserError on classes the method cannot train on."""
        return config.classes

    def prepare_training(self, model, config, data, splits, log=None):
        """What the method adds to a run before its folder is made, from its data
        (``protocols.PreparedData``) and its split: a ``Preparation`` (the splits to
        train on, callbacks for every stage, values for config.json)."""
        return Preparation(splits)


@dataclasses.dataclass
class Preparation:
    """What ``Method.prepare_training`` gives a run: its splits ({"train",
    "validation", "test"} -> (part, indices)), Keras callbacks for every stage, and
    values config.json keeps."""

    splits: dict
    callbacks: list = dataclasses.field(default_factory=list)
    record: dict = dataclasses.field(default_factory=dict)


class Addon(Options):
    """Options of an add-on that every method's scheme takes (see the module docstring)."""

    @property
    def active(self):
        raise NotImplementedError

    def for_classes(self, num_classes):
        """A copy with the defaults that depend on the number of classes filled in."""
        return self

    def scheme_kwargs(self):
        """Keyword arguments for the scheme ({} when off)."""
        raise NotImplementedError

    def tag(self, tag):
        """The run-folder tag ``tag`` of a method, extended by this add-on."""
        raise NotImplementedError

    def column(self, column):
        """The column name ``column`` of a method, extended by this add-on."""
        raise NotImplementedError


def register(registry):
    """Class decorator: add an options class to ``METHODS`` or ``ADDONS`` under its name.
    Its field names must not be taken by another registered class."""

    def add(cls):
        taken = {field.name: other.name for group in (METHODS, ADDONS)
                 for other in group.values() for field in dataclasses.fields(other)}
        for field in dataclasses.fields(cls):
            if field.name in taken:
                raise ValueError(f"{cls.__name__}: field {field.name} is already a flag of "
                                 f"{taken[field.name]}")
        if cls.name in METHODS or cls.name in ADDONS:
            raise ValueError(f"{cls.name} is registered already")
        registry[cls.name] = cls
        return cls

    return add


def layer_of(classifier, name, flag_name):
    """``name`` if the classifier has such a layer (None: the scheme's default);
    ValueError naming the flag otherwise."""
    if name is not None:
        try:
            classifier.get_layer(name)
        except ValueError:
            raise ValueError(f"{flag_name} {name}: {classifier.name} has no layer of that "
                             "name") from None
    return name


def _check_unit(options, *names):
    for name in names:
        value = getattr(options, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{flag(name)} must be in [0, 1], got {value}")


# ------------------------------------------------------------------ the methods


@register(METHODS)
@dataclasses.dataclass
class Distraction(Method):
    """Playing to distraction (Morales et al., 2021; PAPERS.md §1); with
    ``occlusion`` "none", plain fine-tuning: the baseline."""

    name = "distraction"
    title = ("method distraction: playing to distraction (Morales et al., 2021); "
             "--occlusion none trains the baseline")
    occlusion: str | None = option(
        None, "distraction: fill of the occluded pixels; 'none' trains the fine-tuned "
        "baseline (default: zero; none with another --method)", choices=("none", *FILLS))
    probability: float = option(0.25, "distraction: probability p of occluding a mini-batch")
    threshold: float = option(
        0.85, "distraction: heat threshold th: pixels with heat > th are occluded")

    COLUMNS = {"none": "baseline", "zero": "0-occlusion", "one": "1-occlusion",
               "random": "R-occlusion"}

    def check(self):
        _check_unit(self, "probability", "threshold")

    def resolve(self, backbone, active, dataset=None):
        return dataclasses.replace(
            self, occlusion=self.occlusion or ("zero" if active else "none"))

    def tag(self):
        return self.occlusion or "zero"

    def column(self):
        return self.COLUMNS.get(self.tag(), self.tag())

    def build(self, classifier, config, **addons):
        from .schemes import DistractionModel, TrainingScheme

        if self.tag() == "none":
            return TrainingScheme(classifier, **addons) if addons else classifier
        return DistractionModel(
            classifier, probability=self.probability, threshold=self.threshold,
            fill=self.tag(), layer_name=layer_of(classifier, config.cam_layer, "--cam-layer"),
            seed=config.seed, **addons)


@register(METHODS)
@dataclasses.dataclass
class Pairwise(Method):
    """CAM erasing with pairwise consistency (Wang et al.; PAPERS.md §3)."""

    name = "pairwise"
    title = "method pairwise: CAM erasing with pairwise consistency (Wang et al.)"
    gamma: float = option(
        0.7, "pairwise: pixels where the CAM of the predicted class is above gamma are erased")
    alpha: float = option(1.0, "pairwise: weight of the erased image's cross-entropy")
    beta: float = option(2.0, "pairwise: weight of KL(erased || original)")
    pairwise_loss: str = option(
        "full", "pairwise: all terms, or an ablation: category (category-level consistency "
        "only: no KL), instance (instance-level only: no erased cross-entropy), "
        "attention_mining (alpha x the main classifier's probability of the true class on "
        "the erased image, minimised, instead of both)", choices=PAIRWISE_LOSSES)
    cam_module_layer: str | None = option(
        None, "pairwise: layer the CAM module is attached to (default: the backbone's input "
        "of its last down-sampling stage, e.g. conv4_block6_out for resnet50)")
    cam_module_filters: int | None = option(
        None, "pairwise: channels of the CAM module's 1x1 convolution (default: those of "
        "its layer)")

    COLUMNS = {"full": "pairwise", "category": "pairwise (category only)",
               "instance": "pairwise (instance only)",
               "attention_mining": "pairwise (attention mining)"}

    def check(self):
        _check_unit(self, "gamma")
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be 0 or more, got {getattr(self, name)}")
        if self.cam_module_filters is not None and self.cam_module_filters < 1:
            raise ValueError(
                f"--cam-module-filters must be positive, got {self.cam_module_filters}")

    def resolve(self, backbone, active, dataset=None):
        if not active:
            return self
        return dataclasses.replace(
            self, cam_module_layer=self.cam_module_layer or backbone.cam_module_layer)

    def tag(self):
        return "pairwise" if self.pairwise_loss == "full" else f"pairwise-{self.pairwise_loss}"

    def column(self):
        return self.COLUMNS.get(self.pairwise_loss, "pairwise")

    def build(self, classifier, config, **addons):
        from .schemes import PairwiseModel

        return PairwiseModel(
            classifier, layer_of(classifier, self.cam_module_layer, "--cam-module-layer"),
            gamma=self.gamma, alpha=self.alpha, beta=self.beta,
            pairwise_loss=self.pairwise_loss, module_filters=self.cam_module_filters,
            seed=config.seed, **addons)


@register(METHODS)
@dataclasses.dataclass
class Saliency(Method):
    """Hallucinated saliency maps (Figueroa-Flores et al.; PAPERS.md §2), in two steps,
    each a run: step 1 trains only the saliency branch of a source classifier on the
    source set; step 2 fine-tunes on the target set from the step-1 branch (Approach
    A: branch frozen; B: everything trains) or, without one, from a branch trained
    from scratch (the "RGB + scratch SAL" baseline). Defaults: the paper's 70 epochs,
    learning rate 1e-4 and weight decay 5e-3, with SGD and momentum 0.9 (the paper
    does not name its optimizer)."""

    name = "saliency"
    title = ("method saliency: hallucinated saliency maps modulating the backbone "
             "(Figueroa-Flores et al.), step 1 on a source set, step 2 on the target set")
    saliency_step: int | None = option(
        None, "saliency: 1 trains only the saliency branch of a source classifier "
        "(--saliency-source) on its source set and writes the branch's weights file; 2 "
        "(default) fine-tunes on the target set", choices=(1, 2))
    saliency_source: str | None = option(
        None, "saliency step 1: the source classifier, a finished run folder trained on "
        "this dataset and these classes (a baseline run, say) or its model.keras, or "
        "'imagenet': the backbone's keras.applications ImageNet classifier, for a source set "
        "of the 1,000 ImageNet classes in Keras' order; its backbone and head stay as they "
        "are", metavar="RUN")
    saliency_branch: str | None = option(
        None, "saliency step 2: the step-1 run folder, or its saliency_branch.weights.h5 "
        "(default: a branch from scratch, the 'RGB + scratch SAL' baseline)", metavar="RUN")
    approach: str | None = option(
        None, "saliency step 2: A keeps the step-1 branch frozen, B (default) trains "
        "everything", choices=APPROACHES)
    fusion_layer: str | None = option(
        None, "saliency: the layer whose output the saliency map modulates (default: the "
        "backbone's: conv3_block1_out for resnet50 and resnet152, mixed0 for inception_v3, "
        "pool2_pool for densenet121, block2b for small_cnn)")
    saliency_convs: int | None = option(
        None, "saliency: convolutional layers of the branch, 1-4 (default: 4, the paper's "
        "best)")
    saliency_shape: str | None = option(
        None, "saliency: the branch's shape: alexnet (AlexNet conv1-conv4, the paper's) or "
        "narrow (3x3 kernels, fewer channels) (default: narrow for small_cnn, else alexnet)",
        choices=SALIENCY_SHAPES)

    saved_model_needs_package = True
    shared_defaults = {"optimizer": "sgd", "learning_rate": 1e-4, "weight_decay": 5e-3,
                       "epochs": 70}
    COLUMNS = {"step1": "saliency step 1", "scratch": "RGB + scratch SAL",
               "A": "Approach A", "B": "Approach B"}

    def check(self):
        if self.saliency_step not in (None, 1, 2):
            raise ValueError(f"--saliency-step must be 1 or 2, got {self.saliency_step}")
        if self.saliency_convs is not None and not 1 <= self.saliency_convs <= 4:
            raise ValueError(f"--saliency-convs must be 1 to 4, got {self.saliency_convs}")
        if self.saliency_step == 1:
            for name in ("saliency_branch", "approach"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{flag(name)} applies to --saliency-step 2 only")
            if self.saliency_source is None:
                raise ValueError("--saliency-step 1 needs --saliency-source: the classifier "
                                 "whose saliency branch it trains")
        else:
            if self.saliency_source is not None:
                raise ValueError("--saliency-source applies to --saliency-step 1 only")
            if self.approach == "A" and self.saliency_branch is None:
                raise ValueError("--approach A keeps a step-1 branch frozen: give "
                                 "--saliency-branch (a step-1 run folder or its branch file)")
        for name, inside in (("saliency_source", "model.keras"),
                             ("saliency_branch", BRANCH_FILE)):
            path = getattr(self, name)
            if name == "saliency_source" and path == "imagenet":
                continue
            if path is not None and not os.path.isfile(_file_in(path, inside)):
                raise ValueError(f"{flag(name)} {path}: no such file"
                                 + ("" if path.endswith((".keras", ".h5")) else
                                    f" (nor a run folder with {inside})"))

    def check_shared(self, config):
        if self.saliency_step == 1 and config.weights is not None:
            raise ValueError("--weights does not apply to --saliency-step 1: the backbone and "
                             "head come from --saliency-source")

    def default_weights(self):
        return "none" if self.saliency_step == 1 else None

    def resolve(self, backbone, active, dataset=None):
        if not active:
            return self
        step = self.saliency_step or 2
        return dataclasses.replace(
            self, saliency_step=step,
            saliency_source=(self.saliency_source if self.saliency_source in (None, "imagenet")
                             else _file_in(self.saliency_source, "model.keras")),
            saliency_branch=self.saliency_branch and _file_in(self.saliency_branch,
                                                              BRANCH_FILE),
            approach=(self.approach or "B") if step == 2 else None,
            fusion_layer=self.fusion_layer or backbone.fusion_layer,
            saliency_convs=self.saliency_convs or 4,
            saliency_shape=self.saliency_shape or backbone.saliency_shape)

    def _variant(self):
        """step1, scratch, A or B: what the tag and column name."""
        if self.saliency_step == 1:
            return "step1"
        return "scratch" if self.saliency_branch is None else self.approach

    def tag(self):
        tag = {"step1": "saliency1", "scratch": "saliency-scratch"}.get(
            self._variant(), f"saliency{self._variant()}")
        return tag if self.saliency_convs in (None, 4) else f"{tag}-conv{self.saliency_convs}"

    def column(self):
        column = self.COLUMNS[self._variant()]
        if self.saliency_convs in (None, 4):
            return column
        return f"{column} ({self.saliency_convs} conv)"

    def classifier(self, config, num_classes, class_names):
        from .modulated import load_branch, modulated_classifier, source_classifier

        if self.saliency_step == 1:
            plain = source_classifier(self.saliency_source, config, num_classes, class_names)
        else:
            plain = super().classifier(config, num_classes, class_names)
        try:
            model = modulated_classifier(plain, self.fusion_layer, self.saliency_convs,
                                         self.saliency_shape, seed=config.seed)
        except ValueError as error:
            from .errors import UserError

            raise UserError(str(error)) from None
        if self.saliency_branch is not None:
            load_branch(model, self.saliency_branch, config.backbone, self.fusion_layer)
        return model

    def build(self, classifier, config, **addons):
        from .schemes import TrainingScheme

        return TrainingScheme(classifier, **addons)

    def stages(self, config):
        from .modulated import freeze_branch, train_only_branch

        if self.saliency_step == 1:
            return [Stage(trainable=train_only_branch)]
        return [Stage(trainable=freeze_branch if self.approach == "A" else None)]

    def record(self):
        from .backbones import file_sha256

        return {f"{name}_sha256": file_sha256(getattr(self, name))
                for name in ("saliency_source", "saliency_branch")
                if getattr(self, name) not in (None, "imagenet")}

    def files(self, config):
        from .modulated import save_branch

        def write(classifier, path):
            save_branch(classifier, path, config.backbone, self.fusion_layer)

        return {BRANCH_FILE: write}


@register(METHODS)
@dataclasses.dataclass
class FeatureAugmentation(Method):
    """Deep feature augmentation for occluded images (Cen et al., 2021; PAPERS.md §5):
    each training image's pooled feature v becomes v + beta d, d drawn with
    probability alpha from the difference vectors of clean/occluded image pairs,
    refreshed every epoch (``schemes.FeatureAugmentationModel``, ``pairs.py``)."""

    name = "feataug"
    title = ("method feataug: deep feature augmentation for occluded images (Cen et al., "
             "2021), difference vectors of clean/occluded pairs added to pooled features")
    dv_probability: float = option(
        0.9, "feataug: probability alpha that a training image's pooled feature is shifted "
        "by a difference vector (0: plain training)")
    dv_scale: float = option(1.0, "feataug: scale beta of the difference vector")
    pairs: str | None = option(
        None, "feataug: exclusive (pairs from classes that are not trained on) or inclusive "
        "(pairs from the training images) (default: exclusive with --pair-classes or on "
        "caltech101, whose paper split names them, else inclusive)", choices=PAIR_SETTINGS)
    pair_classes: tuple[str, ...] | None = option(
        None, "feataug: the classes the pairs come from, by name or index (exclusive: "
        "classes of the dataset not trained on, which --classes then leaves out by "
        "default; inclusive: training classes) (default: caltech101's last 10 classes "
        "for exclusive; --pair-class-count training classes drawn at random for "
        "inclusive)", metavar="CLASS")
    pair_class_count: int = option(
        10, "feataug, inclusive: training classes the pairs are drawn from")
    pair_images: int = option(5, "feataug: clean pair images per pair class")
    pair_patterns: str = option(
        "full", "feataug: the occlusion patterns of the pairs: full (all), 10c (ratio 0.1 "
        "at the centre only), 20c (ratio 0.2 at the centre only)", choices=PAIR_PATTERNS)
    train_on_pairs: bool = option(
        False, "feataug, inclusive: also train on the occluded pair images (the paper's F "
        "models; with --dv-probability 0, its classically trained F baseline)")
    occluders: str | None = option(
        None, "feataug: folder of occluder images with an alpha mask (default: the three "
        "shipped with the package)", metavar="DIR")
    occlusion_ratios: tuple[float, ...] = option(
        (0.2, 0.1), "feataug: shares of the image area the occluders' opaque pixels cover",
        metavar="RATIO")
    random_positions: int = option(
        3, "feataug: random positions per occluder and ratio, besides the centre")
    pattern_seed: int = option(0, "feataug: seed of the random occluder positions")
    tune_min_channels: int | None = option(
        None, "feataug: fine-tune only the layers with at least this many output channels "
        "(the paper's ImageNet runs: 512) (default: all layers)")

    PATTERN_NAMES = {"full": "Full", "10c": "10C", "20c": "20C"}

    def check(self):
        _check_unit(self, "dv_probability")
        if self.dv_scale < 0:
            raise ValueError(f"--dv-scale must be 0 or more, got {self.dv_scale}")
        for name in ("pair_class_count", "pair_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        if self.tune_min_channels is not None and self.tune_min_channels < 1:
            raise ValueError(
                f"--tune-min-channels must be positive, got {self.tune_min_channels}")
        from .occluders import check_pattern_settings, subset_ratio

        check_pattern_settings(self.occlusion_ratios, self.random_positions, self.pattern_seed)
        wanted = subset_ratio(self.pair_patterns)
        if wanted is not None:
            if not any(math.isclose(ratio, wanted) for ratio in self.occlusion_ratios):
                raise ValueError(f"--pair-patterns {self.pair_patterns} needs {wanted} among "
                                 "--occlusion-ratios")
        if self.occluders is not None and not os.path.isdir(self.occluders):
            raise ValueError(f"--occluders {self.occluders}: no such folder")
        if self.pair_classes is not None and len(set(map(str, self.pair_classes))) < len(
                self.pair_classes):
            raise ValueError("--pair-classes: a class is given twice")
        if self.pairs == "exclusive" and self.train_on_pairs:
            raise ValueError("--train-on-pairs needs --pairs inclusive: exclusive pairs are of "
                             "classes that are not trained on")
        if self.pairs == "exclusive" and self.pair_class_count != 10:
            raise ValueError("--pair-class-count applies to --pairs inclusive only (exclusive "
                             "pairs come from --pair-classes)")

    def resolve(self, backbone, active, dataset=None):
        if not active:
            return self
        named = getattr(dataset, "pair_classes", ()) if dataset is not None else ()
        pairs = self.pairs or ("exclusive" if self.pair_classes or named else "inclusive")
        pair_classes = self.pair_classes
        if pairs == "exclusive" and pair_classes is None:
            if not named:
                raise ValueError("--pairs exclusive needs --pair-classes: classes of the "
                                 "dataset that are not trained on")
            pair_classes = tuple(named)
        return dataclasses.replace(self, pairs=pairs, pair_classes=pair_classes)

    def tag(self):
        tag = "feataug" + ("-incl" if self.pairs == "inclusive" else "")
        tag += "-F" if self.train_on_pairs else ""
        tag += "" if self.pair_patterns == "full" else f"-{self.pair_patterns}"
        if self.dv_probability != 0.9:
            tag += f"-a{self.dv_probability:g}"
        if self.dv_scale != 1.0:
            tag += f"-b{self.dv_scale:g}"
        return tag

    def column(self):
        if self.dv_probability == 0:
            # Plain training (bit for bit) on the method's classes and training set.
            column = "baseline F" if self.train_on_pairs else "baseline"
        else:
            prefix = "F-" if self.train_on_pairs else "C-" if self.pairs == "inclusive" else ""
            column = f"feature aug. {prefix}{self.PATTERN_NAMES[self.pair_patterns]}"
        settings = [f"{name} {value:g}" for name, value, default in (
            ("alpha", self.dv_probability, 0.9), ("beta", self.dv_scale, 1.0))
            if value != default and not (name == "alpha" and value == 0)]
        return column + (f" ({', '.join(settings)})" if settings else "")

    def build(self, classifier, config, **addons):
        from .pairs import chosen_patterns
        from .schemes import FeatureAugmentationModel

        _, patterns = chosen_patterns(self)
        return FeatureAugmentationModel(
            classifier, self._pair_count(classifier.outputs[0].shape[-1]) * len(patterns),
            dv_probability=self.dv_probability, dv_scale=self.dv_scale, seed=config.seed,
            **addons)

    def _pair_count(self, num_classes):
        """The number of clean pair images a run draws."""
        if self.pair_classes is not None:
            classes = len(self.pair_classes)
        else:
            classes = min(self.pair_class_count, num_classes)
        return classes * self.pair_images

    def stages(self, config):
        if self.tune_min_channels is None:
            return [Stage()]
        minimum = self.tune_min_channels

        def wide_layers_only(model):
            from .stages import freeze_narrow_layers

            freeze_narrow_layers(model, minimum)

        return [Stage(trainable=wide_layers_only)]

    def training_classes(self, config):
        if self.pairs != "exclusive":
            return config.classes
        from .datasets import load_dataset
        from .pairs import refuse_trained_pairs

        listed = load_dataset(config.dataset, config.data_dir, None, **config.dataset_options())
        pairs = [(name, listed.class_index(name, "--pair-classes"))
                 for name in self.pair_classes]
        if config.classes is None:
            pair_indices = {index for _, index in pairs}
            return tuple(name for index, name in enumerate(listed.class_names)
                         if index not in pair_indices)
        refuse_trained_pairs(pairs, {listed.class_index(name) for name in config.classes})
        return config.classes

    def prepare_training(self, model, config, data, splits, log=None):
        from .pairs import draw_pairs, with_occluded_pairs
        from .schemes import RefreshBank

        pairs = draw_pairs(self, config, data, splits["train"], log)
        if len(pairs) != model.bank_size:
            from .errors import UserError

            raise UserError(f"the pair set has {len(pairs)} occluded images, but "
                            f"{model.bank_size} were expected")
        if self.train_on_pairs:
            splits = dict(splits, train=with_occluded_pairs(splits["train"], pairs))
        return Preparation(splits, [RefreshBank(pairs.clean, pairs.occluded, pairs.pair_of)],
                           pairs.record())


def _file_in(path, name):
    """``path`` itself, or the file ``name`` inside it if it is a folder."""
    return os.path.join(path, name) if os.path.isdir(path) else path


# ------------------------------------------------------------------ the add-ons


@register(ADDONS)
@dataclasses.dataclass
class HNC(Addon):
    """The homogeneous negative-CAM loss (Sun et al., 2020; PAPERS.md §4), added to
    any method's loss."""

    name = "hnc"
    title = "add-on: the homogeneous negative-CAM loss (Sun et al., 2020), with any method"
    hnc: str = option(
        "none", "add the homogeneous negative-CAM loss in this form to any method",
        choices=("none", *HNC_FORMS))
    hnc_weight: float | None = option(
        None, "weight of the HNC loss (default: 0.07 for mse, 0.005 for kd)")
    hnc_top_k: int | None = option(
        None, "negative classes per image in the HNC loss (default: ceil(0.1 x classes))")
    hnc_temperature: float = option(1.0, "temperature T of the kd form of the HNC loss")

    @property
    def active(self):
        return self.hnc != "none"

    def check(self):
        if self.hnc_weight is not None and self.hnc_weight < 0:
            raise ValueError(f"--hnc-weight must be 0 or more, got {self.hnc_weight}")
        if self.hnc_top_k is not None and self.hnc_top_k < 1:
            raise ValueError(f"--hnc-top-k must be positive, got {self.hnc_top_k}")
        if self.hnc_temperature <= 0:
            raise ValueError(f"--hnc-temperature must be positive, got {self.hnc_temperature}")
        if not self.active:
            self.check_unused("needs --hnc mse or --hnc kd")

    def resolve(self, backbone, active, dataset=None):
        if not self.active or self.hnc_weight is not None:
            return self
        return dataclasses.replace(self, hnc_weight=HNC_WEIGHTS[self.hnc])

    def for_classes(self, num_classes):
        if not self.active:
            return self
        top_k = self.hnc_top_k or default_top_k(num_classes)
        if not 1 <= top_k < num_classes:
            raise ValueError(f"--hnc-top-k {top_k} exceeds the {num_classes - 1} negative "
                             "classes")
        return dataclasses.replace(self, hnc_top_k=top_k)

    def scheme_kwargs(self):
        if not self.active:
            return {}
        return {"hnc": self.hnc, "hnc_weight": self.hnc_weight, "hnc_top_k": self.hnc_top_k,
                "hnc_temperature": self.hnc_temperature}

    def tag(self, tag):
        return tag if not self.active else f"{tag}-hnc_{self.hnc}"

    def column(self, column):
        if not self.active:
            return column
        return f"HNC-{self.hnc}" if column == "baseline" else f"{column} + HNC-{self.hnc}"
