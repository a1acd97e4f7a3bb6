"""tf.data pipelines from in-memory uint8 images: to [0, 1] RGB at the model's size.

Decoded, resized images are cached in memory; training batches are shuffled with a
seed (the same seed gives the same batches) and drop the last incomplete batch, so
every step sees a full batch of the configured size.
"""

import tensorflow as tf


def to_model_input(image, size):
    """uint8 (H, W) or (H, W, C) -> float32 (size, size, 3) in [0, 1]."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    image = tf.cast(image, tf.float32) / 255.0
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    # Antialiasing matters only when shrinking; when enlarging it equals plain
    # bilinear up to float rounding (white would come out as 0.9999999).
    shrinking = image.shape[0] is None or min(image.shape[0], image.shape[1]) > size
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=shrinking)
    return tf.clip_by_value(image, 0.0, 1.0)


def make_dataset(part, image_size, batch_size, training, seed=None):
    """Batches of (images, labels) from a ``datasets.Part``.

    training=True: reshuffled every epoch from ``seed``, incomplete last batch dropped.
    training=False: in order, every image kept.
    """
    dataset = tf.data.Dataset.from_tensor_slices((part.images, part.labels.astype("int32")))
    dataset = dataset.map(
        lambda image, label: (to_model_input(image, image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).cache()
    if training:
        dataset = dataset.shuffle(len(part), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
