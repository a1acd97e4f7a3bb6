"""Faithfulness metrics against a slow, per-image reference written from the spec alone.

The reference below is plain NumPy/SciPy, one image and one step at a time, the model
called on one image at a time: pixel order (a stable argsort), deletion/insertion
curves (Petsiuk et al., 2018, Sec. 4.1) with a zero-padded separable Gaussian blur,
their trapezoidal AUC, and ROAD (Rong et al., 2022) with noisy linear imputation solved
exactly by a sparse direct solve of the system built pixel by pixel.
"""

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
from conftest import make_classifier, structured_images

from playing_distraction import faithfulness
from playing_distraction.heatmaps import GradCAM

LAYER = "features"  # small_cnn's last conv block


# ---------------------------------------------------------------- the reference


def ref_order(heat):
    """Flat pixel indices of one (H, W) map, most relevant first, ties by index."""
    return np.argsort(-np.asarray(heat).reshape(-1), kind="stable")


def ref_kernel(sigma):
    klen = 2 * math.ceil(sigma) + 1
    r = klen // 2
    g = np.exp(-((np.arange(klen) - r) ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def ref_blur(image, sigma):
    """Separable Gaussian of one (H, W, C) image, zero padding of klen // 2."""
    g = ref_kernel(sigma)
    r = len(g) // 2

    def along(a, axis):
        a = np.moveaxis(a, axis, 0)
        n = a.shape[0]
        pad = np.zeros((r,) + a.shape[1:])
        padded = np.concatenate([pad, a, pad])
        out = sum(g[k] * padded[k:k + n] for k in range(len(g)))
        return np.moveaxis(out, 0, axis)

    return along(along(np.asarray(image, np.float64), 0), 1)


def ref_logits(model, image):
    return np.asarray(model(np.asarray(image, np.float32)[None], training=False),
                      np.float64)[0]


def ref_probability(model, image, cls):
    logits = ref_logits(model, image)
    e = np.exp(logits - logits.max())
    return e[cls] / e.sum()


def ref_curves(model, image, heat, cls, step=None, substrate="zero", sigma=None):
    """(deletion, insertion) curves of one image, each of n + 1 probabilities."""
    h, w, c = image.shape
    hw = h * w
    step = w if step is None else step
    sigma = 5.0 * h / 224.0 if sigma is None else sigma
    n = -(-hw // step)
    order = ref_order(heat)
    clean = np.asarray(image, np.float64).reshape(hw, c)
    fill = np.zeros(c) if substrate == "zero" else clean.mean(axis=0)
    blurred = ref_blur(image, sigma).reshape(hw, c)
    deletion, insertion = [], []
    for i in range(n + 1):
        moved = order[:min(i * step, hw)]
        deleted = clean.copy()
        deleted[moved] = fill
        inserted = blurred.copy()
        inserted[moved] = clean[moved]
        deletion.append(ref_probability(model, deleted.reshape(h, w, c), cls))
        insertion.append(ref_probability(model, inserted.reshape(h, w, c), cls))
    return np.array(deletion), np.array(insertion)


def ref_auc(curve):
    curve = np.asarray(curve, np.float64)
    return np.trapezoid(curve, np.linspace(0.0, 1.0, len(curve)))


NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def ref_impute(image, removed):
    """Noise-free linear imputation of one (H, W, C) image: an exact sparse solve."""
    image = np.asarray(image, np.float64)
    h, w, c = image.shape
    unknown = -np.ones((h, w), int)
    positions = np.argwhere(removed)
    if len(positions) == h * w:
        raise ValueError("every pixel removed")
    unknown[tuple(positions.T)] = np.arange(len(positions))
    matrix = scipy.sparse.lil_matrix((len(positions), len(positions)))
    rhs = np.zeros((len(positions), c))
    for row, (y, x) in enumerate(positions):
        total = 0.0
        for dy, dx in NEIGHBOURS:
            yy, xx = y + dy, x + dx
            if not (0 <= yy < h and 0 <= xx < w):
                continue
            weight = 1.0 / 6.0 if dy == 0 or dx == 0 else 1.0 / 12.0
            total += weight
            if removed[yy, xx]:
                matrix[row, unknown[yy, xx]] -= weight
            else:
                rhs[row] += weight * image[yy, xx]
        matrix[row, row] = total
    out = image.copy()
    if len(positions):
        solution = scipy.sparse.linalg.spsolve(matrix.tocsc(), rhs)
        out[tuple(positions.T)] = np.reshape(solution, (len(positions), c))
    return out


def ref_removed(order, shape, r, most_relevant_first):
    flat = np.zeros(shape[0] * shape[1], bool)
    flat[order[:r] if most_relevant_first else order[len(flat) - r:]] = True
    return flat.reshape(shape)


def ref_road(model, image, heat, label, percentiles, impute=ref_impute):
    """Per percentile [(MoRF correct, its margin), (LeRF correct, its margin)]; noise 0
    with the default ``impute`` (image, removed mask) -> imputed image.

    The margin is the top-1 minus top-2 logit: where it is tiny, the 1e-4 solver
    tolerance the spec allows may flip the argmax, so such entries are not compared.
    """
    h, w = heat.shape
    order = ref_order(heat)
    rows = []
    for p in percentiles:
        r = int(round(p / 100.0 * h * w))
        row = []
        for morf in (True, False):
            imputed = impute(image, ref_removed(order, (h, w), r, morf))
            logits = ref_logits(model, imputed)
            top2 = np.sort(logits)[-2:]
            row.append((logits.argmax() == label, top2[1] - top2[0]))
        rows.append(row)
    return rows


def sharpened_classifier(size, num_classes=3):
    """A random small_cnn whose logits spread over a few units (not ~1e-2), centred so
    that top-1 classes differ between images: probabilities then react to pixels."""
    model = make_classifier(num_classes=num_classes, size=size)
    dense = model.get_layer("logits")
    dense.kernel.assign(dense.kernel.numpy() * 300.0)
    logits = np.asarray(model(structured_images(16, size, seed=99), training=False))
    dense.bias.assign(dense.bias.numpy() - logits.mean(axis=0))
    return model


def linear_probe(height, width, num_classes=3, seed=0):
    """Flatten + Dense on a (height, width, 3) image: every pixel moves every logit."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((height, width, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes)])
    rng = np.random.default_rng(seed)
    model.layers[-1].kernel.assign(
        rng.normal(0, 3.0 / math.sqrt(height * width), (height * width * 3, num_classes)))
    return model


@pytest.fixture(scope="module")
def cnn16():
    return sharpened_classifier(16)


# ------------------------------------------------------ the reference's own sanity


def test_reference_order_breaks_ties_by_index():
    heat = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 2.0]])
    assert ref_order(heat).tolist() == [1, 3, 5, 2, 0, 4]


def test_reference_blur_is_zero_padded_gaussian():
    g = ref_kernel(1.0)
    assert len(g) == 3 and np.isclose(g.sum(), 1.0)
    np.testing.assert_allclose(g / g[1], [math.exp(-0.5), 1.0, math.exp(-0.5)])
    assert len(ref_kernel(5.0)) == 11 and len(ref_kernel(0.3)) == 3 and len(ref_kernel(2.1)) == 7
    rng = np.random.default_rng(0)
    image = rng.random((6, 9, 2))
    for sigma in (0.4, 1.3, 4.0):  # 4.0: the kernel is longer than the image
        expected = image.astype(np.float64)
        for axis in (0, 1):
            expected = scipy.ndimage.correlate1d(expected, ref_kernel(sigma), axis=axis,
                                                 mode="constant", cval=0.0)
        np.testing.assert_allclose(ref_blur(image, sigma), expected, atol=1e-12)
    # By hand: a constant image keeps its value inside and loses mass at the border.
    ones = ref_blur(np.ones((5, 5, 1)), 1.0)[..., 0]
    assert np.isclose(ones[2, 2], 1.0)
    assert np.isclose(ones[0, 2], g[1] + g[2]) and np.isclose(ones[0, 0], (g[1] + g[2]) ** 2)


def test_reference_auc_by_hand():
    assert np.isclose(ref_auc([1.0, 0.0]), 0.5)
    assert np.isclose(ref_auc([0.0, 1.0, 1.0, 0.0]), 2.0 / 3.0)
    curve = np.array([0.9, 0.5, 0.2, 0.1, 0.3])
    assert np.isclose(ref_auc(curve), (curve.sum() - 0.9 / 2 - 0.3 / 2) / 4)


def test_reference_impute_by_hand():
    rng = np.random.default_rng(1)
    v = rng.random((3, 3, 2))
    # The centre: the weighted mean of its 8 neighbours (weights sum to 1).
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    direct = v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]
    diagonal = v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]
    np.testing.assert_allclose(ref_impute(v, removed)[1, 1], direct / 6 + diagonal / 12)
    # A corner: 2 direct and 1 diagonal neighbour in the image, s = 5 / 12.
    removed = np.zeros((3, 3), bool)
    removed[0, 0] = True
    expected = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (5 / 12)
    out = ref_impute(v, removed)
    np.testing.assert_allclose(out[0, 0], expected)
    np.testing.assert_array_equal(out[~removed], v[~removed])
    # A row a, ?, ?: the right end copies its one neighbour, the middle then copies a.
    row = np.array([[[0.7], [0.1], [0.2]]])
    np.testing.assert_allclose(ref_impute(row, np.array([[False, True, True]]))[0, :, 0],
                               [0.7, 0.7, 0.7])
    # Two adjacent removed centre-row pixels of a 3x4 image: a 2x2 system by hand.
    v = rng.random((3, 4, 1))[..., 0]
    removed = np.zeros((3, 4), bool)
    removed[1, 1:3] = True
    b1 = (v[0, 1] + v[2, 1] + v[1, 0]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    b2 = (v[0, 2] + v[2, 2] + v[1, 3]) / 6 + (v[0, 1] + v[0, 3] + v[2, 1] + v[2, 3]) / 12
    x = np.linalg.solve([[1.0, -1 / 6], [-1 / 6, 1.0]], [b1, b2])
    np.testing.assert_allclose(ref_impute(v[..., None], removed)[1, 1:3, 0], x)
    with pytest.raises(ValueError):
        ref_impute(v[..., None], np.ones((3, 4), bool))


def test_reference_impute_reproduces_constants_and_interior_ramps():
    removed = np.random.default_rng(2).random((7, 8)) < 0.6
    removed[0, 0] = False
    np.testing.assert_allclose(ref_impute(np.full((7, 8, 2), 0.3), removed), 0.3)
    # The stencil is symmetric, so a linear image is harmonic away from the border.
    yy, xx = np.mgrid[0:7, 0:8]
    ramp = (0.1 * yy - 0.05 * xx + 0.2)[..., None]
    block = np.zeros((7, 8), bool)
    block[2:5, 2:6] = True
    np.testing.assert_allclose(ref_impute(ramp, block), ramp, atol=1e-12)
    # The defining property, checked directly: each removed pixel is the weighted mean
    # of its in-image neighbours (removed or not) in the result.
    image = np.random.default_rng(3).random((7, 8, 2))
    out = ref_impute(image, removed)
    for y, x in np.argwhere(removed):
        total, weights = 0.0, 0.0
        for dy, dx in NEIGHBOURS:
            if 0 <= y + dy < 7 and 0 <= x + dx < 8:
                weight = 1 / 6 if dy * dx == 0 else 1 / 12
                total, weights = total + weight * out[y + dy, x + dx], weights + weight
        np.testing.assert_allclose(out[y, x], total / weights, atol=1e-12)


# ------------------------------------------------------------------- pixel order


def test_pixel_order_is_a_stable_descending_sort_with_ties():
    rng = np.random.default_rng(0)
    heats = np.stack([
        rng.random((5, 7)),
        rng.integers(0, 3, (5, 7)).astype(float),  # many equal values
        np.zeros((5, 7)),  # all tied: the identity
        np.where(rng.random((5, 7)) < 0.7, 0.0, rng.random((5, 7))),  # mostly zeros
    ]).astype(np.float32)
    order = np.asarray(faithfulness.pixel_order(heats))
    assert order.shape == (4, 35) and order.dtype == np.int32
    for heat, got in zip(heats, order):
        np.testing.assert_array_equal(got, ref_order(heat))
        # Independently of argsort: sort by (-heat, flat index).
        flat = heat.reshape(-1)
        np.testing.assert_array_equal(got, sorted(range(35), key=lambda i: (-flat[i], i)))
    np.testing.assert_array_equal(order[2], np.arange(35))


# ------------------------------------------------------------ deletion/insertion


def test_auc_matches_trapezoid_on_known_curves():
    curves = np.array([[1.0, 0.5, 0.25, 0.0], [0.2, 0.2, 0.2, 0.2], [0.0, 1.0, 0.0, 1.0]])
    got = np.asarray(faithfulness.auc(curves))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, [ref_auc(c) for c in curves], atol=1e-12)
    np.testing.assert_allclose(got, [(1.75 - 0.5) / 3, 0.2, (2.0 - 0.5) / 3], atol=1e-12)
    np.testing.assert_allclose(faithfulness.auc(np.array([[0.3, 0.9]])), [0.6], atol=1e-12)


def compare_curves(model, images, heat, classes, **options):
    got = faithfulness.causal_curves(model, images, heat, classes, **options)
    step = options.get("step")
    n = -(-images.shape[1] * images.shape[2] // (step or images.shape[2]))
    for key in ("deletion", "insertion"):
        assert np.asarray(got[key]).shape == (len(images), n + 1)
        assert np.asarray(got[key]).dtype == np.float64
    reference = {"deletion": [], "insertion": []}
    for image, h, cls in zip(images, heat, classes):
        deletion, insertion = ref_curves(model, image, h, cls, step,
                                         options.get("substrate", "zero"), options.get("sigma"))
        reference["deletion"].append(deletion)
        reference["insertion"].append(insertion)
    for key in ("deletion", "insertion"):
        expected = np.array(reference[key])
        np.testing.assert_allclose(got[key], expected, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(faithfulness.auc(np.asarray(got[key])),
                                   [ref_auc(c) for c in expected], atol=1e-5, err_msg=key)
    return reference


@pytest.mark.parametrize("options", [
    {},  # step W = 16, n = 16, sigma 5 * 16 / 224
    {"step": 23, "substrate": "mean", "sigma": 2.5},  # 256 = 11 * 23 + 3: a partial last step
    {"step": 40, "substrate": "zero", "sigma": 0.9, "batch_size": 3},
], ids=["defaults", "mean-step23-sigma2.5", "zero-step40-batch3"])
def test_causal_curves_match_the_reference_on_a_cnn(cnn16, options):
    images = structured_images(5, 16, seed=3)
    top1 = np.asarray(cnn16(images, training=False)).argmax(axis=1)
    classes = np.where(np.arange(5) % 2 == 0, top1, (top1 + 1) % 3).astype("int32")
    heat = np.asarray(GradCAM(cnn16, LAYER)(images, classes))
    reference = compare_curves(cnn16, images, heat, classes, **options)
    # The test is not trivial: the curves move.
    assert np.ptp(np.array(reference["deletion"]), axis=1).min() > 0.05
    assert np.ptp(np.array(reference["insertion"]), axis=1).min() > 0.01


@pytest.mark.parametrize("options", [
    {},  # step = W = 14 (not H): n = 10; sigma = 5 * H / 224
    {"step": 9, "substrate": "mean", "sigma": 1.7},  # 140 = 15 * 9 + 5
    {"step": 1, "sigma": 3.0},
], ids=["defaults", "mean-step9", "step1"])
def test_causal_curves_on_a_non_square_linear_probe_with_tied_heat(options):
    """Every pixel moves the probe's logits, and the heat has ties (integer values):
    a wrong pixel, tie, substrate, blur or step shows as a difference in probability."""
    height, width = 10, 14
    model = linear_probe(height, width)
    rng = np.random.default_rng(4)
    images = rng.random((3, height, width, 3)).astype(np.float32)
    heat = rng.integers(0, 4, (3, height, width)).astype(np.float32)
    classes = np.array([0, 2, 1], np.int32)
    compare_curves(model, images, heat, classes, **options)


# ------------------------------------------------------------------------- ROAD


def impute_cases():
    """Three batches of (images, masks): random masks, a large block touching the
    border, 90 % removed, one pixel kept (masks differ per image)."""
    rng = np.random.default_rng(5)
    images = structured_images(3, 24, seed=5)
    random_masks = np.stack([rng.random((24, 24)) < f for f in (0.1, 0.4, 0.7)])
    block = np.zeros((3, 24, 24), bool)
    block[0, :15, :18] = True
    block[1, 6:, 3:] = True
    block[2, :, :20] = True  # only 4 columns on the right are kept
    ninety = rng.random((3, 24, 24)) < 0.9
    # One pixel kept (the result is its value): the worst conditioning, at 32 px.
    single = np.ones((3, 32, 32), bool)
    single[0, 0, 0] = single[1, 15, 17] = single[2, 31, 5] = False
    return {"random": (images, random_masks), "block": (images, block),
            "ninety": (images, ninety), "single": (structured_images(3, 32, seed=6), single)}


@pytest.mark.parametrize("case", ["random", "block", "ninety", "single"])
def test_noise_free_imputation_matches_an_exact_sparse_solve(case):
    images, masks = impute_cases()[case]
    got = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=0.0))
    assert got.shape == images.shape and got.dtype == np.float32
    for image, mask, out in zip(images, masks, got):
        np.testing.assert_array_equal(out[~mask], image[~mask])
        assert np.abs(out - ref_impute(image, mask)).max() <= 1e-4


@pytest.mark.parametrize("shape", [(9, 20), (20, 9)], ids=["wide", "tall"])
def test_noise_free_imputation_on_non_square_images(shape):
    rng = np.random.default_rng(13)
    images = rng.random((3,) + shape + (3,)).astype(np.float32)
    masks = np.stack([rng.random(shape) < f for f in (0.3, 0.6, 0.9)])
    masks[0, :, :5] = True  # a block along a whole border
    got = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=0.0))
    for image, mask, out in zip(images, masks, got):
        np.testing.assert_array_equal(out[~mask], image[~mask])
        assert np.abs(out - ref_impute(image, mask)).max() <= 1e-4


def test_noise_free_imputation_on_a_non_square_image_by_hand():
    rng = np.random.default_rng(6)
    images = rng.random((2, 3, 5, 1)).astype(np.float32)
    masks = np.zeros((2, 3, 5), bool)
    masks[0, 1, 2] = True  # an interior pixel: the weighted mean of 8 neighbours
    masks[1, 0, 4] = True  # a corner
    got = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=0.0))
    v = images[0, :, :, 0].astype(np.float64)
    centre = (v[0, 2] + v[2, 2] + v[1, 1] + v[1, 3]) / 6 + (
        v[0, 1] + v[0, 3] + v[2, 1] + v[2, 3]) / 12
    assert abs(got[0, 1, 2, 0] - centre) <= 1e-4
    v = images[1, :, :, 0].astype(np.float64)
    corner = (v[0, 3] / 6 + v[1, 4] / 6 + v[1, 3] / 12) / (5 / 12)
    assert abs(got[1, 0, 4, 0] - corner) <= 1e-4
    for image, mask, out in zip(images, masks, got):
        assert np.abs(out - ref_impute(image, mask)).max() <= 1e-4


def test_noisy_imputation_adds_seeded_noise_to_removed_pixels_only():
    rng = np.random.default_rng(7)
    images = structured_images(3, 24, seed=7)
    masks = rng.random((3, 24, 24)) < 0.5
    noise = 0.05
    clean = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=0.0))
    noisy = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=noise,
                                                        seed=3, indices=[4, 9, 2]))
    np.testing.assert_array_equal(noisy[~masks], images[~masks])
    for b in range(3):
        z = (noisy[b] - clean[b])[masks[b]] / noise
        assert abs(z.std() - 1.0) < 0.1 and abs(z.mean()) < 0.15
    # Reproducible, and independent of the batch: image 1 alone with its index.
    again = faithfulness.noisy_linear_impute(images, masks, noise=noise, seed=3,
                                             indices=[4, 9, 2])
    np.testing.assert_array_equal(again, noisy)
    alone = np.asarray(faithfulness.noisy_linear_impute(images[1:2], masks[1:2], noise=noise,
                                                        seed=3, indices=[9]))
    np.testing.assert_allclose(alone[0], noisy[1], atol=2e-4)
    # The noise field is drawn per (seed, index), not per position in the batch ...
    shifted = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=noise,
                                                          seed=3, indices=[5, 9, 2]))
    np.testing.assert_allclose(shifted[1:], noisy[1:], atol=2e-4)
    z0 = (noisy[0] - clean[0])[masks[0]].ravel()
    z1 = (shifted[0] - clean[0])[masks[0]].ravel()
    assert abs(np.corrcoef(z0, z1)[0, 1]) < 0.2
    other_seed = np.asarray(faithfulness.noisy_linear_impute(images, masks, noise=noise,
                                                             seed=4, indices=[4, 9, 2]))
    z2 = (other_seed[0] - clean[0])[masks[0]].ravel()
    assert abs(np.corrcoef(z0, z2)[0, 1]) < 0.2
    # ... and default indices are the batch positions.
    default = faithfulness.noisy_linear_impute(images, masks, noise=noise, seed=3)
    explicit = faithfulness.noisy_linear_impute(images, masks, noise=noise, seed=3,
                                                indices=np.arange(3))
    np.testing.assert_array_equal(default, explicit)
    # The field has the image's shape: where two masks both remove a pixel, its noise
    # is the same whatever else is removed.
    other_masks = rng.random((3, 24, 24)) < 0.5
    clean2 = np.asarray(faithfulness.noisy_linear_impute(images, other_masks, noise=0.0))
    noisy2 = np.asarray(faithfulness.noisy_linear_impute(images, other_masks, noise=noise,
                                                         seed=3, indices=[4, 9, 2]))
    both = masks & other_masks
    np.testing.assert_allclose((noisy2 - clean2)[both], (noisy - clean)[both], atol=3e-4)


def test_imputing_an_image_with_every_pixel_removed_is_an_error():
    images = structured_images(2, 12, seed=8)
    masks = np.zeros((2, 12, 12), bool)
    masks[0, :4] = True
    masks[1] = True
    with pytest.raises(ValueError):
        faithfulness.noisy_linear_impute(images, masks, noise=0.0)
    with pytest.raises(ValueError):
        faithfulness.noisy_linear_impute(images[1:], masks[1:], noise=0.01)


def check_road(got, reference, percentiles, count):
    """Entries agree wherever the reference's top-2 logit margin is not tiny."""
    checked = 0
    for key, column in (("morf", 0), ("lerf", 1)):
        assert np.asarray(got[key]).shape == (count, len(percentiles))
        assert np.asarray(got[key]).dtype == bool
        for b in range(count):
            for k in range(len(percentiles)):
                correct, margin = reference[b][k][column]
                if margin > 1e-3:
                    checked += 1
                    assert bool(got[key][b, k]) == correct, (key, b, percentiles[k])
    assert checked >= 0.8 * 2 * count * len(percentiles)
    values = [reference[b][k][c][0] for b in range(count) for k in range(len(percentiles))
              for c in (0, 1)]
    assert any(values) and not all(values), "degenerate ROAD test"


def test_road_correct_matches_the_reference(cnn16):
    images = structured_images(4, 16, seed=9)
    top1 = np.asarray(cnn16(images, training=False)).argmax(axis=1)
    labels = np.where(np.arange(4) % 2 == 0, top1, (top1 + 2) % 3).astype("int32")
    heat = np.asarray(GradCAM(cnn16, LAYER)(images, labels))
    percentiles = (10, 45, 90)  # r = 26, 115, 230 of 256 pixels
    got = faithfulness.road_correct(cnn16, images, heat, labels, percentiles=percentiles,
                                    noise=0.0)
    reference = [ref_road(cnn16, image, h, label, percentiles)
                 for image, h, label in zip(images, heat, labels)]
    check_road(got, reference, percentiles, 4)
    # With noise: reproducible and independent of the batch given (seed, indices).
    noisy = faithfulness.road_correct(cnn16, images, heat, labels, percentiles=percentiles,
                                      noise=0.2, seed=1, indices=[3, 1, 4, 1])
    again = faithfulness.road_correct(cnn16, images[2:3], heat[2:3], labels[2:3],
                                      percentiles=percentiles, noise=0.2, seed=1, indices=[4])
    for key in ("morf", "lerf"):
        np.testing.assert_array_equal(again[key][0], noisy[key][2])
    # ... and the imputation is noisy_linear_impute's with the same seed and index.
    reference = []
    for image, h, label, index in zip(images, heat, labels, [3, 1, 4, 1]):
        def impute(image, removed, index=index):
            return np.asarray(faithfulness.noisy_linear_impute(
                image[None], removed[None], noise=0.2, seed=1, indices=[index]))[0]
        reference.append(ref_road(cnn16, image, h, label, percentiles, impute))
    check_road(noisy, reference, percentiles, 4)


def bright_pixel_probe(height, width):
    """Class 1 iff the image's total brightness is above 0.5 (logit 10 sum(x) - 5)."""
    model = linear_probe(height, width, num_classes=2)
    kernel = np.zeros((height * width * 3, 2))
    kernel[:, 1] = 10.0
    model.layers[-1].kernel.assign(kernel)
    model.layers[-1].bias.assign([0.0, -5.0])
    return model


def test_road_removes_exactly_round_p_percent_first_or_last():
    """Black images with one white pixel at rank t of the heat order: the probe is right
    (label 1) iff that pixel is kept, i.e. iff t >= r for MoRF and t < H W - r for LeRF,
    r = round(p / 100 H W). Off-by-one or floor/ceil removal counts fail here."""
    size, pixels = 12, 144
    percentiles = (10, 30, 45, 60)  # 14.4 -> 14, 43.2 -> 43, 64.8 -> 65, 86.4 -> 86
    counts = [int(round(p / 100 * pixels)) for p in percentiles]
    assert counts == [14, 43, 65, 86]
    ranks = sorted({t for r in counts for t in (r - 1, r, pixels - r - 1, pixels - r)})
    heat = np.random.default_rng(11).permutation(pixels).reshape(size, size) / pixels
    order = ref_order(heat)
    images = np.zeros((len(ranks), size, size, 3), np.float32)
    for image, t in zip(images, ranks):
        image.reshape(pixels, 3)[order[t]] = 1.0
    model = bright_pixel_probe(size, size)
    heats = np.repeat(heat[None].astype(np.float32), len(ranks), axis=0)
    labels = np.ones(len(ranks), np.int32)
    got = faithfulness.road_correct(model, images, heats, labels, percentiles=percentiles,
                                    noise=0.0)
    expected_morf = np.array([[t >= r for r in counts] for t in ranks])
    expected_lerf = np.array([[t < pixels - r for r in counts] for t in ranks])
    np.testing.assert_array_equal(got["morf"], expected_morf)
    np.testing.assert_array_equal(got["lerf"], expected_lerf)
    # The reference agrees with the rule (its margins are large: 5 logits or more).
    for image, t, morf, lerf in zip(images, ranks, expected_morf, expected_lerf):
        rows = ref_road(model, image, heat, 1, percentiles)
        assert [row[0][0] for row in rows] == morf.tolist()
        assert [row[1][0] for row in rows] == lerf.tolist()


# ------------------------------------------------------------------------ per run


def test_settings_check_names_the_flag():
    settings = faithfulness.FaithfulnessSettings()
    assert settings.step is None and settings.substrate == "zero" and settings.sigma is None
    assert tuple(settings.percentiles) == (10, 20, 30, 40, 50, 60, 70, 80, 90)
    assert settings.noise == 0.01 and settings.seed == 0
    settings.check()
    bad = [({"step": 0}, "--deletion-step"), ({"sigma": 0.0}, "--insertion-sigma"),
           ({"sigma": -1.0}, "--insertion-sigma"), ({"percentiles": (0, 50)}, "--road-percentiles"),
           ({"percentiles": (50, 100)}, "--road-percentiles"),
           ({"percentiles": (50, 20)}, "--road-percentiles"),
           ({"percentiles": (20, 20)}, "--road-percentiles"), ({"noise": -0.1}, "--road-noise"),
           ({"substrate": "blur"}, "--deletion-substrate")]
    for fields, flag in bad:
        with pytest.raises(ValueError, match=flag):
            faithfulness.FaithfulnessSettings(**fields).check()


def test_faithfulness_of_model_matches_the_reference(cnn16):
    images = structured_images(4, 16, seed=10)
    images_uint8 = np.round(images * 255).astype(np.uint8)
    floats = images_uint8.astype(np.float32) / 255.0
    top1 = np.asarray(cnn16(floats, training=False)).argmax(axis=1)
    labels = np.where(np.arange(4) < 2, top1, (top1 + 1) % 3).astype("int32")
    settings = faithfulness.FaithfulnessSettings(step=37, substrate="mean", sigma=1.2,
                                                 percentiles=(20, 50, 80), noise=0.0)
    lines = []
    got = faithfulness.faithfulness_of_model(cnn16, images_uint8, labels, LAYER, settings,
                                             batch_size=64, log=lines.append)
    assert lines and all(isinstance(line, str) for line in lines)
    assert set(got) >= {"deletion_auc", "insertion_auc", "road_morf", "road_lerf"}
    gradcam = GradCAM(cnn16, LAYER)
    heat_top1 = np.asarray(gradcam(floats, top1))
    heat_label = np.asarray(gradcam(floats, labels))
    deletion, insertion = zip(*[ref_curves(cnn16, image, h, cls, 37, "mean", 1.2)
                                for image, h, cls in zip(floats, heat_top1, top1)])
    np.testing.assert_allclose(got["deletion_auc"], [ref_auc(c) for c in deletion], atol=1e-5)
    np.testing.assert_allclose(got["insertion_auc"], [ref_auc(c) for c in insertion], atol=1e-5)
    assert np.asarray(got["deletion_auc"]).shape == (4,)
    reference = [ref_road(cnn16, image, h, label, (20, 50, 80))
                 for image, h, label in zip(floats, heat_label, labels)]
    as_bool = {}
    for key in ("morf", "lerf"):
        values = np.asarray(got[f"road_{key}"])
        assert values.shape == (4, 3) and values.dtype.kind == "f"
        assert set(np.unique(values)) <= {0.0, 1.0}
        as_bool[key] = values == 1.0
    check_road(as_bool, reference, (20, 50, 80), 4)
    # Float input in [0, 1] is the same as its uint8 form.
    from_floats = faithfulness.faithfulness_of_model(cnn16, floats, labels, LAYER, settings,
                                                     batch_size=3)
    for key in ("deletion_auc", "insertion_auc", "road_morf", "road_lerf"):
        np.testing.assert_allclose(from_floats[key], got[key], atol=1e-5, err_msg=key)


def test_faithfulness_of_model_indexes_road_noise_by_test_set_position(cnn16):
    """In chunks of 2, the noise of images 2 and 3 is drawn from indices 2 and 3."""
    images = structured_images(4, 16, seed=12)
    labels = np.array([0, 1, 2, 1], np.int32)
    percentiles = (20, 50, 80)
    settings = faithfulness.FaithfulnessSettings(percentiles=percentiles, noise=1.0, seed=5)
    got = faithfulness.faithfulness_of_model(cnn16, images, labels, LAYER, settings,
                                             batch_size=2)
    heat = np.asarray(GradCAM(cnn16, LAYER)(images, labels))
    options = {"percentiles": percentiles, "noise": 1.0, "seed": 5}
    expected = faithfulness.road_correct(cnn16, images, heat, labels, indices=np.arange(4),
                                         **options)
    restarted = faithfulness.road_correct(cnn16, images[2:], heat[2:], labels[2:],
                                          indices=[0, 1], **options)
    assert any(np.any(expected[key][2:] != restarted[key]) for key in ("morf", "lerf")), \
        "the noise does not change the outcome: the test cannot see the indices"
    for key in ("morf", "lerf"):
        np.testing.assert_array_equal(got[f"road_{key}"], expected[key].astype(float))
