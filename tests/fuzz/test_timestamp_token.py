"""Property tests on the `timestamp` check: an RFC 3161 token from the certificate is untrusted
bytes, read by aicert.verify.tsa_token's DER reader and checked against trusted TSA roots.

Whatever the bytes, `read_response` returns or raises MalformedError, and `check_timestamp`
returns or raises MalformedError (exit 2: not a TimeStampResp) or VerificationError(timestamp)
(exit 1); and a token it accepts means what the genuine token means (its signed time, accuracy
and signing TSA), however the parts nothing signs were edited. Edits are byte edits, edits of one
DER value inside the token with every enclosing length rewritten (so the edit reaches the checks
past the reader), and edits of the token's unsigned certificate list. The genuine token
(tests/assets/tsa) was issued by the repository's Go test TSA over `SIGNATURE`, dated 2025-03-01.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from aicert.trust import TrustStore
from aicert.verify import MalformedError, VerificationError
from aicert.verify.errors import Check
from aicert.verify.timestamp import Timestamped, check_timestamp
from aicert.verify.tsa_token import read_response
from tests.fuzz.mutations import edit_bytes
from tests.fuzz.strategies import DrawChooser, edited_bytes, examples
from tests.tsa_tokens import as_version_2, children, der, tlv, tsa_certificate, tsa_root

pytestmark = pytest.mark.fuzz

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tsa"
TOKEN = (ASSETS / "token.der").read_bytes()
SIGNATURE = b"aicert fuzz seed: the quote signature"
SIGNED_AT = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
VERIFIED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TSA_ROOT = x509.load_pem_x509_certificate((ASSETS / "tsa-root.pem").read_bytes())


@pytest.fixture(scope="module")
def tsa() -> TrustStore:
    return TrustStore.from_pem_file(ASSETS / "tsa-root.pem")


def checked(token: bytes, tsa: TrustStore) -> Timestamped | None:
    """The result of the check, or None when it refused `token` as it may (exit 1 or 2)."""
    try:
        return check_timestamp(base64.b64encode(token).decode(), SIGNATURE, tsa, at=VERIFIED_AT)
    except MalformedError as exc:
        assert exc.field.startswith("evidence.timestamp") and exc.reason
    except VerificationError as exc:
        assert exc.check == Check.TIMESTAMP and exc.reason
    return None


@pytest.fixture(scope="module")
def genuine(tsa: TrustStore) -> Timestamped:
    stamped = checked(TOKEN, tsa)
    assert stamped is not None
    return stamped


def test_the_genuine_token_verifies(genuine: Timestamped) -> None:
    assert (genuine.time, genuine.accuracy, genuine.tsa) == (
        SIGNED_AT,
        dt.timedelta(seconds=1),
        "CN=aicert fuzz TSA unit",
    )


def test_the_genuine_token_over_other_bytes_fails(tsa: TrustStore) -> None:
    with pytest.raises(VerificationError) as caught:
        check_timestamp(base64.b64encode(TOKEN).decode(), SIGNATURE + b"!", tsa, at=VERIFIED_AT)
    assert caught.value.check == Check.TIMESTAMP


@settings(max_examples=examples(400), deadline=None)
@given(token=edited_bytes(TOKEN) | st.binary(max_size=2048))
def test_an_edited_token_is_refused_or_means_the_same(
    tsa: TrustStore, genuine: Timestamped, token: bytes
) -> None:
    stamped = checked(token, tsa)
    assert stamped is None or stamped == genuine


@settings(max_examples=examples(300), deadline=None)
@given(token=edited_bytes(TOKEN, max_edits=8) | st.binary(max_size=4096))
def test_the_reader_raises_nothing_but_malformed_error(token: bytes) -> None:
    try:
        read_response(token)
    except MalformedError as exc:
        assert exc.field.startswith("evidence.timestamp") and exc.reason


# --- edits of one DER value, lengths kept right ---------------------------------------------------


def der_values(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, ...]]:
    """The path (indices) of every DER value in `data`, outermost first, down to depth 12."""
    found: list[tuple[int, ...]] = []
    for index, (tag, _at, content, stop) in enumerate(
        children(data, start, len(data) if end is None else end)
    ):
        found.append((index,))
        if tag & 0x20 and depth < 12:
            found += [(index, *path) for path in der_values(data, content, stop, depth + 1)]
    return found


def replace_at(data: bytes, path: tuple[int, ...], edit: bytes) -> bytes:
    """`data` (a sequence of DER values) with the content of the value at `path` replaced by
    `edit`, and the length of it and of every value around it rewritten."""
    pieces = children(data, 0, len(data))
    tag, at, content, stop = pieces[path[0]]
    inner = edit if len(path) == 1 else replace_at(data[content:stop], path[1:], edit)
    return data[:at] + tlv(tag, inner) + data[stop:]


@st.composite
def der_edits(draw: st.DrawFn) -> bytes:
    paths = der_values(TOKEN)
    path = draw(st.sampled_from(paths))
    _, _, content, stop = _value(TOKEN, path)
    choose = DrawChooser(draw)
    return replace_at(TOKEN, path, edit_bytes(TOKEN[content:stop], choose, draw(st.integers(1, 3))))


def _value(data: bytes, path: tuple[int, ...]) -> tuple[int, int, int, int]:
    start, end = 0, len(data)
    for index in path:
        tag, at, content, stop = children(data, start, end)[index]
        start, end = content, stop
    return tag, at, start, end


@settings(max_examples=examples(400), deadline=None)
@given(token=der_edits())
def test_one_der_value_edited_is_refused_or_means_the_same(
    tsa: TrustStore, genuine: Timestamped, token: bytes
) -> None:
    stamped = checked(token, tsa)
    assert stamped is None or stamped == genuine


# --- the certificate list, which nothing signs ----------------------------------------------------

CERTIFICATES_PATH = (0, 1, 1, 0, 3)  # TimeStampResp, token, [0] content, SignedData, certificates

_root, _root_key = tsa_root("aicert fuzz TSA root")  # the real root's name, another key


def _certificates_of(token: bytes) -> list[bytes]:
    """The DER certificates of the genuine token, in order."""
    tag, _at, content, stop = _value(token, CERTIFICATES_PATH)
    assert tag == 0xA0
    return [token[at:end] for _t, at, _c, end in children(token, content, stop)]


def with_certificate_list(token: bytes, certificates: list[bytes]) -> bytes:
    return replace_at(token, CERTIFICATES_PATH, b"".join(certificates))


GENUINE_UNIT = _certificates_of(TOKEN)[0]
_impostor, _ = tsa_certificate(
    _root,
    ec.generate_private_key(ec.SECP256R1()),
    common_name="Impostor TSA",
    serial=x509.load_der_x509_certificate(GENUINE_UNIT).serial_number,
)
EXTRA = [
    der(_impostor),
    der(_root),
    der(TSA_ROOT),
    as_version_2(der(TSA_ROOT)),
    GENUINE_UNIT,
    b"\x30\x03\x02\x01\x00",
]


@settings(max_examples=examples(200), deadline=None)
@given(listed=st.lists(st.sampled_from(EXTRA), max_size=5), keep=st.booleans(), data=st.data())
def test_any_certificate_list_is_refused_or_names_the_signer(
    tsa: TrustStore, genuine: Timestamped, listed: list[bytes], keep: bool, data: st.DataObject
) -> None:
    certificates = [GENUINE_UNIT, *listed] if keep else listed
    order = data.draw(st.permutations(certificates))
    stamped = checked(with_certificate_list(TOKEN, list(order)), tsa)
    assert stamped is None or stamped == genuine
    if keep and as_version_2(der(TSA_ROOT)) not in listed and b"\x30\x03\x02\x01\x00" not in listed:
        assert stamped == genuine  # extra readable certificates change nothing


@settings(max_examples=examples(100), deadline=None)
@given(text=st.text(max_size=200))
def test_text_that_is_not_base64_is_malformed(tsa: TrustStore, text: str) -> None:
    try:
        check_timestamp(text, SIGNATURE, tsa, at=VERIFIED_AT)
    except (MalformedError, VerificationError):
        return
    pytest.fail("a token of arbitrary text verified")
