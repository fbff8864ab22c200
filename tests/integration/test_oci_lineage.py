"""Lineage through a real OCI registry (distribution, on 127.0.0.1): a model certified on swtpm is
pushed with `kubectl aicert push`; `aicert pull oci://…@sha256:… DIR` verifies it and writes the
weights with the certificate's exact bytes beside them; the real agent (`aicert-agent run`) trains
on DIR and records that certificate as its parent; `aicert verify --lineage oci://REGISTRY/REPO`
fetches the parent by the digest recorded and verifies the chain.

Tampering fails: weights in the registry that are not the certificate's (nothing is pulled), a tag
instead of a digest, a DIR that is not empty, a certificate blob changed in the registry's storage
(lineage-digest), a repository without the parent (lineage-complete)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.certified_run import CertifiedRun, kubectl_showing, make_run
from tests.integration.test_lineage_chain import tune
from tests.integration.test_oci_registry import pushed_reference, tampered_model

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert.digest.hashing import hash_tree
from aicert.digest.manifest import OUTPUT_EXCLUDED
from aicert.oci.client import RegistryClient
from aicert.oci.documents import ARTIFACT_CERTIFICATE, ARTIFACT_SIGSTORE_BUNDLE, Attachment
from aicert.oci.transfer import attachments_of, push_model
from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE, MODEL_SIGNATURE_FILE
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certified(tpm_server: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    return make_run(tmp_path_factory.mktemp("run"), tpm_server.spec)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certified: CertifiedRun) -> Path:
    """A stand-in kubectl printing the CertifiedTraining of the run (certified_run.kubectl_showing)."""
    monkeypatch.setenv("KUBECTL", str(kubectl_showing(certified, tmp_path)))
    return tmp_path


def push(target: str, model: Path) -> int:
    return kubectl_plugin.main(["push", "digits", target, "--model", str(model)])


def pull(reference: str, directory: Path, run: CertifiedRun, *extra: str) -> int:
    trust = ["--trust-bundle", str(run.ca_dir / "dev-ca.pem")]
    return aicert_main(["pull", reference, str(directory), *trust, *extra])


def verify(run: CertifiedRun, certificate: Path, *more: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "aicert.cli", "verify", str(certificate), "--trust-bundle"]
    argv += [str(run.ca_dir / "dev-ca.pem"), "--json", *more]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def certificate_referrer(registry: Registry, reference: str) -> bytes:
    repository, digest = reference.removeprefix(f"oci://{registry.host}/").split("@")
    found = attachments_of(
        RegistryClient(registry.host, plain_http=True),
        repository,
        digest,
        ARTIFACT_CERTIFICATE,
        max_bytes=1 << 24,
    )
    [referrer] = found.referrers
    return referrer.data


def test_a_pulled_model_is_a_parent_whose_certificate_the_registry_holds(
    registry: Registry,
    certified: CertifiedRun,
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert push(f"oci://{registry.host}/models/base:v1", certified.model) == 0
    reference = pushed_reference(capsys)
    pulled = tmp_path / "pulled"
    assert pull(reference, pulled, certified) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("VERIFIED  assurance: dev") and f"  pulled   {pulled}: 1 files" in out
    # the weights, and beside them the certificate's exact bytes as attached, the agent's bundle and model.sig
    assert sorted(p.name for p in pulled.iterdir()) == sorted(
        ["weights.bin", CERTIFICATE_FILE, BUNDLE_FILE, MODEL_SIGNATURE_FILE]
    )
    assert (pulled / CERTIFICATE_FILE).read_bytes() == certificate_referrer(registry, reference)
    assert (pulled / CERTIFICATE_FILE).read_bytes() == (certified.model / CERTIFICATE_FILE).read_bytes()
    for name in ("weights.bin", BUNDLE_FILE, MODEL_SIGNATURE_FILE):
        assert (pulled / name).read_bytes() == (certified.model / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled.")]  # no staging left

    # the real agent, on a real swtpm, trains on the pulled directory: it records the parent
    tuned, tuned_certificate = tune(certified, "tuned-from-registry", pulled)
    [base_input] = json.loads(tuned_certificate.read_bytes())["statement"]["predicate"]["inputs"]
    recorded = hashlib.sha256((pulled / CERTIFICATE_FILE).read_bytes()).hexdigest()
    assert base_input["parent"]["certificate"] == recorded

    # the parent is found in the registry by the digest recorded, and verified
    repository = f"oci://{registry.host}/models/base"
    done = verify(certified, tuned_certificate, "--model", str(tuned), "--lineage", repository)
    assert done.returncode == 0, done.stderr
    lineage = json.loads(done.stdout)["lineage"]
    assert lineage["complete"] is True
    assert [(r["run"]["name"], r["depth"], r["source"]) for r in lineage["runs"]] == [
        ("tuned-from-registry", 0, str(tuned_certificate)),
        ("tamper-suite", 1, f"{repository}@sha256:{recorded}"),
    ]
    # the same chain from the pulled directory, as from any directory of certificates
    done = verify(certified, tuned_certificate, "--lineage", str(pulled))
    assert done.returncode == 0, done.stderr

    # the tuned model in the registry too: both ends of the chain from registries
    client = RegistryClient(registry.host, plain_http=True)
    tuned_files = hash_tree(tuned, exclude=OUTPUT_EXCLUDED).files
    attached = Attachment(ARTIFACT_CERTIFICATE, CERTIFICATE_FILE, (tuned / CERTIFICATE_FILE).read_bytes())
    tuned_pushed = push_model(client, "models/tuned", None, tuned, tuned_files, "tuned", [attached])
    tuned_reference = f"oci://{registry.host}/models/tuned@{tuned_pushed.manifest.digest}"
    assert (
        aicert_main(
            [
                *("verify", tuned_reference, "--trust-bundle", str(certified.ca_dir / "dev-ca.pem")),
                *("--lineage", repository, "--json"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    lineage = json.loads(capsys.readouterr().out)["lineage"]
    assert lineage["complete"] is True and [r["run"]["name"] for r in lineage["runs"]] == [
        "tuned-from-registry",
        "tamper-suite",
    ]
    assert lineage["runs"][0]["source"].startswith(f"{tuned_reference} (certificate sha256:")

    # a run that read the first run's output volume itself (not pulled) records the same digest:
    # the certificate attached is the file beside the weights, byte for byte
    _, from_volume = tune(certified, "tuned-from-volume", certified.model)
    done = verify(certified, from_volume, "--lineage", repository)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lineage"]["runs"][1]["source"] == f"{repository}@sha256:{recorded}"

    # a repository that does not hold it: the parent is missing
    done = verify(certified, tuned_certificate, "--lineage", f"oci://{registry.host}/models/elsewhere")
    assert done.returncode == 1 and json.loads(done.stdout)["check"] == "lineage-complete"
    done = verify(
        certified,
        tuned_certificate,
        "--lineage",
        f"oci://{registry.host}/models/elsewhere",
        "--lineage-partial",
    )
    assert done.returncode == 0 and json.loads(done.stdout)["lineage"]["complete"] is False


def test_a_certificate_blob_changed_in_the_registry_storage_fails_lineage_digest(
    certified: CertifiedRun, cluster: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry") as own:
        assert push(f"oci://{own.host}/models/base:v1", certified.model) == 0
        reference = pushed_reference(capsys)
        pulled = tmp_path / "pulled"
        assert pull(reference, pulled, certified) == 0
        capsys.readouterr()
        _, tuned_certificate = tune(certified, "tuned-changed-parent", pulled)
        recorded = hashlib.sha256((pulled / CERTIFICATE_FILE).read_bytes()).hexdigest()
        stored = own.storage / "docker/registry/v2/blobs/sha256" / recorded[:2] / recorded / "data"
        data = bytearray(stored.read_bytes())
        data[-2] ^= 1
        stored.write_bytes(bytes(data))
        done = verify(certified, tuned_certificate, "--lineage", f"oci://{own.host}/models/base")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["check"] == "lineage-digest" and f"sha256:{recorded}" in doc["reason"]


def test_pull_refuses_weights_that_are_not_the_certificates(
    registry: Registry, certified: CertifiedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reference = tampered_model(registry, certified, tmp_path / "tampered", "models/tampered-pull")
    target = tmp_path / "pulled"
    assert pull(reference, target, certified, "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["check"] == "model-files"
    assert "NOT VERIFIED  check model-files failed:" in captured.err and "nothing written" in captured.err
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled.")]


def test_pull_needs_a_digest_and_an_empty_directory(
    registry: Registry,
    certified: CertifiedRun,
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert push(f"oci://{registry.host}/models/base-dir:v1", certified.model) == 0
    reference = pushed_reference(capsys)
    assert pull(f"oci://{registry.host}/models/base-dir:v1", tmp_path / "a", certified, "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["field"] == "REFERENCE" and "names no digest" in doc["reason"]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    assert pull(reference, occupied, certified, "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["field"] == "DIR" and "is not empty" in doc["reason"]
    assert [p.name for p in occupied.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pull(reference, empty, certified) == 0
    assert (empty / CERTIFICATE_FILE).is_file()


def flipped_signature(envelope_holder: dict[str, Any]) -> None:
    signature = bytearray(base64.b64decode(envelope_holder["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 1
    envelope_holder["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()


def test_attachments_that_do_not_belong_to_the_certificate_are_not_written(
    registry: Registry, certified: CertifiedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Someone who can write to the repository attaches, beside the genuine certificate, a bundle whose
    signature is broken, another run's genuine bundle, a model.sig over other files and one whose
    signature is broken: the certificate is pulled, none of them is written, each is named with why."""
    _, _ = tune(certified, "another-run", certified.model)
    another_bundle = (certified.root / "another-run" / BUNDLE_FILE).read_bytes()
    broken_bundle = json.loads((certified.model / BUNDLE_FILE).read_bytes())
    flipped_signature(broken_bundle)
    other_files = json.loads((certified.model / MODEL_SIGNATURE_FILE).read_bytes())
    statement = json.loads(base64.b64decode(other_files["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    other_files["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    broken_signature = json.loads((certified.model / MODEL_SIGNATURE_FILE).read_bytes())
    flipped_signature(broken_signature)
    attachments = [
        Attachment(ARTIFACT_CERTIFICATE, CERTIFICATE_FILE, certified.certificate_path.read_bytes()),
        Attachment(ARTIFACT_SIGSTORE_BUNDLE, BUNDLE_FILE, json.dumps(broken_bundle).encode()),
        Attachment(ARTIFACT_SIGSTORE_BUNDLE, BUNDLE_FILE, another_bundle),
        Attachment(ARTIFACT_SIGSTORE_BUNDLE, MODEL_SIGNATURE_FILE, json.dumps(other_files).encode()),
        Attachment(ARTIFACT_SIGSTORE_BUNDLE, MODEL_SIGNATURE_FILE, json.dumps(broken_signature).encode()),
    ]
    files = hash_tree(certified.model, exclude=OUTPUT_EXCLUDED).files
    client = RegistryClient(registry.host, plain_http=True)
    pushed = push_model(client, "models/extras", None, certified.model, files, "digits", attachments)
    target = tmp_path / "pulled"
    reference = f"oci://{registry.host}/models/extras@{pushed.manifest.digest}"
    assert pull(reference, target, certified, "--json") == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in target.iterdir()) == ["aicert-certificate.json", "weights.bin"]
    assert doc["pulled"]["written"] == [CERTIFICATE_FILE]
    bundles, signatures = sorted(doc["pulled"]["notWritten"])
    assert bundles.startswith(f"{BUNDLE_FILE}: ") and signatures.startswith(f"{MODEL_SIGNATURE_FILE}: ")
    assert "does not verify: check envelope" in bundles and "carries another statement" in bundles
    assert "signs other files than the pulled weights" in signatures
    assert "signature does not verify with the AK certificate's key" in signatures
