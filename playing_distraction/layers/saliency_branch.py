"""The saliency branch of the hallucinated-saliency method (PAPERS.md §2; seed 001,
Sec. 3.2 and Fig. 2)."""

import keras

# (filters, kernel size, stride) of the branch's convolutions. "alexnet": AlexNet's
# conv1-conv4, as in the paper (13 x 13 x 384 at 227 px); "narrow": the same layout
# with 3 x 3 kernels, stride 1 and fewer channels, for small_cnn at 32 px (7 x 7).
SHAPES = {
    "alexnet": ((96, 11, 4), (256, 5, 1), (384, 3, 1), (384, 3, 1)),
    "narrow": ((32, 3, 1), (64, 3, 1), (96, 3, 1), (96, 3, 1)),
}
# AlexNet max-pools (3 x 3, stride 2) after its first and second convolutions.
POOLED = (0, 1)


@keras.saving.register_keras_serializable(package="playing_distraction")
class SaliencyBranch(keras.layers.Layer):
    """Hallucinates a saliency map from an image: ``conv_layers`` convolutions (ReLU,
    AlexNet's pooling after the first two), a 1 x 1 convolution to one channel, ReLU,
    and bilinear upsampling to ``output_size``, the fusion layer's (h, w). Returns a
    (B, h, w, 1) map >= 0.

    conv_layers: 1-4, the first of ``SHAPES[shape]`` (the paper found 4 best, Fig. 2).
    Kernels are Glorot (Xavier) uniform, seeded from ``seed`` (one seed per
    convolution), biases zero. The first convolution is unpadded, as AlexNet's; the
    others keep their size.
    """

    def __init__(self, output_size, conv_layers=4, shape="alexnet", seed=None, **kwargs):
        super().__init__(**kwargs)
        if shape not in SHAPES:
            raise ValueError(f"unknown saliency branch shape {shape!r} (choose from "
                             f"{', '.join(SHAPES)})")
        if not 1 <= int(conv_layers) <= len(SHAPES[shape]):
            raise ValueError(f"the saliency branch takes 1 to {len(SHAPES[shape])} "
                             f"convolutional layers, got {conv_layers}")
        self.output_size = tuple(int(size) for size in output_size)
        self.conv_layers = int(conv_layers)
        self.shape = shape
        self.seed = seed
        self.steps = []
        for index, (filters, kernel, stride) in enumerate(SHAPES[shape][:self.conv_layers]):
            self.steps.append(keras.layers.Conv2D(
                filters, kernel, strides=stride, activation="relu",
                padding="valid" if index == 0 else "same", name=f"conv{index + 1}",
                kernel_initializer=self._glorot(index), dtype=self.dtype_policy))
            if index in POOLED:
                self.steps.append(keras.layers.MaxPooling2D(3, 2, name=f"pool{index + 1}",
                                                            dtype=self.dtype_policy))
        self.to_map = keras.layers.Conv2D(
            1, 1, activation="relu", name="to_map", kernel_initializer=self._glorot(4),
            dtype=self.dtype_policy)

    def _glorot(self, index):
        return keras.initializers.GlorotUniform(None if self.seed is None else self.seed + index)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for step in (*self.steps, self.to_map):
            step.build(shape)
            shape = step.compute_output_shape(shape)

    def call(self, images):
        x = images
        for step in self.steps:
            x = step(x)
        return keras.ops.image.resize(self.to_map(x), self.output_size,
                                      interpolation="bilinear")

    def compute_output_spec(self, images):
        return keras.KerasTensor((images.shape[0], *self.output_size, 1),
                                 self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=list(self.output_size), conv_layers=self.conv_layers,
                      shape=self.shape, seed=self.seed)
        return config
