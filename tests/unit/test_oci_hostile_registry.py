"""The OCI client against a registry that lies: every size it reads is capped, every blob and
manifest fetched by digest is checked against it while it streams, a stalled answer times out, a
redirect to another scheme is refused; each is a clear error, never a hang. The registry here is a
real HTTP server on 127.0.0.1 that answers what each test scripts."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aicert.oci.auth import Credentials, load_credentials, parse_config
from aicert.oci.client import MANIFEST_MAX_BYTES, Descriptor, RegistryClient, canonical_json
from aicert.oci.documents import ARTIFACT_CERTIFICATE, ARTIFACT_MODEL, MEDIA_MODEL_CONFIG, MEDIA_WEIGHT_RAW
from aicert.oci.errors import OciContentError, OciError
from aicert.oci.reference import parse_reference
from aicert.oci.transfer import attachments_of, model_manifest, pull_model

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Scripted(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                route = outer.routes.get((self.command, self.path.split("?")[0]))
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = do_HEAD = do_PUT = do_POST = _any

        super().__init__(("127.0.0.1", 0), H)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Scripted]:
    s = Scripted()
    thread = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


def client(server: Scripted, **kwargs: object) -> RegistryClient:
    return RegistryClient(server.host, plain_http=True, timeout=2.0, **kwargs)  # type: ignore[arg-type]


def answer(
    body: bytes, *, status: int = 200, length: int | None = None, headers: dict[str, str] | None = None
) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if length is not None:
            h.send_header("Content-Length", str(length))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        try:
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            pass
        h.close_connection = True

    return handle


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_descriptor(data: bytes, size: int | None = None) -> Descriptor:
    return Descriptor(MEDIA_WEIGHT_RAW, digest(data), len(data) if size is None else size)


# manifests --------------------------------------------------------------------------------------


def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(server: Scripted) -> None:
    asked = digest(b"the genuine manifest")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(b'{"other": 1}', length=12)
    with pytest.raises(OciContentError, match="with the digest sha256:"):
        client(server).get_manifest("m", asked)


def test_a_manifest_announced_over_4_mib_is_refused_unread(server: Scripted) -> None:
    asked = digest(b"x")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(b"{}", length=MANIFEST_MAX_BYTES + 1)
    with pytest.raises(OciError, match="over the 4194304-byte limit"):
        client(server).get_manifest("m", asked)


def test_a_manifest_streaming_past_4_mib_without_a_length_is_cut_off(server: Scripted) -> None:
    asked = digest(b"x")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(b" " * (MANIFEST_MAX_BYTES + 10))
    with pytest.raises(OciError, match="larger than the 4194304-byte limit"):
        client(server).get_manifest("m", asked)


def test_a_stalled_answer_times_out(server: Scripted) -> None:
    asked = digest(b"x")
    release = threading.Event()

    def stall(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.write(b"{")
        h.wfile.flush()
        release.wait(10)

    server.routes["GET", f"/v2/m/manifests/{asked}"] = stall
    try:
        with pytest.raises(OciError, match="timed out"):
            RegistryClient(server.host, plain_http=True, timeout=0.3).get_manifest("m", asked)
    finally:
        release.set()


def test_a_redirect_to_another_scheme_is_refused(server: Scripted) -> None:
    asked = digest(b"x")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(
        b"", status=307, length=0, headers={"Location": "https://elsewhere.example/x"}
    )
    with pytest.raises(OciError, match="another scheme"):
        client(server).get_manifest("m", asked)


def test_endless_redirects_end(server: Scripted) -> None:
    asked = digest(b"x")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(
        b"", status=302, length=0, headers={"Location": f"/v2/m/manifests/{asked}"}
    )
    with pytest.raises(OciError, match="more than 5 redirects"):
        client(server).get_manifest("m", asked)


# blobs ------------------------------------------------------------------------------------------


def test_a_blob_whose_length_header_contradicts_the_manifest_is_refused(server: Scripted) -> None:
    data = b"weights"
    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = answer(data + b"++", length=len(data) + 2)
    with pytest.raises(OciContentError, match="sends 9 bytes, the manifest says 7"):
        client(server).fetch_blob("m", blob_descriptor(data), io.BytesIO())


def test_a_blob_longer_than_the_manifest_says_is_cut_off(server: Scripted) -> None:
    data = b"weights"
    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = answer(data + b"more and more")
    sink = io.BytesIO()
    with pytest.raises(OciContentError, match="more than the 7 bytes"):
        client(server).fetch_blob("m", blob_descriptor(data), sink)
    assert len(sink.getvalue()) <= 7


def test_a_truncated_blob_is_refused(server: Scripted) -> None:
    data = b"weights, all of them"
    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = answer(data[:5], length=len(data))
    with pytest.raises(OciError, match="truncated"):
        client(server).fetch_blob("m", blob_descriptor(data), io.BytesIO())


def test_a_blob_of_the_right_size_but_other_bytes_is_refused(server: Scripted) -> None:
    data = b"weights"
    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = answer(b"WEIGHTS", length=7)
    with pytest.raises(OciContentError, match="hash to sha256:"):
        client(server).fetch_blob("m", blob_descriptor(data), io.BytesIO())


def test_a_manifest_that_lies_about_a_blob_size_fails_at_the_blob(server: Scripted) -> None:
    """The manifest (whose digest is genuine: the publisher's own) says 3 bytes for a blob of 7:
    the blob never matches its descriptor."""
    data = b"weights"
    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = answer(data, length=len(data))
    with pytest.raises(OciContentError, match="sends 7 bytes, the manifest says 3"):
        client(server).fetch_blob("m", blob_descriptor(data, size=3), io.BytesIO())


def test_a_small_document_claiming_a_huge_size_is_not_fetched(server: Scripted) -> None:
    huge = Descriptor(ARTIFACT_CERTIFICATE, digest(b"c"), 10 << 30)
    with pytest.raises(OciError, match="over the 16-byte limit"):
        client(server).read_blob("m", huge, 16)
    assert server.seen == []


# models and referrers ---------------------------------------------------------------------------


def serve_manifest(server: Scripted, doc: dict[str, object]) -> str:
    data = canonical_json(doc)
    server.routes["GET", f"/v2/m/manifests/{digest(data)}"] = answer(data, length=len(data))
    return digest(data)


def model_doc(*paths: str) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_MODEL,
        "config": {"mediaType": MEDIA_MODEL_CONFIG, "digest": digest(b"{}"), "size": 2},
        "layers": [
            {
                "mediaType": MEDIA_WEIGHT_RAW,
                "digest": digest(b"w"),
                "size": 1,
                "annotations": {"org.cncf.model.filepath": p},
            }
            for p in paths
        ],
    }


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (("../outside",), "'..' component"),
        (("/etc/passwd",), "absolute|relative"),
        (("manifest.json",), "reserves"),
        (("a", "a"), "more than once"),
        (("a", "a/b"), "both a file and a directory"),
    ],
)
def test_a_model_whose_layers_name_bad_paths_is_refused_before_any_blob(
    server: Scripted, tmp_path: Path, paths: tuple[str, ...], message: str
) -> None:
    asked = serve_manifest(server, model_doc(*paths))
    c = client(server)
    manifest = model_manifest(c, "m", asked)
    with pytest.raises(OciError, match=message):
        pull_model(c, manifest, "m", tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert not any("/blobs/" in path for _, path, _ in server.seen)


def test_a_tar_layer_is_not_taken_for_a_file(server: Scripted) -> None:
    doc = model_doc("w.bin")
    doc["layers"][0]["mediaType"] = "application/vnd.cncf.model.weight.v1.tar"  # type: ignore[index]
    with pytest.raises(OciError, match="not an uncompressed model layer"):
        model_manifest(client(server), "m", serve_manifest(server, doc))


def test_a_manifest_with_a_duplicate_key_is_refused(server: Scripted) -> None:
    data = b'{"schemaVersion": 2, "layers": [], "layers": []}'
    server.routes["GET", f"/v2/m/manifests/{digest(data)}"] = answer(data, length=len(data))
    with pytest.raises(OciError, match="more than once"):
        model_manifest(client(server), "m", digest(data))


def referrer_doc(subject: str, certificate: bytes) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_CERTIFICATE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}"), "size": 2},
        "layers": [
            {"mediaType": ARTIFACT_CERTIFICATE, "digest": digest(certificate), "size": len(certificate)}
        ],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 10},
    }


def test_a_referrer_whose_subject_is_another_model_is_passed_over(server: Scripted) -> None:
    """The registry lists a certificate under this model, but the certificate's own manifest names
    another model: it is not used (and its blob is not fetched)."""
    model, other = digest(b"model"), digest(b"other model")
    certificate = b'{"genuine": "for the other model"}'
    listed = serve_manifest(server, referrer_doc(other, certificate))
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": listed,
                    "size": 1,
                    "artifactType": ARTIFACT_CERTIFICATE,
                }
            ],
        }
    )
    server.routes["GET", f"/v2/m/referrers/{model}"] = answer(index, length=len(index))
    found = attachments_of(client(server), "m", model, ARTIFACT_CERTIFICATE, max_bytes=1 << 20)
    assert found.referrers == []
    assert found.passed_over == [f"{listed}: its subject is {other}, not this model"]
    assert not any("/blobs/" in path for _, path, _ in server.seen)


def test_without_the_referrers_api_the_fallback_tag_is_read(server: Scripted) -> None:
    model = digest(b"model")
    certificate = b'{"certificate": 1}'
    listed = serve_manifest(server, referrer_doc(model, certificate))
    index = canonical_json(
        {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": listed, "size": 1}
            ],
        }
    )
    server.routes["GET", f"/v2/m/manifests/sha256-{model[7:]}"] = answer(index, length=len(index))
    server.routes["GET", f"/v2/m/blobs/{digest(certificate)}"] = answer(certificate, length=len(certificate))
    found = attachments_of(client(server), "m", model, ARTIFACT_CERTIFICATE, max_bytes=1 << 20)
    assert [(r.digest, r.data) for r in found.referrers] == [(listed, certificate)]
    assert ("GET", f"/v2/m/referrers/{model}", None) in server.seen  # asked first, 404


# auth -------------------------------------------------------------------------------------------


def test_basic_auth_from_a_docker_config(server: Scripted, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    config.write_text(json.dumps({"auths": {f"https://{server.host}/v1/": {"auth": token}}}))
    credentials = load_credentials(server.host, config)
    assert credentials == Credentials("alice", "s3cret")
    asked = digest(b"{}")

    def guarded(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != f"Basic {token}":
            answer(b"", status=401, length=0, headers={"WWW-Authenticate": 'Basic realm="r"'})(h)
        else:
            answer(b"{}", length=2)(h)

    server.routes["GET", f"/v2/m/manifests/{asked}"] = guarded
    assert client(server, credentials=credentials).get_manifest("m", asked)[0] == b"{}"
    with pytest.raises(OciError, match="the registry config has none"):
        client(server).get_manifest("m", asked)


def test_bearer_token_from_the_realm(server: Scripted) -> None:
    asked = digest(b"{}")
    basic = "Basic " + base64.b64encode(b"bob:pw").decode()

    def token(h: http.server.BaseHTTPRequestHandler) -> None:
        assert "scope=repository%3Am%3Apull" in h.path
        if h.headers.get("Authorization") == basic:
            answer(b'{"token": "T0K"}', length=16)(h)
        else:
            answer(b"no", status=401, length=2)(h)

    def guarded(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer T0K":
            challenge = f'Bearer realm="http://{server.host}/token",service="reg",scope="repository:m:pull"'
            answer(b"", status=401, length=0, headers={"WWW-Authenticate": challenge})(h)
        else:
            answer(b"{}", length=2)(h)

    server.routes["GET", "/token"] = token
    server.routes["GET", f"/v2/m/manifests/{asked}"] = guarded
    assert client(server, credentials=Credentials("bob", "pw")).get_manifest("m", asked)[0] == b"{}"
    with pytest.raises(OciError, match="token service refused"):
        client(server, credentials=Credentials("bob", "wrong")).get_manifest("m", asked)


def test_a_token_realm_of_another_scheme_is_refused(server: Scripted) -> None:
    asked = digest(b"{}")
    server.routes["GET", f"/v2/m/manifests/{asked}"] = answer(
        b"", status=401, length=0, headers={"WWW-Authenticate": 'Bearer realm="file:///etc/passwd"'}
    )
    with pytest.raises(OciError, match="is not an http URL"):
        client(server, credentials=Credentials("u", "p")).get_manifest("m", asked)


def test_docker_config_forms() -> None:
    found = parse_config(
        json.dumps(
            {
                "auths": {
                    "registry.example:5000": {"username": "u", "password": "p"},
                    "https://index.example/v1/": {"auth": base64.b64encode(b"a:b:c").decode()},
                },
                "credsStore": "desktop",
            }
        ).encode(),
        name="config.json",
    )
    assert found == {"registry.example:5000": Credentials("u", "p"), "index.example": Credentials("a", "b:c")}
    with pytest.raises(OciError, match=r"auths\.r\.auth: is not base64"):
        parse_config(b'{"auths": {"r": {"auth": "!!"}}}', name="config.json")


# references -------------------------------------------------------------------------------------


def test_references() -> None:
    r = parse_reference("oci://127.0.0.1:5000/team/model:v1")
    assert (r.registry, r.repository, r.tag, r.digest, r.loopback) == (
        "127.0.0.1:5000",
        "team/model",
        "v1",
        None,
        True,
    )
    d = "sha256:" + "a" * 64
    assert parse_reference(f"oci://reg.example/m@{d}").digest == d
    for bad, message in [
        ("oci://reg.example/Model", "lower-case"),
        ("oci://reg.example/m@sha512:00", "not sha256"),
        ("oci:///m", "registry host"),
        ("https://reg.example/m", "does not begin with oci://"),
    ]:
        with pytest.raises(OciError, match=message):
            parse_reference(bad)


def test_a_listing_of_endless_referrers_is_read_only_so_far(server: Scripted) -> None:
    """A fallback index listing 1000 referrers (none of them served): at most 64 are fetched."""
    model = digest(b"model")
    index = canonical_json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest(b"%d" % i),
                    "size": 1,
                }
                for i in range(1000)
            ],
        }
    )
    server.routes["GET", f"/v2/m/manifests/sha256-{model[7:]}"] = answer(index, length=len(index))
    found = attachments_of(client(server), "m", model, ARTIFACT_CERTIFICATE, max_bytes=1 << 20)
    assert found.referrers == []
    assert len(found.passed_over) == 65 and "and the rest" in found.passed_over[-1]
    assert sum("/manifests/sha256:" in path for _, path, _ in server.seen) == 64


def test_a_blob_trickled_a_byte_at_a_time_is_given_up(server: Scripted) -> None:
    """Each byte arrives within the socket timeout, but the whole answer would take far longer than
    its size allows (timeout + size at 64 KiB/s): the client stops, the error says why."""
    data = b"w" * 4096
    release = threading.Event()

    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for byte in data:
            if release.wait(0.05):
                return
            try:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
            except OSError:
                return

    server.routes["GET", f"/v2/m/blobs/{digest(data)}"] = trickle
    try:
        with pytest.raises(OciError, match="arrives too slowly"):
            RegistryClient(server.host, plain_http=True, timeout=0.2).fetch_blob(
                "m", blob_descriptor(data), io.BytesIO()
            )
    finally:
        release.set()
