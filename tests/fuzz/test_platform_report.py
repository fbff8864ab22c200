"""Property tests on `evidence.platform.hclReport` checked whole, by `verify_platform`: the parsers
(tests/unit/test_cvm_parsing.py fuzzes those alone) and then every `cvm-*` check on what they read.

From a genuine synthetic vector (tests.cvm_vectors) the bytes are edited anywhere: in the unsigned
header, the chip-signed SEV-SNP report, its signature, the request data, the runtime data and the
padding. Whatever the edit, `verify_platform` returns the genuine facts unchanged (an edit of bytes
nothing signs and nothing reads) or raises MalformedError naming `evidence.platform.hclReport` (exit
2) or VerificationError naming a `cvm-*` check (exit 1); nothing else.

An attacker at VMPL 0 can have the chip sign any report it likes, so reports are also re-signed
with the vector's VCEK after the edit: then each rule decides alone, and the failure must be the
check of the first rule the edited report breaks (an independent restatement of the rules here).
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicert.cvm import PlatformFacts, verify_platform
from aicert.cvm.snp import HCL_FIELD, SIGNED_LENGTH
from aicert.verify.errors import CVM_CHECKS, Check, MalformedError, VerificationError
from tests.cvm_vectors import (
    AT,
    CHIP_ID,
    MEASUREMENT,
    TCB,
    hcl_report_bytes,
    make_vector,
    sign_snp_report,
    vcek_key,
)
from tests.fuzz.strategies import edited_bytes, examples

pytestmark = pytest.mark.fuzz

VECTOR = make_vector()
GENUINE = VECTOR.verify()
SNP_OFFSET = 0x20
LAYOUT_FIELDS = (0x004, 0x008, 0x00C, 0x010, 0x4C0, 0x4C4, 0x4C8, 0x4CC, 0x4D0)
"""The u32 fields of the HCL header and request data: unsigned, read or recorded."""


def verified(blob: bytes) -> PlatformFacts | Check | None:
    """The facts, the failed check, or None for unusable input; AssertionError for anything else."""
    try:
        facts = verify_platform(
            blob,
            VECTOR.certificates,
            VECTOR.ak_spki_der,
            AT,
            VECTOR.ark_fingerprints,
            known_measurements=VECTOR.known_measurements,
        )
    except MalformedError as error:
        assert error.field.startswith(HCL_FIELD) and error.reason, error
        return None
    except VerificationError as error:
        assert error.check in CVM_CHECKS and error.reason, error
        return error.check
    return facts


@st.composite
def layout_edits(draw: st.DrawFn) -> bytes:
    blob = bytearray(VECTOR.hcl_report)
    for offset in draw(st.lists(st.sampled_from(LAYOUT_FIELDS), min_size=1, max_size=3)):
        struct.pack_into("<I", blob, offset, draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1))))
    return bytes(blob)


@settings(max_examples=examples(400), deadline=None)
@given(blob=st.one_of(edited_bytes(VECTOR.hcl_report, max_edits=6), layout_edits(), st.binary(max_size=3000)))
def test_an_edited_hcl_report_is_refused_or_means_the_same(blob: bytes) -> None:
    result = verified(blob)
    if isinstance(result, PlatformFacts):
        assert result == GENUINE


def expected_failure(report: bytes, runtime: bytes) -> Check | None:
    """The first rule a (validly signed, parseable) report breaks, restated from the SEV-SNP ABI
    and docs/confidential-vm.md rather than read from aicert.cvm."""
    u32 = lambda at: struct.unpack_from("<I", report, at)[0]  # noqa: E731
    spl = [0, 1, 6, 7]  # TCB_VERSION: boot loader, TEE, SNP, microcode; bytes 2-5 are reserved
    if report[0x1A0:0x1E0] != CHIP_ID or [report[0x180 + i] for i in spl] != [TCB.to_bytes()[i] for i in spl]:
        return Check.CVM_CHAIN
    if u32(0x048) >> 2 & 7 != 0:
        return Check.CVM_REPORT_SIGNATURE
    if u32(0x030) != 0:
        return Check.CVM_VMPL
    if report[0x050:0x070] != hashlib.sha256(runtime).digest():
        return Check.CVM_REPORT_DATA
    if struct.unpack_from("<Q", report, 0x008)[0] >> 19 & 1:
        return Check.CVM_DEBUG
    if report[0x090:0x0C0] != MEASUREMENT:
        return Check.CVM_MEASUREMENT
    return None


def readable(report: bytes) -> bool:
    version = struct.unpack_from("<I", report, 0)[0]
    turin = version >= 3 and report[0x188] == 0x1A
    return 2 <= version <= 5 and struct.unpack_from("<I", report, 0x034)[0] == 1 and not turin


@settings(max_examples=examples(400), deadline=None)
@given(data=st.data())
def test_a_report_the_chip_signed_after_an_edit_fails_exactly_the_rule_it_breaks(data: st.DataObject) -> None:
    signed_part = data.draw(edited_bytes(VECTOR.snp_report[:SIGNED_LENGTH], max_edits=4))
    signed_part = signed_part[:SIGNED_LENGTH].ljust(SIGNED_LENGTH, b"\0")  # keep the layout
    report = sign_snp_report(bytearray(signed_part + VECTOR.snp_report[SIGNED_LENGTH:]), vcek_key())
    result = verified(hcl_report_bytes(report, VECTOR.runtime_data))
    if not readable(report):
        assert result is None
        return
    wanted = expected_failure(report, VECTOR.runtime_data)
    if wanted is None:
        assert isinstance(result, PlatformFacts) and result.measurement == MEASUREMENT.hex()
        assert result.guest_policy.raw == struct.unpack_from("<Q", report, 0x008)[0]
    else:
        assert result == wanted


def test_the_genuine_vector_is_what_the_properties_start_from() -> None:
    assert verified(VECTOR.hcl_report) == GENUINE
    assert expected_failure(VECTOR.snp_report, VECTOR.runtime_data) is None
    assert readable(VECTOR.snp_report)
    assert SNP_OFFSET + len(VECTOR.snp_report) == 0x4C0
