"""Does what the node says about the train container's image prove the digest `spec.image` pins? Pure.

`spec.image` pins a manifest (or index) digest: `repository[:tag]@sha256:<hex>`. kubelet's
`status.containerStatuses[].imageID` is the runtime's CRI `ContainerStatus.image_ref`, which
containerd gives as:

- `<repository>@sha256:<manifest digest>` when the node holds the image under a digest reference
  (pulled by digest, or imported with its digests): the only form that proves the pinned digest;
- `sha256:<config digest>` when it holds the image by tag only: the image's local ID, which names no
  manifest at all, so nothing shows that what ran is what the pinned digest names.

Older forms: `docker-pullable://<repository>@sha256:…` (dockershim, the same proof as the plain
form) and `docker://sha256:…` (dockershim's image ID, a config digest). Repositories compare after
the normalisation the runtime applies (`busybox` is `docker.io/library/busybox`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aicert_agent.pod_check import Problem
from aicert_contract.status import Reason

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DEFAULT_DOMAINS = frozenset({"index.docker.io", "registry-1.docker.io"})
PULLABLE_PREFIX = "docker-pullable://"  # dockershim's repo-digest imageID
DOCKER_ID_PREFIX = "docker://"  # dockershim's image ID (a config digest)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?)"
)
_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MAX_REFERENCE = 1024


@dataclass(frozen=True)
class PinnedImage:
    """A digest reference: the repository as the runtime names it, and the sha256 digest."""

    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


def normalised_repository(name: str) -> str | None:
    """The repository as containerd stores it (`busybox` -> `docker.io/library/busybox`), or None
    when `name` is not a repository name."""
    if len(name) > _MAX_REFERENCE or not _NAME.fullmatch(name):
        return None
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain in _LEGACY_DEFAULT_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}"


def parse_pinned(reference: str, *, tag_allowed: bool) -> PinnedImage | None:
    """`repository[:tag]@sha256:<hex>` normalised, or None. A runtime's digest reference never
    carries a tag; spec.image may (the digest is what counts)."""
    name, at, digest = reference.rpartition("@")
    if not at or not _DIGEST.fullmatch(digest):
        return None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        if not tag_allowed or not _TAG.fullmatch(name[colon + 1 :]):
            return None
        name = name[:colon]
    repository = normalised_repository(name)
    return None if repository is None else PinnedImage(repository, digest)


def spec_image(image: str) -> PinnedImage:
    """spec.image as pinned (the CRD's validation admits only digest references)."""
    pinned = parse_pinned(image, tag_allowed=True)
    if pinned is None:
        raise ValueError(f"spec.image {image!r} is not pinned by digest (repository@sha256:<64 hex>)")
    return pinned


def _shown(text: str) -> str:
    return repr(text if len(text) <= 300 else text[:300] + "…")


def image_ref_problem(image_ref: str, pinned: PinnedImage, *, who: str) -> Problem | None:
    """None when `image_ref` (a pod status's imageID, or the CRI's image_ref, as `who` reported it)
    proves that the train container ran the image `pinned` names; else the refusal."""
    if not image_ref:
        return Problem(Reason.IMAGE_UNKNOWN, f"{who} reported no image for the train container")
    reference = image_ref.removeprefix(PULLABLE_PREFIX)
    if _DIGEST.fullmatch(reference.removeprefix(DOCKER_ID_PREFIX)):
        return Problem(
            Reason.IMAGE_NOT_PINNED,
            f"{who} reported the train container's image as {_shown(image_ref)}, a bare image ID (its "
            f"config digest): the node holds that image by tag only, not under {pinned}, so nothing "
            "shows that it is the image the pinned digest names",
        )
    ran = parse_pinned(reference, tag_allowed=False)
    if ran is None:
        return Problem(
            Reason.IMAGE_UNKNOWN,
            f"{who} reported the train container's image as {_shown(image_ref)}, which is not a "
            "digest reference (repository@sha256:<64 hex>)",
        )
    if ran.digest != pinned.digest:
        return Problem(
            Reason.IMAGE_MISMATCH,
            f"the train container ran image {ran.digest} ({who}: {_shown(image_ref)}), not the "
            f"{pinned.digest} that spec.image pins",
        )
    if ran.repository != pinned.repository:
        return Problem(
            Reason.IMAGE_MISMATCH,
            f"the train container ran {ran} ({who}), from another repository than spec.image's {pinned}",
        )
    return None
