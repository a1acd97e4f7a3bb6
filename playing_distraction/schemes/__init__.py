"""Training schemes: ``keras.Model`` subclasses that change what one training step does,
one public class per module.

A scheme wraps a plain classifier (``build_classifier``) and knows nothing about files
or flags: compile and fit it on any ``tf.data.Dataset`` of (images in [0, 1], labels).
What is saved for users is ``scheme.classifier``.

- ``TrainingScheme``: plain training, optionally with the homogeneous negative-CAM
  loss (PAPERS.md §4); the base of the others.
- ``DistractionModel``: playing to distraction (PAPERS.md §1).
- ``PairwiseModel``: CAM erasing with pairwise consistency (PAPERS.md §3).
- ``FeatureAugmentationModel``: deep feature augmentation for occluded images
  (PAPERS.md §5), with its ``RefreshBank`` callback.

The schemes keep Keras' own ``train_step`` (gradient tape, loss scaling under mixed
precision, loss scaling across replicas, optimizer, metrics) and change what it
is fed or what it adds up: in training, ``call`` returns a dict of the outputs
the loss needs, ``compute_loss`` adds the scheme's terms to the compiled loss of
the classifier's logits, and ``compute_metrics`` sees the logits. Each term is
also reported as a metric of its own, in training only.
"""

from ..choices import PAIRWISE_LOSSES
from .base import TrainingScheme, batch_mean, true_classes
from .distraction import DistractionModel
from .feature_augmentation import FeatureAugmentationModel, RefreshBank
from .pairwise import PairwiseModel

__all__ = ["TrainingScheme", "DistractionModel", "PairwiseModel", "FeatureAugmentationModel",
           "RefreshBank", "batch_mean", "true_classes",
           "PAIRWISE_LOSSES"]
