"""Layers of the pairwise-consistency scheme (PAPERS.md §3; Wang et al., Sec. 4).

``CAMModule`` is the side branch whose class activation maps choose what to erase;
``CAMErasing`` erases, in the input images, the regions where the CAM of the
predicted class is above gamma. Both are registered, so a model holding them
saves and loads with ``keras.saving``; the classifier users get holds neither.
"""

import keras
import tensorflow as tf

from .heatmaps import class_activation_maps, normalize_per_image, resize_bilinear
from .occlusion import occlude


@keras.saving.register_keras_serializable(package="playing_distraction")
class CAMModule(keras.layers.Layer):
    """CAM module: 1x1 convolution -> global average pooling -> linear classifier.

    Called on a (B, h, w, C) feature map, returns ``(logits, cams)``: the module's
    (B, K) class logits and its (B, h, w, K) class activation maps
    M^k = sum_c W^k_c A_c, with A the convolution's output and W the classifier's
    kernel (Wang et al., Eq. 1). The bias is left out of the maps, so the spatial
    mean of ``cams[..., k]`` is ``logits[:, k]`` minus the bias of class k.

    num_classes: K.
    filters: channels of the 1x1 convolution (the paper leaves it open; the pairwise
        scheme defaults to the channels of the feature map it is attached to).
    activation: of the convolution; ReLU (default) keeps A non-negative, as in the
        CAM of Zhou et al. (2016).
    seed: seeds the initial kernels (Glorot uniform), so they do not depend on what
        else drew from Keras' global seed before.
    The classifier is float32, so logits and maps stay float32 under mixed precision.
    """

    def __init__(self, num_classes, filters, activation="relu", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.filters = int(filters)
        self.activation = activation
        self.seed = seed
        self.conv = keras.layers.Conv2D(
            self.filters, 1, activation=activation, dtype=self.dtype_policy, name="conv",
            kernel_initializer=keras.initializers.GlorotUniform(seed))
        self.classifier = keras.layers.Dense(
            self.num_classes, dtype="float32", name="classifier",
            kernel_initializer=keras.initializers.GlorotUniform(None if seed is None else seed + 1))

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.classifier.build((input_shape[0], self.filters))

    def call(self, features):
        maps = self.conv(features)
        logits = self.classifier(keras.ops.mean(maps, axis=(1, 2)))
        return logits, class_activation_maps(maps, self.classifier.kernel)

    def compute_output_spec(self, features):
        batch, height, width = features.shape[:3]
        return (keras.KerasTensor((batch, self.num_classes), "float32"),
                keras.KerasTensor((batch, height, width, self.num_classes), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, filters=self.filters,
                      activation=self.activation, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="playing_distraction")
class CAMErasing(keras.layers.Layer):
    """Erases the most activated regions of the predicted class (Wang et al., Eq. 2).

    Called as ``layer(images, cams, logits, training=...)``: per image, the CAM of the
    class the logits predict (arg max, not the ground truth: the paper erases what
    the model looks at), min-max normalised at the CAM's resolution, resized
    bilinearly (corners aligned, ``heatmaps.resize_bilinear``) to the image size;
    pixels where it is above ``gamma`` (strictly) become 0 in every channel, in the
    [0, 1] pixel space the classifiers take. At inference (``training`` false) the
    layer returns the images unchanged.

    The mask is boolean, so no gradient flows through the maps or the logits into
    the choice of pixels; gradients reach the kept pixels unchanged. The layer
    computes in float32 whatever the global policy (as the images the classifiers
    take are): under mixed_float16, float16 maps and logits would round ties into
    the predicted class and flip pixels at the threshold.
    """

    def __init__(self, gamma=0.7, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.gamma = float(gamma)

    def mask(self, cams, logits, size):
        """Boolean (B, H, W) mask of the pixels to erase, for images of ``size`` (H, W)."""
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        cam = tf.gather(tf.transpose(tf.cast(cams, tf.float32), (0, 3, 1, 2)),
                        predicted[:, None], batch_dims=1)[:, 0]
        return resize_bilinear(normalize_per_image(cam), size) > self.gamma

    def erase(self, images, cams, logits):
        """(the erased images, the boolean mask of erased pixels): the training-mode
        output together with its mask, from one computation of the mask."""
        images = tf.convert_to_tensor(images)
        mask = self.mask(cams, logits, tf.shape(images)[1:3])
        return occlude(images, mask, "zero"), mask

    def call(self, images, cams, logits, training=None):
        if not training:
            return images
        return self.erase(images, cams, logits)[0]

    def compute_output_spec(self, images, cams, logits, training=None):
        return keras.KerasTensor(images.shape, images.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma)
        return config
