"""What a successful verification established."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from aicert.certificate import Statement, VerifiedAssurance
from aicert.tpm.attest import ClockInfo
from aicert.verify.errors import BindingCheck, Check


class VerifiedTraining(msgspec.Struct, frozen=True):
    format: Literal["aicert.dev/v1alpha1", "aicert-legacy"]
    assurance: VerifiedAssurance
    statement: Statement | None  # None for old AICert proofs: they have no statement
    events: tuple[dict[str, Any], ...]  # the run's event contents, in log order
    ak_subject: str
    trust_root: str
    trust_source: str
    clock: ClockInfo
    # the checks that ran and passed, in the plan's order, as each recorded itself where it ran
    # (aicert.verify.checklog); `kubectl aicert verify` adds its resource checks after them
    passed: tuple[Check | BindingCheck, ...]
    notes: tuple[str, ...] = ()
    # the checks that did not run, and why (no policy, no --model, not in an old proof's format),
    # as recorded where that was decided: a verified certificate proves nothing about them
    skipped: tuple[tuple[Check, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "format": self.format,
            "assurance": self.assurance,
            "statement": self.statement.to_json() if self.statement else None,
            "events": list(self.events) if self.statement is None else None,
            "ak": {"subject": self.ak_subject, "root": self.trust_root, "trustSource": self.trust_source},
            "quote": {
                "clock": self.clock.clock,
                "resetCount": self.clock.reset_count,
                "restartCount": self.clock.restart_count,
            },
            "checks": [str(c) for c in self.passed],
            "skipped": [{"check": str(c), "reason": reason} for c, reason in self.skipped],
            "notes": list(self.notes),
        }
