"""What `aicert verify` prints of a certificate's text stays on one line and cannot move the cursor:
every character `str.splitlines` breaks on (the fuzzer found U+2028 in an old proof's output path)
and every control or bidirectional override is shown as an escape."""

from __future__ import annotations

import pytest

from aicert.cli.verify import printable

LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("breaker", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_no_character_that_splits_lines_gets_through(breaker: str) -> None:
    shown = printable(f"missing: {breaker}; extra: weights.bin")
    assert len(shown.splitlines()) == 1
    assert shown == f"missing: {breaker.encode('unicode_escape').decode('ascii')}; extra: weights.bin"


def test_text_without_controls_is_unchanged() -> None:
    assert printable("model/weights-é.bin") == "model/weights-é.bin"
