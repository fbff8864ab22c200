"""Structure-aware mutations of JSON documents, driven by any source of choices.

The same engine serves Hypothesis (choices drawn from `st.data()`, so failures shrink: the first
choice of each kind is the simplest) and the Atheris target's custom mutator (choices from a
seeded `random.Random`). A mutation edits one place of the document: a value replaced, removed,
added, copied from elsewhere, or, for a string, edited as bytes *after decoding* when it is base64
or PEM, so that the TPM structures and X.509 certificates inside a certificate are mutated too.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
from typing import Any, Protocol

Path = tuple[str | int, ...]


class Chooser(Protocol):
    def below(self, n: int) -> int:
        """A number in range(n); n >= 1."""
        ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def below(self, n: int) -> int:
        return self.rng.randrange(n)


# --- bytes --------------------------------------------------------------------------------------

INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0x20, 0x30, 0x0A)
INTERESTING_U16 = (b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x80\x00", b"\x01\x00", b"\x7f\xff")


def edit_bytes(data: bytes, choose: Chooser, edits: int = 1) -> bytes:
    """`data` with `edits` byte-level edits (flip a bit, set, insert, delete, truncate, ...)."""
    out = bytearray(data)
    for _ in range(edits):
        kind = choose.below(8)
        at = choose.below(len(out) + 1)
        if kind == 0 and out:  # flip one bit
            at = min(at, len(out) - 1)
            out[at] ^= 1 << choose.below(8)
        elif kind == 1 and out:  # an interesting byte
            out[min(at, len(out) - 1)] = INTERESTING_BYTES[choose.below(len(INTERESTING_BYTES))]
        elif kind == 2:  # insert a byte
            out.insert(at, choose.below(256))
        elif kind == 3 and out:  # delete a byte
            del out[min(at, len(out) - 1)]
        elif kind == 4:  # truncate
            del out[at:]
        elif kind == 5:  # an interesting 16-bit value (TPM sizes, counts, algorithm ids)
            out[at : at + 2] = INTERESTING_U16[choose.below(len(INTERESTING_U16))]
        elif kind == 6 and out:  # duplicate a chunk
            end = min(len(out), at + 1 + choose.below(64))
            out[at:at] = out[at:end]
        else:  # trailing bytes
            out += bytes([choose.below(256)])
    return bytes(out)


# --- strings ------------------------------------------------------------------------------------

_PEM = re.compile(r"^(.*?-----BEGIN ([A-Z ]+)-----\n)(.*?)(\n-----END \2-----.*)$", re.S)
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
STRING_EDITS = ("\n", "\x00", "\ud800", "é", "\u202e", " ", "Z", "0", "-", "/", "..", "\\")


def _decoded(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def edit_string(value: str, choose: Chooser) -> str:
    """Edit the bytes a string encodes (PEM or base64) or the string itself."""
    pem = _PEM.match(value)
    if pem and choose.below(4):
        head, _, body, tail = pem.groups()
        der = _decoded("".join(body.split()))
        if der is not None:
            return (
                head
                + base64.encodebytes(edit_bytes(der, choose, 1 + choose.below(3))).decode().strip()
                + tail
            )
    if _BASE64.match(value) and choose.below(4):
        decoded = _decoded(value)
        if decoded is not None:
            return base64.b64encode(edit_bytes(decoded, choose, 1 + choose.below(3))).decode()
    kind = choose.below(4)
    at = choose.below(len(value) + 1)
    if kind == 0:
        return value[:at] + STRING_EDITS[choose.below(len(STRING_EDITS))] + value[at:]
    if kind == 1:
        return value[:at]
    if kind == 2 and value:
        at = min(at, len(value) - 1)
        return value[:at] + chr(ord(value[at]) ^ (1 << choose.below(7))) + value[at + 1 :]
    return value + value


# --- trees --------------------------------------------------------------------------------------

HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    0,
    -1,
    True,
    "",
    [],
    {},
    1.5,
    2**53 - 1,
    -(2**53) + 1,
    1e308,
    "x" * 300,
    "sha256:" + "0" * 64,
    "0" * 64,
    "2026-01-01T00:00:00Z",
    "redacted",
    "aicert.seal",
    [[[[]]]],
    {"": None},
)
FIELD_NAMES = (
    "platform",
    "hclReport",
    "content",
    "type",
    "seq",
    "digest",
    "run",
    "salt",
    "statement",
    "event_type",
    "base64",
    "namespace",
    "uid",
    "image",
    "network",
    "23",
    "16",
    "apiVersion",
    "remote_attestation",
    "ca_cert",
    "x",
)


def paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a JSON tree, the root first, in document order."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def get_at(node: Any, path: Path) -> Any:
    for key in path:
        node = node[key]
    return node


def _parent(document: Any, path: Path) -> tuple[Any, str | int]:
    return get_at(document, path[:-1]), path[-1]


def mutate_tree(document: Any, choose: Chooser) -> Any:
    """A copy of `document` with one place changed; the root is never removed."""
    changed = copy.deepcopy(document)
    places = paths(changed)
    path = places[choose.below(len(places))]
    value = get_at(changed, path)
    op = choose.below(7)
    if op == 0 and isinstance(value, str):
        new: Any = edit_string(value, choose)
    elif op == 1:
        new = copy.deepcopy(HOSTILE_VALUES[choose.below(len(HOSTILE_VALUES))])
    elif op == 2:  # a value from elsewhere in the document
        new = copy.deepcopy(get_at(changed, places[choose.below(len(places))]))
    elif op == 3 and path:  # remove it
        parent, key = _parent(changed, path)
        del parent[key]
        return changed
    elif op == 4 and isinstance(value, dict):  # add a field
        name = FIELD_NAMES[choose.below(len(FIELD_NAMES))]
        value[name] = copy.deepcopy(HOSTILE_VALUES[choose.below(len(HOSTILE_VALUES))])
        return changed
    elif op == 5 and isinstance(value, list) and value:  # repeat or reorder an element
        i, j = choose.below(len(value)), choose.below(len(value))
        if choose.below(2):
            value.insert(j, copy.deepcopy(value[i]))
        else:
            value[i], value[j] = value[j], value[i]
        return changed
    elif isinstance(value, int) and not isinstance(value, bool):
        new = value + (-1, 1, 2**32, -(2**31))[choose.below(4)]
    elif isinstance(value, str):
        new = edit_string(value, choose)
    else:
        new = copy.deepcopy(HOSTILE_VALUES[choose.below(len(HOSTILE_VALUES))])
    if not path:
        return new
    parent, key = _parent(changed, path)
    parent[key] = new
    return changed


def mutate_document(data: bytes, choose: Chooser, mutations: int = 1) -> bytes:
    """`data` (JSON) with `mutations` tree mutations, serialized again (ASCII, so a lone surrogate
    is an escape the strict reader must refuse); not JSON: byte edits instead."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return edit_bytes(data, choose, mutations)
    for _ in range(mutations):
        document = mutate_tree(document, choose)
    return json.dumps(document).encode()
