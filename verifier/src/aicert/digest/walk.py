"""Walking a tree to hash, never following a link: what `aicert.digest.hashing` reads, and its errors.

The walk lists directories only (no stat per file) and refuses what cannot be hashed faithfully
(special files, refused or escaping symlinks, names that are not UTF-8). It counts every entry it
lists against an optional bound, so that a huge tree or directory is refused before it fills the
memory, and stops when asked to.
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
from collections.abc import Callable

from aicert.digest.manifest import FileEntry

__all__ = [
    "BudgetExceeded",
    "DigestError",
    "HashingCancelled",
    "SymlinkPolicy",
    "apparent_size",
    "never",
    "os_reason",
    "scan",
    "special_kind",
]


class SymlinkPolicy(enum.Enum):
    """What to do with a symbolic link met in the tree. Links are never followed."""

    REFUSE = "refuse"
    """A symlink anywhere in the tree is an error."""
    RECORD = "record"
    """A symlink is an entry of its own: size and sha256 of its target string, ``symlink=True``.
    Its target must be relative and resolve inside the root."""


class DigestError(Exception):
    """A file that cannot be hashed faithfully. ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class BudgetExceeded(DigestError):
    """The tree (or a file in it, grown since the walk) is over a budget of ``hash_tree``.

    ``what`` is ``"bytes"`` (apparent sizes) or ``"files"`` (entries of the walk); ``found`` is how
    much was counted when it stopped, ``limit`` the budget. A `DigestError`: a caller that refuses
    on any hashing failure still refuses.
    """

    def __init__(self, path: str, what: str, found: int, limit: int, reason: str) -> None:
        super().__init__(path, reason)
        self.what, self.found, self.limit = what, found, limit


class HashingCancelled(Exception):
    """``hash_tree``'s ``cancel`` event was set: it stopped without a result. Not a `DigestError`:
    nothing is wrong with the tree, the caller no longer wants it hashed."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: hashing cancelled"


def os_reason(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else str(e)


def special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe); only regular files and directories can be hashed"
    if stat.S_ISSOCK(mode):
        return "is a socket; only regular files and directories can be hashed"
    if stat.S_ISBLK(mode):
        return "is a block device; only regular files and directories can be hashed"
    if stat.S_ISCHR(mode):
        return "is a character device; only regular files and directories can be hashed"
    return "is not a regular file or directory"


def _check_name(path: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestError(path, "file name is not valid UTF-8") from None


def _within(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def _symlink_entry(path: str, rel: str, root_real: str) -> FileEntry:
    try:
        target = os.readlink(path)
    except OSError as e:
        raise DigestError(path, f"cannot read symlink: {os_reason(e)}") from None
    if os.path.isabs(target):
        raise DigestError(path, f"symlink target {target!r} is absolute; only relative links are recorded")
    if not _within(os.path.realpath(path), root_real):
        raise DigestError(path, f"symlink target {target!r} resolves outside the root")
    raw = os.fsencode(target)
    return FileEntry(rel, len(raw), hashlib.sha256(raw).hexdigest(), symlink=True)


def never() -> bool:
    return False


def scan(
    root: str,
    symlinks: SymlinkPolicy,
    exclude: frozenset[str],
    skip: Callable[[str], bool] | None,
    *,
    max_entries: int | None = None,
    stop: Callable[[], bool] = never,
) -> tuple[list[tuple[str, str]], list[FileEntry]]:
    """Walk the tree without following links: ``([(relpath, path)] of files, [symlink entries])``.

    Uses only the directory entries' types (no stat per file: it is a syscall per file that the
    hashing does anyway). Directories are listed in sorted order so that errors are deterministic.
    Every entry listed counts against ``max_entries`` as it is read, so that neither a huge
    directory nor a huge tree can fill the memory; ``stop()`` is asked before each directory.
    """
    left_out = skip or (lambda _rel: False)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise DigestError(root, "no such file or directory") from None
    except OSError as e:
        raise DigestError(root, os_reason(e)) from None
    if stat.S_ISLNK(st.st_mode):
        raise DigestError(root, "is a symlink; pass the path it points to")
    if stat.S_ISREG(st.st_mode):
        name = os.path.basename(os.path.abspath(root))
        _check_name(root, name)
        return ([] if name in exclude or left_out(name) else [(name, root)]), []
    if not stat.S_ISDIR(st.st_mode):
        raise DigestError(root, special_kind(st.st_mode))

    root_real = os.path.realpath(root)
    files: list[tuple[str, str]] = []
    links: list[FileEntry] = []
    stack: list[tuple[str, str]] = [(root, "")]
    refuse = symlinks is SymlinkPolicy.REFUSE
    listed = 0
    while stack:
        if stop():
            raise HashingCancelled(root)
        directory, prefix = stack.pop()
        entries: list[os.DirEntry[str]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    listed += 1
                    if max_entries is not None and listed > max_entries:
                        raise BudgetExceeded(
                            root,
                            "files",
                            listed,
                            max_entries,
                            f"holds more than {max_entries} entries (files, directories and links), "
                            "more than may be measured; nothing was read",
                        )
                    entries.append(entry)
        except OSError as e:
            raise DigestError(directory, f"cannot list directory: {os_reason(e)}") from None
        entries.sort(key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            path = entry.path
            rel = prefix + entry.name
            if not rel.isascii():
                _check_name(path, entry.name)
            if rel in exclude:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((path, rel + "/"))
                elif left_out(rel):
                    continue
                elif entry.is_file(follow_symlinks=False):
                    files.append((rel, path))
                elif entry.is_symlink():
                    if refuse:
                        raise DigestError(
                            path, "is a symlink, refused by the symlink policy ('record' records links)"
                        )
                    links.append(_symlink_entry(path, rel, root_real))
                else:
                    raise DigestError(path, special_kind(entry.stat(follow_symlinks=False).st_mode))
            except FileNotFoundError:
                raise DigestError(path, "vanished while the tree was scanned") from None
            except OSError as e:
                raise DigestError(path, os_reason(e)) from None
        stack.extend(reversed(subdirs))
    return files, links


def apparent_size(
    files: list[tuple[str, str]], links: list[FileEntry], root: str, stop: Callable[[], bool]
) -> int:
    """The sum of the files' ``st_size`` (a sparse file counts fully: it would be read fully)."""
    total = sum(e.size for e in links)
    for i, (_, path) in enumerate(files):
        if not i % 1024 and stop():
            raise HashingCancelled(root)
        try:
            total += os.lstat(path).st_size
        except OSError as e:
            raise DigestError(path, os_reason(e)) from None
    return total
