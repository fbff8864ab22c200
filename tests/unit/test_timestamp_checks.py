"""The `timestamp` check against tokens an attacker or a faulty TSA would make (tests.tsa_tokens).

Genuine tokens from the repository's Go TSA are in tests/integration/test_timestamps.py and
tests/assets/tsa; here each test changes one thing of a well-formed token and expects exactly
the `timestamp` failure (exit 1), or unusable input (exit 2) for bytes that are not a token. The
TSA named in a verified result is always the certificate that signed, chained to a trusted root.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tests.tsa_tokens import (
    SHA384,
    Minted,
    TokenSpec,
    as_version_2,
    der,
    make_response,
    make_tsa,
    tsa_certificate,
    tsa_root,
    tst_info,
    with_certificates,
)

from aicert.trust import TrustStore
from aicert.verify import MalformedError, VerificationError
from aicert.verify.errors import Check
from aicert.verify.timestamp import Timestamped, check_timestamp

SIGNATURE = b"the quote's TPMT_SIGNATURE"
LATER = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the verification time, after the tokens' 2025-03-01
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tsa"
GENUINE = (ASSETS / "token.der").read_bytes()  # made by the Go TSA, dated 2025-03-01
GENUINE_SIGNATURE = b"aicert fuzz seed: the quote signature"


@pytest.fixture(scope="module")
def minted() -> Minted:
    return Minted()


def trusting(*roots: x509.Certificate, intermediates: tuple[x509.Certificate, ...] = ()) -> TrustStore:
    return TrustStore.from_certificates([*roots, *intermediates], "test TSA roots", dev_level=False)


def check(
    response: bytes, tsa: TrustStore, *, at: dt.datetime = LATER, signature: bytes = SIGNATURE
) -> Timestamped:
    return check_timestamp(base64.b64encode(response).decode(), signature, tsa, at=at)


def refused(response: bytes, tsa: TrustStore, *, at: dt.datetime = LATER) -> str:
    with pytest.raises(VerificationError) as caught:
        check(response, tsa, at=at)
    assert caught.value.check == Check.TIMESTAMP
    return caught.value.reason


def test_a_well_formed_token_gives_its_time_accuracy_and_signer(minted: Minted) -> None:
    stamped = check(make_response(minted.spec(SIGNATURE)), trusting(minted.tsa.root))
    assert stamped.time == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert stamped.accuracy == dt.timedelta(seconds=1)
    assert (stamped.earliest, stamped.latest) == (
        stamped.time - stamped.accuracy,
        stamped.time + stamped.accuracy,
    )
    assert stamped.tsa == "CN=python TSA unit"


def test_the_go_tsas_token_verifies() -> None:
    stamped = check(GENUINE, TrustStore.from_pem_file(ASSETS / "tsa-root.pem"), signature=GENUINE_SIGNATURE)
    assert stamped.tsa == "CN=aicert fuzz TSA unit" and stamped.accuracy == dt.timedelta(seconds=1)


# --- which TSA signed ----------------------------------------------------------------------------


def test_a_certificate_appended_under_the_signers_issuer_and_serial_is_not_named(minted: Minted) -> None:
    """Attack: the SignerInfo names the signer by issuer and serial number only, which anyone can
    copy into a certificate of their own. Appended to the token, its subject must not be shown."""
    tsa = minted.tsa
    impostor, _ = tsa_certificate(
        tsa.root,
        ec.generate_private_key(ec.SECP256R1()),
        common_name="Impostor TSA",
        serial=tsa.certificate.serial_number,
    )
    for order in ((impostor, tsa.certificate), (tsa.certificate, impostor)):
        response = make_response(minted.spec(SIGNATURE, certificates=tuple(der(c) for c in order)))
        assert check(response, trusting(tsa.root)).tsa == "CN=python TSA unit"


def test_an_impostor_appended_to_a_genuine_go_token_is_not_named() -> None:
    genuine_unit = next(x509.load_der_x509_certificate(d) for d in _certificates_of(GENUINE))
    root, root_key = tsa_root("aicert fuzz TSA root")  # the same name, another key
    impostor, _ = tsa_certificate(
        root, root_key, common_name="Impostor TSA", serial=genuine_unit.serial_number
    )
    response = with_certificates(GENUINE, [der(impostor)])
    stamped = check(response, TrustStore.from_pem_file(ASSETS / "tsa-root.pem"), signature=GENUINE_SIGNATURE)
    assert stamped.tsa == "CN=aicert fuzz TSA unit"


def _certificates_of(response: bytes) -> list[bytes]:
    from rfc3161_client import decode_timestamp_response

    return sorted(decode_timestamp_response(response).signed_data.certificates)


def test_a_token_without_an_ess_signing_certificate_attribute_fails(minted: Minted) -> None:
    reason = refused(make_response(minted.spec(SIGNATURE, ess="none")), trusting(minted.tsa.root))
    assert "no ESS signing-certificate" in reason


@pytest.mark.parametrize("ess", ["v1", "v2", "both"])
def test_either_ess_attribute_names_the_signer(minted: Minted, ess: str) -> None:
    check(make_response(minted.spec(SIGNATURE, ess=ess)), trusting(minted.tsa.root))
    check(make_response(minted.spec(SIGNATURE, ess=ess, ess_issuer_serial=False)), trusting(minted.tsa.root))


@pytest.mark.parametrize("ess", ["v1", "v2"])
def test_an_ess_attribute_naming_another_certificate_fails(minted: Minted, ess: str) -> None:
    other, _ = tsa_certificate(minted.tsa.root, minted.tsa.root_key, common_name="another unit")
    response = make_response(
        minted.spec(
            SIGNATURE, ess=ess, ess_certificate=other, certificates=(der(minted.tsa.certificate), der(other))
        )
    )
    assert "signing-certificate" in refused(response, trusting(minted.tsa.root))


def test_an_ess_issuer_serial_naming_another_serial_fails(minted: Minted) -> None:
    response = make_response(minted.spec(SIGNATURE, ess_serial=minted.tsa.certificate.serial_number + 1))
    assert "issuer and serial number" in refused(response, trusting(minted.tsa.root))


def test_signed_attributes_naming_a_certificate_whose_key_did_not_sign_fail(minted: Minted) -> None:
    """The SignerInfo and the ESS attribute both name another certificate of the same TSA root;
    the signature is by the real unit's key, so it does not verify with the named one's."""
    other, _ = tsa_certificate(minted.tsa.root, minted.tsa.root_key, common_name="another unit")
    response = make_response(
        minted.spec(
            SIGNATURE,
            sid_certificate=other,
            ess_certificate=other,
            certificates=(der(minted.tsa.certificate), der(other)),
        )
    )
    assert "signature does not verify" in refused(response, trusting(minted.tsa.root))


def test_a_signer_from_an_untrusted_root_fails(minted: Minted) -> None:
    reason = refused(make_response(minted.spec(SIGNATURE)), trusting(make_tsa("other TSA").root))
    assert "trusted TSA root" in reason


def test_a_signer_without_critical_time_stamping_usage_fails(minted: Minted) -> None:
    tsa = minted.tsa
    for changes in (
        {"eku_critical": False},
        {"usages": None},
        {"usages": (x509.ExtendedKeyUsageOID.CODE_SIGNING,)},
        {"usages": (x509.ExtendedKeyUsageOID.TIME_STAMPING, x509.ExtendedKeyUsageOID.CODE_SIGNING)},
    ):
        cert, key = tsa_certificate(tsa.root, tsa.root_key, **changes)  # type: ignore[arg-type]
        signer = type(tsa)(cert, key, tsa.root, tsa.root_key)
        response = make_response(TokenSpec(signer, hashlib.sha256(SIGNATURE).digest()))
        assert "id-kp-timeStamping" in refused(response, trusting(tsa.root)), changes


def test_a_signer_not_valid_at_the_tokens_time_fails(minted: Minted) -> None:
    tsa = minted.tsa
    cert, key = tsa_certificate(tsa.root, tsa.root_key, not_before=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    signer = type(tsa)(cert, key, tsa.root, tsa.root_key)
    response = make_response(TokenSpec(signer, hashlib.sha256(SIGNATURE).digest()))
    assert "not valid before 2025-06-01" in refused(response, trusting(tsa.root))


# --- what was signed -----------------------------------------------------------------------------


def test_a_tst_info_swapped_after_signing_fails_the_message_digest(minted: Minted) -> None:
    later = tst_info(minted.spec(SIGNATURE, gen_time=dt.datetime(2025, 4, 1, tzinfo=dt.UTC)))
    response = make_response(minted.spec(SIGNATURE, tst_info_after_signing=later))
    assert "message digest" in refused(response, trusting(minted.tsa.root))


def test_a_signed_content_type_other_than_tst_info_fails(minted: Minted) -> None:
    for content_type in (None, "1.2.840.113549.1.7.1"):
        response = make_response(minted.spec(SIGNATURE, content_type=content_type))
        assert "content-type" in refused(response, trusting(minted.tsa.root))


def test_two_signer_infos_fail(minted: Minted) -> None:
    assert "one SignerInfo" in refused(
        make_response(minted.spec(SIGNATURE, signer_infos=2)), trusting(minted.tsa.root)
    )


def test_a_token_the_tsa_did_not_grant_fails(minted: Minted) -> None:
    assert "status 2" in refused(make_response(minted.spec(SIGNATURE, status=2)), trusting(minted.tsa.root))
    check(make_response(minted.spec(SIGNATURE, status=1)), trusting(minted.tsa.root))  # grantedWithMods


def test_a_token_over_other_bytes_fails(minted: Minted) -> None:
    response = make_response(minted.spec(b"another quote's signature"))
    assert "over other bytes" in refused(response, trusting(minted.tsa.root))


def test_a_message_imprint_that_is_not_sha256_fails(minted: Minted) -> None:
    response = make_response(minted.spec(SIGNATURE, imprint_algorithm=SHA384))
    assert "not sha256" in refused(response, trusting(minted.tsa.root))


# --- when ----------------------------------------------------------------------------------------


def test_a_token_dated_after_the_verification_time_fails(minted: Minted) -> None:
    response = make_response(minted.spec(SIGNATURE, gen_time=dt.datetime(2025, 3, 1, tzinfo=dt.UTC)))
    reason = refused(response, trusting(minted.tsa.root), at=dt.datetime(2025, 2, 1, tzinfo=dt.UTC))
    assert "dated 2025-03-01T00:00:00Z" in reason and "after 2025-02-01T00:00:00Z" in reason
    # within its accuracy of the verification time it may be: the TSA's clock may run ahead by that
    check(response, trusting(minted.tsa.root), at=dt.datetime(2025, 2, 28, 23, 59, 59, 500000, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [
        (None, dt.timedelta(0)),
        ((None, 500, None), dt.timedelta(milliseconds=500)),
        ((2, 1, 1), dt.timedelta(seconds=2, milliseconds=1, microseconds=1)),
    ],
)
def test_the_accuracy_is_read_as_rfc_3161_defines_it(
    minted: Minted, accuracy: tuple[int | None, int | None, int | None] | None, expected: dt.timedelta
) -> None:
    assert (
        check(make_response(minted.spec(SIGNATURE, accuracy=accuracy)), trusting(minted.tsa.root)).accuracy
        == expected
    )


@pytest.mark.parametrize("accuracy", [(86401, None, None), (86400, None, 1), (2**70, None, None)])
def test_an_accuracy_coarser_than_a_day_fails(
    minted: Minted, accuracy: tuple[int | None, int | None, int | None]
) -> None:
    assert "coarser than a day" in refused(
        make_response(minted.spec(SIGNATURE, accuracy=accuracy)), trusting(minted.tsa.root)
    )


@pytest.mark.parametrize(
    "accuracy", [(None, 1000, None), (None, 0, None), (None, None, 1000), (-1, None, None)]
)
def test_an_accuracy_outside_its_asn1_range_is_unusable_input(
    minted: Minted, accuracy: tuple[int | None, int | None, int | None]
) -> None:
    with pytest.raises(MalformedError, match="accuracy"):
        check(make_response(minted.spec(SIGNATURE, accuracy=accuracy)), trusting(minted.tsa.root))


# --- no crash ------------------------------------------------------------------------------------


def test_an_appended_x509_v2_certificate_is_unusable_input_not_a_crash(minted: Minted) -> None:
    response = with_certificates(GENUINE, [as_version_2(der(minted.tsa.root))])
    with pytest.raises(MalformedError) as caught:
        check(response, TrustStore.from_pem_file(ASSETS / "tsa-root.pem"), signature=GENUINE_SIGNATURE)
    assert caught.value.field.startswith("evidence.timestamp") and "certificate" in caught.value.reason


def test_the_same_root_trusted_twice_is_not_a_crash(minted: Minted) -> None:
    tsa = trusting(minted.tsa.root, minted.tsa.root) + trusting(minted.tsa.root)
    assert check(make_response(minted.spec(SIGNATURE)), tsa).tsa == "CN=python TSA unit"
    doubled = TrustStore.from_pem_file(ASSETS / "tsa-root.pem")
    check(GENUINE, doubled + doubled, signature=GENUINE_SIGNATURE)


def test_a_window_at_the_ends_of_the_calendar_is_not_a_crash() -> None:
    """genTime is read from the token; at year 1 or 9999 its window must not overflow."""
    second = dt.timedelta(seconds=1)
    first = Timestamped(dt.datetime.min.replace(tzinfo=dt.UTC), "CN=TSA", second)
    last = Timestamped(dt.datetime.max.replace(tzinfo=dt.UTC), "CN=TSA", second)
    assert first.earliest == first.time and first.latest == first.time + second
    assert last.latest == last.time and last.earliest == last.time - second
