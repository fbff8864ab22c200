"""The SEV-SNP TCB version of Milan and Genoa chips, and the comparison a policy makes with it.

A TCB_VERSION is 8 bytes, little-endian (SEV-SNP firmware ABI, AMD 56860): byte 0 the boot
loader's security patch level (SPL), byte 1 the TEE's (PSP OS), bytes 2-5 reserved, byte 6 the
SNP firmware's, byte 7 the microcode's. AMD's VCEK certificates carry the same four values as
the extensions blSPL, teeSPL, snpSPL and ucodeSPL. Turin (Zen 5) orders the bytes differently
and adds an FMC level; it is not supported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TCB_SIZE: Final = 8
TCB_COMPONENTS: Final = ("bootloader", "tee", "snp", "microcode")
_BYTE_OF: Final = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}


@dataclass(frozen=True)
class TcbVersion:
    """Security patch levels (0-255 each) of the firmware components of one chip's TCB."""

    bootloader: int
    tee: int
    snp: int
    microcode: int

    def __post_init__(self) -> None:
        for name in TCB_COMPONENTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ValueError(f"TCB component {name} must be an int in 0..255, got {value!r}")

    @classmethod
    def from_bytes(cls, raw: bytes) -> TcbVersion:
        """The TCB_VERSION layout of Milan and Genoa (8 bytes; the reserved bytes 2-5 are ignored)."""
        if len(raw) != TCB_SIZE:
            raise ValueError(f"a TCB_VERSION is {TCB_SIZE} bytes, got {len(raw)}")
        return cls(**{name: raw[index] for name, index in _BYTE_OF.items()})

    def to_bytes(self) -> bytes:
        """The 8-byte TCB_VERSION, reserved bytes zero."""
        raw = bytearray(TCB_SIZE)
        for name, index in _BYTE_OF.items():
            raw[index] = getattr(self, name)
        return bytes(raw)

    def as_dict(self) -> dict[str, int]:
        """`{bootloader, tee, snp, microcode}`, the shape of a policy's `minimumTcb`."""
        return {name: getattr(self, name) for name in TCB_COMPONENTS}

    def __str__(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name in TCB_COMPONENTS)


def tcb_at_least(reported: TcbVersion, minimum: TcbVersion) -> list[str]:
    """The components of `reported` below `minimum`'s, in TCB_COMPONENTS order; empty: at least.

    Each component is compared on its own: a higher microcode level does not make up for an old
    SNP firmware (AMD's advisories name the component that must be updated)."""
    return [name for name in TCB_COMPONENTS if getattr(reported, name) < getattr(minimum, name)]
