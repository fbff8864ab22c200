"""The pure decision a restarted agent takes about its log and PCR."""

from __future__ import annotations

import hashlib

from aicert.tpm.pcrs import SHA256_ZERO, replay
from aicert_agent.measurement_log import Recovery, recovery_action

D = [hashlib.sha256(bytes([i])).digest() for i in range(3)]


def test_in_step() -> None:
    assert recovery_action(D, replay(D)) is Recovery.IN_STEP
    assert recovery_action([], SHA256_ZERO) is Recovery.IN_STEP


def test_crash_between_log_write_and_extend_is_completed() -> None:
    assert recovery_action(D, replay(D[:-1])) is Recovery.COMPLETE_LAST_EXTEND


def test_crash_between_new_epoch_and_reset() -> None:
    assert recovery_action([], replay(D)) is Recovery.RESET_EMPTY_EPOCH


def test_anything_else_is_a_mismatch() -> None:
    assert recovery_action(D, replay(D[:-2])) is Recovery.MISMATCH  # two behind: not ours to finish
    assert recovery_action(D, replay([*D, D[0]])) is Recovery.MISMATCH  # someone else extended
    assert recovery_action(D[:1], SHA256_ZERO[:-1] + b"\1") is Recovery.MISMATCH
