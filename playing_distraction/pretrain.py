"""Rebuild the weights shipped for ``small_cnn`` (``--weights fashion-mnist-source``).

    apt-get install dataset-fashion-mnist
    python -m playing_distraction.pretrain /usr/share/datasets/fashion-mnist

The toolkit's stand-in for "ImageNet-pretrained" on a machine without a network: the
small CNN trained, as an ordinary ``train.py`` run, on the *source* classes of the full
Fashion-MNIST training set (trousers, footwear, bags: ``SOURCE``), so that the embedded
demo can fine-tune on the *target* classes (the five upper-body garments, easily
confused: ``TARGET``), as the papers fine-tune on a fine-grained set. No image of a
target class and no test image is seen here. The run's ``backbone.weights.h5`` is
copied into ``playing_distraction/weights/``; beside it ``<name>.json`` records the
recipe (the train.py command), the run's results, the versions and the SHA-256.

TensorFlow's deterministic ops are switched on, so the same versions on the same
kind of CPU rebuild the same bytes; other versions or CPUs may round differently.
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from .backbones import SHIPPED_DIR, file_sha256, get_backbone

NAME = "fashion-mnist-source"
BACKBONE = "small_cnn"
SOURCE = ("Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot")
TARGET = ("T-shirt/top", "Pullover", "Dress", "Coat", "Shirt")
# The pretraining recipe: plain training from random weights with the papers'
# augmentation and early stopping; a from-scratch learning rate (1e-3, Adam's
# default) and batch 64, as pretraining differs from the fine-tuning the papers
# describe. EPOCHS is a ceiling; early stopping keeps the best epoch's weights.
EPOCHS = 15
RECIPE = ("--dataset", "fashion-mnist", "--classes", *SOURCE, "--backbone", BACKBONE,
          "--weights", "none", "--method", "distraction", "--occlusion", "none",
          "--optimizer", "adam", "--learning-rate", "1e-3", "--batch-size", "64",
          "--seed", "0")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m playing_distraction.pretrain",
        description="Rebuild the shipped small_cnn weights from the full Fashion-MNIST.")
    parser.add_argument("data_dir", nargs="?", default="/usr/share/datasets/fashion-mnist",
                        help="the four Fashion-MNIST IDX files (default: where Debian's "
                        "dataset-fashion-mnist installs them)")
    parser.add_argument("--out-dir", default="models",
                        help="where the pretraining run folder goes (default: models)")
    parser.add_argument("--weights-dir", default=str(SHIPPED_DIR),
                        help="where the weights and their record go (default: the package's)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"maximum epochs (default: the recipe's {EPOCHS})")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from .cli import train_main

    flags = [*RECIPE, "--epochs", str(args.epochs), "--data-dir", args.data_dir,
             "--out-dir", args.out_dir, "--run-name", f"{BACKBONE}-{NAME}", "--resume"]
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    code = train_main(flags)
    if code:
        return code
    run_dir = Path(args.out_dir) / f"{BACKBONE}-{NAME}"
    return write_shipped(run_dir, Path(args.weights_dir), flags)


def write_shipped(run_dir, weights_dir, flags):
    """Copy the run's backbone into ``weights_dir`` and record how it was made."""
    import keras
    import numpy as np
    import tensorflow as tf

    spec = get_backbone(BACKBONE)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{spec.name}-{NAME}.weights.h5"
    previous = file_sha256(target) if target.is_file() else None
    shutil.copyfile(run_dir / "backbone.weights.h5", target)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    digest = file_sha256(target)
    record = {
        "name": NAME,
        "backbone": spec.name,
        "file": target.name,
        "sha256": digest,
        "bytes": target.stat().st_size,
        "use": f"train.py --backbone {spec.name} --weights {NAME} (the default of {spec.name})",
        "data": "the training set of Fashion-MNIST (Debian package dataset-fashion-mnist), "
                "source classes only, 25 % of it held out for validation; no test image "
                "and no image of the held-out target classes",
        "source_classes": list(SOURCE),
        "held_out_classes": list(TARGET),
        "command": "python train.py " + shlex.join(flags),
        "recipe": {key: config[key] for key in (
            "optimizer", "learning_rate", "beta_1", "beta_2", "epsilon", "batch_size",
            "epochs", "patience", "augment", "flip", "rotation", "channel_shift",
            "brightness", "validation_fraction", "seed", "image_size")},
        "results": {key: metrics[key] for key in (
            "best_epoch", "epochs_run", "best_val_accuracy", "test_accuracy",
            "train_images", "validation_images", "test_images", "train_seconds")},
        "deterministic_ops": True,
        "versions": {"python": sys.version.split()[0], "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
        "built": datetime.date.today().isoformat(),
    }
    record_path = weights_dir / f"{spec.name}-{NAME}.json"
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {target} ({record['bytes']:,} bytes, SHA-256 {digest}) and {record_path}")
    print(f"source-class test accuracy {metrics['test_accuracy']:.4f}, best epoch "
          f"{metrics['best_epoch']} of {metrics['epochs_run']}, {metrics['train_seconds']:.0f} s")
    if previous is not None:
        print("the same bytes as before" if previous == digest else
              f"other bytes than before (SHA-256 was {previous})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
