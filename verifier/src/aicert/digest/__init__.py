"""Hashing of model and data trees into a manifest with a root digest (docs/certificate-format.md)."""

from aicert.digest.hashing import (
    BudgetExceeded,
    DigestError,
    HashingCancelled,
    SymlinkPolicy,
    hash_file,
    hash_tree,
)
from aicert.digest.manifest import (
    BUNDLE_FILE,
    CERTIFICATE_FILE,
    INPUT_EXCLUDED,
    MANIFEST_FILE,
    MODEL_SIGNATURE_FILE,
    OUTPUT_EXCLUDED,
    FileEntry,
    Manifest,
    ManifestError,
    check_relative_path,
    manifest_root,
)
from aicert.digest.patterns import PathPatterns, PatternError

__all__ = [
    "BUNDLE_FILE",
    "CERTIFICATE_FILE",
    "INPUT_EXCLUDED",
    "MANIFEST_FILE",
    "MODEL_SIGNATURE_FILE",
    "OUTPUT_EXCLUDED",
    "BudgetExceeded",
    "DigestError",
    "FileEntry",
    "HashingCancelled",
    "Manifest",
    "ManifestError",
    "PathPatterns",
    "PatternError",
    "SymlinkPolicy",
    "check_relative_path",
    "hash_file",
    "hash_tree",
    "manifest_root",
]
