"""CAM erasing with pairwise consistency (Wang et al.; PAPERS.md §3)."""

import keras
import tensorflow as tf

from ..choices import PAIRWISE_LOSSES
from ..layers import CAMErasing, CAMModule
from ..losses import attention_mining, cross_entropy, kl_divergence
from .base import TrainingScheme


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

    def illustrate(self, images, labels):
        """The erased batch ("erased"): each image with the regions where the CAM
        module's map of the predicted class is above gamma set to 0 (Eq. 2), in
        inference mode (see ``TrainingScheme.illustrate``)."""
        images = tf.convert_to_tensor(images, tf.float32)
        outputs = self.network(images, training=False)
        _, cams = self.cam_module(outputs["stage"])
        erased, _ = self.erasing.erase(images, cams, outputs["logits"])
        return {**super().illustrate(images, labels), "erased": tf.cast(erased, tf.float32)}

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
