"""`tlog-inclusion`: a bundle's Rekor v2 entry, checked offline against a pinned log key.

The Merkle code is held to the RFC 6962 test vectors of transparency-dev/merkle (v0.0.2,
testonly/constants.go and proof/verify_test.go: the tree of 8 leaves every RFC 6962 implementation
tests with) and to RFC 6962's own recursive definition (MTH and PATH, section 2.1) for every index
of trees up to 33 leaves. Responses recorded from a real rekor-tiles v2.3.0 (cmd/rekor-server/posix
on 127.0.0.1, Ed25519 log key; tests/assets/rekor-tiles-v2.3.0-responses.json) verify with that key.
The bundle tests log the AK's envelope in a small log built here (RFC 6962 hashing, a checkpoint
signed as a signed note, as rekor-tiles' pkg/note signs it), then tamper with exactly one input.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_public_key,
)
from tests.soft_tpm import AT, Run, SoftTpm, certified_run

from aicert.bundle import IN_TOTO_PAYLOAD_TYPE, dsse_signature, pae
from aicert.cli import main as aicert_main
from aicert.tlog import (
    expected_body,
    hashedrekord_request,
    inclusion_problem,
    leaf_hash,
    log_key_id,
    node_hash,
    read_tlog_entry,
    root_from_inclusion_proof,
)
from aicert.trust import TrustStore
from aicert.verify import Check, MalformedError, VerificationError, Verifier
from aicert_agent.bundling import sign_bundle

WHEN = dt.datetime.fromisoformat(AT.replace("Z", "+00:00"))
RECORDED = Path(__file__).parents[1] / "assets" / "rekor-tiles-v2.3.0-responses.json"
Json = dict[str, Any]


# --- RFC 6962 Merkle tree -------------------------------------------------------------------------

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [  # by tree size 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
PROOFS = [  # (leaf index, tree size, proof), proof/verify_test.go (which counts leaves from 1)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]  # fmt: skip


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH(D[n]), by its recursive definition."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1: PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def test_the_rfc_6962_roots() -> None:
    assert [mth(LEAVES[:n]).hex() for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(("index", "size", "proof"), PROOFS)
def test_the_rfc_6962_inclusion_proofs_verify(index: int, size: int, proof: list[str]) -> None:
    hashes = [bytes.fromhex(h) for h in proof]
    assert path(index, LEAVES[:size]) == hashes
    root = root_from_inclusion_proof(index, size, leaf_hash(LEAVES[index]), hashes)
    assert root is not None and root.hex() == ROOTS[size - 1]


def test_every_index_of_trees_up_to_33_leaves_verifies_and_wrong_ones_do_not() -> None:
    leaves = [bytes([i]) * i for i in range(33)]
    for size in range(1, 34):
        root = mth(leaves[:size])
        for index in range(size):
            proof = path(index, leaves[:size])
            leaf = leaf_hash(leaves[index])
            assert root_from_inclusion_proof(index, size, leaf, proof) == root
            assert root_from_inclusion_proof(index, size, leaf_hash(b"other"), proof) != root
            # (another tree size may give the same path: the checkpoint signs the size with the root)
            assert root_from_inclusion_proof(index, size, leaf, [*proof, leaf]) != root
            if proof:
                assert root_from_inclusion_proof(index, size, leaf, proof[:-1]) != root
        assert root_from_inclusion_proof(size, size, leaf_hash(b""), []) is None


# --- responses of a real rekor-tiles v2.3.0 ---------------------------------------------------------


def test_responses_recorded_from_rekor_tiles_verify_with_its_key() -> None:
    recorded = json.loads(RECORDED.read_text())
    log_key = load_pem_public_key(recorded["logPublicKey"].encode())
    for logged in recorded["entries"]:
        request = logged["request"]["hashedRekordRequestV002"]
        key = load_der_public_key(base64.b64decode(request["signature"]["verifier"]["publicKey"]["rawBytes"]))
        signed = base64.b64decode(logged["pae"])
        signature = base64.b64decode(request["signature"]["content"])
        # our request is the one that was sent, byte for byte, and the log's leaf is the one we expect
        assert hashedrekord_request(signed, signature, key) == logged["request"]
        entry = read_tlog_entry(logged["response"], "tlogEntries[0]")
        assert entry.body == expected_body(signed, signature, key)
        assert inclusion_problem(entry, signed, signature, key, [log_key]) is None
        other = ed25519.Ed25519PrivateKey.generate().public_key()
        assert "not signed by a pinned log key" in str(
            inclusion_problem(entry, signed, signature, key, [other])
        )


# --- a bundle logged in a log built here ----------------------------------------------------------


class Log:
    """A transparency log of a few entries with an Ed25519 (or ECDSA) key, as rekor-tiles makes them."""

    def __init__(self, origin: str = "aicert-test-log", key: Any = None) -> None:
        self.origin = origin
        self.key = key or ed25519.Ed25519PrivateKey.generate()
        self.leaves: list[bytes] = [b'{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{}}']

    def pem(self, path: Path) -> str:
        path.write_bytes(self.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        return str(path)

    def checkpoint(self, size: int, root: bytes, key: Any = None) -> str:
        key = key or self.key
        text = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            signature = key.sign(text.encode())
        else:
            signature = key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        blob = log_key_id(self.origin, key.public_key()) + signature
        return f"{text}\n\u2014 {self.origin} {base64.b64encode(blob).decode()}\n"

    def add(self, body: bytes) -> Json:
        self.leaves.append(body)
        self.leaves.append(b'{"later":true}')  # the entry is not the last one
        index, size = len(self.leaves) - 2, len(self.leaves)
        root = mth(self.leaves)
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        return {
            "logIndex": str(index),
            "logId": {"keyId": b64(hashlib.sha256(b"log").digest())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
            "integratedTime": "0",
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": b64(root),
                "treeSize": str(size),
                "hashes": [b64(h) for h in path(index, self.leaves)],
                "checkpoint": {"envelope": self.checkpoint(size, root)},
            },
            "canonicalizedBody": b64(body),
        }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("tlog"), azure_dir)


def envelope_entry_body(run: Run, bundle: Json) -> bytes:
    envelope = bundle["dsseEnvelope"]
    signed = pae(IN_TOTO_PAYLOAD_TYPE, base64.b64decode(envelope["payload"]))
    key = load_pem_public_key(run.certificate["evidence"]["ak"]["public"].encode())
    return expected_body(signed, base64.b64decode(envelope["signatures"][0]["sig"]), key)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def logged(run: Run, log: Log) -> Json:
    bundle = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    bundle["verificationMaterial"]["tlogEntries"] = [log.add(envelope_entry_body(run, bundle))]
    return bundle


def verify(run: Run, document: Json, keys: list[Any], require: bool = False) -> Any:
    verifier = Verifier(TrustStore.from_pem_file(run.ca_pem), tlog_keys=keys, require_tlog=require)
    return verifier.verify(json.dumps(document), at=WHEN)


def expect(run: Run, document: Json, log: Log, reason: str, *, require: bool = False) -> None:
    with pytest.raises(VerificationError) as caught:
        verify(run, document, [log.key.public_key()], require)
    assert (caught.value.check, reason in caught.value.reason) == (Check.TLOG_INCLUSION, True), (
        caught.value.reason
    )


def proof_of(bundle: Json) -> Json:
    proof: Json = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    return proof


def test_a_logged_bundle_passes_tlog_inclusion(run: Run, log: Log, logged: Json) -> None:
    result = verify(run, logged, [log.key.public_key()], require=True)
    assert Check.TLOG_INCLUSION in result.passed


def test_an_ecdsa_log_key_is_checked_too(run: Run) -> None:
    log = Log(key=ec.generate_private_key(ec.SECP256R1()))
    bundle = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    bundle["verificationMaterial"]["tlogEntries"] = [log.add(envelope_entry_body(run, bundle))]
    assert Check.TLOG_INCLUSION in verify(run, bundle, [log.key.public_key()]).passed


def test_without_a_pinned_key_the_entry_is_skipped_saying_so(run: Run, logged: Json) -> None:
    skipped = dict(verify(run, logged, []).skipped)
    assert "no log key is pinned" in skipped[Check.TLOG_INCLUSION]


def test_without_an_entry_it_is_skipped_unless_required(run: Run, log: Log, logged: Json) -> None:
    logged["verificationMaterial"]["tlogEntries"] = []
    assert "carries no transparency log entry" in dict(verify(run, logged, []).skipped)[Check.TLOG_INCLUSION]
    expect(run, logged, log, "--require-tlog requires one", require=True)


def test_a_certificate_json_fails_when_a_log_entry_is_required(run: Run, log: Log) -> None:
    expect(run, run.certificate, log, "not a Sigstore bundle", require=True)


def test_a_wrong_leaf_fails(run: Run, log: Log, logged: Json) -> None:
    """The entry's body changed (here: one byte of the logged digest): its leaf hash is not in the tree."""
    entry = logged["verificationMaterial"]["tlogEntries"][0]
    body = bytearray(base64.b64decode(entry["canonicalizedBody"]))
    at = body.index(b'"digest":"') + 10
    body[at] = ord("A") if body[at] != ord("A") else ord("B")
    entry["canonicalizedBody"] = base64.b64encode(bytes(body)).decode()
    expect(run, logged, log, "does not lead from the entry's leaf hash to the checkpoint's root hash")


def test_a_wrong_proof_hash_fails(run: Run, log: Log, logged: Json) -> None:
    hashes = proof_of(logged)["hashes"]
    first = bytearray(base64.b64decode(hashes[0]))
    first[0] ^= 0x01
    hashes[0] = base64.b64encode(bytes(first)).decode()
    expect(run, logged, log, "does not lead from the entry's leaf hash to the checkpoint's root hash")


def test_a_wrong_tree_size_fails(run: Run, log: Log, logged: Json) -> None:
    proof = proof_of(logged)
    proof["treeSize"] = str(int(proof["treeSize"]) + 1)
    expect(run, logged, log, "the inclusion proof is for a tree of")


def test_a_checkpoint_signed_by_another_key_fails(run: Run, log: Log, logged: Json) -> None:
    proof = proof_of(logged)
    other = ed25519.Ed25519PrivateKey.generate()
    proof["checkpoint"]["envelope"] = log.checkpoint(
        int(proof["treeSize"]), base64.b64decode(proof["rootHash"]), key=other
    )
    expect(run, logged, log, "is not signed by a pinned log key")


def test_a_checkpoint_with_a_changed_root_fails(run: Run, log: Log, logged: Json) -> None:
    proof = proof_of(logged)
    note = proof["checkpoint"]["envelope"]
    lines = note.split("\n")
    lines[2] = base64.b64encode(hashlib.sha256(b"another root").digest()).decode()
    proof["checkpoint"]["envelope"] = "\n".join(lines)
    expect(run, logged, log, "is not signed by a pinned log key")


def test_an_entry_of_another_envelope_fails(run: Run, log: Log, logged: Json) -> None:
    """A genuine entry, genuinely included, of another envelope the same AK signed."""
    other_payload = b'{"_type":"https://in-toto.io/Statement/v1"}'
    signature = dsse_signature(SoftTpm(run.ak_key).sign_external(pae(IN_TOTO_PAYLOAD_TYPE, other_payload)))
    key = load_pem_public_key(run.certificate["evidence"]["ak"]["public"].encode())
    body = expected_body(pae(IN_TOTO_PAYLOAD_TYPE, other_payload), signature, key)
    logged["verificationMaterial"]["tlogEntries"] = [log.add(body)]
    expect(run, logged, log, "the logged entry is not this bundle's envelope")


def test_an_entry_index_unlike_its_proofs_fails(run: Run, log: Log, logged: Json) -> None:
    logged["verificationMaterial"]["tlogEntries"][0]["logIndex"] = "0"
    expect(run, logged, log, "not the logged entry 0")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.update(logIndex="-1"), "logIndex"),
        (lambda e: e.update(inclusionPromise={"signedEntryTimestamp": "AA=="}), "inclusionPromise"),
        (lambda e: e["inclusionProof"].update(rootHash="AAAA"), "inclusionProof.rootHash"),
        (lambda e: e["inclusionProof"].update(hashes=["AA=="] * 65), "inclusionProof.hashes"),
        (lambda e: e.update(extra=1), "extra"),
    ],
)
def test_a_malformed_entry_names_its_field(run: Run, log: Log, logged: Json, change: Any, field: str) -> None:
    change(logged["verificationMaterial"]["tlogEntries"][0])
    with pytest.raises(MalformedError) as caught:
        verify(run, logged, [log.key.public_key()])
    assert caught.value.field == f"verificationMaterial.tlogEntries[0].{field}"


def test_two_entries_are_malformed(run: Run, log: Log, logged: Json) -> None:
    entries = logged["verificationMaterial"]["tlogEntries"]
    entries.append(copy.deepcopy(entries[0]))
    with pytest.raises(MalformedError) as caught:
        verify(run, logged, [log.key.public_key()])
    assert caught.value.field == "verificationMaterial.tlogEntries"


def test_the_cli_pins_the_key_and_requires_the_entry(
    run: Run, log: Log, logged: Json, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_file = tmp_path / "aicert.sigstore.json"
    bundle_file.write_text(json.dumps(logged))
    base = ["verify", str(bundle_file), "--trust-bundle", str(run.ca_pem), "--at", AT, "--json"]
    key_file = log.pem(tmp_path / "log.pem")
    assert aicert_main([*base, "--tlog-key", key_file, "--require-tlog"]) == 0
    assert "tlog-inclusion" in json.loads(capsys.readouterr().out)["checks"]
    other = Log()
    assert aicert_main([*base, "--tlog-key", other.pem(tmp_path / "other.pem"), "--require-tlog"]) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "tlog-inclusion"
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    (tmp_path / "rsa.pem").write_bytes(rsa_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert aicert_main([*base, "--tlog-key", str(tmp_path / "rsa.pem")]) == 2
    assert json.loads(capsys.readouterr().out)["field"] == "--tlog-key"
    os.mkfifo(tmp_path / "fifo")  # refused unread, never a hang
    assert aicert_main([*base, "--tlog-key", str(tmp_path / "fifo")]) == 2
    refused = json.loads(capsys.readouterr().out)
    assert (refused["field"], "not a regular file" in refused["reason"]) == ("--tlog-key", True)
