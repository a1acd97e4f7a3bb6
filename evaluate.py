#!/usr/bin/env python
"""Paper-style tables from trained runs; ``python evaluate.py --help``.

    python evaluate.py --baseline models/cars-none-* --method models/cars-zero-*
"""

import sys

from playing_distraction.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
