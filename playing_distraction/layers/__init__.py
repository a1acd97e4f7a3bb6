"""Layers of the training schemes, one public class per module.

The pairwise-consistency scheme's (PAPERS.md §3; Wang et al., Sec. 4):

``CAMModule`` is the side branch whose class activation maps choose what to erase;
``CAMErasing`` erases, in the input images, the regions where the CAM of the
predicted class is above gamma. Both are registered, so a model holding them
saves and loads with ``keras.saving``; the classifier users get holds neither.

The hallucinated-saliency method's (PAPERS.md §2): ``SaliencyBranch`` hallucinates a
one-channel saliency map from the image; ``SaliencyModulation`` multiplies a feature
map by (map + 1).

``SyncBatchNormalization``: BatchNormalization over the global batch under several
replicas (``distribute.py``); the saved classifier has plain BatchNormalization again.

Every layer of the package is registered here: a saved model that holds one loads
after ``import playing_distraction.layers`` (with ``safe_mode=True``).
"""

from .cam_erasing import CAMErasing
from .cam_module import CAMModule
from .saliency_branch import SaliencyBranch
from .saliency_modulation import SaliencyModulation
from .sync_batch_normalization import SyncBatchNormalization

__all__ = ["CAMErasing", "CAMModule", "SaliencyBranch", "SaliencyModulation",
           "SyncBatchNormalization"]
