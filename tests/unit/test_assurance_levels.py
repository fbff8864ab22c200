"""`legacy` is the verifier's level for old AICert proofs: ranked lowest, and never a level a
training, a node, a certificate or the CRD may name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import ValidationError

from aicert.certificate import ASSURANCE_ORDER, Assurance, Evidence, FormatError, VerifiedAssurance, convert
from aicert.verify import MalformedError, Policy
from aicert_contract.pod import allowed_levels
from aicert_contract.training import TrainingSpec

CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
}


def test_legacy_ranks_below_every_level_a_certificate_can_claim() -> None:
    ranked = sorted(ASSURANCE_ORDER, key=ASSURANCE_ORDER.__getitem__)
    assert ranked == ["legacy", "dev", "vtpm", "cvm"]
    assert set(ASSURANCE_ORDER) == set(get_args(VerifiedAssurance))
    assert set(get_args(Assurance)) == {"dev", "vtpm", "cvm"}


def test_a_training_may_not_ask_for_legacy() -> None:
    assert TrainingSpec.model_validate({**SPEC, "minAssurance": "dev"}).minAssurance == "dev"
    with pytest.raises(ValidationError, match="minAssurance"):
        TrainingSpec.model_validate({**SPEC, "minAssurance": "legacy"})


@pytest.mark.parametrize("minimum", get_args(Assurance))
def test_no_pod_is_placed_on_a_legacy_node(minimum: str) -> None:
    assert "legacy" not in allowed_levels(minimum)
    assert minimum in allowed_levels(minimum)


def test_a_certificate_may_not_claim_legacy() -> None:
    evidence = {"type": "tpm2-quote", "pcrBank": "sha256", "pcr": 23, "assurance": "dev"}
    with pytest.raises(FormatError) as err:  # accepted up to the quote, which this one lacks
        convert(evidence, Evidence)
    assert err.value.field == "quote"
    with pytest.raises(FormatError) as err:
        convert({**evidence, "assurance": "legacy"}, Evidence)
    assert err.value.field == "assurance"


def test_the_crd_levels_are_the_specs() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert schema["spec"]["properties"]["minAssurance"]["enum"] == ["dev", "vtpm", "cvm"]
    assert schema["status"]["properties"]["assurance"]["enum"] == ["dev", "vtpm", "cvm"]


def test_a_policy_file_may_name_legacy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"minAssurance": "legacy"}')
    assert Policy.from_file(policy).minAssurance == "legacy"
    assert Policy().minAssurance == "legacy"  # no minimum: old proofs verify, at level legacy
    policy.write_text('{"minAssurance": "ancient"}')
    with pytest.raises(MalformedError) as err:
        Policy.from_file(policy)
    assert err.value.field == "policy.minAssurance"
