"""Images as on AKS: a real node's containerd pulls them by digest from a real registry
(aicert_localcluster.registry: distribution's registry, pinned), over plain http as its hosts.toml
says. Checked on the real kubelet: a pod's image pulled by digest runs and its imageID is exactly the
digest reference the push returned; on a registry that requires auth a pod without a pull secret
fails with kubelet's pull-error reason and runs with one, and another pod without the secret cannot
use the image the first one pulled (kubelet's ensure-secret-pulled-images check); a digest the
registry does not hold fails the pull; a push whose blob does not match its digest is refused.

Needs root, the node binaries (localcluster/build.py builds them once, the registry included),
Debian's busybox-static and apache2-utils (htpasswd). Every wait polls with a deadline; nothing
asserts on timing (the figures are printed: pytest -s shows them).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.realnode_tools import (
    busybox_image,
    cluster_for_real_nodes,
    eventually,
    get_pod,
    pod_manifest,
    succeeded,
    wait_pod,
)

from aicert_localcluster import LocalCluster
from aicert_localcluster import registry as registry_module
from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import RealNode, free_node_index
from aicert_localcluster.registry import Registry, RegistryError

pytestmark = pytest.mark.integration

NODE = "real-registry-0"
PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff")
CREDENTIALS = ("puller", secrets.token_urlsafe(12))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from cluster_for_real_nodes(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    started = time.monotonic()
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        print(f"\n[figures] registry answered /v2/ {time.monotonic() - started:.2f}s after start")
        yield running


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A second registry that requires basic auth for every request (a pull secret's registry)."""
    with Registry(tmp_path_factory.mktemp("private"), credentials=CREDENTIALS) as running:
        yield running


@pytest.fixture(scope="module")
def node(
    cluster: LocalCluster, registry: Registry, private: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    real = RealNode(
        cluster,
        tmp_path_factory.mktemp("node"),
        name=NODE,
        index=free_node_index(),
        registries=[registry.host, private.host],
    )
    with real:
        yield real


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("images"))


def push(registry: Registry, store: ImageStore, reference: str) -> str:
    started = time.monotonic()
    pushed = registry.push(store.layout, reference)
    print(f"\n[figures] pushed {reference} to {registry.host} in {time.monotonic() - started:.2f}s")
    return pushed


@pytest.fixture(scope="module")
def pulled(registry: Registry, store: ImageStore) -> str:
    """busybox pushed to the registry without auth: 127.0.0.1:<port>/realnode/busybox@sha256:…"""
    return push(registry, store, busybox_image(store, "registry.local/realnode/busybox"))


@pytest.fixture(scope="module")
def private_image(private: Registry, store: ImageStore) -> str:
    """A busybox image of its own (another digest) on the registry that requires auth."""
    reference = store.build(
        "registry.local/private/busybox",
        files={"busybox": Path("/bin/busybox").read_bytes(), "which": b"private\n"},
        entrypoint=["/app/busybox"],
        cmd=["true"],
        workdir="/",
    )
    return push(private, store, reference)


def apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def pull_failure(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The container's waiting state once kubelet reports a pull error (ErrImagePull, ImagePullBackOff)."""
    for state in pod["status"].get("containerStatuses") or []:
        waiting = (state.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in PULL_ERRORS:
            return dict(waiting)
    return None


def wait_pull_failure(cluster: LocalCluster, name: str) -> dict[str, Any]:
    """The container's pull error; fails as soon as the container runs or ends instead."""

    def probe() -> dict[str, Any] | None:
        pod = get_pod(cluster, name)
        for state in pod["status"].get("containerStatuses") or []:
            started = (state.get("state") or {}).keys() & {"running", "terminated"}
            assert not started, f"pod {name}'s container got its image: {state}"
        return pull_failure(pod)

    return eventually(probe, f"pod {name} to fail its image pull")


def pulled_event(cluster: LocalCluster, name: str) -> str:
    """kubelet's Pulled event message for the pod ("Successfully pulled image … in …")."""

    def probe() -> str | None:
        events = cluster.kubectl_json(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name},reason=Pulled"
        )
        messages = [str(e.get("message")) for e in events.get("items") or []]
        return messages[0] if messages else None

    return eventually(probe, f"the Pulled event of pod {name}")


# ------------------------------------------------------------------------------------------------


def test_pod_runs_from_an_image_pulled_by_digest(
    cluster: LocalCluster, node: RealNode, registry: Registry, pulled: str
) -> None:
    """The pod's image is 127.0.0.1:<port>/repo@sha256:<manifest digest>, which the node does not hold:
    containerd pulls it from the registry (its log shows the node's manifest GET) and kubelet reports
    exactly that reference as the container's imageID."""
    assert pulled not in node.ctr("images", "ls", "--quiet").stdout.split()
    applied = time.monotonic()
    apply(cluster, pod_manifest("pulled", pulled, "echo pulled ok"))
    done = wait_pod(cluster, "pulled", succeeded, "Succeeded")
    print(
        f"\n[figures] pod from a pulled image Succeeded {time.monotonic() - applied:.2f}s after kubectl "
        f"apply; kubelet: {pulled_event(cluster, 'pulled')}"
    )
    (state,) = done["status"]["containerStatuses"]
    assert state["imageID"] == pulled
    assert cluster.kubectl("logs", "pulled", "-n", "default").stdout == "pulled ok\n"
    path, digest = pulled.removeprefix(f"{registry.host}/").split("@")
    log = registry.log.read_text()
    assert f'"GET /v2/{path}/manifests/{digest} HTTP/1.1" 200' in log, "the node fetched the manifest"
    assert pulled in node.ctr("images", "ls", "--quiet").stdout.split()


def test_private_registry_needs_the_pull_secret(
    cluster: LocalCluster, node: RealNode, private: Registry, private_image: str
) -> None:
    """Without imagePullSecrets the pull is refused (401) and kubelet reports a pull error; with a
    dockerconfigjson Secret for the registry the same pod runs; and once the image is on the node,
    another pod without the secret still cannot use it (kubelet verifies the credentials of an image
    it pulled with a secret, KubeletEnsureSecretPulledImages)."""
    apply(cluster, pod_manifest("no-secret", private_image, "echo should not run"))
    failure = wait_pull_failure(cluster, "no-secret")
    print(f"\n[figures] without a pull secret: {failure['reason']}: {failure.get('message')}")
    assert failure["reason"] in PULL_ERRORS
    assert "authorization failed" in str(failure.get("message"))
    cluster.kubectl("delete", "pod", "no-secret", "-n", "default", "--wait=true")

    apply(cluster, private.pull_secret("private-registry", "default"))
    manifest = pod_manifest("with-secret", private_image, "echo with secret ok")
    manifest["spec"]["imagePullSecrets"] = [{"name": "private-registry"}]
    apply(cluster, manifest)
    done = wait_pod(cluster, "with-secret", succeeded, "Succeeded")
    print(f"\n[figures] with the pull secret: {pulled_event(cluster, 'with-secret')}")
    (state,) = done["status"]["containerStatuses"]
    assert state["imageID"] == private_image
    assert private_image in node.ctr("images", "ls", "--quiet").stdout.split()

    apply(cluster, pod_manifest("no-secret-again", private_image, "echo should not run either"))
    again = wait_pull_failure(cluster, "no-secret-again")
    print(
        f"\n[figures] again without the secret, image on the node: {again['reason']}: {again.get('message')}"
    )
    assert again["reason"] in PULL_ERRORS
    assert "authorization failed" in str(again.get("message"))
    assert get_pod(cluster, "no-secret-again")["status"].get("phase") == "Pending"


def test_digest_not_in_the_registry_fails_the_pull(
    cluster: LocalCluster, node: RealNode, registry: Registry, pulled: str
) -> None:
    """A reference whose digest the registry does not hold: the pod ends in a pull error (not a hang)
    with the registry's not-found in kubelet's message."""
    missing = pulled.split("@")[0] + "@sha256:" + secrets.token_hex(32)
    apply(cluster, pod_manifest("missing", missing, "echo should not run"))
    failure = wait_pull_failure(cluster, "missing")
    print(f"\n[figures] digest not in the registry: {failure['reason']}: {failure.get('message')}")
    assert failure["reason"] in PULL_ERRORS
    assert "not found" in str(failure.get("message"))


def test_push_refuses_a_blob_that_does_not_match_its_digest(
    registry: Registry, store: ImageStore, tmp_path: Path
) -> None:
    """A copy of the layout with one byte of the layer changed: the registry refuses the upload (it
    checks the digest the push names), so the push fails and the manifest is not there."""
    reference = store.build(
        "registry.local/realnode/tampered", files={"data": b"original\n"}, entrypoint=None, cmd=None
    )
    layout = tmp_path / "layout"
    shutil.copytree(store.layout, layout)
    manifest = json.loads((layout / "blobs/sha256" / reference.split(":")[-1]).read_bytes())
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[-1] ^= 1
    layer.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="blob"):
        registry.push(layout, reference)
    assert registry.manifest_digest("realnode/tampered", reference.split("@")[1]) is None


def test_push_refuses_a_manifest_that_does_not_match_its_digest(
    registry: Registry, store: ImageStore, tmp_path: Path
) -> None:
    reference = store.build(
        "registry.local/realnode/tampered-manifest", files={"data": b"x\n"}, entrypoint=None, cmd=None
    )
    layout = tmp_path / "layout"
    shutil.copytree(store.layout, layout)
    path = layout / "blobs/sha256" / reference.split(":")[-1]
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(RegistryError, match="does not match its digest"):
        registry.push(layout, reference)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    """stop() ends the registry process; the port no longer answers; everything is under its directory."""
    instance = Registry(tmp_path / "registry")
    instance.start()
    pid = instance.pid
    assert pid is not None
    instance.stop()
    instance.stop()  # idempotent
    assert not Path(f"/proc/{pid}").exists() or "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", instance.port), timeout=2).close()
    assert sorted(p.name for p in (tmp_path / "registry").iterdir()) == [
        "config.yml",
        "registry.log",
        "storage",
    ]


def test_a_port_taken_before_the_registry_binds_it_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """free_port() offers a port that another process listens on by the time the registry binds it:
    the registry fails to bind, start() retries on another port, and the registry is the one
    answering there."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        offered = iter([taken.getsockname()[1]])
        real_free_port = registry_module.free_port
        monkeypatch.setattr(registry_module, "free_port", lambda: next(offered, None) or real_free_port())
        with Registry(tmp_path / "registry") as instance:
            assert instance.port != taken.getsockname()[1]
            assert "address already in use" in instance.log.read_text()
            assert instance.manifest_digest("none/such", "latest") is None
