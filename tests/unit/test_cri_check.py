"""The runtime's word against kubelet's: a pod status that lies about the train container's image is
refused when the runtime, asked over its CRI socket, says otherwise. Attacks first, one input each."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aicert_agent.cri import RuntimeContainer, RuntimeImage, runtime_problem
from aicert_agent.image_proof import spec_image
from aicert_contract.status import Reason

MANIFEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
CONFIG = "sha256:" + "c" * 64
CID = "0123456789abcdef" * 4
REF = f"registry.example/team/train@{MANIFEST}"
PINNED = spec_image(f"registry.example/team/train:v1@{MANIFEST}")
POD_UID = "5f0c6a9e-0000-4000-8000-000000000001"
CONTAINER = RuntimeContainer(
    id=CID, name="train", image=CONFIG, image_ref=REF, image_id=CONFIG, pod_uid=POD_UID
)
IMAGE = RuntimeImage(id=CONFIG, repo_tags=(), repo_digests=(REF,))


def reason(
    container: RuntimeContainer = CONTAINER,
    image: RuntimeImage | None = IMAGE,
    pod_image_id: str = REF,
    container_id: str = CID,
) -> Reason | None:
    found = runtime_problem(PINNED, POD_UID, pod_image_id, container_id, container, image)
    return None if found is None else found.reason


def test_the_runtime_agreeing_with_the_status_passes() -> None:
    assert reason() is None
    assert reason(pod_image_id=f"docker-pullable://{REF}") is None
    pullable = replace(CONTAINER, image_ref=f"docker-pullable://{REF}")  # cri-dockerd's form
    assert reason(container=pullable) is None
    assert reason(container=pullable, pod_image_id=f"docker-pullable://{REF}") is None
    assert reason(container=replace(CONTAINER, image="registry.example/team/train:v1")) is None


def test_a_status_that_names_the_pinned_digest_while_the_runtime_ran_a_tag_only_image() -> None:
    """kubelet (or whoever wrote the status) says repo@<pinned>; the runtime says the container ran
    an image it holds by tag only."""
    found = runtime_problem(PINNED, POD_UID, REF, CID, replace(CONTAINER, image_ref=CONFIG), IMAGE)
    assert found is not None and found.reason is Reason.IMAGE_NOT_PINNED
    assert "the container runtime (CRI)" in found.message and REF in found.message


def test_a_status_that_names_the_pinned_digest_while_the_runtime_ran_another() -> None:
    other = replace(CONTAINER, image_ref=f"registry.example/team/train@{OTHER}")
    assert reason(container=other) is Reason.IMAGE_MISMATCH


def test_the_runtime_and_the_status_naming_different_references_is_refused() -> None:
    """Both prove the digest, but they are not the same report: one of them is not the runtime's."""
    found = runtime_problem(PINNED, POD_UID, f"docker.io/x/y@{MANIFEST}", CID, CONTAINER, IMAGE)
    assert found is not None and found.reason is Reason.RUNTIME_IMAGE_MISMATCH
    found = runtime_problem(
        spec_image(f"y@{MANIFEST}"),
        POD_UID,
        f"docker.io/library/y@{MANIFEST}",
        CID,
        replace(CONTAINER, image_ref=f"y@{MANIFEST}"),  # not as containerd names it
        IMAGE,
    )
    assert found is not None and found.reason is Reason.RUNTIME_IMAGE_MISMATCH


def test_the_runtime_answering_for_another_container_is_refused() -> None:
    assert reason(container=replace(CONTAINER, id="f" * 64)) is Reason.RUNTIME_IMAGE_MISMATCH


def test_a_status_pointing_at_another_container_of_the_pod_is_refused() -> None:
    """The status's containerID names the seal container (or any other) as the train container."""
    for name in ("seal", "gate", "", "train-x"):
        assert reason(container=replace(CONTAINER, name=name)) is Reason.RUNTIME_IMAGE_MISMATCH


def test_a_status_pointing_at_another_pods_train_container_is_refused() -> None:
    """Another training's train container ran the pinned image; this pod's status names it."""
    other_pod = replace(CONTAINER, pod_uid="5f0c6a9e-0000-4000-8000-000000000002")
    found = runtime_problem(PINNED, POD_UID, REF, CID, other_pod, IMAGE)
    assert found is not None and found.reason is Reason.RUNTIME_IMAGE_MISMATCH
    assert "of pod '5f0c6a9e-0000-4000-8000-000000000002'" in found.message
    assert reason(container=replace(CONTAINER, pod_uid="")) is Reason.RUNTIME_IMAGE_MISMATCH


def test_the_pinned_reference_not_held_by_the_runtime_is_refused() -> None:
    assert reason(image=None) is Reason.RUNTIME_IMAGE_MISMATCH


def test_the_pinned_reference_held_as_another_image_than_the_container_ran_is_refused() -> None:
    """The container was created from image C; the node holds repo@<pinned> as image D."""
    found = runtime_problem(PINNED, POD_UID, REF, CID, CONTAINER, replace(IMAGE, id="sha256:" + "d" * 64))
    assert found is not None and found.reason is Reason.RUNTIME_IMAGE_MISMATCH
    assert CONFIG in found.message


def test_an_image_the_runtime_knows_by_other_digests_only_is_refused() -> None:
    image = replace(IMAGE, repo_digests=(f"registry.example/team/train@{OTHER}",))
    assert reason(image=image) is Reason.RUNTIME_IMAGE_MISMATCH
    assert reason(image=replace(IMAGE, repo_digests=())) is Reason.RUNTIME_IMAGE_MISMATCH


def test_an_old_runtime_without_image_id_rests_on_image_ref_and_the_held_reference() -> None:
    assert reason(container=replace(CONTAINER, image_id="")) is None
    assert reason(container=replace(CONTAINER, image_id=""), image=None) is Reason.RUNTIME_IMAGE_MISMATCH


@pytest.mark.parametrize("image_ref", ["", "garbage", f"evil.example/x@{MANIFEST}"])
def test_whatever_the_runtime_says_must_prove_the_pin_itself(image_ref: str) -> None:
    assert reason(container=replace(CONTAINER, image_ref=image_ref)) in {
        Reason.IMAGE_UNKNOWN,
        Reason.IMAGE_MISMATCH,
    }
