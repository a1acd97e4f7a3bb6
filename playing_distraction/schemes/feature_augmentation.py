"""Deep feature augmentation for occluded images (Cen et al., 2021; PAPERS.md §5)."""

import keras
import numpy as np
import tensorflow as tf

from .base import TrainingScheme


@keras.saving.register_keras_serializable(package="playing_distraction")
class FeatureAugmentationModel(TrainingScheme):
    """Training on deep feature vectors shifted by occlusion difference vectors
    (Cen et al., 2021, Sec. 3.2-3.3, Fig. 4; PAPERS.md §5).

    The deep feature vector (DFV) is the classifier's pooled feature, the input of
    its last linear layer. A bank holds the difference vectors d = DFV(occluded) -
    DFV(clean) of a set of clean/occluded image pairs (``refresh_bank``, at the
    start of every epoch, with the weights of then and BatchNormalization in
    inference mode: the paper's per-epoch refreshed copy of the backbone). In
    every step, each training image's DFV v becomes v + ``dv_scale`` * d, with d
    drawn uniformly from the bank with probability ``dv_probability`` and the zero
    vector otherwise, and the classifier's linear layer classifies that. Only
    this flow back-propagates: the bank is a constant of the step.

    classifier: a functional model whose head is global average pooling + a linear
        layer (``build_classifier``).
    bank_size: the number of difference vectors (pairs × patterns).
    dv_probability: alpha, the probability of shifting a DFV (0: plain training).
    dv_scale: beta.
    seed: seeds the draws (which DFVs are shifted, and by which vector).
    Further keyword arguments (``hnc``, ...) go to ``TrainingScheme``; the HNC
    loss is taken on the feature map, which the shift does not touch.

    Reported metric: ``shifted_share``, the share of the batch's DFVs shifted.
    ``illustrate`` is the base's: the shift acts on features, not on images.
    """

    def __init__(self, classifier, bank_size, dv_probability=0.9, dv_scale=1.0, seed=None,
                 **kwargs):
        if not 0.0 <= dv_probability <= 1.0:
            raise ValueError(f"dv_probability must be in [0, 1], got {dv_probability}")
        if int(bank_size) < 1:
            raise ValueError(f"the difference-vector bank needs at least one pair, got "
                             f"{bank_size}")
        super().__init__(classifier, taps={}, **kwargs)
        self.bank_size = int(bank_size)
        self.dv_probability = float(dv_probability)
        self.dv_scale = float(dv_scale)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Not trained, but a variable: it is saved in every checkpoint, so a resumed
        # run continues with the bank of its last epoch.
        self.bank = self.add_weight(shape=(self.bank_size, self.head.kernel.shape[0]),
                                    initializer="zeros", trainable=False, dtype="float32",
                                    name="dv_bank")
        self._dfv = None

    def term_names(self):
        return super().term_names() + ["shifted_share"]

    def training_outputs(self, images):
        outputs = self.network(images, training=True)
        pooled = outputs["pooled"]
        batch = tf.shape(pooled)[0]
        draws = keras.random.randint((batch,), 0, self.bank_size, seed=self.seed_generator)
        shifted = keras.random.uniform((batch,), seed=self.seed_generator) < self.dv_probability
        vectors = tf.where(shifted[:, None], tf.gather(self.bank, draws),
                           tf.zeros_like(self.bank[:1]))
        shift = tf.cast(self.dv_scale * vectors, pooled.dtype)
        outputs = dict(outputs, logits=self.head(pooled + shift),
                       shifted=tf.cast(shifted, tf.float32))
        return self._with_cams(outputs)

    def loss_terms(self, labels, outputs):
        yield from super().loss_terms(labels, outputs)
        yield "shifted_share", None, outputs["shifted"]

    def deep_features(self, images, batch_size=64):
        """The DFVs (N, D) float32 of uint8 or [0, 1] float ``images``, in inference
        mode."""
        if self._dfv is None:
            network = self.network

            def features(batch):
                return tf.cast(network(batch, training=False)["pooled"], tf.float32)

            self._dfv = tf.function(features, reduce_retracing=True)
        images = np.asarray(images)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        chunks = [self._dfv(tf.constant(np.asarray(images[start:start + batch_size],
                                                   np.float32) / scale))
                  for start in range(0, len(images), batch_size)]
        return np.concatenate([chunk.numpy() for chunk in chunks])

    def difference_vectors(self, clean, occluded, pair_of, batch_size=64):
        """d = DFV(occluded[i]) - DFV(clean[pair_of[i]]) for every occluded image."""
        return (self.deep_features(occluded, batch_size)
                - self.deep_features(clean, batch_size)[np.asarray(pair_of)])

    def refresh_bank(self, clean, occluded, pair_of, batch_size=64):
        """Recompute the bank from the pairs with the current weights."""
        vectors = self.difference_vectors(clean, occluded, pair_of, batch_size)
        if vectors.shape != tuple(self.bank.shape):
            raise ValueError(f"{len(vectors)} difference vectors of {vectors.shape[1]} "
                             f"values for a bank of shape {tuple(self.bank.shape)}")
        self.bank.assign(vectors)

    def get_config(self):
        config = super().get_config()
        config.update(bank_size=self.bank_size, dv_probability=self.dv_probability,
                      dv_scale=self.dv_scale, seed=self.seed)
        return config


class RefreshBank(keras.callbacks.Callback):
    """Refreshes a ``FeatureAugmentationModel``'s bank at the start of every epoch
    (Cen et al., 2021, Sec. 3.3) from uint8 ``clean`` images and their ``occluded``
    versions (``pair_of[i]``: the clean image of ``occluded[i]``)."""

    def __init__(self, clean, occluded, pair_of, batch_size=64):
        super().__init__()
        self.clean, self.occluded = clean, occluded
        self.pair_of = np.asarray(pair_of)
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.model.refresh_bank(self.clean, self.occluded, self.pair_of, self.batch_size)
