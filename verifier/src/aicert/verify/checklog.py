"""The record of one verification: the plan, and how each of its checks ended, as it ended.

The plan is every check, in order (`Check`, the order of docs/verification.md; `BindingCheck` for
`kubectl aicert`'s resource checks). Each check records itself where it runs, just after the code
that establishes it: `log.passed(check)`; where the verifier decides that a check does not run, it
says why: `log.skipped(check, reason)`. A check that fails raises `VerificationError` (or, for the
binding checks, which all run and report every failure, `log.failed(check, reason)`).

What a verification reports is this record, never the plan less what was skipped: `finish` gives
the checks that passed and those skipped, and refuses a record in which a planned check neither
ran nor was skipped (`IncompleteVerification`, a failed verification). So a check that forgets to
record itself is never listed as passed, and the certificate does not verify.

    log = CheckLog(Check)
    ...
    path = build_path(...)
    log.passed(Check.AK_CHAIN)
    ...
    passed, skipped = log.finish()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Literal, TypeVar

import msgspec

from aicert.verify.errors import BindingCheck, Check, IncompleteVerification, VerificationError

CheckT = TypeVar("CheckT", Check, BindingCheck)
Status = Literal["passed", "skipped", "failed"]


class Outcome(msgspec.Struct, frozen=True):
    check: Check | BindingCheck
    status: Status
    reason: str = ""  # why it was skipped, or why it failed


class CheckLog(Generic[CheckT]):
    """The outcome of each check of `plan`, recorded as it runs."""

    def __init__(self, plan: Iterable[CheckT]) -> None:
        self.plan: tuple[CheckT, ...] = tuple(plan)
        self._outcomes: dict[CheckT, Outcome] = {}

    def passed(self, check: CheckT) -> None:
        """`check` ran and passed. Call it where the check's code has just established it."""
        self._record(check, "passed", "")

    def skipped(self, check: CheckT, reason: str) -> None:
        """`check` does not run, because of `reason` (shown to the user: say why in their words)."""
        if not reason.strip():
            raise IncompleteVerification(check, "was skipped without a reason")
        self._record(check, "skipped", reason)

    def failed(self, check: CheckT, reason: str) -> None:
        """`check` ran and failed. Whatever was recorded for it before, the failure stands."""
        self._outcomes[check] = Outcome(check, "failed", reason)

    def _record(self, check: CheckT, status: Status, reason: str) -> None:
        if check not in self.plan:
            raise IncompleteVerification(check, f"was recorded as {status} but is not in the plan")
        earlier = self._outcomes.get(check)
        if earlier is not None:
            raise IncompleteVerification(check, f"was recorded twice: {earlier.status}, then {status}")
        self._outcomes[check] = Outcome(check, status, reason)

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """What was recorded so far, in the plan's order."""
        return tuple(self._outcomes[c] for c in self.plan if c in self._outcomes)

    def finish(self) -> tuple[tuple[CheckT, ...], tuple[tuple[CheckT, str], ...]]:
        """The checks that passed, and those skipped with why, in the plan's order: once every
        planned check has done one or the other. Raises the first failure recorded
        (VerificationError), else IncompleteVerification naming the planned checks that neither
        ran nor were skipped."""
        for outcome in self._outcomes.values():  # in the order recorded, planned or not
            if outcome.status == "failed":
                raise VerificationError(outcome.check, outcome.reason)
        missing = [c for c in self.plan if c not in self._outcomes]
        if missing:
            others = f" (nor did {', '.join(missing[1:])})" if missing[1:] else ""
            raise IncompleteVerification(
                missing[0],
                f"neither ran nor was skipped{others}: the verifier did not account for it, so nothing "
                "is verified (a bug in aicert)",
            )
        passed = tuple(c for c in self.plan if self._outcomes[c].status == "passed")
        skipped = tuple(
            (c, self._outcomes[c].reason) for c in self.plan if self._outcomes[c].status == "skipped"
        )
        return passed, skipped
