"""BatchNormalization over the global batch under a distribution strategy (``distribute.py``)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="playing_distraction")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training statistics are those of the global batch.

    In a replica context with more than one replica, the mean and variance are
    all-reduced over the replicas in two passes (the sum first, then the sum of
    squared deviations from the global mean), which keeps float32 precision where
    ``BatchNormalization(synchronized=True)``'s E[x^2] - E[x]^2 loses it on
    channels whose mean is large next to their spread. Elsewhere (one device,
    inference, masks) it is BatchNormalization. As in ``tf.nn.moments``, no gradient
    flows into the variance through the mean. The all-reduce is differentiable,
    so each replica's gradient includes the other replicas' share through the
    statistics, as on one device.
    """

    def _moments(self, inputs, mask):
        context = tf.distribute.get_replica_context()
        if mask is not None or context is None or context.num_replicas_in_sync == 1:
            return super()._moments(inputs, mask)
        axes = list(self._reduction_axes)
        shape = tf.shape(inputs)
        count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), inputs.dtype)
        local = tf.concat([tf.reduce_sum(inputs, axes), count[None]], axis=0)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        count = total[-1]
        mean = total[:-1] / count
        # As in tf.nn.moments: d variance / d mean is zero in exact arithmetic, and
        # stopping it keeps float32 rounding of sum(x - mean) out of the gradient.
        deviations = tf.reduce_sum(tf.square(inputs - tf.stop_gradient(mean)), axes)
        variance = context.all_reduce(tf.distribute.ReduceOp.SUM, deviations) / count
        return mean, variance
