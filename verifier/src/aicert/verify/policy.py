"""What a verifier requires beyond a valid quote (step 8), loaded from `--policy FILE` (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from aicert.certificate import FormatError, ImageDigest, Model, PcrValues, VerifiedAssurance, convert
from aicert.verify.errors import Check, MalformedError
from aicert.verify.jsonload import POLICY_MAX_BYTES, loads_strict, read_bounded_file

POLICY_CHECKS = (
    Check.POLICY_ASSURANCE,
    Check.POLICY_BOOT_PCRS,
    Check.POLICY_IMAGE,
    Check.POLICY_EGRESS,
    Check.POLICY_TCB,
    Check.POLICY_MEASUREMENT,
)


class Policy(Model, frozen=True, kw_only=True):
    """minAssurance: lowest acceptable level (the trust root caps what can be claimed anyway);
    absent means any, `legacy` (old AICert proofs) included: `dev` or higher refuses old proofs.
    allowedImages: runtime image digests accepted; absent means any.
    bootPcrs: PCR index -> expected sha256 value, for PCRs 0-7 of the node's boot.
    egress: "none" requires that the agent found the training pod with no network egress."""

    minAssurance: VerifiedAssurance = "legacy"
    allowedImages: list[ImageDigest] | None = None
    bootPcrs: PcrValues | None = None
    egress: Literal["none"] | None = None

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        """A regular file of at most 1 MiB holding strict JSON (no duplicate keys: jsonload)."""
        data = loads_strict(
            read_bounded_file(path, limit=POLICY_MAX_BYTES, field="--policy"),
            what=f"the policy {path}",
            field="policy",
            max_bytes=POLICY_MAX_BYTES,
        )
        try:
            return convert(data, cls, prefix="policy.")
        except FormatError as exc:
            raise MalformedError(exc.field, exc.reason) from None


def unchecked(policy: Policy | None) -> tuple[tuple[Check, str], ...]:
    """The policy checks that do not run, and why: all of them without a policy, and each one
    the policy asks nothing of (its field absent, or `minAssurance` at the lowest level)."""
    if policy is None:
        return tuple((check, "no policy given") for check in POLICY_CHECKS)
    skipped: list[tuple[Check, str]] = []
    if policy.minAssurance == "legacy":
        skipped.append((Check.POLICY_ASSURANCE, "the policy accepts any assurance"))
    if not policy.bootPcrs:
        skipped.append((Check.POLICY_BOOT_PCRS, "the policy pins no boot PCRs"))
    if policy.allowedImages is None:
        skipped.append((Check.POLICY_IMAGE, "the policy lists no allowedImages"))
    if policy.egress is None:
        skipped.append((Check.POLICY_EGRESS, "the policy sets no egress"))
    skipped.append((Check.POLICY_TCB, "the policy sets no minimumTcb"))
    skipped.append((Check.POLICY_MEASUREMENT, "the policy lists no allowedMeasurements"))
    return tuple(skipped)
