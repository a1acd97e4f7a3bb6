"""Rebuild the embedded dataset data/fashion-mnist-mini from the full Fashion-MNIST.

    python data/make_fashion_mnist_mini.py /usr/share/datasets/fashion-mnist

(the Debian package dataset-fashion-mnist installs the official files there).
Draws 600 training and 100 test images of every class with a fixed seed, keeps
them in file order, and writes them in the official IDX layout.
"""

import sys
from pathlib import Path

from playing_distraction.layouts import load_fashion_mnist, write_fashion_mnist
from playing_distraction.splits import balanced_subset

SEED = 20201228  # the paper's arXiv submission date; any fixed value would do
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100


def main(source, target=Path(__file__).resolve().parent / "fashion-mnist-mini"):
    train, test = load_fashion_mnist(source)
    write_fashion_mnist(
        target,
        balanced_subset(train, TRAIN_PER_CLASS, SEED),
        balanced_subset(test, TEST_PER_CLASS, SEED + 1),
    )
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
