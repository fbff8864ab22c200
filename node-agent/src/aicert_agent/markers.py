"""The gate and seal containers: wait for the agent's marker files in the control volume.

`aicert-gate` exits 0 once the inputs are measured, SEAL_REFUSED_EXIT when the agent refused the
pod, GATE_TIMEOUT_EXIT when nothing happened within its timeout (a dead agent never holds a GPU
for ever); `aicert-seal` exits 0 once the certificate is in the resource's status, or
SEAL_REFUSED_EXIT with the agent's reason when it refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aicert.contract.markers import (
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
    """Write `path` whole or not at all (a hidden temporary file beside it, then a rename). The
    agent runs as root on the host and writes into volumes a training could have written: links
    are never followed (a stale temporary file is removed, not opened; the rename replaces a link
    at `path` itself, not what it points to)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(path)


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
