"""What can go wrong talking to a registry."""

from __future__ import annotations


class OciError(Exception):
    """The registry could not be used: unreachable, refused, an answer of the wrong shape or size,
    a reference that does not parse. `reason` says which, naming the object."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OciContentError(OciError):
    """The registry served bytes that are not the ones asked for: a manifest or a blob whose
    digest or size is not the one that named it. A sign of tampering (or a broken registry):
    nothing it served is used."""
