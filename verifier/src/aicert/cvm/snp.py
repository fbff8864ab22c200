"""The AMD SEV-SNP attestation report (ATTESTATION_REPORT, SEV-SNP firmware ABI, AMD 56860).

1184 (0x4A0) bytes, little-endian; the AMD secure processor signs bytes 0x000-0x29F with the
chip's VCEK (ECDSA P-384 with SHA-384) and puts r and s at 0x2A0 and 0x2E8, 72 bytes each, also
little-endian. Versions 2 to 5 share every field read here (version 3 added the CPUID family,
model and stepping at 0x188; version 5 the mitigation vectors at 0x1F8). Reserved bytes are
covered by the signature and otherwise ignored.

| offset | size | field |
|---|---|---|
| 0x000 | 4 | version |
| 0x004 | 4 | guest_svn |
| 0x008 | 8 | policy (guest policy; bit 19: debugging allowed) |
| 0x010 | 16 | family_id |
| 0x020 | 16 | image_id |
| 0x030 | 4 | vmpl |
| 0x034 | 4 | signature_algo (1: ECDSA P-384 with SHA-384) |
| 0x038 | 8 | current_tcb |
| 0x040 | 8 | platform_info |
| 0x048 | 4 | signer_info (bit 0 author_key_en, bit 1 mask_chip_id, bits 2-4 signing_key) |
| 0x050 | 64 | report_data |
| 0x090 | 48 | measurement |
| 0x0C0 | 32 | host_data |
| 0x0E0 | 48 | id_key_digest |
| 0x110 | 48 | author_key_digest |
| 0x140 | 32 | report_id |
| 0x160 | 32 | report_id_ma |
| 0x180 | 8 | reported_tcb |
| 0x188 | 3 | cpuid_fam_id, cpuid_mod_id, cpuid_step (version 3 and later) |
| 0x1A0 | 64 | chip_id |
| 0x1E0 | 8 | committed_tcb |
| 0x1F0 | 8 | launch_tcb |
| 0x2A0 | 72 | signature r |
| 0x2E8 | 72 | signature s |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aicert.cvm.tcb import TCB_SIZE, TcbVersion
from aicert.verify.errors import MalformedError

HCL_FIELD: Final = "evidence.platform.hclReport"
REPORT_SIZE: Final = 0x4A0
SIGNED_LENGTH: Final = 0x2A0
"""The signature covers report bytes 0x000 to 0x29F."""
SUPPORTED_VERSIONS: Final = (2, 3, 4, 5)
SIGNATURE_ALGO_ECDSA_P384_SHA384: Final = 1
SIGNATURE_COMPONENT_SIZE: Final = 72
SIGNING_KEY_VCEK: Final = 0
SIGNING_KEY_NAMES: Final = {0: "VCEK", 1: "VLEK", 7: "none (unsigned)"}
TURIN_FAMILY: Final = 0x1A
"""CPUID family of Zen 5 (Turin): its TCB_VERSION layout differs from Milan's and Genoa's."""

_POLICY_SMT_BIT: Final = 16
_POLICY_MIGRATE_MA_BIT: Final = 18
_POLICY_DEBUG_BIT: Final = 19
_POLICY_SINGLE_SOCKET_BIT: Final = 20


@dataclass(frozen=True)
class GuestPolicy:
    """The guest policy the VM was launched with (report offset 0x008), as the 64-bit value."""

    raw: int

    def _bit(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return self.raw >> 8 & 0xFF

    @property
    def smt_allowed(self) -> bool:
        return self._bit(_POLICY_SMT_BIT)

    @property
    def migrate_ma_allowed(self) -> bool:
        return self._bit(_POLICY_MIGRATE_MA_BIT)

    @property
    def debug_allowed(self) -> bool:
        """Bit 19: the host may debug the guest, that is decrypt its memory and registers."""
        return self._bit(_POLICY_DEBUG_BIT)

    @property
    def single_socket_required(self) -> bool:
        return self._bit(_POLICY_SINGLE_SOCKET_BIT)


@dataclass(frozen=True)
class SnpReport:
    """One parsed report; `raw` is its 1184 bytes and `signed_bytes` the 0x2A0 the VCEK signed."""

    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None  # (family, model, stepping), version 3 and later
    chip_id: bytes
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    signature_r: int
    signature_s: int
    raw: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_LENGTH]

    @property
    def signing_key(self) -> int:
        """signer_info bits 2-4: 0 the VCEK signed the report, 1 a VLEK, 7 nobody."""
        return self.signer_info >> 2 & 7

    @property
    def chip_id_masked(self) -> bool:
        return bool(self.signer_info >> 1 & 1)

    @property
    def signature_der(self) -> bytes:
        """r and s as the DER ECDSA-Sig-Value `cryptography` verifies."""
        return encode_dss_signature(self.signature_r, self.signature_s)


def _u32(raw: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", raw, offset)[0]
    return value


def _u64(raw: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", raw, offset)[0]
    return value


def _tcb(raw: bytes, offset: int) -> TcbVersion:
    return TcbVersion.from_bytes(raw[offset : offset + TCB_SIZE])


def parse_snp_report(raw: bytes, *, field: str = HCL_FIELD, offset: int = 0) -> SnpReport:
    """Parse one SEV-SNP report; `offset` is where it starts in the bytes `field` names (the
    HCL report carries it at 0x020), so that every message names the offset a reader can find.

    Raises MalformedError for a wrong size, an unsupported version or signature algorithm, or a
    Turin report; the values themselves are checked by `aicert.cvm.check`."""

    def refuse(name: str, at: int, reason: str) -> MalformedError:
        return MalformedError(field, f"snp_report.{name} (offset {offset + at:#05x}) {reason}")

    if len(raw) != REPORT_SIZE:
        raise MalformedError(
            field, f"snp_report is {len(raw)} bytes; an SEV-SNP attestation report is {REPORT_SIZE}"
        )
    raw = bytes(raw)
    version = _u32(raw, 0x000)
    if version not in SUPPORTED_VERSIONS:
        supported = f"{SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]}"
        raise refuse("version", 0x000, f"is {version}; supported report versions are {supported}")
    signature_algo = _u32(raw, 0x034)
    if signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise refuse(
            "signature_algo", 0x034, f"is {signature_algo}; only 1 (ECDSA P-384 with SHA-384) is supported"
        )
    cpuid = (raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None
    if cpuid is not None and cpuid[0] == TURIN_FAMILY:
        raise refuse(
            "cpuid_fam_id",
            0x188,
            f"is {TURIN_FAMILY:#x} (Turin), whose TCB layout differs; only Milan and Genoa are supported",
        )
    r_end = SIGNED_LENGTH + SIGNATURE_COMPONENT_SIZE
    return SnpReport(
        version=version,
        guest_svn=_u32(raw, 0x004),
        policy=GuestPolicy(_u64(raw, 0x008)),
        family_id=raw[0x010:0x020],
        image_id=raw[0x020:0x030],
        vmpl=_u32(raw, 0x030),
        signature_algo=signature_algo,
        current_tcb=_tcb(raw, 0x038),
        platform_info=_u64(raw, 0x040),
        signer_info=_u32(raw, 0x048),
        report_data=raw[0x050:0x090],
        measurement=raw[0x090:0x0C0],
        host_data=raw[0x0C0:0x0E0],
        id_key_digest=raw[0x0E0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=_tcb(raw, 0x180),
        cpuid=cpuid,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=_tcb(raw, 0x1E0),
        launch_tcb=_tcb(raw, 0x1F0),
        signature_r=int.from_bytes(raw[SIGNED_LENGTH:r_end], "little"),
        signature_s=int.from_bytes(raw[r_end : r_end + SIGNATURE_COMPONENT_SIZE], "little"),
        raw=raw,
    )
