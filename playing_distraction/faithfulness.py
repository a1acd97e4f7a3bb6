"""Faithfulness of Grad-CAM heat maps to the classifier they explain.

Two families of metrics, batched in TensorFlow on a classifier that maps raw [0, 1]
RGB images to logits:

- Deletion and insertion (Petsiuk et al., 2018, "RISE", Sec. 4.1): the softmax
  probability of a class as the pixels are removed (deletion) or put back into a
  blurred copy (insertion) in the order of the heat map, ``step`` pixels at a time;
  the measure is the area under that curve (``auc``).
- ROAD (Rong et al., 2022, "A consistent and efficient evaluation strategy for
  attribution methods", ICML), without retraining: the accuracy after removing a
  percentage of the most (MoRF) or least (LeRF) relevant pixels and filling them by
  noisy linear imputation, each removed pixel the weighted mean of its 8 neighbours.

Decisions (faithfulness_spec.md):
- Class explained: deletion and insertion explain and score the model's top-1 class
  on the clean image (Petsiuk's class of interest); ROAD explains the true label and
  scores accuracy (Rong et al.).
- Pixel order: heat descending, ties by ascending flat index (a stable sort).
- Deletion substrate: 0 (default) or the image's own per-channel mean.
- Insertion blur: separable Gaussian with zero padding as in Petsiuk's code, sigma
  5 * H / 224 and kernel length 2 ceil(sigma) + 1 (their sigma 5, length 11 at 224 px,
  scaled to the image size).
- ROAD percentiles 10, 20, ..., 90 of the pixels, noise std 0.01 on the [0, 1] scale,
  no clipping; the noise of an image is a stateless draw from (seed, its position in
  the test set), so results do not depend on batching.
- The imputation system is solved directly (block Cholesky over image rows in
  float32, refined with float64 residuals; ``_linear_fill``), not by conjugate
  gradients: the factors serve all channels at once and the error is ~1e-8 whatever
  the mask. On the 18 ROAD masks of 32 px images it took a quarter of the CPU time of
  Jacobi-preconditioned conjugate gradients run to 1e-5 (about 90 iterations).
- Images per model call are bounded (``MODEL_BATCH`` and ``_MODEL_PIXELS``), so
  memory stays bounded at 224 px too.
"""

import math

import numpy as np
import tensorflow as tf

from .faithfulness_reports import DEFAULT_PERCENTILES, SUBSTRATES, FaithfulnessSettings
from .heatmaps import GradCAM

# FaithfulnessSettings lives in faithfulness_reports (no TensorFlow: evaluate.py checks
# its flags before importing TensorFlow); it is part of this module's API too.
__all__ = ["pixel_order", "auc", "gaussian_blur", "causal_curves", "noisy_linear_impute",
           "road_correct", "faithfulness_of_model", "FaithfulnessSettings", "SUBSTRATES",
           "DEFAULT_PERCENTILES"]

# Step images per model call in the drivers (``batch_size``), and at most this many
# pixels per call: 1024 images at 32 px, 20 at 224 px, so that memory stays bounded.
MODEL_BATCH = 256
_MODEL_PIXELS = 2 ** 20
# Elements of one stored factor (rows x systems x block x block) per imputation call.
_FACTOR_ELEMENTS = 2 ** 24
# Iterative refinement of the imputation: until a correction is at most this, and at
# most this many steps.
_REFINED, _MAX_REFINEMENTS = 1e-5, 4
# ROAD's neighbour weights: direct (up/down/left/right) and diagonal neighbours.
_DIRECT, _DIAGONAL = 1.0 / 6.0, 1.0 / 12.0


def pixel_order(heat):
    """(B, H*W) int32 flat pixel indices (row * W + col) of (B, H, W) heat maps, most
    relevant first: heat descending, ties by ascending index. Graph-safe."""
    heat = tf.convert_to_tensor(heat)
    if not heat.dtype.is_floating:
        heat = tf.cast(heat, tf.float32)
    flat = tf.reshape(heat, [tf.shape(heat)[0], -1])
    return tf.argsort(-flat, axis=-1, stable=True)


def _pixel_rank(heat):
    """(B, H, W) int32: each pixel's position in ``pixel_order`` (0 = most relevant)."""
    rank = tf.argsort(pixel_order(heat), axis=-1, stable=True)  # the inverse permutation
    return tf.reshape(rank, tf.shape(heat)[:3])


def auc(curve):
    """Trapezoidal area under each row of (B, n + 1) curves, over x in [0, 1] with n + 1
    equally spaced points: (sum(y) - y[0] / 2 - y[-1] / 2) / n. NumPy, float64."""
    curve = np.asarray(curve, np.float64)
    steps = curve.shape[-1] - 1
    if steps < 1:
        raise ValueError(f"a curve needs at least 2 points, got {curve.shape[-1]}")
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / steps


def _gaussian_kernel(sigma):
    """Petsiuk's 1-D blur kernel, normalised: exp(-(k - r)^2 / (2 sigma^2)), k < klen,
    r = klen // 2, klen = 2 ceil(sigma) + 1."""
    length = 2 * math.ceil(sigma) + 1
    offsets = np.arange(length) - length // 2
    kernel = np.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return kernel / kernel.sum()


def _blur_matrix(size, kernel):
    """(size, size) matrix of a 1-D convolution with ``kernel`` and zero padding."""
    radius = len(kernel) // 2
    index = tf.range(size)
    tap = index[None, :] - index[:, None] + radius  # kernel tap joining output i, input k
    inside = (tap >= 0) & (tap < len(kernel))
    weights = tf.gather(tf.constant(kernel, tf.float32), tf.clip_by_value(tap, 0, len(kernel) - 1))
    return tf.where(inside, weights, 0.0)


def gaussian_blur(images, sigma):
    """(B, H, W, C) images blurred per channel by the separable Gaussian of insertion
    (Petsiuk et al., 2018: zero padding, as their conv2d with padding klen // 2).
    Graph-safe; ``sigma`` (pixels) is a Python number > 0."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"the blur's sigma must be a positive number, got {sigma}")
    images = tf.convert_to_tensor(images, tf.float32)
    kernel = _gaussian_kernel(sigma)
    rows = _blur_matrix(tf.shape(images)[1], kernel)
    cols = _blur_matrix(tf.shape(images)[2], kernel)
    return tf.einsum("ih,bhwc,jw->bijc", rows, images, cols)


def _any_size(*arrays):
    """TensorSpecs of ``arrays`` with any leading size. The drivers trace their step
    function for these first, so one trace per model serves every batch and chunk."""
    return [tf.TensorSpec([None, *np.shape(array)[1:]], tf.as_dtype(array.dtype))
            for array in arrays]


@tf.function(reduce_retracing=True)
def _curve_probabilities(model, images, blurred, fill, rank, classes, image_index, count):
    """Deletion and insertion probabilities (P, 2) of P (image, pixels moved) pairs, the
    2 P step images scored in one model call."""
    clean = tf.gather(images, image_index)
    moved = (tf.gather(rank, image_index) < count[:, None, None])[..., None]
    deleted = tf.where(moved, tf.gather(fill, image_index), clean)
    inserted = tf.where(moved, clean, tf.gather(blurred, image_index))
    logits = model(tf.concat([deleted, inserted], 0), training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
    explained = tf.gather(classes, image_index)
    scores = tf.gather(probabilities, tf.concat([explained, explained], 0)[:, None],
                       batch_dims=1)[:, 0]
    return tf.stack(tf.split(scores, 2), axis=1)


def causal_curves(model, images, heat, classes, step=None, substrate="zero", sigma=None,
                  batch_size=MODEL_BATCH):
    """Deletion and insertion curves (Petsiuk et al., 2018, Sec. 4.1).

    images: (B, H, W, C) float in [0, 1]; heat: (B, H, W); classes: (B,) the class
    scored per image. step: pixels moved per step (default W); after i steps the first
    min(i step, H W) pixels of ``pixel_order(heat)`` are deleted (set to the
    substrate: 0, or the image's per-channel mean) or inserted (the clean pixels put
    into the blurred image; ``gaussian_blur``, sigma default 5 H / 224).
    batch_size: step images per model call (fewer for large images).
    Returns {"deletion": (B, n + 1), "insertion": (B, n + 1)} float64 NumPy arrays of
    the softmax probability of the class, n = ceil(H W / step).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    count, height, width, _ = images.shape
    step = width if step is None else step
    sigma = 5.0 * height / 224.0 if sigma is None else sigma
    if not (step >= 1 and int(step) == step):
        raise ValueError(f"the deletion step must be a whole number >= 1, got {step}")
    step = int(step)
    if substrate not in SUBSTRATES:
        raise ValueError(f"unknown substrate {substrate!r} (choose from {', '.join(SUBSTRATES)})")
    pixels = height * width
    steps = math.ceil(pixels / step)
    moved = np.minimum(np.arange(steps + 1) * step, pixels).astype(np.int32)
    rank = _pixel_rank(heat)
    blurred = gaussian_blur(images, sigma)
    if substrate == "zero":
        fill = tf.zeros_like(images[:, :1, :1])
    else:
        fill = tf.reduce_mean(images, axis=(1, 2), keepdims=True)
    classes = tf.convert_to_tensor(np.asarray(classes, np.int32).reshape(-1))
    image_index = np.repeat(np.arange(count, dtype=np.int32), steps + 1)
    pair_count = np.tile(moved, count)
    per_call = max(1, min(batch_size, _MODEL_PIXELS // pixels) // 2)
    _curve_probabilities.get_concrete_function(
        model, *_any_size(images, blurred, fill, rank, classes, image_index, pair_count))
    scores = [_curve_probabilities(model, images, blurred, fill, rank, classes,
                                   image_index[start:start + per_call],
                                   pair_count[start:start + per_call]).numpy()
              for start in range(0, len(image_index), per_call)]
    scores = np.concatenate(scores).astype(np.float64).reshape(count, steps + 1, 2)
    return {"deletion": scores[..., 0], "insertion": scores[..., 1]}


def _neighbour_sum(values):
    """sum_j w_ij x_j over the in-image 8-neighbours j of every pixel i of (N, H, W, C)
    ``values`` (zero outside the image): the separable [1 2 1] x [1 2 1] / 12 filter
    minus its centre 4 / 12, which leaves 1/6 direct and 1/12 diagonal weights."""
    padded = tf.pad(values, [[0, 0], [1, 1], [0, 0], [0, 0]])
    rows = padded[:, :-2] + 2.0 * padded[:, 1:-1] + padded[:, 2:]
    padded = tf.pad(rows, [[0, 0], [0, 0], [1, 1], [0, 0]])
    both = padded[:, :, :-2] + 2.0 * padded[:, :, 1:-1] + padded[:, :, 2:]
    return both / 12.0 - values / 3.0


def _tridiagonal(size, diagonal, off, dtype):
    """(size, size) Toeplitz matrix: ``diagonal`` on the diagonal, ``off`` beside it."""
    ones = tf.ones([size - 1], dtype)
    return (diagonal * tf.eye(size, dtype=dtype) + off * tf.linalg.diag(ones, k=1)
            + off * tf.linalg.diag(ones, k=-1))


def _factor_rows(removed, diagonal, rhs):
    """Block Cholesky factorisation and forward substitution, one image row per block.

    removed, diagonal: (H, N, W) float32, rows first; rhs: (H, N, W, C). The matrix of
    the whole grid (the imputation system on removed pixels, the identity on kept
    ones) is block tridiagonal: D_k on the diagonal (row k's pixels: ``diagonal`` and
    -1/6 between removed horizontal neighbours) and B_k coupling row k to row k + 1
    (-1/6 straight down, -1/12 diagonally, between removed pixels). Returns L and
    [V | w], stacked over rows: L_k L_k^T = D_k - V_{k-1}^T V_{k-1} (the Schur
    complement), V_k = L_k^{-1} B_k, w_k = L_k^{-1} (rhs_k - V_{k-1}^T w_{k-1}).
    """
    width = removed.shape[2] or tf.shape(removed)[2]  # static when known: shape inference
    dtype = removed.dtype
    identity = tf.eye(width, dtype=dtype)
    horizontal = _tridiagonal(width, 0.0, _DIRECT, dtype)  # within a row
    vertical = _tridiagonal(width, _DIRECT, _DIAGONAL, dtype)  # row k to row k + 1
    following = tf.concat([removed[1:], tf.zeros_like(removed[:1])], 0)

    def factor_row(carry, row):
        _, previous = carry  # [V_{k-1} | w_{k-1}]
        mask, mask_next, diagonal_row, rhs_row = row
        # One product gives V^T V and V^T w; one solve gives V_k and w_k.
        product = tf.matmul(previous[:, :, :width], previous, transpose_a=True)
        schur = (identity * diagonal_row[:, :, None]
                 - horizontal * (mask[:, :, None] * mask[:, None, :]) - product[:, :, :width])
        lower = tf.linalg.cholesky(schur)
        coupling = -(mask[:, :, None] * mask_next[:, None, :]) * vertical
        right = tf.concat([coupling, rhs_row - product[:, :, width:]], axis=-1)
        return lower, tf.linalg.triangular_solve(lower, right)

    count = tf.shape(removed)[1]
    initial = (tf.zeros(tf.stack([count, width, width]), dtype),
               tf.zeros(tf.stack([count, width, width + tf.shape(rhs)[3]]), dtype))
    return tf.scan(factor_row, (removed, following, diagonal, rhs), initializer=initial)


def _forward_rows(lower, coupling, rhs):
    """w of ``_factor_rows`` for another right-hand side with the same factors."""

    def forward(partial, row):
        lower_k, coupling_previous, rhs_k = row
        return tf.linalg.triangular_solve(
            lower_k, rhs_k - tf.matmul(coupling_previous, partial, transpose_a=True))

    shifted = tf.concat([tf.zeros_like(coupling[:1]), coupling[:-1]], 0)  # V_{k-1}
    return tf.scan(forward, (lower, shifted, rhs), initializer=tf.zeros_like(rhs[0]))


def _backward_rows(lower, coupling, partial):
    """Back substitution: x_k = L_k^{-T} (w_k - V_k x_{k+1}), the last row first."""

    def backward(following, row):
        lower_k, coupling_k, partial_k = row
        return tf.linalg.triangular_solve(
            lower_k, partial_k - tf.matmul(coupling_k, following), adjoint=True)

    return tf.scan(backward, (lower, coupling, partial), initializer=tf.zeros_like(partial[0]),
                   reverse=True)


def _rows_first(tensor):
    """(N, H, ...) <-> (H, N, ...)."""
    return tf.transpose(tensor, tf.concat([[1, 0], tf.range(2, tf.rank(tensor))], 0))


def _linear_fill(images, removed):
    """``images`` (N, H, W, C) with each removed pixel (``removed``: N, H, W bool) set
    to the weighted mean of its 8 in-image neighbours (ROAD's linear imputation, Rong
    et al., 2022, without noise), solved for all removed pixels of every image and
    channel at once. Graph-safe; every image needs a kept pixel.

    The system is solved exactly by block Cholesky over image rows (the matrix is block
    tridiagonal with W x W blocks; the shorter side is taken as W): the factors in
    float32, then iterative refinement with float64 residuals, which brings the
    float32 solve (up to ~2e-4 off at 32 px, 2e-3 at 96 px, for masks that keep one
    pixel) to ~1e-8.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    removed = tf.convert_to_tensor(removed, tf.bool)
    height, width = images.shape[1], images.shape[2]
    transpose = height is not None and width is not None and width > height
    if transpose:  # the stencil is symmetric under transposition; cost ~ H W^3
        images = tf.transpose(images, [0, 2, 1, 3])
        removed = tf.transpose(removed, [0, 2, 1])
    values = tf.cast(images, tf.float64)
    mask = tf.cast(removed, tf.float64)[..., None]
    weight_sum = _neighbour_sum(tf.ones_like(mask))  # s_i: in-image neighbours only
    rhs = mask * _neighbour_sum(values * (1.0 - mask))

    def blocks(tensor):
        """(N, H, W[, C]) float64 -> float32, rows first."""
        return _rows_first(tf.cast(tensor, tf.float32))

    lower, combined = _factor_rows(blocks(mask[..., 0]),
                                   blocks((mask * weight_sum + 1.0 - mask)[..., 0]), blocks(rhs))
    block = tf.shape(lower)[-1]
    coupling, partial = combined[..., :block], combined[..., block:]

    def back(partial):
        return tf.cast(_rows_first(_backward_rows(lower, coupling, partial)), tf.float64)

    def refine(filled, _):
        residual = rhs - mask * (weight_sum * filled - _neighbour_sum(mask * filled))
        correction = mask * back(_forward_rows(lower, coupling, blocks(residual)))
        return filled + correction, tf.reduce_max(tf.abs(correction))

    # A correction of size c leaves an error of about c times the float32 solve's
    # contraction (<< 1), so refining until c <= _REFINED bounds the error well
    # below ROAD's 1e-4; one step is enough for almost every mask at 32 px.
    filled, _ = tf.while_loop(lambda filled, size: size > _REFINED, refine,
                              (mask * back(partial), tf.constant(np.inf, tf.float64)),
                              maximum_iterations=_MAX_REFINEMENTS)
    result = tf.where(removed[..., None], tf.cast(filled, tf.float32), images)
    return tf.transpose(result, [0, 2, 1, 3]) if transpose else result


def _noise(shape, seed, indices):
    """(B, H, W, C) standard normal noise, image b's field a stateless draw from
    (seed, indices[b]): the same for an image in any batch."""
    indices = tf.cast(tf.reshape(indices, [-1]), tf.int64)
    seed = tf.cast(seed, tf.int64)
    return tf.map_fn(
        lambda index: tf.random.stateless_normal(shape, seed=tf.stack([seed, index])),
        indices, fn_output_signature=tf.float32)


def noisy_linear_impute(images, removed, noise=0.01, seed=0, indices=None):
    """ROAD's noisy linear imputation (Rong et al., 2022, Sec. 4).

    images: (B, H, W, C) float; removed: (B, H, W) bool, True = removed. Kept pixels
    are returned unchanged; a removed pixel i becomes x_i + noise z_i, where x solves
    s_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j over its in-image
    8-neighbours (w = 1/6 direct, 1/12 diagonal, s_i = sum of its w_ij), per channel,
    and z is image b's standard normal field drawn statelessly from (seed, indices[b])
    (indices default 0..B-1). No clipping. Graph-safe; eagerly, an image with every
    pixel removed is a ValueError (in a graph, an InvalidArgumentError).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    removed = tf.convert_to_tensor(removed, tf.bool)
    all_removed = tf.reduce_all(tf.reshape(removed, [tf.shape(removed)[0], -1]), axis=1)
    if tf.executing_eagerly():
        if np.any(all_removed.numpy()):
            first = int(np.flatnonzero(all_removed.numpy())[0])
            raise ValueError(f"image {first} has every pixel removed: nothing to impute from")
        checks = []
    else:
        checks = [tf.debugging.assert_equal(tf.reduce_any(all_removed), False,
                                            message="an image has every pixel removed")]
    with tf.control_dependencies(checks):
        filled = _linear_fill(images, removed)
    if noise == 0:
        return filled
    if indices is None:
        indices = tf.range(tf.shape(images)[0])
    fields = _noise(tf.shape(images)[1:], seed, indices)
    return tf.where(removed[..., None], filled + noise * fields, filled)


def _removal_counts(percentiles, pixels):
    """Pixels removed at each percentile, round(p / 100 * H W); ValueError when one
    would remove every pixel."""
    counts = [int(round(p / 100 * pixels)) for p in percentiles]
    for p, count in zip(percentiles, counts):
        if not 0 <= count < pixels:
            raise ValueError(f"ROAD percentile {p} removes {count} of {pixels} pixels; "
                             "it must leave at least one")
    return np.asarray(counts, np.int32)


@tf.function(reduce_retracing=True)
def _road_hits(model, images, noise_fields, rank, labels, image_index, low, high):
    """Whether the model is right on each of S imputed images: image image_index[s]
    with the pixels of rank in [low[s], high[s]) removed and imputed."""
    clean = tf.gather(images, image_index)
    pixel_rank = tf.gather(rank, image_index)
    removed = (pixel_rank >= low[:, None, None]) & (pixel_rank < high[:, None, None])
    filled = _linear_fill(clean, removed)
    filled = tf.where(removed[..., None], filled + tf.gather(noise_fields, image_index), filled)
    logits = model(filled, training=False)
    return tf.argmax(logits, axis=-1, output_type=tf.int32) == tf.gather(labels, image_index)


def road_correct(model, images, heat, labels, percentiles=DEFAULT_PERCENTILES, noise=0.01,
                 seed=0, indices=None, batch_size=MODEL_BATCH):
    """ROAD without retraining (Rong et al., 2022): is the model right after removing
    and imputing (``noisy_linear_impute``) a percentage of the pixels?

    For percentile p, r = round(p / 100 H W) pixels are removed: the first r of
    ``pixel_order(heat)`` (MoRF) or the last r (LeRF). indices: the images' noise
    indices (default 0..B-1). batch_size: imputed images per model call (fewer at
    large sizes, to bound the factors' memory).
    Returns {"morf": (B, P) bool, "lerf": (B, P) bool} NumPy arrays.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    count, height, width, channels = images.shape
    pixels = height * width
    removed = _removal_counts(percentiles, pixels)
    rank = _pixel_rank(heat)
    labels = tf.convert_to_tensor(np.asarray(labels, np.int32).reshape(-1))
    indices = np.arange(count) if indices is None else np.asarray(indices).reshape(-1)
    if noise == 0:
        fields = tf.zeros_like(images)
    else:
        fields = noise * _noise(tf.constant([height, width, channels]), seed, indices)
    # Systems ordered (image, MoRF then LeRF, percentile).
    image_index = np.repeat(np.arange(count, dtype=np.int32), 2 * len(removed))
    low = np.tile(np.concatenate([np.zeros_like(removed), pixels - removed]), count)
    high = np.tile(np.concatenate([removed, np.full_like(removed, pixels)]), count)
    block = min(height, width)
    per_call = max(1, min(batch_size, _MODEL_PIXELS // pixels,
                          _FACTOR_ELEMENTS // (max(height, width) * block ** 2)))
    _road_hits.get_concrete_function(
        model, *_any_size(images, fields, rank, labels, image_index, low, high))
    hits = [_road_hits(model, images, fields, rank, labels, image_index[start:start + per_call],
                       low[start:start + per_call], high[start:start + per_call]).numpy()
            for start in range(0, len(image_index), per_call)]
    hits = np.concatenate(hits).reshape(count, 2, len(removed))
    return {"morf": hits[:, 0], "lerf": hits[:, 1]}


@tf.function(reduce_retracing=True)
def _explain(model, explainer, images, labels):
    """(top-1 class, its Grad-CAM, the true label's Grad-CAM) of a batch."""
    top = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
    return top, explainer(images, top), explainer(images, labels)


def faithfulness_of_model(model, images_uint8_or_float, labels, layer, settings,
                          batch_size=64, log=None):
    """Per-image faithfulness of ``model``'s Grad-CAM at ``layer`` on a test set.

    images: (N, H, W, C) uint8 (divided by 255) or float in [0, 1]; labels: (N,).
    Deletion/insertion explain and score the top-1 class on the clean image; ROAD
    explains the true label, its noise indexed by the images' positions 0..N-1.
    batch_size: test images per chunk of work (4x as many step images per model call);
    log: called with one progress line per chunk, or None.
    Returns {"deletion_auc": (N,), "insertion_auc": (N,), "road_morf": (N, P),
    "road_lerf": (N, P)} float64 NumPy arrays (ROAD: 1.0 correct, 0.0 wrong).
    """
    settings.check()
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    total = len(labels)
    if len(images_uint8_or_float) != total:
        raise ValueError(f"{len(images_uint8_or_float)} images but {total} labels")
    explainer = GradCAM(model, layer)
    parts = {"deletion_auc": [np.zeros(0)], "insertion_auc": [np.zeros(0)],
             "road_morf": [np.zeros((0, len(settings.percentiles)))],
             "road_lerf": [np.zeros((0, len(settings.percentiles)))]}
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        batch = np.asarray(images_uint8_or_float[start:stop])
        batch = tf.convert_to_tensor(batch / np.float32(255) if batch.dtype == np.uint8
                                     else batch, tf.float32)
        _explain.get_concrete_function(model, explainer, *_any_size(batch, labels))
        top, heat_top, heat_label = _explain(model, explainer, batch, labels[start:stop])
        curves = causal_curves(model, batch, heat_top, top.numpy(), settings.step,
                               settings.substrate, settings.sigma, 4 * batch_size)
        road = road_correct(model, batch, heat_label, labels[start:stop], settings.percentiles,
                            settings.noise, settings.seed, np.arange(start, stop),
                            4 * batch_size)
        parts["deletion_auc"].append(auc(curves["deletion"]))
        parts["insertion_auc"].append(auc(curves["insertion"]))
        parts["road_morf"].append(road["morf"].astype(np.float64))
        parts["road_lerf"].append(road["lerf"].astype(np.float64))
        if log is not None:
            log(f"faithfulness: {stop}/{total} test images")
    return {key: np.concatenate(value) for key, value in parts.items()}
