"""What proves the train container ran the pinned image: every imageID form a runtime gives, the
attacks first (a tag-only image of the same name, another repository, another digest)."""

from __future__ import annotations

import pytest

from aicert_agent.image_proof import (
    PinnedImage,
    image_ref_problem,
    normalised_repository,
    parse_pinned,
    spec_image,
)
from aicert_contract.status import Reason

MANIFEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
OTHER = "sha256:" + "b" * 64
PINNED = spec_image(f"registry.example/team/train@{MANIFEST}")


def problem(image_id: str, pinned: PinnedImage = PINNED) -> Reason | None:
    found = image_ref_problem(image_id, pinned, who="kubelet's pod status")
    return None if found is None else found.reason


# --- attacks ---------------------------------------------------------------------------------------


def test_a_tag_only_image_of_the_same_name_is_refused() -> None:
    """The node holds registry.example/team/train:latest only: kubelet reports its config digest."""
    assert problem(CONFIG) is Reason.IMAGE_NOT_PINNED
    found = image_ref_problem(CONFIG, PINNED, who="kubelet's pod status")
    assert found is not None and "by tag only" in found.message and CONFIG in found.message


def test_a_bare_id_equal_to_the_pinned_digest_is_still_refused() -> None:
    """A bare sha256 is an image ID by the CRI's convention, never a manifest: a status that claims
    `sha256:<the pinned digest>` proves nothing (the old check accepted it)."""
    assert problem(MANIFEST) is Reason.IMAGE_NOT_PINNED
    assert problem(f"docker://{MANIFEST}") is Reason.IMAGE_NOT_PINNED


def test_the_pinned_digest_under_another_repository_is_refused() -> None:
    assert problem(f"evil.example/team/train@{MANIFEST}") is Reason.IMAGE_MISMATCH
    assert problem(f"registry.example/team/other@{MANIFEST}") is Reason.IMAGE_MISMATCH
    assert problem(f"registry.example:5000/team/train@{MANIFEST}") is Reason.IMAGE_MISMATCH


def test_another_digest_of_the_same_repository_is_refused() -> None:
    found = image_ref_problem(f"registry.example/team/train@{OTHER}", PINNED, who="the runtime")
    assert found is not None and found.reason is Reason.IMAGE_MISMATCH
    assert OTHER in found.message and MANIFEST in found.message


@pytest.mark.parametrize(
    "image_id",
    [
        "registry.example/team/train:latest",
        f"registry.example/team/train:latest@{MANIFEST}",  # the runtime's digest references carry no tag
        f"registry.example/team/train@{MANIFEST}\n",
        f"registry.example/team/train@{MANIFEST.upper()}",
        f"registry.example/team/train@sha512:{'a' * 128}",
        f"registry.example/team/train@{MANIFEST}a",
        f"REGISTRY.example/Team/train@{MANIFEST}",
        f"cri-o://registry.example/team/train@{MANIFEST}",
        f"@{MANIFEST}",
        "x" * 5000 + f"@{MANIFEST}",
        "sha256:" + "c" * 63,
    ],
)
def test_a_form_no_runtime_gives_proves_nothing(image_id: str) -> None:
    assert problem(image_id) is Reason.IMAGE_UNKNOWN


def test_an_empty_image_id_is_unknown() -> None:
    assert problem("") is Reason.IMAGE_UNKNOWN


def test_a_long_hostile_image_id_is_shown_cut() -> None:
    found = image_ref_problem("y" * 100_000, PINNED, who="the runtime")
    assert found is not None and len(found.message) < 1000


# --- the forms that prove the pinned digest --------------------------------------------------------


@pytest.mark.parametrize(
    "image_id",
    [
        f"registry.example/team/train@{MANIFEST}",  # containerd, pulled or imported by digest
        f"docker-pullable://registry.example/team/train@{MANIFEST}",  # dockershim
    ],
)
def test_a_digest_reference_of_the_pinned_image_proves_it(image_id: str) -> None:
    assert problem(image_id) is None


@pytest.mark.parametrize(
    ("spec", "image_id"),
    [
        (f"busybox@{MANIFEST}", f"docker.io/library/busybox@{MANIFEST}"),
        (f"library/busybox@{MANIFEST}", f"docker.io/library/busybox@{MANIFEST}"),
        (f"docker.io/busybox@{MANIFEST}", f"docker.io/library/busybox@{MANIFEST}"),
        (f"index.docker.io/library/busybox@{MANIFEST}", f"docker.io/library/busybox@{MANIFEST}"),
        (f"team/train@{MANIFEST}", f"docker.io/team/train@{MANIFEST}"),
        (f"busybox:1.36@{MANIFEST}", f"docker-pullable://busybox@{MANIFEST}"),
        (f"localhost/train@{MANIFEST}", f"localhost/train@{MANIFEST}"),
        (f"localhost:5000/train:v1@{MANIFEST}", f"localhost:5000/train@{MANIFEST}"),
        (f"registry.example:5000/a/b/c@{MANIFEST}", f"registry.example:5000/a/b/c@{MANIFEST}"),
    ],
)
def test_repositories_compare_as_the_runtime_names_them(spec: str, image_id: str) -> None:
    assert problem(image_id, spec_image(spec)) is None


def test_normalisation_does_not_merge_different_repositories() -> None:
    assert normalised_repository("busybox") == "docker.io/library/busybox"
    assert normalised_repository("team/busybox") == "docker.io/team/busybox"
    assert normalised_repository("quay.io/busybox") == "quay.io/busybox"
    assert normalised_repository("localhost/busybox") == "localhost/busybox"
    assert normalised_repository("docker.io/library/busybox") == "docker.io/library/busybox"
    assert normalised_repository("Busybox") is None
    assert normalised_repository("a//b") is None
    assert normalised_repository("") is None


def test_a_spec_image_must_be_pinned() -> None:
    with pytest.raises(ValueError, match="not pinned"):
        spec_image("registry.example/team/train:latest")
    assert parse_pinned(f"r.example/x:tag@{MANIFEST}", tag_allowed=False) is None
    assert parse_pinned(f"r.example/x:tag@{MANIFEST}", tag_allowed=True) == PinnedImage(
        "r.example/x", MANIFEST
    )
