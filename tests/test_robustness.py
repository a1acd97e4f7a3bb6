"""Random Erasing of the robustness test (Table 7): box geometry, and an erased test
set that depends on (seed, image index) alone."""

import numpy as np
import pytest

from playing_distraction.robustness import AREA, ASPECT, erase, erase_box, erased_batches


def boxes(height, width, seeds):
    return [erase_box(height, width, np.random.default_rng(seed)) for seed in seeds]


def test_boxes_lie_inside_the_image_with_the_papers_area_and_aspect():
    height = width = 64
    drawn = boxes(height, width, range(2000))
    assert all(box is not None for box in drawn)
    fractions = []
    for top, left, bottom, right in drawn:
        assert 0 <= top < bottom <= height and 0 <= left < right <= width
        h, w = bottom - top, right - left
        # Each side is a rounded sqrt(S_e r_e) or sqrt(S_e / r_e): within 0.5 of it.
        assert (h - 0.5) * (w - 0.5) <= AREA[1] * height * width
        assert (h + 0.5) * (w + 0.5) >= AREA[0] * height * width
        assert (h - 0.5) / (w + 0.5) <= ASPECT[1]
        assert (h + 0.5) / (w - 0.5) >= ASPECT[0]
        fractions.append(h * w / (height * width))
    fractions = np.array(fractions)
    # The draws cover the range: small and large boxes, tall and wide ones.
    assert fractions.min() < 0.03 and fractions.max() > 0.35
    assert np.mean(fractions > 0.2) > 0.1 and np.mean(fractions < 0.1) > 0.1
    aspects = np.array([(b - t) / (r - l) for t, l, b, r in drawn])
    assert aspects.min() < 0.4 and aspects.max() > 2.5
    # Positions too: boxes start near both edges.
    tops = np.array([box[0] for box in drawn])
    lefts = np.array([box[1] for box in drawn])
    assert tops.min() == 0 and lefts.min() == 0 and tops.max() > 48 and lefts.max() > 48


def test_a_box_on_a_non_square_image_respects_each_side():
    for top, left, bottom, right in boxes(20, 90, range(500)):
        assert 0 <= top < bottom <= 20 and 0 <= left < right <= 90


def test_a_box_that_cannot_fit_is_none():
    rng = np.random.default_rng(0)
    assert erase_box(10, 10, rng, area=(1.5, 2.0)) is None


def test_a_one_pixel_image_is_never_erased_whole():
    # The only box that fits a 1x1 image is the whole image (area fraction 1, far
    # above the 0.4 maximum): Random Erasing must leave such an image whole.
    assert boxes(1, 1, range(50)) == [None] * 50
    images = np.full((3, 1, 1, 3), 0.5, np.float32)
    np.testing.assert_array_equal(erase(images, np.arange(3), seed=0), images)


def changed_box(original, erased):
    """The bounding box of the changed pixels, checking that it is all changed."""
    changed = np.any(original != erased, axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert changed[top:bottom, left:right].all(), "the changed pixels are not one rectangle"
    assert changed.sum() == (bottom - top) * (right - left)
    return top, left, bottom, right


@pytest.fixture
def images():
    rng = np.random.default_rng(1)
    # Values of prepared uint8 images, so a uniform float32 fill never equals them by chance.
    return (rng.integers(0, 256, (12, 40, 48, 3)) / 255.0).astype(np.float32)


def test_erase_changes_one_rectangle_per_image_and_nothing_else(images):
    original = images.copy()
    indices = np.arange(100, 112)
    erased = erase(images, indices, seed=5)
    np.testing.assert_array_equal(images, original)  # not modified in place
    assert erased.shape == images.shape and erased.dtype == np.float32
    for k, index in enumerate(indices):
        box = changed_box(original[k], erased[k])
        assert box == erase_box(40, 48, np.random.default_rng([5, index]))
        top, left, bottom, right = box
        outside = np.ones((40, 48), bool)
        outside[top:bottom, left:right] = False
        assert np.array_equal(erased[k][outside], original[k][outside])  # bit for bit
        fill = erased[k, top:bottom, left:right]
        assert fill.min() >= 0.0 and fill.max() <= 1.0
        # Uniform noise, not a constant: the fill has spread.
        assert fill.std() > 0.1


def test_erase_of_an_image_depends_on_seed_and_index_only(images):
    erased = erase(images, np.arange(12), seed=3)
    np.testing.assert_array_equal(erase(images, np.arange(12), seed=3), erased)
    # The same image at the same index erased alone, or among others: the same result.
    np.testing.assert_array_equal(erase(images[7:8], [7], seed=3)[0], erased[7])
    reversed_order = erase(images[::-1], np.arange(12)[::-1], seed=3)
    np.testing.assert_array_equal(reversed_order[::-1], erased)
    other = erase(images, np.arange(12), seed=4)
    assert all(not np.array_equal(a, b) for a, b in zip(other, erased))
    # Another index is another draw.
    assert not np.array_equal(erase(images[:1], [1], seed=3)[0], erased[0])


def test_erased_batches_give_the_same_set_for_any_batch_size():
    rng = np.random.default_rng(2)
    prepared = rng.integers(0, 256, (17, 24, 24, 3)).astype(np.uint8)
    original = prepared.copy()

    def erased_set(batch_size, seed=11):
        batches = list(erased_batches(prepared, batch_size, seed))
        assert [len(b) for b in batches] == [min(batch_size, 17 - s)
                                             for s in range(0, 17, batch_size)]
        return np.concatenate(batches)

    by_3, by_7 = erased_set(3), erased_set(7)
    np.testing.assert_array_equal(by_3, by_7)
    np.testing.assert_array_equal(prepared, original)
    scaled = prepared.astype(np.float32) / 255.0
    np.testing.assert_array_equal(by_3, erase(scaled, np.arange(17), 11))
    for k in range(17):
        changed_box(scaled[k], by_3[k])
    other = erased_set(7, seed=12)
    assert not np.array_equal(other, by_7)
    assert all(not np.array_equal(a, b) for a, b in zip(other, by_7))
