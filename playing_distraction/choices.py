"""Named choices and paper defaults shared by the flags and the TensorFlow code.

The command-line side (``config.py``, ``methods.py``) must not import TensorFlow, so
that a bad flag is reported at once; the schemes, losses and occlusion functions
must not import the command-line side (a scheme knows nothing of flags). What both
need lives here, once.

This module does not import TensorFlow.
"""

import math

# Fills of the occluded pixels (PAPERS.md §1, step 4); ``occlusion.FILLS`` maps each
# to its function.
FILLS = ("zero", "one", "random")

# The two forms of the homogeneous negative-CAM loss and the authors' weights
# (PAPERS.md §4).
HNC_FORMS = ("mse", "kd")
HNC_WEIGHTS = {"mse": 0.07, "kd": 0.005}

# The pairwise-consistency loss and its ablations (PAPERS.md §3; Wang et al., Table 6).
PAIRWISE_LOSSES = ("full", "category", "instance", "attention_mining")

# Shapes of the hallucinated-saliency branch (``layers.saliency_branch.SHAPES``;
# PAPERS.md §2) and the two approaches of its step 2.
SALIENCY_SHAPES = ("alexnet", "narrow")
APPROACHES = ("A", "B")
# The file of a saliency run's branch weights, in its run folder.
BRANCH_FILE = "saliency_branch.weights.h5"

# Deep feature augmentation (PAPERS.md §5): where the clean/occluded pairs come from,
# and the subsets of the occlusion patterns they use (``occluders.PATTERN_SUBSETS``).
PAIR_SETTINGS = ("exclusive", "inclusive")
PAIR_PATTERNS = ("full", "10c", "20c")

# Distribution strategies (``distribute.make_strategy``).
STRATEGIES = ("none", "mirrored")


def default_top_k(num_classes):
    """HNC: ⌈0.1 K⌉ negative classes (100 of ImageNet's 1,000), at most the K - 1 there are."""
    return max(1, min(num_classes - 1, math.ceil(0.1 * num_classes)))
