"""Batched, graph-safe Grad-CAM (Selvaraju et al., 2017) for classifiers that emit logits.

Grad-CAM of image b for class k at feature map A (h x w x C):
    alpha_c = mean over positions of d logit_k / d A_c,
    cam     = ReLU(sum_c alpha_c A_c),
then a bilinear resize to the image size and a per-image min-max normalisation to
[0, 1]; a constant map becomes all zeros (PAPERS.md §1, steps 2-3).

The resize is corner-aligned, as ``scipy.ndimage.zoom(order=1)`` in tf-keras-vis, so
the maps agree with tf-keras-vis ``Gradcam`` to float precision.

Shortcut: for a head made of global average pooling and a linear layer (every
classifier ``build_classifier`` makes), d logit_k / d A_c(x, y) = w_{c,k} / (h w) at
every position, so alpha needs no backward pass; the map is then CAM (Zhou et al.)
up to the 1/(h w) factor, which is kept so both paths give the same numbers.
"""

import weakref

import keras
import tensorflow as tf


def last_spatial_layer(model):
    """Name of the last layer with a 4-D (batch, h, w, channels) output."""
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name} has no layer with a spatial (4-D) output")


def linear_head(model):
    """(Dense layer, its pooled input, the feature map pooled) when ``model``'s single
    output is a linear Dense over GlobalAveragePooling2D of a channels-last feature
    map (every classifier ``build_classifier`` makes); None for any other head."""
    if len(model.outputs) != 1:
        return None
    dense = model.outputs[0]._keras_history.operation
    if not isinstance(dense, keras.layers.Dense) or dense.activation is not keras.activations.linear:
        return None
    pool = dense.input._keras_history.operation
    if not isinstance(pool, keras.layers.GlobalAveragePooling2D) or pool.data_format != "channels_last":
        return None
    return dense, dense.input, pool.input


def _linear_gap_head(model, layer):
    """The Dense layer when ``model``'s output is Dense(GlobalAveragePooling2D(layer)).

    Returns None for any other head (then only the tape path is exact).
    """
    head = linear_head(model)
    return head[0] if head is not None and head[2] is layer.output else None


def class_activation_maps(features, kernel, bias=None):
    """CAM of every class (Zhou et al., 2016): the (B, h, w, C) feature map through a
    linear layer's (C, K) kernel and optional (K,) bias as a 1x1 convolution, giving
    (B, h, w, K) float32 maps, with no ReLU and no normalisation. Their spatial mean
    is the linear layer applied to the pooled features: the logits."""
    maps = tf.einsum("bhwc,ck->bhwk", tf.cast(features, tf.float32), tf.cast(kernel, tf.float32))
    return maps if bias is None else maps + tf.cast(bias, tf.float32)


class GradCAM:
    """Grad-CAM heat maps of a Keras classifier at one layer, for whole batches.

    model: a functional classifier whose single output is logits (never softmax:
        PAPERS.md §1 differentiates the logit).
    layer_name: the feature layer; default: the last layer with a 4-D output (the
        last convolutional block of every registry backbone).
    shortcut: None (default) uses the exact CAM shortcut when the head is global
        average pooling + linear, True requires it, False forces the tape path.

    The (features, logits) sub-model is built once here and shares the
    classifier's weights, so maps always reflect the current weights.
    """

    def __init__(self, model, layer_name=None, shortcut=None):
        self.layer_name = layer_name or last_spatial_layer(model)
        layer = model.get_layer(self.layer_name)
        if len(layer.output.shape) != 4:
            raise ValueError(
                f"layer {self.layer_name} has output shape {layer.output.shape}; "
                "Grad-CAM needs a (batch, h, w, channels) feature map"
            )
        self.head = _linear_gap_head(model, layer)
        if shortcut and self.head is None:
            raise ValueError(
                f"the CAM shortcut needs a GlobalAveragePooling2D + linear Dense head on "
                f"{self.layer_name}; {model.name} has another head"
            )
        self.shortcut = self.head is not None if shortcut is None else bool(shortcut)
        outputs = layer.output if self.shortcut else [layer.output, model.outputs[0]]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.feature_model = keras.Model(inputs, outputs, name=f"{model.name}_gradcam")

    def channel_weights(self, images, class_indices):
        """Feature maps A (float32, B x h x w x C) and Grad-CAM weights alpha (B x C)."""
        if self.shortcut:
            features = tf.cast(self.feature_model(images, training=False), tf.float32)
            kernel = tf.cast(tf.transpose(self.head.kernel), tf.float32)  # (K, C)
            positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
            return features, tf.gather(kernel, class_indices) / positions
        with tf.GradientTape() as tape:
            features, logits = self.feature_model(images, training=False)
            # Each image's logit depends on its own features only (inference mode),
            # so one gradient of the summed scores gives every image's gradient.
            scores = tf.gather(logits, class_indices[:, None], batch_dims=1)
        gradients = tape.gradient(scores, features)
        features = tf.cast(features, tf.float32)
        return features, tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2))

    def raw(self, images, class_indices):
        """Grad-CAM at the feature-map resolution, before resizing and normalising."""
        return _combine(*self.channel_weights(images, class_indices))

    def __call__(self, images, class_indices):
        return self.heat_and_features(images, class_indices)[0]

    def heat_and_features(self, images, class_indices):
        """(Grad-CAM as ``__call__`` gives it, the layer's float32 feature maps), from
        one forward pass: for measures that need both (evaluation's focus area)."""
        images = tf.convert_to_tensor(images, dtype=tf.float32)
        class_indices = tf.reshape(tf.cast(class_indices, tf.int32), [-1])
        features, alpha = self.channel_weights(images, class_indices)
        cam = _combine(features, alpha)
        return normalize_per_image(resize_bilinear(cam, tf.shape(images)[1:3])), features


def _combine(features, alpha):
    """ReLU(sum_c alpha_c A_c): the map at the feature-map resolution."""
    return tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, alpha))


def _interpolation_matrix(out_size, in_size):
    """(out, in) weights of 1-D linear interpolation with corners aligned."""
    scale = tf.cast(in_size - 1, tf.float32) / tf.cast(tf.maximum(out_size - 1, 1), tf.float32)
    position = tf.cast(tf.range(out_size), tf.float32) * scale
    low = tf.minimum(tf.cast(tf.floor(position), tf.int32), in_size - 1)
    high = tf.minimum(low + 1, in_size - 1)
    frac = position - tf.cast(low, tf.float32)
    return (tf.one_hot(low, in_size) * (1.0 - frac)[:, None]
            + tf.one_hot(high, in_size) * frac[:, None])


def resize_bilinear(maps, size):
    """Bilinear, corner-aligned resize of (B, h, w) maps to (B, H, W) = size.

    Written as two small matrix products instead of ``ResizeBilinear(align_corners=
    True)``: under XLA that op returned wrong values for some shapes (4x4 -> 16x16
    was off by up to 0.8 with TensorFlow 2.21 on a CPU), which would silently change
    which pixels are occluded in a compiled step.
    """
    maps = tf.convert_to_tensor(maps, tf.float32)
    rows = _interpolation_matrix(size[0], tf.shape(maps)[1])
    cols = _interpolation_matrix(size[1], tf.shape(maps)[2])
    return tf.einsum("Hh,bhw,Ww->bHW", rows, maps, cols)


def normalize_per_image(maps):
    """Min-max normalise each map of a (B, H, W) batch to [0, 1]; constant maps -> 0."""
    low = tf.reduce_min(maps, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps - low, high - low)


_CACHE = weakref.WeakKeyDictionary()


def grad_cam(model, images, class_indices, layer_name=None):
    """Grad-CAM of each image for its class: a (B, H, W) float32 tensor in [0, 1].

    images: (B, H, W, 3) raw inputs of ``model``; class_indices: (B,) integers.
    Graph-safe (usable inside ``tf.function`` and XLA); the sub-model is built on the
    first call for a (model, layer) pair and reused after. See ``GradCAM``.
    """
    per_model = _CACHE.setdefault(model, {})
    if layer_name not in per_model:
        per_model[layer_name] = GradCAM(model, layer_name)
    return per_model[layer_name](images, class_indices)
