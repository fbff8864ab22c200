"""Certificates and keys the verifier cannot read are refused when they are parsed, and the AK's
public key (`evidence.ak.public`) is read as `cryptography` reads it.

`cryptography` loads X.509 certificates lazily: a key algorithm it does not know (an unknown
OID) raises `UnsupportedAlgorithm` only when the key is first used, deep in a check, and a damaged
name or extension only when it is first read. Reading them up front turns that into a
`MalformedError` naming the certificate (exit 2, not a traceback).
Keys of a known algorithm that no TPM uses (Ed25519, DSA) do load: as `evidence.ak.public` they
are refused when parsed, in an AK certificate they fail `quote-signature` (not an RSA or ECC key).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.verify.errors import MalformedError


def with_usable_key(certificate: x509.Certificate) -> x509.Certificate:
    """`certificate`, once its public key loads; ValueError saying which algorithm does not."""
    try:
        certificate.public_key()
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"its public key algorithm is not supported ({exc})") from None
    return certificate


# What decoding a damaged certificate raises (TypeError: a name attribute of a type its OID forbids)
_UNREADABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def readable_certificates(certificates: Iterable[x509.Certificate], field: str) -> None:
    """Decode now every part of each certificate that the chain check reads.

    `cryptography` decodes a certificate's names, extensions and signature algorithm only when
    they are first read, so a damaged one would raise deep inside a check (found by fuzzing);
    read here, it is unusable input naming the certificate (`field[index]`, exit 2)."""
    for index, cert in enumerate(certificates):
        try:
            _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), list(cert.extensions))
            _ = cert.signature_hash_algorithm
        except _UNREADABLE as exc:
            raise MalformedError(f"{field}[{index}]", f"unreadable certificate: {exc}") from None


# DER of the AlgorithmIdentifiers `cryptography` writes in a SubjectPublicKeyInfo.
_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")  # rsaEncryption, NULL
_EC_ALGORITHM = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, then the named curve's OID
_CURVE_OIDS = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
    "secp521r1": bytes.fromhex("06052b81040023"),
}


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def canonical_pem(key: PublicKeyTypes) -> bytes | None:
    """`key` as `key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)` writes it, for
    RSA keys and keys on the NIST curves P-256, P-384 and P-521; None for other keys.

    DER has one encoding for each key, and `cryptography` writes RSA keys as rsaEncryption and EC
    keys as a named curve and an uncompressed point, whatever they were read from."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        algorithm = _RSA_ALGORITHM
        public = _der(0x30, _der_integer(numbers.n) + _der_integer(numbers.e))
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_OIDS:
        point = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        algorithm = _der(0x30, _EC_ALGORITHM + _CURVE_OIDS[key.curve.name])
        public = b"\x04" + point.x.to_bytes(size, "big") + point.y.to_bytes(size, "big")
    else:
        return None
    body = base64.b64encode(_der(0x30, algorithm + _der(0x03, b"\x00" + public)))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([b"-----BEGIN PUBLIC KEY-----", *lines, b"-----END PUBLIC KEY-----", b""])


def load_public_key(pem: bytes, known: Iterable[x509.Certificate] = ()) -> PublicKeyTypes:
    """The key of the PEM SubjectPublicKeyInfo `pem`, as `load_pem_public_key` reads it (and raising
    what it raises: ValueError, UnsupportedAlgorithm).

    An AK's public key is the key its AK certificate certifies, written as `cryptography` writes
    keys: when `pem` is exactly that text for the key of one of the `known` certificates, it is that
    key (the one load_pem_public_key would return, number for number), read without loading
    `cryptography.hazmat.primitives.serialization`, whose SSH support alone costs each `aicert verify`
    about 5 ms. Any other text is read by load_pem_public_key."""
    for certificate in known:
        key = certificate.public_key()
        if canonical_pem(key) == pem:
            return key
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem)
