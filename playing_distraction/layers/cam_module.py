"""The CAM module of the pairwise-consistency scheme (PAPERS.md §3; Wang et al., Sec. 4)."""

import keras

from ..heatmaps import class_activation_maps


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
