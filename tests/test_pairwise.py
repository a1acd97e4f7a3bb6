"""PairwiseModel (CAM erasing with pairwise consistency) and the HNC loss of
TrainingScheme: steps checked against references written from the spec (PAPERS.md
§3 and §4), the ablations, sample weights, XLA, mixed precision, saving, logs, errors
and every registry backbone."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier, structured_images

from playing_distraction import DistractionModel, grad_cam, occlude, occlusion_mask
from playing_distraction.backbones import BACKBONES, build_classifier
from playing_distraction.choices import default_top_k
from playing_distraction.heatmaps import class_activation_maps
from playing_distraction.schemes import PairwiseModel, TrainingScheme

SIZE = 16
MODULE = BACKBONES["small_cnn"].cam_module_layer  # "block2b": 8x8 maps at 16 px
LAST_CONV = BACKBONES["small_cnn"].last_conv  # "features": 4x4 maps at 16 px


def data(count=8, num_classes=3, seed=0):
    images = structured_images(count, SIZE, seed=seed)
    labels = np.random.default_rng(seed + 100).integers(0, num_classes, count).astype("int32")
    return images, labels


def compile_sgd(model, jit_compile=False, learning_rate=0.1, run_eagerly=False):
    """run_eagerly: Keras' own train_step without tracing, where the test is not about
    compilation (tracing a scheme's step costs seconds on a small CPU)."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        run_eagerly=run_eagerly,
    )


def pairwise(seed=1, num_classes=3, **options):
    return PairwiseModel(make_classifier(num_classes, SIZE, seed=seed), MODULE, **options)


# ---------------------------------------------------------------------------------
# Independent NumPy / TensorFlow references, written from the spec.

def log_softmax(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ce_np(logits, labels):
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def kl_np(p_logits, q_logits):
    """KL(q || p) = sum q log(q / p) per image."""
    log_q, log_p = log_softmax(q_logits), log_softmax(p_logits)
    return (np.exp(log_q) * (log_q - log_p)).sum(-1)


def softmax_at_np(logits, labels):
    return np.exp(log_softmax(logits))[np.arange(len(labels)), labels]


def negatives_np(cams, labels, k):
    """Per image, the k negative classes with the largest CAM sum, highest first."""
    sums = np.asarray(cams, np.float64).sum(axis=(1, 2))
    sums[np.arange(len(labels)), labels] = -np.inf
    return np.argsort(-sums, axis=1, kind="stable")[:, :k]


def hnc_np(cams, labels, k, form, temperature=1.0):
    cams = np.asarray(cams, np.float64)
    chosen = negatives_np(cams, labels, k)
    kept = np.stack([cams[b][..., chosen[b]] for b in range(len(labels))])  # (B, h, w, k)
    if form == "mse":
        return (kept ** 2).mean(axis=(1, 2, 3))
    flat = kept.reshape(len(labels), -1, k) / temperature  # (B, positions, k)
    top = flat.max(axis=1, keepdims=True)
    log_spatial = flat - top - np.log(np.exp(flat - top).sum(axis=1, keepdims=True))
    return (-log_spatial.mean(axis=1)).sum(axis=-1)


def upsample_corners(maps, size):
    """Bilinear, corner-aligned resize of (B, h, w) maps to (B, size, size), NumPy."""
    maps = np.asarray(maps, np.float64)
    _, h, w = maps.shape

    def axis(n_in):
        pos = np.linspace(0.0, n_in - 1, size)
        low = np.minimum(np.floor(pos).astype(int), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, pos - low

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows = maps[:, y0] * (1 - fy)[None, :, None] + maps[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def erasing_mask_np(cams, logits, gamma, size):
    """The pixels to erase: min-max normalised CAM of the predicted class, upsampled."""
    cams = np.asarray(cams, np.float64)
    predicted = np.argmax(logits, axis=-1)
    cam = cams[np.arange(len(predicted)), :, :, predicted]
    low = cam.min(axis=(1, 2), keepdims=True)
    high = cam.max(axis=(1, 2), keepdims=True)
    heat = upsample_corners((cam - low) / np.where(high > low, high - low, 1.0), size)
    return heat, heat > gamma


def taps(classifier, *names):
    return keras.Model(classifier.input, [classifier.get_layer(n).output for n in names]
                       + [classifier.outputs[0]])


def ce_tf(logits, labels, num_classes):
    return -tf.reduce_sum(tf.one_hot(labels, num_classes) * tf.nn.log_softmax(logits), -1)


def sgd(variables, gradients, learning_rate):
    for variable, gradient in zip(variables, gradients):
        variable.assign_sub(learning_rate * gradient)


def pairwise_reference_step(classifier, head, images, labels, gamma, alpha, beta, lr):
    """One hand-written SGD step of the full pairwise loss. ``head``: tf.Variables
    (conv kernel, conv bias, side kernel, side bias, erased kernel, erased bias)."""
    conv_k, conv_b, side_k, side_b, erased_k, erased_b = head
    model = taps(classifier, MODULE, LAST_CONV)
    num_classes = side_k.shape[-1]
    variables = list(classifier.trainable_weights) + list(head)
    with tf.GradientTape() as tape:
        stage, _, p = model(images, training=True)
        maps = tf.nn.relu(tf.einsum("bhwc,cd->bhwd", stage, conv_k[0, 0]) + conv_b)
        r = tf.reduce_mean(maps, axis=(1, 2)) @ side_k + side_b
        cams = tf.einsum("bhwd,dk->bhwk", maps, side_k)  # no bias in the module's CAM
        heat, mask = erasing_mask_np(cams.numpy(), p.numpy(), gamma, images.shape[1])
        erased = np.where(mask[..., None], 0.0, images).astype("float32")
        _, erased_features, _ = model(erased, training=True)
        q = tf.reduce_mean(erased_features, axis=(1, 2)) @ erased_k + erased_b
        log_q, log_p = tf.nn.log_softmax(q), tf.nn.log_softmax(p)
        terms = {
            "ce": tf.reduce_mean(ce_tf(p, labels, num_classes)),
            "side_loss": tf.reduce_mean(ce_tf(r, labels, num_classes)),
            "erased_loss": tf.reduce_mean(ce_tf(q, labels, num_classes)),
            "kl_loss": tf.reduce_mean(tf.reduce_sum(tf.exp(log_q) * (log_q - log_p), -1)),
        }
        total = (terms["ce"] + terms["side_loss"] + alpha * terms["erased_loss"]
                 + beta * terms["kl_loss"])
    sgd(variables, tape.gradient(total, variables), lr)
    values = {name: float(value) for name, value in terms.items()}
    return dict(values, loss=float(total), erased_area=float(mask.mean()), heat=heat)


def hnc_reference_step(classifier, images, labels, form, weight, k, lr, temperature=1.0):
    """One hand-written SGD step of CE + weight * HNC (PAPERS.md §4)."""
    model = taps(classifier, LAST_CONV)
    dense = classifier.get_layer("logits")
    num_classes = dense.units
    variables = list(classifier.trainable_weights)
    with tf.GradientTape() as tape:
        features, logits = model(images, training=True)
        cams = tf.einsum("bhwc,ck->bhwk", features, dense.kernel) + dense.bias
        chosen = negatives_np(cams.numpy(), labels, k)
        kept = tf.gather(tf.transpose(cams, (0, 3, 1, 2)), chosen, batch_dims=1)  # (B,k,h,w)
        if form == "mse":
            hnc = tf.reduce_mean(tf.square(kept), axis=(1, 2, 3))
        else:
            flat = tf.reshape(kept, (len(labels), k, -1)) / temperature
            hnc = tf.reduce_sum(-tf.reduce_mean(tf.nn.log_softmax(flat, -1), -1), -1)
        ce = tf.reduce_mean(ce_tf(logits, labels, num_classes))
        total = ce + weight * tf.reduce_mean(hnc)
    sgd(variables, tape.gradient(total, variables), lr)
    return {"loss": float(total), "ce": float(ce), "hnc_loss": float(tf.reduce_mean(hnc))}


def assert_same_weights(ours, expected, before=None, rtol=1e-4, atol=1e-5):
    for index, (a, b) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"weight {index}")
    if before is not None:  # the step moved the weights well beyond the tolerance
        moved = max(np.abs(b - w).max() for b, w in zip(expected, before))
        assert moved > 100 * atol


# ---------------------------------------------------------------------------------
# 1. The full pairwise step against the hand-written reference.

def test_full_pairwise_step_matches_the_reference_step():
    images, labels = data(8)
    gamma, alpha, beta, lr = 0.5, 0.8, 1.5, 0.1
    scheme = pairwise(seed=1, gamma=gamma, alpha=alpha, beta=beta)
    reference = make_classifier(size=SIZE, seed=1)
    head = [tf.Variable(w) for w in
            scheme.cam_module.get_weights() + scheme.erased_head.get_weights()]
    head_before = [v.numpy() for v in head]
    before = reference.get_weights()
    compile_sgd(scheme, learning_rate=lr)

    logs = scheme.train_on_batch(images, labels, return_dict=True)
    expected = pairwise_reference_step(reference, head, images, labels, gamma, alpha, beta, lr)

    # The erasing is non-trivial and no pixel sits on the threshold (robust mask).
    assert 0.1 < expected["erased_area"] < 0.9
    assert np.abs(expected["heat"] - gamma).min() > 2e-6
    assert logs["erased_area"] == pytest.approx(expected["erased_area"], abs=1e-6)
    # Classifier weights (BatchNorm moving statistics included: two training passes).
    assert_same_weights(scheme.classifier.get_weights(), reference.get_weights(), before)
    assert_same_weights(scheme.cam_module.get_weights() + scheme.erased_head.get_weights(),
                        [v.numpy() for v in head], head_before)
    assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    for name in ("side_loss", "erased_loss", "kl_loss"):
        assert logs[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert expected["kl_loss"] > 1e-4  # the KL term is not vacuous
    assert "attention_mining_loss" not in logs


# ---------------------------------------------------------------------------------
# 2. The ablations, recomputed from the training outputs.

def per_image_terms(outputs, labels):
    return {
        "ce": ce_np(outputs["logits"], labels),
        "side_loss": ce_np(outputs["side_logits"], labels),
        "erased_loss": ce_np(outputs["erased_logits"], labels),
        "kl_loss": kl_np(outputs["logits"], outputs["erased_logits"]),
        "attention_mining_loss": softmax_at_np(outputs["erased_logits"], labels),
    }


LOSS_FORMULAS = {
    "full": lambda t, a, b: t["ce"] + t["side_loss"] + a * t["erased_loss"] + b * t["kl_loss"],
    "category": lambda t, a, b: t["ce"] + t["side_loss"] + a * t["erased_loss"],
    "instance": lambda t, a, b: t["ce"] + t["side_loss"] + b * t["kl_loss"],
    "attention_mining": lambda t, a, b: t["ce"] + t["side_loss"] + a * t["attention_mining_loss"],
}
VARIANT_TERMS = {
    "full": {"side_loss", "erased_loss", "kl_loss", "erased_area"},
    "category": {"side_loss", "erased_loss", "erased_area"},
    "instance": {"side_loss", "kl_loss", "erased_area"},
    "attention_mining": {"side_loss", "attention_mining_loss", "erased_area"},
}


@pytest.mark.parametrize("variant", list(LOSS_FORMULAS))
def test_ablation_losses_weight_the_right_terms(variant):
    images, labels = data(8)
    alpha, beta = 0.7, 1.5
    classifier = make_classifier(size=SIZE, seed=2)
    scheme = PairwiseModel(classifier, MODULE, gamma=0.5, alpha=alpha, beta=beta,
                           pairwise_loss=variant)
    # Another alpha and beta, fed the same training outputs below.
    other = PairwiseModel(classifier, MODULE, gamma=0.5, alpha=2.5, beta=0.25,
                          pairwise_loss=variant)
    for model in (scheme, other):
        compile_sgd(model)
    assert {t.name for t in scheme.term_trackers} == VARIANT_TERMS[variant]
    assert (scheme.erased_head is None) == (variant == "attention_mining")

    outputs = scheme(images, training=True)
    terms = per_image_terms({k: v.numpy() for k, v in outputs.items()}, labels)
    loss = float(scheme.compute_loss(images, labels, outputs))
    assert loss == pytest.approx(LOSS_FORMULAS[variant](terms, alpha, beta).mean(), rel=1e-5)
    for tracker in scheme.term_trackers:
        if tracker.name != "erased_area":
            assert float(tracker.result()) == pytest.approx(terms[tracker.name].mean(), rel=1e-5)
    # alpha and beta scale their own terms only.
    other_loss = float(other.compute_loss(images, labels, outputs))
    assert other_loss == pytest.approx(LOSS_FORMULAS[variant](terms, 2.5, 0.25).mean(), rel=1e-5)
    assert abs(other_loss - loss) > 1e-3

    if variant == "attention_mining":
        # q comes from the main classifier on the erased batch: no head of its own.
        assert len(scheme.trainable_weights) == (len(classifier.trainable_weights)
                                                 + len(scheme.cam_module.trainable_weights))
        _, cams = scheme.cam_module(outputs["stage"])
        erased = scheme.erasing(images, cams, outputs["logits"], training=True)
        assert 0 < float(tf.reduce_mean(tf.cast(erased == 0, tf.float32))) < 1
        np.testing.assert_allclose(outputs["erased_logits"], classifier(erased, training=True),
                                   rtol=1e-5, atol=1e-5)
    else:
        # The module's CAMs carry no bias: their spatial mean is r minus that bias.
        _, cams = scheme.cam_module(outputs["stage"])
        np.testing.assert_allclose(
            tf.reduce_mean(cams, axis=(1, 2)) + scheme.cam_module.classifier.bias,
            outputs["side_logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            outputs["erased_logits"],
            scheme.erased_head(scheme.network(
                scheme.erasing(images, scheme.cam_module(outputs["stage"])[1],
                               outputs["logits"], training=True), training=True)["pooled"]),
            rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------
# 3. The HNC loss.

@pytest.mark.parametrize("form,num_classes", [("mse", 10), ("mse", 21), ("kd", 21), ("kd", 10)])
def test_hnc_step_matches_the_reference_step(form, num_classes):
    k = {10: 1, 21: 3}[num_classes]
    weight = {"mse": 0.07, "kd": 0.005}[form]
    images, labels = data(8, num_classes)
    scheme = TrainingScheme(make_classifier(num_classes, SIZE, seed=4), hnc=form)
    assert scheme.hnc_top_k == k == default_top_k(num_classes)
    assert scheme.hnc_weight == weight
    reference = make_classifier(num_classes, SIZE, seed=4)
    before = reference.get_weights()

    # The CAMs in the training outputs: features through the head, mean = logits.
    outputs = scheme(images, training=True)
    head = scheme.classifier.get_layer("logits")
    np.testing.assert_allclose(
        outputs["cams"], class_activation_maps(outputs["features"], head.kernel, head.bias))
    np.testing.assert_allclose(tf.reduce_mean(outputs["cams"], axis=(1, 2)), outputs["logits"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["cams"], np.einsum(
        "bhwc,ck->bhwk", outputs["features"], head.kernel.numpy()) + head.bias.numpy(),
        rtol=1e-4, atol=1e-5)
    scheme.classifier.set_weights(before)  # undo the BatchNorm update of that call

    compile_sgd(scheme)
    logs = scheme.train_on_batch(images, labels, return_dict=True)
    expected = hnc_reference_step(reference, images, labels, form, weight, k, 0.1)
    assert logs["hnc_loss"] == pytest.approx(expected["hnc_loss"], rel=1e-4)
    assert logs["loss"] == pytest.approx(expected["ce"] + weight * expected["hnc_loss"], rel=1e-5)
    assert weight * expected["hnc_loss"] > 1e-3 * expected["ce"]  # the term matters
    assert_same_weights(scheme.classifier.get_weights(), reference.get_weights(), before)


def test_hnc_numpy_reference_agrees_with_the_scheme_outputs():
    """The per-image HNC values behind the metric, recomputed in NumPy (mse and kd)."""
    images, labels = data(8, 21)
    for form, temperature in (("mse", 1.0), ("kd", 2.0)):
        scheme = TrainingScheme(make_classifier(21, SIZE, seed=5), hnc=form, hnc_top_k=4,
                                hnc_temperature=temperature)
        compile_sgd(scheme)
        outputs = scheme(images, training=True)
        expected = hnc_np(outputs["cams"].numpy(), labels, 4, form, temperature)
        loss = float(scheme.compute_loss(images, labels, outputs))
        ce = ce_np(outputs["logits"].numpy(), labels).mean()
        assert loss == pytest.approx(ce + scheme.hnc_weight * expected.mean(), rel=1e-5)
        assert float(scheme.term_trackers[0].result()) == pytest.approx(expected.mean(), rel=1e-5)


def test_training_scheme_without_hnc_is_exactly_plain_training():
    images, labels = data(8)
    plain = make_classifier(size=SIZE, seed=7)
    scheme = TrainingScheme(make_classifier(size=SIZE, seed=7))
    assert scheme.network is None and scheme.term_names() == []
    for model in (plain, scheme):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)
        model.fit(images, labels, batch_size=4, epochs=2, shuffle=False, verbose=0)
    changed = False
    for ours, reference, initial in zip(scheme.classifier.get_weights(), plain.get_weights(),
                                        make_classifier(size=SIZE, seed=7).get_weights()):
        np.testing.assert_array_equal(ours, reference)
        changed |= not np.allclose(ours, initial)
    assert changed


def test_distraction_with_hnc_takes_the_term_on_the_occluded_batch():
    images, labels = data(8, 10)
    threshold = 0.6
    scheme = DistractionModel(make_classifier(10, SIZE, seed=3), probability=1.0,
                              threshold=threshold, seed=0, hnc="mse")
    reference = make_classifier(10, SIZE, seed=3)
    before = reference.get_weights()
    heat = grad_cam(reference, images, labels)
    occluded = occlude(images, occlusion_mask(heat, threshold), "zero").numpy()
    assert 0.05 < float(np.mean(heat.numpy() > threshold)) < 0.9
    # HNC of the clean batch differs: the check below can tell the two apart.
    clean_model = make_classifier(10, SIZE, seed=3)
    clean = hnc_reference_step(clean_model, images, labels, "mse", 0.07, 1, 0.0)

    compile_sgd(scheme)
    logs = scheme.train_on_batch(images, labels, return_dict=True)
    expected = hnc_reference_step(reference, occluded, labels, "mse", 0.07, 1, 0.1)
    assert logs["occluded_steps"] == 1.0
    assert abs(clean["hnc_loss"] - expected["hnc_loss"]) > 1e-3 * expected["hnc_loss"]
    assert logs["hnc_loss"] == pytest.approx(expected["hnc_loss"], rel=1e-4)
    assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert_same_weights(scheme.classifier.get_weights(), reference.get_weights(), before)


# ---------------------------------------------------------------------------------
# 4. Sample weights.

@pytest.mark.parametrize("variant", ["full", "attention_mining"])
def test_sample_weights_weight_every_term(variant):
    images, labels = data(8)
    alpha, beta = 0.7, 1.5
    scheme = pairwise(seed=2, gamma=0.5, alpha=alpha, beta=beta, pairwise_loss=variant,
                      hnc="mse")
    compile_sgd(scheme)
    outputs = scheme(images, training=True)
    terms = per_image_terms({k: v.numpy() for k, v in outputs.items()}, labels)
    terms["hnc_loss"] = hnc_np(outputs["cams"].numpy(), labels, 1, "mse")
    terms["erased_area"] = outputs["erased_area"].numpy()
    per_image = LOSS_FORMULAS[variant](terms, alpha, beta) + 0.07 * terms["hnc_loss"]

    losses = {}
    for key, weights in {"one": np.ones(8), "two": np.full(8, 2.0),
                         "some": np.array([1, 0, 2, 0, 1, 0.5, 0, 1.0])}.items():
        for tracker in scheme.term_trackers:
            tracker.reset_state()
        losses[key] = float(scheme.compute_loss(images, labels, outputs,
                                                sample_weight=weights.astype("float32")))
        # Keras' reduction: weighted sum over the batch size, for every term alike.
        assert losses[key] == pytest.approx((weights * per_image).sum() / 8, rel=1e-5), key
        for tracker in scheme.term_trackers:  # weighted means: zero weights drop out
            expected = (weights * terms[tracker.name]).sum() / weights.sum()
            assert float(tracker.result()) == pytest.approx(expected, rel=1e-5), tracker.name
    assert losses["two"] == pytest.approx(2 * losses["one"], rel=1e-6)


def test_sample_weights_in_a_training_step():
    images, labels = data(8)
    logs = []
    for weights in (np.ones(8), np.full(8, 2.0)):
        scheme = pairwise(seed=3, gamma=0.5, hnc="kd")
        compile_sgd(scheme, run_eagerly=True)
        logs.append(scheme.train_on_batch(images, labels, sample_weight=weights.astype("float32"),
                                          return_dict=True))
    one, two = logs
    assert two["loss"] == pytest.approx(2 * one["loss"], rel=1e-5)
    for name in ("hnc_loss", "side_loss", "erased_loss", "kl_loss", "erased_area"):
        assert two[name] == pytest.approx(one[name], rel=1e-5), name  # weighted means


# ---------------------------------------------------------------------------------
# 5. XLA.

XLA_SCHEMES = {
    "pairwise_full": lambda: pairwise(seed=2, gamma=0.5),
    "pairwise_attention_mining": lambda: pairwise(seed=2, gamma=0.5,
                                                  pairwise_loss="attention_mining"),
    "hnc_kd": lambda: TrainingScheme(make_classifier(10, SIZE, seed=2), hnc="kd"),
    "distraction_hnc": lambda: DistractionModel(make_classifier(10, SIZE, seed=2),
                                                probability=1.0, threshold=0.5, seed=0,
                                                hnc="mse"),
}


@pytest.mark.parametrize("name", list(XLA_SCHEMES))
def test_training_step_compiles_with_xla(name):
    images, labels = data(16, 10 if name in ("hnc_kd", "distraction_hnc") else 3)
    results = []
    for jit in (False, True):
        scheme = XLA_SCHEMES[name]()
        initial = scheme.get_weights()
        compile_sgd(scheme, jit_compile=jit, learning_rate=0.05, run_eagerly=not jit)
        history = scheme.fit(images, labels, batch_size=8, epochs=1, shuffle=False,
                             verbose=0).history
        assert np.isfinite(history["loss"][0])
        results.append(scheme.get_weights())
    assert scheme.jit_compile and not scheme.run_eagerly
    moved = max(np.abs(a - b).max() for a, b in zip(results[0], initial))
    assert moved > 1e-3
    for index, (eager, xla) in enumerate(zip(*results)):
        np.testing.assert_allclose(xla, eager, rtol=1e-3, atol=1e-5, err_msg=f"weight {index}")


# ---------------------------------------------------------------------------------
# 6. Mixed precision.

def test_mixed_precision_pairwise_step_moves_the_weights_like_float32():
    images, labels = data(8)
    deltas = []
    side_weights = None
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        scheme = pairwise(seed=9, gamma=0.5, hnc="mse")
        if side_weights is None:
            side_weights = (scheme.cam_module.get_weights(), scheme.erased_head.get_weights())
        else:
            scheme.cam_module.set_weights(side_weights[0])
            scheme.erased_head.set_weights(side_weights[1])
        compile_sgd(scheme, learning_rate=0.01, run_eagerly=True)
        before = np.concatenate([w.numpy().ravel() for w in scheme.trainable_weights])
        logs = scheme.train_on_batch(images, labels, return_dict=True)
        after = np.concatenate([w.numpy().ravel() for w in scheme.trainable_weights])
        deltas.append(after - before)
        assert np.isfinite(logs["loss"]) and 0 < logs["erased_area"] < 1
    assert isinstance(scheme.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scheme.classifier.get_layer(MODULE).compute_dtype == "float16"
    outputs = scheme(images, training=True)
    for key in ("logits", "side_logits", "erased_logits", "cams", "erased_area"):
        assert outputs[key].dtype == tf.float32, key
    side_logits, side_cams = scheme.cam_module(outputs["stage"])
    assert side_logits.dtype == side_cams.dtype == tf.float32
    reference, mixed = deltas
    ratio = np.linalg.norm(mixed) / np.linalg.norm(reference)
    cosine = mixed @ reference / (np.linalg.norm(mixed) * np.linalg.norm(reference))
    assert 0.8 < ratio < 1.25 and cosine > 0.9


# ---------------------------------------------------------------------------------
# 7. Configuration and saving.

def test_pairwise_config_round_trip():
    scheme = pairwise(seed=1, gamma=0.4, alpha=0.5, beta=3.0, pairwise_loss="instance",
                      module_filters=16, hnc="kd", hnc_weight=0.01, hnc_top_k=2,
                      hnc_temperature=2.0)
    config = scheme.get_config()
    clone = PairwiseModel.from_config(json.loads(json.dumps(config)))
    settings = ("module_layer", "gamma", "alpha", "beta", "pairwise_loss", "module_filters",
                "hnc", "hnc_weight", "hnc_top_k", "hnc_temperature")
    assert {s: getattr(clone, s) for s in settings} == {
        "module_layer": MODULE, "gamma": 0.4, "alpha": 0.5, "beta": 3.0,
        "pairwise_loss": "instance", "module_filters": 16, "hnc": "kd", "hnc_weight": 0.01,
        "hnc_top_k": 2, "hnc_temperature": 2.0}
    assert clone.cam_module.filters == 16 and clone.erasing.gamma == 0.4
    assert clone.erased_head is not None
    assert {t.name for t in clone.term_trackers} == {"hnc_loss", "side_loss", "kl_loss",
                                                     "erased_area"}
    clone.classifier.set_weights(scheme.classifier.get_weights())
    images, _ = data(2)
    np.testing.assert_allclose(clone(images), scheme(images), atol=1e-6)


def test_training_scheme_config_round_trip():
    scheme = TrainingScheme(make_classifier(10, SIZE), hnc="kd", hnc_top_k=2)
    clone = TrainingScheme.from_config(json.loads(json.dumps(scheme.get_config())))
    assert (clone.hnc, clone.hnc_top_k, clone.hnc_weight, clone.hnc_temperature) == (
        "kd", 2, 0.005, 1.0)
    assert clone.classifier.get_layer("logits").units == 10


@pytest.mark.parametrize("variant", ["full", "attention_mining"])
def test_saved_scheme_reloads_and_predicts_the_same(tmp_path, variant):
    images, labels = data(8)
    scheme = pairwise(seed=2, gamma=0.5, alpha=0.9, beta=1.5, pairwise_loss=variant,
                      hnc="mse")
    compile_sgd(scheme, run_eagerly=True)
    scheme.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "scheme.keras"
    scheme.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, PairwiseModel)
    assert (loaded.gamma, loaded.alpha, loaded.beta, loaded.pairwise_loss, loaded.hnc) == (
        0.5, 0.9, 1.5, variant, "mse")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               scheme.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    # The training-only parts came back too.
    for ours, theirs in zip(scheme.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    trained, reloaded = scheme(images, training=True), loaded(images, training=True)
    for key in ("side_logits", "erased_logits", "cams"):
        np.testing.assert_allclose(reloaded[key], trained[key], rtol=1e-5, atol=1e-5)


def test_saved_classifier_holds_no_scheme_layer(tmp_path):
    images, labels = data(8)
    scheme = pairwise(seed=2, gamma=0.5, hnc="kd")
    compile_sgd(scheme, run_eagerly=True)
    scheme.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "classifier.keras"
    scheme.classifier.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "playing_distraction" not in config
    assert "cam_module" not in config and "erased_logits" not in config
    loaded = keras.models.load_model(path)
    assert all(type(layer).__module__.startswith("keras.") for layer in loaded.layers)
    assert len(loaded.weights) == len(scheme.classifier.weights)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               scheme.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------
# 8. Logs.

LOG_SCHEMES = {
    "hnc_mse": (lambda: TrainingScheme(make_classifier(10, SIZE), hnc="mse"), {"hnc_loss"}),
    "distraction_hnc": (lambda: DistractionModel(make_classifier(10, SIZE), probability=1.0,
                                                 threshold=0.5, seed=0, hnc="kd"),
                        {"hnc_loss", "occluded_steps", "occluded_area"}),
    **{f"pairwise_{v}": (lambda v=v: pairwise(pairwise_loss=v, gamma=0.5), VARIANT_TERMS[v])
       for v in VARIANT_TERMS},
    "pairwise_full_hnc": (lambda: pairwise(gamma=0.5, hnc="mse"),
                          VARIANT_TERMS["full"] | {"hnc_loss"}),
}


@pytest.mark.parametrize("name", list(LOG_SCHEMES))
def test_training_metrics_stay_out_of_evaluation_logs(name):
    build, terms = LOG_SCHEMES[name]
    scheme = build()
    images, labels = data(8, 10 if name in ("hnc_mse", "distraction_hnc") else 3)
    compile_sgd(scheme, run_eagerly=True)
    history = scheme.fit(images, labels, batch_size=8, epochs=1, verbose=0,
                         validation_data=(images, labels)).history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"} | terms
    evaluation = scheme.evaluate(images, labels, verbose=0, return_dict=True)
    assert set(evaluation) == {"loss", "accuracy"}
    # Evaluation is the classifier alone in inference mode: CE of its logits only.
    logits = scheme.classifier(images, training=False).numpy()
    assert evaluation["loss"] == pytest.approx(ce_np(logits, labels).mean(), rel=1e-4)


# ---------------------------------------------------------------------------------
# 9. Errors.

def flatten_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    logits = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, logits)


@pytest.mark.parametrize("build", [
    lambda: pairwise(pairwise_loss="both"),
    lambda: pairwise(alpha=-0.5),
    lambda: pairwise(beta=-1.0),
    lambda: pairwise(gamma=1.5),
    lambda: pairwise(gamma=-0.1),
    lambda: PairwiseModel(make_classifier(size=SIZE), "head_pool"),
    lambda: PairwiseModel(make_classifier(size=SIZE), "no_such_layer"),
    lambda: PairwiseModel(flatten_classifier(), "conv"),
    lambda: pairwise(hnc="mse", hnc_top_k=3),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc="kd", hnc_top_k=3),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc="kd", hnc_top_k=0),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc="l1"),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc="mse", hnc_weight=-0.1),
    lambda: TrainingScheme(flatten_classifier(), hnc="mse"),
    lambda: DistractionModel(flatten_classifier(), hnc="kd"),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc_weight=0.1),
    lambda: TrainingScheme(make_classifier(size=SIZE), hnc_top_k=1),
], ids=["pairwise_loss", "alpha", "beta", "gamma_high", "gamma_low", "module_2d",
        "module_missing", "pairwise_flatten_head", "pairwise_top_k", "top_k_K", "top_k_0",
        "hnc_form", "hnc_weight", "hnc_flatten_head", "distraction_hnc_flatten_head",
        "hnc_weight_without_hnc", "hnc_top_k_without_hnc"])
def test_bad_settings_are_value_errors(build):
    with pytest.raises(ValueError):
        build()


def test_flatten_head_is_fine_without_hnc():
    scheme = TrainingScheme(flatten_classifier())  # plain training needs no CAMs
    assert scheme.network is None


# ---------------------------------------------------------------------------------
# 10. Every registry backbone.

def check_backbone(name):
    spec = BACKBONES[name]
    size = spec.min_input_size
    keras.utils.set_random_seed(0)
    scheme = PairwiseModel(build_classifier(name, 3, size, "none"), spec.cam_module_layer)
    stage = scheme.classifier.get_layer(spec.cam_module_layer).output.shape
    last = scheme.classifier.get_layer(spec.last_conv).output.shape
    assert stage[1] >= last[1] and stage[2] >= last[2]
    images = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    compile_sgd(scheme, learning_rate=0.01, run_eagerly=True)
    logs = scheme.train_on_batch(images, np.array([0, 2], "int32"), return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    assert 0.0 <= logs["erased_area"] < 1.0


def test_small_cnn_backbone_takes_the_pairwise_scheme():
    check_backbone("small_cnn")
    stage = make_classifier(size=16).get_layer(MODULE).output.shape
    assert stage[1:3] == (8, 8)  # larger than the 4x4 last conv map


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "inception_v3", "densenet121"])
def test_full_backbones_take_the_pairwise_scheme(name):
    check_backbone(name)
