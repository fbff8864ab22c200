"""The node's append-only measurement log and its PCR.

The log is written ahead of the PCR: an entry is fsync'd to the log, then extended. So after a
crash at any point the log is either in step with the PCR or exactly one entry ahead, and
`recovery_action` (pure) decides how to get back in step without losing or repeating a
measurement. Anything else means something other than this agent touched the PCR, or the log
was lost: the agent refuses to certify until the log is re-based.

File format (JSON lines): a header `{"epoch", "pcr", "bank", "created"}`, then one entry a line
`{"seq", "digest", "type", "run", "content"}` with `digest = sha256(JCS(content))`. Re-basing
writes a new file with a new epoch (atomic rename) and then resets the PCR.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aicert.certificate import REDACTED
from aicert.events import event_digest
from aicert.tpm.pcrs import SHA256_ZERO, replay


class LogError(Exception):
    """The log cannot be used to certify; the message says why and what to do."""


class PcrDevice(Protocol):
    def pcr_read(self, indices: Sequence[int]) -> dict[int, bytes]: ...
    def pcr_extend(self, index: int, digest: bytes) -> None: ...
    def pcr_reset(self, index: int) -> None: ...


@dataclass(frozen=True)
class Entry:
    seq: int
    digest: bytes
    type: str
    run: str
    content: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest.hex(),
            "type": self.type,
            "run": self.run,
            "content": self.content,
        }

    def redacted(self) -> dict[str, Any]:
        return {"seq": self.seq, "digest": self.digest.hex(), "type": REDACTED}


class Recovery(enum.Enum):
    IN_STEP = "in-step"
    COMPLETE_LAST_EXTEND = "complete-last-extend"  # crashed between fsync and extend
    RESET_EMPTY_EPOCH = "reset-empty-epoch"  # crashed between writing a new epoch and resetting
    MISMATCH = "mismatch"


def recovery_action(digests: Sequence[bytes], pcr_value: bytes) -> Recovery:
    if replay(digests) == pcr_value:
        return Recovery.IN_STEP
    if digests and replay(digests[:-1]) == pcr_value:
        return Recovery.COMPLETE_LAST_EXTEND
    if not digests:
        return Recovery.RESET_EMPTY_EPOCH
    return Recovery.MISMATCH


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MeasurementLog:
    """One node's log for one PCR. Safe across threads and processes (flock)."""

    def __init__(self, path: Path, pcr: int) -> None:
        if pcr in (8, 14) or not 0 <= pcr <= 23:
            raise LogError(f"PCR {pcr} cannot be the measurement PCR; use a resettable one such as 23")
        self.path = path
        self.pcr = pcr
        self._lock = threading.RLock()
        # (inode, size, header, entries, valid length) of the last read: see _read
        self._cache: tuple[int, int, dict[str, Any] | None, tuple[Entry, ...], int] | None = None
        self._depth = 0  # re-entry by the thread holding _lock: flock is taken once

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the log and its PCR, across threads and processes; re-entrant."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    # --- reading -------------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, Any] | None, list[Entry], int]:
        """Header, entries, and the byte length of the valid prefix (a torn last line is dropped).

        Each entry is parsed and checked once: within an epoch the file only grows (a new epoch is a
        new file, recovery only truncates), so what was read before is kept, keyed by inode and
        size, and only the bytes appended since are read."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                cached = self._cache
                if cached is not None and cached[0] == st.st_ino and cached[1] == st.st_size:
                    return cached[2], list(cached[3]), cached[4]
                if cached is not None and cached[0] == st.st_ino and st.st_size > cached[4] == cached[1]:
                    f.seek(cached[4])
                    header, entries, valid = self._parse(f.read(), cached[2], list(cached[3]), cached[4])
                else:
                    header, entries, valid = self._parse(f.read(), None, [], 0)
        except FileNotFoundError:
            self._cache = None
            return None, [], 0
        self._cache = (st.st_ino, st.st_size, header, tuple(entries), valid)
        return header, entries, valid

    def _parse(
        self, data: bytes, header: dict[str, Any] | None, entries: list[Entry], offset: int
    ) -> tuple[dict[str, Any] | None, list[Entry], int]:
        lines = data.split(b"\n")
        valid = offset
        for index, line in enumerate(lines):
            complete = index < len(lines) - 1  # the text after the last newline was never finished
            if not line or not complete:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                line_number = 1 if header is None else len(entries) + 2
                raise LogError(f"{self.path}: line {line_number} is damaged; re-base the log") from None
            if header is None:
                header = obj
            else:
                entry = Entry(
                    obj["seq"], bytes.fromhex(obj["digest"]), obj["type"], obj["run"], obj["content"]
                )
                if entry.seq != len(entries) or event_digest(entry.content) != entry.digest:
                    raise LogError(f"{self.path}: entry {len(entries)} is inconsistent; re-base the log")
                entries.append(entry)
            valid += len(line) + 1
        return header, entries, valid

    def entries(self) -> list[Entry]:
        with self.locked():
            return self._read()[1]

    @property
    def epoch(self) -> str | None:
        with self.locked():  # _read keeps the parsed log: one reader at a time
            header = self._read()[0]
        return None if header is None else str(header["epoch"])

    # --- writing -------------------------------------------------------------------------

    def _write_new_epoch(self) -> str:
        epoch = uuid.uuid4().hex
        header = {"epoch": epoch, "pcr": self.pcr, "bank": "sha256"}
        tmp = self.path.with_name(self.path.name + ".new")
        with open(tmp, "wb") as f:
            f.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        return epoch

    def recover(self, tpm: PcrDevice) -> Recovery:
        """Bring log and PCR in step after a restart; LogError when they cannot be."""
        with self.locked():
            header, entries, valid = self._read()
            if header is None:
                self._write_new_epoch()
                header, entries, valid = self._read()
            elif header.get("pcr") != self.pcr:
                raise LogError(f"{self.path} is a log for PCR {header.get('pcr')}, not PCR {self.pcr}")
            with open(self.path, "r+b") as f:  # drop a torn last line: it was never extended
                if os.fstat(f.fileno()).st_size != valid:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            return self._bring_in_step(tpm, entries)

    def _bring_in_step(self, tpm: PcrDevice, entries: Sequence[Entry]) -> Recovery:
        """Complete an extend that did not happen (a crash, or a TPM error, after the fsync);
        LogError when the PCR and the log disagree otherwise. Call with the lock held."""
        value = tpm.pcr_read([self.pcr])[self.pcr]
        digests = [e.digest for e in entries]
        action = recovery_action(digests, value)
        if action is Recovery.COMPLETE_LAST_EXTEND:
            tpm.pcr_extend(self.pcr, digests[-1])
        elif action is Recovery.RESET_EMPTY_EPOCH:
            tpm.pcr_reset(self.pcr)
        elif action is Recovery.MISMATCH:
            raise LogError(
                f"PCR {self.pcr} is {value.hex()} but the log {self.path} replays to {replay(digests).hex()}: "
                "something other than the agent extended the PCR, or the log is not this boot's. "
                "Certificates are refused until the log is re-based (`aicert-agent rebase`) with no run in flight."
            )
        return action

    def rebase(self, tpm: PcrDevice) -> str:
        """Start a new epoch: a fresh log, then a reset PCR. Only when no run is in flight."""
        with self.locked():
            epoch = self._write_new_epoch()
            tpm.pcr_reset(self.pcr)
            if tpm.pcr_read([self.pcr])[self.pcr] != SHA256_ZERO:
                raise LogError(f"PCR {self.pcr} did not reset; it cannot serve as the measurement PCR")
            return epoch

    def append(self, tpm: PcrDevice, run: str, content: Mapping[str, Any]) -> Entry:
        """Log (fsync) then extend one measurement; returns the entry."""
        body = dict(content)
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ValueError("an event's content must carry its type")
        with self.locked():
            header, entries, valid = self._read()
            if header is None:
                raise LogError(f"{self.path} has no epoch; call recover() first")
            # An extend that failed after its entry was logged (TPM error) is completed now, before
            # the next measurement, not at the next restart.
            self._bring_in_step(tpm, entries)
            entry = Entry(len(entries), event_digest(body), kind, run, body)
            line = json.dumps(entry.to_json(), separators=(",", ":"), sort_keys=True).encode() + b"\n"
            with open(self.path, "r+b") as f:
                f.seek(valid)
                f.write(line)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
            tpm.pcr_extend(self.pcr, entry.digest)
            return entry


def certificate_log(entries: Sequence[Entry], run: str) -> list[dict[str, Any]]:
    """The epoch's entries as a certificate carries them: this run's in full, others redacted."""
    return [
        {"seq": e.seq, "digest": e.digest.hex(), "type": e.type, "content": e.content}
        if e.run == run
        else e.redacted()
        for e in entries
    ]
