"""Backbone registry and the plain classifier built on it.

Every classifier takes raw RGB images in [0, 1] and emits logits. The backbone's own
``preprocess_input`` is a frozen 1x1 convolution inside the model, so that occlusion
happens in the [0, 1] pixel space for every backbone (PAPERS.md §1, "value space")
and a saved model needs no custom code to load.

The graph is flat: the backbone's layers are wired directly onto the preprocessing
output (``input_tensor=``), so any layer, e.g. the last convolutional block used by
Grad-CAM, is reachable by name from the classifier.

This module imports Keras only inside functions: the registry is read by the
command line before TensorFlow is loaded.
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from .errors import UserError

# ImageNet statistics used by keras.applications' preprocess_input modes.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

# Weight sets shipped with the package (``SHIPPED_DIR/<backbone>-<name>.weights.h5``,
# recipe and SHA-256 in ``<backbone>-<name>.json``), rebuilt by ``pretrain.py``.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
# Backbone weights files name their backbone in this HDF5 attribute.
BACKBONE_ATTRIBUTE = "playing_distraction_backbone"
BACKBONE_FILE = "backbone.weights.h5"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the toolkit needs to know about a backbone.

    application: constructor name in ``keras.applications``, or None for the
        toolkit's own small CNN.
    preprocessing: the ``preprocess_input`` mode of keras.applications
        ("caffe", "tf" or "torch").
    last_conv: name of the last convolutional block, where Grad-CAM is taken.
    cam_module_layer: where the pairwise scheme attaches its CAM module: the input
        of the last down-sampling stage (14 x 14 maps at 224 px; PAPERS.md §3).
    input_size: default square input size.
    min_input_size: smallest input the architecture accepts.
    fusion_layer: where the hallucinated-saliency method modulates the features
        (``--fusion-layer``; PAPERS.md §2): the first layer at output stride 8, the
        resolution the paper found best for AlexNet (27 x 27 before pool-2); for
        ResNet "after the fourth residual block", read as one bottleneck block.
    saliency_shape: the saliency branch's shape (``layers.saliency_branch.SHAPES``)
        at the default input size.
    """

    name: str
    application: str | None
    preprocessing: str
    last_conv: str
    cam_module_layer: str
    input_size: int
    min_input_size: int
    description: str
    pretrained: str | None = None
    fusion_layer: str = ""
    saliency_shape: str = "alexnet"

    @property
    def has_imagenet_weights(self):
        return self.application is not None

    @property
    def default_weights(self):
        """``--weights`` when not given: ImageNet where keras.applications has it, else
        the shipped weight set, else random initialisation."""
        if self.has_imagenet_weights:
            return "imagenet"
        return self.pretrained or "none"

    def shipped_file(self, name):
        """The file of the shipped weight set ``name``, or None if it is not one."""
        return SHIPPED_DIR / f"{self.name}-{name}.weights.h5" if name == self.pretrained else None

    def check_input_size(self, size):
        """ValueError naming --image-size when ``size`` is below what the backbone takes."""
        if size < self.min_input_size:
            raise ValueError(f"--image-size {size} is below the {self.min_input_size} "
                             f"pixels that {self.name} needs")


BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "resnet50", "ResNet50", "caffe", "conv5_block3_out", "conv4_block6_out", 224, 32,
            "ResNet50 (He et al.), the paper's main backbone",
            fusion_layer="conv3_block1_out",
        ),
        BackboneSpec(
            "resnet152", "ResNet152", "caffe", "conv5_block3_out", "conv4_block36_out", 224, 32,
            "ResNet152 (He et al.), the backbone of the hallucinated-saliency paper",
            fusion_layer="conv3_block1_out",
        ),
        BackboneSpec(
            "inception_v3", "InceptionV3", "tf", "mixed10", "mixed7", 224, 75,
            "InceptionV3 (Szegedy et al.); the paper uses 224x224 inputs",
            fusion_layer="mixed0",
        ),
        BackboneSpec(
            "densenet121", "DenseNet121", "torch", "relu", "conv4_block24_concat", 224, 32,
            "DenseNet121 (Huang et al.)",
            fusion_layer="pool2_pool",
        ),
        BackboneSpec(
            "small_cnn", None, "tf", "features", "block2b", 32, 16,
            "a 5-layer CNN (about 0.15 M parameters) for the embedded demo and the "
            "tests on a CPU; pretrained on five Fashion-MNIST classes (--weights "
            "fashion-mnist-source, shipped)",
            pretrained="fashion-mnist-source", fusion_layer="block2b",
            saliency_shape="narrow",
        ),
    )
}


def get_backbone(name):
    """The registry entry for ``name``; a UserError lists the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(
            f"unknown backbone {name!r} (choose from {', '.join(BACKBONES)})"
        ) from None


def preprocessing_affine(mode):
    """(matrix, bias) with ``preprocess_input(255 * x) == x @ matrix + bias``.

    keras.applications' modes: "caffe" flips RGB to BGR and subtracts the ImageNet
    mean on the 0-255 scale; "tf" maps to [-1, 1]; "torch" standardises with the
    ImageNet mean and std on the 0-1 scale.
    """
    if mode == "caffe":
        matrix = 255.0 * np.eye(3)[:, ::-1]
        bias = -np.asarray(_CAFFE_MEAN_BGR)
    elif mode == "tf":
        matrix = 2.0 * np.eye(3)
        bias = -np.ones(3)
    elif mode == "torch":
        std = np.asarray(_TORCH_STD)
        matrix = np.diag(1.0 / std)
        bias = -np.asarray(_TORCH_MEAN) / std
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    return matrix.astype("float32"), bias.astype("float32")


def preprocessing_layer(mode, name="preprocess"):
    """A frozen float32 1x1 convolution applying ``preprocess_input`` to [0, 1] RGB.

    A standard Conv2D (rather than a custom layer) keeps the saved classifier
    loadable in a process that never imports this package; float32 keeps the
    0-255 arithmetic of the "caffe" mode exact under mixed precision.
    """
    import keras

    matrix, bias = preprocessing_affine(mode)
    return keras.layers.Conv2D(
        3, 1, name=name, trainable=False, dtype="float32",
        kernel_initializer=keras.initializers.Constant(matrix.reshape(1, 1, 3, 3)),
        bias_initializer=keras.initializers.Constant(bias),
    )


def _small_cnn_features(x):
    """Two conv stages and a final conv block; output stride 4 (8x8 at 32 px)."""
    from keras import layers

    def conv_bn_relu(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=name)(x)

    x = conv_bn_relu(x, 32, "block1a")
    x = conv_bn_relu(x, 32, "block1b")
    x = layers.MaxPooling2D(2, name="block1_pool")(x)
    x = conv_bn_relu(x, 64, "block2a")
    x = conv_bn_relu(x, 64, "block2b")
    x = layers.MaxPooling2D(2, name="block2_pool")(x)
    x = conv_bn_relu(x, 128, "features")
    return x


def _features(spec, x):
    """The backbone's feature map (its last conv block) on top of tensor ``x``."""
    import keras

    if spec.application is None:
        return _small_cnn_features(x)
    application = getattr(keras.applications, spec.application)
    return application(include_top=False, weights=None, input_tensor=x).output


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _standalone_features(spec, size, weights):
    """A features-only model holding the requested weights, to copy them from.

    Keras raises many exception types for a failed download or a bad file; both are
    problems the user can fix, so they become one UserError line.
    """
    import keras

    if weights == "imagenet":
        application = getattr(keras.applications, spec.application)
        try:
            return application(include_top=False, weights="imagenet", input_shape=(size, size, 3))
        except Exception as error:
            raise UserError(
                f"cannot get the ImageNet weights of {spec.name} ({_first_line(error)}); "
                "they are downloaded once into ~/.keras/models, or pass a local file "
                "with --weights"
            ) from None
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, _features(spec, inputs))
    try:
        model.load_weights(weights)
    except Exception as error:
        raise UserError(
            f"cannot load weights file {weights} into backbone {spec.name}: {_first_line(error)}"
        ) from None
    return model


def weights_file(spec, weights):
    """The file ``--weights`` names for backbone ``spec`` (a shipped set or a path), or
    None for "imagenet" and "none"."""
    if weights in ("imagenet", "none"):
        return None
    return spec.shipped_file(weights) or Path(weights)


def check_weights_file(spec, weights):
    """ValueError naming --weights when the file is not a Keras weights file (HDF5) or
    names another backbone (``BACKBONE_ATTRIBUTE``, written by ``save_backbone``)."""
    import h5py

    path = weights_file(spec, weights)
    if path is None:
        return
    if not path.is_file():
        raise ValueError(f"--weights {weights}: no such file (nor a weight set of {spec.name}: "
                         f"{spec.pretrained or 'it has none'})")
    try:
        with h5py.File(path, "r") as handle:
            saved = handle.attrs.get(BACKBONE_ATTRIBUTE)
    except OSError:
        raise ValueError(f"--weights {weights}: not a Keras weights file (HDF5, as "
                         "model.save_weights writes)") from None
    if isinstance(saved, bytes):
        saved = saved.decode("utf-8", "replace")
    if saved is not None and str(saved) != spec.name:
        raise ValueError(f"--weights {weights} holds a {saved} backbone, not {spec.name} "
                         f"(pass --backbone {saved}, or weights of {spec.name})")


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_backbone(classifier, backbone, path):
    """Write the classifier's backbone without its head (preprocessing input to the
    pooled feature map) as a weights file ``--weights`` takes: that of the
    features-only model ``build_classifier`` loads, named by ``BACKBONE_ATTRIBUTE``.
    ``path`` must end in ``.weights.h5`` (Keras' rule for weights files)."""
    import h5py
    import keras

    from .modulated import plain_classifier

    spec = get_backbone(backbone)
    size = classifier.input_shape[1]
    classifier = plain_classifier(classifier)  # the RGB branch of a modulated one
    view = keras.Model(classifier.get_layer("preprocess").output,
                       classifier.get_layer("head_pool").input)
    inputs = keras.Input((size, size, 3))
    standalone = keras.Model(inputs, _features(spec, inputs))
    _copy_weights(view, standalone, "of the classifier")
    standalone.save_weights(path)
    with h5py.File(path, "a") as handle:
        handle.attrs[BACKBONE_ATTRIBUTE] = spec.name


def _copy_weights(source, target, origin):
    """Copy by position: both models come from the same builder, so their weights are
    listed in the same order. (Names would not do: InceptionV3 leaves most layers to
    Keras' process-wide counters, so a second build gets other names.)"""
    values = source.get_weights()
    variables = target.weights
    if len(values) != len(variables) or any(
        tuple(v.shape) != w.shape for v, w in zip(variables, values)
    ):
        raise UserError(f"the weights {origin} do not fit the backbone's architecture")
    target.set_weights(values)


def build_classifier(backbone, num_classes, image_size=None, weights="none"):
    """The plain classifier: [0, 1] RGB -> preprocessing -> backbone -> GAP -> logits.

    backbone: a registry name (see ``BACKBONES``).
    weights: "imagenet", "none" (random initialisation), the name of a weight set
        shipped for the backbone (``BackboneSpec.pretrained``) or the path of a
        weights file of the backbone's features-only model (``include_top=False``),
        as saved by ``model.save_weights`` or ``save_backbone``.
    The head is global average pooling and a float32 linear layer, so Grad-CAM at
    the last conv block equals CAM (PAPERS.md §1) and logits stay float32 under
    mixed precision.
    """
    import keras

    spec = get_backbone(backbone)
    size = spec.input_size if image_size is None else image_size
    try:
        spec.check_input_size(size)
    except ValueError as error:
        raise UserError(str(error)) from None
    if weights == "imagenet" and not spec.has_imagenet_weights:
        raise UserError(
            f"backbone {spec.name} has no ImageNet weights; use --weights none or a weights file"
        )
    try:
        check_weights_file(spec, weights)
    except ValueError as error:
        raise UserError(str(error)) from None

    inputs = keras.Input((size, size, 3), name="image")
    preprocessed = preprocessing_layer(spec.preprocessing)(inputs)
    features = _features(spec, preprocessed)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(pooled)
    model = keras.Model(inputs, logits, name=f"{spec.name}_classifier")
    if weights != "none":
        # A view of the classifier's backbone part shares its variables.
        backbone_view = keras.Model(preprocessed, features)
        source = weights if weights == "imagenet" else str(weights_file(spec, weights))
        _copy_weights(_standalone_features(spec, size, source), backbone_view, weights)
    return model
