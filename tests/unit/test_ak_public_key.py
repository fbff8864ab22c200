"""`evidence.ak.public` is read as `cryptography` reads it, however it is spelled.

The verifier reads the AK's public key without `cryptography`'s serialization module when the text
is exactly what `cryptography` writes for the key of a certificate in the chain (`canonical_pem`),
and with `load_pem_public_key` otherwise. Both ways give the same key, the same refusals and the
same `ak-key` verdict: the certified key passes however its PEM is wrapped, any other key fails.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.soft_tpm import AT, Json, Run, certificate_with_key, certified_run, pem_key

from aicert.trust import TrustStore
from aicert.verify import Check, VerificationError, Verifier
from aicert.verify.keys import canonical_pem, load_public_key


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


def written(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def ec_key_with_short_x(curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    """A key whose x coordinate has a leading zero byte: the point's encoding must keep it."""
    while True:
        key = ec.generate_private_key(curve).public_key()
        if key.public_numbers().x.bit_length() <= curve.key_size - 8:
            return key


def rsa_2048() -> rsa.RSAPublicNumbers:
    return rsa.generate_private_key(65537, 2048).public_key().public_numbers()


KEYS: dict[str, Callable[[], PublicKeyTypes]] = {
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048).public_key(),
    "rsa-3072-e3": lambda: rsa.generate_private_key(3, 3072).public_key(),
    "rsa-4096": lambda: rsa.generate_private_key(65537, 4096).public_key(),
    "rsa-2047": lambda: rsa.RSAPublicNumbers(65537, rsa_2048().n >> 1 | 1).public_key(),  # no leading 0
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
    "p256-short-x": lambda: ec_key_with_short_x(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
    "p521-short-x": lambda: ec_key_with_short_x(ec.SECP521R1()),
}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_canonical_pem_is_what_cryptography_writes(name: str) -> None:
    for _ in range(3):
        key = KEYS[name]()
        assert canonical_pem(key) == written(key)


@pytest.mark.parametrize(
    "key",
    [ed25519.Ed25519PrivateKey.generate().public_key(), ec.generate_private_key(ec.SECP256K1()).public_key()],
    ids=["ed25519", "secp256k1"],
)
def test_other_keys_have_no_canonical_pem_and_are_read_by_cryptography(key: PublicKeyTypes) -> None:
    assert canonical_pem(key) is None
    assert load_public_key(written(key)) == key


def certificate_for(run: Run, key: CertificatePublicKeyTypes) -> x509.Certificate:
    return certificate_with_key(run.ca, key)


def test_a_known_certificate_s_key_is_read_however_its_pem_is_wrapped(run: Run) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    other = certificate_for(run, rsa.generate_private_key(65537, 2048).public_key())
    known = [other, certificate_for(run, key)]
    text = written(key)
    assert load_public_key(text, known) == key
    assert load_public_key(text.replace(b"\n", b"\r\n"), known) == key  # read by load_pem_public_key
    assert load_public_key(text, [other]) == key  # not a known certificate's key: read all the same


@pytest.mark.parametrize(
    "text",
    [b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b"not a key"],
    ids=["damaged", "not-pem"],
)
def test_an_unreadable_key_raises_what_cryptography_raises(run: Run, text: bytes) -> None:
    known = [certificate_for(run, ec.generate_private_key(ec.SECP256R1()).public_key())]
    with pytest.raises(ValueError):
        load_public_key(text, known)


def with_ak_public(run: Run, text: str) -> Json:
    certificate = copy.deepcopy(run.certificate)
    certificate["evidence"]["ak"]["public"] = text
    return certificate


def verify(run: Run, certificate: Json) -> list[str]:
    at = dt.datetime.fromisoformat(AT.replace("Z", "+00:00"))
    result = Verifier(TrustStore.from_pem_file(run.ca_pem)).verify(json.dumps(certificate), at=at)
    return [str(check) for check in result.passed]


def test_the_certified_key_passes_ak_key_however_it_is_spelled(run: Run) -> None:
    text = run.certificate["evidence"]["ak"]["public"]
    assert text == pem_key(run.ak_key.public_key())  # the agent writes it as cryptography does
    for spelled in (text, text.replace("\n", "\r\n"), text.rstrip("\n")):
        assert Check.AK_KEY in verify(run, with_ak_public(run, spelled))


def test_another_key_fails_ak_key(run: Run) -> None:
    other = pem_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(VerificationError) as caught:
        verify(run, with_ak_public(run, other))
    assert caught.value.check == Check.AK_KEY
