"""Atheris (libFuzzer) target: `aicert verify` on mutations of genuine certificates and old proofs.

    python -m tests.fuzz.fuzz_verify [libFuzzer flags] [CORPUS_DIR ...]
    python -m tests.fuzz.fuzz_verify CRASH_FILE        # replay one input

`$AICERT_FUZZ_STATE` (default: a directory under the system's temporary directory) holds the
genuine seeds (`seeds/`, made once by tests.fuzz.genuine: two sealed runs, the real Azure old
proof, a soft-quoted old proof, a manifest) and the working corpus (`corpus/`, seeded from them
and passed to libFuzzer when no corpus is named). Every input must end as `aicert verify` may end
(tests.fuzz.genuine.Oracle): a result, `VerificationError` or `MalformedError`, and a result only
for a document that means what a genuine one means; each parser also gets the input's parts. Any
other exception is a crash: libFuzzer writes the input to `crash-*` (see -artifact_prefix).

Half of the mutations are structure-aware (tests.fuzz.mutations: a JSON value replaced, removed,
added or copied, or the bytes inside a base64 or PEM string edited), the rest libFuzzer's own.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["aicert"]):
    import aicert.verify  # noqa: F401  (first: aicert.legacy cannot be imported before it)
    from aicert.digest import Manifest, ManifestError

import contextlib

from tests.fuzz.genuine import Oracle, Seed, genuine_seeds
from tests.fuzz.mutations import RandomChooser, mutate_document

STATE_ENV = "AICERT_FUZZ_STATE"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path(tempfile.gettempdir()) / "aicert-fuzz")


def prepare(state: Path) -> list[Seed]:
    """The genuine seeds kept in `state/seeds` (made when absent), copied into `state/corpus`."""
    seeds_dir, corpus = state / "seeds", state / "corpus"
    if not seeds_dir.is_dir() or not any(seeds_dir.iterdir()):
        seeds_dir.mkdir(parents=True, exist_ok=True)
        for seed in genuine_seeds():
            (seeds_dir / seed.name).write_bytes(seed.data)
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = [Seed(p.name, p.read_bytes()) for p in sorted(seeds_dir.iterdir())]
    for seed in seeds:
        (corpus / f"seed-{seed.name}").write_bytes(seed.data)
    return seeds


_STATE = state_dir()
ORACLE = Oracle(prepare(_STATE))
_MANIFEST_FILE = _STATE / f"manifest-{os.getpid()}.json"


def test_one_input(data: bytes) -> None:
    ORACLE.check(data)
    if b'"files"' in data:  # Manifest.read: the certified manifest.json beside a model
        _MANIFEST_FILE.write_bytes(data)
        with contextlib.suppress(ManifestError):
            Manifest.read(_MANIFEST_FILE)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    try:
        mutated = mutate_document(data, RandomChooser(rng), 1 + rng.randrange(3))
    except RecursionError:  # nested deeper than the mutator walks: libFuzzer's own mutations
        return bytes(atheris.Mutate(data, max_size))
    return mutated if len(mutated) <= max_size else bytes(atheris.Mutate(data, max_size))


def main(argv: list[str]) -> None:
    if not any(not a.startswith("-") for a in argv[1:]):
        argv = [*argv, str(_STATE / "corpus")]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
