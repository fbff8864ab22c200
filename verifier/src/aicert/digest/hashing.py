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
from aicert.digest.walk import (
    BudgetExceeded,
    DigestError,
    HashingCancelled,
    SymlinkPolicy,
    apparent_size,
    never,
    os_reason,
    scan,
    special_kind,
)

__all__ = ["BudgetExceeded", "DigestError", "HashingCancelled", "SymlinkPolicy", "hash_file", "hash_tree"]

# Buffer sizing. One buffer is the unit of a read and of a hand-off between reader and hasher.
_CHUNK_MAX = 4 << 20
_CHUNK_MIN = 256 << 10
_BUFFER_BUDGET = 96 << 20  # all threads' buffers together
_DEPTH = 3  # buffers per thread: one being hashed, one being filled, one spare
_MAX_WORKERS = 64

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Progress = Callable[[int], None]


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
            raise DigestError(path, f"cannot open: {os_reason(e)}") from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise DigestError(path, special_kind(before.st_mode))
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
            raise DigestError(path, f"read failed: {os_reason(e)}") from None
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

    def __init__(self, reserved: int, limit: int) -> None:
        self._reserved, self._limit = reserved, limit
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
    stop = cancel.is_set if cancel is not None else never
    files, links = scan(root_s, symlinks, frozenset(exclude), skip, max_entries=max_files, stop=stop)
    reservations: _Reservations | None = None
    if on_total is not None or max_bytes is not None:
        total = apparent_size(files, links, root_s, stop)
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
            reservations = _Reservations(sum(e.size for e in links), max_bytes)
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
