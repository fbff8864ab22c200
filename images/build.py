#!/usr/bin/env python3
"""`make images`: the operator and agent images, built by the package images/aicert_images (its
cli module is the command line; docs/images.md).

    python images/build.py                      # both images; prints name@sha256:<manifest digest>
    python images/build.py images/agent.Dockerfile --out DIR
    python images/build.py lock                 # re-resolve images/*.requirements.txt (pip-compile)
"""

import sys

from aicert_images.cli import main

if __name__ == "__main__":
    sys.exit(main())
