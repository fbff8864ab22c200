"""Old AICert proof files (one VM per run), reduced to the shared evidence model.

Shape: `event_log` is a list of JSON strings; `remote_attestation.quote` has `message` (a
marshaled TPMS_ATTEST), `signature` (TPMT_SIGNATURE) and `pcr` (tpm2-tools' `--pcr` file), each
as `{"base64": …}`; `remote_attestation.cert_chain` holds the AK certificate and its CAs, each
base64 of DER or of PEM. AICert extended PCR 16 with sha256 of each entry's string, from zero.
The verifier loads this module only for a document that `looks_legacy` (aicert.verify.document).
"""

import base64
import hashlib
from typing import Annotated, Any

from cryptography import x509
from msgspec import Meta

from aicert.certificate import Base64, Model, VerifiedAssurance
from aicert.tpm.pcrs import parse_tpm2_tools_pcrs
from aicert.tpm.reader import StructureError
from aicert.trust.pem import load_any
from aicert.verify.errors import Check, MalformedError
from aicert.verify.evidence import LoggedEvent, QuoteEvidence
from aicert.verify.jsonload import loads_strict
from aicert.verify.keys import with_usable_key

LEGACY_PCR = 16
# What an old proof establishes, whatever root its AK chains to: its quote is bound to no statement
# and covers PCR 16, which anyone with root on the VM may extend (docs/security.md).
LEGACY_ASSURANCE: VerifiedAssurance = "legacy"


class Base64Box(Model, frozen=True, kw_only=True):
    base64: Base64


class LegacyQuote(Model, frozen=True, kw_only=True):
    message: Base64Box
    signature: Base64Box
    pcr: Base64Box


class LegacyAttestation(Model, frozen=True, kw_only=True):
    quote: LegacyQuote
    cert_chain: Annotated[list[Base64Box], Meta(min_length=1, max_length=8)]


class LegacyProof(Model, frozen=True, kw_only=True):
    ca_cert: str = ""
    event_log: Annotated[list[str], Meta(min_length=1)]
    remote_attestation: LegacyAttestation


# The checks an old proof cannot take, and why.
LEGACY_NOT_APPLICABLE: tuple[tuple[Check, str], ...] = (
    (Check.AK_KEY, "an old AICert proof carries the AK only in its certificate"),
    (Check.QUOTE_BINDING, "an old AICert proof's quote carries no statement digest"),
    (Check.STATEMENT, "an old AICert proof has no statement"),
    (Check.DATA_FILES, "an old AICert proof records its inputs by repository commit"),
)


def legacy_events(proof: LegacyProof) -> list[dict[str, Any]]:
    """Each `event_log` string as an object with an `event_type`, parsed as strictly as a
    certificate (jsonload), with the fields the verifier reads of the event types it uses
    (`input_image`, `outputs`) of the right JSON type."""
    events = []
    for index, raw in enumerate(proof.event_log):
        where = f"event_log[{index}]"
        event = loads_strict(raw, what=f"event {index} of the proof", field=where)
        if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
            raise MalformedError(where, "is not an object with an event_type")
        _check_read_fields(event, where)
        events.append(event)
    return events


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


_WANTED: dict[type[Any], str] = {dict: "an object", list: "an array", str: "a string"}


def _require(value: Any, kind: type[Any], where: str) -> Any:
    if not isinstance(value, kind):
        wanted = _WANTED[kind]
        found = "missing or null" if value is None else _json_type(value)
        raise MalformedError(where, f"is {found}, not {wanted}")
    return value


def _check_read_fields(event: dict[str, Any], where: str) -> None:
    if event["event_type"] == "input_image":
        content = _require(event.get("content"), dict, f"{where}.content")
        resolved = _require(content.get("resolved"), dict, f"{where}.content.resolved")
        _require(resolved.get("id"), str, f"{where}.content.resolved.id")
    elif event["event_type"] == "outputs":
        for position, output in enumerate(_require(event.get("content"), list, f"{where}.content")):
            at = f"{where}.content[{position}]"
            _require(output, dict, at)
            _require(_require(output.get("spec"), dict, f"{at}.spec").get("path"), str, f"{at}.spec.path")
            resolved = _require(output.get("resolved"), dict, f"{at}.resolved")
            _require(resolved.get("hash"), str, f"{at}.resolved.hash")


def legacy_evidence(proof: LegacyProof) -> QuoteEvidence:
    quote = proof.remote_attestation.quote
    try:
        pcrs = parse_tpm2_tools_pcrs(base64.b64decode(quote.pcr.base64))
    except StructureError as exc:
        raise MalformedError("remote_attestation.quote.pcr", str(exc)) from None
    certificates: list[x509.Certificate] = []
    for index, box in enumerate(proof.remote_attestation.cert_chain):
        if not box.base64:  # load_any would decode "" as base64 of "" forever (found by fuzzing)
            raise MalformedError(f"remote_attestation.cert_chain[{index}].base64", "is empty")
        try:
            certificates.append(with_usable_key(load_any(base64.b64decode(box.base64))))
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion: found by fuzzing
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
