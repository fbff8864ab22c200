"""Strict JSON for everything the verifier reads: certificates, old proofs and their events, policies.

Python's `json` accepts documents that other readers see differently or cannot handle at all:
duplicate keys (the last one wins here, the first in other readers, so one signed document could
show two statements), integers of any length (beyond RFC 8785's range, and slow to convert),
`NaN` and `Infinity`, lone UTF-16 surrogates (`"\\ud800"`, not Unicode text), and nesting deep
enough to exhaust the stack (a RecursionError). `loads_strict` refuses all of them with a
`MalformedError` naming where in the document the problem is. `read_bounded_file` refuses what is not a regular file
(a FIFO would block, `/dev/zero` never ends) and caps how much is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Final

from aicert.boundedfile import FileRefused, MiB, read_bounded, read_regular_file, size_text
from aicert.verify.errors import MalformedError

CERTIFICATE_MAX_BYTES: Final = 16 * MiB
POLICY_MAX_BYTES: Final = 1 * MiB
MAX_DEPTH: Final = 64  # objects and arrays nested in one another
MAX_SAFE_INTEGER: Final = 2**53 - 1  # RFC 8785 (JCS) serializes numbers as IEEE 754 doubles
_MAX_INTEGER_DIGITS: Final = len(str(MAX_SAFE_INTEGER))


class _Refused:
    """Stands in for a value the parser must not return; the walk after parsing reports it with
    its place in the document (the parser's hooks do not know where they are)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _DuplicateKeys(dict[str, Any]):
    """An object in which `key` appeared more than once."""

    key: str = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    marked = _DuplicateKeys(result)
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    return marked


def _integer(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits <= _MAX_INTEGER_DIGITS:  # never convert a long one: that costs time, then raises
        value = int(text)
        if abs(value) <= MAX_SAFE_INTEGER:
            return value
    shown = text if digits <= 40 else f"{text[:20]}… ({digits} digits)"
    return _Refused(f"integer {shown} is outside ±(2^53-1), the range canonical JSON (RFC 8785) allows")


def _float(text: str) -> float | _Refused:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        shown = text if len(text) <= 40 else f"{text[:20]}…"
        return _Refused(f"number {shown} is too large to be a finite double")
    return value


def _constant(text: str) -> _Refused:
    return _Refused(f"{text} is not a JSON number")


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


_CHECKED = (str, dict, list, _Refused)  # numbers, booleans and null need no look


def _first_problem(document: Any, max_depth: int) -> tuple[str, str] | None:
    """(where, what) of the first refused value, depth-first in document order; no recursion."""
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if _has_lone_surrogate(value):
                return where, "contains a lone UTF-16 surrogate, which is not Unicode text"
            continue
        if isinstance(value, _Refused):
            return where, value.reason
        if not isinstance(value, dict | list):  # a number, boolean or null: the whole document
            continue
        if depth > max_depth:
            return where, f"nests objects and arrays deeper than {max_depth} levels"
        if isinstance(value, _DuplicateKeys):
            return where, f"has the key {value.key!r} more than once"
        if isinstance(value, dict):
            if any(_has_lone_surrogate(key) for key in value):
                return where, "has a key containing a lone UTF-16 surrogate, which is not Unicode text"
            children = [(v, _join(where, k), depth + 1) for k, v in value.items() if isinstance(v, _CHECKED)]
        else:
            children = [
                (v, _join(where, i), depth + 1) for i, v in enumerate(value) if isinstance(v, _CHECKED)
            ]
        stack.extend(reversed(children))
    return None


def loads_strict(
    data: bytes | str,
    *,
    what: str,
    field: str = "",
    max_depth: int = MAX_DEPTH,
    max_bytes: int = CERTIFICATE_MAX_BYTES,
) -> Any:
    """Parse one JSON document, refusing what JSON readers disagree on or cannot handle.

    `what` names the document in messages ("the certificate"); `field` is where it sits, the
    prefix of the `MalformedError.field` of a problem inside it ("" for a whole certificate,
    "event_log[3]" for an event of an old proof). Bytes must be UTF-8.
    """
    if len(data) > max_bytes:
        raise MalformedError(field, f"{what} is larger than {size_text(max_bytes)}, the limit")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError(field, f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = data
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise MalformedError(field, f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedError(
            field, f"{what} nests objects and arrays deeper than {max_depth} levels"
        ) from None
    problem = _first_problem(document, max_depth)
    if problem is not None:
        where, reason = problem
        separator = "" if not field or not where or where.startswith("[") else "."
        raise MalformedError(f"{field}{separator}{where}", reason)
    return document


def read_bounded_stream(stream: BinaryIO, *, limit: int, field: str, name: str) -> bytes:
    """At most `limit` bytes from `stream` (read to its end), or MalformedError if there are more."""
    try:
        return read_bounded(stream, limit=limit, name=name)
    except FileRefused as exc:
        raise MalformedError(field, str(exc)) from None


def read_bounded_file(path: Path, *, limit: int, field: str) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (aicert.boundedfile), or
    MalformedError naming `field`: a FIFO, a device or a directory is refused, never read."""
    try:
        return read_regular_file(path, limit=limit)
    except FileRefused as exc:
        raise MalformedError(field, str(exc)) from None
