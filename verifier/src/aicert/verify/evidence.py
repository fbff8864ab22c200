"""The evidence every format is reduced to before the shared checks (steps 2 to 6) run."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from cryptography import x509

from aicert.bundle import Envelope
from aicert.certificate import Assurance, PlatformRecord


class LoggedEvent(msgspec.Struct, frozen=True):
    seq: int
    type: str
    digest: bytes
    preimage: bytes | None  # bytes whose sha256 `digest` must be; None for a redacted entry
    content: Any  # the decoded JSON content, None when redacted
    declared_type: str | None  # the type the content itself names (covered by the digest)
    # a checkpointed log's (aicert.verify.event_log): the measurement PCR just before this entry was
    # extended, and the quote taken right after it (None for the last entry: the final quote)
    pcr_before: bytes | None = None
    quote_attest: bytes | None = None
    quote_signature: bytes | None = None


class QuoteEvidence(msgspec.Struct, frozen=True):
    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]
    measurement_pcr: int
    ak_public_pem: bytes | None  # None: old proofs carry only the certificate
    certificates: tuple[x509.Certificate, ...]  # any order
    events: tuple[LoggedEvent, ...]
    expected_extra_data: bytes | None  # None: old proofs bind through the event log only
    claimed_assurance: Assurance | None
    required_pcrs: tuple[int, ...]  # PCRs the quote must cover besides the measurement PCR
    platform: PlatformRecord | None = None  # confidential-VM evidence (level cvm); old proofs have none
    platform_certificates: tuple[x509.Certificate, ...] = ()  # its AMD certificates, read
    # `epoch`: events are every entry since the PCR's reset; `checkpointed`: the run's own, each with
    # its quote (old proofs are epochs)
    log_format: Literal["epoch", "checkpointed"] = "epoch"
    # a Sigstore bundle's DSSE envelope (aicert.bundle), and the subject of the statement the quote
    # binds, which the envelope's payload must state; None: a certificate or an old proof
    envelope: Envelope | None = None
    bound_subject: Any = None
