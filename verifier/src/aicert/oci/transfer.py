"""Pushing a certified model with its attestations, pulling it back, and finding its attestations.

`push_model` uploads each file of a local output directory as a raw ModelPack layer, the model
config and manifest (under its digest and the tag), then each `Attachment` as a referrer of the
model manifest. `pull_model` writes the model's layers into a directory, each checked against its
digest while it streams. `attachments_of` lists the referrers of one artifactType and keeps those
whose own manifest (fetched by digest) names this model as its subject.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aicert.digest.manifest import OUTPUT_EXCLUDED, FileEntry, ManifestError, check_relative_path
from aicert.oci.client import MEDIA_MANIFEST, Descriptor, RegistryClient, sha256_digest
from aicert.oci.documents import (
    ANNOTATION_FILEPATH,
    ANNOTATION_TITLE,
    ARTIFACT_MODEL,
    EMPTY_CONFIG,
    MEDIA_MODEL_CONFIG,
    Attachment,
    ImageManifest,
    attachment_manifest,
    model_documents,
    parse_manifest,
)
from aicert.oci.errors import OciError

# model-spec's uncompressed layer types; its tar types are not written by aicert and not read
RAW_LAYER_TYPES = frozenset(
    f"application/vnd.cncf.model.{kind}.v1.raw"
    for kind in ("weight", "weight.config", "doc", "code", "dataset")
)
MAX_REFERRERS_USED = 16  # certificates verified, at most
MAX_REFERRERS_FETCHED = 64  # referrer manifests fetched, at most (a listing may hold any number)


@dataclass(frozen=True)
class Pushed:
    manifest: Descriptor
    attached: tuple[tuple[str, str], ...]  # (artifactType, manifest digest)


@dataclass(frozen=True)
class Referrer:
    digest: str
    artifact_type: str
    data: bytes
    title: str | None = None  # the file name its layer's annotation gives (a hint, never trusted)


@dataclass
class Found:
    referrers: list[Referrer] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)  # why each other listed referrer was not used


def push_model(
    client: RegistryClient,
    repository: str,
    tag: str | None,
    directory: Path,
    files: Sequence[FileEntry],
    name: str,
    attachments: Sequence[Attachment],
) -> Pushed:
    """Upload `files` (the hashed manifest of `directory`) as a ModelPack model, then attach each of
    `attachments`. The registry checks each blob against the digest named at upload, so a file
    changed since it was hashed fails the push."""
    if not files:
        raise OciError(f"{directory}: has no files to push")
    if any(f.symlink for f in files):
        raise OciError(f"{directory}: symbolic links cannot be pushed as model layers")
    config, manifest, layers = model_documents(name, [(f.path, f.sha256, f.size) for f in files])
    for entry, layer in zip(sorted(files, key=lambda f: f.path), layers, strict=True):
        with open(directory / entry.path, "rb") as body:
            client.push_blob(repository, layer.digest, layer.size, body)
    client.push_blob(repository, sha256_digest(config), len(config), config)
    digest = sha256_digest(manifest)
    client.push_manifest(repository, digest, manifest, MEDIA_MANIFEST)
    if tag:
        client.push_manifest(repository, tag, manifest, MEDIA_MANIFEST)
    subject = Descriptor(MEDIA_MANIFEST, digest, len(manifest), ARTIFACT_MODEL)
    attached = tuple((a.artifact_type, attach(client, repository, subject, a)) for a in attachments)
    return Pushed(subject, attached)


def attach(client: RegistryClient, repository: str, subject: Descriptor, attachment: Attachment) -> str:
    """Push `attachment` as a referrer of `subject`; its manifest's digest. A registry that does not
    say it indexed the subject (no OCI-Subject header) gets the fallback tag's index updated."""
    manifest, layer = attachment_manifest(attachment, subject)
    client.push_blob(repository, sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG), EMPTY_CONFIG)
    client.push_blob(repository, layer.digest, layer.size, attachment.data)
    digest = sha256_digest(manifest)
    headers = client.push_manifest(repository, digest, manifest, MEDIA_MANIFEST)
    if headers.get("oci-subject") != subject.digest or not client.use_referrers_api:
        referrer = Descriptor(MEDIA_MANIFEST, digest, len(manifest), attachment.artifact_type)
        client.add_to_fallback_index(repository, subject.digest, referrer)
    return digest


def _layer_path(layer: Descriptor, where: str) -> str:
    path = layer.annotations.get(ANNOTATION_FILEPATH) or layer.annotations.get(ANNOTATION_TITLE)
    if not path:
        raise OciError(f"{where}: names no file ({ANNOTATION_FILEPATH})")
    try:
        path = check_relative_path(path)
    except ManifestError as exc:
        raise OciError(f"{where}: file path {path!r}: {exc}") from None
    if path in OUTPUT_EXCLUDED:
        raise OciError(f"{where}: file path {path!r} is a name aicert reserves beside the weights")
    return path


def model_manifest(client: RegistryClient, repository: str, digest: str) -> ImageManifest:
    """The model's manifest, by digest (checked), refused unless it is a ModelPack model of raw layers."""
    data, _, _ = client.get_manifest(repository, digest)
    manifest = parse_manifest(data, digest, f"manifest {digest}")
    if manifest.artifact_type != ARTIFACT_MODEL:
        raise OciError(
            f"manifest {digest}: artifactType {manifest.artifact_type!r} is not a model ({ARTIFACT_MODEL})"
        )
    if manifest.config.media_type != MEDIA_MODEL_CONFIG:
        raise OciError(
            f"manifest {digest}: config mediaType {manifest.config.media_type!r} is not {MEDIA_MODEL_CONFIG}"
        )
    for i, layer in enumerate(manifest.layers):
        if layer.media_type not in RAW_LAYER_TYPES:
            raise OciError(
                f"manifest {digest}: layers[{i}]: mediaType {layer.media_type!r} is not an uncompressed model "
                "layer (application/vnd.cncf.model.*.v1.raw)"
            )
    return manifest


def pull_model(
    client: RegistryClient, manifest: ImageManifest, repository: str, destination: Path
) -> list[FileEntry]:
    """Write each layer of `manifest` to destination/<its file path>; the files written, each with
    the size and sha256 it was checked against while it streamed. Paths are checked (relative,
    normalised, each once, none both a file and a directory) before any blob is fetched; files are
    created, never opened through a link."""
    paths = [
        _layer_path(layer, f"manifest {manifest.digest}: layers[{i}]")
        for i, layer in enumerate(manifest.layers)
    ]
    seen = set(paths)
    if len(seen) != len(paths):
        raise OciError(f"manifest {manifest.digest}: names a file more than once")
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in seen:
                raise OciError(
                    f"manifest {manifest.digest}: {'/'.join(parts[:depth])!r} is both a file and a directory"
                )
    for path, layer in zip(paths, manifest.layers, strict=True):
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as sink:
            client.fetch_blob(repository, layer, sink)
    return [
        FileEntry(path, layer.size, layer.digest.removeprefix("sha256:"))
        for path, layer in zip(paths, manifest.layers, strict=True)
    ]


def attachments_of(
    client: RegistryClient, repository: str, subject: str, artifact_type: str, *, max_bytes: int
) -> Found:
    """The referrers of `subject` of `artifact_type` whose manifest names `subject` and holds one
    layer of that type (at most `max_bytes`), at most MAX_REFERRERS_USED of them, fetching at most
    MAX_REFERRERS_FETCHED referrer manifests. The registry's
    listing is only a hint: each is fetched by digest and checked; the others are passed over, with why."""
    found = Found()
    fetched = 0
    for listed in client.referrers(repository, subject):
        if listed.artifact_type is not None and listed.artifact_type != artifact_type:
            continue
        if len(found.referrers) >= MAX_REFERRERS_USED or fetched >= MAX_REFERRERS_FETCHED:
            found.passed_over.append(
                f"{listed.digest} and the rest: over {MAX_REFERRERS_USED} certificates or "
                f"{MAX_REFERRERS_FETCHED} referrers fetched"
            )
            break
        fetched += 1
        try:
            data, _, _ = client.get_manifest(repository, listed.digest)
            manifest = parse_manifest(data, listed.digest, f"referrer {listed.digest}")
            if manifest.artifact_type != artifact_type:
                continue
            if manifest.subject is None or manifest.subject.digest != subject:
                named = manifest.subject.digest if manifest.subject else "nothing"
                raise OciError(f"its subject is {named}, not this model")
            layers = [layer for layer in manifest.layers if layer.media_type == artifact_type]
            if len(layers) != 1:
                raise OciError(f"it has {len(layers)} layers of {artifact_type}, not one")
            data = client.read_blob(repository, layers[0], max_bytes)
            title = layers[0].annotations.get(ANNOTATION_TITLE)
            found.referrers.append(Referrer(listed.digest, artifact_type, data, title))
        except OciError as exc:
            found.passed_over.append(f"{listed.digest}: {exc.reason}")
    return found
