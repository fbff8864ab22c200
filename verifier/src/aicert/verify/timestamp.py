"""The `timestamp` check: an RFC 3161 time-stamp token over the quote's signature.

A certificate proves nothing about when it was made: its quote carries the TPM's clock, not a
date. A time-stamping authority (TSA) the verifier trusts can say "this signature existed at T"
(RFC 3161). Then the AK certificate needs to have been valid at T, not now: a certificate sealed
while its AK certificate was valid keeps verifying after that certificate expires.

The token is `evidence.timestamp`: the TSA's whole TimeStampResp (DER, base64), whose message
imprint is sha256 of the quote's TPMT_SIGNATURE bytes as `evidence.quote.signature` holds them.
It is checked with rfc3161-client: status granted, the CMS signature, the TSA certificate's
critical id-kp-timeStamping usage, its chain to a trusted TSA root, and the imprint. Without a
trusted TSA root the check is skipped (reported), and the chain is checked at `--at` or now.
This module loads only for a certificate that carries a token, when a TSA root is trusted.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re

import msgspec
from cryptography import x509

from aicert.trust.store import TrustStore
from aicert.verify.errors import Check, MalformedError, VerificationError


class Timestamped(msgspec.Struct, frozen=True):
    time: dt.datetime  # the TSA's genTime, UTC
    tsa: str  # the subject of the TSA certificate that signed the token


def _decode(token_b64: str) -> object:
    from rfc3161_client import decode_timestamp_response

    try:
        der = base64.b64decode(token_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedError("evidence.timestamp", f"is not valid base64: {exc}") from None
    try:
        return decode_timestamp_response(der)
    except (ValueError, TypeError) as exc:
        raise MalformedError("evidence.timestamp", f"is not an RFC 3161 TimeStampResp: {exc}") from None


def _signer_subject(response: object) -> str:
    signed = response.signed_data  # type: ignore[attr-defined]
    infos = list(signed.signer_infos)
    for der in signed.certificates:
        cert = x509.load_der_x509_certificate(der)
        if infos and cert.issuer == infos[0].issuer and cert.serial_number == infos[0].serial_number:
            return cert.subject.rfc4514_string()
    return "(the TSA certificate is not in the token)"


def check_timestamp(token_b64: str, quote_signature: bytes, tsa: TrustStore) -> Timestamped:
    """The time a trusted TSA certified for `quote_signature`, or VerificationError(`timestamp`).
    `tsa` must hold at least one root (callers skip the check otherwise)."""
    from rfc3161_client import VerificationError as TokenError
    from rfc3161_client import VerifierBuilder

    response = _decode(token_b64)
    builder = VerifierBuilder()
    for anchor in tsa.anchors:
        builder = builder.add_root_certificate(anchor.certificate)
    for intermediate in tsa.intermediates:
        builder = builder.add_intermediate_certificate(intermediate)
    try:
        builder.build().verify(response, hashlib.sha256(quote_signature).digest())  # type: ignore[arg-type]
    except TokenError as exc:
        reason = str(exc)
        if "Mismatch between messages" in reason:
            reason = "the timestamp is over other bytes than this certificate's quote signature"
        elif found := re.search(r'Verify error: ([^"]+)"', reason):
            reason = f"the token's signature or its TSA's chain to a trusted TSA root does not verify: {found.group(1)}"
        elif len(reason) > 300:
            reason = reason[:300] + " …"
        raise VerificationError(Check.TIMESTAMP, reason) from None
    except (ValueError, TypeError) as exc:
        raise VerificationError(Check.TIMESTAMP, f"the token does not verify: {exc}") from None
    info = response.tst_info  # type: ignore[attr-defined]
    if str(info.message_imprint.hash_algorithm.dotted_string) != "2.16.840.1.101.3.4.2.1":
        raise VerificationError(Check.TIMESTAMP, "the timestamp's message imprint is not sha256")
    when = info.gen_time
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    return Timestamped(when, _signer_subject(response))
