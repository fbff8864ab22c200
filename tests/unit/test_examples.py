"""examples/training.yaml pins the digest the demo's image build really produces."""

from __future__ import annotations

from pathlib import Path

import yaml
from examples.digits.image import build_training_image

from aicert_localcluster.images import ImageStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_training_yaml_names_the_built_image(tmp_path: Path) -> None:
    spec = yaml.safe_load((EXAMPLES / "training.yaml").read_text())["spec"]
    assert spec["image"] == build_training_image(ImageStore(tmp_path))
