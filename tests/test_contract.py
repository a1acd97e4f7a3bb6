"""The scheme contract, checked for every registered method (``methods.METHODS``) with
the HNC add-on off and on: the XLA step equals the eager step, mixed_float16 trains,
config and ``.keras`` round trips, the saved classifier loads as the method says,
training-only metrics stay out of evaluation, and sample weights weight the step.

The cases are read from the registry at import: a new method gets these checks by
registering. Each case is the model ``training.build_model`` makes from a resolved
``TrainConfig`` with the method's registered defaults (distraction: the zero fill;
its "none" fill is the plain classifier, not a scheme), on small_cnn at 32 px,
3 classes, batches of 8 and one or two steps.
"""

import inspect
import json
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from conftest import make_classifier, structured_images

from playing_distraction.config import TrainConfig
from playing_distraction.distribute import SyncBatchNormalization, with_batchnorm
from playing_distraction.methods import METHODS
from playing_distraction.schemes import TrainingScheme
from playing_distraction.stages import compile_model
from playing_distraction.training import build_model, saved_classifier

NUM_CLASSES, SIZE, BATCH = 3, 32, 8
HNC_SETTINGS = (None, "mse")  # the add-on off, and on in one form


def case_id(method, hnc):
    return f"{method}-hnc_{hnc or 'off'}"


CASES = [pytest.param(method, hnc, id=case_id(method, hnc))
         for method in sorted(METHODS) for hnc in HNC_SETTINGS]

# Settings for the XLA comparison, by method, and the training metrics that prove
# they took effect. TensorFlow's stateless random ops draw other numbers under XLA
# than its CPU kernels do for the same seed (keras.random.uniform with
# SeedGenerator(0): 0.211, 0.082, 0.383 in a plain tf.function, 0.905, 0.762, 0.878
# with jit_compile), so the two runs cannot share a random branch's draws; the
# branch is taken on every step instead: distraction occludes every batch.
XLA_SETTINGS = {"distraction": ({"probability": 1.0}, {"occluded_steps": 1.0}),
                "feataug": ({"dv_probability": 1.0}, {"shifted_share": 1.0})}


def data(count=BATCH, seed=0):
    images = structured_images(count, SIZE, seed=seed)
    labels = np.random.default_rng(seed + 100).integers(0, NUM_CLASSES, count).astype("int32")
    return images, labels


def build(method, hnc, **settings):
    """(config, model) as a training run builds them, seeded with the config's seed;
    plain SGD at lr 0.01 (no momentum, no weight decay), XLA off unless ``settings``
    say otherwise."""
    config = TrainConfig(
        method=method, backbone="small_cnn", weights="none", image_size=SIZE,
        hnc=hnc or "none", optimizer="sgd", momentum=0.0, learning_rate=0.01, weight_decay=0.0,
        **{"jit_compile": "off", **settings},
    ).resolved().for_classes(NUM_CLASSES)
    keras.utils.set_random_seed(config.seed)
    _, model = build_model(config, NUM_CLASSES)
    assert isinstance(model, TrainingScheme), f"{method} builds {type(model).__name__}"
    return config, model


def compiled(method, hnc, eager=True, **settings):
    """A built model compiled as a training stage compiles it. ``eager``: run Keras' own
    train_step without tracing it, where the check is not about compilation (tracing
    a scheme's step costs seconds on a small CPU)."""
    config, model = build(method, hnc, **settings)
    compile_model(model, config)
    model.run_eagerly = eager
    return model


def trainable(model):
    return [variable.numpy().copy() for variable in model.trainable_weights]


def json_form(config):
    """A config as it is written to disk (tuples become lists)."""
    return json.loads(json.dumps(config))


# ---------------------------------------------------------------------------------
# 1. XLA.

@pytest.mark.parametrize(("method", "hnc"), CASES)
def test_xla_step_equals_the_eager_step(method, hnc):
    settings, proof = XLA_SETTINGS.get(method, ({}, {}))
    images, labels = data(2 * BATCH)
    runs, initial = [], None
    for jit in ("off", "on"):
        config, model = build(method, hnc, jit_compile=jit, **settings)
        if initial is None:
            initial = model.get_weights()
        else:  # the same initial weights, whatever the seed gave
            model.set_weights(initial)
        compile_model(model, config)
        model.run_eagerly = jit == "off"
        history = model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False,
                            verbose=0).history
        runs.append((model, history))
    (eager, eager_history), (xla, xla_history) = runs
    assert xla.jit_compile and not xla.run_eagerly and eager.run_eagerly
    for name, value in proof.items():
        assert eager_history[name] == xla_history[name] == [value], name
    assert set(xla_history) == set(eager_history)
    for name in eager_history:
        np.testing.assert_allclose(xla_history[name], eager_history[name], rtol=1e-3,
                                   atol=1e-5, err_msg=name)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(eager.get_weights(), initial))
    assert moved > 1e-3
    for index, (ours, expected) in enumerate(zip(xla.get_weights(), eager.get_weights())):
        np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5,
                                   err_msg=f"weight {index} ({xla.weights[index].path})")


# ---------------------------------------------------------------------------------
# 2. Mixed precision.

@pytest.mark.parametrize(("method", "hnc"), CASES)
def test_mixed_float16_trains(method, hnc):
    """One step under mixed_float16 moves the weights as the float32 step does: a
    missing loss scale would shrink the update by the 2**15 scale, a missing unscale
    blow it up, an overflow make it non-finite. One step only: float16 convolutions
    train slowly on a CPU (seconds per step)."""
    images, labels = data()
    deltas, initial = [], None
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)  # conftest resets it
        model = compiled(method, hnc)
        if initial is None:
            initial = model.get_weights()
        else:
            model.set_weights(initial)
        before = trainable(model)
        history = model.fit(images, labels, batch_size=BATCH, epochs=1, verbose=0).history
        after = trainable(model)
        deltas.append(np.concatenate([(a - b).ravel() for a, b in zip(after, before)]))
    for name, values in history.items():
        assert np.all(np.isfinite(values)), name
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert any(layer.compute_dtype == "float16" for layer in model.classifier.layers)
    reference, mixed = deltas
    assert np.all(np.isfinite(mixed)) and np.abs(mixed).max() > 0
    ratio = np.linalg.norm(mixed) / np.linalg.norm(reference)
    cosine = mixed @ reference / (np.linalg.norm(mixed) * np.linalg.norm(reference))
    assert 0.8 < ratio < 1.25 and cosine > 0.9, (ratio, cosine)
    logits = model(images, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) in ("float32", "float16")
    logits = keras.ops.convert_to_numpy(keras.ops.cast(logits, "float32"))
    assert logits.shape == (BATCH, NUM_CLASSES) and np.all(np.isfinite(logits))


# ---------------------------------------------------------------------------------
# 3. Config and .keras round trips.

def constructor_arguments(cls):
    """Named arguments of a scheme class's constructor and of those of its bases up to
    ``TrainingScheme`` (reached through ``**kwargs``), but ``taps``: a subclass's own
    wiring, not a setting."""
    names = set()
    for klass in cls.__mro__[:cls.__mro__.index(TrainingScheme) + 1]:
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names - {"self", "taps"}


@pytest.mark.parametrize(("method", "hnc"), CASES)
def test_config_and_keras_round_trips(method, hnc, tmp_path):
    _, model = build(method, hnc)
    images, _ = data()
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    config = model.get_config()
    # One config key per constructor argument (a key left out would come back as its
    # default, which the registered defaults may hide).
    assert constructor_arguments(type(model)) <= set(config)
    clone = type(model).from_config(json_form(config))
    assert type(clone) is type(model)
    assert json_form(clone.get_config()) == json_form(config)

    path = tmp_path / "scheme.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert json_form(loaded.get_config()) == json_form(config)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for ours, saved in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, saved)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)),
                               expected, atol=1e-6)


# ---------------------------------------------------------------------------------
# 4. The saved classifier.

# Run in a fresh Python: the classifiers of methods that need no package layers load
# while any import of playing_distraction fails; those that need them must fail to
# load so, and load after ``import playing_distraction.layers`` (which registers every
# layer of the package) with safe_mode=True.
LOAD_SAVED = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "playing_distraction":
            raise ImportError("playing_distraction must not be needed to load a saved model")

blocker = Block()
sys.meta_path.insert(0, blocker)
import keras, numpy as np

images = np.load(sys.argv[1])
files = json.loads(sys.argv[2])
results = {}
for key, (path, needs_package) in files.items():
    try:
        model = keras.models.load_model(path)
    except Exception as error:
        results[key] = {"without_package": repr(error)[:500]}
    else:
        results[key] = {"without_package": model.predict(images, verbose=0).tolist()}
sys.meta_path.remove(blocker)
import playing_distraction.layers

for key, (path, needs_package) in files.items():
    if needs_package:
        try:
            model = keras.models.load_model(path, safe_mode=True)
        except Exception as error:
            results[key]["with_package"] = repr(error)[:500]
        else:
            results[key]["with_package"] = model.predict(images, verbose=0).tolist()
print(json.dumps(results))
"""

# Stands in for a method whose saved classifier holds layers of this package
# (no registered method has one yet), so that branch of the check runs too.
NEEDS_PACKAGE = "needs_package_stand_in"


def package_modules(path):
    """Modules of this package that the .keras file's config names (layers,
    initializers, anything serialised with a module)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    found = set()

    def walk(node):
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] == "playing_distraction":
                found.add(module)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


@pytest.fixture(scope="module")
def saved_classifiers(tmp_path_factory):
    """Every case's saved classifier, and the stand-in, loaded in one fresh Python:
    {case id: (needs_package, path, predictions here, results there)}."""
    folder = tmp_path_factory.mktemp("saved")
    images = structured_images(5, SIZE, seed=3)
    np.save(folder / "images.npy", images)
    classifiers = {}
    for method in sorted(METHODS):
        for hnc in HNC_SETTINGS:
            config, model = build(method, hnc)
            classifiers[case_id(method, hnc)] = (
                config.method_options().saved_model_needs_package,
                saved_classifier(model.classifier))
    classifiers[NEEDS_PACKAGE] = (
        True, with_batchnorm(make_classifier(NUM_CLASSES, SIZE), SyncBatchNormalization))
    files, saved = {}, {}
    for key, (needs_package, classifier) in classifiers.items():
        path = folder / f"{key}.keras"
        classifier.save(path)
        files[key] = (str(path), needs_package)
        saved[key] = (needs_package, path, classifier.predict(images, verbose=0))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SAVED, str(folder / "images.npy"), json.dumps(files)],
        capture_output=True, text=True, timeout=300, cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: (*saved[key], results[key]) for key in saved}


@pytest.mark.parametrize("key", [case_id(*case.values) for case in CASES] + [NEEDS_PACKAGE])
def test_saved_classifier_loads_as_its_method_says(key, saved_classifiers):
    needs_package, path, expected, loaded = saved_classifiers[key]
    modules = package_modules(path)
    if not needs_package:
        assert not modules, f"the saved classifier holds layers of {sorted(modules)}"
        assert not isinstance(loaded["without_package"], str), loaded["without_package"]
        np.testing.assert_allclose(loaded["without_package"], expected, rtol=1e-5, atol=1e-5)
    else:
        assert modules, "saved_model_needs_package, yet the classifier holds no package layer"
        assert isinstance(loaded["without_package"], str), "loaded without the package"
        assert not isinstance(loaded["with_package"], str), loaded["with_package"]
        np.testing.assert_allclose(loaded["with_package"], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------
# 5. Training-only metrics.

@pytest.mark.parametrize(("method", "hnc"), CASES)
def test_training_metrics_are_hidden_at_evaluation(method, hnc):
    model = compiled(method, hnc)
    images, labels = data(2 * BATCH)
    history = model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                        validation_data=(images, labels)).history
    hidden = model.training_metric_names()
    assert hidden or not hnc
    assert not hidden & {"loss", "accuracy"}
    # Fit reports every training metric; validation and evaluation the compiled ones
    # only (so a metric missing from training_metric_names() shows up here too).
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"} | hidden
    evaluated = model.evaluate(images, labels, batch_size=BATCH, verbose=0, return_dict=True)
    assert set(evaluated) == {"loss", "accuracy"}


# ---------------------------------------------------------------------------------
# 6. Sample weights.

@pytest.mark.parametrize(("method", "hnc"), CASES)
def test_sample_weights_weight_the_step(method, hnc):
    images, labels = data()
    logs, initial = {}, None
    for weight in (0.0, 1.0, 2.0):
        model = compiled(method, hnc)  # the same seeds every time
        if initial is None:
            initial = model.get_weights()
        else:
            model.set_weights(initial)
        before = trainable(model)
        logs[weight] = model.train_on_batch(
            images, labels, sample_weight=np.full(BATCH, weight, "float32"), return_dict=True)
        if weight == 0.0:
            for index, (after, start) in enumerate(zip(trainable(model), before)):
                np.testing.assert_array_equal(
                    after, start, err_msg=f"weight {model.trainable_weights[index].path}")
    assert logs[1.0]["loss"] > 0
    assert logs[2.0]["loss"] == pytest.approx(2 * logs[1.0]["loss"], rel=1e-5)
    for name in model.training_metric_names():  # weighted means: the scale drops out
        assert logs[2.0][name] == pytest.approx(logs[1.0][name], rel=1e-5, abs=1e-7), name
