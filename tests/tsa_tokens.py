"""RFC 3161 time-stamp responses built field by field, to attack the `timestamp` check with.

The genuine tokens of the tests come from the repository's local TSA (localcluster/tsa, Go,
github.com/digitorus/timestamp). This module is a second, independent writer, in Python with
`cryptography` and hand-written DER, so a test can make exactly the token an attacker (or a
faulty TSA) would: without the ESS signing-certificate attribute, naming another certificate,
with certificates appended, dated in the future, with an odd accuracy, and so on. It also edits a
genuine token's unsigned certificate list (`with_certificates`), which leaves its signature valid.

`TokenSpec()` with a signer is a well-formed token; each field changes one thing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

SIGNED_DATA = "1.2.840.113549.1.7.2"
TST_INFO = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
SHA1 = "1.3.14.3.2.26"
SHA256 = "2.16.840.1.101.3.4.2.1"
SHA384 = "2.16.840.1.101.3.4.2.2"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
RSA_SHA256 = "1.2.840.113549.1.1.11"
POLICY = "1.3.6.1.4.1.57264.2"


# --- DER ---------------------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(items))


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def algorithm(dotted: str) -> bytes:
    return seq(oid(dotted))


def explicit(number: int, inner: bytes) -> bytes:
    return tlv(0xA0 | number, inner)


def generalized_time(moment: dt.datetime) -> bytes:
    text = moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return tlv(0x18, (text + "Z").encode("ascii"))


def read_tlv(data: bytes, at: int = 0) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the TLV at `at` (short or long form)."""
    tag, first = data[at], data[at + 1]
    if first < 0x80:
        return tag, at + 2, at + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[at + 2 : at + 2 + count], "big")
    start = at + 2 + count
    return tag, start, start + length


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, TLV start, content start, end) of each TLV in data[start:end]."""
    found = []
    at = start
    while at < end:
        tag, content, stop = read_tlv(data, at)
        found.append((tag, at, content, stop))
        at = stop
    return found


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tsa:
    """A TSA certificate and its key; `root` and `root_key` its issuer."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def tsa_root(
    common_name: str = "python TSA root",
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2036, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def tsa_certificate(
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str = "python TSA unit",
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    serial: int | None = None,
    usages: Sequence[x509.ObjectIdentifier] | None = (x509.ExtendedKeyUsageOID.TIME_STAMPING,),
    eku_critical: bool = True,
    ca: bool = False,
    not_before: dt.datetime = dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    not_after: dt.datetime = dt.datetime(2035, 1, 1, tzinfo=dt.UTC),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=eku_critical)
    return builder.sign(root_key, hashes.SHA256()), key


def make_tsa(common_name: str = "python TSA unit") -> Tsa:
    root, root_key = tsa_root(f"{common_name} root")
    cert, key = tsa_certificate(root, root_key, common_name=common_name)
    return Tsa(cert, key, root, root_key)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def as_version_2(certificate_der: bytes) -> bytes:
    """The certificate with its version field set to v2 (1): `cryptography` refuses to read it.
    Its signature no longer verifies, which does not matter for a certificate merely appended."""
    marker = b"\xa0\x03\x02\x01\x02"
    at = certificate_der.index(marker)
    return certificate_der[: at + 4] + b"\x01" + certificate_der[at + 5 :]


# --- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSpec:
    """One TimeStampResp. `imprint`: the sha256 the token dates; `ess`: which ESS signing-certificate
    attributes to sign (v1: SHA-1 ESSCertID, v2: SHA-256 ESSCertIDv2); `ess_certificate`: the
    certificate they name (default: the signer's); `sid_certificate`: the one SignerInfo names."""

    tsa: Tsa
    imprint: bytes
    gen_time: dt.datetime = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    accuracy: tuple[int | None, int | None, int | None] | None = (1, None, None)  # seconds, millis, micros
    ess: Literal["v1", "v2", "both", "none"] = "v2"
    ess_certificate: x509.Certificate | None = None
    ess_issuer_serial: bool = True
    ess_serial: int | None = None  # another serial in the ESS issuerSerial
    sid_certificate: x509.Certificate | None = None
    certificates: tuple[bytes, ...] | None = None  # DER; default: the signer's certificate
    content_type: str | None = TST_INFO  # the signed content-type attribute (None: left out)
    message_digest: bytes | None = None  # default: sha256 of the TSTInfo
    tst_info_after_signing: bytes | None = None  # TSTInfo swapped in after the signature
    status: int = 0
    signer_infos: int = 1
    imprint_algorithm: str = SHA256

    def but(self, **changes: object) -> TokenSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


def tst_info(spec: TokenSpec) -> bytes:
    parts = [
        integer(1),
        oid(POLICY),
        seq(algorithm(spec.imprint_algorithm), octets(spec.imprint)),
        integer(7),
        generalized_time(spec.gen_time),
    ]
    if spec.accuracy is not None:
        seconds, millis, micros = spec.accuracy
        fields = b""
        if seconds is not None:
            fields += integer(seconds)
        if millis is not None:
            fields += tlv(0x80, integer(millis)[2:])
        if micros is not None:
            fields += tlv(0x81, integer(micros)[2:])
        parts.append(seq(fields))
    return seq(*parts)


def _issuer_serial(cert: x509.Certificate, serial: int | None) -> bytes:
    directory_name = tlv(0xA4, cert.issuer.public_bytes())
    return seq(seq(directory_name), integer(cert.serial_number if serial is None else serial))


def _ess(spec: TokenSpec, version: int) -> bytes:
    named = spec.ess_certificate or spec.tsa.certificate
    issuer_serial = _issuer_serial(named, spec.ess_serial) if spec.ess_issuer_serial else b""
    if version == 1:
        cert_id = seq(octets(hashlib.sha1(der(named)).digest()), issuer_serial)
        return seq(oid(SIGNING_CERTIFICATE), set_of(seq(seq(cert_id))))
    cert_id = seq(octets(hashlib.sha256(der(named)).digest()), issuer_serial)
    return seq(oid(SIGNING_CERTIFICATE_V2), set_of(seq(seq(cert_id))))


def _signed_attributes(spec: TokenSpec, content: bytes) -> list[bytes]:
    attributes = []
    if spec.content_type is not None:
        attributes.append(seq(oid(CONTENT_TYPE), set_of(oid(spec.content_type))))
    digest = spec.message_digest if spec.message_digest is not None else hashlib.sha256(content).digest()
    attributes.append(seq(oid(MESSAGE_DIGEST), set_of(octets(digest))))
    if spec.ess in ("v1", "both"):
        attributes.append(_ess(spec, 1))
    if spec.ess in ("v2", "both"):
        attributes.append(_ess(spec, 2))
    return sorted(attributes)  # DER orders a SET OF by encoding


def _sign(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, data: bytes) -> tuple[str, bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECDSA_SHA256, key.sign(data, ec.ECDSA(hashes.SHA256()))
    return RSA_SHA256, key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signer_info(spec: TokenSpec, content: bytes) -> bytes:
    attributes = b"".join(_signed_attributes(spec, content))
    signature_algorithm, signature = _sign(spec.tsa.key, set_of(attributes))
    sid = spec.sid_certificate or spec.tsa.certificate
    return seq(
        integer(1),
        seq(sid.issuer.public_bytes(), integer(sid.serial_number)),
        algorithm(SHA256),
        tlv(0xA0, attributes),
        algorithm(signature_algorithm),
        octets(signature),
    )


def make_response(spec: TokenSpec) -> bytes:
    """The DER TimeStampResp: status, then the token (ContentInfo of SignedData)."""
    content = tst_info(spec)
    infos = [signer_info(spec, content) for _ in range(spec.signer_infos)]
    encapsulated = spec.tst_info_after_signing if spec.tst_info_after_signing is not None else content
    listed = spec.certificates if spec.certificates is not None else (der(spec.tsa.certificate),)
    certificates = sorted(listed)  # DER orders a SET OF by encoding
    signed_data = seq(
        integer(3),
        set_of(algorithm(SHA256)),
        seq(oid(TST_INFO), explicit(0, octets(encapsulated))),
        tlv(0xA0, b"".join(certificates)) if certificates else b"",
        set_of(*infos),
    )
    token = seq(oid(SIGNED_DATA), explicit(0, signed_data))
    return seq(seq(integer(spec.status)), token)


def _certificate_list(data: bytes) -> list[bytes]:
    return [data[start:end] for _, start, _, end in children(data, 0, len(data))]


def with_certificates(response: bytes, extra: Sequence[bytes]) -> bytes:
    """A genuine TimeStampResp with `extra` DER certificates added to its (unsigned) certificate
    list, in DER's SET OF order as a careful attacker would. The signature still verifies."""
    _, resp_start, resp_end = read_tlv(response)
    (status, token) = children(response, resp_start, resp_end)[:2]
    _, _, ci_start, ci_end = token
    (content_type, wrapper) = children(response, ci_start, ci_end)
    _, _, sd_start, _ = children(response, wrapper[2], wrapper[3])[0]
    signed_data = children(response, sd_start, children(response, wrapper[2], wrapper[3])[0][3])
    rebuilt = []
    for tag, start, content, end in signed_data:
        if tag == 0xA0:
            listed = _certificate_list(response[content:end]) + list(extra)
            rebuilt.append(tlv(0xA0, b"".join(sorted(listed))))
        else:
            rebuilt.append(response[start:end])
    new_token = seq(response[content_type[1] : content_type[3]], explicit(0, seq(*rebuilt)))
    return seq(response[status[1] : status[3]], new_token)


@dataclass
class Minted:
    """A TSA of this module and the tokens it was asked for."""

    tsa: Tsa = field(default_factory=make_tsa)

    def spec(self, signature: bytes, **changes: object) -> TokenSpec:
        return TokenSpec(self.tsa, hashlib.sha256(signature).digest()).but(**changes)
