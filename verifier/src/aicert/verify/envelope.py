"""`envelope-signature`: a Sigstore bundle's DSSE envelope is the AK's, over this certificate.

The envelope's signature must verify, over the DSSE pre-authentication encoding of its payload,
with the key of the AK certificate that `ak-chain` took to a trusted root (RSASSA PKCS#1 v1.5 or
ECDSA, SHA-256, as the agent has the TPM sign it); and the subject the payload states, which is
all a generic in-toto consumer reads besides the predicate type, must be the subject of the
statement the quote binds. What the envelope proves alone is only that this AK signed this
payload: the quote, the PCRs and the event log, checked after it, prove the run.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.bundle import Envelope
from aicert.tlog import inclusion_problem
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import Check, VerificationError

NOT_A_BUNDLE = "the input is not a Sigstore bundle: it carries no DSSE envelope to check"
NO_TLOG_BUNDLE = "the input is not a Sigstore bundle: it carries no transparency log entry"
NO_TLOG_ENTRY = (
    "the bundle carries no transparency log entry (the agent had no log configured, or the log failed)"
)
NO_TLOG_KEY = "the bundle's transparency log entry is not checked: no log key is pinned (--tlog-key)"


def dsse_signature_problem(key: PublicKeyTypes, signature: bytes, signed: bytes) -> str | None:
    """None when `signature` (PKCS#1 v1.5, or DER ECDSA) over `signed` verifies with `key` (SHA-256)."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        else:
            return "the AK certificate's key is neither RSA nor ECC"
    except InvalidSignature:
        return "the DSSE envelope's signature does not verify with the AK certificate's key"
    return None


def envelope_problem(envelope: Envelope, key: PublicKeyTypes, bound_subject: Any) -> str | None:
    """None when the envelope is the AK's over a payload naming the bound statement's subject."""
    problem = dsse_signature_problem(key, envelope.signature, envelope.signed_bytes)
    if problem:
        return problem
    if envelope.subject != bound_subject:
        return (
            f"the envelope's payload names the subject {json.dumps(envelope.subject)}, but the statement "
            f"the quote binds names {json.dumps(bound_subject)}"
        )
    return None


def check_envelope(
    envelope: Envelope | None, key: PublicKeyTypes, bound_subject: Any, log: CheckLog[Check]
) -> None:
    if envelope is None:
        log.skipped(Check.ENVELOPE_SIGNATURE, NOT_A_BUNDLE)
        return
    problem = envelope_problem(envelope, key, bound_subject)
    if problem:
        raise VerificationError(Check.ENVELOPE_SIGNATURE, problem)
    log.passed(Check.ENVELOPE_SIGNATURE)  # (3)


def check_tlog(
    envelope: Envelope | None,
    key: PublicKeyTypes,
    log_keys: list[PublicKeyTypes],
    log: CheckLog[Check],
    *,
    required: bool = False,
) -> None:
    """`tlog-inclusion`: the bundle's Rekor v2 entry is this envelope's, included in a tree whose
    checkpoint one of `log_keys` signed (aicert.tlog). Skipped, saying why, when there is no entry
    or no pinned key; with `required` (`--require-tlog`) those fail instead."""
    reason = None
    if envelope is None:
        reason = NO_TLOG_BUNDLE
    elif not envelope.tlog_entries:
        reason = NO_TLOG_ENTRY
    elif not log_keys:
        reason = NO_TLOG_KEY
    if reason is not None:
        if required:
            raise VerificationError(
                Check.TLOG_INCLUSION, f"{reason}, and --require-tlog requires one checked"
            )
        log.skipped(Check.TLOG_INCLUSION, reason)
        return
    assert envelope is not None
    for entry in envelope.tlog_entries:
        problem = inclusion_problem(entry, envelope.signed_bytes, envelope.signature, key, log_keys)
        if problem:
            raise VerificationError(Check.TLOG_INCLUSION, problem)
    log.passed(Check.TLOG_INCLUSION)  # (3)
