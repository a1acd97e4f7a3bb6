"""Training schemes: ``keras.Model`` subclasses that change what one training step does.

A scheme wraps a plain classifier (``build_classifier``) and knows nothing about files
or flags: compile and fit it on any ``tf.data.Dataset`` of (images in [0, 1], labels).
What is saved for users is ``scheme.classifier``.

- ``TrainingScheme``: plain training, optionally with the homogeneous negative-CAM
  loss (PAPERS.md §4); the base of the others.
- ``DistractionModel``: playing to distraction (PAPERS.md §1).
- ``PairwiseModel``: CAM erasing with pairwise consistency (PAPERS.md §3).

The schemes keep Keras' own ``train_step`` (gradient tape, loss scaling under mixed
precision, loss scaling across replicas, optimizer, metrics) and change what it
is fed or what it adds up: in training, ``call`` returns a dict of the outputs
the loss needs, ``compute_loss`` adds the scheme's terms to the compiled loss of
the classifier's logits, and ``compute_metrics`` sees the logits. Each term is
also reported as a metric of its own, in training only.
"""

import keras
import tensorflow as tf

from .config import HNC_WEIGHTS, default_top_k
from .heatmaps import GradCAM, class_activation_maps, linear_head
from .layers import CAMErasing, CAMModule
from .losses import (
    HNC_FORMS, attention_mining, cross_entropy, homogeneous_negative_cam, kl_divergence,
)
from .occlusion import FILLS, occlude, occlusion_mask


def true_classes(y):
    """(B,) int32 class indices from sparse labels (B,) / (B, 1) or one-hot (B, K)."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] not in (None, 1):
        return tf.argmax(y, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(y, tf.int32), [-1])


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
        training outputs carry.

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
        if hnc is not None or taps:
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


PAIRWISE_LOSSES = ("full", "category", "instance", "attention_mining")


@keras.saving.register_keras_serializable(package="playing_distraction")
class PairwiseModel(TrainingScheme):
    """CAM erasing with pairwise consistency (Wang et al.; PAPERS.md §3).

    One step: the batch I goes through the classifier (prediction p) and, from the
    ``module_layer`` feature map, through a ``CAMModule`` (prediction r). The CAM of
    the class p predicts erases the regions above ``gamma`` (``CAMErasing``), and the
    erased batch I* goes through the same backbone and a linear classifier of its own
    (prediction q). The loss (Eq. 3), by ``pairwise_loss``:

    - full: CE(p, y) + CE(r, y) + alpha CE(q, y) + beta KL(q || p)
    - category (category-level consistency only): without the KL term
    - instance (instance-level consistency only): without alpha CE(q, y)
    - attention_mining (the ablation of Table 6): CE(p, y) + CE(r, y) + alpha q_y,
      with q from the *main* classifier on I*, as in GAIN (Li et al.): with a head
      of its own the erased branch could lower q_y without touching the backbone.

    The erasing mask carries no gradient; the KL term back-propagates into both
    predictions. The CAM module and the erased head are training-only: the saved
    model is ``scheme.classifier``, and inference is the classifier alone.

    module_layer: the classifier layer the CAM module is attached to (registry
        default: the input of the last down-sampling stage, ResNet50
        ``conv4_block6_out``).
    module_filters: channels of the CAM module's 1x1 convolution (default: those of
        the module layer).
    seed: seeds the initial weights of the CAM module and the erased head, so they
        are the same whatever drew from Keras' global seed before (e.g. the
        BatchNormalization swap under a distribution strategy).
    Further keyword arguments (``hnc``, ...) go to ``TrainingScheme``; the HNC loss
    is then taken on the original batch.

    Reported metrics: ``side_loss`` CE(r, y), ``erased_loss`` CE(q, y), ``kl_loss``
    KL(q || p) or ``attention_mining_loss`` q_y, as the variant has them, and
    ``erased_area`` (mean share of pixels erased), all unweighted.
    """

    def __init__(self, classifier, module_layer, gamma=0.7, alpha=1.0, beta=2.0,
                 pairwise_loss="full", module_filters=None, seed=None, **kwargs):
        if pairwise_loss not in PAIRWISE_LOSSES:
            raise ValueError(f"unknown pairwise loss {pairwise_loss!r} (choose from "
                             f"{', '.join(PAIRWISE_LOSSES)})")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be 0 or more, got {alpha} and {beta}")
        self.pairwise_loss = pairwise_loss
        super().__init__(classifier, taps={"stage": module_layer}, **kwargs)
        stage = classifier.get_layer(module_layer).output
        if len(stage.shape) != 4:
            raise ValueError(f"layer {module_layer} has output shape {stage.shape}; the CAM "
                             "module needs a (batch, h, w, channels) feature map")
        self.module_layer = module_layer
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.module_filters = module_filters
        self.seed = seed
        num_classes = self.head.units
        self.cam_module = CAMModule(num_classes, module_filters or stage.shape[-1], seed=seed,
                                    name="cam_module")
        self.cam_module.build(stage.shape)
        self.erasing = CAMErasing(gamma, name="cam_erasing")
        self.erasing.build(classifier.inputs[0].shape)  # no weights; built, for Keras
        self.erased_head = None
        if pairwise_loss != "attention_mining":
            self.erased_head = keras.layers.Dense(
                num_classes, dtype="float32", name="erased_logits",
                kernel_initializer=keras.initializers.GlorotUniform(
                    None if seed is None else seed + 2))
            self.erased_head.build((None, self.head.kernel.shape[0]))

    def term_names(self):
        names = super().term_names() + ["side_loss"]
        if self.pairwise_loss in ("full", "category"):
            names.append("erased_loss")
        if self.pairwise_loss in ("full", "instance"):
            names.append("kl_loss")
        if self.pairwise_loss == "attention_mining":
            names.append("attention_mining_loss")
        return names + ["erased_area"]

    def training_outputs(self, images):
        images = tf.convert_to_tensor(images)
        outputs = self._with_cams(self.network(images, training=True))
        side_logits, cams = self.cam_module(outputs["stage"])
        logits = outputs["logits"]
        # The layer's own training-mode output, with the mask it erased for the metric.
        erased_images, mask = self.erasing.erase(images, cams, logits)
        erased = self.network(erased_images, training=True)
        erased_logits = (erased["logits"] if self.erased_head is None
                         else self.erased_head(erased["pooled"]))
        return dict(outputs, side_logits=side_logits, erased_logits=erased_logits,
                    erased_area=tf.reduce_mean(tf.cast(mask, tf.float32), axis=(1, 2)))

    def loss_terms(self, labels, outputs):
        yield from super().loss_terms(labels, outputs)
        erased = outputs["erased_logits"]
        yield "side_loss", 1.0, cross_entropy(labels, outputs["side_logits"])
        if self.pairwise_loss in ("full", "category"):
            yield "erased_loss", self.alpha, cross_entropy(labels, erased)
        if self.pairwise_loss in ("full", "instance"):
            yield "kl_loss", self.beta, kl_divergence(outputs["logits"], erased)
        if self.pairwise_loss == "attention_mining":
            yield "attention_mining_loss", self.alpha, attention_mining(labels, erased)
        yield "erased_area", None, outputs["erased_area"]

    def get_config(self):
        config = super().get_config()
        config.update(
            module_layer=self.module_layer,
            gamma=self.gamma,
            alpha=self.alpha,
            beta=self.beta,
            pairwise_loss=self.pairwise_loss,
            module_filters=self.module_filters,
            seed=self.seed,
        )
        return config
