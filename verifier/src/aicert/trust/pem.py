"""Reading certificates in the encodings AICert evidence and trust files use: PEM, DER, base64 of either."""

from __future__ import annotations

import base64
import binascii

from cryptography import x509

_BEGIN = b"-----BEGIN CERTIFICATE-----"


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; ValueError when there is none or one is damaged."""
    if _BEGIN not in data:
        raise ValueError("no PEM certificate found")
    return x509.load_pem_x509_certificates(data)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, or the one certificate of a DER file (Microsoft publishes
    the Azure root and intermediates as DER `.crt` files); ValueError saying what is wrong."""
    if _BEGIN in data:
        return load_pem_bundle(data)
    if data[:1] != b"\x30":
        raise ValueError("neither PEM certificates nor a DER certificate")
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ValueError(f"not a readable DER certificate ({exc})") from None


def load_any(data: bytes) -> x509.Certificate:
    """One certificate given as PEM, DER, or base64 of PEM or DER (old AICert proofs mix them)."""
    if _BEGIN in data:
        certs = load_pem_bundle(data)
        if len(certs) != 1:
            raise ValueError(f"expected one certificate, found {len(certs)}")
        return certs[0]
    if data[:1] == b"\x30":
        return x509.load_der_x509_certificate(data)
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither PEM, DER nor base64") from None
    return load_any(decoded)


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def colon_hex(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()
