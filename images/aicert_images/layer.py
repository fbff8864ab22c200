"""The image's one layer: the rootfs as a deterministic gzipped tar (entries sorted, mtimes clamped,
numeric owners, hard links kept; no device nodes, apt caches and lists, logs or machine-id)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .oci import MEDIA_LAYER_GZIP, Descriptor
from .report import ImageBuildError

GZIP_LEVEL = 6
# The layer leaves these out: kept as empty directories (the runtime mounts or fills them) ...
EMPTY_DIRS = ("dev", "proc", "sys", "run", "var/cache/apt", "var/lib/apt/lists")
# ... keeps only the directories under these (no logs) ...
NO_FILES_UNDER = ("var/log",)
# ... and drops these files (machine identity, caches with inode numbers, the runtime's files).
DROPPED_FILES = frozenset(
    {
        "etc/machine-id",
        "var/lib/dbus/machine-id",
        "var/cache/ldconfig/aux-cache",
        "etc/resolv.conf",
        "etc/hostname",
    }
)


@dataclass(frozen=True)
class Layer:
    blob: Descriptor
    diff_id: str
    uncompressed_size: int
    entries: int


def write_layer(rootfs: Path, blobs: Path, clamp: int) -> Layer:
    """The rootfs as one gzipped tar layer in `blobs` (blobs/sha256)."""
    blobs.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    hardlinks: dict[tuple[int, int], str] = {}
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(
                filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=compressed, mtime=0
            ) as gz:
                uncompressed = _HashingWriter(gz)
                with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for name, path, st in _layer_entries(rootfs):
                        count += 1
                        _add_entry(tar, name, path, st, clamp, hardlinks)
        digest = f"sha256:{compressed.sha256.hexdigest()}"
        os.replace(tmp_name, blobs / digest.removeprefix("sha256:"))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return Layer(
        Descriptor(MEDIA_LAYER_GZIP, digest, compressed.size),
        f"sha256:{uncompressed.sha256.hexdigest()}",
        uncompressed.size,
        count,
    )


def _add_entry(
    tar: tarfile.TarFile,
    name: str,
    path: Path,
    st: os.stat_result,
    clamp: int,
    hardlinks: dict[tuple[int, int], str],
) -> None:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(st.st_mtime), clamp)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        if st.st_nlink > 1 and (st.st_dev, st.st_ino) in hardlinks:
            info.type = tarfile.LNKTYPE
            info.linkname = hardlinks[(st.st_dev, st.st_ino)]
            tar.addfile(info)
            return
        if st.st_nlink > 1:
            hardlinks[(st.st_dev, st.st_ino)] = name
        with contextlib.suppress(OSError):
            if os.getxattr(path, "security.capability", follow_symlinks=False):
                raise ImageBuildError(f"/{name} has file capabilities, which the layer writer does not keep")
        info.size = st.st_size
        with open(path, "rb") as handle:
            tar.addfile(info, handle)
    else:
        raise ImageBuildError(f"/{name}: a device node, FIFO or socket outside /dev cannot go into the layer")


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through it to `sink`."""

    def __init__(self, sink: BinaryIO | gzip.GzipFile) -> None:
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


def _layer_entries(rootfs: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(name in the layer, path, lstat) depth-first, each directory's entries sorted by name."""

    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        for name in sorted(os.listdir(directory), key=os.fsencode):
            path = directory / name
            relative = f"{prefix}{name}"
            st = os.lstat(path)
            if relative in DROPPED_FILES:
                continue
            if any(relative.startswith(f"{d}/") for d in EMPTY_DIRS):
                continue
            if not stat.S_ISDIR(st.st_mode) and any(relative.startswith(f"{d}/") for d in NO_FILES_UNDER):
                continue
            yield relative, path, st
            if stat.S_ISDIR(st.st_mode):
                yield from walk(path, f"{relative}/")

    yield from walk(rootfs, "")
