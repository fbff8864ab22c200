"""Fast, careful sha256 of a file tree.

How it goes fast:

* The tree is scanned first from directory entries alone, no stat per file (nothing is hashed if
  it holds a special file or a refused symlink). Then a pool of threads, one per core, takes the
  files in turn. ``hashlib`` releases the GIL on buffers larger than 2 KiB, so the threads hash on
  all cores at once; the per-file Python work is a few microseconds against ~100 us of hashing
  for a 200 KiB file.
* Each thread owns a few page-aligned buffers (anonymous ``mmap``) that it reuses for every file:
  no allocation per read. A file that fits in one buffer (the usual case for many small files) is
  read with one ``readv`` and hashed in the same thread, with no hand-off at all.
* A file larger than one buffer is read by a helper reader thread that fills the next buffer while
  the current one is hashed, so one huge file runs at one core's sha256 speed, not at
  sha256 + memory-copy speed.
* Memory is bounded by ``threads x buffers x buffer size`` (<= 96 MiB), whatever the tree.
* What remains on a warm page cache is the kernel's copy of each file into the buffer (mmap'ing
  files instead was measured slower with several threads, likely from the TLB flush of each unmap).
  docs/performance.md has the figures.

How it stays careful: symlinks are never followed (refused, or recorded as links by policy), special
files are refused, every file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and its identity, size and
times are compared before and after it is read; the bytes read must equal the size.

How it stays bounded (the node agent hashes what tenants wrote): with ``max_files`` the walk stops at
that many entries; with ``max_bytes`` the apparent sizes (``st_size``: a sparse file of terabytes
that uses no disk counts fully, since every apparent byte would be read) are summed before any byte
is read, and each file's size is reserved against the budget when it is opened, so a file that grows
after the walk is refused too; no file is read past its size plus one byte (which detects growth).
With ``cancel``, the walk and the hashing stop at the next directory, file or chunk once it is set.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import itertools
import mmap
import os
import stat
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from queue import SimpleQueue

from aicert.digest.manifest import FileEntry, Manifest

__all__ = ["BudgetExceeded", "DigestError", "HashingCancelled", "SymlinkPolicy", "hash_file", "hash_tree"]

# Buffer sizing. One buffer is the unit of a read and of a hand-off between reader and hasher.
_CHUNK_MAX = 4 << 20
_CHUNK_MIN = 256 << 10
_BUFFER_BUDGET = 96 << 20  # all threads' buffers together
_DEPTH = 3  # buffers per thread: one being hashed, one being filled, one spare
_MAX_WORKERS = 64

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Progress = Callable[[int], None]


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


def _reason(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else str(e)


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe); only regular files and directories can be hashed"
    if stat.S_ISSOCK(mode):
        return "is a socket; only regular files and directories can be hashed"
    if stat.S_ISBLK(mode):
        return "is a block device; only regular files and directories can be hashed"
    if stat.S_ISCHR(mode):
        return "is a character device; only regular files and directories can be hashed"
    return "is not a regular file or directory"


def _changed(path: str, what: str) -> DigestError:
    return DigestError(path, f"changed while being hashed ({what}); hash it again once it is stable")


# --------------------------------------------------------------------------------------------------
# Hashing one file with reusable buffers


class _Hasher:
    """Per-thread hashing state: reusable page-aligned buffers and a lazily started reader thread."""

    def __init__(
        self,
        chunk: int,
        report: Progress | None,
        cancelled: threading.Event,
        *,
        cancel: threading.Event | None = None,
        reserve: Callable[[str, int], None] | None = None,
    ) -> None:
        self.chunk = chunk
        self._maps = [mmap.mmap(-1, chunk) for _ in range(_DEPTH)]
        self._views = [memoryview(m) for m in self._maps]
        self._report = report
        self._cancelled = cancelled  # the pool's: another thread failed
        self._cancel = cancel  # the caller's
        self._reserve = reserve
        self._reader: threading.Thread | None = None
        self._jobs: SimpleQueue[tuple[int, int] | None] = SimpleQueue()
        self._free: SimpleQueue[int] = SimpleQueue()
        self._full: SimpleQueue[tuple[int, int | OSError | None]] = SimpleQueue()
        for i in range(_DEPTH):
            self._free.put(i)

    def stopped(self) -> bool:
        return self._cancelled.is_set() or (self._cancel is not None and self._cancel.is_set())

    def close(self) -> None:
        if self._reader is not None:
            self._jobs.put(None)
            self._reader.join()
            self._reader = None
        for v in self._views:
            v.release()
        for m in self._maps:
            m.close()

    def hash_path(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of the regular file at ``path``, never following a symlink.

        This is the hot loop for trees of many small files: a file smaller than one buffer costs
        open, fstat, one readv, one sha256 call (GIL released), fstat, close.
        """
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as e:
            if e.errno == errno.ELOOP:  # the path became a symlink after the scan
                raise DigestError(path, "is a symlink (replaced while hashing)") from None
            raise DigestError(path, f"cannot open: {_reason(e)}") from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise DigestError(path, _special_kind(before.st_mode))
            size = before.st_size
            if self._reserve is not None:
                self._reserve(path, size)
            if size < self.chunk:
                # Ask for one byte more than the size: getting it means the file grew. A short
                # read of a regular file means end of file; the fstat below confirms the size.
                view = self._views[0]
                total = os.readv(fd, [view[: size + 1]])
                while 0 < total < size:  # a partial read (rare): continue
                    n = os.readv(fd, [view[total : size + 1]])
                    if n == 0:
                        break
                    total += n
                if total != size:
                    raise _changed(path, f"read {total} bytes, size was {size}")
                digest = hashlib.sha256(view[:size]).hexdigest()
                if self._report is not None and size:
                    self._report(size)
            else:
                digest = self._hash_pipelined(path, fd, size)
            after = os.fstat(fd)
        except OSError as e:
            raise DigestError(path, f"read failed: {_reason(e)}") from None
        finally:
            os.close(fd)
        if (
            after.st_size != size
            or after.st_mtime_ns != before.st_mtime_ns
            or after.st_ctime_ns != before.st_ctime_ns
            or after.st_ino != before.st_ino
        ):
            what = "size" if after.st_size != size else "modification time"
            raise _changed(path, f"{what} differs after reading")
        return size, digest

    def _hash_pipelined(self, path: str, fd: int, size: int) -> str:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, name="aicert-digest-reader", daemon=True)
            self._reader.start()
        self._jobs.put((fd, size))
        h = hashlib.sha256()
        total = 0
        error: OSError | None = None
        report = self._report
        views, full, free = self._views, self._full, self._free
        done = False
        try:
            while True:
                idx, msg = full.get()
                if idx < 0:  # end of this file
                    done = True
                    error = msg if isinstance(msg, OSError) else None
                    break
                assert isinstance(msg, int)
                if total + msg <= size:
                    h.update(views[idx][:msg])
                    if report is not None:
                        report(msg)
                total += msg
                free.put(idx)
        finally:
            if not done:  # the progress callback raised: stop the reader, take the buffers back
                self._cancelled.set()
                while True:
                    idx, msg = full.get()
                    if idx < 0:
                        break
                    free.put(idx)
        if error is not None:
            raise error
        if self._cancel is not None and self._cancel.is_set() and total != size:
            raise HashingCancelled(path)
        if self._cancelled.is_set() and total != size:
            raise DigestError(path, "cancelled")
        if total != size:
            raise _changed(path, f"read {total} bytes{'+' if total > size else ''}, size was {size}")
        return h.hexdigest()

    def _read_loop(self) -> None:
        """Reader thread: fill free buffers with the next bytes of the current file.

        Reads until end of file, or one byte past the expected size (the file grew), or
        cancellation; then posts ``(-1, None | OSError)``.
        """
        views, free, full, stopped = self._views, self._free, self._full, self.stopped
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fd, size = job
            total = 0
            end: OSError | None = None
            while not stopped():
                idx = free.get()
                if stopped():  # cancelled while every buffer was full: read no more
                    free.put(idx)
                    break
                want = min(self.chunk, size + 1 - total)
                try:
                    n = os.readv(fd, [views[idx] if want == self.chunk else views[idx][:want]])
                except OSError as e:
                    free.put(idx)
                    end = e
                    break
                if n == 0:
                    free.put(idx)
                    break
                full.put((idx, n))
                total += n
                if total > size:
                    break
            full.put((-1, end))


def _chunk_for(threads: int) -> int:
    chunk = _CHUNK_MAX
    while chunk > _CHUNK_MIN and threads * _DEPTH * chunk > _BUFFER_BUDGET:
        chunk //= 2
    return chunk


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of one regular file; a symlink or special file is a `DigestError`."""
    hasher = _Hasher(_CHUNK_MAX, None, threading.Event())
    try:
        return hasher.hash_path(os.fspath(path))
    finally:
        hasher.close()


# --------------------------------------------------------------------------------------------------
# Scanning the tree


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
        raise DigestError(path, f"cannot read symlink: {_reason(e)}") from None
    if os.path.isabs(target):
        raise DigestError(path, f"symlink target {target!r} is absolute; only relative links are recorded")
    if not _within(os.path.realpath(path), root_real):
        raise DigestError(path, f"symlink target {target!r} resolves outside the root")
    raw = os.fsencode(target)
    return FileEntry(rel, len(raw), hashlib.sha256(raw).hexdigest(), symlink=True)


def _never() -> bool:
    return False


def _scan(
    root: str,
    symlinks: SymlinkPolicy,
    exclude: frozenset[str],
    skip: Callable[[str], bool] | None,
    *,
    max_entries: int | None = None,
    stop: Callable[[], bool] = _never,
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
        raise DigestError(root, _reason(e)) from None
    if stat.S_ISLNK(st.st_mode):
        raise DigestError(root, "is a symlink; pass the path it points to")
    if stat.S_ISREG(st.st_mode):
        name = os.path.basename(os.path.abspath(root))
        _check_name(root, name)
        return ([] if name in exclude or left_out(name) else [(name, root)]), []
    if not stat.S_ISDIR(st.st_mode):
        raise DigestError(root, _special_kind(st.st_mode))

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
            raise DigestError(directory, f"cannot list directory: {_reason(e)}") from None
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
                    raise DigestError(path, _special_kind(entry.stat(follow_symlinks=False).st_mode))
            except FileNotFoundError:
                raise DigestError(path, "vanished while the tree was scanned") from None
            except OSError as e:
                raise DigestError(path, _reason(e)) from None
        stack.extend(reversed(subdirs))
    return files, links


# --------------------------------------------------------------------------------------------------
# The pool


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    # A container's CPU quota (cgroup v2) caps what the affinity mask shows.
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(n, _MAX_WORKERS))


class _Reservations:
    """The bytes the files opened so far may read, against ``max_bytes`` (threads share it)."""

    def __init__(self, root: str, reserved: int, limit: int) -> None:
        self._root, self._reserved, self._limit = root, reserved, limit
        self._lock = threading.Lock()

    def reserve(self, path: str, size: int) -> None:
        with self._lock:
            total = self._reserved + size
            if total > self._limit:
                raise BudgetExceeded(
                    path,
                    "bytes",
                    total,
                    self._limit,
                    f"is {size} bytes now (it grew after the tree was walked), which takes the tree "
                    f"past its budget of {self._limit} bytes; it was not read",
                )
            self._reserved = total


def _apparent_size(
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
            raise DigestError(path, _reason(e)) from None
    return total


def hash_tree(
    root: Path,
    *,
    symlinks: SymlinkPolicy = SymlinkPolicy.REFUSE,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    exclude: Collection[str] = (),
    skip: Callable[[str], bool] | None = None,
    on_total: Callable[[int, int], None] | None = None,
    max_bytes: int | None = None,
    max_files: int | None = None,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Hash every file under ``root`` (a directory, or a single regular file) into a `Manifest`.

    Entry paths are relative to ``root`` (a single file gives one entry named by its basename).
    ``exclude`` lists relative POSIX paths to leave out (for a directory, its whole subtree).
    ``skip(relpath)``, if given, is asked about every entry that is not a directory (file, symlink
    or special file); those it accepts are left out, neither hashed nor refused.
    ``progress(n)`` is called with each run of ``n`` bytes hashed, from the hashing threads but
    never concurrently. ``on_total(files, bytes)``, if given, is called once after the scan, before
    hashing starts (it costs one extra ``lstat`` per file). ``workers`` defaults to the usable cores.

    Bounds, for trees someone else wrote: ``max_files`` caps the entries the walk lists (files,
    directories, links). ``max_bytes`` caps the apparent size (the sum of ``st_size``, so sparse
    files count fully): checked after the walk, before any byte is read (one extra ``lstat`` per
    file), and again as each file is opened (a file grown since counts at its new size).
    ``cancel``: once set, the walk and the hashing stop at the next directory, file or chunk.

    Raises `BudgetExceeded` (a `DigestError`) past a bound; `HashingCancelled` once ``cancel`` is set;
    `DigestError` for: a root that does not exist or is a symlink; a special file; a symlink
    under `SymlinkPolicy.REFUSE`, or one that is absolute or escapes the root under `RECORD`; a
    file that changes while it is hashed; any read error.
    """
    root_s = os.fspath(root)
    stop = cancel.is_set if cancel is not None else _never
    files, links = _scan(root_s, symlinks, frozenset(exclude), skip, max_entries=max_files, stop=stop)
    reservations: _Reservations | None = None
    if on_total is not None or max_bytes is not None:
        total = _apparent_size(files, links, root_s, stop)
        if max_bytes is not None:
            if total > max_bytes:
                raise BudgetExceeded(
                    root_s,
                    "bytes",
                    total,
                    max_bytes,
                    f"holds {total} bytes (apparent sizes: a sparse file counts fully), more than its "
                    f"budget of {max_bytes} bytes; nothing was read",
                )
            reservations = _Reservations(root_s, sum(e.size for e in links), max_bytes)
        if on_total is not None:
            on_total(len(files) + len(links), total)

    n_threads = max(1, min(workers if workers is not None else _default_workers(), _MAX_WORKERS))
    n_threads = min(n_threads, max(1, len(files)))
    chunk = _chunk_for(n_threads)

    report: Progress | None = None
    if progress is not None:
        lock = threading.Lock()
        user = progress

        def report(n: int) -> None:
            with lock:
                user(n)

    entries: list[FileEntry | None] = [None] * len(files)
    errors: list[BaseException] = []
    cancelled = threading.Event()
    counter = itertools.count()  # next() on it is atomic: the threads share out the files

    def work() -> None:
        hasher = _Hasher(
            chunk,
            report,
            cancelled,
            cancel=cancel,
            reserve=reservations.reserve if reservations is not None else None,
        )
        try:
            n_files = len(files)
            hash_path = hasher.hash_path
            is_cancelled = hasher.stopped
            for i in counter:
                if i >= n_files or is_cancelled():
                    break
                rel, path = files[i]
                size, digest = hash_path(path)
                entries[i] = FileEntry(rel, size, digest)
        except BaseException as e:
            errors.append(e)
            cancelled.set()
        finally:
            hasher.close()

    if files:
        if n_threads == 1:
            work()
        else:
            threads = [
                threading.Thread(target=work, name=f"aicert-digest-{i}", daemon=True)
                for i in range(n_threads)
            ]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    t.join()
            finally:
                cancelled.set()
    if stop():
        raise HashingCancelled(root_s)  # whatever the threads then failed with was its consequence
    if errors:
        raise errors[0]  # the first failure; any later one is only its cancellation

    hashed = [e for e in entries if e is not None]
    assert len(hashed) == len(files)
    return Manifest.from_files(hashed + links)
