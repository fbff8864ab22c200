"""A seal tried again keeps its transparency log entry (aicert_agent.tlog_recovery, transparency, sealing).

The agent keeps the submitted signature and the log's entry in the pod's control volume; a retry
submits the same envelope and keeps the entry without asking the log. When the agent stopped
between the log's answer and that write, the log refuses the second submission as a duplicate
(rekor-tiles: 409, `X-Log-Index`) and the entry is rebuilt from the log's read API (C2SP tlog-tiles)
and checked as a fresh one. The log here is a real HTTP server on loopback serving tiles built from
RFC 6962 hashes; the proofs it leads to are held to RFC 6962's own PATH. The attacks: a log that
points at someone else's leaf, tiles that prove another leaf, a checkpoint of another key,
oversized answers, a tree that would take unbounded requests.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from tests.soft_tpm import Run, SoftTpm, certified_run
from tests.unit.test_tlog_inclusion import Log, envelope_entry_body, mth, path

from aicert.tlog import leaf_hash, node_hash
from aicert_agent.bundling import sign_bundle
from aicert_agent.kube import AgentKube
from aicert_agent.recorder import AkIdentity
from aicert_agent.sealing import Sealer, certified_status
from aicert_agent.tlog_recovery import (
    MAX_FETCHES,
    RecoveryError,
    TreeReader,
    http_fetch,
    recovered_entry,
    tile_path,
)
from aicert_agent.transparency import (
    LOG_RECORD,
    LogRecord,
    TransparencyLog,
    TransparencyLogError,
    log_entry,
    reused,
    transparency_log,
    with_log_entry,
)
from aicert_localcluster.rekor import free_port

Json = dict[str, Any]


# --- tiles (C2SP tlog-tiles) ----------------------------------------------------------------------


def tiles_of(leaves: list[bytes]) -> dict[str, bytes]:
    """Every tile of the tree of `leaves` as a tlog-tiles log serves it (full and partial tiles)."""
    level_hashes = [leaf_hash(leaf) for leaf in leaves]
    tiles: dict[str, bytes] = {}
    level = 0
    while level_hashes:
        for start in range(0, len(level_hashes), 256):
            chunk = level_hashes[start : start + 256]
            tiles[tile_path(level, start // 256, len(chunk))] = b"".join(chunk)
        complete = [level_hashes[i : i + 256] for i in range(0, len(level_hashes) - 255, 256)]
        up = []
        for chunk in complete:
            while len(chunk) > 1:
                chunk = [node_hash(chunk[i], chunk[i + 1]) for i in range(0, len(chunk), 2)]
            up.append(chunk[0])
        level_hashes, level = up, level + 1
    return tiles


def test_tile_paths_are_tlog_tiles() -> None:
    assert tile_path(0, 0, 256) == "tile/0/000"
    assert tile_path(0, 0, 3) == "tile/0/000.p/3"
    assert tile_path(1, 1234067, 256) == "tile/1/x001/x234/067"
    assert tile_path(2, 1000, 7) == "tile/2/x001/000.p/7"


@pytest.mark.parametrize("size", [1, 2, 5, 255, 256, 257, 600, 65536 + 300])
def test_proofs_from_tiles_are_rfc_6962_paths(size: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    tiles = tiles_of(leaves)
    tree = TreeReader(lambda p, most: tiles.get(p), size)
    for index in sorted({0, size // 3, size - 1, min(size - 1, 256), min(size - 1, 511)}):
        if size <= 600:
            assert tree.inclusion_proof(index) == path(index, leaves)
        assert tree.node(0, index) == leaf_hash(leaves[index])
    if size > 600:  # RFC 6962's recursion over 65,836 leaves: once, for one index
        index = 65536 + 17
        proof = tree.inclusion_proof(index)
        from aicert.tlog import root_from_inclusion_proof

        assert root_from_inclusion_proof(index, size, leaf_hash(leaves[index]), proof) == mth(leaves)


def test_a_log_that_grew_past_a_partial_tile_is_read_from_the_full_one() -> None:
    leaves = [i.to_bytes(4, "big") for i in range(300)]
    tiles = tiles_of(leaves)  # the tree now has 300 leaves; the checkpoint read had 40
    tree = TreeReader(lambda p, most: tiles.get(p), 40)
    assert tree.inclusion_proof(7) == path(7, leaves[:40])


# --- a log on loopback: a write API that answers 409, a read API serving tiles ----------------------


@dataclass
class TiledLog:
    """A Rekor v2 log as seen over HTTP: POST answers `post` (status, headers, body); GET serves
    `files` (checkpoint, tiles)."""

    log: Log
    url: str = ""
    post: tuple[int, dict[str, str], bytes] = (409, {}, b"")
    files: dict[str, bytes] = field(default_factory=dict)
    gets: list[str] = field(default_factory=list)
    posts: int = 0

    def publish(self, extra_leaves: int = 3) -> None:
        """Serve the log's current tree (after `extra_leaves` more entries of others) and checkpoint."""
        for i in range(extra_leaves):
            self.log.leaves.append(b'{"other":%d}' % i)
        self.files = {**tiles_of(self.log.leaves)}
        size = len(self.log.leaves)
        self.files["checkpoint"] = self.log.checkpoint(size, mth(self.log.leaves)).encode()

    def duplicate_of(self, index: int) -> None:
        body = b'{"code":6, "message":"an equivalent entry already exists in the transparency log with index %d"}'
        self.post = (409, {"X-Log-Index": str(index)}, body % index)


@contextmanager
def tiled_log(log: Log) -> Iterator[TiledLog]:
    served = TiledLog(log)

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            served.gets.append(self.path)
            data = served.files.get(self.path.lstrip("/"))
            self.answer(200, {}, data) if data is not None else self.answer(404, {}, b"not found")

        def do_POST(self) -> None:
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
            served.posts += 1
            self.answer(*served.post)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("tlog-recovery"), azure_dir)


@pytest.fixture
def bundle(run: Run) -> Json:
    return sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))


def ak_pem(run: Run) -> str:
    return str(run.certificate["evidence"]["ak"]["public"])


def logged_once(log: Log, run: Run, bundle: Json) -> Json:
    """The log takes the bundle's entry (the answer the agent did not keep): its genuine entry."""
    return log.add(envelope_entry_body(run, bundle))


def test_a_duplicate_is_recovered_from_the_read_api_and_checked_as_a_fresh_entry(
    run: Run, bundle: Json
) -> None:
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]))
        entry = log_entry(bundle, ak_pem(run), served.url, log.key.public_key(), timeout=10)
    assert entry["logIndex"] == first["logIndex"] and entry["canonicalizedBody"] == first["canonicalizedBody"]
    proof = entry["inclusionProof"]
    assert proof["treeSize"] == str(len(log.leaves))  # the latest checkpoint, which covers it
    assert proof["checkpoint"]["envelope"] == served.files["checkpoint"].decode()
    # bounded: one checkpoint, then one tile per level of the tree (here one)
    assert served.gets == ["/checkpoint", "/" + tile_path(0, 0, len(log.leaves))]


def test_the_read_api_may_be_elsewhere(run: Run, bundle: Json) -> None:
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as writer, tiled_log(log) as reader:
        writer.duplicate_of(int(first["logIndex"]))
        reader.publish()
        entry = log_entry(
            bundle, ak_pem(run), writer.url, log.key.public_key(), timeout=10, read_url=reader.url + "/"
        )
    assert entry["logIndex"] == first["logIndex"] and writer.gets == []


def expect_refused(run: Run, bundle: Json, served: TiledLog, log: Log, reason: str) -> None:
    with pytest.raises(TransparencyLogError, match=reason):
        log_entry(bundle, ak_pem(run), served.url, log.key.public_key(), timeout=10)


def test_a_log_pointing_at_someone_elses_entry_is_refused(run: Run, bundle: Json) -> None:
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]) + 1)  # the entry after it: another run's
        expect_refused(run, bundle, served, log, r"could not be recovered .*entry \d+ is not this envelope's")
        served.duplicate_of(0)
        expect_refused(run, bundle, served, log, "is not this envelope's")


def test_tiles_proving_another_leaf_are_refused(run: Run, bundle: Json) -> None:
    """The tile at the leaf's index is right, a sibling hash is not: the proof leads elsewhere."""
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]))
        key = tile_path(0, 0, len(log.leaves))
        tile = bytearray(served.files[key])
        tile[0] ^= 0x01  # leaf 0's hash, on the entry's path
        served.files[key] = bytes(tile)
        expect_refused(run, bundle, served, log, "does not lead from the entry's leaf hash")


def test_a_checkpoint_of_another_key_is_refused(run: Run, bundle: Json) -> None:
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]))
        size = len(log.leaves)
        other = ed25519.Ed25519PrivateKey.generate()
        served.files["checkpoint"] = log.checkpoint(size, mth(log.leaves), key=other).encode()
        expect_refused(
            run, bundle, served, log, "checkpoint does not check out: .*not signed by a pinned log key"
        )


def test_an_index_the_checkpoint_does_not_cover_is_refused(run: Run, bundle: Json) -> None:
    log = Log()
    logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(len(log.leaves))
        expect_refused(run, bundle, served, log, "does not cover entry")
        served.post = (409, {"X-Log-Index": "-1"}, b"{}")  # no index: an ordinary refusal
        expect_refused(run, bundle, served, log, "answered 409")


@pytest.mark.parametrize("what", ["checkpoint", "tile"])
def test_oversized_answers_are_not_read(run: Run, bundle: Json, what: str) -> None:
    log = Log()
    first = logged_once(log, run, bundle)
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]))
        if what == "checkpoint":
            served.files["checkpoint"] += b"\n" * (16 * 1024)
        else:
            served.files[tile_path(0, 0, len(log.leaves))] += b"\x00" * 32
        expect_refused(run, bundle, served, log, "more than")


def test_requests_and_time_are_bounded(run: Run, bundle: Json) -> None:
    """A proof that would need more requests than allowed, a deadline already passed."""
    log = Log()
    first = logged_once(log, run, bundle)
    body = base64.b64decode(first["canonicalizedBody"])
    with tiled_log(log) as served:
        served.publish(extra_leaves=600)  # index 1 of 603: tiles 0/000, 0/001, 0/002.p/91
        key = log.key.public_key()
        index = int(first["logIndex"])
        entry = recovered_entry(
            http_fetch(served.url, time.monotonic() + 10, max_fetches=4), index, body, key
        )
        assert entry["logIndex"] == str(index) and len(served.gets) == 4
        with pytest.raises(RecoveryError, match="more than 3 requests"):
            recovered_entry(http_fetch(served.url, time.monotonic() + 10, max_fetches=3), index, body, key)
        with pytest.raises(RecoveryError, match="longer than the log's time-out"):
            recovered_entry(http_fetch(served.url, time.monotonic() - 1), index, body, key)
    with pytest.raises(RecoveryError, match="did not answer"):
        http_fetch(f"http://127.0.0.1:{free_port()}", time.monotonic() + 5)("checkpoint", 100)
    assert MAX_FETCHES >= 8 * 3 * 2  # 8 tile levels at most, up to 3 tiles each, a partial one tried first


def test_an_entry_recovered_from_a_tree_of_one_needs_no_hashes(run: Run, bundle: Json) -> None:
    log = Log()
    log.leaves = []
    body = envelope_entry_body(run, bundle)
    log.leaves.append(body)
    files = tiles_of(log.leaves)
    files["checkpoint"] = log.checkpoint(1, mth(log.leaves)).encode()
    entry = recovered_entry(lambda p, most: files.get(p), 0, body, log.key.public_key())
    assert entry["inclusionProof"]["hashes"] == [] and entry["inclusionProof"]["treeSize"] == "1"


# --- the agent's record in the control volume -----------------------------------------------------


def ctx() -> Any:
    return cast(Any, SimpleNamespace(namespace="ml", pod={"metadata": {"name": "run-1"}}))


def sealer(url: str, log: Log, read_url: str | None = None) -> Sealer:
    tlog = TransparencyLog(url, log.key.public_key(), timeout=10, read_url=read_url)
    return Sealer(cast(AgentKube, None), "gpu-1", "dev", AkIdentity("", ()), tlog=tlog)


def test_the_entry_is_kept_and_a_retry_does_not_ask_the_log_again(run: Run, tmp_path: Path) -> None:
    log = Log()
    bundle = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    with tiled_log(log) as served:
        served.post = (201, {}, json.dumps(logged_once(log, run, bundle)).encode())
        published, said = sealer(served.url, log)._log(ctx(), run.certificate, bundle, tmp_path)
    assert served.posts == 1 and said.startswith("; logged at index")
    record = LogRecord.read(tmp_path)
    assert record is not None and record.entry == published["verificationMaterial"]["tlogEntries"][0]
    # the retry signs again (ECDSA: another signature); the kept signature and entry are used, the
    # log is not asked (it is down)
    again = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    assert again["dsseEnvelope"]["signatures"] != bundle["dsseEnvelope"]["signatures"]
    down = f"http://127.0.0.1:{free_port()}"
    republished, said = sealer(down, log)._log(ctx(), run.certificate, again, tmp_path)
    assert republished == published and said.startswith("; logged at index")


def test_a_retry_after_the_log_took_the_entry_unrecorded_recovers_it(run: Run, tmp_path: Path) -> None:
    """The agent stopped after the log's answer, before keeping it: the record has the signature
    (written before the submission) and no entry; the retry submits that same envelope, the log
    says it holds it, and the entry is recovered."""
    log = Log()
    bundle = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    (tmp_path / LOG_RECORD).write_bytes(LogRecord.of(bundle).to_bytes())
    first = logged_once(log, run, bundle)
    again = sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))
    with tiled_log(log) as served:
        served.publish()
        served.duplicate_of(int(first["logIndex"]))
        published, said = sealer(served.url, log)._log(ctx(), run.certificate, again, tmp_path)
    assert published["dsseEnvelope"] == bundle["dsseEnvelope"]  # the signature the log holds
    entry = published["verificationMaterial"]["tlogEntries"][0]
    assert (
        entry["logIndex"] == first["logIndex"]
        and said == f"; logged at index {first['logIndex']} of {served.url}"
    )
    record = LogRecord.read(tmp_path)
    assert record is not None and record.entry == entry


def test_a_record_that_does_not_check_out_is_not_used(run: Run, bundle: Json, tmp_path: Path) -> None:
    log = Log()
    good = LogRecord.of(bundle, logged_once(log, run, bundle))
    # another payload's record: not this bundle's
    assert reused(LogRecord("0" * 64, good.signature), bundle, ak_pem(run)) is None
    # a signature that is not the AK's over this envelope
    forged = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    assert reused(LogRecord(good.payload_sha256, forged), bundle, ak_pem(run)) is None
    assert reused(good, bundle, ak_pem(run)) == bundle
    # an entry in the record whose proof was changed: submitted again (the log answers afresh)
    entry = copy.deepcopy(good.entry)
    assert entry is not None
    entry["inclusionProof"]["treeSize"] = "99"
    (tmp_path / LOG_RECORD).write_bytes(LogRecord(good.payload_sha256, good.signature, entry).to_bytes())
    with tiled_log(log) as served:
        served.post = (201, {}, json.dumps(good.entry).encode())
        published, _ = sealer(served.url, log)._log(ctx(), run.certificate, bundle, tmp_path)
    assert served.posts == 1 and published["verificationMaterial"]["tlogEntries"] == [good.entry]
    (tmp_path / LOG_RECORD).write_bytes(b"{not json")
    assert LogRecord.read(tmp_path) is None


def test_the_certified_status_carries_the_entry_in_the_certificates_write(run: Run, bundle: Json) -> None:
    condition = cast(Any, {"type": "Certified"})
    without = certified_status("dev", "{}", bundle, "ab" * 32, condition)
    assert "transparencyLogEntry" not in without
    entry = Log().add(envelope_entry_body(run, bundle))
    status = certified_status("dev", "{}", with_log_entry(bundle, entry), "ab" * 32, condition)
    assert status == {**without, "transparencyLogEntry": json.dumps(entry, separators=(",", ":"))}


def test_a_read_url_needs_the_log(tmp_path: Path) -> None:
    with pytest.raises(TransparencyLogError, match="--tlog-read-url needs --tlog-url"):
        transparency_log(None, None, "http://127.0.0.1:1")
    key = tmp_path / "log.pem"
    Log().pem(key)
    tlog = transparency_log("http://127.0.0.1:1", key, "http://127.0.0.1:2")
    assert tlog is not None and tlog.read_url == "http://127.0.0.1:2"
