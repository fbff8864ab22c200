"""`model.sig`: an OpenSSF Model Signing (OMS) v1.0 signature of the weights, made by the AK.

The format `model_signing` (PyPI) writes and verifies: a Sigstore bundle v0.3 whose DSSE envelope
carries an in-toto Statement v1 with model_signing's predicate over the per-file sha256 digests,

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": <the output's name>, "digest": {"sha256": <sha256 of the digests, in order>}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                                     "ignore_paths": [<the files aicert writes beside the weights>]},
                   "resources": [{"name": <path>, "algorithm": "sha256", "digest": <hex>}, …]}}

with the AK certificate chain as verification material. The digests are those of the output's
manifest (aicert.digest), the same the certificate's output root commits to. `aicert verify` does
not read it: the stock `model_signing verify certificate` does, and proves only that this AK
signed these files' digests (docs/verification.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from aicert.digest.manifest import FileEntry
from aicert.jcs import canonical

OMS_PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"


def _order(path: str) -> tuple[str, ...]:
    """model_signing's order of resources: by path components (a/b before a-b)."""
    return tuple(path.split("/"))


def oms_payload(files: Iterable[FileEntry], model_name: str, ignore_paths: Iterable[str]) -> bytes:
    """The OMS v1.0 in-toto statement over `files` (a manifest's entries). Raises ValueError for a
    recorded symlink, which OMS hashes through (it would never verify)."""
    entries = sorted(files, key=lambda f: _order(f.path))
    links = [f.path for f in entries if f.symlink]
    if links:
        raise ValueError(
            f"the output holds recorded symlinks ({links[0]}): OMS follows links, so no model.sig"
        )
    root = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in entries)).hexdigest()
    return canonical(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": model_name, "digest": {"sha256": root}}],
            "predicateType": OMS_PREDICATE_TYPE,
            "predicate": {
                "serialization": {
                    "method": "files",
                    "hash_type": "sha256",
                    "allow_symlinks": False,
                    "ignore_paths": sorted(ignore_paths),
                },
                "resources": [{"name": f.path, "algorithm": "sha256", "digest": f.sha256} for f in entries],
            },
        }
    )
