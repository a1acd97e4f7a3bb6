#!/usr/bin/env python
"""Train a baseline or a "Playing to distraction" model; ``python train.py --help``.

With no arguments: 0-occlusion distraction training of the small CNN on the embedded
Fashion-MNIST subset. Real data: ``python train.py --dataset NAME --occlusion zero``.
"""

import sys

from playing_distraction.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
