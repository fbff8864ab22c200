"""What a verifier requires beyond a valid quote (step 8), loaded from `--policy FILE` (JSON), and
the checks that hold a verified run to it, each recorded in the verification's CheckLog as it
passes, or as skipped with why (aicert.verify.checklog)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from msgspec import Meta

from aicert.certificate import (
    ASSURANCE_ORDER,
    FormatError,
    ImageDigest,
    Model,
    PcrValues,
    VerifiedAssurance,
    convert,
)
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.jsonload import POLICY_MAX_BYTES, loads_strict, read_bounded_file

if TYPE_CHECKING:  # aicert.cvm loads only for a run verified at cvm
    from aicert.cvm import PlatformFacts

POLICY_CHECKS = (
    Check.POLICY_ASSURANCE,
    Check.POLICY_BOOT_PCRS,
    Check.POLICY_IMAGE,
    Check.POLICY_EGRESS,
    Check.POLICY_TCB,
    Check.POLICY_MEASUREMENT,
)
SecurityVersion = Annotated[int, Meta(ge=0, le=255)]
Measurement = Annotated[str, Meta(pattern=r"^[0-9a-f]{96}$(?!\n)")]  # SEV-SNP launch digest, SHA-384


class MinimumTcb(Model, frozen=True, kw_only=True):
    """The lowest security version of each AMD firmware component a cvm run may report (each
    compared on its own: the chip's reported TCB, which its VCEK certifies)."""

    bootloader: SecurityVersion = 0
    tee: SecurityVersion = 0
    snp: SecurityVersion = 0
    microcode: SecurityVersion = 0


class Policy(Model, frozen=True, kw_only=True):
    """minAssurance: lowest acceptable level (the trust root caps what can be claimed anyway);
    absent means any, `legacy` (old AICert proofs) included: `dev` or higher refuses old proofs.
    allowedImages: runtime image digests accepted; absent means any.
    bootPcrs: PCR index -> expected sha256 value, for PCRs 0-7 of the node's boot.
    egress: "none" requires that the agent found the training pod with no network egress.
    minimumTcb: for level cvm, the lowest AMD firmware security versions accepted.
    allowedMeasurements: for level cvm, the SEV-SNP launch measurements (96 lowercase hex digits)
    of the confidential VM images accepted. Either of the last two refuses every run below cvm."""

    minAssurance: VerifiedAssurance = "legacy"
    allowedImages: list[ImageDigest] | None = None
    bootPcrs: PcrValues | None = None
    egress: Literal["none"] | None = None
    minimumTcb: MinimumTcb | None = None
    allowedMeasurements: Annotated[list[Measurement], Meta(min_length=1)] | None = None

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


NO_POLICY = "no policy given"


def skip_policy(log: CheckLog[Check]) -> None:
    """Without a policy no policy check runs: each is recorded as skipped."""
    for check in POLICY_CHECKS:
        log.skipped(check, NO_POLICY)


def check_policy(
    policy: Policy,
    assurance: VerifiedAssurance,
    images: list[str],
    pcr_values: Mapping[int, bytes],
    egress: str | None,
    platform: PlatformFacts | None,
    log: CheckLog[Check],
) -> None:
    """Step 8: each check the policy asks for runs and records itself as it passes; each one it asks
    nothing of (its field absent, or `minAssurance` at the lowest level) is recorded as skipped.
    `egress`: what the agent recorded of the pod's network (None: nothing recorded);
    `platform`: the confidential VM's facts, for a run verified at level cvm (else None)."""
    if policy.minAssurance == "legacy":
        log.skipped(Check.POLICY_ASSURANCE, "the policy accepts any assurance")
    else:
        if ASSURANCE_ORDER[assurance] < ASSURANCE_ORDER[policy.minAssurance]:
            raise VerificationError(
                Check.POLICY_ASSURANCE,
                f"the run has assurance {assurance}; the policy requires {policy.minAssurance}",
            )
        log.passed(Check.POLICY_ASSURANCE)  # (8)
    if not policy.bootPcrs:
        log.skipped(Check.POLICY_BOOT_PCRS, "the policy pins no boot PCRs")
    else:
        for index, wanted in sorted(policy.bootPcrs.items(), key=lambda kv: int(kv[0])):
            quoted = pcr_values.get(int(index))
            if quoted is None or quoted.hex() != wanted:
                shown = quoted.hex() if quoted else "not quoted"
                raise VerificationError(
                    Check.POLICY_BOOT_PCRS, f"PCR {index} is {shown}; the policy pins {wanted}"
                )
        log.passed(Check.POLICY_BOOT_PCRS)  # (8)
    if policy.allowedImages is None:
        log.skipped(Check.POLICY_IMAGE, "the policy lists no allowedImages")
    else:
        if not images:
            raise VerificationError(
                Check.POLICY_IMAGE, "the run records no container image; the policy lists allowed images"
            )
        for image in images:
            if image not in policy.allowedImages:
                raise VerificationError(
                    Check.POLICY_IMAGE, f"image {image} is not among the policy's allowed images"
                )
        log.passed(Check.POLICY_IMAGE)  # (8)
    if policy.egress is None:
        log.skipped(Check.POLICY_EGRESS, "the policy sets no egress")
    else:
        if egress != policy.egress:
            found = "records no network isolation" if egress is None else f"had network egress {egress!r}"
            raise VerificationError(
                Check.POLICY_EGRESS, f"the run {found}; the policy requires egress {policy.egress}"
            )
        log.passed(Check.POLICY_EGRESS)  # (8)
    _check_platform_policy(policy, assurance, platform, log)


def _check_platform_policy(
    policy: Policy, assurance: VerifiedAssurance, platform: PlatformFacts | None, log: CheckLog[Check]
) -> None:
    if policy.minimumTcb is None:
        log.skipped(Check.POLICY_TCB, "the policy sets no minimumTcb")
    else:
        from aicert.cvm import TcbVersion, tcb_at_least

        if platform is None:
            raise VerificationError(
                Check.POLICY_TCB,
                f"the run has assurance {assurance}, with no SEV-SNP report; the policy sets minimumTcb",
            )
        wanted = policy.minimumTcb
        minimum = TcbVersion(wanted.bootloader, wanted.tee, wanted.snp, wanted.microcode)
        if below := tcb_at_least(platform.reported_tcb, minimum):
            raise VerificationError(
                Check.POLICY_TCB,
                f"the chip reports TCB {platform.reported_tcb}: {', '.join(below)} below the policy's "
                f"minimumTcb {minimum}",
            )
        log.passed(Check.POLICY_TCB)  # (8)
    if policy.allowedMeasurements is None:
        log.skipped(Check.POLICY_MEASUREMENT, "the policy lists no allowedMeasurements")
    else:
        from aicert.cvm import measurement_allowed

        if platform is None:
            raise VerificationError(
                Check.POLICY_MEASUREMENT,
                f"the run has assurance {assurance}, with no SEV-SNP report; the policy lists "
                "allowedMeasurements",
            )
        if not measurement_allowed(platform.measurement, policy.allowedMeasurements):
            raise VerificationError(
                Check.POLICY_MEASUREMENT,
                f"the launch measurement {platform.measurement} is not among the policy's allowedMeasurements",
            )
        log.passed(Check.POLICY_MEASUREMENT)  # (8)
