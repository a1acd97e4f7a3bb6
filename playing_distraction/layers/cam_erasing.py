"""CAM erasing of the pairwise-consistency scheme (PAPERS.md §3; Wang et al., Eq. 2)."""

import keras
import tensorflow as tf

from ..heatmaps import normalize_per_image, resize_bilinear
from ..occlusion import occlude


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
