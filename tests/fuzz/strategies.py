"""Hypothesis strategies and settings shared by the property tests.

CI runs each property for a bounded number of examples (`examples(n)`); `make fuzz` sets
AICERT_FUZZ_SCALE to run many more. No deadline: a slow example on a loaded CI machine is not a
failure, a hang is caught by the bounded Atheris run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.mutations import edit_bytes, mutate_document

_SCALE = max(1, int(os.environ.get("AICERT_FUZZ_SCALE", "1")))
settings.register_profile(
    "aicert-fuzz",
    deadline=None,
    database=None,  # nothing written into the work tree; a failure prints its example
    print_blob=True,
    # capsys is the one function-scoped fixture used, and each example drains it
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.load_profile("aicert-fuzz")


def examples(n: int) -> int:
    """`n` examples in CI, `n` x AICERT_FUZZ_SCALE with `make fuzz`."""
    return n * _SCALE


class DrawChooser:
    """Choices drawn from Hypothesis (`data.draw`, or a composite's `draw`): a failing example
    shrinks towards the first choice of each kind, the simplest."""

    def __init__(self, draw: Callable[[st.SearchStrategy[int]], int]) -> None:
        self.draw = draw

    def below(self, n: int) -> int:
        return self.draw(st.integers(0, n - 1)) if n > 1 else 0


# JSON values JCS (RFC 8785) can encode: what a genuine signer could put in a document.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def edited_bytes(seed: bytes, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """`seed` with up to `max_edits` byte-level edits (tests.fuzz.mutations.edit_bytes)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        return edit_bytes(seed, DrawChooser(draw), draw(st.integers(0, max_edits)))

    return build()


def mutated_document(seed: bytes, max_mutations: int = 3) -> st.SearchStrategy[bytes]:
    """`seed` (JSON) with 1 to `max_mutations` structure-aware mutations."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        return mutate_document(seed, DrawChooser(draw), draw(st.integers(1, max_mutations)))

    return build()
