"""What the container runtime itself says about the train container, and whether it agrees with the
pod's status. Pure: the CRI messages (k8s.io/cri-api, runtime/v1) encoded and decoded by hand, and
the decision; the gRPC calls are in `cri_client`.

kubelet's pod status is kubelet's report of what the runtime told it. The agent asks the runtime
over its CRI socket, read-only, for the train container's status (`ContainerStatus`: its name, the
image reference it runs, `image_ref`, and the ID of the image it was created from, `image_id`) and
for the image the pinned reference names (`ImageStatus`: the image's ID and repo digests). A
certificate needs all of them to agree: the runtime's `image_ref` proves the pinned digest the
same way imageID must (`image_proof`), equals the status's imageID, and the pinned reference names
the very image the container was created from.

Field numbers (cri-api v0.37 `pkg/apis/runtime/v1/api.proto`):
  ContainerStatusRequest {container_id = 1}    ContainerStatusResponse {status = 1}
  ContainerStatus {id = 1, metadata = 2, image = 8, image_ref = 9, labels = 12, image_id = 17}
  ContainerMetadata {name = 1}                 ImageSpec {image = 1}
  ImageStatusRequest {image = 1}               ImageStatusResponse {image = 1}
  Image {id = 1, repo_tags = 2, repo_digests = 3}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from aicert_agent.image_proof import PULLABLE_PREFIX, PinnedImage, image_ref_problem, parse_pinned
from aicert_agent.pod_check import Problem
from aicert_agent.protowire import Message, WireError, encode_bytes, encode_string
from aicert_contract.status import Reason
from aicert_contract.training import CONTAINER_TRAIN

CONTAINER_STATUS = "/runtime.v1.RuntimeService/ContainerStatus"
IMAGE_STATUS = "/runtime.v1.ImageService/ImageStatus"
POD_UID_LABEL = "io.kubernetes.pod.uid"  # kubelet labels every container it creates with its pod's uid

_CONTAINER_ID = re.compile(r"(?P<runtime>[a-z][a-z0-9+.-]{0,31})://(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})")


@dataclass(frozen=True)
class RuntimeContainer:
    """ContainerStatus as the runtime answered it."""

    id: str
    name: str  # metadata.name: the container's name in the pod
    image: str  # image.image: a tag of its image, or the image ID it was created with
    image_ref: str  # what kubelet reports as imageID
    image_id: str  # the image's ID (config digest); "" from runtimes that do not fill it in (older ones)
    pod_uid: str  # kubelet's label io.kubernetes.pod.uid on the container: the pod it belongs to


@dataclass(frozen=True)
class RuntimeImage:
    """ImageStatus's image: None in its place means the runtime does not hold the reference."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]


class RuntimeReader(Protocol):
    """The two read-only CRI calls the agent makes (`cri_client.CriClient`)."""

    def container_status(self, container_id: str) -> RuntimeContainer: ...

    def image_status(self, reference: str) -> RuntimeImage | None: ...


def container_status_request(container_id: str) -> bytes:
    return encode_string(1, container_id)


def image_status_request(reference: str) -> bytes:
    return encode_bytes(1, encode_string(1, reference))


def parse_container_status(data: bytes) -> RuntimeContainer:
    """ContainerStatusResponse; raises WireError when it is not one, or has no status."""
    status = Message(data, "ContainerStatusResponse").message(1, "status")
    if status is None:
        raise WireError("ContainerStatusResponse has no status")
    metadata = status.message(2, "metadata")
    image = status.message(8, "image")
    return RuntimeContainer(
        id=status.string(1, "id"),
        name="" if metadata is None else metadata.string(1, "name"),
        image="" if image is None else image.string(1, "image"),
        image_ref=status.string(9, "image_ref"),
        image_id=status.string(17, "image_id"),
        pod_uid=status.string_map(12, "labels").get(POD_UID_LABEL, ""),
    )


def parse_image_status(data: bytes) -> RuntimeImage | None:
    """ImageStatusResponse's image; None when the runtime does not hold the image (no image, as
    the CRI answers then, or an empty one)."""
    image = Message(data, "ImageStatusResponse").message(1, "image")
    if image is None:
        return None
    found = RuntimeImage(
        id=image.string(1, "id"),
        repo_tags=tuple(image.strings(2, "repo_tags")),
        repo_digests=tuple(image.strings(3, "repo_digests")),
    )
    return None if not found.id else found


def runtime_container_id(container_id: str) -> str | None:
    """The runtime's ID in a pod status's containerID (`containerd://<id>`), or None."""
    matched = _CONTAINER_ID.fullmatch(container_id)
    return None if matched is None else matched["id"]


def _mismatch(message: str) -> Problem:
    return Problem(Reason.RUNTIME_IMAGE_MISMATCH, message)


def runtime_problem(
    pinned: PinnedImage,
    pod_uid: str,
    pod_image_id: str,
    container_id: str,
    container: RuntimeContainer,
    image: RuntimeImage | None,
) -> Problem | None:
    """None when the runtime agrees with the status of pod `pod_uid` that its train container
    `container_id` ran the image `pinned` names (`pod_image_id` already proved it, by `image_proof`)."""
    if container.id != container_id:
        return _mismatch(
            f"the runtime answered for container {container.id[:80]!r} when asked for {container_id}"
        )
    if container.name != CONTAINER_TRAIN or container.pod_uid != pod_uid:
        return _mismatch(
            f"the runtime's container {container_id} is {container.name[:80]!r} of pod "
            f"{container.pod_uid[:80]!r}, not {CONTAINER_TRAIN} of pod {pod_uid}: the pod's status "
            "names another container as its train container"
        )
    problem = image_ref_problem(container.image_ref, pinned, who="the container runtime (CRI)")
    if problem is not None:
        return Problem(problem.reason, f"{problem.message}; kubelet's pod status said {pod_image_id}")
    if container.image_ref.removeprefix(PULLABLE_PREFIX) != pod_image_id.removeprefix(PULLABLE_PREFIX):
        return _mismatch(
            f"kubelet's pod status says the train container ran {pod_image_id}, the runtime says "
            f"{container.image_ref}"
        )
    if image is None:
        return _mismatch(f"the runtime does not hold {pinned}, which the train container says it ran")
    digests = {parse_pinned(d, tag_allowed=False) for d in image.repo_digests}
    if pinned not in digests:
        return _mismatch(
            f"the runtime's image for {pinned} is known by {', '.join(image.repo_digests[:4]) or 'no digest'}, "
            "not by the pinned reference"
        )
    if container.image_id and container.image_id != image.id:
        return _mismatch(
            f"the train container was created from image {container.image_id[:80]!r}; the runtime holds "
            f"{pinned} as image {image.id[:80]!r}"
        )
    return None
