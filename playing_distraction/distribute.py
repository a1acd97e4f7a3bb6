"""Training on several devices: the strategy, and BatchNormalization over the global batch.

Under ``tf.distribute.MirroredStrategy`` every replica runs the training step on its
share of the global batch. Keras scales each replica's loss by 1 / replicas and the
strategy sums the gradients, so the update is the one-device update of the global
batch; the schemes add no loss of their own outside ``compute_loss``, so this holds
for them too. What does not carry over by itself is BatchNormalization: by default
each replica normalises with the statistics of its own share (8 images when a batch
of 16 is split over two GPUs), not of the batch the paper normalised over. With
``sync_batchnorm`` the classifier's BatchNormalization layers are swapped for
``SyncBatchNormalization``, whose batch statistics span all replicas, so two devices
train as one; the saved classifier has plain BatchNormalization layers again.
"""

import keras
import tensorflow as tf

from .choices import STRATEGIES
from .layers import SyncBatchNormalization

# SyncBatchNormalization lives with the other layers and is re-exported here, beside
# with_batchnorm that swaps it in and out.
__all__ = ["STRATEGIES", "SyncBatchNormalization", "make_strategy", "with_batchnorm"]

_MIRRORED = {}


def make_strategy(name):
    """The tf.distribute strategy called ``name``.

    "none": the default (one device). "mirrored": ``MirroredStrategy`` over every GPU,
    or, on a machine without one, over every logical CPU device (one, unless the
    process split the CPU with ``tf.config.set_logical_device_configuration``).
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tuple(device.name for device in (tf.config.list_logical_devices("GPU")
                                                   or tf.config.list_logical_devices("CPU")))
        # One strategy per device set and process: a new MirroredStrategy numbers its
        # collectives from the start again, and TensorFlow then paired them with
        # those of an earlier strategy's runs (--repeats, or several train_main
        # calls): "Shape mismatch in the collective instance" on the next run.
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
        return _MIRRORED[devices]
    raise ValueError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")


def with_batchnorm(model, layer_class):
    """A copy of functional ``model`` with every BatchNormalization layer (plain or
    synchronised) rebuilt as ``layer_class``, and the same weights; other layers are
    rebuilt from their configs. The graph, layer names and weight order are kept."""

    def rebuild(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = layer.get_config()
            config["synchronized"] = False
            return layer_class.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=rebuild)
    copy.set_weights(model.get_weights())
    return copy
