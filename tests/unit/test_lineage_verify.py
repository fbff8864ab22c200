"""`aicert verify --lineage DIR`: from the certificate given back to the first run, each parent
verified on its own and each link checked. Each check fails, naming itself, when exactly its input
is tampered with.

Certificates are the agent's own (recorder, log, seal, and `input_parent` deciding the parents) on
`SoftTpm`s with real quotes (tests.lineage_runs)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.lineage_runs import certify, weights
from tests.soft_node import SoftNode, soft_node

from aicert.certificate import ParentRecord
from aicert.cli import main
from aicert.verify import VerificationError, VerifiedTraining
from aicert.verify.errors import LineageCheck
from aicert.verify.lineage import CertificateDirectories, Lineage, walk_lineage

AT = "2026-01-02T00:00:00Z"  # tests.pki.NOW and a day: inside the soft node's AK certificate


class Chain:
    """base (from data) -> tuned (from base's output) -> again (from tuned's output), on one node;
    their certificates are copied into `lineage` under names of no meaning."""

    def __init__(self, root: Path, node: SoftNode) -> None:
        self.root, self.node = root, node
        data = weights(root / "data", b"digits")
        self.base_dir = weights(root / "base", b"base weights")
        self.base = certify(node, "base", self.base_dir, {"data": data})
        self.tuned_dir = weights(root / "tuned", b"tuned weights")
        self.tuned = certify(node, "tuned", self.tuned_dir, {"base": self.base_dir})
        self.again_dir = weights(root / "again", b"tuned again")
        self.again = certify(node, "again", self.again_dir, {"tuned": self.tuned_dir})
        self.lineage = root / "lineage"
        self.lineage.mkdir()
        (self.lineage / "first.json").write_bytes(self.base)
        (self.lineage / "second").write_bytes(self.tuned)
        self.ca_pem = root / "ca.pem"
        self.ca_pem.write_bytes(node.ca.pem)
        self.given = root / "again.json"
        self.given.write_bytes(self.again)

    def argv(self, *more: str, certificate: Path | None = None) -> list[str]:
        given = certificate or self.given
        return ["verify", str(given), "--trust-bundle", str(self.ca_pem), "--at", AT, *more]


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path, soft_node(tmp_path))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def by_bytes(node: SoftNode) -> Callable[[bytes], VerifiedTraining]:
    return lambda data: node.verify(data.decode())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_chain_verifies_back_to_its_first_run(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(chain.argv("--lineage", str(chain.lineage), "--json"), capsys)
    assert code == 0, err
    lineage = json.loads(out)["lineage"]
    assert lineage["complete"] is True and lineage["weakest"] == "dev"
    assert [(r["certificate"], r["depth"]) for r in lineage["runs"]] == [
        (digest(chain.again), 0),
        (digest(chain.tuned), 1),
        (digest(chain.base), 2),
    ]
    assert lineage["runs"][2]["parents"] == [] and lineage["runs"][1]["input"] == "tuned"
    code, out, _ = run(chain.argv("--lineage", str(chain.lineage)), capsys)
    assert code == 0 and "lineage  complete: 3 runs, weakest level dev" in out


def test_lineage_directories_may_be_several(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    other = chain.root / "other"
    other.mkdir()
    (chain.lineage / "first.json").rename(other / "base-certificate.json")
    code, out, err = run(
        chain.argv("--lineage", str(chain.lineage), "--lineage", str(other), "--json"), capsys
    )
    assert code == 0, err
    assert len(json.loads(out)["lineage"]["runs"]) == 3


def test_a_missing_parent_leaves_the_lineage_incomplete(
    chain: Chain, capsys: pytest.CaptureFixture[str]
) -> None:
    (chain.lineage / "first.json").unlink()
    code, out, err = run(chain.argv("--lineage", str(chain.lineage), "--json"), capsys)
    assert code == 1
    assert json.loads(out)["check"] == LineageCheck.LINEAGE_COMPLETE and digest(chain.base) in err
    code, out, err = run(chain.argv("--lineage", str(chain.lineage), "--lineage-partial", "--json"), capsys)
    assert code == 0, err
    lineage = json.loads(out)["lineage"]
    assert lineage["complete"] is False and [m["certificate"] for m in lineage["missing"]] == [
        digest(chain.base)
    ]
    code, out, _ = run(chain.argv("--lineage", str(chain.lineage), "--lineage-partial"), capsys)
    assert code == 0 and "lineage  INCOMPLETE: 2 runs" in out and "missing  input base" in out


def test_a_reformatted_parent_is_not_the_parent(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    """The same certificate, reindented: it still verifies on its own, but it is not the bytes the
    run read, so it is not its parent."""
    (chain.lineage / "first.json").write_text(json.dumps(json.loads(chain.base), indent=1))
    code, out, _ = run(chain.argv("--lineage", str(chain.lineage), "--json"), capsys)
    assert code == 1 and json.loads(out)["check"] == LineageCheck.LINEAGE_COMPLETE


def test_a_parent_that_does_not_verify_fails_the_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base was certified on a node whose CA the verifier does not trust."""
    stranger = soft_node(tmp_path / "stranger-node")
    base_dir = weights(tmp_path / "base", b"base weights")
    base = certify(stranger, "base", base_dir, {})
    node = soft_node(tmp_path)
    chain_dir = tmp_path / "lineage"
    chain_dir.mkdir()
    (chain_dir / "base.json").write_bytes(base)
    given = tmp_path / "tuned.json"
    given.write_bytes(certify(node, "tuned", weights(tmp_path / "tuned", b"t"), {"base": base_dir}))
    (tmp_path / "ca.pem").write_bytes(node.ca.pem)
    argv = ["verify", str(given), "--trust-bundle", str(tmp_path / "ca.pem"), "--at", AT]
    code, out, _ = run([*argv, "--lineage", str(chain_dir), "--json"], capsys)
    assert code == 1
    failure = json.loads(out)
    assert failure["check"] == LineageCheck.LINEAGE_PARENT and "check ak-chain failed" in failure["reason"]
    assert run(argv, capsys)[0] == 0  # the run given verifies on its own


def test_a_link_to_another_model_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run records the right certificate but another subject for it (an agent that lied, through
    its own quote): the parent certifies another model."""
    node = soft_node(tmp_path)
    base_dir = weights(tmp_path / "base", b"base weights")
    base = certify(node, "base", base_dir, {})
    wrong = {"base": ParentRecord(certificate=digest(base), subject="ee" * 32)}
    given = tmp_path / "tuned.json"
    given.write_bytes(
        certify(node, "tuned", weights(tmp_path / "tuned", b"t"), {"base": base_dir}, parents=wrong)
    )
    (tmp_path / "lineage").mkdir()
    (tmp_path / "lineage" / "base.json").write_bytes(base)
    (tmp_path / "ca.pem").write_bytes(node.ca.pem)
    argv = ["verify", str(given), "--trust-bundle", str(tmp_path / "ca.pem"), "--at", AT]
    code, out, _ = run([*argv, "--lineage", str(tmp_path / "lineage"), "--json"], capsys)
    assert code == 1 and json.loads(out)["check"] == LineageCheck.LINEAGE_SUBJECT


def test_a_parent_changed_after_it_was_found(chain: Chain) -> None:
    directories = CertificateDirectories.index([chain.lineage])
    (chain.lineage / "second").write_bytes(chain.base)  # swapped between the index and the read
    result = chain.node.verify(chain.again.decode())
    with pytest.raises(VerificationError) as caught:
        walk_lineage(digest(chain.again), result, directories.find, by_bytes(chain.node))
    assert caught.value.check is LineageCheck.LINEAGE_DIGEST


def test_a_lineage_deeper_than_the_bound_is_refused(chain: Chain) -> None:
    directories = CertificateDirectories.index([chain.lineage])
    result = chain.node.verify(chain.again.decode())
    walk_lineage(digest(chain.again), result, directories.find, by_bytes(chain.node), max_depth=2)
    with pytest.raises(VerificationError) as caught:
        walk_lineage(digest(chain.again), result, directories.find, by_bytes(chain.node), max_depth=1)
    assert caught.value.check is LineageCheck.LINEAGE_BOUNDS and "deeper" in caught.value.reason
    with pytest.raises(VerificationError) as caught:
        walk_lineage(digest(chain.again), result, directories.find, by_bytes(chain.node), max_runs=2)
    assert caught.value.check is LineageCheck.LINEAGE_BOUNDS and "more than 2 runs" in caught.value.reason


def test_a_cycle_is_refused_not_followed(chain: Chain) -> None:
    """No honest digests make a cycle; a verifier that saw one (its `verify` says the base names the
    certificate given as its parent) refuses it at once."""
    directories = CertificateDirectories.index([chain.lineage])
    given = chain.node.verify(chain.again.decode())

    def verify(data: bytes) -> Any:
        verified = chain.node.verify(data.decode())
        if data != chain.base:
            return verified
        assert verified.statement is not None
        predicate = verified.statement.predicate
        looped = msgspec.structs.replace(
            predicate.inputs[0], parent=ParentRecord(certificate=digest(chain.again), subject="aa" * 32)
        )
        statement = msgspec.structs.replace(
            verified.statement, predicate=msgspec.structs.replace(predicate, inputs=[looped])
        )
        return msgspec.structs.replace(verified, statement=statement)

    with pytest.raises(VerificationError) as caught:
        walk_lineage(digest(chain.again), given, directories.find, verify)
    assert caught.value.check is LineageCheck.LINEAGE_BOUNDS and "cycle" in caught.value.reason


def test_a_base_read_twice_is_verified_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = soft_node(tmp_path)
    base_dir = weights(tmp_path / "base", b"base weights")
    base = certify(node, "base", base_dir, {})
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for entry in base_dir.iterdir():
        (copy_dir / entry.name).write_bytes(entry.read_bytes())
    merged = certify(node, "merged", weights(tmp_path / "merged", b"m"), {"a": base_dir, "b": copy_dir})
    seen: list[bytes] = []

    def verify(data: bytes) -> Any:
        seen.append(data)
        return node.verify(data.decode())

    lineage = walk_lineage(
        digest(merged),
        node.verify(merged.decode()),
        lambda d: (base, "base") if d == digest(base) else None,
        verify,
    )
    assert seen == [base] and len(lineage.links) == 2 and lineage.complete


def test_the_weakest_level_is_named(chain: Chain) -> None:
    directories = CertificateDirectories.index([chain.lineage])
    given = msgspec.structs.replace(chain.node.verify(chain.again.decode()), assurance="cvm")
    lineage: Lineage = walk_lineage(digest(chain.again), given, directories.find, by_bytes(chain.node))
    assert [link.result.assurance for link in lineage.links] == ["cvm", "dev", "dev"]
    assert lineage.weakest == "dev"


def test_unusable_lineage_options(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(chain.argv("--lineage", str(chain.given)), capsys)[0] == 2  # a file, not a directory
    assert run(chain.argv("--lineage", str(chain.root / "absent")), capsys)[0] == 2
    assert run(chain.argv("--lineage-partial"), capsys)[0] == 2


def test_without_lineage_nothing_is_followed(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(chain.argv("--json"), capsys)
    assert code == 0 and "lineage" not in json.loads(out)
