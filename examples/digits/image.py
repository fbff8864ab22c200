"""The digits training job as an image: train.py on top of the agent image, whose Debian Python
runs it (train.py needs only the standard library).

The image is built FROM the agent image of the checkout, so its digest changes with every release
of the agent: examples/training.yaml shows the form, and the demo applies it with the digest it
built (`with_image`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

REPOSITORY = "registry.local/aicert/digits-train"
HERE = Path(__file__).resolve().parent
FILES = {"train.py": (HERE / "train.py").read_bytes()}
ENTRYPOINT = ["/opt/venv/bin/python", "/app/train.py"]
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


def with_image(training: dict[str, Any], image: str) -> dict[str, Any]:
    """The CertifiedTraining `training` with spec.image replaced by `image` (repository@sha256:...)."""
    if not image.startswith(f"{REPOSITORY}@sha256:"):
        raise ValueError(f"{image} is not an image of {REPOSITORY} pinned by digest")
    changed = copy.deepcopy(training)
    changed["spec"]["image"] = image
    return changed
