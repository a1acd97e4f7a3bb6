"""Training schemes: ``keras.Model`` subclasses that change what one training step does.

A scheme wraps a plain classifier (``build_classifier``) and knows nothing about files
or flags: compile and fit it on any ``tf.data.Dataset`` of (images in [0, 1], labels).
What is saved for users is ``scheme.classifier``.
"""

import keras
import tensorflow as tf

from .heatmaps import GradCAM
from .occlusion import FILLS, occlude, occlusion_mask

_SCHEME_METRICS = ("occluded_steps", "occluded_area")


def true_classes(y):
    """(B,) int32 class indices from sparse labels (B,) / (B, 1) or one-hot (B, K)."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] not in (None, 1):
        return tf.argmax(y, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(y, tf.int32), [-1])


@keras.saving.register_keras_serializable(package="playing_distraction")
class DistractionModel(keras.Model):
    """Playing to distraction (Morales et al., 2021, Sec. 3, Algorithm 1).

    Per training batch, one Bernoulli(probability) draw: on success, Grad-CAM of
    every image for its ground-truth class is computed with the current weights in
    inference mode (``training=False``: BatchNorm statistics are neither used from
    the batch nor updated), pixels with heat > threshold are replaced by ``fill``,
    and the step trains on the occluded batch instead of the clean one. Otherwise
    the step is Keras' own ``train_step``, so probability = 0 is plain training.

    classifier: a functional model, [0, 1] images -> logits (``build_classifier``).
    layer_name: Grad-CAM layer; default: the last 4-D layer (last conv block).
    seed: seeds the Bernoulli draws and the random fill.

    Reported metrics: ``occluded_steps`` (share of steps that occluded) and
    ``occluded_area`` (mean share of pixels occluded on those steps).
    """

    def __init__(
        self, classifier, probability=0.25, threshold=0.85, fill="zero",
        layer_name=None, seed=None, **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r} (choose from {', '.join(FILLS)})")
        self.classifier = classifier
        self.probability = float(probability)
        self.threshold = float(threshold)
        self.fill = fill
        self.layer_name = layer_name
        self.seed = seed
        self.heatmaps = GradCAM(classifier, layer_name)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.occluded_steps = keras.metrics.Mean(name="occluded_steps")
        self.occluded_area = keras.metrics.Mean(name="occluded_area")

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def occlude_batch(self, images, labels):
        """The batch with each image's hottest pixels (for its true class) filled."""
        heat = self.heatmaps(images, true_classes(labels))
        mask = occlusion_mask(heat, self.threshold)
        occluded = occlude(images, mask, self.fill, seed=self.seed_generator)
        area = tf.reduce_mean(tf.cast(mask, tf.float32))
        return tf.cast(occluded, images.dtype), area

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

    def test_step(self, data):
        # Evaluation never occludes: leave the scheme's counters out of its logs.
        logs = super().test_step(data)
        return {name: value for name, value in logs.items() if name not in _SCHEME_METRICS}

    def get_config(self):
        config = super().get_config()
        config.update(
            classifier=keras.layers.serialize(self.classifier),
            probability=self.probability,
            threshold=self.threshold,
            fill=self.fill,
            layer_name=self.layer_name,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.layers.deserialize(config["classifier"])
        return cls(**config)
