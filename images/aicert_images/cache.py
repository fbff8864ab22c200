"""The cache of the expensive steps, ~/.cache/aicert/images/<kind>-<hash of inputs>: an entry is
complete once its done.json (the inputs) is written; the most recently used few of each kind stay."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Bump when the build steps (wheels, rootfs) change in a way the cache keys do not see.
BUILDER_VERSION = "1"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aicert" / "images"


def cache_key(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_cached(entry: Path) -> bool:
    marker = entry / "done.json"
    if marker.is_file():
        os.utime(marker)  # recently used: kept by prune
        return True
    return False


def finish_entry(tmp: Path, entry: Path, inputs: object) -> None:
    (tmp / "done.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    if entry.exists():
        remove_tree(entry)
    tmp.rename(entry)


def prune(cache: Path, prefix: str, keep: int = 2) -> None:
    """Keep the `keep` most recently used entries named `prefix`-<hash>."""
    entries = [p for p in cache.glob(f"{prefix}-*") if (p / "done.json").is_file()]
    entries.sort(key=lambda p: (p / "done.json").stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        remove_tree(old)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=False)
