"""The registered layers of the pairwise scheme: CAMModule and CAMErasing, against
NumPy references; serialisation, saving, training and XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from playing_distraction.layers import CAMErasing, CAMModule

# CAMModule: a (B, h, w, C) feature map, K classes, F filters.
B, h, w, C, K, F = 3, 4, 5, 6, 3, 5
# CAMErasing: (B, H, W, 3) images; non-square, so a swapped height and width is caught.
IMAGE_SIZE = (16, 20)
# Predicted classes (arg max of LOGITS): never class 0 for the first two images.
LOGITS = np.array([[0.1, -1.0, 2.0], [0.3, 1.5, -0.2], [0.0, 0.5, 0.7]], np.float32)
PREDICTED = np.array([2, 1, 2])


def features(seed=0):
    return np.random.default_rng(seed).standard_normal((B, h, w, C)).astype("float32")


def cams(seed=1):
    return np.random.default_rng(seed).standard_normal((B, h, w, K)).astype("float32")


def images(seed=2):
    """No zero pixel, so the erased pixels (0 in every channel) can be told apart."""
    return np.random.default_rng(seed).uniform(0.1, 1.0, (B, *IMAGE_SIZE, 3)).astype("float32")


def built_cam_module(seed=3, **options):
    """A CAMModule with random non-zero biases (so a bias in the maps would show)."""
    keras.utils.set_random_seed(seed)
    layer = CAMModule(K, F, name="cam_module", **options)
    layer(features())
    rng = np.random.default_rng(seed)
    layer.conv.bias.assign(rng.uniform(-0.5, 0.5, F).astype("float32"))
    layer.classifier.bias.assign(rng.uniform(1.0, 2.0, K).astype("float32") * [1, -1, 1])
    return layer


def resize_ref(maps, size):
    """Bilinear resize of one 2-D map with corners aligned, written out by hand."""
    in_h, in_w = maps.shape
    out = np.zeros(size)
    for i in range(size[0]):
        y = i * (in_h - 1) / max(size[0] - 1, 1)
        y0 = min(int(np.floor(y)), in_h - 1)
        y1, fy = min(y0 + 1, in_h - 1), y - y0
        for j in range(size[1]):
            x = j * (in_w - 1) / max(size[1] - 1, 1)
            x0 = min(int(np.floor(x)), in_w - 1)
            x1, fx = min(x0 + 1, in_w - 1), x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * maps[y0, x0] + (1 - fy) * fx * maps[y0, x1]
                         + fy * (1 - fx) * maps[y1, x0] + fy * fx * maps[y1, x1])
    return out


def normalize_ref(cam):
    low, high = cam.min(), cam.max()
    return np.zeros_like(cam) if high == low else (cam - low) / (high - low)


def heat_ref(cams_, classes, size=IMAGE_SIZE):
    """(B, H, W) float64: the chosen class's CAM, normalised, then resized."""
    cams_ = np.asarray(cams_, np.float64)
    return np.stack([resize_ref(normalize_ref(cams_[b, :, :, k]), size)
                     for b, k in enumerate(classes)])


def mask_ref(cams_, logits, gamma, size=IMAGE_SIZE):
    heat = heat_ref(cams_, np.argmax(logits, axis=-1), size)
    # Keep clear of float32 round-off at the threshold.
    assert np.min(np.abs(heat - gamma)) > 1e-4, "a test heat value sits on gamma"
    return heat > gamma


# ----------------------------------------------------------------------------- CAMModule

def test_cam_module_shapes_and_mean_of_cams_is_logit_minus_bias():
    layer = built_cam_module()
    logits, maps = layer(features())
    assert logits.shape == (B, K) and maps.shape == (B, h, w, K)
    assert logits.dtype == maps.dtype == tf.float32
    bias = layer.classifier.bias.numpy()
    assert np.all(np.abs(bias) >= 1.0)
    np.testing.assert_allclose(np.mean(maps, axis=(1, 2)), logits.numpy() - bias,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_cam_module_matches_numpy_reference(activation):
    """cams = act(A W_conv + b_conv) W_dense (no dense bias); logits = mean + bias."""
    layer = built_cam_module(activation=activation)
    x = features().astype(np.float64)
    conv_kernel = layer.conv.kernel.numpy().astype(np.float64)
    assert conv_kernel.shape == (1, 1, C, F)
    activations = x @ conv_kernel[0, 0] + layer.conv.bias.numpy()
    if activation == "relu":
        activations = np.maximum(activations, 0.0)
        assert 0 < np.mean(activations == 0) < 1, "ReLU does nothing on the test features"
    expected_maps = activations @ layer.classifier.kernel.numpy().astype(np.float64)
    expected_logits = (activations.mean(axis=(1, 2)) @ layer.classifier.kernel.numpy()
                       + layer.classifier.bias.numpy())
    logits, maps = layer(features())
    np.testing.assert_allclose(maps, expected_maps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_cam_module_outputs_float32_under_mixed_precision():
    reference = built_cam_module()
    keras.config.set_dtype_policy("mixed_float16")
    layer = CAMModule(K, F)
    logits, maps = layer(features())
    assert logits.dtype == maps.dtype == tf.float32
    assert layer.conv.compute_dtype == "float16"
    layer.set_weights(reference.get_weights())
    logits, maps = layer(features())
    expected_logits, expected_maps = reference(features())
    np.testing.assert_allclose(logits, expected_logits, atol=0.02)
    np.testing.assert_allclose(maps, expected_maps, atol=0.02)
    symbolic_logits, symbolic_maps = CAMModule(K, F)(keras.Input((h, w, C)))
    assert symbolic_logits.dtype == symbolic_maps.dtype == "float32"


def test_cam_module_config_round_trip():
    layer = built_cam_module(activation="tanh")
    config = layer.get_config()
    assert (config["num_classes"], config["filters"], config["activation"]) == (K, F, "tanh")
    copy = CAMModule.from_config(config)
    assert copy.get_config() == config
    copy(features())
    copy.set_weights(layer.get_weights())
    for ours, theirs in zip(copy(features(5)), layer(features(5))):
        np.testing.assert_array_equal(ours, theirs)


def cam_model(size=16):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(C, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(4)(x)
    logits, maps = CAMModule(K, F, name="cam_module")(x)
    return keras.Model(inputs, [logits, maps])


def test_model_with_cam_module_saves_and_loads(tmp_path):
    model = cam_model()
    module = model.get_layer("cam_module")
    module.classifier.bias.assign([0.5, -1.0, 2.0])
    x = images()[:, :16, :16]
    expected = model(x)
    path = tmp_path / "cam_module.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("cam_module"), CAMModule)
    for ours, theirs in zip(loaded(x), expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_fit_step_through_cam_module_logits_changes_weights():
    model = cam_model()
    classifier = keras.Model(model.inputs[0], model.outputs[0])
    classifier.compile(keras.optimizers.SGD(0.5),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       jit_compile=False)
    module = classifier.get_layer("cam_module")
    before = [v.numpy().copy() for v in module.weights]
    history = classifier.fit(images()[:, :16, :16], np.array([0, 1, 2]), batch_size=3,
                             epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [v.numpy() for v in module.weights]
    assert len(before) == 4
    for old, new in zip(before, after):
        assert not np.array_equal(old, new)


def test_cam_module_compiles_with_xla():
    layer = built_cam_module()
    compiled = tf.function(lambda x: layer(x), jit_compile=True)
    for ours, eager in zip(compiled(features(6)), layer(features(6))):
        np.testing.assert_allclose(ours, eager, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- CAMErasing

def test_reference_resize_matches_scipy_zoom():
    """The hand-written reference is the corner-aligned resize of scipy zoom(order=1)."""
    from scipy.ndimage import zoom

    maps = cams()[0, :, :, 0].astype(np.float64)
    scale = (IMAGE_SIZE[0] / h, IMAGE_SIZE[1] / w)
    expected = zoom(maps, scale, order=1, grid_mode=False)
    assert expected.shape == IMAGE_SIZE
    np.testing.assert_allclose(resize_ref(maps, IMAGE_SIZE), expected, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.7])
def test_erasing_zeroes_exactly_the_reference_mask_of_the_predicted_class(gamma):
    maps, x = cams(), images()
    expected = mask_ref(maps, LOGITS, gamma)
    assert 0 < expected.mean() < 1
    # Class 0's mask differs: the test catches a layer using the wrong class.
    assert not np.array_equal(expected, heat_ref(maps, [0] * B) > gamma)
    out = CAMErasing(gamma)(x, maps, LOGITS, training=True).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    erased = np.all(out == 0.0, axis=-1)
    np.testing.assert_array_equal(erased, expected)
    np.testing.assert_array_equal(out[expected], 0.0)
    np.testing.assert_array_equal(out[~expected], x[~expected])


@pytest.mark.parametrize("gamma", [0.3, 0.7])
def test_mask_equals_reference(gamma):
    maps = cams(7)
    mask = CAMErasing(gamma).mask(maps, LOGITS, IMAGE_SIZE)
    assert mask.dtype == tf.bool and mask.shape == (B, *IMAGE_SIZE)
    np.testing.assert_array_equal(mask, mask_ref(maps, LOGITS, gamma))


def test_constant_cam_erases_nothing():
    """A constant CAM normalises to 0, which is never above gamma."""
    maps = cams()
    maps[0, :, :, PREDICTED[0]] = 3.0
    mask = CAMErasing(0.0).mask(maps, LOGITS, IMAGE_SIZE).numpy()
    assert not mask[0].any() and mask[1:].any()


def test_erasing_is_identity_at_inference():
    x, layer = images(), CAMErasing(0.5)
    np.testing.assert_array_equal(layer(x, cams(), LOGITS, training=False), x)
    np.testing.assert_array_equal(layer(x, cams(), LOGITS), x)


@pytest.mark.parametrize("gamma", [-0.1, 1.01, 2.0])
def test_gamma_outside_unit_interval_is_an_error(gamma):
    with pytest.raises(ValueError, match="gamma"):
        CAMErasing(gamma)


def test_gamma_one_erases_nothing():
    x = images()
    np.testing.assert_array_equal(CAMErasing(1.0)(x, cams(), LOGITS, training=True), x)


def test_gradient_passes_kept_pixels_only_and_never_reaches_cams_or_logits():
    x, maps, logits = tf.Variable(images()), tf.Variable(cams()), tf.Variable(LOGITS)
    layer = CAMErasing(0.5)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x, maps, logits, training=True))
    dx, dmaps, dlogits = tape.gradient(total, [x, maps, logits])
    expected = mask_ref(cams(), LOGITS, 0.5)
    np.testing.assert_array_equal(dx.numpy(), np.broadcast_to(
        np.where(expected, 0.0, 1.0)[..., None], x.shape))
    for gradient in (dmaps, dlogits):
        assert gradient is None or not np.any(tf.convert_to_tensor(gradient).numpy())


def test_erasing_config_round_trip():
    layer = CAMErasing(0.4, name="erase")
    config = layer.get_config()
    assert config["gamma"] == 0.4
    copy = CAMErasing.from_config(config)
    assert copy.get_config() == config
    x, maps = images(), cams()
    np.testing.assert_array_equal(copy(x, maps, LOGITS, training=True),
                                  layer(x, maps, LOGITS, training=True))


def test_model_with_erasing_saves_and_loads(tmp_path):
    image_in = keras.Input((*IMAGE_SIZE, 3), name="images")
    cams_in = keras.Input((h, w, K), name="cams")
    logits_in = keras.Input((K,), name="logits")
    erased = CAMErasing(0.6, name="erase")(image_in, cams_in, logits_in)
    model = keras.Model([image_in, cams_in, logits_in], erased)
    path = tmp_path / "erasing.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("erase")
    assert isinstance(layer, CAMErasing) and layer.gamma == 0.6
    x, maps = images(), cams(8)
    expected = np.where(mask_ref(maps, LOGITS, 0.6)[..., None], 0.0, x)
    for net in (model, loaded):
        np.testing.assert_array_equal(net([x, maps, LOGITS], training=True), expected)
        np.testing.assert_array_equal(net([x, maps, LOGITS], training=False), x)


def test_erasing_compiles_with_xla():
    layer = CAMErasing(0.5)
    x, maps = images(), cams(9)
    compiled = tf.function(lambda i, c, lg: layer(i, c, lg, training=True), jit_compile=True)
    expected = layer(x, maps, LOGITS, training=True).numpy()
    np.testing.assert_array_equal(expected, np.where(mask_ref(maps, LOGITS, 0.5)[..., None],
                                                     0.0, x))
    np.testing.assert_array_equal(compiled(x, maps, LOGITS), expected)
    compiled_mask = tf.function(lambda c, lg: layer.mask(c, lg, IMAGE_SIZE), jit_compile=True)
    np.testing.assert_array_equal(compiled_mask(maps, LOGITS), mask_ref(maps, LOGITS, 0.5))
