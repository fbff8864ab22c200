"""A certificate as a Sigstore bundle v0.3: `aicert.sigstore.json` (docs/certificate-format.md).

The bundle is the certificate in the layout other supply-chain tools read: a DSSE envelope whose
payload is an in-toto Statement v1, signed by the node's AK over the DSSE pre-authentication
encoding (PAE), with the AK certificate chain and the RFC 3161 token as verification material.

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {
        "x509CertificateChain": {"certificates": [{"rawBytes": <DER>}, …]},  # evidence.ak.certificateChain
        "tlogEntries": [<at most one Rekor v2 entry of this envelope: aicert.tlog>],
        "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": <DER>}]}},  # evidence.timestamp
     "dsseEnvelope": {"payload": <the statement below>, "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": <the AK's signature over PAE>, "keyid": ""}]}}

    payload = {"_type": "https://in-toto.io/Statement/v1",
               "subject": <the certificate's statement's subject>,
               "predicateType": "https://aicert.dev/training-certificate/v1alpha1",
               "predicate": <the certificate, less evidence.timestamp and evidence.ak.certificateChain>}

A bundle has no room besides the envelope (its schema forbids unknown fields), so the quote, the
PCRs and the event log travel in the payload's predicate: the certificate whose statement the
quote binds. Each datum is in one place: the chain and the token only in the verification
material, where Sigstore tools look for them. Bytes are standard base64, as protobuf's JSON writes
them. This module builds a bundle (for the agent) and reads one back into the certificate it
carries (for the verifier); `aicert.verify.envelope` checks the envelope's signature.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from typing import Any, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aicert.jcs import canonical
from aicert.tlog import ENTRY_STATUS_MAX_BYTES, TLOG_FIELD, TlogEntry, read_tlog_entry
from aicert.tpm.attest import TPM_GENERATED_VALUE
from aicert.tpm.signature import ALG_ECDSA, ALG_RSASSA, parse_signature
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, loads_strict

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
CERTIFICATE_PREDICATE_TYPE: Final = "https://aicert.dev/training-certificate/v1alpha1"
DSSE_PAE_PREFIX: Final = b"DSSEv1 "

ENVELOPE = "dsseEnvelope"
PAYLOAD_FIELD = "dsseEnvelope.payload"
PREDICATE_FIELD = "dsseEnvelope.payload.predicate"
CHAIN_FIELD = "verificationMaterial.x509CertificateChain.certificates"
TIMESTAMP_FIELD = "verificationMaterial.timestampVerificationData.rfc3161Timestamps"
MAX_CHAIN = 8  # as evidence.ak.certificateChain


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def starts_with_tpm_generated(data: bytes) -> bool:
    """Whether `data` begins with TPM_GENERATED_VALUE, which a TPM's restricted key refuses to sign
    as external data (only the TPM's own attestations may begin with it)."""
    return data[:4] == TPM_GENERATED_VALUE.to_bytes(4, "big")


def is_bundle(document: Any) -> bool:
    """Whether a parsed document is (meant to be) a Sigstore bundle rather than a certificate."""
    return (
        isinstance(document, dict)
        and "apiVersion" not in document
        and any(key in document for key in ("mediaType", "verificationMaterial", ENVELOPE))
    )


# --- building (the agent) ---------------------------------------------------------------------


def envelope_payload(certificate: dict[str, Any]) -> bytes:
    """The in-toto statement the AK signs for `certificate` (canonical JSON, RFC 8785)."""
    predicate = copy.deepcopy(certificate)
    predicate["evidence"].pop("timestamp", None)  # in the verification material
    del predicate["evidence"]["ak"]["certificateChain"]  # idem
    return canonical(
        {
            "_type": STATEMENT_TYPE,
            "subject": certificate["statement"]["subject"],
            "predicateType": CERTIFICATE_PREDICATE_TYPE,
            "predicate": predicate,
        }
    )


def dsse_signature(tpmt_signature: bytes) -> bytes:
    """A TPMT_SIGNATURE (RSASSA or ECDSA, SHA-256) as DSSE and Sigstore carry signatures: the
    PKCS#1 v1.5 signature itself, or the DER ECDSA-Sig-Value."""
    parsed = parse_signature(tpmt_signature)
    if parsed.scheme == ALG_ECDSA:
        return encode_dss_signature(parsed.ecdsa_r, parsed.ecdsa_s)
    if parsed.scheme == ALG_RSASSA:
        return parsed.rsa
    raise ValueError(f"the AK signed with {parsed.description}; a bundle carries RSASSA or ECDSA signatures")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bundle_document(
    payload: bytes, signature: bytes, chain_der: list[bytes], token: str | None = None
) -> dict[str, Any]:
    """A Sigstore bundle v0.3 of one DSSE envelope (an in-toto payload, one signature), the
    certificate chain (DER, signer first) and, when given, an RFC 3161 token (base64)."""
    material: dict[str, Any] = {
        "x509CertificateChain": {"certificates": [{"rawBytes": _b64(der)} for der in chain_der]},
        "tlogEntries": [],
    }
    if token:
        material["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": token}]}
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        ENVELOPE: {
            "payload": _b64(payload),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        },
    }


def pem_chain_der(chain: list[str]) -> list[bytes]:
    """PEM certificates (evidence.ak.certificateChain) as DER."""
    from cryptography.hazmat.primitives.serialization import Encoding  # the agent's, not the verifier's

    return [x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER) for pem in chain]


def assemble_bundle(certificate: dict[str, Any], payload: bytes, signature: bytes) -> dict[str, Any]:
    """The bundle of `certificate`, whose `envelope_payload` the AK signed (`signature`, as
    `dsse_signature` gives it)."""
    evidence = certificate["evidence"]
    chain = pem_chain_der(evidence["ak"]["certificateChain"])
    return bundle_document(payload, signature, chain, evidence.get("timestamp"))


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    """A bundle's file, `aicert.sigstore.json`: compact JSON and a newline. The agent writes it so, and
    `kubectl aicert get` and `kubectl aicert push` rebuild it so from the status: the same bytes."""
    return json.dumps(bundle, separators=(",", ":")).encode() + b"\n"


def rebuild_bundle(certificate_text: str, signature: str, tlog_entry: str | None = None) -> dict[str, Any]:
    """The bundle of a certificate (its JSON text, as the status holds it) from the envelope's
    signature (base64, `status.envelopeSignature`) and, when the status has one, its transparency
    log entry (JSON text, `status.transparencyLogEntry`): the payload is a function of the
    certificate, so the bundle is the one the agent wrote. Raises MalformedError naming the status
    field; the bundle (the entry's proof included) is checked only by `aicert verify`."""
    certificate = loads_strict(certificate_text, what="the certificate", field="status.certificate")
    try:
        signature_bytes = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError("status.envelopeSignature", "is not valid base64") from None
    entries: list[Any] = []
    if tlog_entry is not None:
        entry = loads_strict(
            tlog_entry,
            what="the transparency log entry",
            field="status.transparencyLogEntry",
            max_bytes=ENTRY_STATUS_MAX_BYTES,
        )
        if not isinstance(entry, dict):
            raise MalformedError("status.transparencyLogEntry", "is not a JSON object")
        entries.append(entry)
    try:
        bundle = assemble_bundle(certificate, envelope_payload(certificate), signature_bytes)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedError(
            "status.certificate", f"is not a certificate a bundle can carry: {exc!r}"
        ) from None
    bundle["verificationMaterial"]["tlogEntries"] = entries
    return bundle


# --- reading (the verifier) -------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True):
    """What the envelope-signature check needs: the signed bytes, the signature, and the subject
    the payload states (which must be the one of the statement the quote binds)."""

    payload_type: str
    payload: bytes
    signature: bytes  # as DSSE carries it: PKCS#1 v1.5, or DER ECDSA-Sig-Value
    subject: Any
    tlog_entries: tuple[TlogEntry, ...] = ()  # Rekor v2 entries of this envelope (aicert.tlog)

    @property
    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


def _object(value: Any, field: str, keys: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedError(field, f"is {_kind(value)}, not an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise MalformedError(
            f"{field}.{unknown[0]}" if field else unknown[0], "is not a field of a bundle aicert reads"
        )
    missing = sorted(required - set(value))
    if missing:
        raise MalformedError(f"{field}.{missing[0]}" if field else missing[0], "is missing")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _list(value: Any, field: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedError(field, f"is {_kind(value)}, not an array")
    if not low <= len(value) <= high:
        wanted = f"exactly {low}" if low == high else f"{low} to {high}"
        raise MalformedError(field, f"has {len(value)} entries; aicert reads {wanted}")
    return value


def _bytes(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(field, f"is {_kind(value)}, not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError(field, "is not valid base64") from None


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])


def read_bundle(raw: dict[str, Any]) -> tuple[dict[str, Any], Envelope]:
    """The certificate a bundle carries (a JSON object, for the certificate's own schema check) and
    its envelope. Raises MalformedError naming the bundle's field."""
    top = _object(
        raw,
        "",
        {"mediaType", "verificationMaterial", ENVELOPE},
        {"mediaType", "verificationMaterial", ENVELOPE},
    )
    if top["mediaType"] != BUNDLE_MEDIA_TYPE:
        raise MalformedError("mediaType", f"is not {BUNDLE_MEDIA_TYPE}: aicert reads Sigstore bundles v0.3")
    material = _object(
        top["verificationMaterial"],
        "verificationMaterial",
        {"x509CertificateChain", "tlogEntries", "timestampVerificationData"},
        {"x509CertificateChain", "tlogEntries"},
    )
    tlog_entries = tuple(
        read_tlog_entry(entry, f"{TLOG_FIELD}[{index}]")
        for index, entry in enumerate(_list(material["tlogEntries"], TLOG_FIELD, 0, 1))
    )
    chain_holder = _object(
        material["x509CertificateChain"],
        "verificationMaterial.x509CertificateChain",
        {"certificates"},
        {"certificates"},
    )
    chain = []
    for index, entry in enumerate(_list(chain_holder["certificates"], CHAIN_FIELD, 1, MAX_CHAIN)):
        where = f"{CHAIN_FIELD}[{index}]"
        der = _bytes(_object(entry, where, {"rawBytes"}, {"rawBytes"})["rawBytes"], f"{where}.rawBytes")
        chain.append(_pem(der))  # read as evidence.ak.certificateChain is: a bad one is named there
    token = None
    if "timestampVerificationData" in material:
        holder = _object(
            material["timestampVerificationData"],
            "verificationMaterial.timestampVerificationData",
            {"rfc3161Timestamps"},
            {"rfc3161Timestamps"},
        )
        stamps = _list(holder["rfc3161Timestamps"], TIMESTAMP_FIELD, 0, 1)
        if stamps:
            where = f"{TIMESTAMP_FIELD}[0]"
            signed = _object(stamps[0], where, {"signedTimestamp"}, {"signedTimestamp"})["signedTimestamp"]
            token = base64.b64encode(_bytes(signed, f"{where}.signedTimestamp")).decode()
    envelope = _object(
        top[ENVELOPE],
        ENVELOPE,
        {"payload", "payloadType", "signatures"},
        {"payload", "payloadType", "signatures"},
    )
    if envelope["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
        raise MalformedError(
            f"{ENVELOPE}.payloadType", f"is not {IN_TOTO_PAYLOAD_TYPE}: the payload is an in-toto statement"
        )
    signatures = _list(envelope["signatures"], f"{ENVELOPE}.signatures", 1, 1)
    signature = _bytes(
        _object(signatures[0], f"{ENVELOPE}.signatures[0]", {"sig", "keyid"}, {"sig"})["sig"],
        f"{ENVELOPE}.signatures[0].sig",
    )
    payload = _bytes(envelope["payload"], PAYLOAD_FIELD)
    statement = loads_strict(
        payload, what="the envelope's payload", field=PAYLOAD_FIELD, max_bytes=CERTIFICATE_MAX_BYTES
    )
    statement = _object(
        statement,
        PAYLOAD_FIELD,
        {"_type", "subject", "predicateType", "predicate"},
        {"_type", "subject", "predicateType", "predicate"},
    )
    if statement["_type"] != STATEMENT_TYPE:
        raise MalformedError(f"{PAYLOAD_FIELD}._type", f"is not {STATEMENT_TYPE}")
    if statement["predicateType"] != CERTIFICATE_PREDICATE_TYPE:
        raise MalformedError(f"{PAYLOAD_FIELD}.predicateType", f"is not {CERTIFICATE_PREDICATE_TYPE}")
    certificate = _object(
        statement["predicate"], PREDICATE_FIELD, {"apiVersion", "kind", "statement", "evidence"}, set()
    )
    evidence = certificate.get("evidence")
    if isinstance(evidence, dict):
        if "timestamp" in evidence:
            raise MalformedError(f"{PREDICATE_FIELD}.evidence.timestamp", f"belongs in {TIMESTAMP_FIELD}")
        ak = evidence.get("ak")
        if isinstance(ak, dict):
            if "certificateChain" in ak:
                raise MalformedError(
                    f"{PREDICATE_FIELD}.evidence.ak.certificateChain", f"belongs in {CHAIN_FIELD}"
                )
            ak["certificateChain"] = chain
        if token is not None:
            evidence["timestamp"] = token
    return certificate, Envelope(IN_TOTO_PAYLOAD_TYPE, payload, signature, statement["subject"], tlog_entries)


def bundle_field(field: str) -> str:
    """Where, in a bundle, the certificate's `field` is."""
    if field == "evidence.timestamp" or field.startswith(("evidence.timestamp.", "evidence.timestamp[")):
        return f"{TIMESTAMP_FIELD}[0].signedTimestamp{field.removeprefix('evidence.timestamp')}"
    if field.startswith("evidence.ak.certificateChain["):
        index, _, rest = field.removeprefix("evidence.ak.certificateChain[").partition("]")
        return f"{CHAIN_FIELD}[{index}].rawBytes{rest}"
    if field == "evidence.ak.certificateChain":
        return CHAIN_FIELD
    if not field:
        return PREDICATE_FIELD
    if field.split(".")[0].split("[")[0] in ("apiVersion", "kind", "statement", "evidence"):
        return f"{PREDICATE_FIELD}.{field}"
    return field  # the bundle's own, or a flag's


__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "CERTIFICATE_PREDICATE_TYPE",
    "DSSE_PAE_PREFIX",
    "IN_TOTO_PAYLOAD_TYPE",
    "Envelope",
    "assemble_bundle",
    "bundle_document",
    "bundle_field",
    "dsse_signature",
    "envelope_payload",
    "is_bundle",
    "pae",
    "pem_chain_der",
    "read_bundle",
    "rebuild_bundle",
    "starts_with_tpm_generated",
]
