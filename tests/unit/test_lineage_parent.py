"""Which input is an earlier certified run's output (aicert.lineage.parent_in_volume), and the link
in the statement, bound by the quote. The attacks first: a genuine certificate of another model
copied next to one's own data must not lend its lineage.

Certificates are the agent's own (recorder, log, seal) on a `SoftTpm` with real quotes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
from tests.lineage_runs import certify, weights
from tests.soft_node import SoftNode, soft_node

from aicert.certificate import MAX_PARENTS
from aicert.digest import CERTIFICATE_FILE, MANIFEST_FILE, OUTPUT_EXCLUDED, hash_tree
from aicert.events import EventError, statement_from_events
from aicert.lineage import PARENT_CERTIFICATE_MAX_BYTES, parent_in_volume, weights_root
from aicert.verify import Check, VerificationError
from aicert_agent.parents import input_parent


@pytest.fixture
def node(tmp_path: Path) -> SoftNode:
    return soft_node(tmp_path)


@pytest.fixture
def base(tmp_path: Path, node: SoftNode) -> Path:
    """A certified run's output directory: weights, manifest.json, aicert-certificate.json."""
    data = weights(tmp_path / "base-data", b"digits")
    output = weights(tmp_path / "base", b"base weights")
    certify(node, "base", output, {"data": data})
    return output


def test_a_borrowed_certificate_is_not_a_parent(tmp_path: Path, base: Path) -> None:
    """A tenant copies a famous model's genuine certificate (and its manifest) next to its own data."""
    own = weights(tmp_path / "own", b"my own data, not the famous model")
    for name in (CERTIFICATE_FILE, MANIFEST_FILE):
        (own / name).write_bytes((base / name).read_bytes())
    manifest = hash_tree(own)
    decision = input_parent(own, manifest, "input own", recorded=0)
    assert decision.parent is None
    assert "another model's certificate" in decision.reason


def test_the_famous_weights_with_extra_files_are_not_that_model(tmp_path: Path, base: Path) -> None:
    copy_dir = tmp_path / "copy"
    os.makedirs(copy_dir)
    for entry in base.iterdir():
        (copy_dir / entry.name).write_bytes(entry.read_bytes())
    (copy_dir / "poison.bin").write_bytes(b"extra")
    assert input_parent(copy_dir, hash_tree(copy_dir), "input copy", recorded=0).parent is None


def test_an_earlier_runs_output_is_a_parent(base: Path) -> None:
    manifest = hash_tree(base)
    decision = input_parent(base, manifest, "input base", recorded=0)
    assert decision.parent is not None
    certificate = (base / CERTIFICATE_FILE).read_bytes()
    assert decision.parent.certificate == hashlib.sha256(certificate).hexdigest()
    subject = json.loads(certificate)["statement"]["subject"][0]["digest"]["sha256"]
    assert decision.parent.subject == subject == weights_root(manifest)
    assert manifest.root != subject  # the input is measured whole, its certificate included


def test_a_copy_of_the_output_is_a_parent(tmp_path: Path, base: Path) -> None:
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for entry in base.iterdir():
        (copy_dir / entry.name).write_bytes(entry.read_bytes())
    assert input_parent(copy_dir, hash_tree(copy_dir), "input copy", recorded=0).parent is not None


def test_a_certificate_changed_after_the_measurement_is_not_a_parent(base: Path) -> None:
    manifest = hash_tree(base)
    text = (base / CERTIFICATE_FILE).read_bytes()
    assert parent_in_volume(manifest, text).parent is not None
    decision = parent_in_volume(manifest, text.replace(b'"attempt":0', b'"attempt":1'))
    assert decision.parent is None and "changed after it was measured" in decision.reason


def test_not_a_certificate_is_not_a_parent(tmp_path: Path) -> None:
    volume = weights(tmp_path / "v", b"w")
    (volume / CERTIFICATE_FILE).write_bytes(b'{"apiVersion": "aicert.dev/v1alpha1"}')
    decision = input_parent(volume, hash_tree(volume), "input v", recorded=0)
    assert decision.parent is None and "is not a certificate" in decision.reason


def test_an_oversized_certificate_is_never_read(tmp_path: Path, base: Path) -> None:
    volume = weights(tmp_path / "v", b"w")
    with open(volume / CERTIFICATE_FILE, "wb") as f:
        f.truncate(PARENT_CERTIFICATE_MAX_BYTES + 1)  # sparse: a read would take it all
    manifest = hash_tree(volume)
    decision = parent_in_volume(manifest, None)
    assert decision.parent is None and "not read" in decision.reason
    assert input_parent(volume, manifest, "input v", recorded=0).reason == decision.reason


def test_a_linked_certificate_is_not_a_parent(tmp_path: Path, base: Path) -> None:
    volume = tmp_path / "linked"
    volume.mkdir()
    (volume / "weights.bin").write_bytes(b"base weights")
    (volume / "kept").write_bytes((base / CERTIFICATE_FILE).read_bytes())
    os.symlink("kept", volume / CERTIFICATE_FILE)
    manifest = hash_tree(volume, symlinks="record")
    decision = input_parent(volume, manifest, "input linked", recorded=0)
    assert decision.parent is None and "symbolic link" in decision.reason


def test_a_certificate_below_the_top_level_is_not_a_parent(tmp_path: Path, base: Path) -> None:
    volume = tmp_path / "nested"
    (volume / "base").mkdir(parents=True)
    for entry in base.iterdir():
        (volume / "base" / entry.name).write_bytes(entry.read_bytes())
    assert input_parent(volume, hash_tree(volume), "input nested", recorded=0).parent is None


def test_no_more_parents_than_the_bound(base: Path) -> None:
    manifest = hash_tree(base)
    assert input_parent(base, manifest, "input", recorded=MAX_PARENTS - 1).parent is not None
    decision = input_parent(base, manifest, "input", recorded=MAX_PARENTS)
    assert decision.parent is None and "the most" in decision.reason


def test_the_parent_is_in_the_statement_and_verifies(tmp_path: Path, node: SoftNode, base: Path) -> None:
    output = weights(tmp_path / "tuned", b"tuned weights")
    child = json.loads(certify(node, "tuned", output, {"base": base}))
    [recorded] = child["statement"]["predicate"]["inputs"]
    assert (
        recorded["parent"]["certificate"]
        == hashlib.sha256((base / CERTIFICATE_FILE).read_bytes()).hexdigest()
    )
    assert node.verify(child).statement.predicate.inputs[0].parent is not None  # type: ignore[union-attr]


def test_a_rewritten_parent_breaks_the_quote(tmp_path: Path, node: SoftNode, base: Path) -> None:
    output = weights(tmp_path / "tuned", b"tuned weights")
    child = json.loads(certify(node, "tuned", output, {"base": base}))
    forged = copy.deepcopy(child)
    forged["statement"]["predicate"]["inputs"][0]["parent"]["certificate"] = "00" * 32
    with pytest.raises(VerificationError) as caught:
        node.verify(forged)
    assert caught.value.check is Check.QUOTE_BINDING


def test_a_parent_added_to_the_statement_and_its_event_breaks_the_event_digest(
    tmp_path: Path, node: SoftNode
) -> None:
    data = weights(tmp_path / "data", b"plain")
    output = weights(tmp_path / "out", b"w")
    child = json.loads(certify(node, "plain", output, {"data": data}))
    forged = copy.deepcopy(child)
    link = {"certificate": "11" * 32, "subject": "22" * 32}
    forged["statement"]["predicate"]["inputs"][0]["parent"] = link
    event = next(e for e in forged["evidence"]["eventLog"] if e["type"] == "aicert.input")
    event["content"]["parent"] = link
    with pytest.raises(VerificationError) as caught:
        node.verify(forged)
    assert caught.value.check in (Check.EVENT_DIGEST, Check.QUOTE_BINDING)


def test_a_statement_with_too_many_parents_is_refused() -> None:
    salt = "ab" * 16
    run = {
        "type": "aicert.run", "run": "r", "salt": salt, "node": "n", "startedOn": "2026-01-01T00:00:00Z",
        "name": "r", "attempt": 0, "spec": {},
    }  # fmt: skip
    link = {"certificate": "11" * 32, "subject": "22" * 32}
    inputs = [
        {"type": "aicert.input", "run": "r", "salt": salt, "name": f"i{n}", "root": "33" * 32, "files": 1,
         "bytes": 1, "parent": link}
        for n in range(MAX_PARENTS + 1)
    ]  # fmt: skip
    output = {
        "type": "aicert.output", "run": "r", "salt": salt, "name": "model", "root": "44" * 32, "files": 1,
        "bytes": 1, "finishedOn": "2026-01-01T00:00:01Z",
    }  # fmt: skip
    statement_from_events([run, *inputs[:MAX_PARENTS], output], assurance="dev", boot_pcrs={})
    with pytest.raises(EventError, match="parent"):
        statement_from_events([run, *inputs, output], assurance="dev", boot_pcrs={})


def test_weights_root_leaves_out_what_aicert_writes(base: Path) -> None:
    assert weights_root(hash_tree(base)) == hash_tree(base, exclude=OUTPUT_EXCLUDED).root
