"""What a verifier requires beyond a valid quote (step 8), loaded from `--policy FILE` (JSON), and
the checks that hold a verified run to it."""

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
    if policy.minimumTcb is None:
        skipped.append((Check.POLICY_TCB, "the policy sets no minimumTcb"))
    if policy.allowedMeasurements is None:
        skipped.append((Check.POLICY_MEASUREMENT, "the policy lists no allowedMeasurements"))
    return tuple(skipped)


def check_policy(
    policy: Policy,
    assurance: VerifiedAssurance,
    images: list[str],
    pcr_values: Mapping[int, bytes],
    egress: str | None,
    platform: PlatformFacts | None,
) -> None:
    """`egress`: what the agent recorded of the pod's network (None: nothing recorded);
    `platform`: the confidential VM's facts, for a run verified at level cvm (else None)."""
    if ASSURANCE_ORDER[assurance] < ASSURANCE_ORDER[policy.minAssurance]:
        raise VerificationError(
            Check.POLICY_ASSURANCE,
            f"the run has assurance {assurance}; the policy requires {policy.minAssurance}",
        )
    for index, wanted in sorted((policy.bootPcrs or {}).items(), key=lambda kv: int(kv[0])):
        quoted = pcr_values.get(int(index))
        if quoted is None or quoted.hex() != wanted:
            shown = quoted.hex() if quoted else "not quoted"
            raise VerificationError(
                Check.POLICY_BOOT_PCRS, f"PCR {index} is {shown}; the policy pins {wanted}"
            )
    if policy.allowedImages is not None:
        if not images:
            raise VerificationError(
                Check.POLICY_IMAGE, "the run records no container image; the policy lists allowed images"
            )
        for image in images:
            if image not in policy.allowedImages:
                raise VerificationError(
                    Check.POLICY_IMAGE, f"image {image} is not among the policy's allowed images"
                )
    if policy.egress == "none" and egress != "none":
        found = "records no network isolation" if egress is None else f"had network egress {egress!r}"
        raise VerificationError(Check.POLICY_EGRESS, f"the run {found}; the policy requires egress none")
    _check_platform_policy(policy, assurance, platform)


def _check_platform_policy(
    policy: Policy, assurance: VerifiedAssurance, platform: PlatformFacts | None
) -> None:
    from aicert.cvm import TcbVersion, measurement_allowed, tcb_at_least

    if policy.minimumTcb is not None:
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
    if policy.allowedMeasurements is not None:
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
