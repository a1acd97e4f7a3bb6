"""Decoding image files into the prepared array: formats, bad files, crops, cache."""

import os
import re

import numpy as np
import pytest
from PIL import Image

import playing_distraction.pipeline as pipeline
from playing_distraction.errors import UserError
from playing_distraction.layouts import Part
from playing_distraction.pipeline import decode_file, fit_image, prepare

SIZE = 32


def noise(height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


def smooth(height=40, width=48):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)],
                    axis=-1).astype(np.uint8)


def solid(colour, height=40, width=48):
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def save(array, path, *args, **options):
    Image.fromarray(array).save(path, *args, **options)
    return str(path)


def file_part(paths, labels=None, **options):
    labels = np.arange(len(paths)) if labels is None else np.asarray(labels)
    return Part(None, labels, np.array([str(path) for path in paths]), **options)


def decoded(path):
    return decode_file(str(path)).numpy()


# ------------------------------------------------------------------ formats


def test_decode_rgb_png_exactly_and_jpeg_like_pillow(tmp_path):
    image = smooth()
    png = save(image, tmp_path / "a.png")
    jpeg = save(image, tmp_path / "a.jpg", quality=95)
    np.testing.assert_array_equal(decoded(png), image)
    out = decoded(jpeg)
    assert out.shape == image.shape and out.dtype == np.uint8
    reference = np.asarray(Image.open(jpeg).convert("RGB")).astype(int)
    difference = np.abs(out.astype(int) - reference)
    assert difference.max() <= 6 and difference.mean() < 1.5  # decoders round differently


def test_decode_grayscale_files_to_rgb_with_equal_channels(tmp_path):
    gray = smooth()[..., 0]
    png = save(gray, tmp_path / "g.png")
    jpeg = save(gray, tmp_path / "g.jpg", quality=95)
    for path in (png, jpeg):
        out = decoded(path)
        assert out.shape == gray.shape + (3,)
        np.testing.assert_array_equal(out[..., 0], out[..., 1])
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(decoded(png)[..., 0], gray)
    assert np.abs(decoded(jpeg)[..., 0].astype(int) - gray).max() <= 4


def test_decode_rgba_png_drops_alpha(tmp_path):
    rgb = noise()
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2]).astype(np.uint8)
    path = save(np.dstack([rgb, alpha]), tmp_path / "rgba.png")
    np.testing.assert_array_equal(decoded(path), rgb)


def test_decode_cmyk_jpeg_like_pillow(tmp_path):
    rgb = smooth()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = decoded(path)
    assert out.shape == rgb.shape
    reference = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(out.astype(int) - reference).max() <= 10
    assert np.abs(out.astype(int) - rgb).mean() < 4  # not inverted or channel-swapped


def test_decode_bmp_and_first_frame_of_animated_gif(tmp_path):
    image = noise()
    np.testing.assert_array_equal(decoded(save(image, tmp_path / "a.bmp")), image)
    frames = [Image.fromarray(solid(colour)) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    out = decoded(gif)
    assert out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, solid((255, 0, 0)))


def test_prepare_gives_square_uint8_rgb_and_keeps_solid_colours(tmp_path):
    colours = [(200, 30, 90), (180, 180, 180), (77, 77, 77)]
    paths = [save(solid(colours[0], 50, 70), tmp_path / "a.png"),
             save(np.full((20, 24), 180, np.uint8), tmp_path / "b.png"),  # gray, enlarged
             save(solid(colours[2], 64, 40), tmp_path / "c.jpg", quality=95)]
    prepared = prepare(file_part(paths, [5, 6, 7]), SIZE)
    assert prepared.images.shape == (3, SIZE, SIZE, 3) and prepared.images.dtype == np.uint8
    np.testing.assert_array_equal(prepared.labels, [5, 6, 7])
    assert prepared.skipped == []
    for image, colour in zip(prepared.images, colours):
        assert np.abs(image.astype(int) - colour).max() <= 1, (colour, image[0, 0])


def test_prepare_in_memory_parts():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    gray[0] = 123
    prepared = prepare(Part(gray, np.arange(5) + 10), SIZE)
    assert prepared.images.shape == (5, SIZE, SIZE, 3) and prepared.images.dtype == np.uint8
    np.testing.assert_array_equal(prepared.labels, np.arange(5) + 10)
    np.testing.assert_array_equal(prepared.images[..., 0], prepared.images[..., 2])
    assert np.all(prepared.images[0] == 123)
    for image, source in zip(prepared.images, gray):
        assert abs(image[..., 1].mean() - source.mean()) < 3

    rgb = np.stack([solid((10, 20, 250), 64, 80), noise(64, 80)])
    prepared = prepare(Part(rgb, np.array([0, 1])), SIZE)
    assert prepared.images.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(prepared.images[0], solid((10, 20, 250), SIZE, SIZE))


def test_fit_image_antialiases_when_shrinking():
    # Columns 255, 0, 0, 255, 0, 0, ...: plain bilinear sampling at a factor of 3 hits
    # only the black columns; an antialiased shrink gives the mean, 85.
    stripes = np.zeros((96, 96), np.uint8)
    stripes[:, ::3] = 255
    assert abs(fit_image(stripes, SIZE).numpy().mean() - 85) < 3


def test_fit_image_antialiases_a_dimension_that_shrinks_while_the_other_grows():
    # 16 rows (enlarged to 32) by 96 columns (shrunk to 32): the width is still
    # shrunk by 3, and should be antialiased like a square image.
    stripes = np.zeros((16, 96), np.uint8)
    stripes[:, ::3] = 255
    assert abs(fit_image(stripes, SIZE).numpy().mean() - 85) < 3


# ------------------------------------------------------------------ bad files


@pytest.fixture
def mixed_files(tmp_path):
    """good, corrupt, good, truncated, good; the good ones a distinct solid colour each."""
    colours = {0: (255, 0, 0), 2: (0, 255, 0), 4: (0, 0, 255)}
    paths = [None] * 5
    for index, colour in colours.items():
        paths[index] = save(solid(colour), tmp_path / f"good{index}.png")
    paths[1] = str(tmp_path / "corrupt.jpg")
    with open(paths[1], "wb") as file:
        file.write(np.random.default_rng(0).bytes(800))
    real = save(noise(64, 64), tmp_path / "real.jpg", quality=90)
    with open(real, "rb") as file:
        data = file.read()
    paths[3] = str(tmp_path / "truncated.jpg")
    with open(paths[3], "wb") as file:
        file.write(data[: len(data) // 2])
    return paths, colours


def test_unreadable_files_are_skipped_and_labels_stay_aligned(mixed_files):
    paths, colours = mixed_files
    labels = np.array([10, 11, 12, 13, 14])
    messages = []
    prepared = prepare(file_part(paths, labels), SIZE, log=messages.append)
    np.testing.assert_array_equal(prepared.labels, [10, 12, 14])
    assert len(prepared) == 3 and prepared.images.shape == (3, SIZE, SIZE, 3)
    for image, index in zip(prepared.images, (0, 2, 4)):
        np.testing.assert_array_equal(image, solid(colours[index], SIZE, SIZE))
    assert [path for path, _ in prepared.skipped] == [paths[1], paths[3]]
    assert all(isinstance(reason, str) and reason.strip() for _, reason in prepared.skipped)
    assert any("skipped 2" in message for message in messages)


def test_unreadable_file_is_an_error_on_request(mixed_files):
    paths, _ = mixed_files
    with pytest.raises(UserError, match=re.escape(paths[1])) as error:
        prepare(file_part(paths), SIZE, on_bad_image="error")
    assert paths[3] not in str(error.value)
    # The truncated file alone is an error, too.
    with pytest.raises(UserError, match=re.escape(paths[3])):
        prepare(file_part(paths[2:]), SIZE, on_bad_image="error")
    with pytest.raises(ValueError):
        prepare(file_part(paths[:1]), SIZE, on_bad_image="ignore")


# ------------------------------------------------------------------ crops and trim


def test_crop_boxes_crop_clamp_and_ignore_empty_boxes(tmp_path):
    image = np.zeros((40, 64, 3), np.uint8)
    image[:, :32, 0] = 255  # left half red
    image[:, 32:, 2] = 255  # right half blue
    path = save(image, tmp_path / "halves.png")
    boxes = np.array([
        [32, 0, 64, 40],        # right half
        [32, -7, 500, 900],     # right half, clamped
        [-20, -20, 32, 40],     # left half, clamped
        [10, 10, 10, 30],       # empty: whole image
        [-50, -50, 1000, 1000], # whole image, clamped
    ])
    part = file_part([path] * 5, boxes=boxes)
    images = prepare(part, SIZE).images
    blue, red = solid((0, 0, 255), SIZE, SIZE), solid((255, 0, 0), SIZE, SIZE)
    np.testing.assert_array_equal(images[0], blue)
    np.testing.assert_array_equal(images[1], blue)
    np.testing.assert_array_equal(images[2], red)
    whole = prepare(file_part([path]), SIZE).images[0]
    np.testing.assert_array_equal(whole[:, :15], red[:, :15])
    np.testing.assert_array_equal(whole[:, 17:], blue[:, 17:])
    np.testing.assert_array_equal(images[3], whole)
    np.testing.assert_array_equal(images[4], whole)


def test_trim_bottom_cuts_the_banner(tmp_path):
    image = np.zeros((60, 40, 3), np.uint8)
    image[-20:] = 255
    path = save(image, tmp_path / "banner.png")
    untrimmed = prepare(file_part([path]), SIZE).images[0]
    assert untrimmed.max() == 255  # the banner is visible without the trim
    trimmed = prepare(file_part([path], trim_bottom=20), SIZE).images[0]
    assert np.all(trimmed == 0)


# ------------------------------------------------------------------ cache


@pytest.fixture
def cached_files(tmp_path):
    paths = [save(noise(seed=seed), tmp_path / f"n{seed}.png") for seed in range(3)]
    return file_part(paths, [3, 4, 5]), tmp_path / "cache"


def cache_files(directory, pattern="*"):
    return sorted(path.name for path in directory.glob(pattern))


def test_cache_writes_npy_and_json_and_is_reused_without_decoding(cached_files, monkeypatch):
    part, cache = cached_files
    first = prepare(part, SIZE, cache_dir=cache)
    names = cache_files(cache)
    assert len(names) == 2
    key = names[0][: -len(".json")]
    assert re.fullmatch(r"[0-9a-f]{24}", key) and names == [f"{key}.json", f"{key}.npy"]
    np.testing.assert_array_equal(np.load(cache / f"{key}.npy"), first.images)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(pipeline, "source_dataset", no_decoding)
    messages = []
    second = prepare(part, SIZE, cache_dir=cache, log=messages.append)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.skipped == []
    assert any("cache" in message for message in messages)
    # Reading the cache needs no decoding: the uncached path would fail here.
    with pytest.raises(AssertionError, match="decoded again"):
        prepare(part, SIZE)


def test_cache_key_changes_with_size_and_modification_time(cached_files):
    part, cache = cached_files
    prepare(part, SIZE, cache_dir=cache)
    assert len(cache_files(cache, "*.npy")) == 1
    bigger = prepare(part, 40, cache_dir=cache)
    assert bigger.images.shape == (3, 40, 40, 3)
    assert len(cache_files(cache, "*.npy")) == 2
    # Same content, new modification time: the file may have changed, decode again.
    stat = os.stat(part.paths[1])
    os.utime(part.paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    prepare(part, SIZE, cache_dir=cache)
    assert len(cache_files(cache, "*.npy")) == 3
    assert len(cache_files(cache, "*.json")) == 3
    # The trim and the boxes are part of the key, too.
    prepare(Part(None, part.labels, part.paths, trim_bottom=5), SIZE, cache_dir=cache)
    boxes = np.tile([0, 0, 20, 20], (3, 1))
    prepare(Part(None, part.labels, part.paths, boxes=boxes), SIZE, cache_dir=cache)
    assert len(cache_files(cache, "*.npy")) == 5


def test_cache_keeps_skipped_files_skipped(mixed_files, tmp_path):
    paths, _ = mixed_files
    cache = tmp_path / "cache"
    first = prepare(file_part(paths), SIZE, cache_dir=cache)
    second = prepare(file_part(paths), SIZE, cache_dir=cache)
    np.testing.assert_array_equal(second.labels, [0, 2, 4])
    np.testing.assert_array_equal(second.images, first.images)
    assert [path for path, _ in second.skipped] == [paths[1], paths[3]]
    with pytest.raises(UserError, match=re.escape(paths[1])):
        prepare(file_part(paths), SIZE, cache_dir=cache, on_bad_image="error")


def test_incomplete_cache_files_are_not_used(cached_files):
    part, cache = cached_files
    expected = prepare(part, SIZE, cache_dir=cache).images.copy()
    key = cache_files(cache, "*.json")[0][: -len(".json")]
    garbage = np.zeros_like(expected)
    # A crash while decoding: only the partial array, no index.
    (cache / f"{key}.json").unlink()
    (cache / f"{key}.npy").unlink()
    np.save(cache / f"{key}.partial.npy", garbage)
    np.testing.assert_array_equal(prepare(part, SIZE, cache_dir=cache).images, expected)
    assert cache_files(cache) == [f"{key}.json", f"{key}.npy"]
    # A crash between renaming the array and writing its index.
    (cache / f"{key}.json").unlink()
    np.save(cache / f"{key}.npy", garbage)
    np.testing.assert_array_equal(prepare(part, SIZE, cache_dir=cache).images, expected)
    assert (cache / f"{key}.json").exists()


def test_cache_of_the_wrong_shape_is_decoded_again(cached_files):
    part, cache = cached_files
    expected = prepare(part, SIZE, cache_dir=cache).images.copy()
    key = cache_files(cache, "*.json")[0][: -len(".json")]
    np.save(cache / f"{key}.npy", np.zeros((3, SIZE + 1, SIZE + 1, 3), np.uint8))
    np.testing.assert_array_equal(prepare(part, SIZE, cache_dir=cache).images, expected)


def test_unwritable_cache_folder_is_a_user_error(cached_files, tmp_path):
    part, _ = cached_files
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=f"cannot write the image cache in {re.escape(str(blocker))}"):
        prepare(part, SIZE, cache_dir=blocker / "cache")
