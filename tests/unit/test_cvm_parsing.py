"""Parsing the confidential-VM evidence: real reports, the synthetic vectors, and hostile bytes.

The real Azure HCL report and the real SEV-SNP report (tests/assets/cvm) are read by the same
parser as the synthetic vectors of tests/cvm_vectors.py; every malformed input raises
MalformedError naming `evidence.platform.hclReport` (or the runtime data inside it) and the
layout field at fault, and no byte string makes a parser raise anything else.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.cvm_vectors import (
    CHIP_ID,
    GUEST_POLICY,
    MEASUREMENT,
    TCB,
    SnpFields,
    make_vector,
    rsa_jwk,
    rsa_key,
    runtime_data,
    sign_snp_report,
    snp_report_bytes,
    vcek_key,
)
from tests.fuzz.strategies import edited_bytes, examples

from aicert.cvm import (
    GuestPolicy,
    TcbVersion,
    parse_hcl_report,
    parse_snp_report,
    runtime_ak_public,
    tcb_at_least,
)
from aicert.cvm.hcl import HCL_REPORT_MAX_BYTES, RUNTIME_DATA_FIELD
from aicert.cvm.snp import HCL_FIELD
from aicert.verify.errors import MalformedError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "cvm"
AZURE_HCL_REPORT = (ASSETS / "azure-hcl-report-snp.bin").read_bytes()
GO_SEV_GUEST_REPORT = (ASSETS / "go-sev-guest-attestation.bin").read_bytes()


def set_u32(blob: bytes, offset: int, value: int) -> bytes:
    edited = bytearray(blob)
    struct.pack_into("<I", edited, offset, value)
    return bytes(edited)


def refusal(parse: Callable[[], Any]) -> MalformedError:
    with pytest.raises(MalformedError) as caught:
        parse()
    return caught.value


# --- real reports ---------------------------------------------------------------------------------


def test_the_real_azure_hcl_report_parses_field_by_field() -> None:
    hcl = parse_hcl_report(AZURE_HCL_REPORT)
    assert (hcl.header_version, hcl.report_size, hcl.request_type, hcl.status) == (1, 0x71B, 2, 0)
    assert (hcl.request_version, hcl.report_type, hcl.hash_name) == (1, 2, "sha256")
    assert len(hcl.runtime_data) == 0x247 and hcl.runtime_data.startswith(b'{"keys":[{"kid":"HCLAkPub"')
    report = parse_snp_report(hcl.snp_report)
    assert (report.version, report.vmpl, report.signature_algo, report.signing_key) == (2, 0, 1, 0)
    assert report.policy == GuestPolicy(0x3001F) and not report.policy.debug_allowed
    assert report.policy.smt_allowed and (report.policy.abi_major, report.policy.abi_minor) == (0, 31)
    assert report.reported_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert report.current_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=206)
    assert report.measurement.hex().startswith("5a71e4ba7e0b83e4")
    assert report.chip_id.hex().startswith("3a5d5b1d059d193e")
    # The paravisor's binding, which the verifier's cvm-report-data check relies on:
    assert report.report_data[:32] == hashlib.sha256(hcl.runtime_data).digest()
    ak = load_der_public_key(runtime_ak_public(hcl.runtime_data))
    assert isinstance(ak, rsa.RSAPublicKey) and ak.key_size == 2048


def test_the_real_go_sev_guest_report_parses_field_by_field() -> None:
    report = parse_snp_report(GO_SEV_GUEST_REPORT)
    assert (report.version, report.guest_svn, report.vmpl, report.cpuid) == (2, 0, 0, None)
    assert report.policy.raw == 0xB0000 and report.policy.debug_allowed  # launched debuggable
    assert report.report_data == bytes([1, 2, 3, 4, 5]).ljust(64, b"\0")
    assert report.measurement.hex().startswith("b07af9620f3b839b")
    assert report.reported_tcb == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert report.chip_id.hex().startswith("3ac3fe21e13fb099")
    assert report.signed_bytes == GO_SEV_GUEST_REPORT[:0x2A0]
    assert report.signature_r == int.from_bytes(GO_SEV_GUEST_REPORT[0x2A0:0x2E8], "little")


# --- the synthetic vectors follow the same layout -------------------------------------------------


def test_a_synthetic_report_reads_back_every_field_it_was_built_with() -> None:
    fields = SnpFields(
        report_data=bytes(range(64)),
        version=3,
        guest_svn=7,
        family_id=b"F" * 16,
        image_id=b"I" * 16,
        vmpl=2,
        current_tcb=TcbVersion(1, 2, 3, 4),
        platform_info=3,
        host_data=b"H" * 32,
        id_key_digest=b"K" * 48,
        author_key_digest=b"A" * 48,
        report_id_ma=b"M" * 32,
        reported_tcb=TcbVersion(5, 6, 7, 8),
        cpuid=(0x19, 0x11, 0x01),
        committed_tcb=TcbVersion(9, 10, 11, 12),
        launch_tcb=TcbVersion(13, 14, 15, 16),
    )
    raw = sign_snp_report(snp_report_bytes(fields), vcek_key())
    report = parse_snp_report(raw)
    for name in ("version", "guest_svn", "family_id", "image_id", "vmpl", "current_tcb", "platform_info"):
        assert getattr(report, name) == getattr(fields, name), name
    for name in ("report_data", "measurement", "host_data", "id_key_digest", "author_key_digest"):
        assert getattr(report, name) == getattr(fields, name), name
    for name in (
        "report_id",
        "report_id_ma",
        "reported_tcb",
        "cpuid",
        "chip_id",
        "committed_tcb",
        "launch_tcb",
    ):
        assert getattr(report, name) == getattr(fields, name), name
    assert report.policy.raw == GUEST_POLICY and report.signed_bytes == raw[:0x2A0]


def test_the_synthetic_hcl_report_has_azures_layout() -> None:
    vector = make_vector()
    hcl = parse_hcl_report(vector.hcl_report)
    assert len(vector.hcl_report) == len(AZURE_HCL_REPORT) == 2048
    assert vector.hcl_report[:4] == AZURE_HCL_REPORT[:4] == b"HCLA"
    assert hcl.snp_report == vector.snp_report and hcl.runtime_data == vector.runtime_data
    assert hcl.report_size == 0x4D4 + len(vector.runtime_data)
    assert runtime_ak_public(hcl.runtime_data) == vector.ak_spki_der
    assert (
        json.loads(vector.runtime_data).keys()
        == json.loads(parse_hcl_report(AZURE_HCL_REPORT).runtime_data).keys()
    )
    report = parse_snp_report(hcl.snp_report)
    assert (report.chip_id, report.measurement, report.reported_tcb) == (CHIP_ID, MEASUREMENT, TCB)


# --- the HCL report, field by field ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda b: b[:1235], "is 1235 bytes, shorter than the 1236-byte fixed part"),
        (lambda b: b"", "is 0 bytes, shorter"),
        (lambda b: b.ljust(HCL_REPORT_MAX_BYTES + 1, b"\0"), f"more than {HCL_REPORT_MAX_BYTES}, the limit"),
        (lambda b: b"HCLB" + b[4:], "header.signature (offset 0x000) is b'HCLB', not 'HCLA'"),
        (lambda b: set_u32(b, 0x004, 3), "header.version (offset 0x004) is 3, not 1 or 2"),
        (lambda b: set_u32(b, 0x4C4, 2), "request_data.version (offset 0x4c4) is 2, not 1"),
        (
            lambda b: set_u32(b, 0x4C8, 4),
            "request_data.report_type (offset 0x4c8) is 4 (TDX); only 2 (SEV-SNP)",
        ),
        (lambda b: set_u32(b, 0x4CC, 0), "request_data.report_data_hash_type (offset 0x4cc) is 0"),
        (lambda b: set_u32(b, 0x4CC, 4), "report_data_hash_type (offset 0x4cc) is 4, not 1 (SHA-256)"),
        (
            lambda b: set_u32(b, 0x4D0, 4096),
            "variable_data_size (offset 0x4d0) 4096 runs past the end (2048 bytes",
        ),
        (
            lambda b: set_u32(b, 0x4D0, 0xFFFFFFFF),
            "variable_data_size (offset 0x4d0) 4294967295 runs past the end",
        ),
        (
            lambda b: set_u32(b, 0x4C0, 21),
            "request_data.data_size (offset 0x4c0) is 21, not 20 + variable_data_size",
        ),
    ],
)
def test_a_malformed_hcl_report_is_refused_naming_the_field_and_offset(
    edit: Callable[[bytes], bytes], reason: str
) -> None:
    error = refusal(lambda: parse_hcl_report(edit(make_vector().hcl_report)))
    assert error.field == HCL_FIELD
    assert reason in error.reason


def test_the_real_azure_hcl_report_cut_short_is_refused() -> None:
    error = refusal(lambda: parse_hcl_report(AZURE_HCL_REPORT[:0x600]))
    assert (
        error.field == HCL_FIELD
        and "variable_data_size (offset 0x4d0) 583 runs past the end (1536" in error.reason
    )


# --- the SNP report -------------------------------------------------------------------------------


def _report(**changes: Any) -> bytes:
    return bytes(snp_report_bytes(SnpFields(report_data=bytes(64), **changes)))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "snp_report is 0 bytes; an SEV-SNP attestation report is 1184"),
        (GO_SEV_GUEST_REPORT + b"\0", "snp_report is 1185 bytes"),
        (_report(version=1), "snp_report.version (offset 0x020) is 1; supported report versions are 2 to 5"),
        (_report(version=6), "snp_report.version (offset 0x020) is 6"),
        (_report(signature_algo=2), "snp_report.signature_algo (offset 0x054) is 2; only 1 (ECDSA P-384"),
        (
            _report(version=3, cpuid=(0x1A, 0x02, 0x00)),
            "snp_report.cpuid_fam_id (offset 0x1a8) is 0x1a (Turin)",
        ),
    ],
)
def test_a_malformed_snp_report_is_refused_naming_the_field_and_its_offset_in_the_hcl_report(
    raw: bytes, reason: str
) -> None:
    error = refusal(lambda: parse_snp_report(raw, offset=0x20))
    assert error.field == HCL_FIELD
    assert reason in error.reason


def test_a_turin_cpuid_is_read_only_from_version_3_on() -> None:
    assert parse_snp_report(_report(version=2, cpuid=(0x1A, 0x02, 0x00))).cpuid is None


def test_an_unsupported_report_inside_the_hcl_report_is_refused_by_verify_platform() -> None:
    vector = make_vector(snp_fields={"signature_algo": 2})
    with pytest.raises(MalformedError, match=r"signature_algo \(offset 0x054\) is 2"):
        vector.verify()


# --- the runtime data and its HCLAkPub ------------------------------------------------------------


def _claims(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys), "vm-configuration": {}}).encode()


AK_JWK = rsa_jwk(rsa_key(0).public_key(), "HCLAkPub", ["sign"])


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b"\xff{}", RUNTIME_DATA_FIELD, "the HCL runtime data is not UTF-8"),
        (b"{", RUNTIME_DATA_FIELD, "the HCL runtime data is not JSON"),
        (b'{"keys": [], "keys": []}', RUNTIME_DATA_FIELD, "has the key 'keys' more than once"),
        (b"[]", RUNTIME_DATA_FIELD, "has no `keys` array"),
        (b'{"keys": {}}', RUNTIME_DATA_FIELD, "has no `keys` array"),
        (_claims(), f"{RUNTIME_DATA_FIELD}.keys", "has no key with kid 'HCLAkPub'"),
        (_claims(AK_JWK, AK_JWK), f"{RUNTIME_DATA_FIELD}.keys", "has 2 keys with kid 'HCLAkPub'"),
        (_claims(*[{}] * 17), f"{RUNTIME_DATA_FIELD}.keys", "holds more than 16 keys"),
        (
            _claims({**AK_JWK, "kty": "EC"}),
            f"{RUNTIME_DATA_FIELD}.keys[0].kty",
            "is 'EC'; HCLAkPub must be an RSA",
        ),
        (_claims({**AK_JWK, "n": "a+b/"}), f"{RUNTIME_DATA_FIELD}.keys[0].n", "is not a base64url string"),
        (_claims({**AK_JWK, "n": "A"}), f"{RUNTIME_DATA_FIELD}.keys[0].n", "is not a base64url string"),
        (_claims({**AK_JWK, "n": 5}), f"{RUNTIME_DATA_FIELD}.keys[0].n", "is not a base64url string"),
        (
            _claims({**AK_JWK, "n": "A" * 2000}),
            f"{RUNTIME_DATA_FIELD}.keys[0].n",
            "is longer than 1024 bytes",
        ),
        (_claims({**AK_JWK, "e": "AQAB" * 4}), f"{RUNTIME_DATA_FIELD}.keys[0].e", "is longer than 8 bytes"),
        (
            _claims({**AK_JWK, "n": "_" * 171}),
            f"{RUNTIME_DATA_FIELD}.keys[0].n",
            "is 1024 bits, not 2048 to 8192",
        ),
        (_claims({**AK_JWK, "e": "AAE"}), f"{RUNTIME_DATA_FIELD}.keys[0]", "is not an RSA public key"),
    ],
)
def test_runtime_data_without_one_readable_rsa_hclakpub_is_refused(
    data: bytes, field: str, reason: str
) -> None:
    error = refusal(lambda: runtime_ak_public(data))
    assert error.field == field
    assert reason in error.reason


def test_the_hclakpub_jwk_gives_the_ak_as_der_spki() -> None:
    other_keys = [rsa_jwk(rsa_key(2).public_key(), "HCLEkPub", ["encrypt"]), {"kid": 3}]
    der = runtime_ak_public(_claims(*other_keys, AK_JWK))
    assert load_der_public_key(der) == rsa_key(0).public_key()
    assert runtime_ak_public(runtime_data(rsa_key(0).public_key(), include_ek=True)) == der


def test_an_ec_ak_is_refused_clearly() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    jwk = {"kid": "HCLAkPub", "kty": "EC", "crv": "P-256", "x": str(key.x), "y": str(key.y)}
    with pytest.raises(MalformedError, match="must be an RSA key"):
        runtime_ak_public(_claims(jwk))


# --- the TCB version ------------------------------------------------------------------------------


def test_the_tcb_version_has_the_milan_and_genoa_byte_layout() -> None:
    tcb = TcbVersion.from_bytes(bytes([3, 1, 0xAA, 0xAA, 0xAA, 0xAA, 8, 0xD5]))
    assert tcb == TcbVersion(bootloader=3, tee=1, snp=8, microcode=0xD5)
    assert tcb.to_bytes() == bytes([3, 1, 0, 0, 0, 0, 8, 0xD5])
    assert tcb.as_dict() == {"bootloader": 3, "tee": 1, "snp": 8, "microcode": 0xD5}
    with pytest.raises(ValueError, match="8 bytes"):
        TcbVersion.from_bytes(bytes(7))
    with pytest.raises(ValueError, match="microcode"):
        TcbVersion(bootloader=0, tee=0, snp=0, microcode=256)


def test_tcb_at_least_names_each_component_below_the_minimum() -> None:
    reported = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert tcb_at_least(reported, reported) == []
    assert tcb_at_least(reported, TcbVersion(0, 0, 0, 0)) == []
    assert tcb_at_least(reported, TcbVersion(bootloader=4, tee=0, snp=9, microcode=115)) == [
        "bootloader",
        "snp",
    ]
    # A high microcode level does not make up for an old SNP firmware.
    assert tcb_at_least(TcbVersion(3, 0, 7, 255), TcbVersion(3, 0, 8, 0)) == ["snp"]


# --- no bytes make a parser raise anything but MalformedError -------------------------------------


def parse_everything(blob: bytes) -> None:
    hcl = parse_hcl_report(blob)
    parse_snp_report(hcl.snp_report, offset=0x20)
    runtime_ak_public(hcl.runtime_data)


LAYOUT_FIELDS = (0x004, 0x008, 0x020, 0x054, 0x068, 0x4C0, 0x4C4, 0x4C8, 0x4CC, 0x4D0)
"""Offsets of the u32 fields the parsers decide on (header, SNP version, algorithm, signer, request data)."""


@st.composite
def field_edits(draw: st.DrawFn) -> bytes:
    """The genuine HCL report with some layout fields set to any u32, then maybe cut short."""
    blob = make_vector().hcl_report
    for offset in draw(st.lists(st.sampled_from(LAYOUT_FIELDS), max_size=4)):
        value = draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)))
        blob = set_u32(blob, offset, value)
    return blob[: draw(st.integers(0, len(blob)))] if draw(st.booleans()) else blob


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(
    blob=st.one_of(
        st.binary(max_size=3000), edited_bytes(make_vector().hcl_report, max_edits=6), field_edits()
    )
)
def test_no_bytes_make_the_parsers_raise_anything_but_malformed_error(blob: bytes) -> None:
    try:
        parse_everything(blob)
    except MalformedError as error:
        assert error.field.startswith(HCL_FIELD) and error.reason


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(raw=st.one_of(st.binary(min_size=1184, max_size=1184), st.binary(max_size=1300)))
def test_no_bytes_make_the_snp_parser_raise_anything_but_malformed_error(raw: bytes) -> None:
    try:
        parse_snp_report(raw)
    except MalformedError as error:
        assert error.field == HCL_FIELD and error.reason


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(data=st.one_of(st.binary(max_size=800), edited_bytes(make_vector().runtime_data, max_edits=6)))
def test_no_runtime_data_makes_the_jwk_reader_raise_anything_but_malformed_error(data: bytes) -> None:
    try:
        runtime_ak_public(data)
    except MalformedError as error:
        assert error.field.startswith(RUNTIME_DATA_FIELD) and error.reason
