from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from aicert.tpm.attest import ALG_SHA256, TPM_ST_ATTEST_QUOTE, parse_attest
from aicert.tpm.pcrs import (
    SHA256_ZERO,
    extend,
    format_tpm2_tools_pcrs,
    parse_tpm2_tools_pcrs,
    pcr_digest,
    replay,
)
from aicert.tpm.reader import StructureError
from aicert.tpm.signature import ALG_RSASSA, parse_signature


@pytest.fixture
def sample(azure_dir: Path) -> dict[str, dict[str, dict[str, str]]]:
    data: dict[str, dict[str, dict[str, str]]] = json.loads(
        (azure_dir / "aicert-proof-sample.json").read_text()
    )["remote_attestation"]["quote"]
    return data


def b64(sample: dict[str, dict[str, dict[str, str]]], key: str) -> bytes:
    return base64.b64decode(sample[key]["base64"])


def test_attest_of_real_azure_quote(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    attest = parse_attest(b64(sample, "message"))
    assert attest.type == TPM_ST_ATTEST_QUOTE
    assert attest.selected(ALG_SHA256) == tuple(range(24))
    assert attest.extra_data == b""
    assert attest.clock_info.reset_count == 2


def test_pcr_file_values_hash_to_quote_digest(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    values = parse_tpm2_tools_pcrs(b64(sample, "pcr"))
    assert sorted(values) == list(range(24))
    assert pcr_digest(values) == parse_attest(b64(sample, "message")).pcr_digest


def test_signature_of_real_azure_quote(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    signature = parse_signature(b64(sample, "signature"))
    assert (signature.scheme, len(signature.rsa)) == (ALG_RSASSA, 256)


@pytest.mark.parametrize("cut", [1, 10, 40])
def test_truncated_attest_names_the_field(sample: dict[str, dict[str, dict[str, str]]], cut: int) -> None:
    with pytest.raises(StructureError, match="truncated at"):
        parse_attest(b64(sample, "message")[:-cut])


def test_trailing_bytes_refused(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    with pytest.raises(StructureError, match="trailing"):
        parse_attest(b64(sample, "message") + b"\0")


def test_non_quote_type_refused(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    data = bytearray(b64(sample, "message"))
    data[4:6] = (0x8017).to_bytes(2, "big")  # ATTEST_CERTIFY
    with pytest.raises(StructureError, match="not TPM_ST_ATTEST_QUOTE"):
        parse_attest(bytes(data))


def test_pcr_file_of_wrong_length_refused(sample: dict[str, dict[str, dict[str, str]]]) -> None:
    with pytest.raises(StructureError, match="do not hold"):
        parse_tpm2_tools_pcrs(b64(sample, "pcr")[:-1])


def test_unknown_signature_scheme_refused() -> None:
    with pytest.raises(StructureError, match="unsupported sigAlg"):
        parse_signature(bytes.fromhex("0001000b0000"))


def test_extend_and_replay_agree_with_hashlib() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    expected = hashlib.sha256(hashlib.sha256(SHA256_ZERO + a).digest() + b).digest()
    assert extend(extend(SHA256_ZERO, a), b) == expected == replay([a, b])
    assert replay([b, a]) != expected


def test_tpm2_tools_pcr_file_round_trips() -> None:
    values = {i: hashlib.sha256(bytes([i])).digest() for i in [*range(8), 16, 23]}
    blob = format_tpm2_tools_pcrs(values)
    assert len(blob) == 132 + 4 + 2 * 532
    assert parse_tpm2_tools_pcrs(blob) == values
