"""A small OCI distribution client: blobs, manifests and referrers, by digest, over http.client.

Written for registries that may be hostile. Every read from the network is capped: a manifest or
an index at 4 MiB (MANIFEST_MAX_BYTES), a token answer at 64 KiB, an error body at 64 KiB, a blob at
the size its descriptor gives, and a blob is hashed while it streams and refused unless it has
exactly that size and digest (OciContentError). Each socket read times out (`timeout`, 30 s by
default), and a whole answer must arrive within `timeout` plus its size at 64 KiB/s, so a registry
that trickles bytes cannot hold a client forever. Redirects are followed for GET and HEAD only, at
most 5, never to another scheme; credentials go only to the registry's own host.

Auth: a 401 with `WWW-Authenticate: Basic` is answered with the docker config's user and password;
`Bearer realm=…,service=…,scope=…` with a token from the realm (asked with those credentials, or
anonymously), as distribution, ACR, GHCR and Docker Hub do.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from aicert.oci.auth import Credentials
from aicert.oci.errors import OciContentError, OciError
from aicert.oci.reference import DIGEST

MANIFEST_MAX_BYTES = 4 << 20
TOKEN_MAX_BYTES = 64 << 10
ERROR_BODY_MAX_BYTES = 64 << 10
MIN_RATE_BYTES_PER_SECOND = 64 << 10
MAX_REDIRECTS = 5
CHUNK = 1 << 20

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = f"{MEDIA_MANIFEST}, {MEDIA_INDEX}"
_CHALLENGE_PARAM = re.compile(r'([A-Za-z]+)="([^"]*)"')


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc

    @staticmethod
    def from_json(doc: Any, where: str) -> Descriptor:
        """A descriptor from JSON, every field checked (OciError naming `where`)."""
        if not isinstance(doc, dict):
            raise OciError(f"{where}: is not an object")
        media_type, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise OciError(f"{where}.mediaType: is missing or not a string")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise OciError(f"{where}.digest: {digest!r} is not sha256:<64 hex digits>")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= 2**53 - 1:
            raise OciError(f"{where}.size: {size!r} is not a size in bytes")
        artifact_type = doc.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise OciError(f"{where}.artifactType: is not a string")
        annotations = doc.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise OciError(f"{where}.annotations: is not a map of strings")
        return Descriptor(media_type, digest, size, artifact_type, annotations)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    deadline_base: float

    def close(self) -> None:
        self.connection.close()


class RegistryClient:
    """One registry (`host` = host[:port]), plain http or https."""

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool = False,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        use_referrers_api: bool = True,
    ) -> None:
        self.host = host
        self.scheme = "http" if plain_http else "https"
        self.credentials = credentials
        self.timeout = timeout
        self.ssl_context = ssl_context or (None if plain_http else ssl.create_default_context())
        self.use_referrers_api = use_referrers_api
        self._authorization: str | None = None

    # transport ------------------------------------------------------------------------------------

    def _connect(self, host: str) -> http.client.HTTPConnection:
        if self.scheme == "http":
            return http.client.HTTPConnection(host, timeout=self.timeout)
        return http.client.HTTPSConnection(host, timeout=self.timeout, context=self.ssl_context)

    def _send(
        self,
        method: str,
        host: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | IO[bytes] | None,
    ) -> _Answer:
        connection = self._connect(host)
        try:
            connection.request(method, target, body=body, headers=dict(headers))
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise OciError(f"{method} {self.scheme}://{host}{target}: {exc or type(exc).__name__}") from None
        lowered = {k.lower(): v for k, v in response.getheaders()}
        return _Answer(response.status, lowered, response, connection, time.monotonic())

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
        scope: str = "",
    ) -> _Answer:
        """One request to the registry, with auth on a 401 (once) and redirects for GET and HEAD.
        The caller reads the body (`read_capped`, `stream_blob`) and closes the answer."""
        host, sent_headers = self.host, dict(headers or {})
        for attempt in range(2):
            if self._authorization:
                sent_headers["Authorization"] = self._authorization
            answer = self._send(method, host, target, sent_headers, body)
            if answer.status == 401 and attempt == 0 and not hasattr(body, "read"):
                challenge = answer.headers.get("www-authenticate", "")
                answer.close()
                self._authorization = self._authorize(challenge, scope)
                continue
            break
        for _ in range(MAX_REDIRECTS):
            if answer.status not in (301, 302, 303, 307, 308) or method not in ("GET", "HEAD"):
                return answer
            location = answer.headers.get("location", "")
            answer.close()
            parsed = urllib.parse.urlsplit(urllib.parse.urljoin(f"{self.scheme}://{host}{target}", location))
            if parsed.scheme != self.scheme or not parsed.netloc:
                raise OciError(f"{method} {target}: the registry redirects to {location!r}, another scheme")
            if parsed.netloc != self.host:  # credentials stay with the registry
                sent_headers.pop("Authorization", None)
            host, target = parsed.netloc, parsed.path + (f"?{parsed.query}" if parsed.query else "")
            answer = self._send(method, host, target, sent_headers, None)
        if answer.status in (301, 302, 303, 307, 308):
            answer.close()
            raise OciError(f"{method} {target}: more than {MAX_REDIRECTS} redirects")
        return answer

    def _basic(self) -> str | None:
        c = self.credentials
        if c is None or not (c.username or c.password):
            return None
        return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()

    def _authorize(self, challenge: str, scope: str) -> str | None:
        kind, _, params_text = challenge.strip().partition(" ")
        if kind.lower() == "basic":
            basic = self._basic()
            if basic is None:
                raise OciError(f"{self.host} asks for credentials, and the registry config has none for it")
            return basic
        if kind.lower() != "bearer":
            raise OciError(f"{self.host} asks for auth of an unknown kind: {challenge[:200]!r}")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = urllib.parse.urlsplit(params.get("realm", ""))
        if realm.scheme not in ("https", self.scheme) or not realm.netloc:
            raise OciError(f"{self.host}: token realm {params.get('realm')!r} is not an {self.scheme} URL")
        query = [(k, params[k]) for k in ("service",) if k in params]
        query += [("scope", s) for s in (params.get("scope") or scope).split(" ") if s]
        if self.credentials is not None and self.credentials.identity_token:
            raise OciError(f"{self.host}: identity tokens (OAuth2 refresh tokens) are not supported")
        headers = {}
        basic = self._basic()
        if basic is not None and (realm.scheme == "https" or realm.netloc == self.host):
            headers["Authorization"] = basic  # to the token service, never in clear to another host
        target = realm.path or "/"
        target += "?" + urllib.parse.urlencode(query + urllib.parse.parse_qsl(realm.query))
        saved_scheme, self.scheme = self.scheme, realm.scheme
        try:
            answer = self._send("GET", realm.netloc, target, headers, None)
        finally:
            self.scheme = saved_scheme
        try:
            data = read_capped(answer, TOKEN_MAX_BYTES, "the token answer")
        finally:
            answer.close()
        if answer.status != 200:
            raise OciError(f"{self.host}: the token service refused (HTTP {answer.status}): {_text(data)}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise OciError(f"{self.host}: the token service gave no token")
        return f"Bearer {token}"

    def expect(self, answer: _Answer, what: str, *statuses: int) -> None:
        """OciError (closing the answer) unless its status is one of `statuses`."""
        if answer.status in statuses:
            return
        try:
            body = read_capped(answer, ERROR_BODY_MAX_BYTES, "the error body", truncate=True)
        except OciError:
            body = b""
        finally:
            answer.close()
        if answer.status == 401:
            raise OciError(f"{what}: HTTP 401 unauthorized (no usable credentials for {self.host}?)")
        raise OciError(f"{what}: HTTP {answer.status}: {_text(body)}")

    # reading --------------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, at most 4 MiB. By digest, the bytes
        must hash to it (OciContentError); by tag, the digest is the bytes' own."""
        what = (
            f"manifest {repository}@{reference}"
            if reference.startswith("sha256:")
            else f"{repository}:{reference}"
        )
        answer = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": MANIFEST_ACCEPT},
            scope=f"repository:{repository}:pull",
        )
        self.expect(answer, f"GET {what}", 200)
        try:
            data = read_capped(answer, MANIFEST_MAX_BYTES, what)
        finally:
            answer.close()
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise OciContentError(f"the registry served {what} with the digest {digest}")
        media_type = answer.headers.get("content-type", "").partition(";")[0].strip()
        return data, media_type, digest

    def fetch_blob(self, repository: str, descriptor: Descriptor, sink: IO[bytes]) -> None:
        """Write the blob to `sink`, exactly `descriptor.size` bytes hashing to its digest, or
        raise (OciContentError when the bytes are not those, OciError otherwise)."""
        answer = self.request(
            "GET", f"/v2/{repository}/blobs/{descriptor.digest}", scope=f"repository:{repository}:pull"
        )
        self.expect(answer, f"GET blob {descriptor.digest}", 200)
        try:
            stream_blob(answer, descriptor, sink, self.timeout)
        finally:
            answer.close()

    def read_blob(self, repository: str, descriptor: Descriptor, limit: int) -> bytes:
        """A small blob in memory: its descriptor may claim at most `limit` bytes."""
        if descriptor.size > limit:
            raise OciError(
                f"blob {descriptor.digest} claims {descriptor.size} bytes, over the {limit}-byte limit"
            )
        buffer = io.BytesIO()
        self.fetch_blob(repository, descriptor, buffer)
        return buffer.getvalue()

    def blob_by_digest(self, repository: str, digest: str, limit: int) -> bytes | None:
        """The blob `digest` names, when its size is not known beforehand (no descriptor): at most
        `limit` bytes (else OciError), None when the registry has no such blob (404), and the bytes
        must hash to `digest` (else OciContentError)."""
        if not DIGEST.fullmatch(digest):
            raise OciError(f"blob {digest!r}: not sha256:<64 hex digits>")
        answer = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        if answer.status == 404:
            answer.close()
            return None
        self.expect(answer, f"GET blob {repository}@{digest}", 200)
        try:
            data = read_capped(answer, limit, f"blob {repository}@{digest}", timeout=self.timeout)
        finally:
            answer.close()
        if sha256_digest(data) != digest:
            raise OciContentError(
                f"the registry served blob {repository}@{digest} as bytes hashing to {sha256_digest(data)}"
            )
        return data

    def resolve(self, repository: str, tag: str) -> str:
        """The digest of the manifest `tag` names now (the bytes' own digest, not a header's)."""
        return self.get_manifest(repository, tag)[2]

    # writing --------------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        answer = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull,push"
        )
        answer.close()
        if answer.status in (200, 404):
            return answer.status == 200
        raise OciError(f"HEAD blob {digest}: HTTP {answer.status}")

    def push_blob(self, repository: str, digest: str, size: int, body: bytes | IO[bytes]) -> None:
        """Monolithic upload (POST, then PUT with the digest, which the registry checks); nothing is
        sent when the registry has the blob already."""
        scope = f"repository:{repository}:pull,push"
        if self.has_blob(repository, digest):
            return
        answer = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"}, body=b"", scope=scope
        )
        self.expect(answer, f"POST upload of {digest}", 202)
        location = answer.headers.get("location", "")
        answer.close()
        url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{self.scheme}://{self.host}/", location))
        if url.scheme != self.scheme or url.netloc != self.host:
            raise OciError(f"upload of {digest}: the registry sends it to {location!r}, not {self.host}")
        query = urllib.parse.urlencode([*urllib.parse.parse_qsl(url.query), ("digest", digest)])
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        answer = self.request("PUT", f"{url.path}?{query}", headers=headers, body=body, scope=scope)
        self.expect(answer, f"PUT blob {digest}", 201)
        answer.close()

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> dict[str, str]:
        """PUT the manifest's bytes under `reference` (its digest or a tag); the registry's headers."""
        answer = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=data,
            scope=f"repository:{repository}:pull,push",
        )
        self.expect(answer, f"PUT manifest {repository}:{reference}", 201)
        answer.close()
        served = answer.headers.get("docker-content-digest")
        if served is not None and served != sha256_digest(data):
            raise OciContentError(
                f"the registry stored {repository}:{reference} as {served}, not {sha256_digest(data)}"
            )
        return answer.headers

    # referrers ------------------------------------------------------------------------------------

    def referrers(self, repository: str, digest: str) -> list[Descriptor]:
        """The manifests whose subject is `digest`: the referrers API, or, where a registry has none
        (404), the fallback tag `sha256-<hex>`'s index. What they list is only a hint: a caller
        fetches each manifest by digest and checks its subject itself."""
        index: bytes | None = None
        if self.use_referrers_api:
            answer = self.request(
                "GET",
                f"/v2/{repository}/referrers/{digest}",
                headers={"Accept": MEDIA_INDEX},
                scope=f"repository:{repository}:pull",
            )
            if answer.status == 200:
                try:
                    index = read_capped(answer, MANIFEST_MAX_BYTES, f"the referrers of {digest}")
                finally:
                    answer.close()
            elif answer.status != 404:
                self.expect(answer, f"GET referrers of {digest}", 200)
            else:
                answer.close()
        if index is None:
            index = self._fallback_index(repository, digest)
            if index is None:
                return []
        return parse_index(index, f"the referrers of {digest}")

    def _fallback_index(self, repository: str, digest: str) -> bytes | None:
        tag = fallback_tag(digest)
        answer = self.request(
            "GET",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": MEDIA_INDEX},
            scope=f"repository:{repository}:pull",
        )
        if answer.status == 404:
            answer.close()
            return None
        self.expect(answer, f"GET {repository}:{tag}", 200)
        try:
            return read_capped(answer, MANIFEST_MAX_BYTES, f"{repository}:{tag}")
        finally:
            answer.close()

    def add_to_fallback_index(self, repository: str, subject: str, referrer: Descriptor) -> None:
        """For a registry without the referrers API: list `referrer` in the index tagged
        `sha256-<hex>` of its subject (read, add, write back)."""
        existing = self._fallback_index(repository, subject)
        manifests = parse_index(existing, "the fallback index") if existing is not None else []
        if any(d.digest == referrer.digest for d in manifests):
            return
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [d.to_json() for d in (*manifests, referrer)],
        }
        self.push_manifest(repository, fallback_tag(subject), canonical_json(index), MEDIA_INDEX)


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject: `sha256-<hex>`."""
    return digest.replace(":", "-", 1)


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no spaces: the same document always has the same bytes (and digest)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_index(data: bytes, what: str) -> list[Descriptor]:
    from aicert.oci.documents import load_json

    doc = load_json(data, what)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise OciError(f"{what}: manifests: is not an array")
    return [Descriptor.from_json(d, f"{what}: manifests[{i}]") for i, d in enumerate(manifests)]


def _text(data: bytes) -> str:
    return data[:300].decode("utf-8", "replace").strip() or "(no message)"


def _deadline(answer: _Answer, size: int, timeout: float) -> float:
    return answer.deadline_base + timeout + size / MIN_RATE_BYTES_PER_SECOND


def _content_length(answer: _Answer) -> int | None:
    value = answer.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise OciError(f"the registry sent Content-Length {value[:40]!r}")
    return int(value)


def read_capped(
    answer: _Answer, limit: int, what: str, *, truncate: bool = False, timeout: float = 30.0
) -> bytes:
    """The body, at most `limit` bytes (else OciError, or the first `limit` bytes if `truncate`)."""
    length = _content_length(answer)
    if length is not None and length > limit and not truncate:
        raise OciError(f"{what} is {length} bytes, over the {limit}-byte limit")
    deadline = _deadline(answer, limit, timeout)
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = answer.response.read1(min(CHUNK, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                if truncate:
                    break
                raise OciError(f"{what} is larger than the {limit}-byte limit")
            if time.monotonic() > deadline:
                raise OciError(f"{what} arrives too slowly (stopped after {total} bytes)")
    except (OSError, http.client.HTTPException) as exc:
        raise OciError(
            f"{what}: the registry broke off ({exc or type(exc).__name__}) after {total} bytes"
        ) from None
    return b"".join(parts)[:limit]


def stream_blob(answer: _Answer, descriptor: Descriptor, sink: IO[bytes], timeout: float) -> None:
    """Copy the body to `sink`: exactly `descriptor.size` bytes hashing to its digest, else an error
    (OciContentError for other bytes, OciError for a registry that breaks off or stalls)."""
    what = f"blob {descriptor.digest}"
    length = _content_length(answer)
    if length is not None and length != descriptor.size:
        raise OciContentError(
            f"{what}: the registry sends {length} bytes, the manifest says {descriptor.size}"
        )
    deadline = _deadline(answer, descriptor.size, timeout)
    hasher = hashlib.sha256()
    total = 0
    while True:
        try:
            chunk = answer.response.read1(min(CHUNK, descriptor.size + 1 - total))
        except (OSError, http.client.HTTPException) as exc:
            raise OciError(
                f"{what}: truncated: the registry broke off after {total} of {descriptor.size} bytes "
                f"({exc or type(exc).__name__})"
            ) from None
        if not chunk:
            break
        total += len(chunk)
        if total > descriptor.size:
            raise OciContentError(
                f"{what}: the registry sends more than the {descriptor.size} bytes the manifest says"
            )
        hasher.update(chunk)
        sink.write(chunk)  # an OSError here (disk full) is the caller's, not the registry's
        if time.monotonic() > deadline:
            raise OciError(f"{what} arrives too slowly (stopped after {total} of {descriptor.size} bytes)")
    if total != descriptor.size:
        raise OciError(f"{what}: truncated: {total} of the {descriptor.size} bytes the manifest says")
    if "sha256:" + hasher.hexdigest() != descriptor.digest:
        raise OciContentError(f"{what}: the bytes served hash to sha256:{hasher.hexdigest()}")
