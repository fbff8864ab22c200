"""A bounds-checked big-endian reader for TPM marshaled structures."""

from __future__ import annotations


class StructureError(ValueError):
    """A TPM structure is truncated or malformed; the message names the field."""


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise StructureError(
                f"{self._what}: truncated at {field} (needs {n} bytes at offset {self._pos})"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "big")

    def sized(self, field: str) -> bytes:
        """A TPM2B: a 16-bit size followed by that many bytes."""
        return self.take(self.u16(f"{field}.size"), field)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise StructureError(f"{self._what}: {len(self._data) - self._pos} trailing bytes")
