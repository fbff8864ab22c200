"""`oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`: where a model lives in an OCI registry.

The repository grammar is the OCI distribution spec's (lower-case path components); only sha256
digests are accepted, as the rest of aicert hashes with sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aicert.oci.errors import OciError

SCHEME = "oci://"
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_LENGTH = 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True)
class OciReference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def hostname(self) -> str:
        """The registry's host without its port."""
        if self.registry.startswith("["):
            return self.registry[: self.registry.index("]") + 1]
        return self.registry.partition(":")[0]

    @property
    def loopback(self) -> bool:
        return self.hostname in LOOPBACK_HOSTS

    def with_digest(self, digest: str) -> OciReference:
        return OciReference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        text = f"{SCHEME}{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_oci(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_reference(text: str) -> OciReference:
    """`oci://host[:port]/repo[/more][:tag][@sha256:hex]`; OciError naming what does not parse."""
    if len(text) > _MAX_LENGTH:
        raise OciError(f"the reference is longer than {_MAX_LENGTH} characters")
    if not text.startswith(SCHEME):
        raise OciError(f"{text!r} does not begin with {SCHEME}")
    rest = text[len(SCHEME) :]
    rest, at, digest = rest.partition("@")
    if at and not DIGEST.fullmatch(digest):
        raise OciError(f"{text!r}: the digest {digest!r} is not sha256:<64 lower-case hex digits>")
    host, slash, path = rest.partition("/")
    if not slash or not _HOST.fullmatch(host):
        raise OciError(f"{text!r} does not name a registry host: oci://REGISTRY/REPOSITORY[:TAG][@sha256:…]")
    repository, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise OciError(f"{text!r}: the tag {tag!r} is not a valid tag")
    if not _REPOSITORY.fullmatch(repository):
        raise OciError(
            f"{text!r}: the repository {repository!r} is not lower-case path components (a-z, 0-9, . _ -)"
        )
    return OciReference(host, repository, tag, digest if at else None)
