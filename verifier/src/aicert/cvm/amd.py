"""AMD's certificates for SEV-SNP: the pinned roots (ARK), the VCEK -> ASK -> ARK chain, and the
VCEK's AMD extensions (chip id and TCB levels it certifies).

The ARK (AMD root key) of a product line is self-signed; it signs the ASK (AMD SEV signing key),
which signs each chip's VCEK (versioned chip endorsement key, ECDSA P-384) for one TCB version.
ARK and ASK are RSA-4096 and sign with RSASSA-PSS and SHA-384. AMD's Key Distribution Service
(KDS) issues them; Azure's IMDS hands out the same certificates (docs/confidential-vm.md).

Chain decision: the ARK may be left out of the chain. The ARKs of `PINNED_ARK_SHA256` ship with
the verifier (aicert.cvm.ark_roots) and stand in for a missing one; an ARK that is given is used
only if its SHA-256 fingerprint is pinned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from aicert.cvm.ark_roots import built_in_arks
from aicert.cvm.tcb import TcbVersion
from aicert.verify.errors import Check, VerificationError

PINNED_ARK_SHA256: Final[Mapping[str, str]] = MappingProxyType(
    {
        # SHA-256 of the DER of AMD's self-signed ARK certificates, computed from the PEM files
        # AMD's KDS serves at https://kdsintf.amd.com/vcek/v1/{Milan,Genoa}/cert_chain, as copied
        # in google/go-sev-guest verify/trust/ask_ark_{milan,genoa}.pem (the second certificate).
        "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",  # CN=ARK-Milan
        "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",  # CN=ARK-Genoa
    }
)
MAX_CHAIN_CERTIFICATES: Final = 4
CHIP_ID_SIZE: Final = 64

_AMD_KDS: Final = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME: Final = x509.ObjectIdentifier(f"{_AMD_KDS}.2")
OID_HWID: Final = x509.ObjectIdentifier(f"{_AMD_KDS}.4")
OID_TCB: Final = {
    "bootloader": x509.ObjectIdentifier(f"{_AMD_KDS}.3.1"),  # blSPL
    "tee": x509.ObjectIdentifier(f"{_AMD_KDS}.3.2"),  # teeSPL
    "snp": x509.ObjectIdentifier(f"{_AMD_KDS}.3.3"),  # snpSPL
    "microcode": x509.ObjectIdentifier(f"{_AMD_KDS}.3.8"),  # ucodeSPL
}
_DER_INTEGER: Final = 0x02
_DER_OCTET_STRING: Final = 0x04
_DER_IA5_STRING: Final = 0x16


def _fail(reason: str) -> VerificationError:
    return VerificationError(Check.CVM_CHAIN, reason)


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class VcekExtensions:
    """What AMD's extensions of a VCEK certificate say: the chip and the TCB version it is for."""

    product_name: str  # e.g. "Milan-B0"
    hwid: bytes  # the chip_id of the reports this VCEK signs
    tcb: TcbVersion


def _der_value(value: bytes, tag: int, what: str) -> bytes:
    """The content of the single short-form DER TLV `value` (AMD's values are a few bytes)."""
    if len(value) < 2 or value[0] != tag or value[1] >= 0x80 or len(value) != 2 + value[1]:
        raise _fail(f"the VCEK's {what} extension is not a DER value of the expected type")
    return value[2:]


def _extension_bytes(vcek: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes:
    try:
        extension = vcek.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        raise _fail(f"the VCEK has no {what} extension ({oid.dotted_string})") from None
    except ValueError as exc:  # a duplicate or undecodable extension
        raise _fail(f"the VCEK's extensions cannot be read: {exc}") from None
    if not isinstance(extension.value, x509.UnrecognizedExtension):
        raise _fail(f"the VCEK's {what} extension is not AMD's")
    return extension.value.value


def _spl(vcek: x509.Certificate, name: str) -> int:
    content = _der_value(_extension_bytes(vcek, OID_TCB[name], f"{name} SPL"), _DER_INTEGER, f"{name} SPL")
    minimal = len(content) == 1 or (len(content) == 2 and content[0] == 0 and content[1] >= 0x80)
    if not minimal or content[0] >= 0x80:
        raise _fail(f"the VCEK's {name} SPL extension is not an integer in 0..255")
    return content[-1]


def vcek_extensions(vcek: x509.Certificate) -> VcekExtensions:
    """The productName, hwID and the four TCB SPL extensions; VerificationError(CVM_CHAIN) if any
    is missing or not of AMD's form. AMD's KDS puts the 64-byte hwID in the extension value
    without an OCTET STRING header; one with it is read too."""
    hwid = _extension_bytes(vcek, OID_HWID, "hwID")
    if len(hwid) != CHIP_ID_SIZE:
        hwid = _der_value(hwid, _DER_OCTET_STRING, "hwID")
        if len(hwid) != CHIP_ID_SIZE:
            raise _fail(f"the VCEK's hwID is {len(hwid)} bytes, not {CHIP_ID_SIZE}")
    raw_name = _der_value(
        _extension_bytes(vcek, OID_PRODUCT_NAME, "productName"), _DER_IA5_STRING, "productName"
    )
    if not raw_name.isascii() or not raw_name.decode("ascii").isprintable():
        raise _fail("the VCEK's productName is not printable ASCII")
    tcb = TcbVersion(**{name: _spl(vcek, name) for name in OID_TCB})
    return VcekExtensions(product_name=raw_name.decode("ascii"), hwid=hwid, tcb=tcb)


def _check_signed_by(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """`issuer`'s RSA key signed `child` with RSASSA-PSS and SHA-384, as AMD's keys do."""
    if child.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        raise _fail(
            f"the {what} is not signed with RSASSA-PSS ({child.signature_algorithm_oid.dotted_string})"
        )
    try:
        parameters = child.signature_algorithm_parameters
        hash_algorithm = child.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _fail(f"the {what}'s signature parameters cannot be read: {exc}") from None
    if not isinstance(hash_algorithm, hashes.SHA384) or not isinstance(parameters, padding.PSS):
        raise _fail(f"the {what} is not signed with RSASSA-PSS and SHA-384")
    key = _public_key(issuer)
    if not isinstance(key, rsa.RSAPublicKey):
        raise _fail(f"the key that should have signed the {what} ({_name(issuer)}) is not RSA")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, parameters, hash_algorithm)
    except InvalidSignature:
        raise _fail(f"the {what}'s signature does not verify with the key of {_name(issuer)}") from None


def _check_validity(certificate: x509.Certificate, what: str, at: dt.datetime) -> None:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= at <= end:
        raise _fail(
            f"the {what} ({_name(certificate)}) is valid from {start.isoformat()} to {end.isoformat()}, "
            f"not at {at.isoformat()}"
        )


def _public_key(certificate: x509.Certificate) -> object:
    try:
        return certificate.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _fail(f"the key of {_name(certificate)} cannot be read: {exc}") from None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return constraints.ca


def _pick_ark(
    given: list[x509.Certificate], ask: x509.Certificate, pinned: set[str]
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The ARK named as the ASK's issuer: the given one (preferring a pinned one), else a built-in
    pinned one; and the given certificates left over."""
    named = [c for c in given if c.subject == ask.issuer and c.issuer == c.subject]
    if named:
        ark = next((c for c in named if sha256_fingerprint(c) in pinned), named[0])
        return ark, [c for c in given if c is not ark]
    for built_in in built_in_arks().values():
        if built_in.subject == ask.issuer and sha256_fingerprint(built_in) in pinned:
            return built_in, given
    raise _fail(f"no ARK named {ask.issuer.rfc4514_string()!r} (the ASK's issuer) is given or pinned")


def check_vcek_chain(
    certificates: Sequence[x509.Certificate],
    at: dt.datetime,
    ark_fingerprints: Collection[str] = frozenset(PINNED_ARK_SHA256.values()),
) -> x509.Certificate:
    """The VCEK, once VCEK -> ASK -> ARK holds; VerificationError(CVM_CHAIN, reason) otherwise.

    `certificates` (any order, at most 4) hold the VCEK (the one ECDSA certificate), the ASK (its
    issuer) and, optionally, the ARK (the ASK's self-signed issuer). The ARK's SHA-256 must be in
    `ark_fingerprints`; the ARK's, ASK's and VCEK's signatures must verify (RSASSA-PSS, SHA-384);
    ARK and ASK must be CAs; all three must be valid at `at` (timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("check_vcek_chain needs a timezone-aware time")
    if not 1 <= len(certificates) <= MAX_CHAIN_CERTIFICATES:
        raise _fail(f"{len(certificates)} certificates given; the chain is 1 to {MAX_CHAIN_CERTIFICATES}")
    pinned = {f.lower() for f in ark_fingerprints}
    ec_keys = [c for c in certificates if isinstance(_public_key(c), ec.EllipticCurvePublicKey)]
    if len(ec_keys) != 1:
        raise _fail(f"the chain holds {len(ec_keys)} ECDSA certificates; it needs exactly one, the VCEK")
    vcek = ec_keys[0]
    vcek_key = vcek.public_key()
    if not isinstance(vcek_key, ec.EllipticCurvePublicKey) or not isinstance(vcek_key.curve, ec.SECP384R1):
        raise _fail("the VCEK's key is not on curve P-384")
    rest = [c for c in certificates if c is not vcek]
    asks = [c for c in rest if c.subject == vcek.issuer and c.issuer != c.subject]
    if len(asks) != 1:
        raise _fail(f"{len(asks)} certificates are named {vcek.issuer.rfc4514_string()!r}, the VCEK's issuer")
    ask = asks[0]
    ark, extra = _pick_ark([c for c in rest if c is not ask], ask, pinned)
    if extra:
        raise _fail(f"{_name(extra[0])} is not part of the VCEK -> ASK -> ARK chain")
    fingerprint = sha256_fingerprint(ark)
    if fingerprint not in pinned:
        raise _fail(f"the ARK {_name(ark)} has SHA-256 {fingerprint}, which is not a pinned AMD root")
    _check_signed_by(ark, ark, "ARK")
    _check_signed_by(ask, ark, "ASK")
    _check_signed_by(vcek, ask, "VCEK")
    for what, certificate in (("ARK", ark), ("ASK", ask)):
        if not _is_ca(certificate):
            raise _fail(f"the {what} ({_name(certificate)}) is not a CA certificate")
    for what, certificate in (("ARK", ark), ("ASK", ask), ("VCEK", vcek)):
        _check_validity(certificate, what, at)
    return vcek
