"""A private transparency log: `aicert-agent run --tlog-url --tlog-key` on swtpm submits the bundle
to a real rekor-tiles v2.3.0 (built from Go modules, POSIX storage, on 127.0.0.1, writing only
under the test's tmp directory) and keeps its inclusion proof; `aicert verify --tlog-key` checks it
offline. The AK is ECC and RSA-2048 (Azure's): Rekor v2 takes both (PKIX_ECDSA_P256_SHA_256,
PKIX_RSA_PKCS1V15_2048_SHA256). A log that is down costs the certificate nothing but the entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sigstore_models.bundle.v1 import Bundle
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.cli import main as aicert_main
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster.rekor import LocalRekor, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rekor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRekor]:
    with LocalRekor(tmp_path_factory.mktemp("rekor")) as log:
        yield log


@pytest.fixture
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A TPM of its own for each run (an AK of each key type)."""
    server = Swtpm(tmp_path_factory.mktemp("swtpm"))
    server.start()
    yield server
    server.close()


def bundle_path(run: CertifiedRun) -> Path:
    return run.certificate_path.parent / "aicert.sigstore.json"


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_the_agent_logs_the_bundle_and_the_verifier_checks_the_proof_offline(
    rekor: LocalRekor,
    tpm: Swtpm,
    key_type: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "log.pem"
    key.write_bytes(rekor.key_pem)
    run = make_run(
        tmp_path / "run",
        tpm.spec,
        key_type=key_type,
        run_options=("--tlog-url", rekor.url, "--tlog-key", str(key)),
    )
    data = bundle_path(run).read_bytes()
    entries = json.loads(data)["verificationMaterial"]["tlogEntries"]
    assert len(entries) == 1 and entries[0]["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert (run.model / "aicert.sigstore.json").read_bytes() == data
    parsed = Bundle.from_json(data)  # Sigstore's own schema reads the entry
    assert len(parsed.verification_material.tlog_entries) == 1
    argv = ["verify", str(bundle_path(run)), "--trust-bundle", str(run.ca_dir / "dev-ca.pem"), "--json"]
    capsys.readouterr()
    assert aicert_main([*argv, "--tlog-key", str(key), "--require-tlog"]) == 0
    assert "tlog-inclusion" in json.loads(capsys.readouterr().out)["checks"]
    # another log's key: the checkpoint is not one it signed
    other = tmp_path / "other.pem"
    other.write_bytes(LocalRekor(tmp_path / "unused").key_pem)
    assert aicert_main([*argv, "--tlog-key", str(other)]) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "tlog-inclusion"


def test_a_log_that_is_down_costs_the_certificate_nothing_but_the_entry(
    rekor: LocalRekor, tpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "log.pem"
    key.write_bytes(rekor.key_pem)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = make_run(tmp_path / "run", tpm.spec, run_options=("--tlog-url", nobody, "--tlog-key", str(key)))
    assert json.loads(bundle_path(run).read_bytes())["verificationMaterial"]["tlogEntries"] == []
    argv = ["verify", str(bundle_path(run)), "--trust-bundle", str(run.ca_dir / "dev-ca.pem"), "--json"]
    capsys.readouterr()
    assert aicert_main([*argv, "--tlog-key", str(key)]) == 0
    skipped = dict((s["check"], s["reason"]) for s in json.loads(capsys.readouterr().out)["skipped"])
    assert "carries no transparency log entry" in skipped["tlog-inclusion"]
    assert aicert_main([*argv, "--tlog-key", str(key), "--require-tlog"]) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "tlog-inclusion"
