"""The digits training job as an image in the local image store (the cluster demo and e2e tests).

The image holds train.py; it runs with the Python environment the node double provides at
/opt/venv (this project's venv, with numpy and scikit-learn). Its layer is built reproducibly,
so its digest, pinned in examples/training.yaml, is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPOSITORY = "registry.local/aicert/digits-train"
HERE = Path(__file__).resolve().parent


def build_training_image(images: Any) -> str:
    return str(
        images.build(
            REPOSITORY,
            files={"train.py": (HERE / "train.py").read_bytes()},
            entrypoint=["/opt/venv/bin/python", "/app/train.py"],
            cmd=None,
            env={"PYTHONDONTWRITEBYTECODE": "1"},
            workdir="/app",
        )
    )
