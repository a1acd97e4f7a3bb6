#!/usr/bin/env python
"""Paper-style tables from trained runs; ``python evaluate.py --help``.

    python evaluate.py --baseline models/cars-none-* --method models/cars-zero-*
"""

import sys

if __name__ == "__main__":
    try:
        from playing_distraction.cli import evaluate_main

        code = evaluate_main()
    except (KeyboardInterrupt, Exception) as error:
        # An error is a Ctrl-C too when the interrupt caused it: one that hit a compiled
        # module's initialisation ("ImportError: initialization failed").
        from playing_distraction.errors import caused_by_ctrl_c

        if not caused_by_ctrl_c(error):
            raise
        # Ctrl-C while Python imports the package (or anywhere evaluate_main lets it
        # through): one line and the shell's 128 + SIGINT, never a traceback.
        print("evaluate.py: error: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
