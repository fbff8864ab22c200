"""A local image store keyed by real digests: the images the tests, the demo and the e2e stack run.

`ImageStore(root).build(...)` writes a real OCI image layout under `root/oci/` (`oci-layout`,
`index.json`, `blobs/sha256/<hex>`): one uncompressed tar layer holding the given files under `app/`,
an OCI image config (Entrypoint, Cmd, Env, WorkingDir, rootfs diff_ids) and an OCI image manifest.
It returns `repository@sha256:<hex>` where hex is the sha256 of the manifest bytes, as a registry
computes it, so the reference is the pinned, content-addressed kind the CRD demands.

`add_layout(layout, repository)` copies an image from another OCI layout (what `make images` writes
in build/images/<name>/: a whole root filesystem, gzipped layers) into the store, under the same
manifest digest.

The store only writes and copies images; nothing runs from it. A real node gets them from its
container runtime: `RealNode.import_image(store.layout, ref)` loads one into containerd by digest, or
`Registry.push(store.layout, ref)` puts it in the local registry, which the node pulls from. A base
image for `build` must be named by a digest held in the store, else `ImageNotFound`.

The bytes are deterministic (fixed mtimes, owners and modes, sorted JSON), so the same inputs always
give the same digest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BUILT_BY = "aicert_localcluster.images.ImageStore.build"  # the history entry of a `build` image
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_REPOSITORY = "dev.aicert.localcluster.repository"
APP_DIR = "app"  # the layer keeps the build's files under /app

_HEX64 = re.compile(r"[0-9a-f]{64}")
# docker/distribution's reference grammar, simplified: optional host[:port]/, lower-case path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(
    rf"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
    rf"{_COMPONENT}(?:/{_COMPONENT})*"
)


class ImageStoreError(RuntimeError):
    """The store is damaged (a blob does not match its digest) or a build input is invalid."""


class ImageNotFound(LookupError):
    """The reference does not name an image in the store."""


@dataclass(frozen=True)
class ImageReference:
    repository: str
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(ref: str) -> ImageReference:
    """`repo`, `repo:tag`, `repo@sha256:<hex>` or `repo:tag@sha256:<hex>` (repo may carry host:port/)."""
    name, _, digest = ref.partition("@")
    if digest:
        algorithm, _, hex_ = digest.partition(":")
        if algorithm != "sha256" or not _HEX64.fullmatch(hex_):
            raise ImageNotFound(f"{ref}: the digest must be sha256:<64 lower-case hex>")
    last = name.rsplit("/", 1)[-1]
    tag: str | None = None
    if ":" in last:
        name, _, tag = name.rpartition(":")
    if not _REPOSITORY.fullmatch(name):
        raise ImageNotFound(f"{ref}: {name!r} is not a valid repository name")
    return ImageReference(name, tag or None, digest or None)


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _layer_path(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise ImageStoreError(f"image file {key!r}: give a relative path below /{APP_DIR} without '..'")
    return PurePosixPath(APP_DIR) / path


def _tar_layer(files: Mapping[str, bytes]) -> bytes:
    """A deterministic tar: parents first, sorted, mtime 0, root-owned; scripts ('#!') and ELF
    programs are executable."""
    entries = {_layer_path(key): data for key, data in files.items()}
    directories = {PurePosixPath(APP_DIR)}
    for path in entries:
        directories.update(p for p in path.parents if str(p) != ".")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(directories, key=str):
            info = tarfile.TarInfo(str(directory))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, data in sorted(entries.items(), key=lambda item: str(item[0])):
            info = tarfile.TarInfo(str(path))
            info.size, info.mtime = len(data), 0
            info.mode = 0o755 if data.startswith((b"#!", b"\x7fELF")) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ImageStore:
    """An OCI image layout on disk. Thread- and process-safe (a file lock guards index.json)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.layout = self.root / "oci"
        self.blobs = self.layout / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        layout_file = self.layout / "oci-layout"
        if not layout_file.exists():
            self._write_atomic(layout_file, _canonical({"imageLayoutVersion": "1.0.0"}))

    # building -----------------------------------------------------------------------------------

    def build(
        self,
        repository: str,
        files: Mapping[str, bytes],
        entrypoint: Sequence[str] | None,
        cmd: Sequence[str] | None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/app",
        base: str | None = None,
    ) -> str:
        """Write the image into the store; returns `repository@sha256:<manifest hex>`.

        `base` (a digest reference in this store): the new layer goes on top of its layers, and its
        config's Env (overridden by `env`) and User carry over, as `FROM base` would."""
        if not _REPOSITORY.fullmatch(repository):
            raise ImageStoreError(f"{repository!r} is not a valid repository name (lower case, no tag)")
        if not workdir.startswith("/"):
            raise ImageStoreError(f"workdir {workdir!r} must be absolute")
        layer = _tar_layer(files)
        layer_hex = _sha256(layer)
        base_layers: list[dict[str, Any]] = []
        base_diff_ids: list[str] = []
        base_env: dict[str, str] = {}
        base_user = ""
        base_history: list[Any] = []
        if base is not None:
            base_manifest, base_config = self._image(base)
            base_layers = list(base_manifest.get("layers") or [])
            base_diff_ids = list((base_config.get("rootfs") or {}).get("diff_ids") or [])
            container = base_config.get("config") or {}
            base_env = dict(str(item).partition("=")[::2] for item in container.get("Env") or [])
            base_user = str(container.get("User") or "")
            base_history = list(base_config.get("history") or [])
        merged_env = {**base_env, **(env or {})}
        container_config: dict[str, Any] = {
            "Env": [f"{k}={v}" for k, v in merged_env.items()],
            "WorkingDir": workdir,
        }
        if base_user:
            container_config["User"] = base_user
        if entrypoint is not None:
            container_config["Entrypoint"] = list(entrypoint)
        if cmd is not None:
            container_config["Cmd"] = list(cmd)
        config = _canonical(
            {
                "architecture": _architecture(),
                "os": "linux",
                "config": container_config,
                "rootfs": {"type": "layers", "diff_ids": [*base_diff_ids, f"sha256:{layer_hex}"]},
                "history": [*base_history, {"created_by": BUILT_BY}],
            }
        )
        config_hex = _sha256(config)
        manifest = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{config_hex}", "size": len(config)},
                "layers": [
                    *base_layers,
                    {"mediaType": MEDIA_LAYER, "digest": f"sha256:{layer_hex}", "size": len(layer)},
                ],
            }
        )
        manifest_hex = _sha256(manifest)
        with self._locked():
            for hex_, data in ((layer_hex, layer), (config_hex, config), (manifest_hex, manifest)):
                if not (self.blobs / hex_).exists():
                    self._write_atomic(self.blobs / hex_, data)
            self._add_to_index(repository, manifest_hex, len(manifest))
        return f"{repository}@sha256:{manifest_hex}"

    def add_layout(self, layout: Path, repository: str) -> str:
        """Copy the one image of the OCI layout at `layout` (index.json, blobs/sha256/) into the store
        as `repository`; returns `repository@sha256:<manifest hex>` (the layout's own digest)."""
        if not _REPOSITORY.fullmatch(repository):
            raise ImageStoreError(f"{repository!r} is not a valid repository name (lower case, no tag)")
        source = Path(layout) / "blobs" / "sha256"
        try:
            index = json.loads((Path(layout) / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise ImageStoreError(f"{layout}: not an OCI image layout ({exc})") from exc
        manifests = [m for m in index.get("manifests") or [] if m.get("mediaType") == MEDIA_MANIFEST]
        if len(manifests) != 1:
            raise ImageStoreError(
                f"{layout}: expected one image manifest in index.json, found {len(manifests)}"
            )
        manifest_hex = self._descriptor_hex(manifests[0])
        try:
            manifest = json.loads((source / manifest_hex).read_bytes())
            wanted = [manifest_hex, self._descriptor_hex(manifest["config"])]
            wanted += [self._descriptor_hex(layer) for layer in manifest.get("layers") or []]
            missing = [hex_ for hex_ in wanted if not (source / hex_).is_file()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ImageStoreError(
                f"{layout}: unreadable image manifest sha256:{manifest_hex} ({exc!r})"
            ) from exc
        if missing:
            raise ImageStoreError(f"{layout}: blob sha256:{missing[0]} is missing")
        for hex_ in wanted:  # all checked before any is added: a damaged layout adds nothing
            if not (self.blobs / hex_).exists() and _file_sha256(source / hex_) != hex_:
                raise ImageStoreError(f"{layout}: blob sha256:{hex_} does not match its digest")
        with self._locked():
            for hex_ in wanted:
                target = self.blobs / hex_
                if target.exists():
                    continue
                staging = self.blobs / f".{hex_}.partial"
                staging.unlink(missing_ok=True)
                try:
                    os.link(source / hex_, staging)
                except OSError:
                    shutil.copyfile(source / hex_, staging)
                os.replace(staging, target)
            self._add_to_index(repository, manifest_hex, (source / manifest_hex).stat().st_size)
        return f"{repository}@sha256:{manifest_hex}"

    def _add_to_index(self, repository: str, manifest_hex: str, size: int) -> None:
        index = self._index()
        manifests: list[dict[str, Any]] = index["manifests"]
        digest = f"sha256:{manifest_hex}"
        for entry in manifests:
            annotations = entry.get("annotations") or {}
            if entry.get("digest") == digest and annotations.get(ANNOTATION_REPOSITORY) == repository:
                return
        manifests.append(
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": digest,
                "size": size,
                "annotations": {
                    ANNOTATION_REF_NAME: f"{repository}@{digest}",
                    ANNOTATION_REPOSITORY: repository,
                },
            }
        )
        self._write_atomic(self.layout / "index.json", json.dumps(index, indent=2, sort_keys=True).encode())

    def _index(self) -> dict[str, Any]:
        path = self.layout / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
        loaded: dict[str, Any] = json.loads(path.read_bytes())
        return loaded

    def references(self) -> list[str]:
        """Every `repository@sha256:<hex>` built into the store."""
        return [
            f"{(m.get('annotations') or {}).get(ANNOTATION_REPOSITORY, '')}@{m['digest']}"
            for m in self._index()["manifests"]
        ]

    # resolving ----------------------------------------------------------------------------------

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        try:
            reference = parse_reference(ref)
        except ImageNotFound:
            return False
        return reference.digest is not None and (self.blobs / reference.digest.split(":")[1]).is_file()

    def _image(self, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The manifest and config of a digest reference held in this store."""
        reference = parse_reference(ref)
        if reference.digest is None or not (self.blobs / reference.digest.split(":")[1]).is_file():
            raise ImageNotFound(f"{ref}: not in the local image store (by digest)")
        manifest = self._json_blob(reference.digest.split(":")[1])
        return manifest, self._json_blob(self._descriptor_hex(manifest["config"]))

    @staticmethod
    def _descriptor_hex(descriptor: Mapping[str, Any]) -> str:
        digest = str(descriptor.get("digest", ""))
        algorithm, _, hex_ = digest.partition(":")
        if algorithm != "sha256" or not _HEX64.fullmatch(hex_):
            raise ImageStoreError(f"unsupported descriptor digest {digest!r}")
        return hex_

    def _blob(self, hex_: str) -> bytes:
        try:
            data = (self.blobs / hex_).read_bytes()
        except FileNotFoundError as exc:
            raise ImageStoreError(f"blob sha256:{hex_} is missing from {self.blobs}") from exc
        if _sha256(data) != hex_:
            raise ImageStoreError(f"blob sha256:{hex_} in {self.blobs} does not match its digest")
        return data

    def _json_blob(self, hex_: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self._blob(hex_))
        return loaded

    # files --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
