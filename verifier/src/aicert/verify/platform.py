"""Step 3, level `cvm`: the confidential-VM evidence (`evidence.platform`) behind a quote's AK.

A certificate that claims `cvm` must carry Azure's HCL report and the AMD certificates of the chip
that signed its SEV-SNP report, and its AK must chain to a root that vouches for `vtpm` (the Azure
vTPM root; check_chain holds it to that with `root_level`): the AMD report then shows that this AK lives in a confidential VM, launched as the
report's measurement says. Only when every `cvm-*` check passes is `cvm` granted
(docs/confidential-vm.md). A certificate that claims less is not checked for a platform at all;
its `cvm-*` checks are reported as skipped.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Collection
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from aicert.certificate import Assurance, PlatformRecord
from aicert.trust.measurements import KnownMeasurements
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import CVM_CHECKS, Check, MalformedError, VerificationError
from aicert.verify.keys import with_usable_key

if TYPE_CHECKING:  # aicert.cvm loads only for a certificate that claims cvm
    from aicert.cvm import PlatformFacts

FIELD = "evidence.platform"
NONE_GIVEN = (
    "none was given: `aicert verify` uses the list `aicert trust install paravisor --from FILE` "
    "installs, a library caller passes one"
)


def platform_certificates(record: PlatformRecord) -> tuple[x509.Certificate, ...]:
    """The AMD certificates of `evidence.platform.certificateChain`; MalformedError naming the one
    that cannot be read."""
    certificates = []
    for index, pem in enumerate(record.certificateChain):
        try:
            certificates.append(with_usable_key(x509.load_pem_x509_certificate(pem.encode())))
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            raise MalformedError(
                f"{FIELD}.certificateChain[{index}]", f"unreadable certificate: {exc}"
            ) from None
    return tuple(certificates)


def not_claimed(claimed: Assurance | None) -> list[tuple[Check, str]]:
    """The `cvm-*` checks, skipped: the certificate claims a lower level (None: an old proof)."""
    reason = (
        "an old AICert proof carries no platform report"
        if claimed is None
        else f"the certificate claims {claimed}, not cvm"
    )
    return [(check, reason) for check in CVM_CHECKS]


def check_platform(
    record: PlatformRecord | None,
    certificates: tuple[x509.Certificate, ...],
    *,
    ak_spki_der: bytes,
    at: dt.datetime,
    log: CheckLog[Check] | None = None,
    ark_fingerprints: Collection[str] | None = None,
    known_measurements: KnownMeasurements | None = None,
) -> PlatformFacts:
    """The facts of the confidential VM whose vTPM holds the AK (`ak_spki_der`), for a certificate
    that claims `cvm` and whose AK chains to a root vouching for `vtpm` (check_chain, root_level).
    Each `cvm-*` check records itself in `log` as it passes (aicert.cvm.verify_platform), then
    `assurance`: the claimed cvm is vouched for (None: a record of its own, for a caller that needs
    only the answer, as the node agent does before labelling a node).
    `ark_fingerprints`: the AMD roots trusted (None: AMD's own, pinned in aicert.cvm.amd);
    `known_measurements`: the known-good paravisor launch measurements (None: none, and then
    `cvm-measurement` fails: nothing else tells Azure's paravisor from any VMPL 0 firmware)."""
    from aicert.cvm import PINNED_ARK_SHA256, verify_platform

    if record is None:
        raise VerificationError(
            Check.ASSURANCE,
            "the certificate claims level cvm but carries no evidence.platform (HCL report and AMD "
            "certificates)",
        )
    arks = frozenset(PINNED_ARK_SHA256.values()) if ark_fingerprints is None else ark_fingerprints
    log = log if log is not None else CheckLog(Check)
    known = KnownMeasurements((), NONE_GIVEN) if known_measurements is None else known_measurements
    facts = verify_platform(
        base64.b64decode(record.hclReport),
        certificates,
        ak_spki_der,
        at,
        arks,
        known_measurements=known,
        passed=log.passed,
    )
    log.passed(Check.ASSURANCE)  # (3) the AK's root vouches for vtpm and the platform for the rest
    return facts
