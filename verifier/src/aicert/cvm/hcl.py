"""Azure's HCL report: what the paravisor of a confidential VM writes to TPM NV index 0x01400001.

The layout (little-endian u32s), as Azure's OpenHCL defines it (IgvmAttestRequestBase with request
data version 1) and its readers parse it:

| offset | size | field |
|---|---|---|
| 0x000 | 4 | header.signature: the bytes "HCLA" |
| 0x004 | 4 | header.version (1 or 2) |
| 0x008 | 4 | header.report_size: bytes in use from offset 0 |
| 0x00C | 4 | header.request_type (2: AK certificate request) |
| 0x010 | 4 | header.status |
| 0x014 | 12 | header.reserved |
| 0x020 | 1184 | the SEV-SNP attestation report (aicert.cvm.snp) |
| 0x4C0 | 4 | request_data.data_size: 20 + variable_data_size |
| 0x4C4 | 4 | request_data.version (1) |
| 0x4C8 | 4 | request_data.report_type (2: SEV-SNP; 4 is TDX, not supported) |
| 0x4CC | 4 | request_data.report_data_hash_type (1 SHA-256, 2 SHA-384, 3 SHA-512) |
| 0x4D0 | 4 | request_data.variable_data_size |
| 0x4D4 | variable_data_size | the runtime data: JSON, `keys` holds the vTPM AK as JWK `HCLAkPub` |

The rest of the NV index is padding. Only the SNP report is signed; its report_data begins with
the hash of the runtime data, which is what makes the header's AK the chip's word.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aicert.cvm.snp import HCL_FIELD, REPORT_SIZE
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import loads_strict

RUNTIME_DATA_FIELD: Final = f"{HCL_FIELD}.runtimeData"
HCL_SIGNATURE: Final = b"HCLA"
HEADER_VERSIONS: Final = (1, 2)
HEADER_SIZE: Final = 0x20
SNP_REPORT_OFFSET: Final = HEADER_SIZE
REQUEST_DATA_OFFSET: Final = SNP_REPORT_OFFSET + REPORT_SIZE  # 0x4C0
REQUEST_DATA_SIZE: Final = 20
RUNTIME_DATA_OFFSET: Final = REQUEST_DATA_OFFSET + REQUEST_DATA_SIZE  # 0x4D4
REQUEST_DATA_VERSION: Final = 1
REPORT_TYPE_SNP: Final = 2
REPORT_TYPE_NAMES: Final = {0: "invalid", 1: "VBS", 2: "SEV-SNP", 3: "trusted VM", 4: "TDX"}
HASH_TYPES: Final = {1: "sha256", 2: "sha384", 3: "sha512"}
HCL_REPORT_MAX_BYTES: Final = 16 * 1024
"""An NV index holds at most a few KiB (Azure's is 2048 bytes, a TPM's limit is its NV_INDEX_MAX)."""
AK_KEY_ID: Final = "HCLAkPub"
MAX_RUNTIME_KEYS: Final = 16
RSA_MIN_BITS: Final = 2048
RSA_MAX_BITS: Final = 8192
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class HclReport:
    """The parts of an HCL report; `snp_report` is parsed by `aicert.cvm.snp.parse_snp_report`."""

    header_version: int
    report_size: int
    request_type: int
    status: int
    snp_report: bytes
    request_version: int
    report_type: int
    hash_type: int
    runtime_data: bytes

    @property
    def hash_name(self) -> str:
        """The hash of the runtime data that report_data begins with: sha256, sha384 or sha512."""
        return HASH_TYPES[self.hash_type]

    def runtime_data_digest(self) -> bytes:
        return hashlib.new(self.hash_name, self.runtime_data).digest()


def _u32(blob: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", blob, offset)[0]
    return value


def _refuse(reason: str) -> MalformedError:
    return MalformedError(HCL_FIELD, reason)


def parse_hcl_report(blob: bytes) -> HclReport:
    """Parse the bytes of NV index 0x01400001; MalformedError(`evidence.platform.hclReport`, …)
    names the layout field and its offset when they are not an HCL report with an SEV-SNP report."""
    if len(blob) > HCL_REPORT_MAX_BYTES:
        raise _refuse(f"is {len(blob)} bytes, more than {HCL_REPORT_MAX_BYTES}, the limit")
    blob = bytes(blob)
    if len(blob) < RUNTIME_DATA_OFFSET:
        raise _refuse(
            f"is {len(blob)} bytes, shorter than the {RUNTIME_DATA_OFFSET}-byte fixed part "
            "(header, SEV-SNP report, request data)"
        )
    if blob[0:4] != HCL_SIGNATURE:
        raise _refuse(f"header.signature (offset 0x000) is {blob[0:4]!r}, not 'HCLA'")
    header_version = _u32(blob, 0x004)
    if header_version not in HEADER_VERSIONS:
        raise _refuse(f"header.version (offset 0x004) is {header_version}, not 1 or 2")
    request_version = _u32(blob, REQUEST_DATA_OFFSET + 4)
    if request_version != REQUEST_DATA_VERSION:
        raise _refuse(
            f"request_data.version (offset {REQUEST_DATA_OFFSET + 4:#05x}) is {request_version}, not 1"
        )
    report_type = _u32(blob, REQUEST_DATA_OFFSET + 8)
    if report_type != REPORT_TYPE_SNP:
        name = REPORT_TYPE_NAMES.get(report_type, "unknown")
        raise _refuse(
            f"request_data.report_type (offset {REQUEST_DATA_OFFSET + 8:#05x}) is {report_type} ({name}); "
            f"only {REPORT_TYPE_SNP} (SEV-SNP) is supported"
        )
    hash_type = _u32(blob, REQUEST_DATA_OFFSET + 12)
    if hash_type not in HASH_TYPES:
        raise _refuse(
            f"request_data.report_data_hash_type (offset {REQUEST_DATA_OFFSET + 12:#05x}) is {hash_type}, "
            "not 1 (SHA-256), 2 (SHA-384) or 3 (SHA-512)"
        )
    variable_size = _u32(blob, REQUEST_DATA_OFFSET + 16)
    if variable_size > len(blob) - RUNTIME_DATA_OFFSET:
        raise _refuse(
            f"request_data.variable_data_size (offset {REQUEST_DATA_OFFSET + 16:#05x}) {variable_size} runs "
            f"past the end ({len(blob)} bytes; the runtime data starts at {RUNTIME_DATA_OFFSET:#05x})"
        )
    data_size = _u32(blob, REQUEST_DATA_OFFSET)
    if data_size != REQUEST_DATA_SIZE + variable_size:
        raise _refuse(
            f"request_data.data_size (offset {REQUEST_DATA_OFFSET:#05x}) is {data_size}, not "
            f"{REQUEST_DATA_SIZE} + variable_data_size {variable_size}"
        )
    return HclReport(
        header_version=header_version,
        report_size=_u32(blob, 0x008),
        request_type=_u32(blob, 0x00C),
        status=_u32(blob, 0x010),
        snp_report=blob[SNP_REPORT_OFFSET:REQUEST_DATA_OFFSET],
        request_version=request_version,
        report_type=report_type,
        hash_type=hash_type,
        runtime_data=blob[RUNTIME_DATA_OFFSET : RUNTIME_DATA_OFFSET + variable_size],
    )


def _base64url_integer(key: dict[str, Any], name: str, where: str, max_bytes: int) -> int:
    value = key.get(name)
    if not isinstance(value, str) or not value or not _BASE64URL.fullmatch(value):
        raise MalformedError(f"{where}.{name}", "is not a base64url string (RFC 7518 6.3.1)")
    if len(value) > (max_bytes * 4 + 2) // 3:
        raise MalformedError(f"{where}.{name}", f"is longer than {max_bytes} bytes")
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise MalformedError(f"{where}.{name}", "is not a base64url string (RFC 7518 6.3.1)") from None
    return int.from_bytes(decoded, "big")


def runtime_ak_public(runtime_data: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of the runtime data's `HCLAkPub` JWK (an RSA key)."""
    document = loads_strict(
        runtime_data, what="the HCL runtime data", field=RUNTIME_DATA_FIELD, max_bytes=HCL_REPORT_MAX_BYTES
    )
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise MalformedError(RUNTIME_DATA_FIELD, "has no `keys` array")
    if len(keys) > MAX_RUNTIME_KEYS:
        raise MalformedError(f"{RUNTIME_DATA_FIELD}.keys", f"holds more than {MAX_RUNTIME_KEYS} keys")
    found = [i for i, key in enumerate(keys) if isinstance(key, dict) and key.get("kid") == AK_KEY_ID]
    if len(found) != 1:
        reason = "has no key" if not found else f"has {len(found)} keys"
        raise MalformedError(f"{RUNTIME_DATA_FIELD}.keys", f"{reason} with kid {AK_KEY_ID!r}")
    where = f"{RUNTIME_DATA_FIELD}.keys[{found[0]}]"
    key = keys[found[0]]
    if key.get("kty") != "RSA":
        raise MalformedError(
            f"{where}.kty", f"is {key.get('kty')!r}; {AK_KEY_ID} must be an RSA key (Azure's vTPM AK is RSA)"
        )
    modulus = _base64url_integer(key, "n", where, RSA_MAX_BITS // 8)
    exponent = _base64url_integer(key, "e", where, 8)
    if not RSA_MIN_BITS <= modulus.bit_length() <= RSA_MAX_BITS:
        raise MalformedError(
            f"{where}.n", f"is {modulus.bit_length()} bits, not {RSA_MIN_BITS} to {RSA_MAX_BITS}"
        )
    try:
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as exc:
        raise MalformedError(where, f"is not an RSA public key: {exc}") from None
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
