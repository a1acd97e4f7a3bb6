"""Explanation-guided training of CNN image classifiers for Keras 3 / TensorFlow.

The flagship method is "Playing to distraction" (Morales et al., 2021): during
fine-tuning, with probability p per mini-batch, the hottest Grad-CAM pixels of each
image for its true class are occluded and the network trains on the occluded batch.
CAM erasing with pairwise consistency (``PairwiseModel``) and the homogeneous
negative-CAM loss (``TrainingScheme(hnc=...)``, or with any scheme) share its machinery.

The TensorFlow-backed names are imported on first use, so that the command-line
tools can reject a bad flag at once, before TensorFlow is loaded.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "grad_cam": "heatmaps",
    "GradCAM": "heatmaps",
    "occlusion_mask": "occlusion",
    "occlude": "occlusion",
    "FILLS": "occlusion",
    "DistractionModel": "schemes",
    "PairwiseModel": "schemes",
    "TrainingScheme": "schemes",
    "CAMModule": "layers",
    "CAMErasing": "layers",
    "SaliencyBranch": "layers",
    "SaliencyModulation": "layers",
    "SyncBatchNormalization": "layers",
    "with_batchnorm": "distribute",
    "build_classifier": "backbones",
    "BACKBONES": "backbones",
    "TrainConfig": "config",
    "UserError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
