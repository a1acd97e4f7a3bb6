"""Saliency modulation of the hallucinated-saliency method (PAPERS.md §2; seed 001,
Eq. 2-3)."""

import keras


@keras.saving.register_keras_serializable(package="playing_distraction")
class SaliencyModulation(keras.layers.Layer):
    """``l * (s + 1)``: a (B, h, w, C) feature map l modulated by a (B, h, w, 1)
    saliency map s, one map for every channel; the "+ 1" is a skip connection, so a
    zero map leaves the features unchanged.

    Called on ``[features, saliency]``. The gradient into l is the incoming gradient
    times (s + 1) (Eq. 3); into s it is the incoming gradient times l, summed over
    the channels, so the saliency branch learns from the classification loss. The
    map is cast to the features' dtype (mixed precision).
    """

    def call(self, inputs):
        features, saliency = inputs
        saliency = keras.ops.cast(saliency, features.dtype)
        return features * (saliency + 1)

    def compute_output_spec(self, inputs):
        features = inputs[0]
        return keras.KerasTensor(features.shape, features.dtype)
