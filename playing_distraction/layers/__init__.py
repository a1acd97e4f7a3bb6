"""Layers of the training schemes, one public class per module.

The pairwise-consistency scheme's (PAPERS.md §3; Wang et al., Sec. 4):

``CAMModule`` is the side branch whose class activation maps choose what to erase;
``CAMErasing`` erases, in the input images, the regions where the CAM of the
predicted class is above gamma. Both are registered, so a model holding them
saves and loads with ``keras.saving``; the classifier users get holds neither.

``SyncBatchNormalization``: BatchNormalization over the global batch under several
replicas (``distribute.py``); the saved classifier has plain BatchNormalization again.

Every layer of the package is registered here: a saved model that holds one loads
after ``import playing_distraction.layers`` (with ``safe_mode=True``).
"""

from .cam_erasing import CAMErasing
from .cam_module import CAMModule
from .sync_batch_normalization import SyncBatchNormalization

__all__ = ["CAMErasing", "CAMModule", "SyncBatchNormalization"]
