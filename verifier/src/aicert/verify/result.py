"""What a successful verification established."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from aicert.certificate import Statement, VerifiedAssurance
from aicert.tpm.attest import ClockInfo
from aicert.verify.errors import BindingCheck, Check

IGNORED_SHOWN: Final = 20  # file names listed per directory; `count` says how many there were


class IgnoredFiles(msgspec.Struct, frozen=True):
    """Local files that `--ignore` left out of a comparison (model-files, data-files): they were
    neither hashed nor compared, so the verification says nothing about them."""

    check: Check
    directory: str
    count: int  # how many files were left out
    files: tuple[str, ...]  # the first IGNORED_SHOWN of them, sorted (paths relative to `directory`)

    @classmethod
    def of(cls, check: Check, directory: Path, paths: Collection[str]) -> tuple[IgnoredFiles, ...]:
        """One entry for `directory`, none when nothing was left out."""
        if not paths:
            return ()
        return (cls(check, str(directory), len(paths), tuple(sorted(paths)[:IGNORED_SHOWN])),)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": str(self.check),
            "directory": self.directory,
            "count": self.count,
            "files": list(self.files),
        }


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
    ignored: tuple[IgnoredFiles, ...] = ()  # local files --ignore left out of model-files, data-files

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
            "ignored": [entry.to_json() for entry in self.ignored],
            "notes": list(self.notes),
        }
