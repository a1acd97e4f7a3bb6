#!/usr/bin/env python
"""Paper-style tables from trained runs; ``python evaluate.py --help``.

    python evaluate.py --baseline models/cars-none-* --method models/cars-zero-*
"""

import sys

if __name__ == "__main__":
    try:
        from playing_distraction.cli import evaluate_main

        code = evaluate_main()
    except KeyboardInterrupt:
        # Ctrl-C while Python imports the package (or anywhere evaluate_main lets it
        # through): one line and the shell's 128 + SIGINT, never a traceback.
        print("evaluate.py: error: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
