"""Property tests on `tlog-inclusion`: a bundle's transparency log entry is untrusted JSON, read by
aicert.tlog and checked against a pinned log key.

Whatever the entry (tree mutations of its JSON: values swapped, fields added, removed or retyped,
strings edited; byte edits of its checkpoint note), `read_tlog_entry` returns or raises MalformedError
naming a field of the entry, and `inclusion_problem` returns None or a reason, never an exception;
and an entry it accepts is the genuine one's leaf, index, tree and checkpoint: whatever changed
touched only what nothing signs or hashes (`integratedTime`, `logId`). The genuine entry is a real
rekor-tiles v2.3.0 answer (tests/assets/rekor-tiles-v2.3.0-responses.json).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from aicert.tlog import inclusion_problem, read_tlog_entry
from aicert.verify import MalformedError
from tests.fuzz.strategies import edited_bytes, examples, mutated_document

pytestmark = pytest.mark.fuzz

RECORDED = json.loads(
    (Path(__file__).resolve().parents[1] / "assets" / "rekor-tiles-v2.3.0-responses.json").read_text()
)
LOGGED = RECORDED["entries"][-1]
LOG_KEY = load_pem_public_key(RECORDED["logPublicKey"].encode())
REQUEST = LOGGED["request"]["hashedRekordRequestV002"]
SIGNER = load_der_public_key(base64.b64decode(REQUEST["signature"]["verifier"]["publicKey"]["rawBytes"]))
SIGNED = base64.b64decode(LOGGED["pae"])
SIGNATURE = base64.b64decode(REQUEST["signature"]["content"])
GENUINE = read_tlog_entry(LOGGED["response"], "e")
SEED = json.dumps(LOGGED["response"]).encode()


def outcome(raw: Any) -> None:
    try:
        entry = read_tlog_entry(raw, "e")
    except MalformedError as exc:
        assert exc.field.startswith("e") and exc.reason
        return
    problem = inclusion_problem(entry, SIGNED, SIGNATURE, SIGNER, [LOG_KEY])
    if problem is None:
        assert (entry.body, entry.log_index, entry.tree_size, entry.root_hash, entry.proof) == (
            GENUINE.body,
            GENUINE.log_index,
            GENUINE.tree_size,
            GENUINE.root_hash,
            GENUINE.proof,
        )
    else:
        assert isinstance(problem, str) and problem


def test_the_genuine_entry_passes() -> None:
    assert inclusion_problem(GENUINE, SIGNED, SIGNATURE, SIGNER, [LOG_KEY]) is None


@settings(max_examples=examples(300))
@given(mutated_document(SEED))
def test_a_mutated_entry_is_refused_or_is_the_genuine_one(data: bytes) -> None:
    try:
        raw = json.loads(data)
    except ValueError:
        return
    outcome(raw)


@settings(max_examples=examples(300))
@given(edited_bytes(LOGGED["response"]["inclusionProof"]["checkpoint"]["envelope"].encode()))
def test_an_edited_checkpoint_is_refused_or_signs_the_same_tree(note: bytes) -> None:
    raw = json.loads(SEED)
    raw["inclusionProof"]["checkpoint"]["envelope"] = note.decode("utf-8", "replace")
    outcome(raw)


@settings(max_examples=examples(100))
@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_any_index_and_tree_size_are_refused_quickly(index: int, size: int) -> None:
    raw = json.loads(SEED)
    raw["logIndex"] = raw["inclusionProof"]["logIndex"] = str(index)
    raw["inclusionProof"]["treeSize"] = str(size)
    outcome(raw)
