"""Hashing of model and data trees into a manifest with a root digest (docs/certificate-format.md)."""

from aicert.digest.hashing import DigestError, SymlinkPolicy, hash_file, hash_tree
from aicert.digest.manifest import MANIFEST_FILE, FileEntry, Manifest, ManifestError, manifest_root

__all__ = [
    "MANIFEST_FILE",
    "DigestError",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "SymlinkPolicy",
    "hash_file",
    "hash_tree",
    "manifest_root",
]
