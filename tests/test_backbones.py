"""Backbones: preprocessing equals keras.applications', flat graphs, weights files, errors."""

import keras
import numpy as np
import pytest

from playing_distraction import backbones
from playing_distraction.backbones import (
    BACKBONES,
    build_classifier,
    get_backbone,
    preprocessing_affine,
    preprocessing_layer,
)
from playing_distraction.errors import UserError

PREPROCESS_INPUT = {
    "caffe": keras.applications.resnet50.preprocess_input,
    "tf": keras.applications.inception_v3.preprocess_input,
    "torch": keras.applications.densenet.preprocess_input,
}
# Sizes at which the big backbones build quickly (inception_v3's minimum is 75).
APPLICATION_SIZES = {"resnet50": 64, "inception_v3": 75, "densenet121": 64}


def random_unit_images(count=4, size=8, seed=0):
    return np.random.default_rng(seed).random((count, size, size, 3)).astype("float32")


def nested_models(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.Model)]


@pytest.fixture(scope="module")
def application_classifiers():
    """The three keras.applications classifiers with random weights, built once."""
    built = {}
    for name, size in APPLICATION_SIZES.items():
        keras.utils.set_random_seed(0)
        built[name] = build_classifier(name, 4, size, "none")
    return built


# --------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("mode", sorted(PREPROCESS_INPUT))
def test_preprocessing_affine_and_layer_equal_preprocess_input(mode):
    x = random_unit_images()
    expected = PREPROCESS_INPUT[mode](255.0 * x.astype("float64")).astype("float64")
    matrix, bias = preprocessing_affine(mode)
    np.testing.assert_allclose(x @ matrix + bias, expected, atol=1e-3)
    layer = preprocessing_layer(mode)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-3)
    assert not layer.trainable


@pytest.mark.parametrize("name", sorted(APPLICATION_SIZES))
def test_classifier_preprocess_layer_matches_its_application(name, application_classifiers):
    model = application_classifiers[name]
    application_module = {
        "resnet50": keras.applications.resnet50,
        "inception_v3": keras.applications.inception_v3,
        "densenet121": keras.applications.densenet,
    }[name]
    x = random_unit_images(size=APPLICATION_SIZES[name])
    got = keras.ops.convert_to_numpy(model.get_layer("preprocess")(x))
    np.testing.assert_allclose(got, application_module.preprocess_input(255.0 * x), atol=1e-3)


def test_preprocessing_affine_unknown_mode():
    with pytest.raises(ValueError, match="bogus"):
        preprocessing_affine("bogus")


# ------------------------------------------------------------------- small_cnn


def test_small_cnn_classifier_structure():
    model = build_classifier("small_cnn", 5, 32)
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert tuple(model.output.shape) == (None, 5)
    logits = model.get_layer("logits")
    assert model.layers[-1] is logits
    assert logits.activation is keras.activations.linear
    assert logits.dtype == "float32" and logits.compute_dtype == "float32"
    features = model.get_layer("features")
    assert len(features.output.shape) == 4
    assert model.get_layer("head_pool").input is features.output
    assert nested_models(model) == []
    preprocess = model.get_layer("preprocess")
    assert not preprocess.trainable
    trainable = {id(v) for v in model.trainable_weights}
    assert len(preprocess.weights) == 2
    assert not trainable & {id(v) for v in preprocess.weights}
    assert len(trainable) == 5 + 2 * 5 + 2  # convs, batch-norm gamma/beta, logits
    # Logits are linear: negative values occur for random inputs.
    out = keras.ops.convert_to_numpy(model(random_unit_images(size=32)))
    assert out.shape == (4, 5) and out.dtype == np.float32 and (out < 0).any()


# ------------------------------------------------------ keras.applications graphs


@pytest.mark.parametrize("name", sorted(APPLICATION_SIZES))
def test_application_last_conv_feeds_head_and_graph_is_flat(name, application_classifiers):
    model = application_classifiers[name]
    spec = BACKBONES[name]
    last_conv = model.get_layer(spec.last_conv)
    assert model.get_layer("head_pool").input is last_conv.output
    assert len(last_conv.output.shape) == 4
    assert nested_models(model) == []
    assert tuple(model.input.shape) == (None, APPLICATION_SIZES[name], APPLICATION_SIZES[name], 3)
    assert tuple(model.output.shape) == (None, 4)
    # The preprocessing layer is wired right after the input.
    assert model.layers[1].name == "preprocess"


# --------------------------------------------------------------- weights files


def features_model(name, size):
    """A features-only model as backbones._standalone_features builds it."""
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, backbones._features(get_backbone(name), inputs))


def randomize(model, seed):
    """Normal random values in every weight (positive ones in batch-norm variances)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            value = rng.normal(size=variable.shape).astype("float32")
            values.append(np.abs(value) + 0.5 if "variance" in variable.path else value)
        if values:
            layer.set_weights(values)


def test_local_weights_file_is_copied_into_classifier(tmp_path):
    keras.utils.set_random_seed(1)
    source = features_model("small_cnn", 32)
    randomize(source, seed=11)
    path = tmp_path / "w.weights.h5"
    source.save_weights(str(path))

    model = build_classifier("small_cnn", 3, 32, weights=str(path))
    keras.utils.set_random_seed(2)
    fresh = build_classifier("small_cnn", 3, 32, weights="none")
    weighted = [layer for layer in source.layers if layer.weights]
    assert len(weighted) == 10  # 5 conv + 5 batch norm
    for layer in weighted:
        loaded = model.get_layer(layer.name).get_weights()
        for ours, theirs, other in zip(layer.get_weights(), loaded,
                                       fresh.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(theirs, ours)
            assert not np.array_equal(other, ours), layer.name
    # The preprocessing layer is untouched.
    matrix, bias = preprocessing_affine("tf")
    kernel, b = model.get_layer("preprocess").get_weights()
    np.testing.assert_array_equal(kernel.reshape(3, 3), matrix)
    np.testing.assert_array_equal(b, bias)


def test_local_weights_file_for_inception_v3(tmp_path):
    keras.utils.set_random_seed(3)
    source = features_model("inception_v3", 75)
    path = tmp_path / "inception.weights.h5"
    source.save_weights(str(path))
    model = build_classifier("inception_v3", 3, 75, weights=str(path))
    assert_backbone_weights_equal(source, model)


def assert_backbone_weights_equal(source, model):
    """Every weight of the features-only ``source`` is in ``model``, in order."""
    source_weights = [w for layer in source.layers for w in layer.get_weights()]
    model_weights = [w for layer in model.layers if layer.name not in ("preprocess", "logits")
                     for w in layer.get_weights()]
    assert len(source_weights) == len(model_weights)
    for ours, theirs in zip(source_weights, model_weights):
        np.testing.assert_array_equal(theirs, ours)


def fake_imagenet(monkeypatch, application, seed):
    """Replace keras.applications.<application> so that weights="imagenet" gives a
    randomised model instead of a download; returns the list of such models."""
    original = getattr(keras.applications, application)
    created = []

    def fake(*args, weights=None, **kwargs):
        model = original(*args, weights=None, **kwargs)
        if weights == "imagenet":
            assert kwargs.get("include_top") is False
            randomize(model, seed)
            created.append(model)
        return model

    monkeypatch.setattr(keras.applications, application, fake)
    return created


def test_imagenet_weights_are_copied_into_classifier_without_download(monkeypatch):
    created = fake_imagenet(monkeypatch, "ResNet50", seed=5)
    model = build_classifier("resnet50", 3, 32, weights="imagenet")
    (source,) = created
    assert tuple(source.input.shape) == (None, 32, 32, 3)
    weighted = [layer for layer in source.layers if layer.weights]
    assert len(weighted) > 100
    for layer in weighted:
        for ours, theirs in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(theirs, ours)


def test_imagenet_weights_for_inception_v3_without_download(monkeypatch):
    created = fake_imagenet(monkeypatch, "InceptionV3", seed=6)
    model = build_classifier("inception_v3", 3, 75, weights="imagenet")
    (source,) = created
    assert_backbone_weights_equal(source, model)


def test_image_size_zero_is_refused_not_defaulted():
    with pytest.raises(UserError, match="--image-size 0 is below the 16 pixels that small_cnn needs"):
        build_classifier("small_cnn", 3, 0)


def test_failed_imagenet_download_is_one_user_error(monkeypatch):
    original = keras.applications.ResNet50

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure on https://example.invalid: None -- no network")
        return original(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(UserError, match="cannot get the ImageNet weights of resnet50"):
        build_classifier("resnet50", 3, 32, weights="imagenet")


def test_garbage_weights_file(tmp_path):
    path = tmp_path / "garbage.weights.h5"
    path.write_bytes(b"not an hdf5 file" * 64)
    with pytest.raises(UserError) as info:
        build_classifier("small_cnn", 3, 32, weights=str(path))
    assert str(path) in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weights_file_of_another_architecture(tmp_path):
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(8, 3, name="c")(inputs))
    path = tmp_path / "other.weights.h5"
    other.save_weights(str(path))
    with pytest.raises(UserError) as info:
        build_classifier("small_cnn", 3, 32, weights=str(path))
    assert str(path) in str(info.value) and "small_cnn" in str(info.value)


def test_imagenet_weights_for_small_cnn():
    with pytest.raises(UserError, match="ImageNet"):
        build_classifier("small_cnn", 3, 32, weights="imagenet")


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.weights.h5"
    with pytest.raises(UserError, match="no such file") as info:
        build_classifier("small_cnn", 3, 32, weights=str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_image_size_below_minimum(name):
    spec = BACKBONES[name]
    with pytest.raises(UserError) as info:
        build_classifier(name, 3, spec.min_input_size - 1)
    assert str(spec.min_input_size) in str(info.value) and name in str(info.value)


def test_image_size_at_minimum_builds():
    model = build_classifier("small_cnn", 3, BACKBONES["small_cnn"].min_input_size)
    assert tuple(model.output.shape) == (None, 3)


def test_unknown_backbone_lists_names():
    with pytest.raises(UserError) as info:
        get_backbone("vgg")
    message = str(info.value)
    assert "vgg" in message
    for name in BACKBONES:
        assert name in message
    with pytest.raises(UserError):
        build_classifier("vgg", 3, 32)


# ------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("name, size", [("small_cnn", 32), ("resnet50", 32)])
def test_mixed_precision_keeps_logits_and_preprocessing_float32(name, size):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = build_classifier(name, 3, size)
    finally:
        keras.config.set_dtype_policy("float32")
    # The policy was in effect: the backbone computes in float16 ...
    assert model.get_layer("head_pool").compute_dtype == "float16"
    # ... but not the preprocessing and the logits.
    preprocess = model.get_layer("preprocess")
    assert preprocess.compute_dtype == "float32" and preprocess.output.dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    x = random_unit_images(size=size)
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32
    # float32 arithmetic: caffe values up to ~150 would be off by ~0.06 in float16.
    matrix, bias = preprocessing_affine(BACKBONES[name].preprocessing)
    got = keras.ops.convert_to_numpy(preprocess(x))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x @ matrix + bias, atol=1e-4)
