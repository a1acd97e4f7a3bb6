"""Images per second of the input pipeline alone, without a model.

    python -m playing_distraction.throughput                      # synthetic JPEGs
    python -m playing_distraction.throughput --dataset cars --limit 2000

Measures, side by side in one process: decoding and resizing files (the first
epoch, which fills the cache), the same with the training augmentation as one
stream, training batches from the cache with augmentation (every later epoch), and
evaluation batches from the cache. Without --dataset it writes photo-like JPEGs of
Stanford Cars' typical size (about 700×480) to a temporary folder.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .cli import _fail
from .config import OneLineParser
from .errors import UserError

CARS_LIKE_SIZE = (480, 700)  # height, width: around the median Stanford Cars image


def synthetic_jpegs(folder, count, seed=0):
    """``count`` smooth, textured colour JPEGs (quality 90) - decode cost like photos."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = CARS_LIKE_SIZE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for index in range(count):
        phase = rng.uniform(0, 2 * np.pi, 3)
        scale = rng.uniform(20, 120, 3)
        image = np.stack([np.sin(xx / scale[c] + phase[c]) * np.cos(yy / scale[(c + 1) % 3])
                          for c in range(3)], axis=-1)
        image = 127 + 100 * image + rng.normal(0, 12, image.shape)
        path = Path(folder) / f"{index:05d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def _rate(count, seconds):
    return count / max(seconds, 1e-9)


def _drain(dataset):
    count = 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count


def measure(part, size, batch_size, epochs, augmentation, seed=0):
    """Rows of (what, images, seconds, images/s)."""
    import tensorflow as tf

    from .pipeline import make_dataset, prepare, source_dataset, to_unit_range

    rows = []
    start = time.perf_counter()
    prepared = prepare(part, size)
    seconds = time.perf_counter() - start
    rows.append(("decode + resize (fills the cache)", len(prepared), seconds))

    stream = source_dataset(part, size).map(lambda index, image: image).batch(batch_size)
    draws = tf.data.Dataset.random(seed=seed)
    stream = tf.data.Dataset.zip(stream, draws).map(
        lambda images, draw: (augmentation(to_unit_range(images), tf.stack([draw, 0])), draw),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    count = _drain(stream)
    rows.append(("decode + resize + augment, streamed", count, time.perf_counter() - start))

    for name, training, rounds in (("from the cache + augment (training)", True, epochs),
                                   ("from the cache (evaluation)", False, epochs)):
        dataset = make_dataset(prepared.images, prepared.labels, batch_size, training, seed,
                               augmentation=augmentation)
        _drain(dataset.take(2))  # warm-up: tracing and thread pools
        start = time.perf_counter()
        count = sum(_drain(dataset) for _ in range(rounds))
        rows.append((name, count, time.perf_counter() - start))
    return [(name, count, seconds, _rate(count, seconds)) for name, count, seconds in rows]


def _parser():
    # One error line for a bad flag, under the name the other errors use.
    parser = OneLineParser(
        prog="throughput", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", help="a registered dataset (default: synthetic JPEGs)")
    parser.add_argument("--data-dir", help="its folder (default: data/<dataset>)")
    parser.add_argument("--limit", type=int, default=1000,
                        help="training images used from --dataset")
    parser.add_argument("--images", type=int, default=512, help="synthetic JPEGs to write")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="passes over the cache")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    for name in ("limit", "images", "image_size", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            return _fail("throughput", f"--{name.replace('_', '-')} must be positive", 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .augmentation import Augmentation
    from .datasets import load_dataset
    from .layouts import Part

    try:
        with tempfile.TemporaryDirectory() as folder:
            if args.dataset:
                part = load_dataset(args.dataset, args.data_dir).train
                part = part.take(np.arange(min(args.limit, len(part))))
                source = f"{len(part)} training images of {args.dataset}"
            else:
                paths = synthetic_jpegs(folder, args.images)
                part = Part(None, np.zeros(len(paths), np.int64), np.array(paths))
                source = f"{len(paths)} synthetic {CARS_LIKE_SIZE[1]}x{CARS_LIKE_SIZE[0]} JPEGs"
            rows = measure(part, args.image_size, args.batch_size, args.epochs, Augmentation())
    except UserError as error:
        return _fail("throughput", error, 1)
    cores = os.cpu_count()
    print(f"input pipeline at {args.image_size} px, batch {args.batch_size}, {source}, "
          f"{cores} CPU cores")
    print(f"| {'stage':<38} | {'images':>7} | {'seconds':>8} | {'images/s':>9} |")
    print(f"|{'-' * 40}|{'-' * 8}:|{'-' * 9}:|{'-' * 10}:|")
    for name, count, seconds, rate in rows:
        print(f"| {name:<38} | {count:>7} | {seconds:>8.2f} | {rate:>9.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"image_size": args.image_size, "batch_size": args.batch_size, "source": source,
             "cpu_cores": cores,
             "rows": [dict(zip(("stage", "images", "seconds", "images_per_second"), row))
                      for row in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
