"""The OCI image layout of an image: its layer, config, manifest and index written under
build/images/<name>/ (replaced as a whole)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache import remove_tree
from .host import dpkg_architecture
from .layer import Layer, write_layer
from .oci import (
    MEDIA_CONFIG,
    MEDIA_MANIFEST,
    OCI_ARCHITECTURES,
    OCI_LAYOUT,
    Descriptor,
    image_config,
    image_index,
    image_manifest,
    json_bytes,
)
from .report import ImageBuildError
from .spec import ImageSpec


@dataclass(frozen=True)
class Layout:
    name: str
    path: Path
    manifest: Descriptor
    config: Descriptor
    layer: Layer

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.manifest.digest}"


def write_layout(spec: ImageSpec, rootfs: Path, out: Path, clamp: int, ref_name: str) -> Layout:
    """An OCI image layout at `out` (replaced): oci-layout, index.json, blobs/sha256/..."""
    architecture = OCI_ARCHITECTURES.get(dpkg_architecture())
    if architecture is None:
        raise ImageBuildError(f"no OCI architecture known for dpkg's {dpkg_architecture()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    tmp.chmod(0o755)
    try:
        blobs = tmp / "blobs" / "sha256"
        layer = write_layer(rootfs, blobs, clamp)
        config = _write_blob(
            blobs, MEDIA_CONFIG, json_bytes(image_config(spec, clamp, architecture, [layer.diff_id]))
        )
        manifest = _write_blob(blobs, MEDIA_MANIFEST, json_bytes(image_manifest(config, [layer.blob])))
        (tmp / "index.json").write_bytes(json_bytes(image_index(manifest, architecture, ref_name)))
        (tmp / "oci-layout").write_bytes(json_bytes(OCI_LAYOUT))
        if out.exists():
            remove_tree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Layout(spec.name, out, manifest, config, layer)


def _write_blob(blobs: Path, media_type: str, data: bytes) -> Descriptor:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return Descriptor(media_type, f"sha256:{digest}", len(data))
