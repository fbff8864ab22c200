"""Driving the real tpm2-tools binaries in cross-checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aicert.tpm.pcrs import format_tpm2_tools_pcrs
from aicert_agent.tpm.client import Quote


def tpm2_checkquote(directory: Path, quote: Quote, ak_pem: str, qualification: bytes) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "attest.bin").write_bytes(quote.attest)
    (directory / "signature.bin").write_bytes(quote.signature)
    (directory / "pcrs.bin").write_bytes(format_tpm2_tools_pcrs(quote.pcr_values))
    (directory / "ak.pem").write_text(ak_pem)
    args = ["tpm2_checkquote", "-u", "ak.pem", "-m", "attest.bin", "-s", "signature.bin", "-f", "pcrs.bin"]
    args += ["-g", "sha256", "-q", qualification.hex() if qualification else "00"]
    result = subprocess.run(args, cwd=directory, capture_output=True, text=True, check=False)
    return result.returncode
