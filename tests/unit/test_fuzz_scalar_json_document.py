"""Found by fuzzing: a document that is a lone JSON scalar (`null`, `5`, `true`, `"x"`) crashed the
strict JSON reader (`TypeError: 'NoneType' object is not iterable` in jsonload), so `aicert verify`
printed a traceback and exited 1, for a certificate, an old proof's event or a policy file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aicert.certificate import FormatError, Model, Timestamp, convert
from aicert.cli import main as aicert_main
from aicert.verify.jsonload import loads_strict

LEGACY_AT = "2024-06-01T00:00:00Z"


@pytest.mark.parametrize("text", ["null", "5", "-0.5", "true", '"certificate"'])
def test_a_scalar_document_is_read_as_itself(text: str) -> None:
    assert loads_strict(text, what="the document") == json.loads(text)


def verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).splitlines()


@pytest.mark.parametrize("text", ["null", "5", "true", '"certificate"'])
def test_a_scalar_certificate_is_unusable_input(
    text: str, tmp_path: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certificate.json").write_text(text)
    bundle = str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    code, lines = verify(["verify", str(tmp_path / "certificate.json"), "--trust-bundle", bundle], capsys)
    assert (code, lines) == (2, ["aicert verify: unusable input: a certificate is a JSON object"])


def test_a_scalar_event_in_an_old_proof_is_unusable_input(
    tmp_path: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    proof["event_log"][2] = "null"
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    bundle = str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    argv = ["verify", str(tmp_path / "proof.json"), "--trust-bundle", bundle, "--at", LEGACY_AT]
    code, lines = verify(argv, capsys)
    assert (code, lines) == (
        2,
        ["aicert verify: unusable input: event_log[2]: is not an object with an event_type"],
    )


def test_a_scalar_policy_is_unusable_input(
    tmp_path: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.json").write_text("null")
    proof = str(azure_dir / "aicert-proof-sample.json")
    bundle = str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    argv = [
        "verify",
        proof,
        "--trust-bundle",
        bundle,
        "--at",
        LEGACY_AT,
        "--policy",
        str(tmp_path / "policy.json"),
    ]
    code, lines = verify(argv, capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("aicert verify: unusable input: policy")


class Stamped(Model, frozen=True):
    startedOn: Timestamp  # as in the statement's predicate


def test_a_timestamp_with_a_trailing_newline_is_not_rfc_3339() -> None:
    """Found by the fuzzer: Python's `$` matches before a final newline, so `…Z\\n` passed."""
    assert convert({"startedOn": "2026-01-01T00:00:00Z"}, Stamped).startedOn == "2026-01-01T00:00:00Z"
    with pytest.raises(FormatError) as err:
        convert({"startedOn": "2026-01-01T00:00:00Z\n"}, Stamped)
    assert (err.value.field, err.value.reason) == (
        "startedOn",
        "must be an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z",
    )
