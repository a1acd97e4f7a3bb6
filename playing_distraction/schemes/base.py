"""The base training scheme: plain training, optionally with the HNC loss, and the
contract every scheme follows (PAPERS.md §4 for HNC).

A scheme keeps Keras' own ``train_step`` (gradient tape, loss scaling under mixed
precision, loss scaling across replicas, optimizer, metrics) and changes what it is
fed or what it adds up: in training, ``call`` returns a dict of the outputs the
loss needs (``training_outputs``), ``compute_loss`` adds the per-image terms that
``loss_terms`` yields to the compiled loss of the classifier's logits, and
``compute_metrics`` sees the logits. Each term is also reported as a metric of its
own, in training only. ``illustrate`` draws what the scheme does to a batch, for a
person to see (``train.py --tensorboard``).
"""

import weakref

import keras
import tensorflow as tf

from ..choices import HNC_FORMS, HNC_WEIGHTS, default_top_k
from ..heatmaps import class_activation_maps, linear_head, normalize_per_image, resize_bilinear
from ..losses import homogeneous_negative_cam
from ..modulated import BRANCH, has_saliency


def true_classes(y):
    """(B,) int32 class indices from sparse labels (B,) / (B, 1) or one-hot (B, K)."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] not in (None, 1):
        return tf.argmax(y, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(y, tf.int32), [-1])


def as_pictures(maps):
    """(B, H, W) maps in [0, 1] -> (B, H, W, 3) float32 grey pictures."""
    return tf.tile(tf.cast(maps, tf.float32)[..., None], [1, 1, 1, 3])


# The sub-model up to the saliency branch of a modulated classifier, built once per
# classifier; kept here rather than on the scheme, so that the scheme's variables (its
# checkpoints) stay the same.
_SALIENCY_PROBES = weakref.WeakKeyDictionary()


def _saliency_probe(classifier):
    if classifier not in _SALIENCY_PROBES:
        _SALIENCY_PROBES[classifier] = keras.Model(
            classifier.inputs[0], classifier.get_layer(BRANCH).output,
            name=f"{classifier.name}_saliency")
    return _SALIENCY_PROBES[classifier]


def batch_mean(values, sample_weight=None):
    """The loss of per-image ``values`` as Keras reduces a compiled loss: the weighted
    sum over the batch size, scaled by 1 / replicas under a distribution strategy
    (whose gradients are then summed over the replicas)."""
    values = tf.cast(values, tf.float32)
    if sample_weight is not None:
        values = values * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    mean = tf.reduce_sum(values) / tf.cast(tf.shape(values)[0], tf.float32)
    return mean / tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="playing_distraction")
class TrainingScheme(keras.Model):
    """Plain training of ``classifier``, with the HNC loss if ``hnc`` is set.

    HNC (Sun et al., 2020; PAPERS.md §4): the CAMs of every class are the last
    feature map through the classifier's linear layer (weights and bias) as a 1x1
    convolution; per image, the ``hnc_top_k`` negative classes with the largest
    spatial sum of their CAM are kept, and ``hnc_weight`` x the ``mse`` or ``kd``
    form (``losses.homogeneous_negative_cam``) is added to the cross-entropy.

    classifier: a functional model, [0, 1] images -> logits. With ``hnc`` (and in
        the pairwise scheme) its head must be global average pooling + a linear
        layer, as ``build_classifier`` makes it.
    hnc: None, "mse" or "kd".
    hnc_weight: default 0.07 for mse, 0.005 for kd (the authors').
    hnc_top_k: default ⌈0.1 K⌉; at most K - 1.
    hnc_temperature: T of the kd form.
    taps: for subclasses: {name: layer name} of further feature maps that the
        training outputs carry ({}: none, but the head's pooled features and
        feature map, as with HNC).

    Reported metric: ``hnc_loss`` (the unweighted term).
    """

    def __init__(self, classifier, hnc=None, hnc_weight=None, hnc_top_k=None,
                 hnc_temperature=1.0, taps=None, **kwargs):
        super().__init__(**kwargs)
        if hnc not in (None, *HNC_FORMS):
            raise ValueError(f"unknown HNC form {hnc!r} (choose from {', '.join(HNC_FORMS)})")
        if hnc is None and (hnc_weight is not None or hnc_top_k is not None
                            or hnc_temperature != 1.0):
            raise ValueError("hnc_weight, hnc_top_k and hnc_temperature need hnc='mse' or 'kd'")
        self.classifier = classifier
        self.hnc = hnc
        self.hnc_weight = (None if hnc is None else
                           float(HNC_WEIGHTS[hnc] if hnc_weight is None else hnc_weight))
        self.hnc_temperature = float(hnc_temperature)
        self.hnc_top_k = hnc_top_k
        self.network = None
        if hnc is not None or taps is not None:
            head = linear_head(classifier)
            if head is None:
                raise ValueError(
                    f"{classifier.name}: CAMs from the classifier's weights need a head of "
                    "global average pooling and a linear Dense layer (see build_classifier)")
            self.head = head[0]
            num_classes = self.head.units
            if hnc is not None:
                self.hnc_top_k = default_top_k(num_classes) if hnc_top_k is None else int(hnc_top_k)
                if not 1 <= self.hnc_top_k <= num_classes - 1:
                    raise ValueError(f"hnc_top_k must be in [1, {num_classes - 1}] (the negative "
                                     f"classes of {num_classes}), got {self.hnc_top_k}")
                if self.hnc_weight < 0 or self.hnc_temperature <= 0:
                    raise ValueError("hnc_weight must be 0 or more and hnc_temperature positive")
            outputs = {"logits": classifier.outputs[0], "pooled": head[1], "features": head[2]}
            for name, layer_name in (taps or {}).items():
                outputs[name] = classifier.get_layer(layer_name).output
            # Built once, sharing the classifier's layers and weights (STYLE habit 3).
            self.network = keras.Model(classifier.inputs, outputs, name=f"{classifier.name}_taps")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.term_names()]

    def term_names(self):
        """Names of the per-image terms reported as metrics (see ``loss_terms``)."""
        return ["hnc_loss"] if self.hnc else []

    def call(self, inputs, training=None):
        if not training:
            return self.classifier(inputs, training=training)
        return self.training_outputs(inputs)

    def training_outputs(self, images):
        """The dict of training-mode outputs that ``loss_terms`` reads; "logits" always."""
        if self.network is None:
            return {"logits": self.classifier(images, training=True)}
        return self._with_cams(self.network(images, training=True))

    def _with_cams(self, outputs):
        if self.hnc:
            outputs = dict(outputs, cams=class_activation_maps(
                outputs["features"], self.head.kernel, self.head.bias))
        return outputs

    def illustrate(self, images, labels):
        """What the scheme does to a batch, as pictures (the ``--tensorboard`` panels):
        {name: (B, H, W, 3) float32 in [0, 1]} for [0, 1] ``images`` and their labels.

        Computed in inference mode with the current weights, and deterministic: no
        weight or BatchNormalization statistic changes and no seed generator draws, so
        illustrating never changes training. Graph-safe. Plain training does nothing
        to its images ({}), but a classifier with a saliency branch (PAPERS.md §2)
        shows the map it hallucinates ("saliency"), resized to the image and min-max
        normalised per image, in grey.
        """
        if not has_saliency(self.classifier):
            return {}
        images = tf.convert_to_tensor(images, tf.float32)
        maps = tf.cast(_saliency_probe(self.classifier)(images, training=False), tf.float32)
        maps = resize_bilinear(maps[..., 0], tf.shape(images)[1:3])
        return {"saliency": as_pictures(normalize_per_image(maps))}

    def loss_terms(self, labels, outputs):
        """(name, weight, per-image values) of each term; weight None: reported only."""
        if self.hnc:
            yield "hnc_loss", self.hnc_weight, homogeneous_negative_cam(
                labels, outputs["cams"], self.hnc_top_k, self.hnc, self.hnc_temperature)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):  # evaluation: the classifier's logits
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = super().compute_loss(x, y, y_pred["logits"], sample_weight, training=training)
        trackers = {tracker.name: tracker for tracker in self.term_trackers}
        for name, weight, values in self.loss_terms(true_classes(y), y_pred):
            trackers[name].update_state(values, sample_weight=sample_weight)
            if weight is not None:
                loss = loss + weight * batch_mean(values, sample_weight)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def training_metric_names(self):
        return set(self.term_names())

    def test_step(self, data):
        # Evaluation trains nothing: leave the scheme's training metrics out of its logs.
        logs = super().test_step(data)
        hidden = self.training_metric_names()
        return {name: value for name, value in logs.items() if name not in hidden}

    def get_config(self):
        config = super().get_config()
        config.update(
            classifier=keras.layers.serialize(self.classifier),
            hnc=self.hnc,
            hnc_weight=self.hnc_weight,
            hnc_top_k=self.hnc_top_k,
            hnc_temperature=self.hnc_temperature,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.layers.deserialize(config["classifier"])
        return cls(**config)
