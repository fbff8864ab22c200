"""Path building is bounded whatever chain a certificate carries: hostile chains first.

The work is measured by counting signature checks (`aicert.trust.chain._issued_by`); a budget
stops a search that would blow up, so these tests fail fast instead of hanging.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from tests.pki import NOW

import aicert.trust.chain as chain
from aicert.trust import (
    MAX_PATH_CERTIFICATES,
    TCG_KP_AIK_CERTIFICATE,
    ChainError,
    TrustStore,
    build_path,
)
from aicert.verify import Check, VerificationError, Verifier

Key = ec.EllipticCurvePrivateKey


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def certificate(
    subject: str,
    key: Key,
    issuer: str,
    signer: Key,
    *,
    ca: bool = True,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
) -> x509.Certificate:
    """A CA certificate, or (ca=False) an AK certificate with the TCG AIK extended key usage."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def store_of(*roots: x509.Certificate) -> TrustStore:
    return TrustStore.from_certificates(list(roots), "test", dev_level=False)


@dataclass
class SignatureChecks:
    """Counts the signature checks of path building; more than `budget` fails the test at once."""

    budget: int = 10_000
    pairs: list[tuple[x509.Certificate, x509.Certificate]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.pairs)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[SignatureChecks]:
    counter = SignatureChecks()
    real = chain._issued_by

    def counted(child: x509.Certificate, parent: x509.Certificate) -> bool:
        counter.pairs.append((child, parent))
        if counter.count > counter.budget:
            raise AssertionError(f"path building made more than {counter.budget} signature checks")
        return real(child, parent)

    monkeypatch.setattr(chain, "_issued_by", counted)
    yield counter


def self_issued_sharing_one_key(count: int) -> list[x509.Certificate]:
    """`count` certificates named "Loop", issued by "Loop", all with one key: each verifies each."""
    key = new_key()
    return [certificate("Loop", key, "Loop", key) for _ in range(count)]


def self_issued_cycle(count: int) -> list[x509.Certificate]:
    """`count` certificates named "Loop" with different keys, each signed by the next one's key."""
    keys = [new_key() for _ in range(count)]
    return [certificate("Loop", keys[i], "Loop", keys[(i + 1) % count]) for i in range(count)]


def legacy_proof_with_chain(azure_dir: Path, certs: list[x509.Certificate]) -> str:
    proof: dict[str, Any] = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    proof["remote_attestation"]["cert_chain"] = [
        {"base64": base64.b64encode(c.public_bytes(Encoding.DER)).decode()} for c in certs
    ]
    return json.dumps(proof)


# -- the attack: a chain of 8 self-issued certificates ----------------------------------------------


@pytest.mark.parametrize("loop", [self_issued_sharing_one_key, self_issued_cycle])
def test_eight_self_issued_certificates_fail_ak_chain_with_bounded_work(
    azure_dir: Path, checks: SignatureChecks, loop: Any
) -> None:
    certs = loop(8)  # the most a certificate's chain may hold
    pool, anchors = len(certs) - 1, 1
    checks.budget = (pool + 1) * (pool + anchors)  # each (child, issuer) pair at most once
    trust = TrustStore.from_pem_file(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    with pytest.raises(VerificationError) as err:
        Verifier(trust).verify(legacy_proof_with_chain(azure_dir, certs), at=NOW)
    assert err.value.check is Check.AK_CHAIN
    assert err.value.reason.startswith("no path")
    assert "from the AK certificate (CN=Loop, issued by CN=Loop) to a trusted root" in err.value.reason
    assert len(set(checks.pairs)) == checks.count  # no signature was checked twice


def test_a_loop_behind_a_genuine_looking_ak_is_rejected_with_bounded_work(checks: SignatureChecks) -> None:
    shared_key_signer = new_key()
    loop = [certificate("Loop", shared_key_signer, "Loop", shared_key_signer) for _ in range(7)]
    leaf = certificate("AK", new_key(), "Loop", shared_key_signer, ca=False)
    root_key = new_key()
    checks.budget = (len(loop) + 1) * (len(loop) + 1)
    with pytest.raises(ChainError, match="no path"):
        build_path(leaf, [leaf, *loop], store_of(certificate("Root", root_key, "Root", root_key)), NOW)


# -- what a path may be ---------------------------------------------------------------------------------


def test_only_an_issuer_whose_signature_verifies_is_followed(checks: SignatureChecks) -> None:
    root_key, mid_key = new_key(), new_key()
    root = certificate("Root", root_key, "Root", root_key)
    decoy = certificate("Mid", new_key(), "Root", root_key)  # the right name, another key
    mid = certificate("Mid", mid_key, "Root", root_key)
    leaf = certificate("AK", new_key(), "Mid", mid_key, ca=False)
    path = build_path(leaf, [decoy, mid], store_of(root), NOW)
    assert path.certificates == (leaf, mid, root)
    assert all(child != decoy for child, _ in checks.pairs)  # the decoy's own issuer was never sought


def test_an_expired_issuer_gives_way_to_its_renewal() -> None:
    root_key, mid_key = new_key(), new_key()
    root = certificate("Root", root_key, "Root", root_key)
    expired = certificate("Mid", mid_key, "Root", root_key, not_after=NOW - dt.timedelta(days=1))
    renewed = certificate("Mid", mid_key, "Root", root_key)
    leaf = certificate("AK", new_key(), "Mid", mid_key, ca=False)
    assert build_path(leaf, [expired, renewed], store_of(root), NOW).certificates == (leaf, renewed, root)


def ladder(intermediates: int) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    """An AK certificate, `intermediates` CAs in a line, and the root."""
    root_key = new_key()
    root = certificate("Root", root_key, "Root", root_key)
    cas, above, signer = [], "Root", root_key
    for level in range(intermediates):
        key = new_key()
        cas.append(certificate(f"CA {level}", key, above, signer))
        above, signer = f"CA {level}", key
    return certificate("AK", new_key(), above, signer, ca=False), cas, root


def test_a_path_of_eight_certificates_is_followed() -> None:
    leaf, cas, root = ladder(MAX_PATH_CERTIFICATES - 2)
    path = build_path(leaf, list(reversed(cas)), store_of(root), NOW)
    assert len(path.certificates) == MAX_PATH_CERTIFICATES == 8


def test_a_longer_path_is_not_followed(checks: SignatureChecks) -> None:
    leaf, cas, root = ladder(MAX_PATH_CERTIFICATES - 1)
    with pytest.raises(ChainError, match="no path within 8 certificates from the AK certificate"):
        build_path(leaf, cas, store_of(root), NOW)
    assert all(child != cas[0] for child, _ in checks.pairs)  # the CA below the root was never a child
