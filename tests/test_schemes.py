"""DistractionModel: the training scheme of Morales et al. (2021), Algorithm 1."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier, structured_images

from playing_distraction import DistractionModel, grad_cam, occlude, occlusion_mask
from playing_distraction.schemes import true_classes

SIZE = 16


def data(count=32, num_classes=3, seed=0):
    images = structured_images(count, SIZE, seed=seed)
    labels = np.random.default_rng(seed).integers(0, num_classes, count).astype("int32")
    return images, labels


def compile_sgd(model, jit_compile=False, learning_rate=0.05):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


def test_probability_zero_is_exactly_plain_training():
    images, labels = data()
    plain = make_classifier(size=SIZE, seed=7)
    scheme = DistractionModel(make_classifier(size=SIZE, seed=7), probability=0.0, seed=1)
    for model in (plain, scheme):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for ours, reference in zip(scheme.classifier.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(ours, reference)
    assert scheme.occluded_steps.result() == 0.0


def test_probability_one_trains_on_the_occluded_batch():
    """One step of the scheme = one plain step on the batch occluded by hand, using
    Grad-CAM of the pre-step weights in inference mode for the true classes."""
    images, labels = data(8)
    scheme = DistractionModel(make_classifier(size=SIZE, seed=3), probability=1.0,
                              threshold=0.6, fill="zero", seed=0)
    reference = make_classifier(size=SIZE, seed=3)
    heat = grad_cam(reference, images, labels)
    occluded = occlude(images, occlusion_mask(heat, 0.6), "zero")
    assert 0.05 < float(tf.reduce_mean(tf.cast(heat > 0.6, tf.float32))) < 0.9
    for model in (scheme, reference):
        compile_sgd(model)
    logs = scheme.train_on_batch(images, labels, return_dict=True)
    reference.train_on_batch(occluded, labels)
    for ours, expected in zip(scheme.classifier.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert logs["occluded_steps"] == 1.0
    assert logs["occluded_area"] == pytest.approx(float(tf.reduce_mean(tf.cast(heat > 0.6, tf.float32))))


def test_occlusion_changes_training():
    images, labels = data()
    results = []
    for probability in (0.0, 1.0):
        scheme = DistractionModel(make_classifier(size=SIZE, seed=5), probability=probability,
                                  threshold=0.5, seed=0)
        compile_sgd(scheme)
        scheme.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(scheme.classifier.get_weights())
    assert any(not np.allclose(a, b) for a, b in zip(*results))


def test_one_draw_per_batch_with_probability_p_fresh_every_epoch():
    images, labels = data(8)
    scheme = DistractionModel(make_classifier(size=SIZE), probability=0.25, seed=4)
    compile_sgd(scheme)
    fractions = [
        scheme.fit(images, labels, batch_size=2, epochs=1, shuffle=False, verbose=0)
        .history["occluded_steps"][0]
        for _ in range(4)
    ]
    history = scheme.fit(np.repeat(images, 25, axis=0), np.repeat(labels, 25), batch_size=1,
                         epochs=1, shuffle=False, verbose=0).history
    # 200 Bernoulli(0.25) draws: mean 0.25, standard deviation 0.031.
    assert abs(history["occluded_steps"][0] - 0.25) < 0.13
    assert all(f in (0.0, 0.25, 0.5, 0.75, 1.0) for f in fractions)  # whole steps, 4 per epoch
    assert len(set(fractions)) > 1 or fractions[0] not in (0.0, 1.0)


def test_scheme_metrics_are_reported_in_training_only():
    images, labels = data(16)
    scheme = DistractionModel(make_classifier(size=SIZE), probability=1.0, threshold=0.5, seed=0)
    compile_sgd(scheme)
    history = scheme.fit(images, labels, batch_size=8, epochs=1, verbose=0,
                         validation_data=(images, labels)).history
    assert history["occluded_steps"] == [1.0]
    assert 0.0 < history["occluded_area"][0] < 1.0
    assert "val_occluded_steps" not in history and "val_accuracy" in history
    assert set(scheme.evaluate(images, labels, verbose=0, return_dict=True)) == {"loss", "accuracy"}


@pytest.mark.parametrize("fill", ["zero", "random"])
def test_training_step_compiles_with_xla(fill):
    images, labels = data(16)
    results = []
    for jit in (False, True):
        scheme = DistractionModel(make_classifier(size=SIZE, seed=2), probability=1.0,
                                  threshold=0.5, fill=fill, seed=0)
        compile_sgd(scheme, jit_compile=jit)
        history = scheme.fit(images, labels, batch_size=8, epochs=1, shuffle=False,
                             verbose=0).history
        assert history["occluded_steps"] == [1.0]
        results.append(scheme.classifier.get_weights())
    assert scheme.jit_compile
    if fill == "zero":  # the random fill draws differently under XLA
        for eager, xla in zip(*results):
            np.testing.assert_allclose(xla, eager, rtol=1e-3, atol=1e-5)


def test_tape_path_compiles_with_xla():
    """A head that is not GAP + linear uses the GradientTape inside the step."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last")(inputs)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    scheme = DistractionModel(keras.Model(inputs, logits), probability=1.0, seed=0)
    assert not scheme.heatmaps.shortcut
    compile_sgd(scheme, jit_compile=True)
    images, labels = data(8)
    history = scheme.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
    assert history["occluded_steps"] == [1.0] and np.isfinite(history["loss"][0])


def test_mixed_precision_scales_the_loss():
    """Under mixed_float16 the optimizer is wrapped in a LossScaleOptimizer; a step must
    move the weights as the float32 step does (a missing scale_loss would shrink the
    update by the 2**15 loss scale, a missing unscale would blow it up)."""
    images, labels = data(8)
    deltas = []
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        scheme = DistractionModel(make_classifier(size=SIZE, seed=9), probability=1.0,
                                  threshold=0.7, seed=0)
        compile_sgd(scheme, learning_rate=0.01)
        before = np.concatenate([w.ravel() for w in scheme.classifier.get_weights()])
        logs = scheme.train_on_batch(images, labels, return_dict=True)
        after = np.concatenate([w.ravel() for w in scheme.classifier.get_weights()])
        deltas.append(after - before)
        assert logs["occluded_steps"] == 1.0 and np.isfinite(logs["loss"])
    assert isinstance(scheme.optimizer, keras.optimizers.LossScaleOptimizer)
    reference, mixed = deltas
    ratio = np.linalg.norm(mixed) / np.linalg.norm(reference)
    cosine = mixed @ reference / (np.linalg.norm(mixed) * np.linalg.norm(reference))
    assert 0.8 < ratio < 1.25 and cosine > 0.9


def test_config_round_trip():
    scheme = DistractionModel(make_classifier(size=SIZE), probability=0.4, threshold=0.7,
                              fill="one", layer_name="block2b", seed=3)
    clone = DistractionModel.from_config(scheme.get_config())
    assert (clone.probability, clone.threshold, clone.fill, clone.layer_name, clone.seed) == (
        0.4, 0.7, "one", "block2b", 3)
    assert clone.heatmaps.layer_name == "block2b"
    clone.classifier.set_weights(scheme.classifier.get_weights())
    images, _ = data(2)
    np.testing.assert_allclose(clone(images), scheme(images), atol=1e-6)


def test_one_hot_and_sparse_labels_give_the_same_classes():
    sparse = np.array([2, 0, 1])
    np.testing.assert_array_equal(true_classes(sparse), sparse)
    np.testing.assert_array_equal(true_classes(sparse[:, None]), sparse)
    np.testing.assert_array_equal(true_classes(np.eye(3)[sparse]), sparse)


@pytest.mark.parametrize("options", [{"probability": 1.5}, {"probability": -0.1},
                                     {"threshold": 2.0}, {"fill": "blue"}])
def test_bad_parameters_are_errors(options):
    with pytest.raises(ValueError):
        DistractionModel(make_classifier(size=SIZE), **options)
