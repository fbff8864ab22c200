"""examples/training.yaml is the run the demo applies: the digits image by digest, which the demo
replaces with the one it builds."""

from pathlib import Path

import pytest
import yaml
from examples.digits.image import REPOSITORY, with_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_training_yaml_names_the_digits_image_by_digest() -> None:
    spec = yaml.safe_load((EXAMPLES / "training.yaml").read_text())["spec"]
    repository, _, digest = spec["image"].partition("@")
    assert repository == REPOSITORY and digest.startswith("sha256:") and len(digest) == 71


def test_the_demo_applies_it_with_the_image_it_built() -> None:
    training = yaml.safe_load((EXAMPLES / "training.yaml").read_text())
    built = f"{REPOSITORY}@sha256:{'ab' * 32}"
    applied = with_image(training, built)
    assert applied["spec"]["image"] == built
    assert {k: v for k, v in applied["spec"].items() if k != "image"} == {
        k: v for k, v in training["spec"].items() if k != "image"
    }
    with pytest.raises(ValueError, match="not an image of"):
        with_image(training, "registry.local/other@sha256:" + "ab" * 32)


def test_the_finetune_reads_the_first_runs_output_claim() -> None:
    """examples/finetune.yaml's input `base` is the claim the first run's output got (attempt 1)."""
    first = yaml.safe_load((EXAMPLES / "training.yaml").read_text())
    tuned = yaml.safe_load((EXAMPLES / "finetune.yaml").read_text())
    claims = {i["name"]: i["persistentVolumeClaim"]["claimName"] for i in tuned["spec"]["inputs"]}
    assert claims["base"] == f"{first['metadata']['name']}-1-output"
    assert tuned["spec"]["image"].partition("@")[0] == REPOSITORY
    assert with_image(tuned, f"{REPOSITORY}@sha256:{'cd' * 32}")["spec"]["args"][2:4] == ["--base", "/base"]
