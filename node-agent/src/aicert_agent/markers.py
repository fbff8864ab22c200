"""The gate and seal containers: wait for the agent's marker files in the control volume.

`aicert-gate` exits 0 once the inputs are measured, SEAL_REFUSED_EXIT when the agent refused the
pod, GATE_TIMEOUT_EXIT when nothing happened within its timeout (a dead agent never holds a GPU
for ever); `aicert-seal` exits 0 once the certificate is in the resource's status, or
SEAL_REFUSED_EXIT with the agent's reason when it refused.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aicert_contract.markers import (
    GATE_TIMEOUT_EXIT,
    MARKER_GATE,
    MARKER_REFUSED,
    MARKER_SEALED,
    SEAL_REFUSED_EXIT,
)

POLL_SECONDS = 0.2


def write_marker(control: Path, name: str, text: str = "") -> None:
    """Atomically: a reader sees the marker whole or not at all."""
    write_atomic(control / name, text.encode(), sync=False)


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write `path` whole or not at all, never through a name a training could have prepared.

    The agent runs as root on the host and writes into volumes a training wrote (the output's
    manifest and certificate). The data goes into a file without a name (O_TMPFILE), which is linked
    under a random hidden name and renamed onto `path`; on a filesystem without O_TMPFILE the file
    is created under a random name (O_EXCL | O_NOFOLLOW). There is no fixed temporary name, so
    nothing planted (a directory, a FIFO, a link) can stop the write or be written through; what is
    at `path` is never opened: the rename replaces a link there, not what it points to, and fails
    on a directory (leaving nothing behind)."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        temporary = (_UNNAMED and _write_unnamed(directory, path.name, data, sync)) or _write_named(
            directory, path.name, data, sync
        )
        try:
            os.rename(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
        if sync:
            os.fsync(directory)
    finally:
        os.close(directory)


_UNNAMED = True  # use O_TMPFILE where the filesystem has it (tests turn it off to try the other way)
_NAME_TRIES = 16


def _temporary_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(16)}.tmp"


def _write_all(fd: int, data: bytes, sync: bool) -> None:
    os.fchmod(fd, 0o644)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def _write_unnamed(directory: int, name: str, data: bytes, sync: bool) -> str | None:
    """The data in an O_TMPFILE file, linked under a random name; None where that cannot be done."""
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=directory)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None  # this filesystem (or kernel) has no O_TMPFILE
        raise
    try:
        _write_all(fd, data, sync)
        for _ in range(_NAME_TRIES):
            temporary = _temporary_name(name)
            try:  # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: the open file itself
                os.link(f"/proc/self/fd/{fd}", temporary, dst_dir_fd=directory, follow_symlinks=True)
            except FileExistsError:
                continue
            except FileNotFoundError:
                return None  # no /proc: the other way
            return temporary
        raise FileExistsError(errno.EEXIST, "no free temporary name", name)
    finally:
        os.close(fd)


def _write_named(directory: int, name: str, data: bytes, sync: bool) -> str:
    """The data in a new file under a random name, created exclusively and never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_NAME_TRIES):
        temporary = _temporary_name(name)
        try:
            fd = os.open(temporary, flags, 0o600, dir_fd=directory)
        except FileExistsError:
            continue
        try:
            _write_all(fd, data, sync)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
        finally:
            os.close(fd)
        return temporary
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def _refused(control: Path, who: str) -> int | None:
    if not (control / MARKER_REFUSED).exists():
        return None
    print(f"{who}: refused: {(control / MARKER_REFUSED).read_text()}", file=sys.stderr, flush=True)
    return SEAL_REFUSED_EXIT


def wait_gate(control: Path, timeout: float | None = None) -> int:
    print("aicert-gate: waiting for the node agent to measure the inputs", flush=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (control / MARKER_GATE).exists():
        refused = _refused(control, "aicert-gate")
        if refused is not None:
            return refused
        if deadline is not None and time.monotonic() > deadline:
            print(
                f"aicert-gate: the node agent did not measure the inputs within {timeout:g} s",
                file=sys.stderr,
            )
            return GATE_TIMEOUT_EXIT
        time.sleep(POLL_SECONDS)
    print("aicert-gate: inputs measured; training may start", flush=True)
    return 0


def wait_seal(control: Path) -> int:
    print("aicert-seal: waiting for the node agent to certify the outputs", flush=True)
    while True:
        if (control / MARKER_SEALED).exists():
            print("aicert-seal: certified", flush=True)
            return 0
        refused = _refused(control, "aicert-seal")
        if refused is not None:
            return refused
        time.sleep(POLL_SECONDS)


WAITERS = {
    "gate": "wait until the agent measured the inputs (init container)",
    "seal": "wait until the agent certified the outputs (exit 3 if it refused)",
}


def add_waiter_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    parser.add_argument("--control", type=Path, required=True, help="the control volume's mount path")
    if action == "gate":
        parser.add_argument(
            "--timeout", type=float, default=None, metavar="SECONDS", help="give up (exit 4) after this long"
        )


def wait(action: str, args: argparse.Namespace) -> int:
    return wait_gate(args.control, args.timeout) if action == "gate" else wait_seal(args.control)


def waiter_main(argv: Sequence[str]) -> int:
    """`python -m aicert_agent gate|seal …` without loading the rest of the agent."""
    action, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog=f"aicert-agent {action}", description=WAITERS[action])
    add_waiter_arguments(parser, action)
    return wait(action, parser.parse_args(rest))
