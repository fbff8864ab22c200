"""Found by fuzzing: damaged certificates in a certificate's AK chain or an old proof's
`cert_chain` that crashed `aicert verify` with a traceback instead of exit 2 naming them.

`cryptography` decodes a certificate's names and extensions only when they are first read, so a
certificate that loaded could still raise deep in the chain check: an AK certificate whose issuer
name is damaged (`ValueError: error parsing asn1 value`, while looking for the leaf); in the real
old proof, a copy of the Azure intermediate (same key, so it still verifies the AK certificate)
with a duplicated extension (`DuplicateExtension`) or a name attribute of a type its OID does not
allow (`TypeError`), raised once the path reached it. And a certificate whose version is neither
1 nor 3 raised `InvalidVersion`, which is not a ValueError, while it was loaded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.soft_tpm import Run, certified_run

from aicert.cli import main as aicert_main
from aicert.trust.pem import load_any

KEY_USAGE_OID = bytes.fromhex("0603551d0f")  # id-ce-keyUsage
BASIC_CONSTRAINTS_OID = bytes.fromhex("0603551d13")  # id-ce-basicConstraints


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


def verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).splitlines()


def test_an_ak_certificate_with_an_unreadable_issuer_is_unusable_input(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    der = bytearray(run.ak_certificate.public_bytes(Encoding.DER))
    at = der.index(b"hostile-input test CA")  # the issuer's common name comes first
    der[at - 2] = 0x02  # its UTF8String tag, now an INTEGER: the name no longer decodes
    damaged = x509.load_der_x509_certificate(bytes(der))  # loads: the issuer is decoded later
    certificate = json.loads(json.dumps(run.certificate))
    certificate["evidence"]["ak"]["certificateChain"] = [damaged.public_bytes(Encoding.PEM).decode()]
    code, lines = verify(run.verify_argv(run.write(tmp_path / "certificate.json", certificate)), capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "aicert verify: unusable input: evidence.ak.certificateChain[0]: unreadable certificate: "
        "error parsing asn1 value"
    )


def test_an_old_proofs_intermediate_with_a_duplicated_extension_is_unusable_input(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = json.loads(json.dumps(run.legacy_proof))
    chain = proof["remote_attestation"]["cert_chain"]
    intermediate = load_any(base64.b64decode(chain[1]["base64"]))
    assert intermediate.subject.rfc4514_string() == "CN=Global Virtual TPM CA - 01"
    der = intermediate.public_bytes(Encoding.DER).replace(KEY_USAGE_OID, BASIC_CONSTRAINTS_OID, 1)
    chain[1] = {"base64": base64.b64encode(der).decode()}  # same key: it still verifies the AK certificate
    code, lines = verify(run.legacy_argv(run.write(tmp_path / "proof.json", proof)), capsys)
    assert (code, lines) == (
        2,
        [
            "aicert verify: unusable input: remote_attestation.cert_chain[1]: unreadable certificate: "
            "Duplicate 2.5.29.19 extension found"
        ],
    )


def test_an_old_proofs_intermediate_with_a_mistyped_name_attribute_is_unusable_input(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = json.loads(json.dumps(run.legacy_proof))
    chain = proof["remote_attestation"]["cert_chain"]
    der = load_any(base64.b64decode(chain[1]["base64"])).public_bytes(Encoding.DER)
    country_us = bytes.fromhex("06035504061302") + b"US"  # countryName, a PrintableString
    der = der.replace(country_us, bytes.fromhex("06035504060302") + b"US", 1)  # now a BIT STRING
    chain[1] = {"base64": base64.b64encode(der).decode()}
    code, lines = verify(run.legacy_argv(run.write(tmp_path / "proof.json", proof)), capsys)
    assert (code, lines) == (
        2,
        [
            "aicert verify: unusable input: remote_attestation.cert_chain[1]: unreadable certificate: "
            "oid must be X500_UNIQUE_IDENTIFIER for BitString type."
        ],
    )


def with_version(certificate: x509.Certificate, version: int) -> bytes:
    der = certificate.public_bytes(Encoding.DER)
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert v3 in der
    return der.replace(v3, bytes.fromhex("a0030201") + bytes([version]), 1)


def test_an_ak_certificate_of_an_unknown_version_is_unusable_input(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    der = with_version(run.ak_certificate, 5)
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der).decode() + "-----END CERTIFICATE-----\n"
    certificate = json.loads(json.dumps(run.certificate))
    certificate["evidence"]["ak"]["certificateChain"] = [pem]
    code, lines = verify(run.verify_argv(run.write(tmp_path / "certificate.json", certificate)), capsys)
    assert (code, lines) == (
        2,
        [
            "aicert verify: unusable input: evidence.ak.certificateChain[0]: unreadable certificate: "
            "5 is not a valid X509 version"
        ],
    )


def test_an_old_proofs_certificate_of_an_unknown_version_is_unusable_input(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = json.loads(json.dumps(run.legacy_proof))
    chain = proof["remote_attestation"]["cert_chain"]
    der = with_version(load_any(base64.b64decode(chain[0]["base64"])), 5)
    chain[0] = {"base64": base64.b64encode(der).decode()}
    code, lines = verify(run.legacy_argv(run.write(tmp_path / "proof.json", proof)), capsys)
    assert (code, lines) == (
        2,
        [
            "aicert verify: unusable input: remote_attestation.cert_chain[0]: is not a certificate: "
            "5 is not a valid X509 version"
        ],
    )
