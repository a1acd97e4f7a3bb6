#!/usr/bin/env python
"""Train a baseline or a "Playing to distraction" model; ``python train.py --help``.

With no arguments: 0-occlusion distraction training of the small CNN on the embedded
Fashion-MNIST subset. Real data: ``python train.py --dataset NAME --occlusion zero``.
"""

import sys

if __name__ == "__main__":
    try:
        from playing_distraction.cli import train_main

        code = train_main()
    except (KeyboardInterrupt, Exception) as error:
        # An error is a Ctrl-C too when the interrupt caused it: one that hit a compiled
        # module's initialisation ("ImportError: initialization failed").
        from playing_distraction.errors import caused_by_ctrl_c

        if not caused_by_ctrl_c(error):
            raise
        # Ctrl-C while Python imports the package (or anywhere train_main lets it
        # through): one line and the shell's 128 + SIGINT, never a traceback.
        print("train.py: error: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
