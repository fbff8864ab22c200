"""A private transparency log: `aicert-agent run --tlog-url --tlog-key` on swtpm submits the bundle
to a real rekor-tiles v2.3.0 (built from Go modules, POSIX storage, on 127.0.0.1, writing only
under the test's tmp directory) and keeps its inclusion proof; `aicert verify --tlog-key` checks it
offline. The AK is ECC and RSA-2048 (Azure's): Rekor v2 takes both (PKIX_ECDSA_P256_SHA_256,
PKIX_RSA_PKCS1V15_2048_SHA256). A log that is down costs the certificate nothing but the entry.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sigstore_models.bundle.v1 import Bundle
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.bundle import bundle_bytes, read_bundle
from aicert.cli import main as aicert_main
from aicert.tlog import hashedrekord_request
from aicert_agent.kube import AgentKube
from aicert_agent.recorder import AkIdentity
from aicert_agent.sealing import Sealer
from aicert_agent.tpm.swtpm import Swtpm
from aicert_agent.transparency import (
    LOG_RECORD,
    LogRecord,
    TransparencyLog,
    load_log_key,
    log_entry,
    with_log_entry,
)
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


def logged_run(rekor: LocalRekor, tpm: Swtpm, key_type: str, tmp_path: Path) -> CertifiedRun:
    """A certified run whose agent logs its bundle in `rekor` (the log's key in tmp_path/log.pem)."""
    key = tmp_path / "log.pem"
    key.write_bytes(rekor.key_pem)
    return make_run(
        tmp_path / "run",
        tpm.spec,
        key_type=key_type,
        run_options=("--tlog-url", rekor.url, "--tlog-key", str(key)),
    )


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_the_agent_logs_the_bundle_and_the_verifier_checks_the_proof_offline(
    rekor: LocalRekor,
    tpm: Swtpm,
    key_type: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = logged_run(rekor, tpm, key_type, tmp_path)
    data = bundle_path(run).read_bytes()
    entries = json.loads(data)["verificationMaterial"]["tlogEntries"]
    assert len(entries) == 1 and entries[0]["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert (run.model / "aicert.sigstore.json").read_bytes() == data
    parsed = Bundle.from_json(data)  # Sigstore's own schema reads the entry
    assert len(parsed.verification_material.tlog_entries) == 1
    argv = ["verify", str(bundle_path(run)), "--trust-bundle", str(run.ca_dir / "dev-ca.pem"), "--json"]
    capsys.readouterr()
    assert aicert_main([*argv, "--tlog-key", str(tmp_path / "log.pem"), "--require-tlog"]) == 0
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


@contextmanager
def read_api(rekor: LocalRekor) -> Iterator[str]:
    """rekor-tiles' read API for its POSIX storage: the files it writes (checkpoint, tile/…) served
    as they are, as nginx serves them in rekor-tiles' posix-compose.yml."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(rekor.directory / "log"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_a_seal_tried_again_gets_the_entry_the_log_already_holds(
    rekor: LocalRekor, tpm: Swtpm, key_type: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log took the bundle's entry and the agent kept only the signature it submitted (it
    stopped before writing the answer): the retry submits the same envelope, rekor-tiles refuses
    it as a duplicate (409, the index in X-Log-Index), and the entry is rebuilt from the log's
    tiles, checked against the log key, kept, and verifies offline."""
    run = logged_run(rekor, tpm, key_type, tmp_path)
    logged = json.loads(bundle_path(run).read_bytes())
    (first,) = logged["verificationMaterial"]["tlogEntries"]
    bundle = with_log_entry(logged, first)
    bundle["verificationMaterial"]["tlogEntries"] = []
    ak_pem = run.certificate["evidence"]["ak"]["public"]

    # what the real log answers a second submission of the same envelope
    _, envelope = read_bundle(bundle)
    request = hashedrekord_request(
        envelope.signed_bytes, envelope.signature, load_pem_public_key(ak_pem.encode())
    )
    post = urllib.request.Request(
        rekor.url + "/api/v2/log/entries",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=60)
    assert refused.value.code == 409
    assert refused.value.headers["X-Log-Index"] == first["logIndex"]
    assert (
        f"already exists in the transparency log with index {first['logIndex']}"
        in refused.value.read(512).decode()
    )

    control = tmp_path / "control"
    control.mkdir()
    (control / LOG_RECORD).write_bytes(LogRecord.of(bundle).to_bytes())
    with read_api(rekor) as reader:
        tlog = TransparencyLog(rekor.url, load_log_key(rekor.key_pem), read_url=reader)
        sealer = Sealer(cast(AgentKube, None), "gpu-1", "dev", AkIdentity("", ()), tlog=tlog)
        ctx = cast(Any, SimpleNamespace(namespace="ml", pod={"metadata": {"name": "run-1"}}))
        published, said = sealer._log(ctx, run.certificate, bundle, control)
        # the same, straight from log_entry: the read API is not the write API's URL
        assert (
            log_entry(bundle, ak_pem, rekor.url, tlog.key, read_url=reader)["logIndex"] == first["logIndex"]
        )
    assert said == f"; logged at index {first['logIndex']} of {rekor.url}"
    (entry,) = published["verificationMaterial"]["tlogEntries"]
    assert (entry["logIndex"], entry["canonicalizedBody"], entry["logId"]) == (
        first["logIndex"],
        first["canonicalizedBody"],
        first["logId"],
    )
    kept = LogRecord.read(control)
    assert kept is not None and kept.entry == entry
    recovered = tmp_path / "recovered.sigstore.json"
    recovered.write_bytes(bundle_bytes(published))
    argv = ["verify", str(recovered), "--trust-bundle", str(run.ca_dir / "dev-ca.pem"), "--json"]
    capsys.readouterr()
    assert aicert_main([*argv, "--tlog-key", str(tmp_path / "log.pem"), "--require-tlog"]) == 0
    assert "tlog-inclusion" in json.loads(capsys.readouterr().out)["checks"]
