"""What an Azure SEV-SNP confidential VM adds to a certificate for level `cvm` (`evidence.platform`).

- `hclReport`: the bytes of TPM NV index 0x01400001, where Azure's paravisor (HCL) writes its
  report: the SEV-SNP attestation report, signed by the chip, whose report_data binds the runtime
  data that holds the vTPM's AK (aicert.cvm.hcl);
- `certificateChain`: the chip's VCEK and AMD's ASK and ARK (PEM), from the IMDS endpoint that
  serves Azure's cache of AMD's certificates (THIM).

Each is read by its own function; `platform_evidence` does both and checks, with the verifier's
own code, that the report parses and that the VCEK is the one for its chip and TCB version, so the
agent never writes evidence the verifier would refuse. docs/confidential-vm.md describes it all.
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Collection
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aicert.certificate import FormatError, PlatformRecord, convert
from aicert.cvm.amd import MAX_CHAIN_CERTIFICATES
from aicert.cvm.check import check_vcek_matches_report
from aicert.cvm.hcl import SNP_REPORT_OFFSET, parse_hcl_report
from aicert.cvm.snp import SnpReport, parse_snp_report
from aicert.trust.measurements import KnownMeasurements
from aicert.verify.errors import MalformedError, VerificationError
from aicert.verify.jsonload import loads_strict
from aicert.verify.platform import check_platform, platform_certificates

from .tpm.client import Tpm, TpmError

HCL_REPORT_NV_INDEX: Final = 0x01400001
"""NV index where Azure's paravisor writes the HCL report of a confidential VM."""

THIM_URL: Final = "http://169.254.169.254/metadata/THIM/amd/certification"
"""Azure IMDS: the VCEK of this VM's chip and AMD's chain, as JSON `{vcekCert, certificateChain}`."""

THIM_MAX_BYTES: Final = 64 * 1024
THIM_TIMEOUT_SECONDS: Final = 10.0


class PlatformError(Exception):
    """The confidential-VM evidence cannot be read, or is not what the verifier would accept."""


def read_hcl_report(tpm: Tpm) -> bytes:
    """The HCL report from NV index 0x01400001, checked to parse as the verifier parses it."""
    return _read_hcl_report(tpm)[0]


def _read_hcl_report(tpm: Tpm) -> tuple[bytes, SnpReport]:
    """The HCL report's bytes and its SEV-SNP report, parsed as the verifier parses them."""
    try:
        data = tpm.read_nv(HCL_REPORT_NV_INDEX)
    except TpmError as exc:
        raise PlatformError(
            f"cannot read the HCL report from NV index 0x{HCL_REPORT_NV_INDEX:08x} "
            f"(is this an Azure confidential VM?): {exc}"
        ) from None
    try:
        snp = parse_snp_report(parse_hcl_report(data).snp_report, offset=SNP_REPORT_OFFSET)
    except MalformedError as exc:
        raise PlatformError(
            f"NV index 0x{HCL_REPORT_NV_INDEX:08x} holds no usable HCL report: {exc}"
        ) from None
    return data, snp


def _pem_certificates(text: Any, name: str, url: str) -> list[x509.Certificate]:
    if not isinstance(text, str) or "-----BEGIN CERTIFICATE-----" not in text:
        raise PlatformError(f"{url} answered without PEM certificates in `{name}`")
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise PlatformError(f"{url} answered with an unreadable `{name}`: {exc}") from None


def fetch_vcek_chain(
    url: str = THIM_URL, *, timeout: float = THIM_TIMEOUT_SECONDS, max_bytes: int = THIM_MAX_BYTES
) -> list[str]:
    """The VCEK, then the ASK and the ARK, as PEM strings, from Azure's IMDS (THIM) at `url`."""
    request = urllib.request.Request(url, headers={"Metadata": "true"}, method="GET")
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # IMDS is never behind a proxy
    try:
        with direct.open(request, timeout=timeout) as answer:
            body = answer.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PlatformError(f"the VCEK chain could not be fetched from {url}: {exc}") from None
    if len(body) > max_bytes:
        raise PlatformError(f"{url} answered with more than {max_bytes} bytes")
    try:
        document = loads_strict(body, what=f"the answer of {url}", max_bytes=max_bytes)
    except MalformedError as exc:
        raise PlatformError(str(exc)) from None
    if not isinstance(document, dict):
        raise PlatformError(f"{url} answered with JSON that is not an object")
    vcek = _pem_certificates(document.get("vcekCert"), "vcekCert", url)
    chain = _pem_certificates(document.get("certificateChain"), "certificateChain", url)
    certificates = vcek + chain
    if len(vcek) != 1 or len(certificates) > MAX_CHAIN_CERTIFICATES:
        raise PlatformError(
            f"{url} answered with {len(vcek)} VCEK and {len(chain)} chain certificates; expected one VCEK "
            f"and at most {MAX_CHAIN_CERTIFICATES} certificates in all"
        )
    return [c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates]


def platform_evidence(tpm: Tpm, *, thim_url: str = THIM_URL) -> dict[str, Any]:
    """`evidence.platform`: `{hclReport: base64, certificateChain: [VCEK, ASK, ARK PEM]}`, after
    checking that the VCEK is the one AMD issued for the report's chip and TCB version."""
    report, snp = _read_hcl_report(tpm)
    chain = fetch_vcek_chain(thim_url)
    try:
        check_vcek_matches_report(x509.load_pem_x509_certificate(chain[0].encode("ascii")), snp)
    except VerificationError as exc:
        raise PlatformError(f"the VCEK from {thim_url} does not fit the HCL report: {exc.reason}") from None
    return {"hclReport": base64.b64encode(report).decode("ascii"), "certificateChain": chain}


def cvm_problem(
    platform: dict[str, Any] | None,
    ak_certificate: x509.Certificate,
    ark_fingerprints: Collection[str] | None = None,
    known_measurements: KnownMeasurements | None = None,
) -> str | None:
    """Why a verifier would not grant level cvm to this AK (whose certificate chains to a root that
    vouches for `vtpm`) with this `evidence.platform`, checked as the verifier checks it, against
    the same known-good paravisor measurements (None: none, which grants cvm to nothing); None: it
    would."""
    try:
        if platform is None:
            raise MalformedError("evidence.platform", "this node read no confidential-VM evidence")
        record = convert(platform, PlatformRecord, prefix="evidence.platform.")
        check_platform(
            record,
            platform_certificates(record),
            ak_spki_der=ak_certificate.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            ),
            at=dt.datetime.now(dt.UTC),
            ark_fingerprints=ark_fingerprints,
            known_measurements=known_measurements,
        )
    except (FormatError, MalformedError, VerificationError) as exc:
        return str(exc)
    return None
