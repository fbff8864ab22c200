"""How the image builder reports: the error that stops a build, and progress lines on stderr."""

from __future__ import annotations

import sys


class ImageBuildError(RuntimeError):
    """The image cannot be built; the message says why and what to do."""


def note(message: str) -> None:
    """A line for whoever runs the build, on stderr."""
    print(f"images: {message}", file=sys.stderr, flush=True)
