"""Found by fuzzing: an old proof whose `cert_chain` holds `{"base64": ""}` sent the certificate
reader into endless recursion (the empty string is base64 of the empty string, read again as
base64 of a certificate), and `aicert verify` died with a RecursionError traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aicert.cli import main as aicert_main


@pytest.mark.parametrize("position", [0, 1])
def test_an_empty_certificate_in_an_old_proof_is_unusable_input(
    position: int, tmp_path: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    proof["remote_attestation"]["cert_chain"][position] = {"base64": ""}
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    bundle = str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")
    argv = ["verify", str(tmp_path / "proof.json"), "--trust-bundle", bundle, "--at", "2024-06-01T00:00:00Z"]
    code = aicert_main(argv)
    captured = capsys.readouterr()
    assert (code, (captured.out + captured.err).splitlines()) == (
        2,
        [f"aicert verify: unusable input: remote_attestation.cert_chain[{position}].base64: is empty"],
    )
