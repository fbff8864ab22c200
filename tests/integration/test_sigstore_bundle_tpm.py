"""The Sigstore bundle from a real TPM: `aicert-agent run` on swtpm writes `aicert.sigstore.json`,
its envelope signed by the AK (ECC and RSA, as Azure's) through a hash ticket, and it verifies.

The AK is a restricted signing key: the TPM signs external data only with the ticket it gives when
it hashed the data itself (TPM2_Hash up to 1024 bytes, a hash sequence beyond) and the data does not
begin with TPM_GENERATED_VALUE. Both paths are exercised, and the TPM's own refusal is shown.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sigstore_models.bundle.v1 import Bundle
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.bundle import BUNDLE_MEDIA_TYPE, dsse_signature
from aicert.cli import main as aicert_main
from aicert.verify import Check, VerificationError, Verifier
from aicert_agent.tpm.client import MAX_DIGEST_BUFFER, Tpm
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration
TPM_GENERATED = b"\xffTCG"


@pytest.fixture(scope="module", params=["ecc", "rsa"])
def certified(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    server = Swtpm(tmp_path_factory.mktemp("swtpm"))
    server.start()
    request.addfinalizer(server.close)
    return make_run(tmp_path_factory.mktemp(f"run-{request.param}"), server.spec, key_type=request.param)


def bundle_of(run: CertifiedRun) -> bytes:
    return (run.certificate_path.parent / "aicert.sigstore.json").read_bytes()


def verify_signature(ak_pem: str, signature: bytes, data: bytes) -> None:
    key = load_pem_public_key(ak_pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))


def test_the_agent_writes_a_bundle_that_verifies(
    certified: CertifiedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bundle_of(certified)
    assert (certified.model / "aicert.sigstore.json").read_bytes() == data  # it travels with the weights
    parsed = Bundle.from_json(data)
    assert parsed.media_type == BUNDLE_MEDIA_TYPE and parsed.dsse_envelope is not None
    assert len(parsed.dsse_envelope.payload) > MAX_DIGEST_BUFFER  # signed through a hash sequence
    result = Verifier(certified.trust).verify(data, model_dir=certified.model)
    from_json = Verifier(certified.trust).verify(
        certified.certificate_path.read_bytes(), model_dir=certified.model
    )
    assert result.statement == from_json.statement
    assert result.passed == tuple(c for c in Check if c in (*from_json.passed, Check.ENVELOPE_SIGNATURE))
    argv = ["verify", str(certified.certificate_path.parent / "aicert.sigstore.json")]
    assert aicert_main([*argv, "--trust-bundle", str(certified.ca_dir / "dev-ca.pem")]) == 0
    assert "envelope-signature" in capsys.readouterr().out


def test_a_changed_payload_byte_from_the_tpm_bundle_fails_the_envelope(certified: CertifiedRun) -> None:
    bundle = json.loads(bundle_of(certified))
    payload = bytearray(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    at = payload.index(b'"tamper-suite"') + 1
    payload[at] ^= 0x20  # t -> T: still JSON
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    with pytest.raises(VerificationError) as caught:
        Verifier(certified.trust).verify(json.dumps(bundle))
    assert caught.value.check == Check.ENVELOPE_SIGNATURE


@pytest.mark.parametrize("size", [40, MAX_DIGEST_BUFFER, MAX_DIGEST_BUFFER + 1, 3 * MAX_DIGEST_BUFFER])
def test_the_ak_signs_external_data_of_any_length(certified: CertifiedRun, size: int) -> None:
    """TPM2_Hash up to 1024 bytes, a hash sequence beyond (its chunk edges included)."""
    data = (b"DSSEv1 " + bytes(range(256)) * (size // 256 + 1))[:size]
    with Tpm(certified.tpm_spec) as tpm:
        signature = tpm.sign_external(data)
        ak_pem = tpm.ak_public_pem()
        assert tpm.transient_handles() == []  # the hash sequence is gone
    verify_signature(ak_pem, dsse_signature(signature), data)


@pytest.mark.parametrize("size", [40, 3 * MAX_DIGEST_BUFFER])
def test_data_beginning_with_tpm_generated_value_is_never_signed(certified: CertifiedRun, size: int) -> None:
    data = (TPM_GENERATED + b"\x80\x18" * size)[:size]
    with Tpm(certified.tpm_spec) as tpm:
        with pytest.raises(ValueError, match="TPM_GENERATED_VALUE"):
            tpm.sign_external(data)
        # and the TPM itself refuses, were the guard gone: it gives no ticket for such data
        from tpm2_pytss import TSS2_Exception

        digest, ticket = tpm._hash_with_ticket(data)
        assert int(ticket.digest.size) == 0  # a NULL ticket
        with tpm.tr_from_handle(0x81000003) as ak:
            public, _, _ = tpm.esapi.read_public(ak)
            with pytest.raises(TSS2_Exception):
                tpm.esapi.sign(ak, digest, tpm._quote_scheme(public.publicArea), ticket)
        assert tpm.transient_handles() == []


def test_the_bundle_sits_beside_the_certificate_not_in_the_output_root(
    certified: CertifiedRun, tmp_path: Path
) -> None:
    """The output root leaves the bundle out as it does the certificate: --model still verifies."""
    result = Verifier(certified.trust).verify(
        certified.certificate_path.read_bytes(), model_dir=certified.model
    )
    assert Check.MODEL_FILES in result.passed
