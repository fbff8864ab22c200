"""Our pure parsers agree with tpm2-pytss and tpm2-tools on real quotes."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from tests.integration.certified_run import make_run
from tests.integration.tpm_tools import tpm2_checkquote
from tpm2_pytss.types import TPMS_ATTEST

from aicert.tpm.attest import ALG_SHA256, parse_attest
from aicert.tpm.pcrs import parse_tpm2_tools_pcrs
from aicert_agent.tpm.client import AK_PERSISTENT_HANDLE, Quote
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import dev_provision
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration
PCRS = [*range(8), 23]


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_attest_parser_agrees_with_tpm2_pytss(swtpm: Swtpm, dev_ca: DevCA, key_type: str) -> None:
    from aicert_agent.tpm.client import Tpm

    with Tpm(swtpm.spec) as tpm:
        dev_provision(tpm, dev_ca, key_type=key_type)  # type: ignore[arg-type]
        tpm.pcr_extend(23, b"\x07" * 32)
        quote = tpm.quote(PCRS, b"statement-digest")
    ours = parse_attest(quote.attest)
    theirs, consumed = TPMS_ATTEST.unmarshal(quote.attest)
    assert consumed == len(quote.attest)
    assert ours.magic == int(theirs.magic)
    assert ours.type == int(theirs.type)
    assert ours.qualified_signer == bytes(theirs.qualifiedSigner)
    assert ours.extra_data == bytes(theirs.extraData) == b"statement-digest"
    clock = theirs.clockInfo
    assert (ours.clock_info.clock, ours.clock_info.reset_count, ours.clock_info.restart_count) == (
        int(clock.clock),
        int(clock.resetCount),
        int(clock.restartCount),
    )
    assert ours.firmware_version == int(theirs.firmwareVersion)
    assert ours.pcr_digest == bytes(theirs.attested.quote.pcrDigest)
    assert ours.selected(ALG_SHA256) == tuple(PCRS)


def test_pcr_file_parser_reads_what_tpm2_quote_writes(swtpm: Swtpm, dev_ca: DevCA, tmp_path: Path) -> None:
    """Old AICert proofs carry `tpm2_quote -o` output; the real tool's file must parse to the TPM's values."""
    from aicert_agent.tpm.client import Tpm

    with Tpm(swtpm.spec) as tpm:
        dev_provision(tpm, dev_ca)
        tpm.pcr_extend(16, b"\x16" * 32)
        expected = tpm.pcr_read(list(range(24)))
    args = ["tpm2_quote", "-T", swtpm.tcti, "-c", hex(AK_PERSISTENT_HANDLE), "-l", "sha256:all"]
    args += ["-m", "m.bin", "-s", "s.bin", "-o", "pcrs.bin", "-g", "sha256"]
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    assert parse_tpm2_tools_pcrs((tmp_path / "pcrs.bin").read_bytes()) == expected


def test_tpm2_checkquote_accepts_a_certificate_quote(swtpm: Swtpm, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", swtpm.spec)
    cert = run.certificate
    evidence = cert["evidence"]
    quote = Quote(
        attest=base64.b64decode(evidence["quote"]["attest"]),
        signature=base64.b64decode(evidence["quote"]["signature"]),
        pcr_values={int(k): bytes.fromhex(v) for k, v in evidence["quote"]["pcrs"].items()},
    )
    from aicert.jcs import sha256_jcs

    statement_digest = sha256_jcs(cert["statement"])
    assert tpm2_checkquote(tmp_path / "ok", quote, evidence["ak"]["public"], statement_digest) == 0
    assert tpm2_checkquote(tmp_path / "other", quote, evidence["ak"]["public"], b"\x00" * 32) != 0
