"""Full-size backbones at their default 224 px input (slow: run with ``-m slow``).

Random weights: nothing is downloaded. Checks that what the small tests show also
holds at the size the paper trains at.
"""

import keras
import numpy as np
import pytest
from conftest import make_classifier, structured_images
from test_heatmaps import reference_maps

from playing_distraction import BACKBONES, DistractionModel, GradCAM

pytestmark = pytest.mark.slow
FULL_SIZE = sorted(name for name, spec in BACKBONES.items() if spec.has_imagenet_weights)


@pytest.mark.parametrize("backbone", FULL_SIZE)
def test_grad_cam_agrees_with_tf_keras_vis_at_224(backbone):
    spec = BACKBONES[backbone]
    model = make_classifier(num_classes=6, size=spec.input_size, backbone=backbone)
    images = structured_images(2, spec.input_size)
    classes = np.array([1, 5])
    expected = reference_maps(model, images, classes, spec.last_conv)
    np.testing.assert_allclose(GradCAM(model, shortcut=False)(images, classes), expected, atol=1e-4)
    np.testing.assert_allclose(GradCAM(model)(images, classes), expected, atol=1e-4)


@pytest.mark.parametrize("backbone", FULL_SIZE)
def test_distraction_step_compiles_with_xla_at_224(backbone):
    spec = BACKBONES[backbone]
    scheme = DistractionModel(make_classifier(num_classes=6, size=spec.input_size,
                                              backbone=backbone),
                              probability=1.0, seed=0)
    scheme.compile(optimizer=keras.optimizers.Adam(5e-5, epsilon=7e-7),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=True)
    logs = scheme.train_on_batch(structured_images(2, spec.input_size), np.array([0, 3]),
                                 return_dict=True)
    assert logs["occluded_steps"] == 1.0 and 0.0 < logs["occluded_area"] < 1.0
    assert np.isfinite(logs["loss"])
