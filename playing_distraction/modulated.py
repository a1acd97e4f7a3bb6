"""The modulated classifier of the hallucinated-saliency method (PAPERS.md §2; seed 001,
Sec. 3): a plain classifier whose features at a fusion layer are multiplied by
``s + 1``, with s the map a saliency branch hallucinates from the image.

The modulated classifier is still one flat functional Keras model (raw [0, 1] RGB ->
logits): the plain classifier's graph is re-traced (``keras.models.clone_model``)
with a ``SaliencyBranch`` on the image and a ``SaliencyModulation`` after the fusion
layer, and the plain weights are copied over by layer name. So every layer keeps its
name, Grad-CAM and every other method work on it, and it saves as a ``.keras`` file
that loads after ``import playing_distraction.layers`` (which registers the layers).

The branch sees the image as the backbone sees it, after the backbone's own
preprocessing, as the paper's two branches share one input: for the ResNets, the
mean-subtracted 0-255 BGR image of Caffe, AlexNet's own input. (The scale matters: the
branch is a ReLU network without biases at its Glorot start, so its map scales with
its input; on [0, 1] images it would start about 255 times weaker.)

The branch's weights are kept in their own file (``BRANCH_FILE``, written by every
saliency run), which names the backbone, fusion layer, branch shape and image size
it fits in HDF5 attributes; step 2 starts from it.
"""

import json
from pathlib import Path

import h5py
import keras
import numpy as np

from .backbones import BACKBONE_ATTRIBUTE
from .choices import BRANCH_FILE
from .errors import UserError
from .layers import SaliencyBranch, SaliencyModulation

BRANCH = "saliency_branch"
MODULATION = "saliency_modulation"
# --saliency-source of the keras.applications ImageNet classifier.
IMAGENET = "imagenet"
IMAGENET_CLASSES = 1000
# The layers of the plain classifier around its backbone (``backbones.build_classifier``).
_NOT_BACKBONE = ("image", "preprocess", "head_pool", "logits")
# HDF5 attributes of a branch file: what the branch must fit.
_BRANCH_ATTRIBUTES = ("fusion_layer", "conv_layers", "shape", "image_size")


def fusion_output(classifier, name):
    """The output tensor of the fusion layer ``name``; ValueError naming
    --fusion-layer when the classifier's backbone has no such layer or its output is
    not a 4-D feature map."""
    if name in _NOT_BACKBONE:
        raise ValueError(f"--fusion-layer {name}: not a layer of the backbone")
    try:
        layer = classifier.get_layer(name)
    except ValueError:
        raise ValueError(f"--fusion-layer {name}: {classifier.name} has no layer of that "
                         "name") from None
    shape = layer.output.shape
    if len(shape) != 4:
        raise ValueError(f"--fusion-layer {name}: its output has shape {tuple(shape)}, not "
                         "a feature map (batch, height, width, channels)")
    return layer.output


def has_saliency(classifier):
    return any(isinstance(layer, SaliencyModulation) for layer in classifier.layers)


def modulated_classifier(classifier, fusion_layer, conv_layers=4, shape="alexnet", seed=None):
    """A copy of the plain ``classifier`` (same weights) with its ``fusion_layer``'s
    output modulated by a new, Glorot-initialised saliency branch (``seed``).
    ValueError naming the flag on a fusion layer or branch that does not fit."""
    height, width = fusion_output(classifier, fusion_layer).shape[1:3]
    branch = SaliencyBranch((height, width), conv_layers, shape, seed=seed, name=BRANCH)
    _check_branch_fits(conv_layers, shape, classifier.input_shape[1])
    images = []

    def call(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        if layer.name == "preprocess":  # the image as the backbone sees it
            images.append(output)
        if layer.name == fusion_layer:
            output = SaliencyModulation(name=MODULATION)([output, branch(images[0])])
        return output

    model = keras.models.clone_model(classifier, call_function=call)
    _copy_by_name(classifier, model)
    return model


def _check_branch_fits(conv_layers, shape, image_size):
    """ValueError naming --image-size when the branch's convolutions and pooling leave
    no pixel of an ``image_size`` image."""
    from .layers.saliency_branch import POOLED, SHAPES

    size = image_size
    for index, (_, kernel, stride) in enumerate(SHAPES[shape][:conv_layers]):
        if index == 0:
            size = (size - kernel) // stride + 1
        if index in POOLED:
            size = (size - 3) // 2 + 1
        if size < 1:
            raise ValueError(
                f"--image-size {image_size} is too small for a {conv_layers}-layer "
                f"{shape} saliency branch (try --saliency-shape narrow or fewer "
                "--saliency-convs)")


def plain_classifier(classifier):
    """The classifier without its saliency branch and modulation (same weights,
    fresh layers): the RGB branch alone, as a plain classifier."""
    if not has_saliency(classifier):
        return classifier

    def call(layer, *args, **kwargs):
        if isinstance(layer, SaliencyBranch):
            return None
        if isinstance(layer, SaliencyModulation):
            return args[0][0]
        return layer(*args, **kwargs)

    model = keras.models.clone_model(classifier, call_function=call)
    _copy_by_name(classifier, model)
    return model


def _copy_by_name(source, target):
    for layer in source.layers:
        try:
            counterpart = target.get_layer(layer.name)
        except ValueError:
            continue
        counterpart.set_weights(layer.get_weights())


def branch_of(classifier):
    return classifier.get_layer(BRANCH)


def save_branch(classifier, path, backbone, fusion_layer):
    """Write the saliency branch's weights and what they fit (``_BRANCH_ATTRIBUTES``,
    the backbone) to the HDF5 file ``path``."""
    branch = branch_of(classifier)
    with h5py.File(path, "w") as handle:
        for index, value in enumerate(branch.get_weights()):
            handle.create_dataset(f"weight_{index:02d}", data=value)
        handle.attrs[BACKBONE_ATTRIBUTE] = backbone
        handle.attrs["fusion_layer"] = fusion_layer
        handle.attrs["conv_layers"] = branch.conv_layers
        handle.attrs["shape"] = branch.shape
        handle.attrs["image_size"] = classifier.input_shape[1]


def read_branch(path):
    """(attributes, weights) of a branch file; UserError if it is not one."""
    try:
        with h5py.File(path, "r") as handle:
            attributes = {key: _text(value) for key, value in handle.attrs.items()}
            weights = [np.asarray(handle[name]) for name in sorted(handle.keys())]
    except OSError:
        raise UserError(f"--saliency-branch {path}: not a saliency branch file (HDF5, as "
                        f"a saliency run's {BRANCH_FILE})") from None
    missing = [key for key in (BACKBONE_ATTRIBUTE, *_BRANCH_ATTRIBUTES) if key not in attributes]
    if missing:
        raise UserError(f"--saliency-branch {path}: not a saliency branch file (it does not "
                        f"record its {', '.join(missing)})")
    return attributes, weights


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def load_branch(classifier, path, backbone, fusion_layer):
    """Set the saliency branch of ``classifier`` from the branch file ``path``;
    UserError naming the flag that differs when the file was trained for another
    backbone, fusion layer, branch or image size."""
    attributes, weights = read_branch(path)
    branch = branch_of(classifier)
    wanted = {BACKBONE_ATTRIBUTE: backbone, "fusion_layer": fusion_layer,
              "conv_layers": branch.conv_layers, "shape": branch.shape,
              "image_size": classifier.input_shape[1]}
    flags = {BACKBONE_ATTRIBUTE: "--backbone", "fusion_layer": "--fusion-layer",
             "conv_layers": "--saliency-convs", "shape": "--saliency-shape",
             "image_size": "--image-size"}
    for key, value in wanted.items():
        if str(attributes[key]) != str(value):
            raise UserError(
                f"--saliency-branch {path} was trained with {flags[key]} {attributes[key]}, "
                f"this run has {value} (pass {flags[key]} {attributes[key]})")
    expected = [tuple(variable.shape) for variable in branch.weights]
    if [value.shape for value in weights] != expected:
        raise UserError(f"--saliency-branch {path}: its weights do not fit the branch")
    branch.set_weights(weights)


def train_only_branch(model):
    """Stage hook of step 1: only the saliency branch of ``model`` (a classifier or a
    scheme around one) trains; frozen BatchNormalization layers run in inference
    mode, so nothing but the branch changes."""
    for layer in _classifier_layers(model):
        layer.trainable = isinstance(layer, SaliencyBranch)


def freeze_branch(model):
    """Stage hook of Approach A: everything but the saliency branch trains."""
    for layer in _classifier_layers(model):
        if isinstance(layer, SaliencyBranch):
            layer.trainable = False


def source_classifier(path, config, num_classes, class_names):
    """The source classifier of step 1 from its ``.keras`` file ``path`` (a run's
    model.keras, or a classifier built by ``backbones.build_classifier``); UserError
    naming the flag when it is damaged or does not fit the run: another backbone,
    image size or number of classes, a branch already, or - where its run folder's
    config.json says - other classes."""
    from .runs import damaged_model, saved_model_problem

    if path == IMAGENET:
        return imagenet_classifier(config, num_classes)
    problem = saved_model_problem(path)
    if problem:
        raise damaged_model(path, problem)
    try:
        model = keras.models.load_model(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        text = str(error).strip().splitlines()
        raise UserError(f"--saliency-source {path}: cannot load it as a Keras model "
                        f"({text[0] if text else type(error).__name__})") from None
    flag = f"--saliency-source {path}"
    backbone = model.name.removesuffix("_classifier")
    if backbone != config.backbone or not all(
            name in (layer.name for layer in model.layers) for name in _NOT_BACKBONE):
        raise UserError(f"{flag} is not a {config.backbone} classifier of this toolkit "
                        f"(its model is named {model.name}; pass --backbone {backbone}?)")
    if has_saliency(model):
        raise UserError(f"{flag} has a saliency branch already; step 1 starts from a plain "
                        "classifier")
    if model.input_shape[1] != config.image_size:
        raise UserError(f"{flag} takes {model.input_shape[1]}-pixel images, this run "
                        f"{config.image_size} (pass --image-size {model.input_shape[1]})")
    if model.output_shape[-1] != num_classes:
        raise UserError(f"{flag} has {model.output_shape[-1]} classes, the source set "
                        f"{num_classes}; train it on these classes")
    recorded = Path(path).parent / "config.json"
    try:
        names = json.loads(recorded.read_text()).get("class_names")
    except (OSError, ValueError, AttributeError):
        names = None
    if names is not None and list(names) != list(class_names):
        raise UserError(f"{flag} was trained on other classes ({', '.join(map(str, names))}) "
                        f"than this run's ({', '.join(map(str, class_names))}), or in "
                        "another order")
    return model


def imagenet_classifier(config, num_classes):
    """The backbone's ``keras.applications`` ImageNet classifier as a classifier of this
    toolkit: ImageNet backbone weights and the application's own top (its 1,000-class
    Dense layer) as the head. The source set's classes must be ImageNet's, in Keras'
    order (sorted WordNet ids, as ``--dataset folder`` lists ``n01440764``, ...)."""
    from .backbones import _first_line, build_classifier, get_backbone

    spec = get_backbone(config.backbone)
    flag = f"--saliency-source {IMAGENET}"
    if not spec.has_imagenet_weights:
        raise UserError(f"{flag}: backbone {spec.name} has no ImageNet weights")
    if num_classes != IMAGENET_CLASSES:
        raise UserError(f"{flag} needs the {IMAGENET_CLASSES} ImageNet classes as the source "
                        f"set, in Keras' order; this one has {num_classes}")
    model = build_classifier(spec.name, num_classes, config.image_size, "imagenet")
    application = getattr(keras.applications, spec.application)
    try:
        top = application(include_top=True, weights="imagenet").layers[-1]
    except Exception as error:  # a failed download or file: one line, as build_classifier
        raise UserError(f"{flag}: cannot get the ImageNet classifier of {spec.name} "
                        f"({_first_line(error)})") from None
    model.get_layer("logits").set_weights(top.get_weights())
    return model


def _classifier_layers(model):
    classifier = getattr(model, "classifier", model)
    return classifier.layers
