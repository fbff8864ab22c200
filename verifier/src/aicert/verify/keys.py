"""Certificates whose public key the verifier cannot read are refused when they are parsed.

`cryptography` loads X.509 certificates lazily: a key algorithm it does not know (an unknown
OID) raises `UnsupportedAlgorithm` only when the key is first used, deep in a check. Reading the
key up front turns that into a `MalformedError` naming the certificate (exit 2, not a traceback).
Keys of a known algorithm that no TPM uses (Ed25519, DSA) do load: as `evidence.ak.public` they
are refused when parsed, in an AK certificate they fail `quote-signature` (not an RSA or ECC key).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm


def with_usable_key(certificate: x509.Certificate) -> x509.Certificate:
    """`certificate`, once its public key loads; ValueError saying which algorithm does not."""
    try:
        certificate.public_key()
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"its public key algorithm is not supported ({exc})") from None
    return certificate
