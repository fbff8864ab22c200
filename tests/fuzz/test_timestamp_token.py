"""Property tests on the `timestamp` check: an RFC 3161 token from the certificate is untrusted
bytes, parsed by rfc3161-client (Rust) and checked against trusted TSA roots.

Whatever the bytes, `check_timestamp` returns or raises MalformedError (exit 2: not a TimeStampResp)
or VerificationError(timestamp) (exit 1); and a token it accepts carries the genuine token's signed
time, however the unsigned parts around it were edited. The genuine token (tests/assets/tsa) was
issued by the repository's local test TSA over `SIGNATURE` and dated 2025-03-01.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicert.trust import TrustStore
from aicert.verify import MalformedError, VerificationError
from aicert.verify.errors import Check
from aicert.verify.timestamp import check_timestamp
from tests.fuzz.strategies import edited_bytes, examples

pytestmark = pytest.mark.fuzz

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tsa"
TOKEN = (ASSETS / "token.der").read_bytes()
SIGNATURE = b"aicert fuzz seed: the quote signature"
SIGNED_AT = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
VERIFIED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def tsa() -> TrustStore:
    return TrustStore.from_pem_file(ASSETS / "tsa-root.pem")


def test_the_genuine_token_verifies(tsa: TrustStore) -> None:
    assert check_timestamp(base64.b64encode(TOKEN).decode(), SIGNATURE, tsa, at=VERIFIED_AT).time == SIGNED_AT


def test_the_genuine_token_over_other_bytes_fails(tsa: TrustStore) -> None:
    with pytest.raises(VerificationError) as caught:
        check_timestamp(base64.b64encode(TOKEN).decode(), SIGNATURE + b"!", tsa, at=VERIFIED_AT)
    assert caught.value.check == Check.TIMESTAMP


@settings(max_examples=examples(400), deadline=None)
@given(token=edited_bytes(TOKEN) | st.binary(max_size=2048))
def test_an_edited_token_is_refused_or_keeps_the_signed_time(tsa: TrustStore, token: bytes) -> None:
    try:
        stamped = check_timestamp(base64.b64encode(token).decode(), SIGNATURE, tsa, at=VERIFIED_AT)
    except MalformedError as exc:
        assert exc.field.startswith("evidence.timestamp")
        return
    except VerificationError as exc:
        assert exc.check == Check.TIMESTAMP
        return
    assert stamped.time == SIGNED_AT


@settings(max_examples=examples(100), deadline=None)
@given(text=st.text(max_size=200))
def test_text_that_is_not_base64_is_malformed(tsa: TrustStore, text: str) -> None:
    try:
        check_timestamp(text, SIGNATURE, tsa, at=VERIFIED_AT)
    except (MalformedError, VerificationError):
        return
    pytest.fail("a token of arbitrary text verified")
