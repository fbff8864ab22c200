"""Level `cvm`: Azure confidential-VM evidence (an HCL report with an AMD SEV-SNP report, and the
AMD VCEK chain), parsed and checked offline. docs/confidential-vm.md describes the format."""

from aicert.cvm.amd import PINNED_ARK_SHA256, VcekExtensions, check_vcek_chain, vcek_extensions
from aicert.cvm.check import PlatformFacts, measurement_allowed, verify_platform
from aicert.cvm.hcl import HclReport, parse_hcl_report, runtime_ak_public
from aicert.cvm.snp import GuestPolicy, SnpReport, parse_snp_report
from aicert.cvm.tcb import TCB_COMPONENTS, TcbVersion, tcb_at_least

__all__ = [
    "PINNED_ARK_SHA256",
    "TCB_COMPONENTS",
    "GuestPolicy",
    "HclReport",
    "PlatformFacts",
    "SnpReport",
    "TcbVersion",
    "VcekExtensions",
    "check_vcek_chain",
    "measurement_allowed",
    "parse_hcl_report",
    "parse_snp_report",
    "runtime_ak_public",
    "tcb_at_least",
    "vcek_extensions",
    "verify_platform",
]
