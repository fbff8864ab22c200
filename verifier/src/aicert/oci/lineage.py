"""`aicert verify --lineage oci://REGISTRY/REPOSITORY`: parent certificates fetched from a registry.

A child records each parent as the sha256 of the parent certificate's exact bytes. `kubectl aicert
push` attaches a certificate as a referrer artifact whose one layer is those bytes, and a layer is a
blob named by its own sha256: so the registry holds the parent certificate as the blob
`sha256:<the digest the child records>`, and `GET /v2/REPOSITORY/blobs/sha256:<digest>` fetches it
directly, with no listing, no index and no search among the repository's models.

`RegistryCertificates.find` is a `Finder` of `aicert.verify.lineage`: the blob, read to at most the
certificate cap, or None when the registry has no such blob (404: the parent is missing, as a file in
no --lineage directory is). The bytes are checked against the digest asked for: other bytes fail
`lineage-digest`. A registry that cannot be used (unreachable, refused, an answer over the cap) makes
the input unusable (MalformedError of `--lineage`): that is not a missing parent, and never an
incomplete lineage accepted by --lineage-partial. Whether the certificate verifies, and certifies the
model the child recorded, is the walk's to check, as for any parent.
"""

from __future__ import annotations

from aicert.oci.client import RegistryClient
from aicert.oci.errors import OciContentError, OciError
from aicert.oci.reference import OciReference
from aicert.verify.errors import LineageCheck, MalformedError, VerificationError
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES


def lineage_repository(reference: OciReference) -> OciReference:
    """The repository a --lineage oci:// names: no tag, no digest (certificates are found by the
    digest each child records). MalformedError of `--lineage` otherwise."""
    if reference.tag is not None or reference.digest is not None:
        raise MalformedError(
            "--lineage",
            f"{reference} names a {'tag' if reference.tag else 'digest'}; give the repository, "
            f"oci://{reference.registry}/{reference.repository}: parent certificates are found in it "
            "by the digest each child records",
        )
    return reference


class RegistryCertificates:
    """The certificates stored as blobs in one repository, found by the digest of their bytes."""

    def __init__(
        self, client: RegistryClient, reference: OciReference, *, limit: int = CERTIFICATE_MAX_BYTES
    ) -> None:
        self.client = client
        self.reference = lineage_repository(reference)
        self.limit = limit

    def find(self, digest: str) -> tuple[bytes, str] | None:
        """The bytes of the blob sha256:`digest` (hex) and where they came from; None when the
        registry has none. VerificationError `lineage-digest` for other bytes, MalformedError of
        `--lineage` when the registry cannot be used."""
        where = self.reference.with_digest(f"sha256:{digest}")
        try:
            data = self.client.blob_by_digest(self.reference.repository, f"sha256:{digest}", self.limit)
        except OciContentError as exc:
            raise VerificationError(
                LineageCheck.LINEAGE_DIGEST, f"{where}: {exc.reason}, not the certificate recorded"
            ) from None
        except OciError as exc:
            raise MalformedError("--lineage", f"{self.reference}: {exc.reason}") from None
        if data is None:
            return None
        return data, str(where)
