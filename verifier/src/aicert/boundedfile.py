"""Reading a local file the user named, without trusting it: a regular file only, and at most a
limit of bytes. A FIFO would block for ever and `/dev/zero` never ends; both are refused on the
open descriptor (opened without blocking), so a file swapped in after a check by name is too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

MiB: Final = 1024 * 1024


class FileRefused(ValueError):
    """The file cannot be used; the message says why in one line."""


def size_text(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


def read_bounded(stream: BinaryIO, *, limit: int, name: str) -> bytes:
    """At most `limit` bytes from `stream` (read to its end), or FileRefused if there are more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"{name} is larger than {size_text(limit)}, the limit")
    return data


def read_regular_file(path: Path, *, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (FileRefused otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # before fdopen, which raises IsADirectoryError for a directory
            raise FileRefused(f"{path} is not a regular file ({_file_kind(mode)})")
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        try:
            return read_bounded(stream, limit=limit, name=str(path))
        except OSError as exc:
            raise FileRefused(f"cannot read {path}: {exc.strerror}") from None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")
