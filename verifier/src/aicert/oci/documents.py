"""The OCI documents aicert writes and reads: a model as a CNCF ModelPack artifact (model-spec
v1: one uncompressed layer per file) and the certificate, and any other attestation, as an artifact
whose `subject` is the model's manifest (the layout cosign uses for Sigstore bundles).

Model manifest (`artifactType` application/vnd.cncf.model.manifest.v1+json):
- config: application/vnd.cncf.model.config.v1+json, `{"descriptor": {"name"}, "config": {},
  "modelfs": {"type": "layers", "diffIds": [each layer's digest]}}` (a raw layer's diffId is its digest);
- layers: one per file of the certified output, sorted by path, application/vnd.cncf.model.weight.v1.raw,
  the file's bytes as they are: the layer digest is the file's sha256, the one in the certificate's
  manifest. Annotations: `org.cncf.model.filepath` (model-spec) and `org.opencontainers.image.title`
  (which oras uses as the file name when it pulls), both the file's relative path.
The manifest is written with sorted keys and no timestamps: the same weights give the same digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aicert.oci.client import MANIFEST_MAX_BYTES, MEDIA_MANIFEST, Descriptor, canonical_json, sha256_digest
from aicert.oci.errors import OciError
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import loads_strict

ARTIFACT_MODEL = "application/vnd.cncf.model.manifest.v1+json"
MEDIA_MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MEDIA_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_TITLE = "org.opencontainers.image.title"

ARTIFACT_CERTIFICATE = "application/vnd.aicert.certificate.v1+json"
ARTIFACT_SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"

MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"


@dataclass(frozen=True)
class Attachment:
    """A document attached to a model as a referrer: one layer of `media_type` (= artifactType)."""

    artifact_type: str
    filename: str
    data: bytes


@dataclass(frozen=True)
class ImageManifest:
    digest: str
    data: bytes
    artifact_type: str | None
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, read strictly (duplicate keys refused: two readers must see one document)."""
    try:
        doc = loads_strict(data, what=what, max_bytes=MANIFEST_MAX_BYTES)
    except MalformedError as exc:
        raise OciError(f"{what}: {exc.field + ': ' if exc.field else ''}{exc.reason}") from None
    if not isinstance(doc, dict):
        raise OciError(f"{what}: is not a JSON object")
    return doc


def parse_manifest(data: bytes, digest: str, what: str) -> ImageManifest:
    """An OCI image manifest (an index or a Docker manifest is refused), every descriptor checked."""
    doc = load_json(data, what)
    if doc.get("schemaVersion") != 2 or doc.get("mediaType", MEDIA_MANIFEST) != MEDIA_MANIFEST:
        raise OciError(f"{what}: is not an OCI image manifest (mediaType {doc.get('mediaType')!r})")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise OciError(f"{what}: artifactType: is not a string")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise OciError(f"{what}: layers: is not an array")
    subject = doc.get("subject")
    return ImageManifest(
        digest,
        data,
        artifact_type,
        Descriptor.from_json(doc.get("config"), f"{what}: config"),
        tuple(Descriptor.from_json(d, f"{what}: layers[{i}]") for i, d in enumerate(layers)),
        Descriptor.from_json(subject, f"{what}: subject") if subject is not None else None,
    )


def _manifest(
    artifact_type: str, config: Descriptor, layers: Sequence[Descriptor], subject: Descriptor | None
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    if subject is not None:
        doc["subject"] = subject.to_json()
    return canonical_json(doc)


def model_documents(
    name: str, files: Sequence[tuple[str, str, int]]
) -> tuple[bytes, bytes, list[Descriptor]]:
    """(config bytes, manifest bytes, layers) of the model whose files are `(path, sha256 hex, size)`."""
    layers = [
        Descriptor(
            MEDIA_WEIGHT_RAW,
            f"sha256:{sha256}",
            size,
            annotations={ANNOTATION_FILEPATH: path, ANNOTATION_TITLE: path},
        )
        for path, sha256, size in sorted(files)
    ]
    config = canonical_json(
        {
            "descriptor": {"name": name},
            "config": {},
            "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers]},
        }
    )
    config_descriptor = Descriptor(MEDIA_MODEL_CONFIG, sha256_digest(config), len(config))
    return config, _manifest(ARTIFACT_MODEL, config_descriptor, layers, None), layers


def attachment_manifest(attachment: Attachment, subject: Descriptor) -> tuple[bytes, Descriptor]:
    """The manifest of an attachment to `subject` (the empty config, one layer) and its layer."""
    layer = Descriptor(
        attachment.artifact_type,
        sha256_digest(attachment.data),
        len(attachment.data),
        annotations={ANNOTATION_TITLE: attachment.filename},
    )
    config = Descriptor(MEDIA_EMPTY, sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG))
    return _manifest(attachment.artifact_type, config, [layer], subject), layer
