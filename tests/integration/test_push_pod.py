"""The push pod's program (`python -m aicert_agent push`, spec.output.oci) on a model certified on
swtpm, against a real registry that requires credentials (distribution with htpasswd, on 127.0.0.1),
the credentials read from a pull secret's .dockerconfigjson as the pod mounts it.

Attacker first: a tenant who can write to the output claim between the seal and the push (a pod of
its own mounting the claim once the training pod has ended) changes a weight, swaps the certificate
beside the weights for another, or edits model.sig: each time the push refuses with exit 1 before
anything is uploaded, and says why in its termination message. An honest push ends with the
manifest digest in the termination message, and `aicert verify oci://…@digest` verifies it."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.cli import main as aicert_main
from aicert.digest.hashing import hash_tree
from aicert.oci.auth import Credentials
from aicert.oci.client import RegistryClient
from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE, MODEL_SIGNATURE_FILE
from aicert_agent.tpm.swtpm import Swtpm
from aicert_contract.publish import parse_push_message
from aicert_localcluster.registry import Registry

pytestmark = pytest.mark.integration

CREDENTIALS = ("pusher", secrets.token_urlsafe(12))


@pytest.fixture(scope="module")
def certified(tpm_server: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    return make_run(tmp_path_factory.mktemp("run"), tpm_server.spec)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry"), credentials=CREDENTIALS) as running:
        yield running


@pytest.fixture
def pull_secret(registry: Registry, tmp_path: Path) -> Path:
    """The .dockerconfigjson of the registry's pull secret, as the push pod mounts it."""
    secret = registry.pull_secret("push", "default")
    path = tmp_path / "registry" / "config.json"
    path.parent.mkdir()
    path.write_bytes(base64.b64decode(secret["data"][".dockerconfigjson"]))
    return path


def status_certificate(run: CertifiedRun) -> str:
    """The certificate as the status holds it (the file beside the weights is it and a newline)."""
    return (run.model / CERTIFICATE_FILE).read_text().removesuffix("\n")


def envelope_signature(run: CertifiedRun) -> str:
    return str(json.loads((run.model / BUNDLE_FILE).read_text())["dsseEnvelope"]["signatures"][0]["sig"])


def push(
    run: CertifiedRun, model: Path, registry: Registry, repository: str, config: Path | None, log: Path
) -> tuple[int, dict[str, str], str]:
    """Run the push pod's program as the pod does (python -m aicert_agent push); (exit code, its
    termination message as JSON, stderr)."""
    command = [
        sys.executable,
        "-m",
        "aicert_agent",
        "push",
        "--model",
        str(model),
        "--reference",
        f"{registry.host}/{repository}:v1",
        "--name",
        "digits",
        "--certificate-sha256",
        hashlib.sha256(status_certificate(run).encode()).hexdigest(),
        "--envelope-signature",
        envelope_signature(run),
        "--termination-log",
        str(log),
    ]
    if config is not None:
        command += ["--registry-config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    return done.returncode, json.loads(log.read_text()), done.stderr


def client(registry: Registry) -> RegistryClient:
    return RegistryClient(registry.host, plain_http=True, credentials=Credentials(*CREDENTIALS))


def copy_of(run: CertifiedRun, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(run.model, model)
    return model


def test_the_push_pod_pushes_and_the_pushed_model_verifies(
    certified: CertifiedRun, registry: Registry, pull_secret: Path, tmp_path: Path
) -> None:
    code, message, stderr = push(
        certified, certified.model, registry, "models/pushed", pull_secret, tmp_path / "log"
    )
    assert code == 0, stderr
    digest = parse_push_message(json.dumps(message)).digest
    assert digest is not None
    assert client(registry).resolve("models/pushed", "v1") == digest
    reference = f"oci://{registry.host}/models/pushed@{digest}"
    trust = str(certified.ca_dir / "dev-ca.pem")
    assert (
        aicert_main(["verify", reference, "--trust-bundle", trust, "--registry-config", str(pull_secret)])
        == 0
    )


def test_without_the_pull_secret_the_registry_refuses_and_it_says_so(
    certified: CertifiedRun, registry: Registry, tmp_path: Path
) -> None:
    code, message, _ = push(certified, certified.model, registry, "models/nosecret", None, tmp_path / "log")
    assert code == 2
    assert "push to" in message["error"]


def test_a_weight_changed_after_the_seal_is_not_pushed(
    certified: CertifiedRun, registry: Registry, pull_secret: Path, tmp_path: Path
) -> None:
    model = copy_of(certified, tmp_path)
    (model / "weights.bin").write_bytes(b"backdoored weights\n")
    code, message, _ = push(certified, model, registry, "models/changed", pull_secret, tmp_path / "log")
    assert code == 1
    assert "these are not the certified weights, nothing was pushed" in message["error"]
    assert not client(registry).has_blob(
        "models/changed", "sha256:" + hash_tree(model / "weights.bin").files[0].sha256
    )


def test_a_certificate_swapped_beside_the_weights_is_not_pushed(
    certified: CertifiedRun, registry: Registry, pull_secret: Path, tmp_path: Path
) -> None:
    """The tenant puts another certificate beside other weights (say, of another run of its own):
    the operator named the status's certificate by its sha256, and this is not it."""
    model = copy_of(certified, tmp_path)
    document = json.loads((model / CERTIFICATE_FILE).read_text())
    document["statement"]["subject"][0]["digest"]["sha256"] = "0" * 64
    (model / CERTIFICATE_FILE).write_text(json.dumps(document, separators=(",", ":")) + "\n")
    code, message, _ = push(certified, model, registry, "models/swapped", pull_secret, tmp_path / "log")
    assert code == 1
    assert f"{CERTIFICATE_FILE} beside the weights is not the certificate in the status" in message["error"]
    assert not client(registry).has_blob(
        "models/swapped", "sha256:" + hash_tree(model / "weights.bin").files[0].sha256
    )


def test_an_edited_model_signature_is_not_pushed(
    certified: CertifiedRun, registry: Registry, pull_secret: Path, tmp_path: Path
) -> None:
    model = copy_of(certified, tmp_path)
    signature = json.loads((model / MODEL_SIGNATURE_FILE).read_text())
    raw = bytearray(base64.b64decode(signature["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 1
    signature["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    (model / MODEL_SIGNATURE_FILE).write_text(json.dumps(signature) + "\n")
    code, message, _ = push(certified, model, registry, "models/badsig", pull_secret, tmp_path / "log")
    assert code == 1
    assert message["error"].startswith(f"{MODEL_SIGNATURE_FILE}: ")
    assert "does not verify" in message["error"]


def test_a_model_signature_of_other_files_is_not_pushed(
    certified: CertifiedRun, registry: Registry, pull_secret: Path, tmp_path: Path
) -> None:
    model = copy_of(certified, tmp_path)
    signature = json.loads((model / MODEL_SIGNATURE_FILE).read_text())
    payload = json.loads(base64.b64decode(signature["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    signature["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (model / MODEL_SIGNATURE_FILE).write_text(json.dumps(signature) + "\n")
    code, message, _ = push(certified, model, registry, "models/othersig", pull_secret, tmp_path / "log")
    assert code == 1
    assert message["error"] == f"{MODEL_SIGNATURE_FILE} does not sign these weights under output 'model'"
