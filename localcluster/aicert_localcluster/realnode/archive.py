"""One image of an OCI image layout as the tar archive `ctr images import` reads, and the node's pause
image.

containerd keeps an imported image under the names the import gives it; with `--base-name <repo>
--digests` and an index.json entry without a name, the only name is `<repo>@sha256:<manifest digest>`.
The CRI then reports that name as the image's repo digest, so kubelet's
`status.containerStatuses[].imageID` is `<repo>@sha256:<manifest digest>`, as after a pull by digest
from a registry (an image imported under a tag only would be reported by its config digest).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from ..images import MEDIA_INDEX, ImageNotFound, ImageStore, parse_reference
from .config import SANDBOX_REPOSITORY


class ArchiveError(RuntimeError):
    """The layout does not hold the image, or a blob does not match its digest."""


def _hex(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ArchiveError(f"{what}: digest {digest!r} is not sha256:<64 hex>")
    return digest.removeprefix("sha256:")


def _verified(blobs: Path, hex_: str, what: str) -> Path:
    path = blobs / hex_
    try:
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise ArchiveError(f"{what} sha256:{hex_}: {exc}") from exc
    if actual != hex_:
        raise ArchiveError(f"{what} {path} does not match its digest sha256:{hex_} (it is sha256:{actual})")
    return path


def write_oci_archive(layout: Path, reference: str, out: Path) -> tuple[str, str]:
    """Write the image `reference` (`repo@sha256:<manifest hex>`) of the OCI layout at `layout` as a
    single-image OCI archive at `out`; every blob is checked against its digest first. Returns
    (repository, manifest digest)."""
    try:
        parsed = parse_reference(reference)
    except ImageNotFound as exc:
        raise ArchiveError(str(exc)) from exc
    if parsed.digest is None:
        raise ArchiveError(f"{reference}: an image is imported by digest (repo@sha256:<hex>), not by tag")
    blobs = Path(layout) / "blobs" / "sha256"
    manifest_hex = _hex(parsed.digest, reference)
    manifest_path = _verified(blobs, manifest_hex, f"{reference}: manifest")
    manifest: dict[str, Any] = json.loads(manifest_path.read_bytes())
    try:
        parts = [("config", manifest["config"])] + [("layer", layer) for layer in manifest["layers"]]
        paths = [
            _verified(blobs, _hex(d["digest"], f"{reference}: {kind}"), f"{reference}: {kind}")
            for kind, d in parts
        ]
        media_type = manifest.get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
    except (KeyError, TypeError) as exc:
        raise ArchiveError(f"{reference}: the manifest lacks {exc}") from exc
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {"mediaType": media_type, "digest": parsed.digest, "size": manifest_path.stat().st_size}
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path in (manifest_path, *paths):
            tar.add(path, arcname=f"blobs/sha256/{path.name}", recursive=False)
    return parsed.repository, parsed.digest


def pause_image(store: ImageStore, pause_binary: Path) -> str:
    """The sandbox image: the pinned pause program as /app/pause. Returns its digest reference."""
    return store.build(
        SANDBOX_REPOSITORY,
        files={"pause": pause_binary.read_bytes()},
        entrypoint=["/app/pause"],
        cmd=None,
        workdir="/",
    )
