"""`aicert verify --lineage oci://REGISTRY/REPO`: each parent certificate is fetched as the blob named
by the digest its child records, checked against that digest, and verified like a parent in a
directory. A registry that lies is refused, naming the check (or the flag, exit 2, when the registry
cannot be used): a blob that is not a certificate, another blob under the digest, an answer over the
cap, a registry that fails. Missing blobs leave the lineage incomplete, as missing files do.

Certificates are the agent's own on `SoftTpm`s (tests.lineage_runs); the registry is a real HTTP
server on 127.0.0.1 that serves the blobs each test puts in it."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lineage_runs import certify, weights
from tests.soft_node import soft_node

from aicert.certificate import ParentRecord
from aicert.cli import main
from aicert.oci.client import RegistryClient
from aicert.oci.errors import OciContentError, OciError
from aicert.oci.lineage import RegistryCertificates
from aicert.oci.reference import parse_reference
from aicert.verify.errors import LineageCheck, MalformedError, VerificationError

AT = "2026-01-02T00:00:00Z"  # tests.pki.NOW and a day: inside the soft node's AK certificate


class Blobs(http.server.ThreadingHTTPServer):
    """GET /v2/<repo>/blobs/<digest>: what `answers` holds for that path (status, body, announced
    length or None for a body ended by closing), else 404. Every path asked is in `asked`."""

    daemon_threads = True

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, int | None]] = {}
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.asked.append(self.path)
                status, body, length = outer.answers.get(self.path, (404, b"", 0))
                self.send_response(status)
                if length is None:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that stopped reading
                    self.wfile.write(body)
                self.close_connection = True

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def put(self, repository: str, data: bytes, *, under: str | None = None) -> None:
        """Serve `data` as the blob of its own digest (or of `under`, a lie)."""
        named = under or hashlib.sha256(data).hexdigest()
        self.answers[f"/v2/{repository}/blobs/sha256:{named}"] = (200, data, len(data))


@pytest.fixture
def blobs() -> Iterator[Blobs]:
    server = Blobs()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Chain:
    """base (from data) -> tuned (from base's output) -> again (from tuned's output), on one node."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = node = soft_node(root)
        self.base_dir = weights(root / "base", b"base weights")
        self.base = certify(node, "base", self.base_dir, {"data": weights(root / "data", b"digits")})
        self.tuned_dir = weights(root / "tuned", b"tuned weights")
        self.tuned = certify(node, "tuned", self.tuned_dir, {"base": self.base_dir})
        self.again = certify(
            node, "again", weights(root / "again", b"tuned again"), {"tuned": self.tuned_dir}
        )
        self.ca_pem = root / "ca.pem"
        self.ca_pem.write_bytes(node.ca.pem)
        self.given = root / "again.json"
        self.given.write_bytes(self.again)

    def argv(self, *more: str, given: Path | None = None) -> list[str]:
        return ["verify", str(given or self.given), "--trust-bundle", str(self.ca_pem), "--at", AT, *more]


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path)


def hexdigest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_parents_are_fetched_by_the_digest_the_child_records(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    blobs.put("models/digits", chain.base)
    blobs.put("models/digits", chain.tuned)
    repository = f"oci://{blobs.host}/models/digits"
    code, out, err = run(chain.argv("--lineage", repository, "--json"), capsys)
    assert code == 0, err
    lineage = json.loads(out)["lineage"]
    assert lineage["complete"] is True
    assert [(r["certificate"], r["depth"], r["source"]) for r in lineage["runs"][1:]] == [
        (hexdigest(chain.tuned), 1, f"{repository}@sha256:{hexdigest(chain.tuned)}"),
        (hexdigest(chain.base), 2, f"{repository}@sha256:{hexdigest(chain.base)}"),
    ]
    # each blob asked for by digest, once; no listing, no manifest
    assert sorted(blobs.asked) == sorted(
        f"/v2/models/digits/blobs/sha256:{hexdigest(c)}" for c in (chain.tuned, chain.base)
    )


def test_directories_and_registries_mix_directories_first(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    local = chain.root / "lineage"
    local.mkdir()
    (local / "tuned.json").write_bytes(chain.tuned)
    blobs.put("models/digits", chain.base)
    code, out, err = run(
        chain.argv("--lineage", f"oci://{blobs.host}/models/digits", "--lineage", str(local), "--json"),
        capsys,
    )
    assert code == 0, err
    assert [r["source"] for r in json.loads(out)["lineage"]["runs"][1:]] == [
        str(local / "tuned.json"),
        f"oci://{blobs.host}/models/digits@sha256:{hexdigest(chain.base)}",
    ]
    assert blobs.asked == [f"/v2/models/digits/blobs/sha256:{hexdigest(chain.base)}"]


def test_a_blob_missing_from_the_registry_leaves_the_lineage_incomplete(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    blobs.put("models/digits", chain.tuned)
    repository = f"oci://{blobs.host}/models/digits"
    code, out, err = run(chain.argv("--lineage", repository, "--json"), capsys)
    assert code == 1 and json.loads(out)["check"] == LineageCheck.LINEAGE_COMPLETE
    assert hexdigest(chain.base) in err and "no --lineage directory or repository" in err
    code, out, err = run(chain.argv("--lineage", repository, "--lineage-partial", "--json"), capsys)
    assert code == 0, err
    lineage = json.loads(out)["lineage"]
    assert lineage["complete"] is False and [m["certificate"] for m in lineage["missing"]] == [
        hexdigest(chain.base)
    ]


def test_another_blob_under_the_digest_fails_lineage_digest(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry answers the base's digest with the tuned run's certificate (genuine, verifying,
    but not the one recorded)."""
    blobs.put("models/digits", chain.tuned)
    blobs.put("models/digits", chain.tuned, under=hexdigest(chain.base))
    code, out, err = run(
        chain.argv("--lineage", f"oci://{blobs.host}/models/digits", "--lineage-partial", "--json"), capsys
    )
    assert code == 1, err
    doc = json.loads(out)
    assert doc["check"] == LineageCheck.LINEAGE_DIGEST
    assert f"sha256:{hexdigest(chain.base)}" in doc["reason"] and "hashing to" in doc["reason"]


def test_a_blob_that_is_not_a_certificate_fails_lineage_parent(
    tmp_path: Path, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run records as its parent the digest of something that is no certificate (a dishonest
    agent's statement, bound by its own quote); the registry holds exactly those bytes."""
    node = soft_node(tmp_path)
    junk = b'{"not": "a certificate"}\n'
    base_dir = weights(tmp_path / "base", b"base weights")
    recorded = {"base": ParentRecord(certificate=hexdigest(junk), subject="ab" * 32)}
    given = tmp_path / "tuned.json"
    given.write_bytes(
        certify(node, "tuned", weights(tmp_path / "t", b"t"), {"base": base_dir}, parents=recorded)
    )
    (tmp_path / "ca.pem").write_bytes(node.ca.pem)
    blobs.put("models/digits", junk)
    argv = ["verify", str(given), "--trust-bundle", str(tmp_path / "ca.pem"), "--at", AT, "--json"]
    code, out, err = run([*argv, "--lineage", f"oci://{blobs.host}/models/digits"], capsys)
    assert code == 1, err
    doc = json.loads(out)
    assert doc["check"] == LineageCheck.LINEAGE_PARENT and "is unusable" in doc["reason"]


def test_an_answer_over_the_certificate_cap_is_refused_unread(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    blobs.answers[f"/v2/models/digits/blobs/sha256:{hexdigest(chain.tuned)}"] = (200, b"{}", (16 << 20) + 1)
    code, out, err = run(
        chain.argv("--lineage", f"oci://{blobs.host}/models/digits", "--lineage-partial", "--json"), capsys
    )
    assert code == 2, err
    doc = json.loads(out)
    assert doc["field"] == "--lineage" and "over the 16777216-byte limit" in doc["reason"]


def test_an_answer_streaming_past_the_cap_is_cut_off(blobs: Blobs) -> None:
    blob = hexdigest(b"a certificate")
    blobs.answers[f"/v2/models/digits/blobs/sha256:{blob}"] = (200, b"x" * 5000, None)
    reference = parse_reference(f"oci://{blobs.host}/models/digits")
    finder = RegistryCertificates(
        RegistryClient(blobs.host, plain_http=True, timeout=2.0), reference, limit=4096
    )
    with pytest.raises(MalformedError, match="larger than the 4096-byte limit") as caught:
        finder.find(blob)
    assert caught.value.field == "--lineage"


def test_a_registry_that_fails_is_unusable_not_missing(
    chain: Chain, blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 500 (or a 401) is not a missing parent: --lineage-partial does not turn it into an
    incomplete lineage."""
    blobs.answers[f"/v2/models/digits/blobs/sha256:{hexdigest(chain.tuned)}"] = (500, b"down", 4)
    code, out, err = run(
        chain.argv("--lineage", f"oci://{blobs.host}/models/digits", "--lineage-partial", "--json"), capsys
    )
    assert code == 2, err
    doc = json.loads(out)
    assert doc["field"] == "--lineage" and "HTTP 500" in doc["reason"]


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("oci://127.0.0.1:1/models/digits:v1", "names a tag"),
        ("oci://127.0.0.1:1/models/digits@sha256:" + "a" * 64, "names a digest"),
        ("oci://127.0.0.1:1/Models", "not lower-case"),
    ],
)
def test_lineage_names_a_repository(
    chain: Chain, capsys: pytest.CaptureFixture[str], reference: str, reason: str
) -> None:
    code, out, err = run(chain.argv("--lineage", reference, "--json"), capsys)
    assert code == 2, err
    doc = json.loads(out)
    assert doc["field"] == "--lineage" and reason in doc["reason"]


def test_the_client_checks_a_blob_by_digest(blobs: Blobs) -> None:
    client = RegistryClient(blobs.host, plain_http=True, timeout=2.0)
    blobs.put("m", b"genuine")
    assert client.blob_by_digest("m", "sha256:" + hexdigest(b"genuine"), 100) == b"genuine"
    assert client.blob_by_digest("m", "sha256:" + hexdigest(b"absent"), 100) is None
    blobs.put("m", b"other", under=hexdigest(b"asked"))
    with pytest.raises(OciContentError, match="hashing to"):
        client.blob_by_digest("m", "sha256:" + hexdigest(b"asked"), 100)
    with pytest.raises(OciError, match="not sha256"):
        client.blob_by_digest("m", "sha256:../../etc", 100)
    assert not any("etc" in path for path in blobs.asked)


def test_a_lineage_check_from_the_finder_is_a_verification_error(blobs: Blobs) -> None:
    blobs.put("m", b"other", under=hexdigest(b"asked"))
    finder = RegistryCertificates(
        RegistryClient(blobs.host, plain_http=True, timeout=2.0), parse_reference(f"oci://{blobs.host}/m")
    )
    with pytest.raises(VerificationError) as caught:
        finder.find(hexdigest(b"asked"))
    assert caught.value.check == LineageCheck.LINEAGE_DIGEST
