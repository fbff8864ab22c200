"""aicert.digest under a budget: what a hostile tree can cost the hasher, and how it is stopped.

The attack: a training writes sparse files of terabytes that use no disk at all. Their apparent
size is what a hasher reads (zeros, at one core's sha256 speed: hours per file). So the budget
counts apparent sizes (`st_size`), the tree is walked and refused before any byte is read, a file
that grows afterwards is stopped when it is opened, and a caller can cancel the hashing between
chunks. Every test counts the bytes really read (os.readv, which the hasher reads with); none
measures time.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.reads import Reads

from aicert.digest import BudgetExceeded, DigestError, HashingCancelled, hash_tree
from aicert.digest.hashing import _CHUNK_MAX

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def _sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes of which none is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class Hashed:
    """A progress callback summing the bytes hashed."""

    def __init__(self, then: Callable[[int], None] | None = None) -> None:
        self.bytes = 0
        self._then = then

    def __call__(self, n: int) -> None:
        self.bytes += n
        if self._then is not None:
            self._then(self.bytes)


# --------------------------------------------------------------------------------------------------
# refused before reading


def test_a_sparse_file_far_over_the_budget_is_refused_without_reading_a_byte(
    tmp_path: Path, reads: Reads
) -> None:
    out = tmp_path / "out"
    _write(out / "config.json", b"{}")
    weights = _sparse(out / "weights.bin", 8 * TiB)
    assert os.stat(weights).st_blocks == 0  # it really holds nothing: only its apparent size is big
    hashed = Hashed()
    with pytest.raises(BudgetExceeded) as refused:
        hash_tree(out, max_bytes=1 * GiB, progress=hashed)
    assert (refused.value.what, refused.value.found, refused.value.limit) == ("bytes", 8 * TiB + 2, 1 * GiB)
    assert refused.value.path == str(out)
    assert "8796093022210 bytes" in str(refused.value) and "sparse" in str(refused.value)
    assert reads.bytes == 0 and hashed.bytes == 0
    assert isinstance(refused.value, DigestError)  # callers that refuse on any DigestError still refuse


def test_many_small_files_add_up_to_the_budget(tmp_path: Path, reads: Reads) -> None:
    for i in range(3):
        _write(tmp_path / f"f{i}", _rand(KiB, i))
    assert hash_tree(tmp_path, max_bytes=3 * KiB).total_bytes == 3 * KiB  # exactly the budget: hashed
    read_for_one_tree = reads.bytes
    with pytest.raises(BudgetExceeded) as refused:
        hash_tree(tmp_path, max_bytes=3 * KiB - 1)
    assert refused.value.found == 3 * KiB
    assert reads.bytes == read_for_one_tree  # the refused walk read nothing


def test_more_entries_than_allowed_are_refused_during_the_walk(tmp_path: Path, reads: Reads) -> None:
    for i in range(6):
        (tmp_path / f"d{i}").mkdir()
        _write(tmp_path / f"d{i}" / "x", b"x")
    assert hash_tree(tmp_path, max_files=12).file_count == 6  # 6 directories + 6 files
    before = reads.bytes
    with pytest.raises(BudgetExceeded) as refused:
        hash_tree(tmp_path, max_files=11)
    assert (refused.value.what, refused.value.limit) == ("files", 11)
    assert "more than 11" in str(refused.value)
    assert reads.bytes == before


# --------------------------------------------------------------------------------------------------
# growing after the walk


def test_a_file_that_grows_after_the_walk_is_stopped_at_the_budget(tmp_path: Path, reads: Reads) -> None:
    small = _write(tmp_path / "a-small.bin", _rand(10 * KiB))
    grower = _write(tmp_path / "b-grows.bin", _rand(10 * KiB, 1))

    def grow(_files: int, _total: int) -> None:  # called after the walk, before any byte is read
        os.truncate(grower, 8 * TiB)

    with pytest.raises(BudgetExceeded) as refused:
        hash_tree(tmp_path, max_bytes=1 * MiB, on_total=grow, workers=1)
    assert refused.value.path == str(grower)
    assert refused.value.found >= 8 * TiB and refused.value.limit == 1 * MiB
    assert reads.bytes <= os.path.getsize(small) + 1  # the small file at most; the big one not at all


@pytest.mark.parametrize("workers", [1, 4])
def test_files_growing_while_others_are_hashed_never_take_the_total_past_the_budget(
    tmp_path: Path, reads: Reads, workers: int
) -> None:
    names = [_write(tmp_path / f"f{i:02d}", _rand(100 * KiB, i)) for i in range(16)]
    budget = 16 * 100 * KiB + 50 * KiB

    grown: list[bool] = []

    def grow_them_all(done: int) -> None:  # after the first bytes: every file gets 1 MiB bigger
        if done and not grown:
            grown.append(True)
            for name in names:
                with open(name, "ab") as fh:
                    fh.write(_rand(MiB, 99))

    with pytest.raises(DigestError):  # over the budget, or changed while hashed: never a manifest
        hash_tree(tmp_path, max_bytes=budget, progress=Hashed(grow_them_all), workers=workers)
    assert reads.bytes <= budget + len(names)  # one byte per file past its size detects growth


def test_a_file_growing_while_it_is_read_stops_one_byte_past_its_size(tmp_path: Path, reads: Reads) -> None:
    size = 3 * _CHUNK_MAX + 5
    grower = _write(tmp_path / "grows.bin", _rand(size))

    def grow(done: int) -> None:
        if done and os.path.getsize(grower) == size:
            os.truncate(grower, 8 * TiB)

    with pytest.raises(DigestError, match="changed while being hashed") as refused:
        hash_tree(tmp_path, max_bytes=size, progress=Hashed(grow), workers=1)
    assert not isinstance(refused.value, BudgetExceeded)
    assert reads.bytes <= size + 1


# --------------------------------------------------------------------------------------------------
# cancellation


def test_cancelling_stops_the_hashing_of_a_big_file_between_chunks(tmp_path: Path, reads: Reads) -> None:
    size = 1 * GiB
    _sparse(tmp_path / "big.bin", size)
    cancel = threading.Event()
    hashed = Hashed(lambda _done: cancel.set())  # cancelled as soon as the first chunk is hashed
    with pytest.raises(HashingCancelled) as stopped:
        hash_tree(tmp_path, cancel=cancel, progress=hashed)
    assert not isinstance(stopped.value, DigestError)  # not a refusal of the tree: the caller asked
    assert stopped.value.path == str(tmp_path)
    assert hashed.bytes < size and reads.bytes < size
    assert reads.bytes <= 4 * _CHUNK_MAX  # the chunk being hashed and the few the reader had filled


@pytest.mark.parametrize("workers", [1, 4])
def test_cancelling_stops_a_pool_hashing_many_files(tmp_path: Path, reads: Reads, workers: int) -> None:
    for i in range(200):
        _write(tmp_path / f"f{i:03d}", _rand(20 * KiB, i))
    cancel = threading.Event()
    hashed = Hashed(lambda _done: cancel.set())
    with pytest.raises(HashingCancelled):
        hash_tree(tmp_path, cancel=cancel, progress=hashed, workers=workers)
    assert hashed.bytes < 200 * 20 * KiB


def test_cancelled_before_it_starts_nothing_is_read(tmp_path: Path, reads: Reads) -> None:
    _sparse(tmp_path / "big.bin", 8 * TiB)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(HashingCancelled):
        hash_tree(tmp_path, cancel=cancel, max_bytes=16 * TiB)
    assert reads.bytes == 0


def test_cancelling_from_another_thread_stops_a_hash_in_progress(tmp_path: Path, reads: Reads) -> None:
    size = 2 * GiB
    _sparse(tmp_path / "big.bin", size)
    cancel, started = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def hash_it() -> None:
        try:
            hash_tree(tmp_path, cancel=cancel, progress=Hashed(lambda _done: started.set()))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=hash_it)
    worker.start()
    assert started.wait(10)
    cancel.set()
    worker.join(60)  # a bound on a hang, not a measured time
    assert not worker.is_alive()
    assert [type(e) for e in outcome] == [HashingCancelled]
    assert reads.bytes < size


def test_without_a_budget_or_a_cancel_event_nothing_changes(tmp_path: Path) -> None:
    _write(tmp_path / "a", b"abc")
    _sparse(tmp_path / "zeros", 3 * MiB)
    manifest = hash_tree(tmp_path, max_bytes=None, max_files=None, cancel=None)
    assert manifest.total_bytes == 3 + 3 * MiB
