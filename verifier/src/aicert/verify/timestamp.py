"""The `timestamp` check: an RFC 3161 time-stamp token over the quote's signature.

A certificate proves nothing about when it was made: its quote carries the TPM's clock, not a
date. A time-stamping authority (TSA) the verifier trusts can say "this signature existed at T"
(RFC 3161). Then the AK certificate needs to have been valid at T, not now: a certificate sealed
while its AK certificate was valid keeps verifying after that certificate expires.

The token is `evidence.timestamp`: the TSA's whole TimeStampResp (DER, base64), whose message
imprint is sha256 of the quote's TPMT_SIGNATURE bytes as `evidence.quote.signature` holds them.
It is read by aicert.verify.tsa_token (MalformedError, exit 2, for bytes that do not read) and
checked here, as OpenSSL's `ts -verify` checks a token, each failure VerificationError(timestamp):

1. the TSA granted it (status 0, or 1 "granted with modifications"), with exactly one SignerInfo;
2. its signed attributes hold the content type id-ct-TSTInfo and the message digest of the
   TSTInfo as signed, and an ESS signing-certificate (RFC 2634, SHA-1) or signing-certificate-v2
   (RFC 5035) attribute: the hash of the signer's certificate, under the signature;
3. the signer is the one certificate, among the token's and the trusted TSA certificates, whose
   hash that attribute gives (and whose issuer and serial number it gives, when it does), and
   which the SignerInfo names; appended certificates that merely share its issuer and serial
   number are never taken for it, and its subject is the TSA name reported;
4. that certificate's key verifies the signature (RSA PKCS#1 v1.5, ECDSA or Ed25519 over
   SHA-256, SHA-384 or SHA-512);
5. it is valid at the token's time, not a CA, with the critical extended key usage
   id-kp-timeStamping alone (RFC 3161 2.3), and chains to a trusted TSA root then (the same
   bounded path building as the AK's, aicert.trust.chain);
6. the message imprint is sha256 of this quote's signature;
7. the token's accuracy is at most a day, and its time is not after the verification time
   (`--at`, else now) by more than that accuracy.

The result is the time the TSA certifies as a window: genTime ± accuracy (a token without an
accuracy is taken at its word, ± 0). The verifier checks the AK certificate at both ends of it.
Without a trusted TSA root the check is skipped (reported), and the chain is checked at `--at` or
now. This module loads only for a certificate that carries a token, when a TSA root is trusted.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from aicert.trust.chain import ChainError, build_path, validity_problem
from aicert.trust.store import TrustStore
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.tsa_token import (
    FIELD,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    Response,
    SignerInfo,
    Tlv,
    algorithm,
    expect,
    integer,
    items,
    object_identifier,
    one,
    read_response,
    refuse,
)

GRANTED_STATUSES: Final = (0, 1)  # granted, grantedWithMods (RFC 3161 2.4.2)
MAX_ACCURACY: Final = dt.timedelta(days=1)
ID_CT_TST_INFO: Final = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE: Final = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST: Final = "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE: Final = "1.2.840.113549.1.9.16.2.12"  # ESS, RFC 2634: SHA-1 certHash
SIGNING_CERTIFICATE_V2: Final = "1.2.840.113549.1.9.16.2.47"  # ESS, RFC 5035
SHA1: Final = "1.3.14.3.2.26"
SHA256: Final = "2.16.840.1.101.3.4.2.1"
DIGESTS: Final[dict[str, hashes.HashAlgorithm]] = {
    SHA256: hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
_RSA_SIGNATURES: Final = {
    "1.2.840.113549.1.1.1": None,  # rsaEncryption: the SignerInfo's digest algorithm
    "1.2.840.113549.1.1.11": SHA256,
    "1.2.840.113549.1.1.12": "2.16.840.1.101.3.4.2.2",
    "1.2.840.113549.1.1.13": "2.16.840.1.101.3.4.2.3",
}
_ECDSA_SIGNATURES: Final = {
    "1.2.840.10045.2.1": None,  # id-ecPublicKey: the SignerInfo's digest algorithm
    "1.2.840.10045.4.3.2": SHA256,
    "1.2.840.10045.4.3.3": "2.16.840.1.101.3.4.2.2",
    "1.2.840.10045.4.3.4": "2.16.840.1.101.3.4.2.3",
}
_ED25519: Final = "1.3.101.112"
_DIRECTORY_NAME: Final = 0xA4


@dataclass(frozen=True)
class Timestamped:
    time: dt.datetime  # the TSA's genTime, UTC
    tsa: str  # the subject of the TSA certificate that signed the token
    accuracy: dt.timedelta = dt.timedelta(0)  # the token's accuracy (0 when it states none)

    @property
    def earliest(self) -> dt.datetime:
        try:
            return self.time - self.accuracy
        except OverflowError:  # a token dated in year 1: its window starts when time does
            return dt.datetime.min.replace(tzinfo=dt.UTC)

    @property
    def latest(self) -> dt.datetime:
        try:
            return self.time + self.accuracy
        except OverflowError:  # a token dated at the end of year 9999
            return dt.datetime.max.replace(tzinfo=dt.UTC)

    def stated(self) -> str:
        """The time as the token states it: `2025-03-01T00:00:00Z ± 1 s`."""
        return when(self.time) + (f" ± {self.accuracy.total_seconds():g} s" if self.accuracy else "")

    def note(self, *, at_given: bool) -> str:
        """The result's note: when, by whom, and when the AK certificate was checked."""
        checked_at = "--at" if at_given else ("both ends of that window" if self.accuracy else "that time")
        return f"timestamp: {self.stated()} by {self.tsa}; the AK certificate was checked at {checked_at}"


@dataclass(frozen=True)
class _CertId:
    """One ESSCertID(v2): the hash of a certificate and, optionally, its issuer and serial."""

    hash_algorithm: str
    digest: bytes
    issuers: tuple[bytes, ...] | None  # DER Names of the directoryName GeneralNames
    serial: int | None


def _fail(reason: str) -> VerificationError:
    return VerificationError(Check.TIMESTAMP, reason)


def when(moment: dt.datetime) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond:06d}".rstrip("0") + "Z" if moment.microsecond else f"{text}Z"


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _issuer_der(certificate: x509.Certificate) -> bytes:
    """The issuer Name exactly as the certificate encodes it (TBSCertificate's fourth field, or
    third without the optional version)."""
    fields = items(one(certificate.tbs_certificate_bytes, "a TSA certificate"), "a TSA certificate")
    return fields[3 if fields[0].tag == 0xA0 else 2].encoded


def _decode(token_b64: str) -> Response:
    try:
        der = base64.b64decode(token_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedError(FIELD, f"is not valid base64: {exc}") from None
    return read_response(der)


def _attributes(info: SignerInfo) -> dict[str, tuple[Tlv, ...]]:
    if info.signed_attributes is None:
        raise _fail("the token has no signed attributes (content type, message digest, signing certificate)")
    found: dict[str, tuple[Tlv, ...]] = {}
    for attribute in info.signed_attributes:
        if attribute.type in found:
            raise _fail(f"the token's signed attributes hold {attribute.type} twice")
        found[attribute.type] = attribute.values
    return found


def _single(attributes: dict[str, tuple[Tlv, ...]], oid: str, name: str) -> Tlv:
    values = attributes.get(oid)
    if values is None:
        raise _fail(f"the token has no signed {name} attribute")
    if len(values) != 1:
        raise _fail(f"the token's signed {name} attribute holds {len(values)} values, not one")
    return values[0]


def _check_content(attributes: dict[str, tuple[Tlv, ...]], info: SignerInfo, content: bytes) -> None:
    """The signed attributes bind the TSTInfo: its content type and its digest."""
    if object_identifier(_single(attributes, CONTENT_TYPE, "content-type"), "content-type") != ID_CT_TST_INFO:
        raise _fail("the token's signed content-type attribute is not id-ct-TSTInfo")
    digest = DIGESTS.get(info.digest_algorithm)
    if digest is None:
        raise _fail(
            f"the token is signed over digest algorithm {info.digest_algorithm}, not SHA-256, -384 or -512"
        )
    stated = expect(_single(attributes, MESSAGE_DIGEST, "message-digest"), OCTET_STRING, "message-digest")
    computed = hashes.Hash(digest)
    computed.update(content)
    if stated.content != computed.finalize():
        raise _fail(
            "the token's signed message digest is not the digest of its TSTInfo: the time was changed"
        )


def _cert_id(value: Tlv, version: int, what: str) -> _CertId:
    parts = items(expect(value, SEQUENCE, what), what)
    hash_algorithm = SHA1 if version == 1 else SHA256
    if version == 2 and parts and parts[0].tag == SEQUENCE:
        hash_algorithm = algorithm(parts[0], f"{what}.hashAlgorithm")
        parts = parts[1:]
    if not 1 <= len(parts) <= 2:
        raise refuse(f"{what} is not an ESSCertID")
    issuers = serial = None
    if len(parts) == 2:
        issuer_serial = items(expect(parts[1], SEQUENCE, f"{what}.issuerSerial"), f"{what}.issuerSerial")
        if len(issuer_serial) != 2:
            raise refuse(f"{what}.issuerSerial is not GeneralNames and a serial number")
        names = items(expect(issuer_serial[0], SEQUENCE, f"{what}.issuer"), f"{what}.issuer")
        issuers = tuple(
            one(name.content, f"{what}.issuer directoryName").encoded
            for name in names
            if name.tag == _DIRECTORY_NAME
        )
        serial = integer(expect(issuer_serial[1], INTEGER, f"{what}.serialNumber"), f"{what}.serialNumber")
    digest = expect(parts[0], OCTET_STRING, f"{what}.certHash").content
    return _CertId(hash_algorithm, digest, issuers, serial)


def _ess_cert_ids(attributes: dict[str, tuple[Tlv, ...]]) -> list[_CertId]:
    """The first ESSCertID of each ESS signing-certificate attribute (v1 and v2): the signer's."""
    found = []
    for oid, version in ((SIGNING_CERTIFICATE, 1), (SIGNING_CERTIFICATE_V2, 2)):
        if oid not in attributes:
            continue
        name = "signing-certificate" + ("-v2" if version == 2 else "")
        signing = items(expect(_single(attributes, oid, name), SEQUENCE, name), name)
        listed = items(expect(signing[0], SEQUENCE, f"{name}.certs"), f"{name}.certs") if signing else []
        if not listed:
            raise _fail(f"the token's {name} attribute names no certificate")
        found.append(_cert_id(listed[0], version, f"{name}.certs[0]"))
    if not found:
        raise _fail(
            "the token has no ESS signing-certificate or signing-certificate-v2 attribute: nothing signed "
            "says which certificate is the TSA's"
        )
    return found


def _hash(certificate: x509.Certificate, hash_algorithm: str) -> bytes | None:
    if hash_algorithm == SHA1:
        return hashlib.sha1(_der(certificate)).digest()  # ESS v1 (RFC 2634) is defined over SHA-1
    chosen = DIGESTS.get(hash_algorithm)
    if chosen is None:
        return None
    digest = hashes.Hash(chosen)
    digest.update(_der(certificate))
    return digest.finalize()


def _names_sid(certificate: x509.Certificate, info: SignerInfo) -> bool:
    if info.key_identifier is not None:
        try:
            ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return False
        return ski.digest == info.key_identifier
    return info.serial == certificate.serial_number and info.issuer == _issuer_der(certificate)


def _signer(
    candidates: list[x509.Certificate], info: SignerInfo, cert_ids: list[_CertId]
) -> x509.Certificate:
    """The one certificate every ESSCertID hashes to, with their issuer and serial, that the
    SignerInfo names."""
    named = [c for c in candidates if all(_hash(c, cid.hash_algorithm) == cid.digest for cid in cert_ids)]
    if not named:
        raise _fail(
            "no certificate in the token or among the trusted TSA certificates is the one its ESS "
            f"signing-certificate attribute names (certHash {cert_ids[0].digest.hex()})"
        )
    signer = named[0]  # a hash names one certificate: the candidates are distinct
    for cid in cert_ids:
        if cid.serial is not None and (
            cid.serial != signer.serial_number or _issuer_der(signer) not in (cid.issuers or ())
        ):
            raise _fail(
                "the ESS signing-certificate attribute gives another issuer and serial number than those of "
                f"the certificate it hashes ({_subject(signer)})"
            )
    if not _names_sid(signer, info):
        raise _fail(
            f"the SignerInfo names another certificate than the ESS signing-certificate attribute ({_subject(signer)})"
        )
    return signer


def _check_signature(signer: x509.Certificate, info: SignerInfo) -> None:
    try:
        key = signer.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _fail(f"the key of the TSA certificate {_subject(signer)} cannot be read: {exc}") from None
    algorithm_oid = info.signature_algorithm
    implied = {**_RSA_SIGNATURES, **_ECDSA_SIGNATURES}.get(algorithm_oid)
    if implied is not None and implied != info.digest_algorithm:
        raise _fail("the token's signature algorithm and digest algorithm name different hashes")
    digest = DIGESTS[info.digest_algorithm]  # _check_content refused any other
    try:
        if algorithm_oid in _RSA_SIGNATURES and isinstance(key, rsa.RSAPublicKey):
            key.verify(info.signature, info.signed_bytes, padding.PKCS1v15(), digest)
        elif algorithm_oid in _ECDSA_SIGNATURES and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(info.signature, info.signed_bytes, ec.ECDSA(digest))
        elif algorithm_oid == _ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(info.signature, info.signed_bytes)
        else:
            raise _fail(
                f"the token's signature algorithm {algorithm_oid} does not fit the key of {_subject(signer)} "
                "(supported: RSA PKCS#1 v1.5, ECDSA, Ed25519)"
            )
    except (InvalidSignature, ValueError):
        raise _fail(f"the token's signature does not verify with the key of {_subject(signer)}") from None


def tsa_certificate_problem(certificate: x509.Certificate, at: dt.datetime) -> str | None:
    """Why `certificate` may not sign time-stamp tokens at `at`, or None (RFC 3161 2.3)."""
    problem = validity_problem(certificate, "TSA certificate", at)
    if problem:
        return problem
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            return f"the TSA certificate {_subject(certificate)} is a CA certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.critical or list(usage.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        return (
            f"the TSA certificate {_subject(certificate)} does not have the extended key usage "
            "id-kp-timeStamping alone, marked critical (RFC 3161 2.3)"
        )
    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not (key_usage.digital_signature or key_usage.content_commitment):
        return f"the TSA certificate {_subject(certificate)}'s key usage allows no signature"
    return None


def _accuracy(microseconds: int) -> dt.timedelta:
    if microseconds > MAX_ACCURACY // dt.timedelta(microseconds=1):
        raise _fail(
            f"the token's accuracy is ± {microseconds / 1e6:.6g} s, coarser than a day: it dates nothing usefully"
        )
    return dt.timedelta(microseconds=microseconds)


def _distinct(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    seen: dict[bytes, x509.Certificate] = {}
    for certificate in certificates:
        seen.setdefault(_der(certificate), certificate)
    return list(seen.values())


def check_timestamp(
    token_b64: str, quote_signature: bytes, tsa: TrustStore, *, at: dt.datetime
) -> Timestamped:
    """The time (a window) a trusted TSA certified for `quote_signature`, or
    VerificationError(`timestamp`); MalformedError when the token does not read. `tsa` must hold
    at least one root (callers skip the check otherwise); `at` is the verification time (`--at`,
    else now): a token dated after it is refused."""
    response = _decode(token_b64)
    if response.status not in GRANTED_STATUSES:
        raise _fail(f"the TSA did not grant the timestamp (status {response.status})")
    info_tst = response.tst_info
    if info_tst is None:
        raise refuse("the TSA granted the timestamp but the response holds no token")
    if len(response.signer_infos) != 1:
        raise _fail(
            f"the token has {len(response.signer_infos)} SignerInfos; an RFC 3161 token has one SignerInfo"
        )
    info = response.signer_infos[0]
    attributes = _attributes(info)
    _check_content(attributes, info, response.content)
    cert_ids = _ess_cert_ids(attributes)
    trusted = [anchor.certificate for anchor in tsa.anchors] + list(tsa.intermediates)
    signer = _signer(_distinct([*response.certificates, *trusted]), info, cert_ids)
    _check_signature(signer, info)
    try:
        build_path(
            signer,
            response.certificates,
            TrustStore(tsa.anchors, tuple(_distinct(list(tsa.intermediates)))),
            info_tst.gen_time,
            leaf_problem=tsa_certificate_problem,
            role="TSA certificate",
        )
    except ChainError as exc:
        raise _fail(
            f"the TSA certificate does not chain to a trusted TSA root at the token's time: {exc}"
        ) from None
    if info_tst.imprint_algorithm != SHA256:
        raise _fail("the timestamp's message imprint is not sha256")
    if info_tst.imprint != hashlib.sha256(quote_signature).digest():
        raise _fail("the timestamp is over other bytes than this certificate's quote signature")
    accuracy = _accuracy(info_tst.accuracy_microseconds)
    stamped = Timestamped(info_tst.gen_time, _subject(signer), accuracy)
    if stamped.earliest > at:
        raise _fail(
            f"the token is dated {stamped.stated()}, after {when(at)}, the time the certificate is verified at "
            "(--at, else now): a TSA cannot date a signature before it was made"
        )
    return stamped
