"""`model.sig` from a real TPM: the stock `model_signing` (PyPI) verifies the weights certified by
`aicert-agent run` on swtpm, as a user runs it (`model_signing verify certificate`, against the dev
root), and refuses a changed weight file. With an RSA AK (Azure's) the stock tool refuses the
signature whatever it says: its certificate method handles EC keys only (docs/verification.md)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.bundle import IN_TOTO_PAYLOAD_TYPE, pae
from aicert.verify.envelope import dsse_signature_problem
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["ecc", "rsa"])
def certified(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    server = Swtpm(tmp_path_factory.mktemp("swtpm"))
    server.start()
    request.addfinalizer(server.close)
    return make_run(tmp_path_factory.mktemp(f"run-{request.param}"), server.spec, key_type=request.param)


def model_signing_verify(run: CertifiedRun) -> subprocess.CompletedProcess[str]:
    """What a user runs: the stock CLI, certificate method, the dev CA as the root of trust."""
    argv = [sys.executable, "-m", "model_signing", "verify", "certificate", str(run.model)]
    argv += [
        "--signature",
        str(run.model / "model.sig"),
        "--certificate_chain",
        str(run.ca_dir / "dev-ca.pem"),
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def rsa_ak(run: CertifiedRun) -> bool:
    return isinstance(
        load_pem_public_key(run.certificate["evidence"]["ak"]["public"].encode()), rsa.RSAPublicKey
    )


def test_model_sig_is_the_aks_over_the_certified_files(certified: CertifiedRun) -> None:
    bundle = json.loads((certified.model / "model.sig").read_text())
    envelope = bundle["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    manifest = json.loads((certified.model / "manifest.json").read_text())
    assert {(r["name"], r["digest"]) for r in statement["predicate"]["resources"]} == {
        (f["path"], f["sha256"]) for f in manifest["files"]
    }
    ak = load_pem_public_key(certified.certificate["evidence"]["ak"]["public"].encode())
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    assert dsse_signature_problem(ak, signature, pae(IN_TOTO_PAYLOAD_TYPE, payload)) is None


def test_the_stock_model_signing_verifies_the_weights_and_refuses_a_changed_file(
    certified: CertifiedRun,
) -> None:
    done = model_signing_verify(certified)
    if rsa_ak(certified):
        # model_signing 1.1's certificate verifier takes the signer's key for an EC key (key.curve)
        assert done.returncode == 1 and "no attribute 'curve'" in done.stderr, done
        return
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done
    weights = certified.model / "weights.bin"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = model_signing_verify(certified)
        assert refused.returncode == 1 and "Signature mismatch" in refused.stderr, refused
        assert "weights.bin" in refused.stderr
    finally:
        weights.write_bytes(original)
    assert model_signing_verify(certified).returncode == 0
