"""Input pipeline: decode and resize once into a cache, then batch, augment, prefetch.

``prepare`` turns a ``layouts.Part`` (image files or in-memory arrays) into one
uint8 array (N, size, size, 3) of RGB images at the model's input size: files are
decoded in parallel by ``tf.data`` (JPEG, PNG, BMP, GIF; grayscale and CMYK become
RGB), optionally cropped, and resized. The array lives in memory, or in a ``.npy``
file under a cache folder that later runs (the repetitions of a protocol) reuse.
A file that cannot be decoded is skipped and counted, or stops the run.

``make_dataset`` then streams batches of indices into that array: seeded shuffling
of indices (not images, so shuffling needs no second copy), batches with
``drop_remainder`` for training, the paper's augmentation as batched TF ops
(``augmentation.py``), images scaled to [0, 1] (the model's input space,
PAPERS.md §1), and prefetching.
"""

import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import keras
import numpy as np
import tensorflow as tf

from .errors import UserError
from .storage import megabytes

CACHE_VERSION = 1  # bump when decoding or resizing changes, to retire old cache files
DECODE_BATCH = 64
PROGRESS_FROM = 2000  # images; smaller sets decode in seconds


def fit_image(image, size, box=None, trim_bottom=0):
    """uint8 (H, W) or (H, W, C) -> uint8 (size, size, 3) RGB.

    trim_bottom rows are cut first (at least one row stays), then the ``box``
    ``(x0, y0, x1, y1)`` is cropped (clamped to the image; an empty box keeps the
    whole image), then the image is resized bilinearly - antialiased when shrinking -
    to a square, as the paper's 224×224 inputs are, and rounded to uint8.
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    if trim_bottom:
        image = image[: tf.maximum(tf.shape(image)[0] - trim_bottom, 1)]
    if box is not None:
        box = tf.cast(box, tf.int32)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        x0, x1 = tf.clip_by_value(box[0], 0, width), tf.clip_by_value(box[2], 0, width)
        y0, y1 = tf.clip_by_value(box[1], 0, height), tf.clip_by_value(box[3], 0, height)
        empty = tf.logical_or(x1 <= x0, y1 <= y0)
        image = tf.cond(empty, lambda: image, lambda: image[y0:y1, x0:x1])
    # Antialiasing acts on a side that shrinks (a wide image may shrink one side and
    # enlarge the other); on a side that grows it is plain bilinear.
    resized = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear",
                              antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def decode_file(path):
    """An image file -> uint8 (H, W, 3); the first frame of an animated GIF."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def to_unit_range(images):
    """uint8 -> float32 in [0, 1]: 0 is black and 1 exactly white."""
    return tf.cast(images, tf.float32) / 255.0


def to_model_input(image, size):
    """One uint8 image (H, W) or (H, W, C) -> float32 (size, size, 3) in [0, 1]."""
    return to_unit_range(fit_image(image, size))


@dataclasses.dataclass
class Prepared:
    """Decoded images at the model's size, their labels, what each item is (its
    file, or its position in the part), and the files skipped."""

    images: np.ndarray
    labels: np.ndarray
    skipped: list
    items: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        """The images at ``indices`` (a split's test draw, say), in that order."""
        return Prepared(np.asarray(self.images[indices]), self.labels[indices], [],
                        np.asarray(self.items)[indices])

    def digest(self):
        """SHA-256 of the decoded images and labels: what a run was tested on."""
        digest = hashlib.sha256()
        for start in range(0, len(self.images), 1024):
            digest.update(np.ascontiguousarray(self.images[start:start + 1024]).tobytes())
        digest.update(np.ascontiguousarray(self.labels, np.int64).tobytes())
        return digest.hexdigest()


def source_dataset(part, size):
    """(index, uint8 image at ``size``) for every readable image of ``part``, in order,
    decoded and resized in parallel; unreadable files are dropped (``prepare`` counts
    them by index)."""
    if part.images is not None:
        dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(part)), part.images))
        return dataset.map(lambda index, image: (index, fit_image(image, size)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    columns = [np.arange(len(part)), part.paths]
    if part.boxes is not None:
        columns.append(part.boxes.astype(np.int32))

    def load(index, path, box=None):
        return index, fit_image(decode_file(path), size, box, part.trim_bottom)

    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.ignore_errors()


def _decode_error(path):
    """TensorFlow's reason for not decoding ``path``, without its op bookkeeping."""
    try:
        decode_file(path)
    except tf.errors.OpError as error:
        message = error.message.splitlines()[0] if error.message else ""
        message = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", message)
        return message or type(error).__name__
    return "could not be decoded"


def _cache_key(part, size):
    """A digest of everything that determines the decoded array: the files (path,
    size, modification time), crops, trim, output size and decoder version."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={size} trim={part.trim_bottom}".encode())
    for path in part.paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise UserError(f"cannot read image file {path}: {error.strerror}") from None
        digest.update(f"\n{path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    if part.boxes is not None:
        digest.update(np.ascontiguousarray(part.boxes, np.int64).tobytes())
    return digest.hexdigest()[:24]


def prepare(part, size, cache_dir=None, on_bad_image="skip", name="images", log=None):
    """Decode and resize every image of ``part`` once; see the module docstring.

    on_bad_image: "skip" drops an unreadable file and lists it in ``skipped``
    (path, reason); "error" raises a UserError naming it. log: a callable that
    receives one progress line, or None.
    """
    if on_bad_image not in ("skip", "error"):
        raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    if part.images is not None:
        images, kept = _fill(source_dataset(part, size), len(part), size)
        items = kept if part.positions is None else part.positions[kept]
        return Prepared(images, part.labels[kept], [], items)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{_cache_key(part, size)}"
        cached = _read_cache(cache, size)
        if cached is not None:
            images, kept = cached
            if log:
                log(f"{name}: {len(kept)} images at {size} px from the cache {cache}.npy")
            return _finish(part, images, kept, on_bad_image, name, log)
    start = time.perf_counter()
    progress = log is not None and len(part) >= PROGRESS_FROM
    if cache is None:
        images, kept = _fill(source_dataset(part, size), len(part), size, progress=progress)
    else:
        try:
            images, kept = _fill_cache(part, size, cache, progress)
        except OSError as error:  # only the cache files can raise it here
            raise UserError(f"cannot write the image cache in {cache_dir}: "
                            f"{error.strerror or error}; {_CACHE_ADVICE}") from None
    if log:
        seconds = time.perf_counter() - start
        log(f"{name}: decoded {len(part)} images at {size} px in {seconds:.0f} s "
            f"({len(part) / max(seconds, 1e-9):.0f} images/s)")
    return _finish(part, images, kept, on_bad_image, name, log)


def _fill(dataset, count, size, write=None, progress=False):
    """Write the (index, image) stream into one array, compacted; returns (array, kept).
    write: instead, a callable that receives each batch of images, in order; the array
    returned is then None. progress: show a progress bar (decoding a large dataset
    takes minutes)."""
    array, position = None, 0
    if write is None:
        array = np.empty((count, size, size, 3), np.uint8)

        def write(images):
            nonlocal position
            array[position:position + len(images)] = images
            position += len(images)

    kept, seen = [], 0
    bar = keras.utils.Progbar(count, unit_name="image") if progress else None
    for indices, images in dataset.batch(DECODE_BATCH).prefetch(2).as_numpy_iterator():
        write(images)
        kept.append(indices)
        if bar is not None:
            # Skipped files count as seen, so the bar ends at the total.
            seen = int(indices[-1]) + 1
            bar.update(seen)
    if bar is not None and seen < count:
        bar.update(count)
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return (None if array is None else array[:len(kept)]), kept


# How a failure to write the cache ends, after what went wrong.
_CACHE_ADVICE = "use another --cache-dir, or leave it out to keep the images in memory"


def _fill_cache(part, size, cache, progress=False):
    """``_fill`` into the cache files ``<cache>.npy`` (the array, NumPy's format, at
    full length: skipped files leave zeros at its end) and ``<cache>.json`` (the kept
    indices); returns (memory-mapped array, kept).

    A full disk must end as one error, never as a process killed by SIGBUS (a page
    of a memory map that cannot be stored) or as a file that keeps the disk full:
    the free space is checked before decoding starts, the file's blocks are reserved
    before its first byte is written, and it is written by ordinary writes (an error
    is an OSError) under a temporary name of its own, renamed when complete and on
    the disk (two runs that fill the same cache at once never share a file). The
    index is written last: an array without it is incomplete and never read. On any
    failure, Ctrl-C included, what was written is removed.
    """
    count = len(part)
    shape = (count, size, size, 3)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False, "shape": shape})
    header = header.getvalue()
    length = len(header) + int(np.prod(shape))
    final, index = cache.with_suffix(".npy"), cache.with_suffix(".json")
    partial = cache.with_name(f"{cache.name}.{os.getpid()}-{os.urandom(4).hex()}.partial.npy")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # What is under this key is incomplete or invalid (``_read_cache`` said so), and
    # what crashed runs left is garbage: both go first, so that their space counts as
    # free. The index before the array: without it the array is not used.
    for path in (index, final):
        path.unlink(missing_ok=True)
    _remove_abandoned(cache.parent)
    needed = length + count * (len(str(count)) + 2) + 16  # the array and its index
    free = shutil.disk_usage(cache.parent).free
    if needed > free:
        raise UserError(f"not enough space for the image cache in {cache.parent}: "
                        f"{megabytes(needed)} needed, {megabytes(free)} free; "
                        f"{_CACHE_ADVICE}")
    written = []
    try:
        with open(partial, "xb") as handle:
            written.append(partial)
            if fcntl is not None:  # held until the file closes: see _remove_abandoned
                fcntl.flock(handle, fcntl.LOCK_EX)
            _reserve(handle, length)
            handle.write(header)
            _, kept = _fill(source_dataset(part, size), count, size,
                            lambda images: handle.write(np.ascontiguousarray(images).data),
                            progress)
            handle.truncate(length)  # its full length where blocks were not reserved
            handle.flush()
            os.fsync(handle.fileno())  # on the disk before its name says complete
        os.replace(partial, final)
        written += [final, index]
        index.write_text(json.dumps({"kept": kept.tolist()}))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return np.load(final, mmap_mode="r")[:len(kept)], kept


def _remove_abandoned(folder):
    """Remove the partial cache files of runs that died (killed, or the machine went
    down): a partial file is locked for as long as its writer has it open."""
    if fcntl is None:  # Windows: left for the user
        return
    for path in folder.glob("*.partial.npy"):
        try:
            with open(path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
        except OSError:  # locked by a live run, or removed meanwhile
            continue


def _reserve(handle, length):
    """Allocate the blocks of a file of ``length`` bytes now, so that a full disk fails
    here, before decoding, and a later write into them cannot fail for space."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the writes report it
        return
    try:
        os.posix_fallocate(handle.fileno(), 0, length)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # not on this file system
            raise


def _read_cache(cache, size):
    try:
        kept = np.array(json.loads(cache.with_suffix(".json").read_text())["kept"], np.int64)
        # A file cut short fails here: its memory map would need more bytes than it has.
        images = np.load(cache.with_suffix(".npy"), mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3)
            or len(images) < len(kept)):
        return None  # not what this key promises: decode again
    return images[:len(kept)], kept


def _finish(part, images, kept, on_bad_image, name, log):
    bad = np.setdiff1d(np.arange(len(part)), kept)
    if bad.size and on_bad_image == "error":
        path = part.paths[bad[0]]
        raise UserError(
            f"cannot decode image {path}: {_decode_error(path)} ({bad.size} unreadable in "
            f"{name}; --on-bad-image skip leaves them out)")
    skipped = [(str(part.paths[index]), _decode_error(part.paths[index])) for index in bad]
    if skipped and log:
        log(f"{name}: skipped {len(skipped)} unreadable image(s) of {len(part)}, "
            f"e.g. {skipped[0][0]}: {skipped[0][1]}")
    return Prepared(images, part.labels[kept], skipped, part.paths[kept])


def make_dataset(images, labels, batch_size, training, seed=None, indices=None,
                 augmentation=None, epochs=None):
    """Batches of (float32 images in [0, 1], int32 labels) from prepared images.

    indices: which items, in which multiplicity (a split, or an oversampled one);
    default all. training=False: in order, every item kept, no augmentation.

    training=True: full batches of a permutation of the indices, augmented. Each
    epoch's permutation and augmentation are a function of (``seed``, epoch key) only:
    - ``epochs=None``: one epoch per iteration over the dataset, with a new key each
      time (drawn from ``seed``), as a reshuffling dataset behaves;
    - ``epochs=(first, stop)``: the batches of epochs first..stop-1 as one stream,
      for ``fit(steps_per_epoch=len(indices) // batch_size, initial_epoch=first)``.
      A run resumed at epoch k sees exactly the batches it would have seen.
    """
    labels = np.asarray(labels, np.int32)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
    size = images.shape[1:]

    def fetch(batch):
        # NumPy fancy indexing reads a memory-mapped cache without loading all of it.
        order = np.asarray(batch)
        return np.asarray(images[order]), labels[order]

    def load(batch):
        pixels, targets = tf.numpy_function(fetch, [batch], (tf.uint8, tf.int32), stateful=False)
        pixels.set_shape((None, *size))
        targets.set_shape((None,))
        return to_unit_range(pixels), targets

    if not training:
        dataset = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
        dataset = dataset.batch(batch_size).map(
            load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    steps = len(indices) // batch_size
    items = tf.constant(indices.astype(np.int64))

    def epoch_batches(key):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(key, tf.int64)])
        order = tf.gather(items, tf.argsort(tf.random.stateless_uniform([len(indices)], epoch_seed)))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        batch_seeds = tf.data.Dataset.range(steps).map(
            lambda number: tf.random.experimental.stateless_fold_in(epoch_seed, number))
        return tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(batches), batch_seeds)

    if epochs is None:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        keys = tf.data.Dataset.range(*epochs)
    augment = augmentation is not None and augmentation.active

    def load_and_augment(batch, batch_seed):
        pixels, targets = load(batch)
        return (augmentation(pixels, batch_seed) if augment else pixels), targets

    dataset = keys.flat_map(epoch_batches).map(
        load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
