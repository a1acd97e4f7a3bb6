"""Synthetic occluders pasted onto test images (Cen et al., 2021, Sec. 4.1; PAPERS.md §5).

An occluder is an RGB picture and its mask (the alpha channel of an RGBA image;
alpha >= 0.5 is opaque). A *pattern* is one occluder at one ratio r and one position:
the occluder is scaled, keeping its aspect ratio, so that its opaque pixels cover
r of the image area (the paper's 10 % and 20 %; decision of PAPERS.md §5: the
area of the mask, not of the bounding box), and pasted with its centre at the
image centre or at one of ``RANDOM_POSITIONS`` positions drawn once per occluder and
ratio; whatever crosses the border is clipped. 3 occluders × 2 ratios × (centre +
3 random) = the paper's 24 patterns. Subsets ``10c`` / ``20c`` are the paper's I_op
variants with the centre patterns of one ratio only.

``render`` gives a pattern's (rgb, mask) at any image size; ``occlude_numpy`` and
``occlude`` (TensorFlow, for ``tf.data`` and compiled steps) paste it onto images.
The shipped occluders in ``assets/occluders`` are drawn by ``data/make_occluders.py``.

This module does not import TensorFlow (``occlude`` imports it when called).
"""

import dataclasses
import functools
import hashlib
import math
import numbers
import re
from pathlib import Path

import numpy as np

from .errors import UserError

OCCLUDER_DIR = Path(__file__).resolve().parent / "assets" / "occluders"
RATIOS = (0.2, 0.1)
RANDOM_POSITIONS = 3
PATTERN_SUBSETS = ("full", "10c", "20c")
# Suffixes of image formats OpenCV decodes with an alpha channel.
SUFFIXES = (".png", ".webp", ".tif", ".tiff")
OPAQUE = 0.5


@dataclasses.dataclass(frozen=True)
class Occluder:
    """One occluder: ``rgb`` (h, w, 3) and ``alpha`` (h, w), float32 in [0, 1], cropped
    to the box of its visible pixels. Equality and hashing go by ``name`` and
    ``sha256`` (the digest of the file identifies the pixels), which lets ``render``
    cache its work."""

    name: str
    rgb: np.ndarray = dataclasses.field(compare=False, repr=False)
    alpha: np.ndarray = dataclasses.field(compare=False, repr=False)
    sha256: str


def _safe_name(stem):
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def _decode(path):
    """The occluder in the image file ``path``; a one-line UserError if it is not one."""
    import cv2

    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read the occluder {path}: {error.strerror}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise UserError(f"cannot decode the occluder {path}: not an image OpenCV reads")
    if image.ndim != 3 or image.shape[2] != 4:
        raise UserError(f"the occluder {path} has no alpha channel: save it as an RGBA image "
                        "whose alpha is the occluder's mask")
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    pixels = np.clip(image.astype(np.float32) / scale, 0.0, 1.0)
    alpha = pixels[..., 3]
    if not np.any(alpha >= OPAQUE):
        raise UserError(f"the occluder {path} is fully transparent: no pixel has alpha "
                        f">= {OPAQUE}")
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    rgb = np.ascontiguousarray(pixels[box][..., 2::-1])  # OpenCV's BGR to RGB
    return Occluder(_safe_name(path.stem), rgb, np.ascontiguousarray(alpha[box]),
                    hashlib.sha256(data).hexdigest())


def load_occluders(folder=None):
    """The occluders of the image files in ``folder`` (default ``OCCLUDER_DIR``), sorted
    by file name. Every problem is a one-line ``UserError`` naming the path."""
    folder = Path(OCCLUDER_DIR if folder is None else folder)
    if not folder.is_dir():
        raise UserError(f"occluder folder {folder} does not exist")
    files = sorted(path for path in folder.iterdir()
                   if path.suffix.lower() in SUFFIXES and path.is_file())
    if not files:
        raise UserError(f"occluder folder {folder} holds no image file "
                        f"({', '.join(SUFFIXES)})")
    occluders = [_decode(path) for path in files]
    names = [occluder.name for occluder in occluders]
    clashes = sorted({str(path.name) for path, name in zip(files, names) if names.count(name) > 1})
    if clashes:
        raise UserError(f"occluders in {folder} share a name once made file-name safe: "
                        f"{', '.join(clashes)}; rename them")
    return occluders


# ------------------------------------------------------------------ patterns


def _percent(ratio):
    """"20" for 0.2, "12p5" for 0.125: a ratio in pattern names."""
    return f"{round(ratio * 100, 6):g}".replace(".", "p")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """One occluder at one ratio and one position (see the module).

    occluder: index into the occluder list; ratio: share of the image area its opaque
    pixels cover before clipping; position: "centre" or "random<k>"; centre: (y, x)
    of the occluder's centre as fractions of the image height and width."""

    occluder: int
    occluder_name: str
    ratio: float
    position: str
    centre: tuple

    @property
    def name(self):
        return f"r{_percent(self.ratio)}-{self.position}-{self.occluder_name}"

    @property
    def group(self):
        """The column of the paper's Table 2 the pattern belongs to."""
        kind = "centre" if self.position == "centre" else "random"
        return f"r{_percent(self.ratio)}-{kind}"

    def to_dict(self):
        return {"name": self.name, "group": self.group, "occluder": self.occluder,
                "occluder_name": self.occluder_name, "ratio": self.ratio,
                "position": self.position, "centre": list(self.centre)}


def check_pattern_settings(ratios, random_positions, seed):
    """ValueError naming the flag (train.py's and evaluate.py's alike) unless the
    ratios are distinct numbers in (0, 1) and the position count and seed are whole
    numbers, 0 or more."""
    ratios = tuple(ratios)
    if not ratios:
        raise ValueError("--occlusion-ratios needs at least one ratio")
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
                or not math.isfinite(ratio) or not 0 < ratio < 1:
            raise ValueError(f"--occlusion-ratios must be in (0, 1), got {ratio}")
    labels = [_percent(ratio) for ratio in ratios]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--occlusion-ratios must be distinct, got {' '.join(map(str, ratios))}")
    if isinstance(random_positions, bool) \
            or not isinstance(random_positions, numbers.Integral) or random_positions < 0:
        raise ValueError(f"--random-positions must be 0 or more, got {random_positions}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"--pattern-seed must be 0 or more, got {seed}")


def make_patterns(occluders, ratios=RATIOS, random_positions=RANDOM_POSITIONS, seed=0):
    """Every pattern: for each ratio (in the order given), each occluder, the centre and
    then ``random_positions`` positions. Random centres are uniform over the image,
    drawn from ``numpy.random.default_rng([seed, occluder index, ratio index])``, so
    a pattern set is fixed by its arguments (the paper fixes its random positions
    once). ValueError on bad settings (``check_pattern_settings``)."""
    ratios = tuple(ratios)
    check_pattern_settings(ratios, random_positions, seed)
    if not occluders:
        raise ValueError("no occluder to make patterns from")
    patterns = []
    for ratio_index, ratio in enumerate(ratios):
        for index, occluder in enumerate(occluders):
            patterns.append(Pattern(index, occluder.name, float(ratio), "centre", (0.5, 0.5)))
            rng = np.random.default_rng([int(seed), index, ratio_index])
            for k, (y, x) in enumerate(rng.random((int(random_positions), 2)), start=1):
                patterns.append(Pattern(index, occluder.name, float(ratio), f"random{k}",
                                        (float(y), float(x))))
    return patterns


def subset_ratio(subset):
    """The ratio whose centre patterns a subset keeps: 0.1 for ``10c``, 0.2 for
    ``20c``; None for ``full`` (every pattern)."""
    if subset not in PATTERN_SUBSETS:
        raise ValueError(f"unknown pattern subset {subset!r}; choose from "
                         f"{', '.join(PATTERN_SUBSETS)}")
    return None if subset == "full" else int(subset[:-1]) / 100


def pattern_subset(patterns, subset):
    """The patterns of an I_op variant: ``full`` all, ``10c`` / ``20c`` the centre
    patterns of ratio 0.1 / 0.2."""
    ratio = subset_ratio(subset)
    if ratio is None:
        return list(patterns)
    chosen = [pattern for pattern in patterns
              if pattern.position == "centre" and math.isclose(pattern.ratio, ratio)]
    if not chosen:
        raise ValueError(f"pattern subset {subset} is empty: no centre pattern of ratio {ratio}")
    return chosen


# ------------------------------------------------------------------ rendering


def _resized(occluder, long_side):
    """The occluder's rgb and alpha with its longer side ``long_side`` pixels."""
    import cv2

    height, width = occluder.alpha.shape
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2: (w, h)
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return (cv2.resize(occluder.rgb, size, interpolation=method),
            cv2.resize(occluder.alpha, size, interpolation=method))


@functools.lru_cache(maxsize=256)
def _scaled(occluder, ratio, height, width):
    """(rgb, mask) of the occluder scaled for an image of height × width: the mask has
    exactly round(ratio · height · width) pixels.

    The smallest size (longer side, aspect ratio kept) whose resized alpha has at
    least that many opaque pixels is found by stepping from the size the original's
    opaque share predicts; of its opaque pixels the target number with the highest
    alpha is kept, ties going to pixels deeper inside the shape (distance transform),
    then nearer its centre, then first in raster order, so the few dropped pixels come
    off the edge."""
    import cv2

    target = round(ratio * height * width)
    if target == 0:
        return np.zeros((1, 1, 3), np.float32), np.zeros((1, 1), bool)
    longest = max(occluder.alpha.shape)
    share = np.count_nonzero(occluder.alpha >= OPAQUE) / occluder.alpha.size
    if share == 0:  # load_occluders refuses such a file; an Occluder made in code may not
        raise ValueError(f"occluder {occluder.name} has no pixel with alpha >= {OPAQUE}")
    long_side = max(1, round(longest * math.sqrt(target / (share * occluder.alpha.size))))

    def opaque(side):
        return np.count_nonzero(_resized(occluder, side)[1] >= OPAQUE)

    if opaque(long_side) >= target:
        while long_side > 1 and opaque(long_side - 1) >= target:
            long_side -= 1
    else:
        while opaque(long_side) < target:
            long_side += 1
    rgb, alpha = _resized(occluder, long_side)
    inside = (alpha >= OPAQUE).astype(np.uint8)
    depth = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    yy, xx = np.mgrid[0:alpha.shape[0], 0:alpha.shape[1]]
    off_centre = (yy - (alpha.shape[0] - 1) / 2) ** 2 + (xx - (alpha.shape[1] - 1) / 2) ** 2
    # Alpha rounded: resampling noise (0.99999994 for 1) must not outrank the depth.
    order = np.lexsort((np.arange(alpha.size), off_centre.ravel(), -depth.ravel(),
                        -np.round(alpha, 4).ravel()))
    mask = np.zeros(alpha.size, bool)
    mask[order[:target]] = True
    return rgb.astype(np.float32), mask.reshape(alpha.shape)


@functools.lru_cache(maxsize=256)
def _placed(occluder, ratio, centre, height, width):
    rgb, mask = _scaled(occluder, ratio, height, width)
    size_y, size_x = mask.shape
    # The occluder's centre pixel on the image's pixel of the pattern's centre.
    top = math.floor(centre[0] * height - size_y / 2 + 0.5)
    left = math.floor(centre[1] * width - size_x / 2 + 0.5)
    image_rgb = np.zeros((height, width, 3), np.float32)
    image_mask = np.zeros((height, width), bool)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size_y, height), min(left + size_x, width)
    if y0 < y1 and x0 < x1:
        part = np.s_[y0 - top:y1 - top, x0 - left:x1 - left]
        image_mask[y0:y1, x0:x1] = mask[part]
        image_rgb[y0:y1, x0:x1] = np.where(mask[part][..., None], rgb[part], 0.0)
    image_rgb.flags.writeable = False  # cached: shared by every caller
    image_mask.flags.writeable = False
    return image_rgb, image_mask


def render(pattern, occluders, height, width):
    """(rgb (H, W, 3) float32, zero off the mask; mask (H, W) bool) of ``pattern`` on a
    height × width image.

    Before clipping the mask has exactly round(ratio · H · W) pixels (``_scaled``);
    the occluder's centre lands on (centre_y · H, centre_x · W) and what falls outside
    the image is cut off, also when the occluder is larger than the image (a thin
    occluder at a high ratio). Results are cached and read-only."""
    occluder = occluders[pattern.occluder]
    if occluder.name != pattern.occluder_name:
        raise ValueError(f"pattern {pattern.name} is of occluder {pattern.occluder_name}, "
                         f"not {occluder.name}")
    return _placed(occluder, float(pattern.ratio), tuple(map(float, pattern.centre)),
                   int(height), int(width))


# ------------------------------------------------------------------ pasting


def occlude_numpy(images, rgb, mask):
    """Float ``images`` (B, H, W, C) or (H, W, C) in [0, 1] with ``rgb`` pasted on the
    ``mask`` pixels; a new array of the images' dtype."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"occlude_numpy takes float images in [0, 1], got {images.dtype}")
    return np.where(np.asarray(mask, bool)[..., None], np.asarray(rgb, images.dtype), images)


def occlude(images, rgb, mask):
    """``occlude_numpy`` in TensorFlow ops: eager, in ``tf.function`` and in
    ``tf.data.Dataset.map``; the result has the images' float dtype."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(f"occlude takes float images in [0, 1], got {images.dtype.name}")
    mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)[..., None]
    return tf.where(mask, tf.cast(rgb, images.dtype), images)
