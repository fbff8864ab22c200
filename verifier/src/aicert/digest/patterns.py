"""Glob patterns over the relative POSIX paths of a manifest (`aicert verify --ignore PATTERN`).

A pattern is matched against a file's whole path relative to the directory, component by
component: ``*`` is any run of characters within one component, ``?`` one character, ``[…]`` a
class (``[!…]`` negated), and a component that is exactly ``**`` any number of components
(``.git/**`` is everything under ``.git``, ``**/README.md`` a README.md at any depth). ``*`` and
``?`` match a leading dot too. A pattern without a slash matches at the top level only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PathPatterns", "PatternError"]


class PatternError(ValueError):
    """A pattern that cannot name relative paths; the message names the pattern."""


def _class(component: str, start: int) -> tuple[str, int] | None:
    """The regex of the ``[…]`` class at ``start`` and the index after it; None if unterminated."""
    i = start + 1
    if i < len(component) and component[i] == "!":
        i += 1
    if i < len(component) and component[i] == "]":
        i += 1
    end = component.find("]", i)
    if end < 0:
        return None
    body = component[start + 1 : end]
    negated = body.startswith("!")
    body = body[1:] if negated else body
    escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[").replace("]", "\\]")
    return (f"[^/{escaped}]" if negated else f"(?!/)[{escaped}]"), end + 1


def _component(component: str) -> str:
    out, i = [], 0
    while i < len(component):
        char = component[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (found := _class(component, i)) is not None:
            out.append(found[0])
            i = found[1]
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _translate(pattern: str) -> str:
    if not pattern:
        raise PatternError("an empty pattern")
    if "\x00" in pattern:
        raise PatternError(f"{pattern!r} contains NUL")
    if pattern.startswith("/"):
        raise PatternError(f"{pattern!r} is absolute; patterns are relative to the directory")
    if pattern.endswith("/"):
        raise PatternError(f"{pattern!r} ends with '/'; name the files, e.g. {pattern}**")
    parts = pattern.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise PatternError(f"{pattern!r} has an empty, '.' or '..' component")
    regex = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex.append(".+" if last else "(?:[^/]+/)*")
        else:
            regex.append(_component(part) + ("" if last else "/"))
    return "".join(regex)


@dataclass(frozen=True)
class PathPatterns:
    """Some glob patterns; a path matches when any of them matches it whole."""

    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> PathPatterns:
        """Raises `PatternError` for an empty, absolute or otherwise unusable pattern."""
        given = tuple(patterns)
        return cls(given, tuple(re.compile(_translate(p), re.DOTALL) for p in given))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, path: str) -> str | None:
        """The first pattern that matches ``path`` whole, or None."""
        for pattern, compiled in zip(self.patterns, self._compiled, strict=True):
            if compiled.fullmatch(path):
                return pattern
        return None
