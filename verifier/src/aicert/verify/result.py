"""What a successful verification established."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aicert.certificate import Assurance, Statement
from aicert.tpm.attest import ClockInfo
from aicert.verify.errors import Check


@dataclass(frozen=True)
class VerifiedTraining:
    format: Literal["aicert.dev/v1alpha1", "aicert-legacy"]
    assurance: Assurance
    statement: Statement | None  # None for old AICert proofs: they have no statement
    events: tuple[dict[str, Any], ...]  # the run's event contents, in log order
    ak_subject: str
    trust_root: str
    trust_source: str
    clock: ClockInfo
    passed: tuple[Check, ...]
    notes: tuple[str, ...] = field(default=())

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
            "notes": list(self.notes),
        }
