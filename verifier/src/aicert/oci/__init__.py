"""Models and their certificates in OCI registries (standard library http, no registry SDK).

`reference` parses `oci://` references; `client` speaks the distribution API (blobs, manifests,
referrers, with the fallback tag schema), bounded against hostile registries; `documents` writes
and reads the ModelPack model and attachment manifests; `transfer` pushes, pulls and finds
attachments; `auth` reads a docker config.json.
"""

from aicert.oci.errors import OciContentError, OciError

__all__ = ["OciContentError", "OciError"]
