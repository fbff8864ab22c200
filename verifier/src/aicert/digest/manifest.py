"""The file manifest of a model or data set, and its root digest.

A manifest is the sorted list of entries ``{"path", "size", "sha256"}`` (plus ``"type": "symlink"``
for a recorded symbolic link) of every file under a root. Paths are relative POSIX paths, sorted by
code point (the same order as their UTF-8 bytes). The root digest is
``sha256(JCS(entries))`` (RFC 8785), hex encoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE, MANIFEST_FILE, MODEL_SIGNATURE_FILE

_encode_string: Callable[[str], str] = json.encoder.encode_basestring

__all__ = [
    "BUNDLE_FILE",
    "CERTIFICATE_FILE",
    "INPUT_EXCLUDED",
    "MANIFEST_FILE",
    "MODEL_SIGNATURE_FILE",
    "OUTPUT_EXCLUDED",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "check_relative_path",
    "manifest_root",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
# RFC 8785 serialises numbers as IEEE 754 doubles: integers beyond 2**53 - 1 are not exact.
_MAX_SIZE = 2**53 - 1
_ENTRY_KEYS = frozenset({"path", "size", "sha256", "type"})
_MANIFEST_KEYS = frozenset({"root", "files"})


# What a root leaves out. An output's: the files aicert writes there, the manifest, the certificate,
# its Sigstore bundle and the OMS signature (a training that writes any of them is refused). An input's: nothing, an input is measured whole (a manifest.json in it is
# data the training can read like any other).
OUTPUT_EXCLUDED: frozenset[str] = frozenset(
    {MANIFEST_FILE, CERTIFICATE_FILE, BUNDLE_FILE, MODEL_SIGNATURE_FILE}
)
INPUT_EXCLUDED: frozenset[str] = frozenset()


class ManifestError(ValueError):
    """A manifest, or one of its entries, is malformed. The message names the offending field."""


def check_relative_path(path: object) -> str:
    """``path`` if it is a relative, normalised POSIX path (no empty, '.' or '..' component);
    else `ManifestError` naming the problem."""
    return _check_path(path)


def _check_path(path: object) -> str:
    if not isinstance(path, str):
        raise ManifestError(f"path: must be a string, got {type(path).__name__}")
    if not path:
        raise ManifestError("path: must not be empty")
    if path.startswith("/"):
        raise ManifestError(f"path: must be relative, got {path!r}")
    if "\x00" in path:
        raise ManifestError(f"path: must not contain NUL: {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"path: must be valid Unicode (no lone surrogates): {path!r}") from None
    for part in path.split("/"):
        if part == "":
            raise ManifestError(f"path: must not contain empty components: {path!r}")
        if part == ".":
            raise ManifestError(f"path: must not contain '.' components: {path!r}")
        if part == "..":
            raise ManifestError(f"path: must not contain '..' components: {path!r}")
    return path


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file (or recorded symlink) of a manifest.

    For a symlink, ``size`` and ``sha256`` are those of the link's target string (``os.readlink``
    bytes), never of what it points to.
    """

    path: str
    size: int
    sha256: str
    symlink: bool = False

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.symlink:
            obj["type"] = "symlink"
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> FileEntry:
        """Parse and strictly validate one entry; raises `ManifestError` naming the bad field."""
        if not isinstance(obj, dict):
            raise ManifestError(f"entry: must be an object, got {type(obj).__name__}")
        unknown = set(obj) - _ENTRY_KEYS
        if unknown:
            raise ManifestError(f"{sorted(unknown)[0]}: unknown field")
        for key in ("path", "size", "sha256"):
            if key not in obj:
                raise ManifestError(f"{key}: missing")
        path = _check_path(obj["path"])
        size = obj["size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ManifestError(f"size: must be an integer, got {type(size).__name__}")
        if size < 0 or size > _MAX_SIZE:
            raise ManifestError(f"size: out of range: {size}")
        sha = obj["sha256"]
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise ManifestError(f"sha256: must be 64 lowercase hex digits, got {sha!r}")
        symlink = False
        if "type" in obj:
            if obj["type"] != "symlink":
                raise ManifestError(f"type: must be 'symlink' if present, got {obj['type']!r}")
            symlink = True
        return cls(path, size, sha, symlink)


def _canonical_entries(files: Sequence[FileEntry]) -> bytes:
    """RFC 8785 (JCS) encoding of ``[f.to_json() for f in files]``, built directly.

    Entries have a fixed shape: ASCII keys in JCS order (``path < sha256 < size < type``), valid
    Unicode strings and integers below 2**53. For those, JCS strings are exactly what
    `json.encoder.encode_basestring` produces (``\\" \\\\ \\b \\f \\n \\r \\t``, other
    controls as lowercase ``\\u00xx``, everything else literal UTF-8) and JCS integers are plain
    decimals. This is ~10x faster than the generic `rfc8785` encoder, which matters for trees of
    many files; the unit tests check it against `rfc8785` on awkward names.
    """
    quote = _encode_string
    parts = [
        f'{{"path":{quote(f.path)},"sha256":"{f.sha256}","size":{f.size:d}'
        + (',"type":"symlink"}' if f.symlink else "}")
        for f in files
    ]
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def manifest_root(files: Sequence[FileEntry]) -> str:
    """``sha256(JCS([f.to_json() for f in files sorted by path]))``, hex."""
    ordered = sorted(files, key=lambda f: f.path)
    return hashlib.sha256(_canonical_entries(ordered)).hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """A root digest and the sorted entries it commits to."""

    root: str
    files: tuple[FileEntry, ...]

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "files": [f.to_json() for f in self.files]}

    @classmethod
    def from_files(cls, files: Iterable[FileEntry]) -> Manifest:
        """Sort the entries by path, reject duplicate paths, compute the root."""
        ordered = tuple(sorted(files, key=lambda f: f.path))
        for prev, cur in itertools.pairwise(ordered):
            if prev.path == cur.path:
                raise ManifestError(f"files: duplicate path {cur.path!r}")
        return cls(hashlib.sha256(_canonical_entries(ordered)).hexdigest(), ordered)

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        """Parse and validate a manifest; the root must match the entries.

        Entries may come in any order (the root does not depend on it); they are kept sorted.
        """
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest: must be an object, got {type(obj).__name__}")
        unknown = set(obj) - _MANIFEST_KEYS
        if unknown:
            raise ManifestError(f"{sorted(unknown)[0]}: unknown field")
        if "root" not in obj:
            raise ManifestError("root: missing")
        if "files" not in obj:
            raise ManifestError("files: missing")
        root = obj["root"]
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise ManifestError(f"root: must be 64 lowercase hex digits, got {root!r}")
        raw = obj["files"]
        if not isinstance(raw, list):
            raise ManifestError(f"files: must be an array, got {type(raw).__name__}")
        entries = []
        for i, item in enumerate(raw):
            try:
                entries.append(FileEntry.from_json(item))
            except ManifestError as e:
                raise ManifestError(f"files[{i}].{e}") from None
        manifest = cls.from_files(entries)
        if manifest.root != root:
            raise ManifestError(f"root: does not match the files (files give {manifest.root})")
        return manifest

    def to_bytes(self) -> bytes:
        """The manifest file's content (what `write` writes)."""
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON atomically: a temporary file beside it, fsync, rename, fsync the dir."""
        target = Path(path)
        directory = target.parent
        data = self.to_bytes()
        import tempfile  # writers only: `aicert hash` and `aicert verify` never load it

        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), 0o644)
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and validate a manifest written by `write` (or any JSON of the same shape)."""
        try:
            with open(path, "rb") as fh:
                obj = json.loads(
                    fh.read().decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_int=_integer
                )
        except UnicodeDecodeError as e:
            raise ManifestError(f"manifest: not UTF-8: {e}") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"manifest: not JSON: {e}") from None
        except RecursionError:  # found by fuzzing: `[[[…` deeper than the interpreter's stack
            raise ManifestError("manifest: arrays and objects nested too deeply") from None
        return cls.from_json(obj)


def _integer(text: str) -> int:
    """A JSON integer, refused unread beyond 16 digits (found by fuzzing: `int()` raises a plain
    ValueError past 4300 digits, and a size is at most 2**53 - 1, 16 digits, anyway)."""
    digits = len(text.lstrip("-"))
    if digits > 16:
        raise ManifestError(
            f"manifest: an integer of {digits} digits is out of range (sizes are below 2**53)"
        )
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestError(f"{key}: duplicate key")
        obj[key] = value
    return obj
