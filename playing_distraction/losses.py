"""Per-image loss terms of the CAM-based schemes, as graph-safe TensorFlow functions.

Each function returns one value per image (shape (B,)); the schemes take their
batch mean. Logits and maps are float32.

- ``cross_entropy``: sparse categorical cross-entropy of logits.
- ``kl_divergence``: KL(q || p) between the softmax distributions of two logit
  batches, the instance-level pairwise consistency (PAPERS.md §3; Wang et al., Eq. 3).
- ``attention_mining``: the predicted probability of the true class on the erased
  image, to be minimised (Li et al., GAIN; the ablation of Wang et al., Table 6).
- ``homogeneous_negative_cam``: the HNC loss (PAPERS.md §4; Sun et al., 2020).
"""

import tensorflow as tf

from .choices import HNC_FORMS


def cross_entropy(labels, logits):
    """-log softmax(logits)[label] per image."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def kl_divergence(target_logits, logits):
    """KL(q || p) = sum_k q_k (log q_k - log p_k) per image, with q = softmax(logits)
    (the erased image's prediction) and p = softmax(target_logits) (the original's).
    Computed from log-softmax, so it is exact where a probability underflows."""
    log_q = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    log_p = tf.nn.log_softmax(tf.cast(target_logits, tf.float32))
    return tf.reduce_sum(tf.exp(log_q) * (log_q - log_p), axis=-1)


def attention_mining(labels, logits):
    """softmax(logits)[label] per image."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
    return tf.gather(probabilities, tf.cast(labels, tf.int32)[:, None], batch_dims=1)[:, 0]


def negative_cams(labels, cams, top_k):
    """The (B, k, h, w) CAMs of each image's ``top_k`` negative classes (every class
    but its label), ranked by the spatial sum of their CAM, highest first."""
    classes = cams.shape[-1]
    if classes is not None and not 1 <= top_k < classes:
        raise ValueError(f"top_k must be in [1, {classes - 1}] (the negative classes of "
                         f"{classes}), got {top_k}")
    cams = tf.cast(cams, tf.float32)
    sums = tf.reduce_sum(cams, axis=(1, 2))
    positive = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(cams)[-1], on_value=True,
                          off_value=False)
    sums = tf.where(positive, tf.constant(-float("inf")), sums)
    negatives = tf.math.top_k(sums, k=top_k, sorted=True).indices
    return tf.gather(tf.transpose(cams, (0, 3, 1, 2)), negatives, batch_dims=1)


def homogeneous_negative_cam(labels, cams, top_k, form="mse", temperature=1.0):
    """The HNC loss per image, from the (B, h, w, K) CAMs of every class.

    mse: the mean squared value of the kept negative CAMs (their peaks pushed to 0);
        the batch mean is the mean over every kept map and position.
    kd: for each kept class, the cross-entropy between the uniform distribution over
        the h w positions and the softmax over positions of CAM / temperature,
        summed over the kept classes; the batch mean divides that sum by the batch
        size, as the authors' code does. Its floor is k log(h w), reached by flat maps.
    """
    if form not in HNC_FORMS:
        raise ValueError(f"unknown HNC form {form!r} (choose from {', '.join(HNC_FORMS)})")
    kept = negative_cams(labels, cams, top_k)
    if form == "mse":
        return tf.reduce_mean(tf.square(kept), axis=(1, 2, 3))
    shape = tf.shape(kept)
    flat = tf.reshape(kept, (shape[0], shape[1], shape[2] * shape[3])) / temperature
    return tf.reduce_sum(-tf.reduce_mean(tf.nn.log_softmax(flat, axis=-1), axis=-1), axis=-1)
