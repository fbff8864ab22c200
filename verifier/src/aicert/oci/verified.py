"""Which of a model's certificate referrers verifies: the one loop `aicert verify oci://…` and
`aicert pull` share. Each certificate is verified exactly as `aicert verify CERT --model DIR`
verifies it, the pulled weights re-hashed against the certified root; the first that verifies is
the answer, and what happened to the others is kept to be shown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aicert.oci.transfer import Referrer
from aicert.verify import MalformedError, VerificationError, VerifiedTraining, Verifier


@dataclass(frozen=True)
class Failed:
    referrer: str  # the certificate referrer's manifest digest
    check: str
    reason: str


@dataclass
class Attempts:
    """`verified`: the first referrer that verified and its result (None when none did)."""

    verified: tuple[Referrer, VerifiedTraining] | None = None
    failed: list[Failed] = field(default_factory=list)
    unusable: list[tuple[str, MalformedError]] = field(default_factory=list)
    not_tried: list[Referrer] = field(default_factory=list)

    def not_used(self) -> list[str]:
        """One line for each referrer that is not the result, saying why."""
        assert self.verified is not None
        lines = [f"{f.referrer}: check {f.check} failed" for f in self.failed]
        lines += [f"{digest}: unusable: {bad.field}: {bad.reason}" for digest, bad in self.unusable]
        lines += [f"{r.digest}: not tried, {self.verified[0].digest} verified" for r in self.not_tried]
        return lines


def first_verified(
    verifier: Verifier,
    referrers: Sequence[Referrer],
    model_dir: Path,
    *,
    shown_as: str,
    data_dirs: Mapping[str, Path] | None = None,
    at: dt.datetime | None = None,
    ignore: Iterable[str] = (),
) -> Attempts:
    """Verify each certificate against the weights in `model_dir` (named `shown_as` in reasons)
    until one verifies. A MalformedError of a flag (`--…`) is the same for every certificate: it is
    raised at once."""
    attempts = Attempts()
    for position, referrer in enumerate(referrers):
        try:
            result = verifier.verify(
                referrer.data, model_dir=model_dir, data_dirs=data_dirs, at=at, ignore=list(ignore)
            )
        except MalformedError as exc:
            if exc.field.startswith("--"):
                raise
            attempts.unusable.append((referrer.digest, exc))
            continue
        except VerificationError as exc:
            reason = exc.reason.replace(str(model_dir), shown_as)
            attempts.failed.append(Failed(referrer.digest, str(exc.check), reason))
            continue
        attempts.verified = (referrer, result)
        attempts.not_tried = list(referrers[position + 1 :])
        break
    return attempts
