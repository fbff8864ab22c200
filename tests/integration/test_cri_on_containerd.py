"""The agent's CRI client against a real containerd (a RealNode: upstream kubelet and containerd).

An image imported by digest: the runtime's ContainerStatus names the train container and its pod
(kubelet's io.kubernetes.pod.uid label), its image_ref
is kubelet's imageID (`repo@sha256:<manifest>`), its image_id the image's config digest, and
ImageStatus holds the pinned reference as that image; the agent's check passes. A second image held
by tag only: kubelet's imageID is the bare config digest, which the check refuses (ImageNotPinned);
a pod status forged to name that image's manifest digest is caught by the runtime's own answer.

Needs root, the node binaries (localcluster/build.py) and Debian's busybox-static.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.realnode_tools import (
    BUSYBOX,
    cluster_for_real_nodes,
    pod_manifest,
    succeeded,
    wait_pod,
)

from aicert_agent.cri_client import CriClient
from aicert_agent.image_proof import image_ref_problem, spec_image
from aicert_agent.pod_state import container_status
from aicert_agent.train_image import train_image_problem
from aicert_contract.status import Reason
from aicert_contract.training import CONTAINER_TRAIN
from aicert_localcluster import LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import RealNode, free_node_index

pytestmark = pytest.mark.integration

NODE = "cri-node-0"
REPOSITORY = "registry.local/cri/busybox"
TAG_ONLY = "registry.local/cri/tag-only"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from cluster_for_real_nodes(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def node(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    real = RealNode(cluster, tmp_path_factory.mktemp("node"), name=NODE, index=free_node_index(), gpus=0)
    real.start()
    try:
        yield real
    finally:
        real.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing: install Debian's busybox-static (make deps)")
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture
def runtime(node: RealNode) -> Iterator[CriClient]:
    with CriClient(node.layout.containerd_socket) as client:
        yield client


def busybox_image(store: ImageStore, repository: str, cmd: str) -> str:
    return store.build(
        repository,
        files={"busybox": BUSYBOX.read_bytes()},
        entrypoint=["/app/busybox"],
        cmd=[cmd],
        workdir="/",
    )


def config_digest(store: ImageStore, reference: str) -> str:
    manifest = json.loads((store.blobs / reference.rsplit(":", 1)[1]).read_bytes())
    return str(manifest["config"]["digest"])


def run_train_pod(cluster: LocalCluster, name: str, image: str) -> dict[str, Any]:
    """A pod whose one container is named like a training's train container, run to its end."""
    manifest = pod_manifest(name, image, "echo trained")
    manifest["spec"]["containers"][0]["name"] = CONTAINER_TRAIN
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return wait_pod(cluster, name, succeeded, "Succeeded")


def digest_names(node: RealNode, repository: str) -> list[str]:
    return [n for n in node.ctr("images", "ls", "--quiet").stdout.split() if n.startswith(f"{repository}@")]


def remove(node: RealNode, names: list[str]) -> None:
    for name in names:
        node.ctr("images", "rm", "--sync", name)


@pytest.fixture(scope="module")
def by_digest(node: RealNode, store: ImageStore) -> str:
    """The image held under its manifest digest reference alone, as after a pull by that digest.
    (`ctr images import --digests` also names the archive's index by its digest: a second digest
    reference of the same image, which the CRI would report instead when it sorts first.)"""
    reference = busybox_image(store, REPOSITORY, "true")
    assert node.import_image(store.layout, reference) == reference
    remove(node, [n for n in digest_names(node, REPOSITORY) if n != reference])
    assert digest_names(node, REPOSITORY) == [reference]
    return reference


@pytest.fixture(scope="module")
def tag_only(node: RealNode, store: ImageStore) -> tuple[str, str]:
    """Another image, held by the node under a tag only: (tag reference, the digest it would pin)."""
    reference = busybox_image(store, TAG_ONLY, "false")
    node.import_image(store.layout, reference)
    tagged = f"{TAG_ONLY}:v1"
    node.ctr("images", "tag", reference, tagged)
    remove(node, digest_names(node, TAG_ONLY))
    assert digest_names(node, TAG_ONLY) == []
    assert tagged in node.ctr("images", "ls", "--quiet").stdout.split()
    return tagged, reference


def test_the_runtime_says_what_the_train_container_ran(
    cluster: LocalCluster, runtime: CriClient, store: ImageStore, by_digest: str
) -> None:
    pod = run_train_pod(cluster, "by-digest", by_digest)
    train = container_status(pod, CONTAINER_TRAIN)
    assert train["imageID"] == by_digest
    runtime_id = train["containerID"].removeprefix("containerd://")

    container = runtime.container_status(runtime_id)
    assert container.id == runtime_id and container.name == CONTAINER_TRAIN
    assert container.pod_uid == pod["metadata"]["uid"]
    assert container.image_ref == by_digest == train["imageID"]
    assert container.image_id == config_digest(store, by_digest)
    held = runtime.image_status(by_digest)
    assert held is not None and held.id == container.image_id and by_digest in held.repo_digests

    pinned, problem = train_image_problem(pod, by_digest, runtime)
    assert problem is None and str(pinned) == by_digest


def test_a_tag_only_image_is_refused_and_a_status_forged_for_it_is_caught(
    cluster: LocalCluster, runtime: CriClient, store: ImageStore, tag_only: tuple[str, str]
) -> None:
    tagged, would_pin = tag_only
    pod = run_train_pod(cluster, "tag-only", tagged)
    train = container_status(pod, CONTAINER_TRAIN)
    config = config_digest(store, would_pin)
    assert train["imageID"] == config  # the node holds it by tag: kubelet reports the bare config digest

    refused = image_ref_problem(train["imageID"], spec_image(would_pin), who="kubelet's pod status")
    assert refused is not None and refused.reason is Reason.IMAGE_NOT_PINNED

    container = runtime.container_status(train["containerID"].removeprefix("containerd://"))
    assert container.image_ref == config and container.image_id == config
    assert container.image == tagged
    assert runtime.image_status(would_pin) is None  # not held under the digest reference

    # A status forged to name the pinned manifest digest passes the status check alone; the runtime
    # contradicts it.
    train["imageID"] = would_pin
    pod["status"]["containerStatuses"] = [train]
    assert train_image_problem(pod, would_pin, None)[1] is None
    _, caught = train_image_problem(pod, would_pin, runtime)
    assert caught is not None and caught.reason is Reason.IMAGE_NOT_PINNED
    assert "the container runtime (CRI)" in caught.message
