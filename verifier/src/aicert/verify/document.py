"""Step 1 of verification: the input parsed and schema-checked, and our certificate reduced to the
evidence every format shares (`QuoteEvidence`). Nothing here is a check: what cannot be read is a
`MalformedError` naming the field (exit 2)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aicert.bundle import Envelope, bundle_field, is_bundle, read_bundle
from aicert.certificate import BOOT_PCRS, FormatError, TrainingCertificate, convert
from aicert.jcs import canonical, sha256_jcs
from aicert.verify.errors import MalformedError
from aicert.verify.evidence import LoggedEvent, QuoteEvidence
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, loads_strict
from aicert.verify.keys import load_public_key, readable_certificates, with_usable_key
from aicert.verify.platform import platform_certificates

if TYPE_CHECKING:  # aicert.legacy loads only for an old AICert proof
    from aicert.legacy import LegacyProof


class Document(msgspec.Struct, frozen=True):
    """A parsed input: our certificate (with the statement as it was signed), from its JSON or from
    a Sigstore bundle (then with the bundle's DSSE envelope), or an old proof."""

    certificate: TrainingCertificate | None
    raw_statement: dict[str, Any] | None
    legacy: LegacyProof | None
    envelope: Envelope | None = None  # the certificate came in a Sigstore bundle (aicert.bundle)


def looks_legacy(document: Any) -> bool:
    """Whether `document` is an old AICert proof (aicert.legacy) rather than a certificate."""
    return isinstance(document, dict) and "remote_attestation" in document and "apiVersion" not in document


def load_document(data: bytes | str) -> Document:
    """Step 1: parse and schema-check. Raises MalformedError naming the field.

    At most 16 MiB of strict JSON (jsonload): no duplicate keys, no number JCS cannot encode, no
    lone surrogate, no nesting deeper than 64 levels."""
    raw = loads_strict(data, what="the certificate", max_bytes=CERTIFICATE_MAX_BYTES)
    if not isinstance(raw, dict):
        raise MalformedError("", "a certificate is a JSON object")
    if is_bundle(raw):
        carried, envelope = read_bundle(raw)
        try:
            certificate = convert(carried, TrainingCertificate)
        except FormatError as exc:
            raise MalformedError(bundle_field(exc.field), exc.reason) from None
        return Document(certificate, carried["statement"], None, envelope)
    try:
        if looks_legacy(raw):
            from aicert.legacy import LegacyProof

            return Document(None, None, convert(raw, LegacyProof))
        certificate = convert(raw, TrainingCertificate)
    except FormatError as exc:
        raise MalformedError(exc.field, exc.reason) from None
    return Document(certificate, raw["statement"], None)


def certificate_evidence(
    certificate: TrainingCertificate, raw_statement: dict[str, Any], envelope: Envelope | None = None
) -> QuoteEvidence:
    ev = certificate.evidence
    certificates = []
    for index, pem in enumerate(ev.ak.certificateChain):
        try:
            certificates.append(with_usable_key(x509.load_pem_x509_certificate(pem.encode())))
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:  # a version not 1 or 3
            raise MalformedError(
                f"evidence.ak.certificateChain[{index}]", f"unreadable certificate: {exc}"
            ) from None
    readable_certificates(certificates, "evidence.ak.certificateChain")
    platform_certs = platform_certificates(ev.platform) if ev.platform else ()
    readable_certificates(platform_certs, "evidence.platform.certificateChain")
    try:
        ak_public = load_public_key(ev.ak.public.encode(), certificates)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedError("evidence.ak.public", f"unreadable public key: {exc}") from None
    if not isinstance(ak_public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MalformedError(
            "evidence.ak.public",
            f"key type {type(ak_public).__name__.removesuffix('PublicKey')}: a TPM attestation key is RSA or ECC",
        )
    events = tuple(
        LoggedEvent(
            seq=entry.seq,
            type=entry.type,
            digest=bytes.fromhex(entry.digest),
            preimage=None if entry.content is None else canonical(entry.content),
            content=entry.content,
            declared_type=None if entry.content is None else str(entry.content.get("type")),
            pcr_before=None if entry.pcrBefore is None else bytes.fromhex(entry.pcrBefore),
            quote_attest=None if entry.quote is None else base64.b64decode(entry.quote.attest),
            quote_signature=None if entry.quote is None else base64.b64decode(entry.quote.signature),
        )
        for entry in ev.eventLog
    )
    return QuoteEvidence(
        attest=base64.b64decode(ev.quote.attest),
        signature=base64.b64decode(ev.quote.signature),
        pcr_values={int(k): bytes.fromhex(v) for k, v in ev.quote.pcrs.items()},
        measurement_pcr=ev.pcr,
        ak_public_pem=ev.ak.public.encode(),
        certificates=tuple(certificates),
        events=events,
        expected_extra_data=sha256_jcs(raw_statement),
        claimed_assurance=ev.assurance,
        required_pcrs=BOOT_PCRS,
        platform=ev.platform,
        platform_certificates=platform_certs,
        log_format=ev.eventLogFormat,
        envelope=envelope,
        bound_subject=raw_statement.get("subject"),
    )
