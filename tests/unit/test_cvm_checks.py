"""The `cvm` checks: the genuine synthetic vector passes `verify_platform`, and each tampered input
fails with exactly its own check; the real AMD and Azure material passes the checks it can.

Each tamper test changes one input of tests/cvm_vectors.make_vector and expects one check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from tests.cvm_vectors import (
    AT,
    CHIP_ID,
    MEASUREMENT,
    TCB,
    CvmVector,
    amd_test_roots,
    hcl_report_bytes,
    make_vector,
    rsa_key,
    vcek_certificate,
)

from aicert.cvm import (
    PINNED_ARK_SHA256,
    TcbVersion,
    check_vcek_chain,
    measurement_allowed,
    parse_hcl_report,
    parse_snp_report,
    runtime_ak_public,
    vcek_extensions,
    verify_platform,
)
from aicert.cvm.ark_roots import built_in_arks
from aicert.cvm.check import check_debug, check_report_data, check_report_signature, check_vcek_matches_report
from aicert.trust.measurements import KnownMeasurement, KnownMeasurements
from aicert.verify.errors import Check, MalformedError, VerificationError

NONE_KNOWN = KnownMeasurements((), "no list: this test fails before cvm-measurement")
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "cvm"
AZURE_REPORT_TIME = dt.datetime.fromtimestamp(1678652405, dt.UTC)  # the report's "current-time"
GO_SEV_GUEST_TIME = dt.datetime(2022, 9, 24, 1, tzinfo=dt.UTC)  # when go-sev-guest checks its VCEK


def load_pem(name: str) -> list[x509.Certificate]:
    with warnings.catch_warnings():  # AMD's VCEKs have serial numbers cryptography warns about
        warnings.simplefilter("ignore")
        return x509.load_pem_x509_certificates((ASSETS / name).read_bytes())


def load_der(name: str) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate((ASSETS / name).read_bytes())


def failed_check(vector: CvmVector) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        vector.verify()
    return caught.value


# --- the genuine vector ---------------------------------------------------------------------------


def test_the_genuine_vector_passes_and_gives_the_facts_a_policy_needs() -> None:
    facts = make_vector().verify()
    assert facts.product == "Milan-B0"
    assert facts.chip_id == CHIP_ID.hex() and facts.measurement == MEASUREMENT.hex()
    assert len(facts.measurement) == 96 and facts.reported_tcb == TCB
    assert not facts.guest_policy.debug_allowed and facts.vmpl == 0 and facts.report_version == 2


@pytest.mark.parametrize(
    "order", [("vcek", "ask", "ark"), ("ark", "ask", "vcek"), ("ask", "vcek", "ark"), ("ark", "vcek", "ask")]
)
def test_the_chain_may_come_in_any_order(order: tuple[str, ...]) -> None:
    make_vector(chain_order=order).verify()


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_every_supported_report_version_passes(version: int) -> None:
    make_vector(version=version).verify()


@pytest.mark.parametrize("hash_type", [1, 2, 3])
def test_report_data_may_hold_any_of_the_three_hashes(hash_type: int) -> None:
    make_vector(hash_type=hash_type).verify()


def test_a_vcek_with_its_hwid_in_an_octet_string_is_read_too() -> None:
    vcek = vcek_certificate(amd_test_roots(), hwid_octet_string=True)
    assert vcek_extensions(vcek).hwid == CHIP_ID


def test_the_quote_ak_may_be_any_der_encoding_of_the_key() -> None:
    vector = make_vector()
    facts = verify_platform(
        vector.hcl_report,
        vector.certificates,
        runtime_ak_public(vector.runtime_data),
        AT,
        vector.ark_fingerprints,
        known_measurements=vector.known_measurements,
    )
    assert facts.chip_id == CHIP_ID.hex()


# --- one tampered input, one check ----------------------------------------------------------------


def test_an_ark_that_is_not_pinned_fails_cvm_chain() -> None:
    vector = make_vector(ark_fingerprints=frozenset(PINNED_ARK_SHA256.values()))  # AMD's, not the test ARK
    error = failed_check(vector)
    assert error.check == Check.CVM_CHAIN and "not a pinned AMD root" in error.reason


def test_an_ask_not_signed_by_the_ark_fails_cvm_chain() -> None:
    error = failed_check(make_vector(ask=amd_test_roots().ask_signed_by_another_key()))
    assert error.check == Check.CVM_CHAIN and "ASK's signature does not verify" in error.reason


def test_an_expired_vcek_fails_cvm_chain() -> None:
    error = failed_check(make_vector(vcek_not_after=AT - dt.timedelta(seconds=1)))
    assert (
        error.check == Check.CVM_CHAIN and "the VCEK" in error.reason and "not at 2026-01-01" in error.reason
    )


def test_a_vcek_for_another_chip_fails_cvm_chain() -> None:
    error = failed_check(make_vector(vcek_chip_id=bytes(64)))
    assert error.check == Check.CVM_CHAIN and "the VCEK is for chip 0000" in error.reason


def test_a_vcek_for_another_tcb_fails_cvm_chain() -> None:
    error = failed_check(make_vector(vcek_tcb=TcbVersion(bootloader=3, tee=0, snp=9, microcode=115)))
    assert error.check == Check.CVM_CHAIN and "certifies TCB bootloader=3 tee=0 snp=9" in error.reason


@pytest.mark.parametrize("index", [0, 71, 72, 143])
def test_a_flipped_signature_byte_fails_cvm_report_signature(index: int) -> None:
    error = failed_check(make_vector(flip_signature_byte=index))
    assert error.check == Check.CVM_REPORT_SIGNATURE


def test_report_data_not_hashing_the_runtime_data_fails_cvm_report_data() -> None:
    error = failed_check(make_vector(report_data=b"\x01" * 64))
    assert error.check == Check.CVM_REPORT_DATA and "not sha256 of the runtime data" in error.reason


def test_runtime_data_with_another_ak_fails_cvm_ak() -> None:
    error = failed_check(make_vector(runtime_ak=rsa_key(1).public_key()))
    assert error.check == Check.CVM_AK and "is not the quote's AK" in error.reason


def test_a_report_the_guest_os_asked_for_fails_cvm_vmpl() -> None:
    """Attack: root in the guest OS (VMPL 2 on Azure) asks the chip for a report whose report_data
    is the hash of runtime data naming a key of its own. The chip signs it, but at VMPL 2."""
    error = failed_check(make_vector(snp_fields={"vmpl": 2}))
    assert error.check == Check.CVM_VMPL and "VMPL 2" in error.reason


def test_a_debuggable_guest_fails_cvm_debug() -> None:
    error = failed_check(make_vector(debug=True))
    assert error.check == Check.CVM_DEBUG and "allows debugging (bit 19)" in error.reason


def test_a_genuine_report_of_unknown_firmware_fails_cvm_measurement() -> None:
    """Attack: code at VMPL 0 of any SEV-SNP guest (another cloud, bare metal, a paravisor of its
    own) asks the chip for a report whose runtime data names an Azure-certified AK. The chip
    signs it genuinely; only the launch measurement shows it is not Azure's paravisor."""
    own_firmware = hashlib.sha384(b"a VMPL 0 firmware of the attacker's own").digest()
    error = failed_check(make_vector(measurement=own_firmware))
    assert error.check == Check.CVM_MEASUREMENT
    assert own_firmware.hex() in error.reason and "known-good paravisor" in error.reason


def test_without_a_known_good_list_cvm_measurement_fails() -> None:
    error = failed_check(make_vector(known_measurements=KnownMeasurements((), "no list given")))
    assert error.check == Check.CVM_MEASUREMENT
    assert "no known-good paravisor launch measurement" in error.reason and "no list given" in error.reason


def test_the_known_good_list_names_where_the_measurement_comes_from() -> None:
    known = KnownMeasurements(
        (KnownMeasurement(MEASUREMENT.hex(), "tests: the synthetic paravisor"),), "tests/cvm_vectors.py"
    )
    facts = make_vector(known_measurements=known).verify()
    assert facts.measurement_source == "tests: the synthetic paravisor"


# --- tampering after the chip signed --------------------------------------------------------------


def test_setting_the_debug_bit_after_signing_fails_cvm_report_signature() -> None:
    vector = make_vector()
    report = bytearray(vector.snp_report)
    report[0x008 + 2] |= 0x08  # policy bit 19
    tampered = hcl_report_bytes(bytes(report), vector.runtime_data)
    with pytest.raises(VerificationError) as caught:
        verify_platform(
            tampered,
            vector.certificates,
            vector.ak_spki_der,
            AT,
            vector.ark_fingerprints,
            known_measurements=vector.known_measurements,
        )
    assert caught.value.check == Check.CVM_REPORT_SIGNATURE


def test_runtime_data_edited_after_signing_fails_cvm_report_data() -> None:
    vector = make_vector()
    edited = vector.runtime_data.replace(b'"secure-boot":true', b'"secure-boot":false')
    assert edited != vector.runtime_data
    tampered = hcl_report_bytes(vector.snp_report, edited)
    with pytest.raises(VerificationError) as caught:
        verify_platform(
            tampered,
            vector.certificates,
            vector.ak_spki_der,
            AT,
            vector.ark_fingerprints,
            known_measurements=vector.known_measurements,
        )
    assert caught.value.check == Check.CVM_REPORT_DATA


def test_a_report_claiming_another_signing_key_fails_cvm_report_signature() -> None:
    error = failed_check(make_vector(snp_fields={"signer_info": 1 << 2}))  # signing_key 1: a VLEK
    assert error.check == Check.CVM_REPORT_SIGNATURE and "signing key is VLEK" in error.reason


def test_a_quote_ak_that_is_not_der_is_malformed() -> None:
    vector = make_vector()
    with pytest.raises(MalformedError) as caught:
        verify_platform(
            vector.hcl_report,
            vector.certificates,
            b"not der",
            AT,
            vector.ark_fingerprints,
            known_measurements=vector.known_measurements,
        )
    assert caught.value.field == "evidence.ak.public"


def test_the_time_must_be_timezone_aware() -> None:
    vector = make_vector()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_platform(
            vector.hcl_report,
            vector.certificates,
            vector.ak_spki_der,
            AT.replace(tzinfo=None),
            known_measurements=vector.known_measurements,
        )


# --- the shape of the chain -----------------------------------------------------------------------


def chain_failure(certificates: list[x509.Certificate], fingerprints: frozenset[str] | None = None) -> str:
    pinned = fingerprints if fingerprints is not None else frozenset({amd_test_roots().ark_fingerprint})
    with pytest.raises(VerificationError) as caught:
        check_vcek_chain(certificates, AT, pinned)
    assert caught.value.check == Check.CVM_CHAIN
    return caught.value.reason


def test_chain_shapes_that_are_not_vcek_ask_ark_fail_cvm_chain() -> None:
    roots = amd_test_roots()
    vcek = vcek_certificate(roots)
    other_vcek = vcek_certificate(roots, key=ec.generate_private_key(ec.SECP384R1()))
    assert "5 certificates given" in chain_failure([vcek, roots.ask, roots.ark, roots.ark, roots.ark])
    assert "0 certificates given" in chain_failure([])
    assert "0 ECDSA certificates" in chain_failure([roots.ask, roots.ark])
    assert "2 ECDSA certificates" in chain_failure([vcek, other_vcek, roots.ask, roots.ark])
    assert "0 certificates are named" in chain_failure([vcek, roots.ark])
    assert "2 certificates are named" in chain_failure([vcek, roots.ask, roots.ask, roots.ark])
    assert "(the ASK's issuer) is given or pinned" in chain_failure([vcek, roots.ask])
    real_ark = built_in_arks()["Milan"]
    assert "is not part of the VCEK -> ASK -> ARK chain" in chain_failure(
        [vcek, roots.ask, roots.ark, real_ark]
    )


def test_a_vcek_on_another_curve_fails_cvm_chain() -> None:
    roots = amd_test_roots()
    vcek = vcek_certificate(roots, key=ec.generate_private_key(ec.SECP256R1()))
    assert "not on curve P-384" in chain_failure([vcek, roots.ask, roots.ark])


def test_an_ask_signed_with_pkcs1v15_fails_cvm_chain() -> None:
    roots = amd_test_roots()
    ask = (
        x509.CertificateBuilder()
        .subject_name(roots.ask.subject)
        .issuer_name(roots.ark.subject)
        .public_key(roots.ask_key.public_key())
        .serial_number(1)
        .not_valid_before(roots.ask.not_valid_before_utc)
        .not_valid_after(roots.ask.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(roots.ark_key, hashes.SHA384(), rsa_padding=padding.PKCS1v15())
    )
    assert "ASK is not signed with RSASSA-PSS" in chain_failure([vcek_certificate(roots), ask, roots.ark])


def test_a_vcek_without_amds_extensions_fails_cvm_chain() -> None:
    roots = amd_test_roots()
    plain = (
        x509.CertificateBuilder()
        .subject_name(roots.ask.subject)
        .issuer_name(roots.ask.subject)
        .public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
        .serial_number(1)
        .not_valid_before(AT - dt.timedelta(days=1))
        .not_valid_after(AT + dt.timedelta(days=1))
        .sign(roots.ask_key, hashes.SHA384(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA384()), 48))
    )
    with pytest.raises(VerificationError, match="no hwID extension") as caught:
        vcek_extensions(plain)
    assert caught.value.check == Check.CVM_CHAIN


# --- the pinned AMD roots and the real material ---------------------------------------------------


def test_the_built_in_arks_are_amds_and_match_the_pinned_fingerprints() -> None:
    for product, ark in built_in_arks().items():
        published = load_pem(f"ask_ark_{product.lower()}.pem")[1]
        assert ark == published and ark.subject == ark.issuer
        assert ark.fingerprint(hashes.SHA256()).hex() == PINNED_ARK_SHA256[product]
        assert ark.subject.rfc4514_string().startswith(f"CN=ARK-{product},")


def test_the_real_azure_vcek_chain_holds_with_or_without_its_ark() -> None:
    certificates = load_pem("azure-vcek-chain.pem")
    vcek = check_vcek_chain(certificates, AZURE_REPORT_TIME)
    assert check_vcek_chain(certificates[:2], AZURE_REPORT_TIME) == vcek  # the built-in ARK stands in
    assert check_vcek_chain(certificates[::-1], AZURE_REPORT_TIME) == vcek
    extensions = vcek_extensions(vcek)
    assert extensions.product_name == "Milan-B0" and extensions.tcb == TcbVersion(3, 0, 8, 115)
    with pytest.raises(VerificationError, match=r"the VCEK .* is valid from 2023-01-01") as caught:
        check_vcek_chain(certificates, dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert caught.value.check == Check.CVM_CHAIN


def test_the_real_genoa_ask_does_not_chain_to_the_milan_ark() -> None:
    milan_ask, milan_ark = load_pem("ask_ark_milan.pem")
    genoa_ask, _genoa_ark = load_pem("ask_ark_genoa.pem")
    vcek = load_der("go-sev-guest-vcek.der")
    assert "0 certificates are named" in chain_failure(
        [vcek, genoa_ask, milan_ark], frozenset(PINNED_ARK_SHA256.values())
    )
    check_vcek_chain([vcek, milan_ask, milan_ark], GO_SEV_GUEST_TIME)


def test_the_real_sev_snp_report_is_signed_by_its_real_vcek() -> None:
    report = parse_snp_report((ASSETS / "go-sev-guest-attestation.bin").read_bytes())
    vcek = check_vcek_chain(
        [load_der("go-sev-guest-vcek.der"), *load_pem("ask_ark_milan.pem")], GO_SEV_GUEST_TIME
    )
    assert check_vcek_matches_report(vcek, report).tcb == report.reported_tcb
    check_report_signature(report, vcek)
    with pytest.raises(VerificationError) as caught:
        check_debug(report)  # go-sev-guest's test VM was launched debuggable
    assert caught.value.check == Check.CVM_DEBUG
    tampered = parse_snp_report(report.raw[:0x90] + bytes([report.raw[0x90] ^ 1]) + report.raw[0x91:])
    with pytest.raises(VerificationError) as caught:
        check_report_signature(tampered, vcek)  # one bit of the measurement
    assert caught.value.check == Check.CVM_REPORT_SIGNATURE


def test_the_real_azure_report_binds_its_runtime_data_but_its_vcek_is_another_chips() -> None:
    blob = (ASSETS / "azure-hcl-report-snp.bin").read_bytes()
    hcl = parse_hcl_report(blob)
    check_report_data(hcl, parse_snp_report(hcl.snp_report))
    ak = runtime_ak_public(hcl.runtime_data)
    with pytest.raises(VerificationError, match="the VCEK is for chip da8a5695") as caught:
        verify_platform(
            blob, load_pem("azure-vcek-chain.pem"), ak, AZURE_REPORT_TIME, known_measurements=NONE_KNOWN
        )
    assert caught.value.check == Check.CVM_CHAIN


# --- the policy helpers ---------------------------------------------------------------------------


def test_measurement_allowed_compares_hex_case_insensitively() -> None:
    measurement = MEASUREMENT.hex()
    assert measurement_allowed(measurement, [measurement.upper()])
    assert not measurement_allowed(measurement, [hashlib.sha384(b"other").hexdigest()])
    assert not measurement_allowed(measurement, [])


CHECKS_IN_ORDER: list[tuple[Check, Callable[[], CvmVector]]] = [
    (Check.CVM_CHAIN, lambda: make_vector(vcek_chip_id=bytes(64), flip_signature_byte=0, debug=True)),
    (
        Check.CVM_REPORT_SIGNATURE,
        lambda: make_vector(flip_signature_byte=0, report_data=bytes(64), debug=True),
    ),
    (Check.CVM_REPORT_DATA, lambda: make_vector(report_data=bytes(64), runtime_ak=rsa_key(1).public_key())),
    (Check.CVM_AK, lambda: make_vector(runtime_ak=rsa_key(1).public_key(), debug=True)),
]


@pytest.mark.parametrize(("first", "vector"), CHECKS_IN_ORDER, ids=[c for c, _ in CHECKS_IN_ORDER])
def test_with_several_faults_the_first_check_in_order_fails(
    first: Check, vector: Callable[[], CvmVector]
) -> None:
    assert failed_check(vector()).check == first
