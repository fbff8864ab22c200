"""Lineage with real certificates: three `aicert-agent run`s on swtpm, each fine-tuning the previous
run's certified output, and `aicert verify --lineage` following the two links back to the first."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.digest import CERTIFICATE_FILE
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration

TUNE = (
    "import pathlib,sys; base, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); "
    "out.mkdir(parents=True, exist_ok=True); "
    "(out / 'weights.bin').write_bytes((base / 'weights.bin').read_bytes() + b'+tuned')"
)


def tune(run: CertifiedRun, name: str, base: Path) -> tuple[Path, Path]:
    """A run whose input `base` is `base` (an earlier run's output, or a copy); its output and
    certificate."""
    output, certificate = run.root / name, run.root / f"{name}-out" / "certificate.json"
    run.agent(
        "run",
        "--name",
        name,
        "--inputs",
        f"base={base}",
        "--outputs",
        str(output),
        "--certificate",
        str(certificate),
        "--",
        sys.executable,
        "-c",
        TUNE,
        str(base),
        str(output),
    )
    return output, certificate


def verify(run: CertifiedRun, certificate: Path, *more: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "aicert.cli", "verify", str(certificate), "--trust-bundle"]
    argv += [str(run.ca_dir / "dev-ca.pem"), "--json", *more]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_a_two_link_chain_verifies_back_to_its_first_run(swtpm: Swtpm, tmp_path: Path) -> None:
    run = make_run(tmp_path, swtpm.spec)
    copied = tmp_path / "base-copy"  # the first run's output as a copy, as one would download it
    shutil.copytree(run.model, copied)
    tuned, _ = tune(run, "tuned", copied)
    again, again_certificate = tune(run, "again", tuned)
    recorded = json.loads(again_certificate.read_bytes())["statement"]["predicate"]["inputs"][0]["parent"]
    assert recorded["certificate"] == hashlib.sha256((tuned / CERTIFICATE_FILE).read_bytes()).hexdigest()

    chain = tmp_path / "chain"
    chain.mkdir()
    shutil.copy(run.model / CERTIFICATE_FILE, chain / "digits.json")
    shutil.copy(tuned / CERTIFICATE_FILE, chain / "tuned.json")
    done = verify(run, again_certificate, "--model", str(again), "--lineage", str(chain))
    assert done.returncode == 0, done.stderr
    lineage = json.loads(done.stdout)["lineage"]
    assert lineage["complete"] and lineage["weakest"] == "dev"
    assert [(r["run"]["name"], r["depth"]) for r in lineage["runs"]] == [
        ("again", 0),
        ("tuned", 1),
        ("tamper-suite", 2),
    ]

    (chain / "digits.json").unlink()  # the first run's certificate is not at hand
    done = verify(run, again_certificate, "--lineage", str(chain))
    assert done.returncode == 1 and json.loads(done.stdout)["check"] == "lineage-complete"
    done = verify(run, again_certificate, "--lineage", str(chain), "--lineage-partial")
    assert done.returncode == 0 and json.loads(done.stdout)["lineage"]["complete"] is False


def test_a_borrowed_certificate_records_no_parent(swtpm: Swtpm, tmp_path: Path) -> None:
    """The real agent, given one's own data with a genuine certificate of another model beside it."""
    run = make_run(tmp_path, swtpm.spec)
    own = tmp_path / "own"
    own.mkdir()
    (own / "weights.bin").write_bytes(b"not the certified weights")
    shutil.copy(run.model / CERTIFICATE_FILE, own / CERTIFICATE_FILE)
    _, certificate = tune(run, "borrower", own)
    [recorded] = json.loads(certificate.read_bytes())["statement"]["predicate"]["inputs"]
    assert "parent" not in recorded
