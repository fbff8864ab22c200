"""The node's append-only measurement log and its PCR.

The log is written ahead of the PCR: an entry is fsync'd to the log, then extended. So after a
crash at any point the log is either in step with the PCR or exactly one entry ahead, and
`recovery_action` (pure) decides how to get back in step without losing or repeating a
measurement. Anything else means something other than this agent touched the PCR, or the log
was lost: the agent refuses to certify until the log is re-based.

Right after each extend, still under the lock, the agent quotes the PCR (a *checkpoint*,
aicert_agent.checkpoints) and logs the quote on the line after the entry. A crash between the
extend and that line leaves the last entry without its checkpoint: recovery, or the next append,
takes it before anything else is extended, so the PCR still holds the entry's value.

File format (JSON lines): a header `{"epoch", "pcr", "bank"}`, then one entry a line
`{"seq", "digest", "type", "run", "content", "pcrBefore"}` with `digest = sha256(JCS(content))`
and `pcrBefore` the PCR's value before the entry's extend, each followed by its checkpoint
`{"checkpoint": seq, "attest", "signature", "pcrs"}`. Entries logged by an agent before
checkpoints have neither `pcrBefore` nor a checkpoint; a run with such an entry gets a certificate
with the whole epoch (aicert_agent.evidence_log). Re-basing writes a new file with a new epoch
(atomic rename) and then resets the PCR.
"""

from __future__ import annotations

import binascii
import enum
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aicert.certificate import REDACTED
from aicert.events import event_digest
from aicert.tpm.attest import ClockInfo
from aicert.tpm.pcrs import SHA256_ZERO, extend, replay
from aicert.tpm.reader import StructureError
from aicert_agent.checkpoints import Checkpoint, CheckpointError, PcrDevice, QuotingDevice, take_checkpoint


class LogError(Exception):
    """The log cannot be used to certify; the message says why and what to do."""


@dataclass(frozen=True)
class Entry:
    seq: int
    digest: bytes
    type: str
    run: str
    content: dict[str, Any]
    pcr_before: bytes | None = None  # None: logged by an agent before checkpoints
    checkpoint: Checkpoint | None = None  # None: as pcr_before, or the agent stopped before taking it

    def to_json(self) -> dict[str, Any]:
        line = {
            "seq": self.seq,
            "digest": self.digest.hex(),
            "type": self.type,
            "run": self.run,
            "content": self.content,
        }
        if self.pcr_before is not None:
            line["pcrBefore"] = self.pcr_before.hex()
        return line

    def redacted(self) -> dict[str, Any]:
        return {"seq": self.seq, "digest": self.digest.hex(), "type": REDACTED}


class Recovery(enum.Enum):
    IN_STEP = "in-step"
    COMPLETE_LAST_EXTEND = "complete-last-extend"  # crashed between fsync and extend
    RESET_EMPTY_EPOCH = "reset-empty-epoch"  # crashed between writing a new epoch and resetting
    MISMATCH = "mismatch"


def recovery_action(digests: Sequence[bytes], pcr_value: bytes) -> Recovery:
    before_last = replay(digests[:-1]) if digests else None
    return recovery_for(replay(digests), before_last, pcr_value)


def recovery_for(replayed: bytes, before_last: bytes | None, pcr_value: bytes) -> Recovery:
    """`replayed`: the log replayed; `before_last`: replayed without its last entry (None: empty)."""
    if replayed == pcr_value:
        return Recovery.IN_STEP
    if before_last is not None and before_last == pcr_value:
        return Recovery.COMPLETE_LAST_EXTEND
    if before_last is None:
        return Recovery.RESET_EMPTY_EPOCH
    return Recovery.MISMATCH


@dataclass(frozen=True)
class _Snapshot:
    """The log as read: header, entries, the byte length of its valid prefix, and the PCR value its
    entries replay to (and replayed to before the last one)."""

    header: dict[str, Any] | None
    entries: tuple[Entry, ...]
    valid: int
    replayed: bytes = SHA256_ZERO
    before_last: bytes | None = None


def _last_clock(entries: Sequence[Entry]) -> ClockInfo | None:
    """The clock of the latest checkpoint in `entries`."""
    return next((e.checkpoint.clock for e in reversed(entries) if e.checkpoint is not None), None)


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
        self._cache: tuple[int, int, _Snapshot] | None = None  # (inode, size, what was read): see _read
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

    def _read(self) -> _Snapshot:
        """The log as it is (a torn last line is left out of the valid prefix).

        Each line is parsed and checked once: within an epoch the file only grows (a new epoch is a
        new file, recovery only truncates), so what was read before is kept, keyed by inode and
        size, and only the bytes appended since are read."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                cached = self._cache
                if cached is not None and cached[0] == st.st_ino and cached[1] == st.st_size:
                    return cached[2]
                if (
                    cached is not None
                    and cached[0] == st.st_ino
                    and st.st_size > cached[2].valid == cached[1]
                ):
                    f.seek(cached[2].valid)
                    snapshot = self._parse(f.read(), cached[2])
                else:
                    snapshot = self._parse(f.read(), _Snapshot(None, (), 0))
        except FileNotFoundError:
            self._cache = None
            return _Snapshot(None, (), 0)
        self._cache = (st.st_ino, st.st_size, snapshot)
        return snapshot

    def _parse(self, data: bytes, start: _Snapshot) -> _Snapshot:
        header, entries, valid = start.header, list(start.entries), start.valid
        replayed, before_last = start.replayed, start.before_last
        lines = data.split(b"\n")
        for index, line in enumerate(lines):
            complete = index < len(lines) - 1  # the text after the last newline was never finished
            if not line or not complete:
                break
            where = (
                f"{self.path}: the line after entry {len(entries) - 1}" if entries else f"{self.path}: line 1"
            )
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise TypeError("not a JSON object")
                if header is None:
                    header = obj
                elif "checkpoint" in obj:
                    entries[-1] = self._with_checkpoint(entries, obj, where)
                else:
                    entry = self._entry(entries, obj, replayed, where)
                    entries.append(entry)
                    replayed, before_last = extend(replayed, entry.digest), replayed
            except (ValueError, KeyError, TypeError, IndexError, binascii.Error, StructureError):
                raise LogError(f"{where} is damaged; re-base the log") from None
            valid += len(line) + 1
        return _Snapshot(header, tuple(entries), valid, replayed, before_last)

    def _entry(self, entries: list[Entry], obj: dict[str, Any], replayed: bytes, where: str) -> Entry:
        before = obj.get("pcrBefore")
        entry = Entry(
            obj["seq"],
            bytes.fromhex(obj["digest"]),
            obj["type"],
            obj["run"],
            obj["content"],
            None if before is None else bytes.fromhex(before),
        )
        if entry.seq != len(entries) or event_digest(entry.content) != entry.digest:
            raise LogError(f"{self.path}: entry {len(entries)} is inconsistent; re-base the log")
        if entry.pcr_before is not None and entry.pcr_before != replayed:
            raise LogError(
                f"{self.path}: entry {entry.seq}'s pcrBefore is not the log replayed; re-base the log"
            )
        if entries and entries[-1].pcr_before is not None and entries[-1].checkpoint is None:
            raise LogError(f"{self.path}: entry {entry.seq - 1} has no checkpoint; re-base the log")
        return entry

    def _with_checkpoint(self, entries: list[Entry], obj: dict[str, Any], where: str) -> Entry:
        last = entries[-1]
        if obj["checkpoint"] != last.seq or last.pcr_before is None or last.checkpoint is not None:
            raise LogError(f"{where} is a checkpoint of no entry awaiting one; re-base the log")
        checkpoint = Checkpoint.from_json(obj)
        checkpoint.clock  # noqa: B018 - a checkpoint whose quote cannot be read is damaged
        return replace(last, checkpoint=checkpoint)

    def entries(self) -> list[Entry]:
        with self.locked():
            return list(self._read().entries)

    @property
    def epoch(self) -> str | None:
        with self.locked():  # _read keeps the parsed log: one reader at a time
            header = self._read().header
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

    def _write_line(self, offset: int, obj: Mapping[str, Any]) -> int:
        """Write `obj` as the line at `offset` (dropping anything after it) and fsync; its length."""
        line = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(line)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return len(line)

    def recover(self, tpm: QuotingDevice) -> Recovery:
        """Bring log and PCR in step after a restart; LogError when they cannot be."""
        with self.locked():
            snapshot = self._read()
            if snapshot.header is None:
                self._write_new_epoch()
                snapshot = self._read()
            elif snapshot.header.get("pcr") != self.pcr:
                raise LogError(
                    f"{self.path} is a log for PCR {snapshot.header.get('pcr')}, not PCR {self.pcr}"
                )
            with open(self.path, "r+b") as f:  # drop a torn last line: it was never extended
                if os.fstat(f.fileno()).st_size != snapshot.valid:
                    f.truncate(snapshot.valid)
                    os.fsync(f.fileno())
            return self._bring_in_step(tpm, snapshot)

    def _bring_in_step(self, tpm: QuotingDevice, snapshot: _Snapshot) -> Recovery:
        """Complete an extend that did not happen (a crash, or a TPM error, after the fsync) and the
        last entry's checkpoint if it was not taken; LogError when the PCR and the log disagree
        otherwise. Call with the lock held."""
        value = tpm.pcr_read([self.pcr])[self.pcr]
        entries = snapshot.entries
        action = recovery_for(snapshot.replayed, snapshot.before_last, value)
        if action is Recovery.COMPLETE_LAST_EXTEND:
            tpm.pcr_extend(self.pcr, entries[-1].digest)
        elif action is Recovery.RESET_EMPTY_EPOCH:
            tpm.pcr_reset(self.pcr)
        elif action is Recovery.MISMATCH:
            raise LogError(
                f"PCR {self.pcr} is {value.hex()} but the log {self.path} replays to {snapshot.replayed.hex()}: "
                "something other than the agent extended the PCR, or the log is not this boot's. "
                "Certificates are refused until the log is re-based (`aicert-agent rebase`) with no run in flight."
            )
        if entries and entries[-1].pcr_before is not None and entries[-1].checkpoint is None:
            checkpoint = self._checkpoint(tpm, entries[-1], entries[:-1])
            self._write_line(snapshot.valid, checkpoint.to_json(entries[-1].seq))
        return action

    def catch_up(self, tpm: QuotingDevice) -> None:
        """Complete an extend or a checkpoint that a TPM error left undone (as `append` does first)."""
        with self.locked():
            snapshot = self._read()
            if snapshot.header is None:
                raise LogError(f"{self.path} has no epoch; call recover() first")
            self._bring_in_step(tpm, snapshot)

    def _checkpoint(self, tpm: QuotingDevice, entry: Entry, earlier: Sequence[Entry]) -> Checkpoint:
        assert entry.pcr_before is not None
        try:
            return take_checkpoint(
                tpm,
                self.pcr,
                kind=entry.type,
                content=entry.content,
                digest=entry.digest,
                pcr_before=entry.pcr_before,
                after=_last_clock(earlier),
            )
        except CheckpointError as exc:
            raise LogError(f"entry {entry.seq} of {self.path}: {exc}") from None

    def rebase(self, tpm: PcrDevice) -> str:
        """Start a new epoch: a fresh log, then a reset PCR. Only when no run is in flight."""
        with self.locked():
            epoch = self._write_new_epoch()
            tpm.pcr_reset(self.pcr)
            if tpm.pcr_read([self.pcr])[self.pcr] != SHA256_ZERO:
                raise LogError(f"PCR {self.pcr} did not reset; it cannot serve as the measurement PCR")
            return epoch

    def append(self, tpm: QuotingDevice, run: str, content: Mapping[str, Any]) -> Entry:
        """Log (fsync) then extend one measurement, then checkpoint it; returns the entry."""
        body = dict(content)
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ValueError("an event's content must carry its type")
        with self.locked():
            snapshot = self._read()
            if snapshot.header is None:
                raise LogError(f"{self.path} has no epoch; call recover() first")
            # An extend or checkpoint that failed after its entry was logged (TPM error) is
            # completed now, before the next measurement, not at the next restart.
            self._bring_in_step(tpm, snapshot)
            snapshot = self._read()
            entry = Entry(len(snapshot.entries), event_digest(body), kind, run, body, snapshot.replayed)
            length = self._write_line(snapshot.valid, entry.to_json())
            tpm.pcr_extend(self.pcr, entry.digest)
            checkpoint = self._checkpoint(tpm, entry, snapshot.entries)
            self._write_line(snapshot.valid + length, checkpoint.to_json(entry.seq))
            return replace(entry, checkpoint=checkpoint)
