"""Reading an RFC 3161 TimeStampResp (`evidence.timestamp`) strictly, without trusting any of it.

    TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken ContentInfo OPTIONAL }
    ContentInfo   ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
    SignedData    ::= SEQUENCE { version, digestAlgorithms SET,
                                 encapContentInfo SEQUENCE { id-ct-TSTInfo, [0] EXPLICIT OCTET STRING },
                                 certificates [0] IMPLICIT SET OF Certificate OPTIONAL,
                                 crls [1] IMPLICIT OPTIONAL, signerInfos SET OF SignerInfo }
    SignerInfo    ::= SEQUENCE { version, sid, digestAlgorithm, signedAttrs [0] IMPLICIT OPTIONAL,
                                 signatureAlgorithm, signature OCTET STRING, unsignedAttrs [1] OPTIONAL }
    TSTInfo       ::= SEQUENCE { version, policy, messageImprint, serialNumber, genTime,
                                 accuracy OPTIONAL, ... }

(RFC 3161, RFC 5652.) DER only: one-byte tags, definite and minimal lengths, minimal integers.
Anything that does not read is a MalformedError whose field is `evidence.timestamp` (or
`evidence.timestamp.certificates[i]` for a certificate that does not decode) and whose reason
names the part: unusable input, exit 2. Deciding whether the token is to be trusted is
aicert.verify.timestamp's work; nothing here checks a signature or a name.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from cryptography import x509

from aicert.verify.errors import MalformedError
from aicert.verify.keys import readable_certificates, with_usable_key

FIELD: Final = "evidence.timestamp"
MAX_CERTIFICATES: Final = 16
MAX_ITEMS: Final = 64  # elements of any SET or SEQUENCE read here
MAX_INTEGER_BYTES: Final = 64
MAX_OID_BYTES: Final = 64

INTEGER, OCTET_STRING, NULL, OID, GENERALIZED_TIME = 0x02, 0x04, 0x05, 0x06, 0x18
SEQUENCE, SET = 0x30, 0x31
CONTEXT_0, CONTEXT_1 = 0xA0, 0xA1  # constructed [0], [1]
IMPLICIT_0, IMPLICIT_1 = 0x80, 0x81  # primitive [0], [1]

ID_SIGNED_DATA: Final = "1.2.840.113549.1.7.2"
ID_CT_TST_INFO: Final = "1.2.840.113549.1.9.16.1.4"
_GEN_TIME: Final = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,6}))?Z")


class Tlv(NamedTuple):
    """One DER value: its tag byte, its content, and its whole encoding."""

    tag: int
    content: bytes
    encoded: bytes


def refuse(reason: str) -> MalformedError:
    return MalformedError(FIELD, reason)


def read_tlv(data: bytes, at: int, what: str) -> tuple[Tlv, int]:
    """The DER value at `at` in `data`, and where the next one starts."""
    if at + 2 > len(data):
        raise refuse(f"{what} is cut short")
    tag, first = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise refuse(f"{what} has a multi-byte tag")
    if first < 0x80:
        start, length = at + 2, first
    else:
        count = first & 0x7F
        if count == 0:
            raise refuse(f"{what} has an indefinite length (BER, not DER)")
        if count > 4 or at + 2 + count > len(data):
            raise refuse(f"{what} has a length that runs past the end")
        length = int.from_bytes(data[at + 2 : at + 2 + count], "big")
        if data[at + 2] == 0 or length < 0x80:
            raise refuse(f"{what} has a length that is not minimal (not DER)")
        start = at + 2 + count
    end = start + length
    if end > len(data):
        raise refuse(f"{what} runs past the end")
    return Tlv(tag, data[start:end], data[at:end]), end


def one(data: bytes, what: str) -> Tlv:
    """The single DER value that is all of `data`."""
    value, end = read_tlv(data, 0, what)
    if end != len(data):
        raise refuse(f"{what} is followed by {len(data) - end} more bytes")
    return value


def items(value: Tlv, what: str) -> list[Tlv]:
    """The values inside the constructed value `value` (at most MAX_ITEMS)."""
    if not value.tag & 0x20:
        raise refuse(f"{what} is not a constructed value")
    found: list[Tlv] = []
    at = 0
    while at < len(value.content):
        if len(found) == MAX_ITEMS:
            raise refuse(f"{what} holds more than {MAX_ITEMS} values")
        item, at = read_tlv(value.content, at, f"{what}[{len(found)}]")
        found.append(item)
    return found


def expect(value: Tlv, tag: int, what: str) -> Tlv:
    names = {INTEGER: "an INTEGER", OCTET_STRING: "an OCTET STRING", OID: "an OBJECT IDENTIFIER"}
    names |= {SEQUENCE: "a SEQUENCE", SET: "a SET", GENERALIZED_TIME: "a GeneralizedTime"}
    if value.tag != tag:
        raise refuse(f"{what} is not {names.get(tag, f'tagged {tag:#04x}')} (tag {value.tag:#04x})")
    return value


def integer(value: Tlv, what: str) -> int:
    """A DER INTEGER's value (or that of an IMPLICIT-tagged one: the tag is the caller's)."""
    content = value.content
    if not content or len(content) > MAX_INTEGER_BYTES:
        raise refuse(f"{what} is an INTEGER of {len(content)} bytes")
    if len(content) > 1 and (content[0], content[1] & 0x80) in ((0x00, 0), (0xFF, 0x80)):
        raise refuse(f"{what} is an INTEGER that is not minimal (not DER)")
    return int.from_bytes(content, "big", signed=True)


def object_identifier(value: Tlv, what: str) -> str:
    content = expect(value, OID, what).content
    if not content or len(content) > MAX_OID_BYTES or content[-1] & 0x80:
        raise refuse(f"{what} is not a well-formed OBJECT IDENTIFIER")
    arcs: list[int] = []
    current = 0
    for index, byte in enumerate(content):
        if current == 0 and byte == 0x80 and (index == 0 or not content[index - 1] & 0x80):
            raise refuse(f"{what} is an OBJECT IDENTIFIER that is not minimal (not DER)")
        current = current << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def algorithm(value: Tlv, what: str) -> str:
    """The OID of an AlgorithmIdentifier (its parameters are not read)."""
    parts = items(expect(value, SEQUENCE, what), what)
    if not 1 <= len(parts) <= 2:
        raise refuse(f"{what} is not an AlgorithmIdentifier")
    return object_identifier(parts[0], f"{what}.algorithm")


@dataclass(frozen=True)
class Attribute:
    type: str
    values: tuple[Tlv, ...]


@dataclass(frozen=True)
class SignerInfo:
    """One SignerInfo; `sid` names the signer's certificate by issuer (DER Name) and serial number
    or by subject key identifier; `signed_bytes` is what the signature covers: the signed
    attributes as a DER SET (RFC 5652 5.4), empty when there are none."""

    issuer: bytes | None
    serial: int | None
    key_identifier: bytes | None
    digest_algorithm: str
    signed_attributes: tuple[Attribute, ...] | None
    signed_bytes: bytes
    signature_algorithm: str
    signature: bytes


@dataclass(frozen=True)
class TstInfo:
    imprint_algorithm: str
    imprint: bytes
    gen_time: dt.datetime  # UTC, to the microsecond
    accuracy_microseconds: int  # 0 when the token states none; may be huge, the checks bound it


@dataclass(frozen=True)
class Response:
    """A TimeStampResp: its PKI status, and its token when the TSA granted one."""

    status: int
    content: bytes  # the encapsulated TSTInfo, as signed
    tst_info: TstInfo | None
    certificates: tuple[x509.Certificate, ...]
    signer_infos: tuple[SignerInfo, ...]


def _attributes(value: Tlv) -> tuple[Attribute, ...]:
    found = []
    for index, item in enumerate(items(value, "signedAttrs")):
        what = f"signedAttrs[{index}]"
        parts = items(expect(item, SEQUENCE, what), what)
        if len(parts) != 2:
            raise refuse(f"{what} is not an Attribute (type and values)")
        values = items(expect(parts[1], SET, f"{what}.values"), f"{what}.values")
        found.append(Attribute(object_identifier(parts[0], f"{what}.type"), tuple(values)))
    return tuple(found)


def _signer_info(value: Tlv, index: int) -> SignerInfo:
    what = f"signerInfos[{index}]"
    parts = items(expect(value, SEQUENCE, what), what)
    if not 5 <= len(parts) <= 7:
        raise refuse(f"{what} has {len(parts)} fields, not a SignerInfo's 5 to 7")
    sid = parts[1]
    issuer = serial = key_identifier = None
    if sid.tag == SEQUENCE:
        name_and_serial = items(sid, f"{what}.sid")
        if len(name_and_serial) != 2:
            raise refuse(f"{what}.sid is not an IssuerAndSerialNumber")
        issuer = expect(name_and_serial[0], SEQUENCE, f"{what}.sid.issuer").encoded
        serial = integer(expect(name_and_serial[1], INTEGER, f"{what}.sid.serialNumber"), f"{what}.sid")
    elif sid.tag == IMPLICIT_0:
        key_identifier = sid.content
    else:
        raise refuse(f"{what}.sid is neither an IssuerAndSerialNumber nor a SubjectKeyIdentifier")
    rest = parts[3:]
    attributes = None
    signed_bytes = b""
    if rest and rest[0].tag == CONTEXT_0:
        attributes = _attributes(rest[0])
        signed_bytes = bytes([SET]) + rest[0].encoded[1:]
        rest = rest[1:]
    if len(rest) not in (2, 3) or (len(rest) == 3 and rest[2].tag != CONTEXT_1):
        raise refuse(f"{what} is not a SignerInfo (signatureAlgorithm, signature, unsignedAttrs)")
    return SignerInfo(
        issuer=issuer,
        serial=serial,
        key_identifier=key_identifier,
        digest_algorithm=algorithm(parts[2], f"{what}.digestAlgorithm"),
        signed_attributes=attributes,
        signed_bytes=signed_bytes,
        signature_algorithm=algorithm(rest[0], f"{what}.signatureAlgorithm"),
        signature=expect(rest[1], OCTET_STRING, f"{what}.signature").content,
    )


def _certificates(value: Tlv) -> tuple[x509.Certificate, ...]:
    listed = items(value, "certificates")
    if len(listed) > MAX_CERTIFICATES:
        raise refuse(f"the token holds {len(listed)} certificates, more than {MAX_CERTIFICATES}")
    certificates = []
    for index, item in enumerate(listed):
        where = f"{FIELD}.certificates[{index}]"
        if item.tag != SEQUENCE:
            raise MalformedError(where, "is not an X.509 certificate (an attribute or other certificate)")
        try:
            certificates.append(with_usable_key(x509.load_der_x509_certificate(item.encoded)))
        except (ValueError, x509.InvalidVersion) as exc:
            raise MalformedError(where, f"unreadable certificate: {exc}") from None
    readable_certificates(certificates, f"{FIELD}.certificates")
    return tuple(certificates)


def _gen_time(value: Tlv) -> dt.datetime:
    found = _GEN_TIME.fullmatch(expect(value, GENERALIZED_TIME, "genTime").content)
    if found is None:
        raise refuse("genTime is not YYYYMMDDhhmmss[.ffffff]Z (RFC 3161 2.4.2)")
    year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
    fraction = found.group(7) or b""
    try:
        return dt.datetime(
            year, month, day, hour, minute, second, int(fraction.ljust(6, b"0") or 0), tzinfo=dt.UTC
        )
    except ValueError as exc:
        raise refuse(f"genTime is not a date: {exc}") from None


def _accuracy(value: Tlv) -> int:
    """Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] 1..999 OPTIONAL,
    micros [1] 1..999 OPTIONAL }, in microseconds."""
    seconds = millis = micros = 0
    order = 0
    for part in items(value, "accuracy"):
        rank = {INTEGER: 1, IMPLICIT_0: 2, IMPLICIT_1: 3}.get(part.tag)
        if rank is None or rank <= order:
            raise refuse("accuracy is not seconds, [0] millis, [1] micros, each at most once, in order")
        order = rank
        number = integer(part, "accuracy")
        if rank == 1:
            if number < 0:
                raise refuse(f"accuracy.seconds is {number}, below 0")
            seconds = number
        elif not 1 <= number <= 999:
            raise refuse(f"accuracy.{'millis' if rank == 2 else 'micros'} is {number}, not 1 to 999")
        elif rank == 2:
            millis = number
        else:
            micros = number
    return seconds * 1_000_000 + millis * 1000 + micros


def _tst_info(content: bytes) -> TstInfo:
    parts = items(expect(one(content, "TSTInfo"), SEQUENCE, "TSTInfo"), "TSTInfo")
    if len(parts) < 5:
        raise refuse(f"TSTInfo has {len(parts)} fields, fewer than version to genTime")
    imprint = items(expect(parts[2], SEQUENCE, "messageImprint"), "messageImprint")
    if len(imprint) != 2:
        raise refuse("messageImprint is not a hash algorithm and a hash")
    accuracy = _accuracy(parts[5]) if len(parts) > 5 and parts[5].tag == SEQUENCE else 0
    return TstInfo(
        imprint_algorithm=algorithm(imprint[0], "messageImprint.hashAlgorithm"),
        imprint=expect(imprint[1], OCTET_STRING, "messageImprint.hashedMessage").content,
        gen_time=_gen_time(parts[4]),
        accuracy_microseconds=accuracy,
    )


def read_response(der: bytes) -> Response:
    """The status, the signed content and its TSTInfo, the certificates and the SignerInfos of a
    TimeStampResp; MalformedError saying what does not read."""
    parts = items(expect(one(der, "the TimeStampResp"), SEQUENCE, "the TimeStampResp"), "the TimeStampResp")
    if not 1 <= len(parts) <= 2:
        raise refuse("is not a TimeStampResp (status, then the token)")
    status_info = items(expect(parts[0], SEQUENCE, "status"), "status")
    if not status_info:
        raise refuse("status is empty")
    status = integer(expect(status_info[0], INTEGER, "status.status"), "status.status")
    if len(parts) == 1:
        return Response(status, b"", None, (), ())
    content_info = items(expect(parts[1], SEQUENCE, "timeStampToken"), "timeStampToken")
    if len(content_info) != 2 or content_info[1].tag != CONTEXT_0:
        raise refuse("timeStampToken is not a ContentInfo")
    if object_identifier(content_info[0], "timeStampToken.contentType") != ID_SIGNED_DATA:
        raise refuse("timeStampToken is not CMS SignedData")
    wrapped = items(content_info[1], "timeStampToken.content")
    if len(wrapped) != 1:
        raise refuse("timeStampToken.content is not one SignedData")
    signed = items(expect(wrapped[0], SEQUENCE, "SignedData"), "SignedData")
    if len(signed) < 4:
        raise refuse(f"SignedData has {len(signed)} fields, fewer than 4")
    encapsulated = items(expect(signed[2], SEQUENCE, "encapContentInfo"), "encapContentInfo")
    if len(encapsulated) != 2 or encapsulated[1].tag != CONTEXT_0:
        raise refuse("encapContentInfo does not hold its content")
    if object_identifier(encapsulated[0], "encapContentInfo.eContentType") != ID_CT_TST_INFO:
        raise refuse("the token's content is not a TSTInfo")
    e_content = items(encapsulated[1], "encapContentInfo.eContent")
    if len(e_content) != 1:
        raise refuse("encapContentInfo.eContent is not one OCTET STRING")
    content = expect(e_content[0], OCTET_STRING, "encapContentInfo.eContent").content
    optional = signed[3:-1]
    if [p.tag for p in optional] not in ([], [CONTEXT_0], [CONTEXT_1], [CONTEXT_0, CONTEXT_1]):
        raise refuse("SignedData has fields other than certificates and crls before its signerInfos")
    certificates = _certificates(optional[0]) if optional and optional[0].tag == CONTEXT_0 else ()
    infos = items(expect(signed[-1], SET, "signerInfos"), "signerInfos")
    return Response(
        status=status,
        content=content,
        tst_info=_tst_info(content),
        certificates=certificates,
        signer_infos=tuple(_signer_info(info, index) for index, info in enumerate(infos)),
    )
