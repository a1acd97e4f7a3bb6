"""Draw the three occluders shipped in playing_distraction/assets/occluders.

    python data/make_occluders.py [TARGET_FOLDER]

The synthetic-occlusion test of Cen et al. (2021, Sec. 4.1; PAPERS.md §5) pastes
occluders - an RGB picture and its mask - onto the test images. The paper's own
occluder pictures are not public, so three are drawn here with NumPy and OpenCV,
each a different shape and texture so that a model cannot learn one look:

- ``leaf``: a leaf with a pointed tip, a wavy edge, green with veins and mottling;
- ``hand``: a palm with four fingers and a thumb, red and white diagonal stripes;
- ``tile``: an irregular nine-sided polygon, black and yellow checkerboard.

Every random draw is seeded, and the masks are drawn without anti-aliasing (alpha
is 0 or 255), so the same pixels come out on every run. The files carry the
repository's MIT licence (README.txt beside them says so).
"""

import sys
from pathlib import Path

import cv2
import numpy as np

TARGET = Path(__file__).resolve().parent.parent / "playing_distraction" / "assets" / "occluders"
SEED = 5  # PAPERS.md §5; any fixed value would do

README = """\
Occluders of the synthetic-occlusion test (Cen et al., 2021, Sec. 4.1; PAPERS.md §5).

leaf.png, hand.png and tile.png are RGBA PNGs drawn procedurally, without any
source picture, by data/make_occluders.py in this repository (run it to draw them
again; the pixels come out the same). They are distributed under the repository's
MIT licence (see LICENSE at the repository root).

The alpha channel is the occluder's mask: pixels with alpha >= 0.5 are opaque and
count towards the occluded area; the rest is transparent.
"""


def _grid(height, width):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return yy, xx


def _rgba(rgb, mask):
    """(H, W, 4) uint8 in OpenCV's BGRA order, alpha 255 on the mask, 0 elsewhere."""
    bgr = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    bgr[~mask] = 0
    return np.dstack([bgr, alpha])


def leaf(rng):
    """A leaf: an outline pointed at both ends with a wavy edge; green with a midrib,
    side veins and random mottling."""
    height, width = 176, 128
    # From the top tip (s = 0) to the bottom tip (s = pi): a lens made wavy by two
    # harmonics, a little narrower towards the stalk.
    s = np.linspace(0, np.pi, 181)
    half_width = (58 * np.sin(s) ** 1.3 * (1 + 0.08 * np.sin(9 * s) + 0.05 * np.sin(4 * s))
                  * (1 - 0.12 * s / np.pi))
    ys = height / 2 - 84 * np.cos(s)
    right = np.stack([width / 2 + half_width, ys], 1)
    left = np.stack([width / 2 - half_width, ys], 1)[::-1]
    outline = np.round(np.concatenate([right, left])).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [outline], 1, lineType=cv2.LINE_8)
    yy, _ = _grid(height, width)
    noise = cv2.resize(rng.random((11, 8)), (width, height), interpolation=cv2.INTER_CUBIC)
    rgb = np.stack([40 + 50 * noise, 110 + 80 * noise + 30 * (yy / height), 30 + 20 * noise], -1)
    veins = np.zeros((height, width), np.uint8)
    cv2.line(veins, (width // 2, 4), (width // 2, height - 4), 1, 3)
    for y in range(30, height - 20, 18):
        for side in (-1, 1):
            cv2.line(veins, (width // 2, y), (width // 2 + side * 50, y - 26), 1, 2)
    rgb[veins.astype(bool)] = (190, 220, 120)
    return _rgba(rgb, mask.astype(bool))


def hand(rng):
    """An open hand: an elliptic palm, four fingers and a thumb as rotated rounded
    bars; red and white diagonal stripes with a little noise."""
    height, width = 184, 150
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (78, 128), (46, 50), 0, 0, 360, 1, -1, lineType=cv2.LINE_8)
    fingers = [((44, 40), 70, 11, -12), ((68, 26), 82, 11, -4), ((92, 28), 80, 11, 4),
               ((114, 46), 64, 10, 12), ((20, 110), 58, 12, -58)]
    for (x, y), length, radius, angle in fingers:
        direction = np.array([np.sin(np.radians(angle)), -np.cos(np.radians(angle))])
        tip = np.array([x, y], np.float64)  # the bar runs from the tip back to the palm
        end = tip - direction * length
        start = (int(round(tip[0])), int(round(tip[1])))
        stop = (int(round(end[0])), int(round(end[1])))
        cv2.line(mask, start, stop, 1, 2 * radius, lineType=cv2.LINE_8)
        cv2.circle(mask, start, radius, 1, -1, lineType=cv2.LINE_8)
    yy, xx = _grid(height, width)
    stripes = (((xx + yy) // 12) % 2).astype(bool)
    rgb = np.where(stripes[..., None], (205, 30, 35), (245, 240, 230)).astype(np.float64)
    rgb += rng.normal(0, 8, rgb.shape)
    return _rgba(rgb, mask.astype(bool))


def tile(rng):
    """An irregular nine-sided polygon with a black and yellow checkerboard and a
    darker rim."""
    height, width = 150, 168
    # Nine corners, evenly spread around the centre but for a random jitter.
    angles = (np.arange(9) + rng.uniform(-0.35, 0.35, 9)) * 2 * np.pi / 9
    radii = rng.uniform(0.72, 1.0, 9)
    points = np.stack([width / 2 + radii * (width / 2 - 2) * np.cos(angles),
                       height / 2 + radii * (height / 2 - 2) * np.sin(angles)], 1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    yy, xx = _grid(height, width)
    checks = ((yy // 15 + xx // 15) % 2).astype(bool)
    rgb = np.where(checks[..., None], (20, 20, 25), (250, 205, 20)).astype(np.float64)
    rim = mask.astype(bool) & ~cv2.erode(mask, np.ones((7, 7), np.uint8)).astype(bool)
    rgb[rim] = (90, 60, 30)
    return _rgba(rgb, mask.astype(bool))


def main(target=TARGET):
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for index, draw in enumerate((leaf, hand, tile)):
        rng = np.random.default_rng([SEED, index])
        path = target / f"{draw.__name__}.png"
        if not cv2.imwrite(str(path), draw(rng)):
            raise SystemExit(f"make_occluders.py: error: cannot write {path}")
        print(f"wrote {path}")
    (target / "README.txt").write_text(README)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else TARGET)
