"""TPMT_SIGNATURE parsing and verification with the AK public key."""

from __future__ import annotations

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aicert.tpm.attest import ALG_SHA256, ALG_SHA384, ALG_SHA512, HASH_NAMES
from aicert.tpm.reader import Reader, StructureError

ALG_RSASSA = 0x0014
ALG_RSAPSS = 0x0016
ALG_ECDSA = 0x0018
SCHEME_NAMES = {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss", ALG_ECDSA: "ecdsa"}
_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    ALG_SHA256: hashes.SHA256,
    ALG_SHA384: hashes.SHA384,
    ALG_SHA512: hashes.SHA512,
}


class Signature(msgspec.Struct, frozen=True):
    scheme: int
    hash_alg: int
    rsa: bytes = b""
    ecdsa_r: int = 0
    ecdsa_s: int = 0

    @property
    def description(self) -> str:
        return f"{SCHEME_NAMES.get(self.scheme, hex(self.scheme))}-{HASH_NAMES.get(self.hash_alg, '?')}"


def parse_signature(data: bytes) -> Signature:
    r = Reader(data, "TPMT_SIGNATURE")
    scheme = r.u16("sigAlg")
    if scheme not in SCHEME_NAMES:
        raise StructureError(f"TPMT_SIGNATURE: unsupported sigAlg {scheme:#06x} (want RSASSA, RSAPSS, ECDSA)")
    hash_alg = r.u16("hash")
    if hash_alg not in _HASHES:
        raise StructureError(f"TPMT_SIGNATURE: unsupported hash {hash_alg:#06x} (want SHA-256/384/512)")
    if scheme == ALG_ECDSA:
        sig_r = int.from_bytes(r.sized("signatureR"), "big")
        sig_s = int.from_bytes(r.sized("signatureS"), "big")
        r.end()
        return Signature(scheme, hash_alg, ecdsa_r=sig_r, ecdsa_s=sig_s)
    sig = r.sized("sig")
    r.end()
    return Signature(scheme, hash_alg, rsa=sig)


def signature_problem(signature: Signature, key: PublicKeyTypes, message: bytes) -> str | None:
    """None when `signature` over `message` verifies with `key`, else why not."""
    algorithm = _HASHES[signature.hash_alg]()
    try:
        if signature.scheme == ALG_ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "the quote has an ECDSA signature but the AK is not an EC key"
            der = encode_dss_signature(signature.ecdsa_r, signature.ecdsa_s)
            key.verify(der, message, ec.ECDSA(algorithm))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                return f"the quote has an {signature.description} signature but the AK is not an RSA key"
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if signature.scheme == ALG_RSASSA
                else padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            )
            key.verify(signature.rsa, message, pad, algorithm)
    except InvalidSignature:
        return f"the {signature.description} signature over the attestation does not verify with the AK"
    return None
