"""PCR arithmetic: extend, replay, the quote's pcrDigest, and tpm2-tools' PCR file format."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

from aicert.tpm.attest import ALG_SHA256
from aicert.tpm.reader import StructureError

SHA256_ZERO = bytes(32)


def extend(pcr: bytes, digest: bytes) -> bytes:
    """TPM2_PCR_Extend in the sha256 bank: new = sha256(old || digest)."""
    return hashlib.sha256(pcr + digest).digest()


def replay(digests: Iterable[bytes], start: bytes = SHA256_ZERO) -> bytes:
    value = start
    for digest in digests:
        value = extend(value, digest)
    return value


def pcr_digest(values: Mapping[int, bytes]) -> bytes:
    """The quote's pcrDigest: sha256 over the selected PCR values in ascending index order."""
    return hashlib.sha256(b"".join(values[i] for i in sorted(values))).digest()


# tpm2-tools (4.x/5.x) `tpm2_quote --pcr` writes raw, little-endian C structs:
# TPML_PCR_SELECTION (u32 count + 16 x {u16 hash, u8 sizeofSelect, u8[4] select, pad}),
# a u32 count of TPML_DIGESTs, then that many TPML_DIGEST (u32 count + 8 x {u16 size, u8[64]}).
_SELECTION_SIZE = 4 + 16 * 8
_DIGEST_LIST_SIZE = 4 + 8 * (2 + 64)


def parse_tpm2_tools_pcrs(blob: bytes) -> dict[int, bytes]:
    """The sha256 PCR values in a tpm2-tools `--pcr` file, keyed by index."""
    if len(blob) < _SELECTION_SIZE + 4:
        raise StructureError("PCR file: shorter than a TPML_PCR_SELECTION")
    (count,) = struct.unpack_from("<I", blob, 0)
    if count > 16:
        raise StructureError(f"PCR file: selection count {count} is larger than 16")
    order: list[tuple[int, int]] = []
    for n in range(count):
        alg, size = struct.unpack_from("<HB", blob, 4 + 8 * n)
        if size > 4:
            raise StructureError(f"PCR file: sizeofSelect {size} is larger than 4")
        bitmap = blob[4 + 8 * n + 3 : 4 + 8 * n + 3 + size]
        order.extend(
            (alg, byte * 8 + bit) for byte, b in enumerate(bitmap) for bit in range(8) if b >> bit & 1
        )
    (lists,) = struct.unpack_from("<I", blob, _SELECTION_SIZE)
    if len(blob) != _SELECTION_SIZE + 4 + lists * _DIGEST_LIST_SIZE:
        raise StructureError(f"PCR file: {len(blob)} bytes do not hold {lists} digest lists")
    digests: list[bytes] = []
    for n in range(lists):
        base = _SELECTION_SIZE + 4 + n * _DIGEST_LIST_SIZE
        (items,) = struct.unpack_from("<I", blob, base)
        if items > 8:
            raise StructureError(f"PCR file: digest list {n} has {items} entries, more than 8")
        for k in range(items):
            (size,) = struct.unpack_from("<H", blob, base + 4 + 66 * k)
            if size > 64:
                raise StructureError(f"PCR file: digest size {size} is larger than 64")
            digests.append(blob[base + 4 + 66 * k + 2 : base + 4 + 66 * k + 2 + size])
    if len(digests) != len(order):
        raise StructureError(f"PCR file: {len(order)} PCRs selected but {len(digests)} values present")
    values = {index: value for (alg, index), value in zip(order, digests, strict=True) if alg == ALG_SHA256}
    if any(len(v) != 32 for v in values.values()):
        raise StructureError("PCR file: a sha256 PCR value is not 32 bytes")
    return values


def format_tpm2_tools_pcrs(values: Mapping[int, bytes]) -> bytes:
    """sha256 PCR values as tpm2-tools writes them (`tpm2_quote -o`); the inverse of the parser.

    `tpm2_checkquote -f` reads this format; its `-F values` path drops the 8th value in 5.4.
    """
    indices = sorted(values)
    bitmap = bytearray(3)
    for index in indices:
        bitmap[index // 8] |= 1 << (index % 8)
    selection = struct.pack("<I", 1) + struct.pack("<HB", ALG_SHA256, 3) + bytes(bitmap) + b"\0"
    selection += bytes(_SELECTION_SIZE - len(selection))
    chunks = [indices[i : i + 8] for i in range(0, len(indices), 8)]
    out = selection + struct.pack("<I", len(chunks))
    for chunk in chunks:
        digests = b"".join(struct.pack("<H", 32) + values[i] + bytes(32) for i in chunk)
        out += struct.pack("<I", len(chunk)) + digests + bytes(_DIGEST_LIST_SIZE - 4 - len(digests))
    return out
