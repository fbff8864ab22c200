"""The agent's side of checkpoints: every entry is quoted right after its extend, whatever stops the
agent in between; a re-seal gives the same certificate; a log of the agent before checkpoints still
certifies its runs (as a whole epoch); the agent never hands out a log a verifier refuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from tests.soft_node import PCR, SoftNode, manifest, soft_node
from tests.soft_tpm import SoftQuote, SoftTpm

from aicert.events import event_digest
from aicert.verify import Check
from aicert_agent.measurement_log import Entry, LogError, MeasurementLog, Recovery
from aicert_agent.recorder import SealError


class QuoteFails(SoftTpm):
    """A TPM whose next quote raises (the agent killed, or a TPM error, after the extend)."""

    failing = False

    def quote(self, pcrs: Any, extra_data: bytes) -> SoftQuote:
        if self.failing:
            self.failing = False
            raise KeyboardInterrupt("agent killed after the extend")
        return super().quote(pcrs, extra_data)


class SlowClock(SoftTpm):
    """A TPM whose clock moves only every third quote (quotes within one millisecond)."""

    quotes = 0

    def quote(self, pcrs: Any, extra_data: bytes) -> SoftQuote:
        self.quotes += 1
        if self.quotes % 3:
            self.clock -= 1
        return super().quote(pcrs, extra_data)


class StoppedClock(SoftTpm):
    def quote(self, pcrs: Any, extra_data: bytes) -> SoftQuote:
        self.clock -= 1
        return super().quote(pcrs, extra_data)


class Racing(SoftTpm):
    """Something else extends the PCR between the agent's extend and its quote."""

    def quote(self, pcrs: Any, extra_data: bytes) -> SoftQuote:
        self.pcr_extend(PCR, b"\x66" * 32)
        return super().quote(pcrs, extra_data)


def checkpoint_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if '"checkpoint"' in line]


def test_a_reseal_gives_the_same_certificate_whatever_was_measured_since(tmp_path: Path) -> None:
    node = soft_node(tmp_path)
    first = node.certify("run-1", foreign_between=2)
    node.foreign(20)
    again = node.recorder("run-1").seal(assurance="dev", ak=node.ak)
    assert again == first
    node.verify(again)


def test_a_crash_before_the_checkpoint_is_completed_by_recovery(tmp_path: Path) -> None:
    node = soft_node(tmp_path, QuoteFails)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    assert isinstance(node.tpm, QuoteFails)
    node.tpm.failing = True
    with pytest.raises(KeyboardInterrupt):
        rec.input("data", manifest("data"))
    assert len(checkpoint_lines(node.log.path)) == 1  # the input was extended, never quoted
    restarted = MeasurementLog(node.log.path, PCR)
    assert restarted.recover(node.tpm) is Recovery.IN_STEP
    assert [c["checkpoint"] for c in checkpoint_lines(node.log.path)] == [0, 1]
    assert restarted.recover(node.tpm) is Recovery.IN_STEP  # taken once
    assert len(checkpoint_lines(node.log.path)) == 2
    rec.output("model", manifest("model"))
    node.verify(rec.seal(assurance="dev", ak=node.ak))


def test_a_failed_checkpoint_is_taken_before_the_next_measurement(tmp_path: Path) -> None:
    node = soft_node(tmp_path, QuoteFails)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    assert isinstance(node.tpm, QuoteFails)
    node.tpm.failing = True
    with pytest.raises(KeyboardInterrupt):
        rec.input("data", manifest("data"))
    node.foreign(1)  # another run's append takes it first
    assert [c["checkpoint"] for c in checkpoint_lines(node.log.path)] == [0, 1, 2]
    rec.output("model", manifest("model"))
    node.verify(rec.seal(assurance="dev", ak=node.ak))


def test_a_seal_whose_quote_failed_is_sealed_again_with_its_checkpoint(tmp_path: Path) -> None:
    """The seal's checkpoint is the final quote: a TPM error there leaves the seal logged and
    extended; sealing again (the agent retries the step) takes it, and certifies as checkpointed."""
    node = soft_node(tmp_path, QuoteFails)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    rec.output("model", manifest("model"))
    assert isinstance(node.tpm, QuoteFails)
    node.tpm.failing = True
    with pytest.raises(KeyboardInterrupt):
        rec.seal(assurance="dev", ak=node.ak)
    certificate = rec.seal(assurance="dev", ak=node.ak)
    assert certificate["evidence"]["eventLogFormat"] == "checkpointed"
    assert Check.LOG_CLOCK in node.verify(certificate).passed


def test_a_crash_before_the_extend_is_extended_and_checkpointed(tmp_path: Path) -> None:
    node = soft_node(tmp_path)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    content = {"type": "aicert.input", "run": "run-1", "salt": rec.salt, "name": "d"}
    content |= {"root": "0" * 64, "files": 0, "bytes": 0}
    entries = node.log.entries()
    logged = Entry(
        1, event_digest(content), "aicert.input", "run-1", content, entries[0].checkpoint.pcr_values[PCR]
    )  # type: ignore[union-attr]
    with open(node.log.path, "ab") as f:  # fsync'd, then the agent died
        f.write(json.dumps(logged.to_json()).encode() + b"\n")
    assert MeasurementLog(node.log.path, PCR).recover(node.tpm) is Recovery.COMPLETE_LAST_EXTEND
    assert [c["checkpoint"] for c in checkpoint_lines(node.log.path)] == [0, 1]
    rec.output("model", manifest("model"))
    node.verify(rec.seal(assurance="dev", ak=node.ak))


def test_quotes_wait_for_the_tpm_clock_to_move(tmp_path: Path) -> None:
    node = soft_node(tmp_path, SlowClock)
    node.verify(node.certify("run-1", foreign_between=1))


def test_a_tpm_clock_that_does_not_move_refuses_the_measurement(tmp_path: Path) -> None:
    node = soft_node(tmp_path, StoppedClock)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    with pytest.raises(LogError, match="the TPM clock did not move past"):
        rec.input("data", manifest("data"))


def test_a_foreign_extend_before_the_checkpoint_is_refused(tmp_path: Path) -> None:
    node = soft_node(tmp_path, Racing)
    with pytest.raises(LogError, match="something other than the agent extended the PCR"):
        node.recorder("run-1").begin(node="node-1", name="a", attempt=0, spec={})


def test_a_run_across_a_tpm_restart_is_refused_not_certified(tmp_path: Path) -> None:
    """The PCRs survive a TPM resume (restartCount + 1), the log stays in step: but the run's
    checkpoints are of two TPM restarts and no verifier would accept its certificate."""
    node = soft_node(tmp_path)
    rec = node.recorder("run-1")
    rec.begin(node="node-1", name="a", attempt=0, spec={})
    rec.input("data", manifest("data"))
    node.tpm.restart_count += 1
    rec.output("model", manifest("model"))
    with pytest.raises(SealError, match=f"{Check.LOG_CLOCK}: entry seq 0 .*: in another boot or TPM restart"):
        rec.seal(assurance="dev", ak=node.ak)


# --- a log written by the agent before checkpoints ----------------------------------------------------


def old_agent_append(node: SoftNode, run: str, content: dict[str, Any]) -> None:
    """What the agent before checkpoints did: log (no pcrBefore), extend, no quote."""
    entry = Entry(len(node.log.entries()), event_digest(content), content["type"], run, content)
    with open(node.log.path, "ab") as f:
        f.write(json.dumps(entry.to_json(), separators=(",", ":"), sort_keys=True).encode() + b"\n")
    node.tpm.pcr_extend(PCR, entry.digest)


def test_a_run_begun_before_the_upgrade_gets_a_whole_epoch_certificate(tmp_path: Path) -> None:
    node = soft_node(tmp_path)
    old = node.recorder("run-old")
    run_event = {"type": "aicert.run", "run": "run-old", "salt": old.salt, "node": "node-1"}
    run_event |= {"startedOn": "2026-01-01T00:00:00Z", "name": "old", "attempt": 0, "spec": {}}
    old_agent_append(node, "run-old", run_event)
    old_agent_append(node, "foreign", {"type": "aicert.run", "run": "foreign", "salt": "ff" * 16})
    upgraded = MeasurementLog(node.log.path, PCR)  # the new agent starts on the old log
    assert upgraded.recover(node.tpm) is Recovery.IN_STEP
    node.log = upgraded
    old.log = upgraded
    new = node.certify("run-new", foreign_between=1)
    old.input("data", manifest("data"))
    old.output("model", manifest("model"))
    old_certificate = old.seal(assurance="dev", ak=node.ak)
    node.foreign(2)  # measured after the old run's seal: not in its certificate, sealed again
    assert old.seal(assurance="dev", ak=node.ak) == old_certificate
    assert new["evidence"]["eventLogFormat"] == "checkpointed"
    assert "eventLogFormat" not in old_certificate["evidence"]
    log = old_certificate["evidence"]["eventLog"]
    assert [e["seq"] for e in log] == list(range(len(log))) and log[-1]["type"] == "aicert.seal"
    assert Check.EVENT_REPLAY in node.verify(old_certificate).passed
    assert Check.LOG_CLOCK in node.verify(new).passed


# --- a damaged log ------------------------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _drop_first_checkpoint(lines: list[dict[str, Any]]) -> None:
    lines.pop(2)


def _checkpoint_of_nothing(lines: list[dict[str, Any]]) -> None:
    lines.insert(2, copy.deepcopy(lines[2]))


def _other_pcr_before(lines: list[dict[str, Any]]) -> None:
    lines[3]["pcrBefore"] = "00" * 32


def _unreadable_quote(lines: list[dict[str, Any]]) -> None:
    lines[2]["attest"] = "not base64!"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_first_checkpoint, "entry 0 has no checkpoint"),
        (_checkpoint_of_nothing, "is a checkpoint of no entry awaiting one"),
        (_other_pcr_before, "entry 1's pcrBefore is not the log replayed"),
        (_unreadable_quote, "the line after entry 0 is damaged"),
    ],
    ids=["checkpoint missing", "checkpoint of nothing", "pcrBefore", "unreadable quote"],
)
def test_a_damaged_log_is_refused(tmp_path: Path, damage: Any, message: str) -> None:
    node = soft_node(tmp_path)
    node.foreign(2)
    lines = _lines(node.log.path)
    damage(lines)
    _write(node.log.path, lines)
    with pytest.raises(LogError, match=message):
        MeasurementLog(node.log.path, PCR).recover(node.tpm)
