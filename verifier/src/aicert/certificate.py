"""The `TrainingCertificate` document (docs/certificate-format.md) as strict pydantic models.

Parsing validates everything that can be checked without cryptography: shapes, enumerations,
hex and base64 encodings, PCR indices. Unknown fields are refused so that nothing a verifier did
not look at can ride along in a certificate.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

API_VERSION = "aicert.dev/v1alpha1"
KIND = "TrainingCertificate"
IN_TOTO_STATEMENT: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://aicert.dev/training/v1"
EVIDENCE_TYPE = "tpm2-quote"
REDACTED = "redacted"
BOOT_PCRS = tuple(range(8))
DEFAULT_MEASUREMENT_PCR = 23

# The levels a node runs at, a training spec requires and a certificate claims.
Assurance = Literal["dev", "vtpm", "cvm"]
# What a verification establishes: those, or `legacy` for an old AICert proof (a genuine vTPM quote
# with no statement binding, over a PCR anything on the VM may extend). `legacy` is the verifier's
# alone: no spec, node or certificate may name it. It ranks lowest, so any policy minimum above it
# (`dev` and up) refuses old proofs (docs/security.md).
VerifiedAssurance = Literal["legacy", "dev", "vtpm", "cvm"]
ASSURANCE_ORDER: dict[str, int] = {"legacy": 0, "dev": 1, "vtpm": 2, "cvm": 3}

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ImageDigest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Count = Annotated[int, Field(ge=0)]

_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


def _rfc3339_utc(value: str) -> str:
    if not _RFC3339_UTC.fullmatch(value):  # not match(...$): `$` also matches before a final newline
        raise ValueError("must be an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z")
    return value


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    return value


def _pem_certificate(value: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise ValueError("is not a PEM certificate")
    return value


def _pem_public_key(value: str) -> str:
    if "-----BEGIN PUBLIC KEY-----" not in value:
        raise ValueError("is not a PEM public key (SubjectPublicKeyInfo)")
    return value


Timestamp = Annotated[str, AfterValidator(_rfc3339_utc)]
Base64 = Annotated[str, AfterValidator(_base64)]
PemCertificate = Annotated[str, AfterValidator(_pem_certificate)]
PemPublicKey = Annotated[str, AfterValidator(_pem_public_key)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object form: aliases, and absent optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _pcr_map(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not key.isdigit() or str(int(key)) != key or int(key) > 23:
            raise ValueError(f"PCR index {key!r} must be a decimal number from 0 to 23")
    return value


PcrValues = Annotated[dict[str, Hex64], AfterValidator(_pcr_map)]


# --- statement -------------------------------------------------------------------------------


class DigestSet(Model):
    sha256: Hex64


class Subject(Model):
    name: Name
    digest: DigestSet


class NetworkPolicyRecord(Model):
    name: Name
    spec: Hex64  # sha256(JCS(the NetworkPolicy's spec))


class NetworkRecord(Model):
    """The pod's network as the agent found it at the gate: `egress` is `none` only when the
    NetworkPolicies selecting the pod (listed) leave it no egress at all."""

    egress: Literal["none", "allowed"]
    policies: list[NetworkPolicyRecord]


class RunIdentity(Model):
    """Which run this is: the resource (or CLI invocation) and what it asked for."""

    id: Name
    name: Name
    namespace: Name | None = None
    uid: Name | None = None
    attempt: Count
    spec: dict[str, JsonValue]
    network: NetworkRecord | None = None  # absent for `aicert-agent run` (no Kubernetes)


class ImageRecord(Model):
    ref: Name
    digest: ImageDigest


class InputRecord(Model):
    name: Name
    root: Hex64
    files: Count
    bytes: Count


class OutputRecord(Model):
    name: Name
    root: Hex64
    files: Count
    bytes: Count


class NodeRecord(Model):
    name: Name
    assurance: Assurance
    bootPcrs: PcrValues


class TrainingPredicate(Model):
    run: RunIdentity
    image: ImageRecord | None = None
    inputs: list[InputRecord]
    outputs: OutputRecord
    node: NodeRecord
    startedOn: Timestamp
    finishedOn: Timestamp


class Statement(Model):
    """An in-toto Statement v1 whose predicate describes one training run."""

    type: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicateType: Literal["https://aicert.dev/training/v1"]
    predicate: TrainingPredicate


# --- evidence --------------------------------------------------------------------------------


class QuoteRecord(Model):
    attest: Base64
    signature: Base64
    pcrs: PcrValues


class LogEntry(Model):
    """One measurement. `digest = sha256(JCS(content))`; foreign runs' entries carry no content."""

    seq: Count
    digest: Hex64
    type: Name
    content: dict[str, JsonValue] | None = None


class AkRecord(Model):
    public: PemPublicKey
    certificateChain: list[PemCertificate] = Field(min_length=1, max_length=8)


class PlatformRecord(Model):
    hclReport: Base64 | None = None


class Evidence(Model):
    type: Literal["tpm2-quote"]
    pcrBank: Literal["sha256"]
    pcr: Annotated[int, Field(ge=0, le=23)]
    assurance: Assurance
    quote: QuoteRecord
    eventLog: list[LogEntry] = Field(min_length=1)
    ak: AkRecord
    platform: PlatformRecord = PlatformRecord()
    # RFC 3161 TimeStampResp (DER, base64) over sha256 of quote.signature's bytes, from the TSA the
    # agent is configured with; absent when it has none.
    timestamp: Base64 | None = None

    @field_validator("pcr")
    @classmethod
    def _not_shared(cls, value: int) -> int:
        if value in (8, 14):
            raise ValueError("PCR 8 and 14 are extended by firmware, shim and other tools; use PCR 23")
        return value


class TrainingCertificate(Model):
    apiVersion: Literal["aicert.dev/v1alpha1"]
    kind: Literal["TrainingCertificate"]
    statement: Statement
    evidence: Evidence
