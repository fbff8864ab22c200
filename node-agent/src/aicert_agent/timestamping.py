"""Ask an RFC 3161 time-stamping authority to date a quote's signature (the agent's `--tsa-url`).

The token goes into the certificate's `evidence.timestamp` (see aicert.verify.timestamp): with it,
a verifier that trusts the TSA checks the AK certificate at the TSA's time instead of now, so a
certificate keeps verifying after its AK certificate expires. The response is checked here for
what the agent can know without trusting the TSA: granted, over this signature, with our nonce.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.error
import urllib.request
from typing import Any

MAX_RESPONSE_BYTES = 1 << 20
TIMEOUT_SECONDS = 10.0


class TimestampError(Exception):
    """The TSA could not be asked, or its answer is not a token over this signature."""


def request_timestamp(url: str, signature: bytes, *, timeout: float = TIMEOUT_SECONDS) -> str:
    """A TimeStampResp over sha256(`signature`), base64 DER, as `evidence.timestamp` holds it."""
    from rfc3161_client import HashAlgorithm, PKIStatus, TimestampRequestBuilder, decode_timestamp_response

    request = TimestampRequestBuilder(
        data=signature, hash_algorithm=HashAlgorithm.SHA256, nonce=True, cert_req=True
    ).build()
    http = urllib.request.Request(
        url,
        data=request.as_bytes(),
        headers={"Content-Type": "application/timestamp-query", "Accept": "application/timestamp-reply"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            body = answer.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TimestampError(f"the TSA at {url} did not answer: {exc}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise TimestampError(f"the TSA at {url} answered with more than {MAX_RESPONSE_BYTES} bytes")
    try:
        response = decode_timestamp_response(body)
    except (ValueError, TypeError) as exc:
        raise TimestampError(f"the TSA at {url} answered with no TimeStampResp: {exc}") from None
    if PKIStatus(response.status) not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(f"the TSA at {url} refused: status {response.status} {response.status_string}")
    info = response.tst_info
    if info.message_imprint.message != hashlib.sha256(signature).digest():
        raise TimestampError(f"the TSA at {url} dated other bytes than this quote's signature")
    if info.nonce != request.nonce:
        raise TimestampError(f"the TSA at {url} answered another request (nonce mismatch)")
    return base64.b64encode(body).decode()


def add_timestamp(certificate: dict[str, Any], url: str) -> None:
    """Date the sealed certificate's quote signature at `url` and put the token in its evidence.
    The statement and the quote are unchanged: the token is over what they already bind."""
    evidence = certificate["evidence"]
    evidence["timestamp"] = request_timestamp(url, base64.b64decode(evidence["quote"]["signature"]))
