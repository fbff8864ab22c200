"""Models and certificates in a real OCI registry (distribution, on 127.0.0.1): `kubectl aicert push`
uploads a model certified on swtpm as a ModelPack artifact with its certificate as a referrer;
oras (PyPI) reads both back as a second client; `aicert verify oci://…` pulls and verifies offline.
Tampering in the registry fails: a changed weight layer, a blob changed in the registry's storage,
a referrer that names another model; and a registry that needs credentials works from a docker
config.json."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import oras.provider
import pytest
from tests.integration.certified_run import CertifiedRun, kubectl_showing, make_run

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert.digest.hashing import hash_tree
from aicert.digest.manifest import OUTPUT_EXCLUDED
from aicert.oci.client import RegistryClient, canonical_json, fallback_tag
from aicert.oci.documents import (
    ARTIFACT_CERTIFICATE,
    ARTIFACT_MODEL,
    ARTIFACT_SIGSTORE_BUNDLE,
    MEDIA_WEIGHT_RAW,
    Attachment,
)
from aicert.oci.transfer import attachments_of, push_model
from aicert.outputs import BUNDLE_FILE, MODEL_SIGNATURE_FILE
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster.registry import Registry

pytestmark = pytest.mark.integration

CREDENTIALS = ("pusher", secrets.token_urlsafe(12))


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


def figures(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[figures] {text}")


def push(target: str, model: Path, *extra: str) -> int:
    return kubectl_plugin.main(["push", "digits", target, "--model", str(model), *extra])


def verify(reference: str, run: CertifiedRun, *extra: str) -> int:
    return aicert_main(["verify", reference, "--trust-bundle", str(run.ca_dir / "dev-ca.pem"), *extra])


def pushed_reference(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "@sha256:" in out[0], out
    return out[0]


def test_push_list_with_oras_and_verify(
    registry: Registry,
    certified: CertifiedRun,
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert push(f"oci://{registry.host}/models/digits:v1", certified.model) == 0
    reference = pushed_reference(capsys)
    digest = reference.split("@")[1]

    # oras, a second client. distribution 3.1 has no referrers API (404): the referrers are in the
    # index under the fallback tag sha256-<hex>, where oras looks for them on such a registry
    oras_client = oras.provider.Registry(hostname=registry.host, insecure=True)
    api = oras_client.do_request(f"http://{registry.host}/v2/models/digits/referrers/{digest}")
    listed = oras_client.get_manifest(
        f"{registry.host}/models/digits:{fallback_tag(digest)}",
        allowed_media_type=["application/vnd.oci.image.index.v1+json"],
    )
    figures(
        capsys,
        f"referrers API: HTTP {api.status_code}; oras lists the referrers of {digest}: {json.dumps(listed)}",
    )
    # the certificate, its Sigstore bundle (rebuilt from the status) and model.sig (from beside the weights)
    assert sorted(d["artifactType"] for d in listed["manifests"]) == sorted(
        [ARTIFACT_CERTIFICATE, ARTIFACT_SIGSTORE_BUNDLE, ARTIFACT_SIGSTORE_BUNDLE]
    )
    for listed_referrer in listed["manifests"]:
        referrer = oras_client.get_manifest(f"{registry.host}/models/digits@{listed_referrer['digest']}")
        assert referrer["subject"]["digest"] == digest
    (descriptor,) = [d for d in listed["manifests"] if d["artifactType"] == ARTIFACT_CERTIFICATE]
    bundles = attachments_of(
        RegistryClient(registry.host, plain_http=True),
        "models/digits",
        digest,
        ARTIFACT_SIGSTORE_BUNDLE,
        max_bytes=1 << 24,
    )
    # the bundle rebuilt from the status is the agent's, byte for byte, and model.sig is the agent's
    assert sorted(r.data for r in bundles.referrers) == sorted(
        (certified.model / name).read_bytes() for name in (BUNDLE_FILE, MODEL_SIGNATURE_FILE)
    )
    manifest = oras_client.get_manifest(f"{registry.host}/models/digits@{digest}")
    assert manifest["artifactType"] == ARTIFACT_MODEL
    assert {layer["mediaType"] for layer in manifest["layers"]} == {MEDIA_WEIGHT_RAW}
    pulled = oras_client.pull(target=f"{registry.host}/models/digits@{digest}", outdir=str(tmp_path / "oras"))
    local = hash_tree(certified.model, exclude=OUTPUT_EXCLUDED)
    assert sorted(Path(p).relative_to(tmp_path / "oras").as_posix() for p in pulled) == [
        f.path for f in local.files
    ]
    assert (
        hash_tree(tmp_path / "oras").root
        == local.root
        == certified.certificate["statement"]["subject"][0]["digest"]["sha256"]
    )

    assert verify(reference, certified) == 0
    out = capsys.readouterr().out
    figures(capsys, f"aicert verify {reference}:\n{out}")
    assert out.startswith("VERIFIED  assurance: dev")
    assert "model-files" in out.split("  checks   ")[1].splitlines()[0]
    assert f"  referrer {descriptor['digest']}" in out

    assert verify(reference, certified, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True and doc["oci"]["referrer"] == descriptor["digest"]


def test_a_tag_is_resolved_to_a_digest_and_shown(
    registry: Registry, certified: CertifiedRun, cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert push(f"oci://{registry.host}/models/tagged:v2", certified.model) == 0
    digest = pushed_reference(capsys).split("@")[1]
    assert verify(f"oci://{registry.host}/models/tagged:v2", certified) == 0
    assert f"tag v2 resolved to {digest}" in capsys.readouterr().out


def test_push_refuses_weights_that_are_not_the_certified_ones(
    registry: Registry,
    certified: CertifiedRun,
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(certified.model, changed)
    (changed / "weights.bin").write_bytes(b"other weights\n")
    assert push(f"oci://{registry.host}/models/refused:v1", changed) == 1
    err = capsys.readouterr().err
    assert "these are not the certified weights, nothing was pushed" in err
    client = RegistryClient(registry.host, plain_http=True)
    assert registry.manifest_digest("models/refused", "v1") is None
    assert not client.has_blob(
        "models/refused", "sha256:" + hash_tree(changed / "weights.bin").files[0].sha256
    )


def test_push_refuses_a_model_signature_that_is_not_the_aks_over_these_weights(
    registry: Registry,
    certified: CertifiedRun,
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """model.sig beside the certified weights, edited: push refuses it as the push pod does, before
    anything is uploaded (a model.sig of other files would otherwise be attached to these)."""
    edited = tmp_path / "edited"
    shutil.copytree(certified.model, edited)
    signature = json.loads((edited / MODEL_SIGNATURE_FILE).read_bytes())
    signature["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 64).decode()
    (edited / MODEL_SIGNATURE_FILE).write_text(json.dumps(signature))
    assert push(f"oci://{registry.host}/models/badsig:v1", edited) == 1
    err = capsys.readouterr().err
    assert MODEL_SIGNATURE_FILE in err and "nothing was pushed" in err
    assert registry.manifest_digest("models/badsig", "v1") is None


def tampered_model(registry: Registry, certified: CertifiedRun, directory: Path, repository: str) -> str:
    """The certified weights with weights.bin changed, pushed with the genuine certificate attached
    (what someone who can write to the repository can do); `oci://…@digest`."""
    shutil.copytree(certified.model, directory)
    (directory / "weights.bin").write_bytes(b"backdoored weights " + secrets.token_bytes(8))
    files = hash_tree(directory, exclude=OUTPUT_EXCLUDED).files
    client = RegistryClient(registry.host, plain_http=True)
    genuine = Attachment(
        ARTIFACT_CERTIFICATE, "aicert-certificate.json", certified.certificate_path.read_bytes()
    )
    pushed = push_model(client, repository, None, directory, files, "digits", [genuine])
    return f"oci://{registry.host}/{repository}@{pushed.manifest.digest}"


def test_a_changed_weight_layer_fails_the_model_check(
    registry: Registry, certified: CertifiedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reference = tampered_model(registry, certified, tmp_path / "tampered", "models/tampered")
    assert verify(reference, certified) == 1
    err = capsys.readouterr().err
    figures(capsys, f"{err}")
    assert "NOT VERIFIED  check model-files failed:" in err


def test_a_blob_changed_in_the_registry_storage_is_refused(
    certified: CertifiedRun, cluster: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry") as own:
        assert push(f"oci://{own.host}/models/digits:v1", certified.model) == 0
        reference = pushed_reference(capsys)
        weights = hash_tree(certified.model / "weights.bin").files[0].sha256
        stored = own.storage / "docker/registry/v2/blobs/sha256" / weights[:2] / weights / "data"
        data = bytearray(stored.read_bytes())
        data[0] ^= 1
        stored.write_bytes(bytes(data))
        assert verify(reference, certified) == 1
    err = capsys.readouterr().err
    figures(capsys, f"{err}")
    assert f"NOT VERIFIED  check oci-content failed: blob sha256:{weights}: the bytes served hash to" in err


def test_a_referrer_whose_subject_is_another_model_is_not_used(
    registry: Registry, certified: CertifiedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The genuine certificate is attached to a tampered model B; the fallback tag of the genuine
    model A (where a registry without the referrers API, like this one, lists A's referrers) is made
    to list that referrer. It is not used for A: its own manifest names B."""
    client = RegistryClient(registry.host, plain_http=True)
    files = hash_tree(certified.model, exclude=OUTPUT_EXCLUDED).files
    model_a = push_model(client, "models/lonely", None, certified.model, files, "digits", []).manifest
    other = tampered_model(registry, certified, tmp_path / "b", "models/lonely")
    model_b = other.split("@")[1]
    (referrer,) = attachments_of(
        client, "models/lonely", model_b, ARTIFACT_CERTIFICATE, max_bytes=1 << 24
    ).referrers
    poisoned = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": referrer.digest,
                "size": 1,
                "artifactType": ARTIFACT_CERTIFICATE,
            }
        ],
    }
    index = "application/vnd.oci.image.index.v1+json"
    client.push_manifest("models/lonely", fallback_tag(model_a.digest), canonical_json(poisoned), index)
    assert verify(f"oci://{registry.host}/models/lonely@{model_a.digest}", certified) == 2
    err = capsys.readouterr().err
    figures(capsys, f"{err}")
    assert "no certificate (application/vnd.aicert.certificate.v1+json) is attached" in err
    assert f"passed over: {referrer.digest}: its subject is {model_b}, not this model" in err


def test_a_registry_that_needs_credentials_works_with_a_docker_config(
    certified: CertifiedRun, cluster: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    with Registry(tmp_path / "private", credentials=CREDENTIALS) as private:
        auth = base64.b64encode(":".join(CREDENTIALS).encode()).decode()
        config.write_text(json.dumps({"auths": {private.host: {"auth": auth}}}))
        target = f"oci://{private.host}/models/digits:v1"
        assert push(target, certified.model, "--registry-config", str(tmp_path / "none.json")) == 2
        assert "none.json" in capsys.readouterr().err
        assert push(target, certified.model) == 2  # no config: 401
        assert "has none for it" in capsys.readouterr().err
        assert push(target, certified.model, "--registry-config", str(config)) == 0
        reference = pushed_reference(capsys)
        assert verify(reference, certified, "--registry-config", str(config)) == 0
        assert capsys.readouterr().out.startswith("VERIFIED")
        assert verify(reference, certified) == 2
        assert "has none for it" in capsys.readouterr().err


def forged(certified: CertifiedRun) -> bytes:
    """The run's certificate with one byte of its quote signature changed."""
    cert = certified.certificate
    signature = bytearray(base64.b64decode(cert["evidence"]["quote"]["signature"]))
    signature[-1] ^= 1
    cert["evidence"]["quote"]["signature"] = base64.b64encode(bytes(signature)).decode()
    return json.dumps(cert).encode()


def test_of_several_certificates_one_that_verifies_is_the_result_and_the_others_are_named(
    registry: Registry, certified: CertifiedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    client = RegistryClient(registry.host, plain_http=True)
    files = hash_tree(certified.model, exclude=OUTPUT_EXCLUDED).files
    bad = Attachment(ARTIFACT_CERTIFICATE, "forged.json", forged(certified))
    good = Attachment(
        ARTIFACT_CERTIFICATE, "aicert-certificate.json", certified.certificate_path.read_bytes()
    )
    pushed = push_model(client, "models/several", None, certified.model, files, "digits", [bad, good])
    model = pushed.manifest
    forged_digest, genuine_digest = (digest for _, digest in pushed.attached)
    assert verify(f"oci://{registry.host}/models/several@{model.digest}", certified) == 0
    out = capsys.readouterr().out
    assert f"  referrer {genuine_digest}" in out
    assert f"  not used {forged_digest}: check quote-signature failed" in out

    only_forged = push_model(client, "models/forged", None, certified.model, files, "digits", [bad]).manifest
    assert verify(f"oci://{registry.host}/models/forged@{only_forged.digest}", certified) == 1
    err = capsys.readouterr().err
    assert "NOT VERIFIED  check quote-signature failed:" in err and f"(certificate {forged_digest})" in err
