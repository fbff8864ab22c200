"""Level `cvm`: the checks that tie a certificate's TPM quote to an AMD SEV-SNP confidential VM.

`verify_platform` parses the HCL report (MalformedError if it cannot) and then runs, in this
order, each failure a VerificationError with its own check:

1. CVM_CHAIN: VCEK -> ASK -> pinned ARK, valid at the time (aicert.cvm.amd), and the VCEK is the
   one for this report: its hwID is the report's chip_id and its TCB extensions are the report's
   reported_tcb (AMD issues one VCEK per chip and TCB version);
2. CVM_REPORT_SIGNATURE: the VCEK signed the SEV-SNP report (ECDSA P-384, SHA-384);
3. CVM_VMPL: the report was asked for at VMPL 0, by the paravisor (the guest OS cannot);
4. CVM_REPORT_DATA: report_data begins with the hash of the HCL runtime data;
5. CVM_AK: the runtime data's HCLAkPub is the AK that signed the quote;
6. CVM_DEBUG: the guest policy does not allow debugging;
7. CVM_MEASUREMENT: the launch measurement is one of the known-good paravisor measurements
   (aicert.trust.measurements, the `paravisor` trust store).

Checks 1 to 6 show that an AMD chip signed a report, asked for at VMPL 0, naming the quote's AK.
They do not show whose firmware ran at VMPL 0: any SEV-SNP guest's, on any cloud or on bare metal,
can ask its chip for such a report and put any key in the runtime data. Check 7 is what ties the
report to Azure's paravisor, which puts only its own vTPM's AK there.

The policy's own checks (minimum TCB, allowed measurements) use `PlatformFacts` with
`aicert.cvm.tcb.tcb_at_least` and `measurement_allowed`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from aicert.cvm.amd import PINNED_ARK_SHA256, VcekExtensions, check_vcek_chain, vcek_extensions
from aicert.cvm.hcl import SNP_REPORT_OFFSET, HclReport, parse_hcl_report, runtime_ak_public
from aicert.cvm.snp import SIGNING_KEY_NAMES, SIGNING_KEY_VCEK, GuestPolicy, SnpReport, parse_snp_report
from aicert.cvm.tcb import TcbVersion
from aicert.trust.measurements import KnownMeasurements
from aicert.verify.errors import Check, MalformedError, VerificationError

AK_FIELD = "evidence.ak.public"
MEASUREMENT_HEX_LENGTH = 96


@dataclass(frozen=True)
class PlatformFacts:
    """What a verified HCL report says about the VM, for the policy and the verification result."""

    product: str  # the VCEK's productName, e.g. "Milan-B0"
    chip_id: str  # 128 hex digits
    measurement: str  # the launch measurement, 96 hex digits
    reported_tcb: TcbVersion
    guest_policy: GuestPolicy
    vmpl: int
    report_version: int
    measurement_source: str  # what the known-good list says of the measurement


def check_vcek_matches_report(vcek: x509.Certificate, report: SnpReport) -> VcekExtensions:
    """The VCEK is the one AMD issued for this report's chip and TCB version (CVM_CHAIN)."""
    extensions = vcek_extensions(vcek)
    if extensions.hwid != report.chip_id:
        raise VerificationError(
            Check.CVM_CHAIN,
            f"the VCEK is for chip {extensions.hwid.hex()[:16]}…, the report's chip_id is "
            f"{report.chip_id.hex()[:16]}…",
        )
    if extensions.tcb != report.reported_tcb:
        raise VerificationError(
            Check.CVM_CHAIN,
            f"the VCEK certifies TCB {extensions.tcb}, the report's reported_tcb is {report.reported_tcb}",
        )
    return extensions


def check_report_signature(report: SnpReport, vcek: x509.Certificate) -> None:
    """The VCEK signed report bytes 0x000-0x29F (CVM_REPORT_SIGNATURE)."""
    if report.signing_key != SIGNING_KEY_VCEK:
        name = SIGNING_KEY_NAMES.get(report.signing_key, f"reserved value {report.signing_key}")
        raise VerificationError(
            Check.CVM_REPORT_SIGNATURE, f"the report says its signing key is {name}, not the VCEK"
        )
    try:
        key = vcek.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise VerificationError(Check.CVM_REPORT_SIGNATURE, f"the VCEK's key cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(Check.CVM_REPORT_SIGNATURE, "the VCEK's key is not an ECDSA key")
    try:
        key.verify(report.signature_der, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise VerificationError(
            Check.CVM_REPORT_SIGNATURE, "the SEV-SNP report's signature does not verify with the VCEK"
        ) from None


def check_vmpl(report: SnpReport) -> None:
    """The report was asked for at VMPL 0 (CVM_VMPL). Azure's paravisor runs at VMPL 0 and writes
    the HCL report; the guest OS runs at a higher VMPL and can ask the chip for a report of its own
    with any report_data, which would then vouch for a runtime data (and AK) of its choosing."""
    if report.vmpl != 0:
        raise VerificationError(
            Check.CVM_VMPL,
            f"the report was asked for at VMPL {report.vmpl}, not 0: the guest OS, not the paravisor, "
            "chose its report_data",
        )


def check_report_data(hcl: HclReport, report: SnpReport) -> None:
    """report_data begins with the hash of the runtime data (CVM_REPORT_DATA)."""
    digest = hcl.runtime_data_digest()
    if report.report_data[: len(digest)] != digest:
        raise VerificationError(
            Check.CVM_REPORT_DATA,
            f"report_data begins with {report.report_data[: len(digest)].hex()}, not {hcl.hash_name} of the "
            f"runtime data ({digest.hex()})",
        )


def canonical_spki(spki_der: bytes, field: str = AK_FIELD) -> bytes:
    """`spki_der` re-encoded by `cryptography`, so that two encodings of one key compare equal."""
    try:
        key = load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedError(field, f"is not a DER SubjectPublicKeyInfo: {exc}") from None
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_ak(runtime_ak_der: bytes, quote_ak_der: bytes) -> None:
    """The runtime data's HCLAkPub is the quote's AK (CVM_AK); both are canonical DER SPKI."""
    if runtime_ak_der != quote_ak_der:
        raise VerificationError(
            Check.CVM_AK,
            f"the HCL runtime data's HCLAkPub (SPKI sha256 {hashlib.sha256(runtime_ak_der).hexdigest()}) "
            f"is not the quote's AK (SPKI sha256 {hashlib.sha256(quote_ak_der).hexdigest()})",
        )


def check_debug(report: SnpReport) -> None:
    """The guest policy forbids debugging (CVM_DEBUG)."""
    if report.policy.debug_allowed:
        raise VerificationError(
            Check.CVM_DEBUG,
            f"the guest policy {report.policy.raw:#x} allows debugging (bit 19): the host can read and "
            "change the VM's memory",
        )


def _unrecorded(check: Check) -> None:
    """What `verify_platform` tells of each check that passed, by default: nothing."""


def check_measurement_known(report: SnpReport, known: KnownMeasurements) -> str:
    """The launch measurement is a known-good paravisor's (CVM_MEASUREMENT); the list's source
    for it. The one rule for `cvm`, used by the verifier and by the agent before it claims cvm."""
    measurement = report.measurement.hex()
    if not known.entries:
        raise VerificationError(
            Check.CVM_MEASUREMENT,
            f"no known-good paravisor launch measurement to compare the report's {measurement} with "
            f"({known.origin}); without one, any SEV-SNP guest's VMPL 0 firmware could have made this "
            "report",
        )
    source = known.source_of(measurement)
    if source is None:
        raise VerificationError(
            Check.CVM_MEASUREMENT,
            f"the launch measurement {measurement} is not among the {len(known.entries)} known-good "
            f"paravisor measurements of {known.origin}: the VM did not boot a paravisor you trust, so "
            "whatever ran at VMPL 0 chose the AK in the report",
        )
    return source


def verify_platform(
    hcl_report: bytes,
    certificates: Sequence[x509.Certificate],
    ak_spki_der: bytes,
    at: dt.datetime,
    ark_fingerprints: Collection[str] = frozenset(PINNED_ARK_SHA256.values()),
    *,
    known_measurements: KnownMeasurements,
    passed: Callable[[Check], None] = _unrecorded,
) -> PlatformFacts:
    """Check an HCL report (the bytes of NV index 0x01400001) against the VCEK chain, the quote's AK
    (DER SubjectPublicKeyInfo), the time `at` (timezone-aware) and the known-good paravisor
    measurements; the facts of the VM if it holds.

    Raises MalformedError when the report or the AK cannot be read, VerificationError(check) when a
    check fails, in the order of this module's docstring. `passed(check)` is called as each check
    passes, where it passes: the verifier's record of its checks (aicert.verify.checklog), in which
    a cvm check that does not report itself fails the verification."""
    hcl = parse_hcl_report(hcl_report)
    report = parse_snp_report(hcl.snp_report, offset=SNP_REPORT_OFFSET)
    runtime_ak = runtime_ak_public(hcl.runtime_data)
    quote_ak = canonical_spki(ak_spki_der)

    vcek = check_vcek_chain(certificates, at, ark_fingerprints)
    extensions = check_vcek_matches_report(vcek, report)
    passed(Check.CVM_CHAIN)
    check_report_signature(report, vcek)
    passed(Check.CVM_REPORT_SIGNATURE)
    check_vmpl(report)
    passed(Check.CVM_VMPL)
    check_report_data(hcl, report)
    passed(Check.CVM_REPORT_DATA)
    check_ak(runtime_ak, quote_ak)
    passed(Check.CVM_AK)
    check_debug(report)
    passed(Check.CVM_DEBUG)
    source = check_measurement_known(report, known_measurements)
    passed(Check.CVM_MEASUREMENT)
    return PlatformFacts(
        product=extensions.product_name,
        chip_id=report.chip_id.hex(),
        measurement=report.measurement.hex(),
        reported_tcb=report.reported_tcb,
        guest_policy=report.policy,
        vmpl=report.vmpl,
        report_version=report.version,
        measurement_source=source,
    )


def measurement_allowed(measurement: str, allowed: Collection[str]) -> bool:
    """Whether the launch measurement (96 hex digits) is one of `allowed` (case-insensitive)."""
    return measurement.lower() in {m.lower() for m in allowed}
