"""TPM spec parsing (pure: no TPM, no tpm2_pytss)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from aicert_agent.tpm.tcti import TpmSpec, parse_tpm_spec


def test_device_spec() -> None:
    spec = parse_tpm_spec("device:/dev/tpmrm0")
    assert spec == TpmSpec(kind="device", path="/dev/tpmrm0")
    assert spec.tcti_name == "device"
    assert spec.tcti_conf == "/dev/tpmrm0"
    assert str(spec) == "device:/dev/tpmrm0"


def test_swtpm_spec() -> None:
    spec = parse_tpm_spec("swtpm:host=127.0.0.1,port=2321")
    assert spec == TpmSpec(kind="swtpm", host="127.0.0.1", port=2321)
    assert spec.tcti_name == "swtpm"
    assert spec.tcti_conf == "host=127.0.0.1,port=2321"
    assert str(spec) == "swtpm:host=127.0.0.1,port=2321"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("swtpm", "127.0.0.1", 2321),
        ("swtpm:", "127.0.0.1", 2321),
        ("swtpm:port=40000", "127.0.0.1", 40000),
        ("swtpm:host=localhost", "localhost", 2321),
        ("swtpm:port=40000,host=::1", "::1", 40000),
        ("  swtpm:host=127.0.0.1, port=9  ", "127.0.0.1", 9),
        ("SWTPM:host=127.0.0.1,port=65534", "127.0.0.1", 65534),
    ],
)
def test_swtpm_defaults_and_variants(text: str, host: str, port: int) -> None:
    spec = parse_tpm_spec(text)
    assert (spec.kind, spec.host, spec.port) == ("swtpm", host, port)


@pytest.mark.parametrize(
    "text",
    ["device:/dev/tpmrm0", "device:/dev/tpm0", "swtpm:host=127.0.0.1,port=2321", "swtpm:host=::1,port=5"],
)
def test_str_round_trips(text: str) -> None:
    spec = parse_tpm_spec(text)
    assert parse_tpm_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty TPM spec"),
        ("   ", "empty TPM spec"),
        ("tpm", "unknown TPM kind 'tpm'"),
        ("mssim:host=127.0.0.1,port=2321", "unknown TPM kind 'mssim'"),
        ("/dev/tpmrm0", "unknown TPM kind '/dev/tpmrm0'"),
        ("device", "names no device path"),
        ("device:", "names no device path"),
        ("device:dev/tpmrm0", "must be absolute"),
        ("device:/dev/tpm rm0", "whitespace"),
        ("swtpm:host=127.0.0.1,port=abc", "is not a number"),
        ("swtpm:port=0", "out of range"),
        ("swtpm:port=65535", "out of range"),
        ("swtpm:port=-1", "out of range"),
        ("swtpm:port=", "is not a number"),
        ("swtpm:host=", "empty or malformed host"),
        ("swtpm:host=127.0.0.1,port=2321,path=/x", "unknown option 'path'"),
        ("swtpm:host=a,host=b", "given twice"),
        ("swtpm:127.0.0.1:2321", "malformed option"),
        ("swtpm:host=127.0.0.1,,port=2321", "malformed option"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tpm_spec(text)


def test_error_messages_show_the_expected_forms() -> None:
    with pytest.raises(ValueError, match=r"device:/dev/tpmrm0.*swtpm:host=127\.0\.0\.1,port=2321"):
        parse_tpm_spec("nonsense")


def test_non_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_tpm_spec(None)  # type: ignore[arg-type]


def test_spec_is_frozen() -> None:
    spec = parse_tpm_spec("device:/dev/tpmrm0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.path = "/dev/tpm0"  # type: ignore[misc]


def test_parsing_does_not_import_tpm2_pytss() -> None:
    # The parser must work (and report configuration errors) without the TPM libraries loaded.
    import subprocess

    code = (
        "import sys; from aicert_agent.tpm.tcti import parse_tpm_spec; "
        "parse_tpm_spec('swtpm:port=1'); assert 'tpm2_pytss' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
