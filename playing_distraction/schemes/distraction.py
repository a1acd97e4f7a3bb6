"""The playing-to-distraction scheme (Morales et al., 2021; PAPERS.md §1)."""

import keras
import tensorflow as tf

from ..heatmaps import GradCAM
from ..occlusion import FILLS, occlude, occlusion_mask
from .base import TrainingScheme, as_pictures, true_classes

# The seed of the random fill in ``illustrate``: a stateless draw, the same at every
# call, so that the pictures differ by the weights only and training's seed
# generator is never drawn from.
ILLUSTRATION_SEED = 0


@keras.saving.register_keras_serializable(package="playing_distraction")
class DistractionModel(TrainingScheme):
    """Playing to distraction (Morales et al., 2021, Sec. 3, Algorithm 1).

    Per training batch, one Bernoulli(probability) draw: on success, Grad-CAM of
    every image for its ground-truth class is computed with the current weights in
    inference mode (``training=False``: BatchNorm statistics are neither used from
    the batch nor updated), pixels with heat > threshold are replaced by ``fill``,
    and the step trains on the occluded batch instead of the clean one. Otherwise
    the step trains on the clean batch, so probability = 0 is plain training.

    classifier: a functional model, [0, 1] images -> logits (``build_classifier``).
    layer_name: Grad-CAM layer; default: the last 4-D layer (last conv block).
    seed: seeds the Bernoulli draws and the random fill.
    Further keyword arguments (``hnc``, ...) go to ``TrainingScheme``: the HNC loss
    is then added on the batch the step trains on.

    Reported metrics: ``occluded_steps`` (share of steps that occluded) and
    ``occluded_area`` (mean share of pixels occluded on those steps).
    """

    def __init__(
        self, classifier, probability=0.25, threshold=0.85, fill="zero",
        layer_name=None, seed=None, **kwargs,
    ):
        super().__init__(classifier, **kwargs)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r} (choose from {', '.join(FILLS)})")
        self.probability = float(probability)
        self.threshold = float(threshold)
        self.fill = fill
        self.layer_name = layer_name
        self.seed = seed
        self.heatmaps = GradCAM(classifier, layer_name)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.occluded_steps = keras.metrics.Mean(name="occluded_steps")
        self.occluded_area = keras.metrics.Mean(name="occluded_area")

    def training_metric_names(self):
        return super().training_metric_names() | {"occluded_steps", "occluded_area"}

    def hot_pixels(self, images, labels):
        """Boolean (B, H, W) mask of each image's pixels whose Grad-CAM heat for its
        true class is above the threshold (inference mode, current weights)."""
        return occlusion_mask(self.heatmaps(images, true_classes(labels)), self.threshold)

    def occlude_batch(self, images, labels):
        """The batch with each image's hottest pixels (for its true class) filled."""
        mask = self.hot_pixels(images, labels)
        occluded = occlude(images, mask, self.fill, seed=self.seed_generator)
        area = tf.reduce_mean(tf.cast(mask, tf.float32))
        return tf.cast(occluded, images.dtype), area

    def illustrate(self, images, labels):
        """The occlusion mask ("mask", white where occluded) and the occluded batch
        ("occluded") that a step which draws an occlusion would train on; the random
        fill is drawn with ``ILLUSTRATION_SEED`` (see ``TrainingScheme.illustrate``)."""
        images = tf.convert_to_tensor(images, tf.float32)
        mask = self.hot_pixels(images, labels)
        occluded = occlude(images, mask, self.fill, seed=ILLUSTRATION_SEED)
        return {**super().illustrate(images, labels), "mask": as_pictures(mask),
                "occluded": occluded}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.probability > 0.0:
            x = tf.convert_to_tensor(x)
            draw = keras.random.uniform((), seed=self.seed_generator) < self.probability
            x, area = tf.cond(
                draw, lambda: self.occlude_batch(x, y), lambda: (x, tf.constant(0.0))
            )
            occluded = tf.cast(draw, tf.float32)
        else:
            area = occluded = tf.constant(0.0)
        self.occluded_steps.update_state(occluded)
        self.occluded_area.update_state(area, sample_weight=occluded)
        return super().train_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    def get_config(self):
        config = super().get_config()
        config.update(
            probability=self.probability,
            threshold=self.threshold,
            fill=self.fill,
            layer_name=self.layer_name,
            seed=self.seed,
        )
        return config
