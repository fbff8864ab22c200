"""TPMS_ATTEST for TPM2_Quote (TPM 2.0 Library, Part 2, 10.12)."""

from __future__ import annotations

import msgspec

from aicert.tpm.reader import Reader, StructureError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
HASH_NAMES = {ALG_SHA1: "sha1", ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}


class ClockInfo(msgspec.Struct, frozen=True):
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


class PcrSelection(msgspec.Struct, frozen=True):
    hash_alg: int
    pcrs: tuple[int, ...]


class Attest(msgspec.Struct, frozen=True):
    """The fields of a quote's TPMS_ATTEST that a verifier uses."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes

    def selected(self, hash_alg: int) -> tuple[int, ...]:
        return tuple(sorted({i for s in self.pcr_select if s.hash_alg == hash_alg for i in s.pcrs}))


def parse_pcr_selection_list(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("pcrSelect.count")
    if count > 16:
        raise StructureError(f"TPMS_ATTEST: pcrSelect.count {count} is larger than 16")
    selections = []
    for i in range(count):
        alg = r.u16(f"pcrSelect[{i}].hash")
        bitmap = r.take(r.u8(f"pcrSelect[{i}].sizeofSelect"), f"pcrSelect[{i}].pcrSelect")
        pcrs = tuple(byte * 8 + bit for byte, b in enumerate(bitmap) for bit in range(8) if b >> bit & 1)
        selections.append(PcrSelection(alg, pcrs))
    return tuple(selections)


def parse_attest(data: bytes) -> Attest:
    """Parse a marshaled TPMS_ATTEST of type ATTEST_QUOTE.

    Raises StructureError when the bytes are truncated, have trailing data or are not a quote:
    the magic and type are checked here because nothing else in a quote makes sense without them.
    """
    r = Reader(data, "TPMS_ATTEST")
    magic = r.u32("magic")
    st = r.u16("type")
    qualified_signer = r.sized("qualifiedSigner")
    extra_data = r.sized("extraData")
    clock_info = ClockInfo(r.u64("clock"), r.u32("resetCount"), r.u32("restartCount"), r.u8("safe") == 1)
    firmware = r.u64("firmwareVersion")
    if st != TPM_ST_ATTEST_QUOTE:
        raise StructureError(f"TPMS_ATTEST: type is {st:#06x}, not TPM_ST_ATTEST_QUOTE (0x8018)")
    selection = parse_pcr_selection_list(r)
    digest = r.sized("pcrDigest")
    r.end()
    return Attest(magic, st, qualified_signer, extra_data, clock_info, firmware, selection, digest)
