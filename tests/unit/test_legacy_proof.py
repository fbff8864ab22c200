"""The real AICert proof in tests/assets/azure verifies, and every tampering fails the right check."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from tests.pki import issue

from aicert.cli import main
from aicert.trust import TrustStore
from aicert.trust.pem import load_pem_bundle
from aicert.verify import Check, MalformedError, Policy, VerificationError, Verifier

AT = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
Proof = dict[str, Any]


@pytest.fixture
def proof(azure_dir: Path) -> Proof:
    data: Proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    return data


@pytest.fixture
def root_only(azure_dir: Path) -> TrustStore:
    return TrustStore.from_pem_file(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")


def verify(proof: Proof, trust: TrustStore, **kwargs: Any) -> Any:
    return Verifier(trust, kwargs.pop("policy", None)).verify(
        json.dumps(proof), at=kwargs.pop("at", AT), **kwargs
    )


def flip(box: dict[str, str], offset: int) -> None:
    data = bytearray(base64.b64decode(box["base64"]))
    data[offset] ^= 0x01
    box["base64"] = base64.b64encode(bytes(data)).decode()


def test_sample_verifies_at_a_time_its_certificates_were_valid(proof: Proof, root_only: TrustStore) -> None:
    result = verify(proof, root_only)
    assert result.assurance == "legacy"
    assert result.format == "aicert-legacy"
    assert "TrustedVM.Azure" in result.ak_subject
    assert Check.EVENT_REPLAY in result.passed and Check.QUOTE_SIGNATURE in result.passed
    assert Check.QUOTE_BINDING not in result.passed  # old proofs have no statement digest to check
    assert any("PCR 16" in note for note in result.notes)


def test_sample_fails_today_because_the_ak_certificate_expired(proof: Proof, root_only: TrustStore) -> None:
    with pytest.raises(VerificationError) as err:
        verify(proof, root_only, at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
    assert err.value.check is Check.AK_CHAIN
    assert "AK certificate expired on 2025-10-30" in err.value.reason


def test_before_the_ak_certificate_was_issued(proof: Proof, root_only: TrustStore) -> None:
    with pytest.raises(VerificationError, match="not valid before 2024-04-20") as err:
        verify(proof, root_only, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert err.value.check is Check.AK_CHAIN


def _edit_event(p: Proof) -> None:
    p["event_log"][5] = p["event_log"][5].replace("8739c76e", "8739c76f")


def _drop_event(p: Proof) -> None:
    del p["event_log"][2]


def _swap_events(p: Proof) -> None:
    log = p["event_log"]
    log[1], log[2] = log[2], log[1]


def _flip_attest(p: Proof) -> None:
    flip(p["remote_attestation"]["quote"]["message"], 40)


def _flip_signature(p: Proof) -> None:
    flip(p["remote_attestation"]["quote"]["signature"], 100)


def _change_pcr_value(p: Proof) -> None:
    # PCR 0's first byte in the tpm2-tools file: selection (132) + count (4) + list count (4) + size (2)
    flip(p["remote_attestation"]["quote"]["pcr"], 142)


def _drop_intermediate(p: Proof) -> None:
    del p["remote_attestation"]["cert_chain"][1]


TAMPERS: list[tuple[str, Callable[[Proof], None], Check, str]] = [
    ("event content", _edit_event, Check.EVENT_REPLAY, "replaying 6 entries gives PCR 16"),
    ("event dropped", _drop_event, Check.EVENT_REPLAY, "replaying 5 entries"),
    ("events reordered", _swap_events, Check.EVENT_REPLAY, "the quote says 155cde9b"),
    ("attest byte", _flip_attest, Check.QUOTE_SIGNATURE, "does not verify with the AK"),
    ("signature byte", _flip_signature, Check.QUOTE_SIGNATURE, "does not verify with the AK"),
    ("pcr value", _change_pcr_value, Check.PCR_DIGEST, "do not hash to the quote's pcrDigest"),
    ("intermediate missing", _drop_intermediate, Check.AK_CHAIN, "no path from the AK certificate"),
]


@pytest.mark.parametrize(("what", "tamper", "check", "reason"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampered_sample_fails_the_right_check(
    proof: Proof, root_only: TrustStore, what: str, tamper: Callable[[Proof], None], check: Check, reason: str
) -> None:
    bad = copy.deepcopy(proof)
    tamper(bad)
    with pytest.raises(VerificationError) as err:
        verify(bad, root_only)
    assert err.value.check is check
    assert reason in err.value.reason


def test_intermediate_may_come_from_the_trust_bundle(proof: Proof, azure_dir: Path, tmp_path: Path) -> None:
    _drop_intermediate(proof)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        (azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes()
        + (azure_dir / "global-virtual-tpm-ca-01.crt").read_bytes()
    )
    assert verify(proof, TrustStore.from_pem_file(bundle)).assurance == "legacy"


def test_chain_in_any_order(proof: Proof, root_only: TrustStore) -> None:
    proof["remote_attestation"]["cert_chain"].reverse()
    assert verify(proof, root_only).assurance == "legacy"


def test_another_root_is_not_trusted(proof: Proof) -> None:
    other = issue("Some Other Root")
    store = TrustStore.from_certificates([other.cert], "other", dev_level=False)
    with pytest.raises(VerificationError, match="to a trusted root") as err:
        verify(proof, store)
    assert err.value.check is Check.AK_CHAIN


def test_a_non_azure_root_vouches_for_dev_only(proof: Proof, azure_dir: Path) -> None:
    root = TrustStore.from_pem_file(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    assert root.anchors[0].max_assurance == "vtpm"
    assert (
        TrustStore.from_certificates([issue("x").cert], "x", dev_level=False).anchors[0].max_assurance
        == "dev"
    )


@pytest.mark.parametrize("minimum", ["dev", "vtpm", "cvm"])
def test_policy_minimum_above_legacy_refuses_old_proofs(
    proof: Proof, root_only: TrustStore, minimum: Literal["dev", "vtpm", "cvm"]
) -> None:
    # an old proof chains to the real Azure root, yet is not bound to a statement: not vtpm, not even dev
    with pytest.raises(VerificationError) as err:
        verify(proof, root_only, policy=Policy(minAssurance=minimum))
    assert err.value.check is Check.POLICY_ASSURANCE
    assert f"the run has assurance legacy; the policy requires {minimum}" in err.value.reason


def test_policy_without_minimum_or_with_legacy_accepts_old_proofs(
    proof: Proof, root_only: TrustStore
) -> None:
    assert verify(proof, root_only, policy=Policy()).assurance == "legacy"
    assert verify(proof, root_only, policy=Policy(minAssurance="legacy")).assurance == "legacy"


def test_old_proof_is_legacy_whatever_root_it_chains_to(proof: Proof, azure_dir: Path) -> None:
    # the same root, but installed as a bundle that vouches for dev only: still legacy, below dev
    pem = (azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes()
    store = TrustStore.from_certificates(load_pem_bundle(pem), "bundle", dev_level=True)
    assert verify(proof, store).assurance == "legacy"


def test_policy_allowed_images(proof: Proof, root_only: TrustStore) -> None:
    allowed = ["sha256:2f1361151ba80d5d0493463b63330c2a6f00e8d92e449c7d6a6febb9a03dafc1"]
    with pytest.raises(VerificationError, match="sha256:dcc5b210") as err:
        verify(proof, root_only, policy=Policy(allowedImages=allowed))
    assert err.value.check is Check.POLICY_IMAGE


def test_policy_boot_pcrs(proof: Proof, root_only: TrustStore) -> None:
    pinned = {"0": "4847edbe7ffb070581e1da6d4f03f8019fd46b86cf97f2079cc400c62a662e0a"}
    assert verify(proof, root_only, policy=Policy(bootPcrs=pinned)).assurance == "legacy"
    with pytest.raises(VerificationError, match="PCR 4 is 9ec3a5") as err:
        verify(proof, root_only, policy=Policy(bootPcrs={"4": "00" * 32}))
    assert err.value.check is Check.POLICY_BOOT_PCRS


def test_model_file_compared_with_certified_output(
    proof: Proof, root_only: TrustStore, tmp_path: Path
) -> None:
    (tmp_path / "finetuned-model.zip").write_bytes(b"not the model")
    with pytest.raises(VerificationError, match="the proof certifies 8739c76e") as err:
        verify(proof, root_only, model_dir=tmp_path)
    assert err.value.check is Check.MODEL_FILES


def test_model_dir_with_an_extra_file_is_refused_unless_ignored(
    proof: Proof, root_only: TrustStore, tmp_path: Path
) -> None:
    (tmp_path / "finetuned-model.zip").write_bytes(b"not the model")
    (tmp_path / "README.md").write_text("notes")
    with pytest.raises(VerificationError) as err:
        verify(proof, root_only, model_dir=tmp_path)
    assert err.value.check is Check.MODEL_FILES and "extra: README.md" in err.value.reason
    with pytest.raises(VerificationError) as err:
        verify(proof, root_only, model_dir=tmp_path, ignore=["README.md"])
    assert "extra:" not in err.value.reason and "the proof certifies 8739c76e" in err.value.reason


def test_a_pattern_never_hides_the_certified_output(
    proof: Proof, root_only: TrustStore, tmp_path: Path
) -> None:
    (tmp_path / "finetuned-model.zip").write_bytes(b"not the model")
    with pytest.raises(VerificationError, match="the proof certifies 8739c76e") as err:
        verify(proof, root_only, model_dir=tmp_path, ignore=["*.zip"])
    assert err.value.check is Check.MODEL_FILES


def test_a_symlinked_output_file_is_refused_and_named(
    proof: Proof, root_only: TrustStore, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.zip").write_bytes(b"whatever")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "finetuned-model.zip").symlink_to(tmp_path / "elsewhere" / "model.zip")
    with pytest.raises(VerificationError) as err:
        verify(proof, root_only, model_dir=tmp_path / "model")
    assert err.value.check is Check.MODEL_FILES
    assert "finetuned-model.zip: is a symlink" in err.value.reason


def test_malformed_fields_are_named(proof: Proof, root_only: TrustStore) -> None:
    proof["remote_attestation"]["quote"]["signature"]["base64"] = "***"
    with pytest.raises(MalformedError) as err:
        verify(proof, root_only)
    assert err.value.field == "remote_attestation.quote.signature.base64"
    assert "base64" in err.value.reason


def test_event_that_is_not_json_is_named(proof: Proof, root_only: TrustStore) -> None:
    proof["event_log"][3] = "{not json"
    with pytest.raises(MalformedError) as err:
        verify(proof, root_only)
    assert err.value.field == "event_log[3]"


# --- the command line: exit codes 0, 1, 2 ---------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes(
    proof: Proof,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = str(azure_dir / "aicert-proof-sample.json")
    bundle = ["--trust-bundle", str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")]
    code, out, _ = run_cli(["verify", sample, *bundle, "--at", "2024-06-01T00:00:00Z"], capsys)
    assert (code, out.startswith("VERIFIED  assurance: legacy")) == (0, True)
    code, _, err = run_cli(["verify", sample, *bundle], capsys)
    assert code == 1 and "check ak-chain failed: the AK certificate expired on 2025-10-30" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    code, _, err = run_cli(["verify", str(broken), *bundle], capsys)
    assert code == 2 and "not JSON" in err
    code, _, err = run_cli(["verify", sample, *bundle, "--at", "yesterday"], capsys)
    assert code == 2 and "--at" in err
    monkeypatch.setenv("AICERT_TRUST_DIR", str(tmp_path / "empty"))
    code, _, err = run_cli(["verify", sample, "--at", "2024-06-01T00:00:00Z"], capsys)
    assert code == 2 and "aicert trust install azure" in err


def test_cli_policy_minimum_vtpm_refuses_an_old_proof(
    azure_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = str(azure_dir / "aicert-proof-sample.json")
    bundle = ["--trust-bundle", str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")]
    policy = tmp_path / "policy.json"
    policy.write_text('{"minAssurance": "vtpm"}')
    at = ["--at", "2024-06-01T00:00:00Z"]
    code, _, err = run_cli(["verify", sample, *bundle, *at, "--policy", str(policy)], capsys)
    assert code == 1 and "check policy-assurance failed: the run has assurance legacy" in err


def test_cli_json_output(azure_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(azure_dir / "aicert-proof-sample.json")
    bundle = ["--trust-bundle", str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")]
    code, out, _ = run_cli(["verify", sample, *bundle, "--json", "--at", "2024-06-01T00:00:00Z"], capsys)
    result = json.loads(out)
    assert code == 0 and result["verified"] is True and result["assurance"] == "legacy"
    code, out, _ = run_cli(["verify", sample, *bundle, "--json"], capsys)
    assert code == 1 and json.loads(out)["check"] == "ak-chain"
