"""The OCI documents of an image: the config (what a daemon records for the final stage), the
manifest and the index, as the canonical JSON whose sha256 is their digest."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from .debian import MMDEBSTRAP_VARIANT
from .repository import display
from .spec import ImageSpec

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_ARCHITECTURES = {"amd64": "amd64", "arm64": "arm64", "ppc64el": "ppc64le", "s390x": "s390x"}
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def image_config(
    spec: ImageSpec, created: int, architecture: str, diff_ids: Sequence[str]
) -> dict[str, object]:
    """The OCI image config: what a daemon records for the final stage's ENV (after the base's
    PATH), USER, WORKDIR, LABEL and ENTRYPOINT."""
    timestamp = _rfc3339(created)
    return {
        "created": timestamp,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "User": spec.user,
            "Env": [f"{k}={v}" for k, v in spec.env],
            "Entrypoint": list(spec.entrypoint),
            "WorkingDir": spec.workdir,
            "Labels": dict(spec.labels),
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {
                "created": timestamp,
                "created_by": f"images/build.py {display(spec.dockerfile)}",
                "comment": f"debian {spec.base.release} ({MMDEBSTRAP_VARIANT}, epoch of {spec.base.reference})",
            }
        ],
    }


def _rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.json(),
        "layers": [layer.json() for layer in layers],
    }


def image_index(manifest: Descriptor, architecture: str, ref_name: str) -> dict[str, object]:
    """The layout's index.json: the one manifest, named `ref_name`."""
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                **manifest.json(),
                "platform": {"architecture": architecture, "os": "linux"},
                "annotations": {ANNOTATION_REF_NAME: ref_name},
            }
        ],
    }


def json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
