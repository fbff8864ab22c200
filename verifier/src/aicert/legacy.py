"""Old AICert proof files (one VM per run), reduced to the shared evidence model.

Shape: `event_log` is a list of JSON strings; `remote_attestation.quote` has `message` (a
marshaled TPMS_ATTEST), `signature` (TPMT_SIGNATURE) and `pcr` (tpm2-tools' `--pcr` file), each
as `{"base64": …}`; `remote_attestation.cert_chain` holds the AK certificate and its CAs, each
base64 of DER or of PEM. AICert extended PCR 16 with sha256 of each entry's string, from zero.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography import x509
from pydantic import Field

from aicert.certificate import Base64, Model
from aicert.tpm.pcrs import parse_tpm2_tools_pcrs
from aicert.tpm.reader import StructureError
from aicert.trust.pem import load_any
from aicert.verify.errors import MalformedError
from aicert.verify.evidence import LoggedEvent, QuoteEvidence

LEGACY_PCR = 16


class Base64Box(Model):
    base64: Base64


class LegacyQuote(Model):
    message: Base64Box
    signature: Base64Box
    pcr: Base64Box


class LegacyAttestation(Model):
    quote: LegacyQuote
    cert_chain: list[Base64Box] = Field(min_length=1, max_length=8)


class LegacyProof(Model):
    ca_cert: str = ""
    event_log: list[str] = Field(min_length=1)
    remote_attestation: LegacyAttestation


def looks_legacy(document: Any) -> bool:
    return isinstance(document, dict) and "remote_attestation" in document and "apiVersion" not in document


def legacy_events(proof: LegacyProof) -> list[dict[str, Any]]:
    events = []
    for index, raw in enumerate(proof.event_log):
        try:
            event = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MalformedError(f"event_log[{index}]", f"is not a JSON string: {exc.msg}") from None
        if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
            raise MalformedError(f"event_log[{index}]", "is not an object with an event_type")
        events.append(event)
    return events


def legacy_evidence(proof: LegacyProof) -> QuoteEvidence:
    quote = proof.remote_attestation.quote
    try:
        pcrs = parse_tpm2_tools_pcrs(base64.b64decode(quote.pcr.base64))
    except StructureError as exc:
        raise MalformedError("remote_attestation.quote.pcr", str(exc)) from None
    certificates: list[x509.Certificate] = []
    for index, box in enumerate(proof.remote_attestation.cert_chain):
        try:
            certificates.append(load_any(base64.b64decode(box.base64)))
        except ValueError as exc:
            raise MalformedError(
                f"remote_attestation.cert_chain[{index}]", f"is not a certificate: {exc}"
            ) from None
    events = tuple(
        LoggedEvent(
            seq=index,
            type=str(event["event_type"]),
            digest=hashlib.sha256(raw.encode()).digest(),
            preimage=raw.encode(),
            content=event,
            declared_type=str(event["event_type"]),
        )
        for index, (raw, event) in enumerate(zip(proof.event_log, legacy_events(proof), strict=True))
    )
    return QuoteEvidence(
        attest=base64.b64decode(quote.message.base64),
        signature=base64.b64decode(quote.signature.base64),
        pcr_values=pcrs,
        measurement_pcr=LEGACY_PCR,
        ak_public_pem=None,
        certificates=tuple(certificates),
        events=events,
        expected_extra_data=None,
        claimed_assurance=None,
        required_pcrs=(),
    )
