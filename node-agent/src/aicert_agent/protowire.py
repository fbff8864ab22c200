"""The few parts of the protobuf wire format the agent's CRI calls need, by hand. Pure.

Decoding is bounded and strict: every length is checked against the bytes that are there, varints
are at most 10 bytes, a message holds at most MAX_FIELDS fields, groups (wire types 3 and 4) and field number 0 are refused, and a field the
caller reads as singular may appear only once (protobuf would let a later copy win; a runtime never
sends two, so a response with two is not one to trust). Any of these raises `WireError`, which
names the message and the field; nothing recurses except where the caller asks for a nested message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5
_MAX_VARINT_BYTES = 10
_MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_FIELDS = 100_000  # in one message: a status has tens (its labels, annotations and mounts included)


class WireError(ValueError):
    """A protobuf message that cannot be decoded, or is not the shape the caller reads."""


def encode_varint(value: int) -> bytes:
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint {value} is out of range")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or an embedded message)."""
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


def encode_string(number: int, text: str) -> bytes:
    return encode_bytes(number, text.encode("utf-8"))


def encode_bool(number: int, value: bool) -> bytes:
    return encode_varint(number << 3 | VARINT) + encode_varint(int(value))


def _varint(data: bytes, at: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if at + i >= len(data):
            raise WireError(f"{what}: a varint runs past the end of the message")
        byte = data[at + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise WireError(f"{what}: a varint is larger than 64 bits")
            return value, at + i + 1
        shift += 7
    raise WireError(f"{what}: a varint is longer than {_MAX_VARINT_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Field:
    number: int
    wire_type: int
    value: int | bytes  # an int for VARINT/FIXED64/FIXED32, the payload for LENGTH_DELIMITED


def fields(data: bytes, what: str) -> list[Field]:
    """Every field of the message `data`, in order (`what` names the message in errors)."""
    out: list[Field] = []
    at = 0
    while at < len(data):
        if len(out) == MAX_FIELDS:
            raise WireError(f"{what} has more than {MAX_FIELDS} fields")
        key, at = _varint(data, at, what)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise WireError(f"{what}: field number {number} is not valid")
        value: int | bytes
        if wire_type == VARINT:
            value, at = _varint(data, at, f"{what} field {number}")
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if at + size > len(data):
                raise WireError(f"{what} field {number}: {size} bytes run past the end of the message")
            value, at = int.from_bytes(data[at : at + size], "little"), at + size
        elif wire_type == LENGTH_DELIMITED:
            length, at = _varint(data, at, f"{what} field {number}")
            if length > len(data) - at:
                raise WireError(
                    f"{what} field {number}: its length {length} runs past the end of the message "
                    f"({len(data) - at} bytes left)"
                )
            value, at = data[at : at + length], at + length
        else:
            raise WireError(f"{what} field {number}: wire type {wire_type} is not supported")
        out.append(Field(number, wire_type, value))
    return out


class Message:
    """A decoded message, read field by field with the type the caller expects."""

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self._fields = fields(data, what)

    def _only(self, number: int, wire_type: int, name: str) -> Field | None:
        found = [f for f in self._fields if f.number == number]
        if not found:
            return None
        if len(found) > 1:
            raise WireError(f"{self.what}.{name} (field {number}) appears {len(found)} times")
        if found[0].wire_type != wire_type:
            raise WireError(f"{self.what}.{name} (field {number}) has wire type {found[0].wire_type}")
        return found[0]

    def string(self, number: int, name: str) -> str:
        """A singular string field; "" when absent (proto3's default)."""
        found = self._only(number, LENGTH_DELIMITED, name)
        return "" if found is None else _text(found, f"{self.what}.{name}")

    def message(self, number: int, name: str) -> Message | None:
        """A singular embedded message; None when absent."""
        found = self._only(number, LENGTH_DELIMITED, name)
        if found is None:
            return None
        assert isinstance(found.value, bytes)
        return Message(found.value, f"{self.what}.{name}")

    def strings(self, number: int, name: str) -> list[str]:
        """A repeated string field."""
        return [_text(f, f"{self.what}.{name}") for f in self._repeated(number, LENGTH_DELIMITED, name)]

    def string_map(self, number: int, name: str) -> dict[str, str]:
        """A map<string, string> field (repeated entries {key = 1, value = 2}); a key twice is refused."""
        out: dict[str, str] = {}
        for found in self._repeated(number, LENGTH_DELIMITED, name):
            assert isinstance(found.value, bytes)
            entry = Message(found.value, f"{self.what}.{name}")
            key = entry.string(1, "key")
            if key in out:
                raise WireError(f"{self.what}.{name} has the key {key[:80]!r} twice")
            out[key] = entry.string(2, "value")
        return out

    def _repeated(self, number: int, wire_type: int, name: str) -> Iterable[Field]:
        for found in self._fields:
            if found.number == number:
                if found.wire_type != wire_type:
                    raise WireError(f"{self.what}.{name} (field {number}) has wire type {found.wire_type}")
                yield found


def _text(found: Field, what: str) -> str:
    assert isinstance(found.value, bytes)
    try:
        return found.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
