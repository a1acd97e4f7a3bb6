"""Synthetic occluders (occluders.py; Cen et al. 2021, Sec. 4.1; PAPERS.md §5): the
shipped files, the exact occluded area, the fixed random positions, clipping, the
pattern subsets, NumPy and TensorFlow pasting alike, and one-line errors for bad
occluder files."""

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from playing_distraction import occluders
from playing_distraction.errors import UserError
from playing_distraction.occluders import (OCCLUDER_DIR, Occluder, Pattern, load_occluders,
                                           make_patterns, occlude, occlude_numpy,
                                           pattern_subset, render)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = load_occluders()
PATTERNS = make_patterns(SHIPPED)


def write_png(path, pixels):
    assert cv2.imwrite(str(path), pixels)
    return path


def rgba(height, width, alpha):
    """A BGRA uint8 image with a colour ramp and the given alpha (uint8 array or value)."""
    image = np.zeros((height, width, 4), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 1] = 90
    image[..., 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    image[..., 3] = alpha
    return image


def array_occluder(name, alpha, rgb=None):
    alpha = np.asarray(alpha, np.float32)
    rgb = np.full(alpha.shape + (3,), 0.25, np.float32) if rgb is None else rgb
    return Occluder(name, rgb, alpha, hashlib.sha256(alpha.tobytes()).hexdigest())


# ------------------------------------------------------------------ the shipped occluders


def test_three_distinct_occluders_ship_with_the_package_and_their_licence():
    assert OCCLUDER_DIR == ROOT / "playing_distraction" / "assets" / "occluders"
    assert [occluder.name for occluder in SHIPPED] == ["hand", "leaf", "tile"]
    for occluder in SHIPPED:
        path = OCCLUDER_DIR / f"{occluder.name}.png"
        assert occluder.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert occluder.rgb.dtype == occluder.alpha.dtype == np.float32
        assert occluder.rgb.shape == occluder.alpha.shape + (3,)
        assert 100 <= max(occluder.alpha.shape) <= 200
        assert 0 <= occluder.rgb.min() and occluder.rgb.max() <= 1
        assert set(np.unique(occluder.alpha)) == {0.0, 1.0}  # drawn without anti-aliasing
        # Cropped to the visible pixels: every border row and column has one.
        alpha = occluder.alpha
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
        assert 0.3 < alpha.mean() < 0.9  # an irregular shape, not a full rectangle
    assert len({occluder.sha256 for occluder in SHIPPED}) == 3
    # Different textures: the mean colours of the opaque pixels are far apart.
    colours = [occluder.rgb[occluder.alpha >= 0.5].mean(axis=0) for occluder in SHIPPED]
    assert min(np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]) > 0.2
    notice = (OCCLUDER_DIR / "README.txt").read_text()
    assert "data/make_occluders.py" in notice and "MIT" in notice
    setup = (ROOT / "setup.cfg").read_text()
    assert "assets/occluders/*.png" in setup and "assets/occluders/*.txt" in setup


def test_the_script_draws_the_shipped_pixels_again(tmp_path):
    spec = importlib.util.spec_from_file_location("make_occluders",
                                                  ROOT / "data" / "make_occluders.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)
    drawn = load_occluders(tmp_path)
    assert [occluder.name for occluder in drawn] == ["hand", "leaf", "tile"]
    for new, old in zip(drawn, SHIPPED):
        np.testing.assert_array_equal(new.alpha, old.alpha)
        np.testing.assert_array_equal(new.rgb, old.rgb)


# ------------------------------------------------------------------ patterns


def test_the_paper_s_24_patterns_in_order_with_unique_safe_names():
    assert len(PATTERNS) == 24 == 3 * 2 * 4
    names = [pattern.name for pattern in PATTERNS]
    assert len(set(names)) == 24
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in names)
    assert names[:5] == ["r20-centre-hand", "r20-random1-hand", "r20-random2-hand",
                         "r20-random3-hand", "r20-centre-leaf"]
    assert names[12:14] == ["r10-centre-hand", "r10-random1-hand"]
    assert [pattern.group for pattern in PATTERNS[:4]] == ["r20-centre"] + ["r20-random"] * 3
    assert list(dict.fromkeys(pattern.group for pattern in PATTERNS)) == [
        "r20-centre", "r20-random", "r10-centre", "r10-random"]
    for pattern in PATTERNS:
        assert SHIPPED[pattern.occluder].name == pattern.occluder_name
        assert json.loads(json.dumps(pattern.to_dict()))["name"] == pattern.name
    assert make_patterns(SHIPPED, ratios=(0.125,), random_positions=0)[0].name == \
        "r12p5-centre-hand"


def test_random_positions_are_fixed_by_the_seed_and_change_with_it():
    again = make_patterns(SHIPPED)
    assert again == PATTERNS
    other = make_patterns(SHIPPED, seed=1)
    random = [(a.centre, b.centre) for a, b in zip(PATTERNS, other) if a.position != "centre"]
    assert len(random) == 18 and all(a != b for a, b in random)
    assert all(a.centre == b.centre == (0.5, 0.5) for a, b in zip(PATTERNS, other)
               if a.position == "centre")
    # The documented draw: U[0, 1)^2 from default_rng([seed, occluder, ratio index]).
    expected = np.random.default_rng([0, 1, 1]).random((3, 2))
    drawn = [p.centre for p in PATTERNS if p.ratio == 0.1 and p.occluder == 1
             and p.position != "centre"]
    np.testing.assert_array_equal(drawn, expected)
    # Each occluder and ratio has its own positions.
    centres = [p.centre for p in PATTERNS if p.position == "random1"]
    assert len(set(centres)) == 6
    # A ratio or an occluder more does not move the others' positions.
    fewer = make_patterns(SHIPPED[:2], ratios=(0.2,))
    assert fewer == [p for p in PATTERNS if p.ratio == 0.2 and p.occluder < 2]


def test_subsets_10c_and_20c_are_the_centre_patterns_of_one_ratio():
    assert pattern_subset(PATTERNS, "full") == PATTERNS
    for subset, ratio in (("10c", 0.1), ("20c", 0.2)):
        chosen = pattern_subset(PATTERNS, subset)
        assert [p.name for p in chosen] == [f"r{round(ratio * 100)}-centre-{name}"
                                            for name in ("hand", "leaf", "tile")]
    with pytest.raises(ValueError, match="pattern subset 10c is empty"):
        pattern_subset(make_patterns(SHIPPED, ratios=(0.2,)), "10c")
    with pytest.raises(ValueError, match="unknown pattern subset '30c'"):
        pattern_subset(PATTERNS, "30c")


@pytest.mark.parametrize("kwargs, message", [
    ({"ratios": (0.2, 0.0)}, "--occlusion-ratios must be in (0, 1), got 0.0"),
    ({"ratios": (1.0,)}, "--occlusion-ratios must be in (0, 1), got 1.0"),
    ({"ratios": (float("nan"),)}, "--occlusion-ratios must be in (0, 1), got nan"),
    ({"ratios": (0.2, 0.2)}, "--occlusion-ratios must be distinct"),
    ({"ratios": ()}, "--occlusion-ratios needs at least one ratio"),
    ({"random_positions": -1}, "--random-positions must be 0 or more, got -1"),
    ({"seed": -3}, "--pattern-seed must be 0 or more, got -3"),
])
def test_bad_pattern_arguments_name_their_flag(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_patterns(SHIPPED, **kwargs)


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("height, width", [(32, 32), (64, 64), (224, 224), (48, 80)])
def test_a_centre_pattern_covers_exactly_the_ratio_of_the_image(height, width):
    for pattern in PATTERNS:
        if pattern.position != "centre":
            continue
        rgb, mask = render(pattern, SHIPPED, height, width)
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.float32
        assert mask.shape == (height, width) and mask.dtype == bool
        assert mask.sum() == round(pattern.ratio * height * width), pattern.name
        # Centred: the mask's box is symmetric about the image centre within a pixel.
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert abs((rows[0] + rows[-1] + 1) / 2 - height / 2) <= 1
        assert abs((cols[0] + cols[-1] + 1) / 2 - width / 2) <= 1
        # The aspect ratio is the occluder's.
        occluder = SHIPPED[pattern.occluder].alpha
        aspect = occluder.shape[0] / occluder.shape[1]
        assert (len(range(rows[0], rows[-1] + 1)) / len(range(cols[0], cols[-1] + 1))
                == pytest.approx(aspect, rel=0.25 if height == 32 else 0.1))
        # The pasted colours are the occluder's: the mean colours agree.
        source = SHIPPED[pattern.occluder]
        np.testing.assert_allclose(rgb[mask].mean(0), source.rgb[source.alpha >= 0.5].mean(0),
                                   atol=0.12)
        assert not rgb[~mask].any()


def test_renders_are_cached_read_only_and_follow_the_size():
    first = render(PATTERNS[0], SHIPPED, 40, 40)
    assert render(PATTERNS[0], SHIPPED, 40, 40)[1] is first[1]
    with pytest.raises(ValueError):
        first[1][0, 0] = True
    assert render(PATTERNS[0], SHIPPED, 41, 40)[1].shape == (41, 40)
    with pytest.raises(ValueError, match="is of occluder hand, not leaf"):
        render(PATTERNS[0], SHIPPED[1:], 40, 40)


def test_clipping_at_the_border_keeps_only_what_falls_inside():
    size = 64
    centre = next(p for p in PATTERNS if p.position == "centre" and p.occluder == 2)
    full = render(centre, SHIPPED, size, size)[1]
    for where in ((0.0, 0.0), (0.5, 0.999), (0.98, 0.3)):
        moved = Pattern(centre.occluder, centre.occluder_name, centre.ratio, "random1", where)
        rgb, mask = render(moved, SHIPPED, size, size)
        assert 0 < mask.sum() < full.sum()
        assert not rgb[~mask].any()
        # The part inside is the centred mask moved by (where - 0.5) · size, within a
        # pixel of rounding, and cut at the border.
        nominal = [round((w - 0.5) * size) for w in where]
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = nominal[0] + dy, nominal[1] + dx
                shifted = np.zeros((3 * size, 3 * size), bool)
                shifted[size + y:2 * size + y, size + x:2 * size + x] = full
                matches.append(np.array_equal(mask, shifted[size:2 * size, size:2 * size]))
        assert any(matches), where
    # A corner cuts off about three quarters.
    corner = Pattern(centre.occluder, centre.occluder_name, centre.ratio, "random1", (0.0, 0.0))
    assert 0.1 < render(corner, SHIPPED, size, size)[1].sum() / full.sum() < 0.4
    # Pasting writes nothing outside the mask.
    images = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)
    rgb, mask = render(corner, SHIPPED, size, size)
    pasted = occlude_numpy(images, rgb, mask)
    np.testing.assert_array_equal(pasted[:, ~mask], images[:, ~mask])
    np.testing.assert_array_equal(pasted[:, mask], np.broadcast_to(rgb[mask], (2,) + rgb[mask].shape))


def test_an_occluder_larger_than_the_image_is_clipped_too():
    thin = array_occluder("bar", np.ones((3, 120)))
    pattern = make_patterns([thin], ratios=(0.2,), random_positions=0)[0]
    rgb, mask = render(pattern, [thin], 32, 32)
    # Unclipped it would cover round(0.2 * 1024) = 205 pixels in a bar far wider than 32.
    assert mask.shape == (32, 32) and 0 < mask.sum() < 205
    assert mask[:, 0].any() and mask[:, -1].any()  # cut at both sides
    assert mask.all(axis=1).sum() >= 1  # a whole row across the image
    tiny = make_patterns([thin], ratios=(0.01,), random_positions=0)[0]
    assert render(tiny, [thin], 5, 5)[1].sum() == 0  # round(0.25) pixels: none


# ------------------------------------------------------------------ pasting


def occluded_pair(batch=3, size=32, dtype=np.float32):
    images = np.random.default_rng(1).random((batch, size, size, 3)).astype(dtype)
    rgb, mask = render(PATTERNS[5], SHIPPED, size, size)
    return images, rgb, mask


def test_occlude_numpy_pastes_the_occluder_on_a_batch_or_one_image():
    images, rgb, mask = occluded_pair()
    out = occlude_numpy(images, rgb, mask)
    assert out.dtype == np.float32 and out.shape == images.shape
    expected = images.copy()
    expected[:, mask] = rgb[mask]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(occlude_numpy(images[1], rgb, mask), expected[1])
    assert mask.any() and not np.array_equal(out, images)
    with pytest.raises(ValueError, match="float images"):
        occlude_numpy((images * 255).astype(np.uint8), rgb, mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_occlude_in_tensorflow_equals_numpy_eagerly_compiled_and_in_tf_data(dtype):
    images, rgb, mask = occluded_pair(dtype=dtype)
    expected = occlude_numpy(images, rgb, mask)
    eager = occlude(images, rgb, mask)
    assert eager.dtype == tf.as_dtype(dtype)
    np.testing.assert_array_equal(eager.numpy(), expected)
    compiled = tf.function(lambda x: occlude(x, rgb, mask))
    np.testing.assert_array_equal(compiled(tf.constant(images)).numpy(), expected)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2).map(
        lambda x: occlude(x, rgb, mask))
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in dataset]), expected)
    single = tf.data.Dataset.from_tensor_slices(images).map(lambda x: occlude(x, rgb, mask))
    np.testing.assert_array_equal(np.stack([b.numpy() for b in single]), expected)


# ------------------------------------------------------------------ bad occluder files


def one_line_error(folder):
    with pytest.raises(UserError) as error:
        load_occluders(folder)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_missing_or_empty_folder_is_one_line(tmp_path):
    assert one_line_error(tmp_path / "nope") == f"occluder folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "notes.txt").write_text("no images here")
    assert one_line_error(tmp_path).startswith(f"occluder folder {tmp_path} holds no image file")


@pytest.mark.parametrize("case, expected", [
    ("rgb", "has no alpha channel"),
    ("transparent", "is fully transparent"),
    ("half", "is fully transparent"),
    ("garbage", "cannot decode the occluder"),
    ("empty", "cannot decode the occluder"),
])
def test_a_bad_occluder_file_is_one_line_naming_it(tmp_path, case, expected):
    write_png(tmp_path / "a_good.png", rgba(20, 30, 255))
    bad = tmp_path / "b_bad.png"
    if case == "rgb":
        write_png(bad, rgba(20, 30, 255)[..., :3])
    elif case == "transparent":
        write_png(bad, rgba(20, 30, 0))
    elif case == "half":  # visible, but nowhere opaque enough to count
        write_png(bad, rgba(20, 30, 100))
    elif case == "garbage":
        bad.write_bytes(b"this is not a PNG at all")
    else:
        bad.write_bytes(b"")
    message = one_line_error(tmp_path)
    assert expected in message and str(bad) in message


def test_names_are_made_file_name_safe_and_must_stay_distinct(tmp_path):
    write_png(tmp_path / "my leaf!.png", rgba(20, 30, 255))
    write_png(tmp_path / "other.PNG", rgba(10, 10, 255))
    assert [o.name for o in load_occluders(tmp_path)] == ["my_leaf_", "other"]
    write_png(tmp_path / "my_leaf_.png", rgba(20, 30, 255))
    assert "share a name once made file-name safe: my leaf!.png, my_leaf_.png" in \
        one_line_error(tmp_path)


def test_gray_alpha_and_16_bit_occluders_load_in_unit_range(tmp_path):
    from PIL import Image

    gray = np.zeros((10, 12, 2), np.uint8)
    gray[..., 0], gray[2:8, 3:9, 1] = 200, 255
    Image.fromarray(gray, "LA").save(tmp_path / "gray.png")
    occluder, = load_occluders(tmp_path)
    assert occluder.alpha.shape == (6, 6)
    np.testing.assert_allclose(occluder.rgb, 200 / 255, atol=1e-6)
    (tmp_path / "gray.png").unlink()

    alpha = np.zeros((20, 30), np.uint16)
    alpha[4:16, 5:25] = 65535
    image = rgba(20, 30, 0).astype(np.uint16) * 257
    image[..., 3] = alpha
    write_png(tmp_path / "deep.png", image)
    occluder, = load_occluders(tmp_path)
    assert occluder.alpha.shape == (12, 20) and occluder.alpha.min() == 1.0  # cropped
    # Divided by 65535, and OpenCV's BGR turned to RGB.
    expected = rgba(20, 30, 0)[4:16, 5:25, 2::-1] / 255
    np.testing.assert_allclose(occluder.rgb, expected, atol=1e-6)
    assert occluders.OPAQUE == 0.5


def test_an_occluder_made_in_code_without_an_opaque_pixel_is_refused():
    ghost = array_occluder("ghost", np.full((8, 8), 0.4))
    pattern = make_patterns([ghost], ratios=(0.2,), random_positions=0)[0]
    with pytest.raises(ValueError, match="occluder ghost has no pixel with alpha >= 0.5"):
        render(pattern, [ghost], 32, 32)
