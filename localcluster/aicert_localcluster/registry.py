"""A real OCI registry (distribution's `registry`, pinned in localcluster/registry/go.mod) that real
nodes pull images from by digest, as an AKS node pulls from ACR.

    with Registry(tmp / "registry") as registry:                  # 127.0.0.1:<free port>, plain http
        pulled = registry.push(store.layout, store.build(...))    # 127.0.0.1:<port>/<repo>@sha256:<hex>
        RealNode(cluster, ..., registries=[registry.host])         # containerd trusts it as http

`Registry(directory, credentials=("user", "password"))` requires basic auth for every request
(distribution's htpasswd auth is registry-wide, so a registry that needs a pull secret is a second
instance); `pull_secret(name, namespace)` is the kubernetes.io/dockerconfigjson Secret for it.
`Registry(directory, address=node.node_ip)` listens on a real node's IP instead, where pods reach it
(a pod's network has no route to the host's 127.0.0.1), as a push pod reaches a registry.

Everything it writes is under `directory`: `config.yml`, `htpasswd`, `storage/` (the filesystem
driver's root) and `registry.log`. It listens on 127.0.0.1 only (or `address`); stop() kills it (SIGTERM, then
SIGKILL) and it dies with the Python process otherwise (PR_SET_PDEATHSIG).

`push` is a small OCI distribution client over http.client: each blob the manifest names is uploaded
unless the registry has it (monolithic upload: POST, then PUT with its digest, which the registry
checks), then the manifest's own bytes are PUT under their digest, so the digest is unchanged. The
push is checked by a HEAD of the manifest: its Docker-Content-Digest must be the layout's digest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from .binaries import ensure_node_binaries
from .cluster import _die_with_parent, _tail, free_port
from .images import MEDIA_MANIFEST, ImageNotFound, parse_reference

STOP_GRACE_SECONDS = 10.0
PORT_ATTEMPTS = 3
HTTP_TIMEOUT_SECONDS = 60.0
CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REALM = "aicert-localcluster"


class RegistryError(RuntimeError):
    """The registry did not start or answer, or a push failed or did not keep the digest."""


def htpasswd_line(user: str, password: str) -> str:
    """`user:<bcrypt hash>` (the only scheme distribution accepts), by Apache's `htpasswd -B`
    (Debian's apache2-utils); the password goes through stdin, not the command line."""
    if not user or ":" in user or "\n" in user or "\n" in password:
        raise RegistryError("a registry user must be non-empty without ':' or newlines")
    try:
        done = subprocess.run(
            ["htpasswd", "-n", "-B", "-i", user], input=password, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise RegistryError("htpasswd is needed for a registry with auth (Debian: apache2-utils)") from exc
    line = done.stdout.strip()
    if done.returncode != 0 or not line.startswith(f"{user}:$2"):
        raise RegistryError(f"htpasswd failed (exit {done.returncode}): {done.stderr.strip()}")
    return line


def registry_path(repository: str) -> str:
    """The repository's path in a registry: without its host component, if it has one
    (`registry.local/team/tool` -> `team/tool`), as a reference's domain is not part of the path."""
    first, sep, rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return repository


class Registry:
    """distribution's registry on 127.0.0.1 at a free port, storing in `directory` (a context
    manager; `start()` returns once `/v2/` answers)."""

    def __init__(
        self,
        directory: Path,
        *,
        credentials: tuple[str, str] | None = None,
        bin_dir: Path | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.directory = Path(directory).resolve()
        self.credentials = credentials
        self.address = address
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else ensure_node_binaries()
        self.port = 0
        self.log = self.directory / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>` (or `address`): the registry's host in an image reference (and
        containerd's hosts dir)."""
        return f"{self.address}:{self.port}"

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    def config(self) -> dict[str, Any]:
        """distribution's configuration (YAML; JSON is YAML)."""
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": False},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.credentials is not None:
            config["auth"] = {"htpasswd": {"realm": _REALM, "path": str(self.directory / "htpasswd")}}
        return config

    def start(self, timeout: float = 30) -> None:
        """Start it and return once `/v2/` answers as a registry; a port taken meanwhile by another
        process (free_port() picks it, the registry binds it later) is retried with another."""
        if self._process is not None:
            raise RegistryError("the registry is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        if self.credentials is not None:
            (self.directory / "htpasswd").write_text(htpasswd_line(*self.credentials) + "\n")
        deadline = time.monotonic() + timeout
        try:
            for _ in range(PORT_ATTEMPTS):
                if self._serve(deadline):
                    return
            raise RegistryError(
                f"no free port after {PORT_ATTEMPTS} attempts; tail of {self.log}:\n{_tail(self.log)}"
            )
        except BaseException:
            self.stop()
            raise

    def _serve(self, deadline: float) -> bool:
        """One attempt at a free port: True once it answers, False if the port was taken."""
        self.stop()
        self.port = free_port()
        config_file = self.directory / "config.yml"
        config_file.write_text(json.dumps(self.config(), indent=2))
        handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._log_handle = handle
        # no OpenTelemetry exporter: it would try to send traces to localhost:4318
        env = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_SDK_DISABLED="true")
        process = subprocess.Popen(
            [str(self.bin_dir / "registry"), "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._process = process
        while True:
            # answers, and it is this process that does (not another one on the port)
            if self._answers() and process.poll() is None:
                return True
            if process.poll() is not None:
                if "address already in use" in _tail(self.log, 5):
                    return False
                raise RegistryError(
                    f"the registry exited with code {process.returncode}; tail of {self.log}:\n{_tail(self.log)}"
                )
            if time.monotonic() >= deadline:
                raise RegistryError(
                    f"the registry did not answer /v2/ in time; tail of {self.log}:\n{_tail(self.log)}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        """/v2/ answers as a registry: 200, or 401 when auth is required, with distribution's API header."""
        try:
            status, headers, _ = self._request("GET", "/v2/", auth=False, timeout=2)
        except OSError:
            return False
        return status in (200, 401) and headers.get("docker-distribution-api-version") == "registry/2.0"

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # http -----------------------------------------------------------------------------------------

    def _headers(self, auth: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if auth and self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def _request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to the registry; returns (status, headers with lower-case names, body)."""
        connection = http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        try:
            connection.request(method, target, body=body, headers=self._headers(auth, headers))
            response = connection.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            connection.close()

    def _expect(self, what: str, expected: int, answer: tuple[int, dict[str, str], bytes]) -> dict[str, str]:
        status, headers, data = answer
        if status != expected:
            raise RegistryError(
                f"{what}: HTTP {status} (expected {expected}): {data[:500].decode(errors='replace')}"
            )
        return headers

    def manifest_digest(
        self, repository: str, reference: str, media_type: str = MEDIA_MANIFEST
    ) -> str | None:
        """The Docker-Content-Digest of HEAD /v2/<repository>/manifests/<reference> (None: 404)."""
        status, headers, _ = self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": media_type}
        )
        if status == 404:
            return None
        if status != 200:
            raise RegistryError(f"HEAD {repository} manifest {reference}: HTTP {status}")
        return headers.get("docker-content-digest")

    # pushing --------------------------------------------------------------------------------------

    def push(self, layout: Path, reference: str, *, repository: str | None = None) -> str:
        """Push the image `reference` (`repo@sha256:<hex>`, or `repo:tag` named in the layout's
        index.json) of the OCI layout at `layout` to `<host>/<repository>` (default: the reference's
        repository without its host component), preserving the manifest bytes; a tag is pushed too.
        Returns `<host>/<repository>@sha256:<manifest hex>`."""
        try:
            parsed = parse_reference(reference)
        except ImageNotFound as exc:
            raise RegistryError(str(exc)) from exc
        blobs = Path(layout) / "blobs" / "sha256"
        digest = parsed.digest or self._tagged_digest(Path(layout), reference, parsed.repository, parsed.tag)
        manifest_hex = digest.removeprefix("sha256:")
        try:
            manifest_bytes = (blobs / manifest_hex).read_bytes()
        except OSError as exc:
            raise RegistryError(f"{reference}: manifest {digest} is not in {layout} ({exc})") from exc
        if hashlib.sha256(manifest_bytes).hexdigest() != manifest_hex:
            raise RegistryError(f"{reference}: manifest blob in {layout} does not match its digest {digest}")
        try:
            manifest = json.loads(manifest_bytes)
            media_type = str(manifest.get("mediaType") or MEDIA_MANIFEST)
            descriptors = [manifest["config"], *(manifest.get("layers") or [])]
            blob_digests = [str(d["digest"]) for d in descriptors]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryError(f"{reference}: not an image manifest ({exc!r})") from exc
        if media_type != MEDIA_MANIFEST:
            raise RegistryError(f"{reference}: media type {media_type!r} is not an OCI image manifest")
        path = repository or registry_path(parsed.repository)
        for blob in blob_digests:
            self._push_blob(path, blobs, blob)
        targets = [digest] + ([parsed.tag] if parsed.tag else [])
        for target in targets:
            headers = self._expect(
                f"PUT {path} manifest {target}",
                201,
                self._request(
                    "PUT",
                    f"/v2/{path}/manifests/{target}",
                    body=manifest_bytes,
                    headers={"Content-Type": media_type},
                ),
            )
            if headers.get("docker-content-digest") != digest:
                raise RegistryError(
                    f"the registry stored {path} manifest {target} as {headers.get('docker-content-digest')}, "
                    f"not {digest}"
                )
        served = self.manifest_digest(path, digest, media_type)
        if served != digest:
            raise RegistryError(f"after the push the registry serves {path}@{digest} as {served}")
        return f"{self.host}/{path}@{digest}"

    @staticmethod
    def _tagged_digest(layout: Path, reference: str, repository: str, tag: str | None) -> str:
        try:
            index = json.loads((layout / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{layout}: not an OCI image layout ({exc})") from exc
        names = {tag, f"{repository}:{tag}"}
        found = {
            str(m.get("digest"))
            for m in index.get("manifests") or []
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") in names
        }
        if len(found) != 1:
            raise RegistryError(f"{reference}: {len(found)} manifests in {layout}/index.json carry that name")
        (digest,) = found
        if not digest.startswith("sha256:") or not _HEX64.fullmatch(digest.removeprefix("sha256:")):
            raise RegistryError(f"{reference}: index.json names digest {digest!r}")
        return digest

    def _push_blob(self, path: str, blobs: Path, digest: str) -> None:
        hex_ = digest.removeprefix("sha256:")
        if not digest.startswith("sha256:") or not _HEX64.fullmatch(hex_):
            raise RegistryError(f"{path}: unsupported blob digest {digest!r}")
        status, _, _ = self._request("HEAD", f"/v2/{path}/blobs/{digest}")
        if status == 200:
            return
        source = blobs / hex_
        if not source.is_file():
            raise RegistryError(f"{path}: blob {digest} is missing from {blobs}")
        headers = self._expect(
            f"POST {path} blob upload", 202, self._request("POST", f"/v2/{path}/blobs/uploads/")
        )
        location = urllib.parse.urlsplit(
            urllib.parse.urljoin(f"http://{self.host}/", headers.get("location", ""))
        )
        query = urllib.parse.parse_qsl(location.query, keep_blank_values=True)
        query.append(("digest", digest))
        target = f"{location.path}?{urllib.parse.urlencode(query)}"
        with open(source, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            self._expect(
                f"PUT {path} blob {digest}",
                201,
                self._request(
                    "PUT",
                    target,
                    body=body,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                ),
            )

    # pull secrets ---------------------------------------------------------------------------------

    def docker_config(self) -> dict[str, Any]:
        """The `.dockerconfigjson` of a pull secret for this registry (its credentials)."""
        if self.credentials is None:
            raise RegistryError("this registry needs no credentials")
        user, password = self.credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"auths": {self.host: {"username": user, "password": password, "auth": token}}}

    def pull_secret(self, name: str, namespace: str) -> dict[str, Any]:
        """A kubernetes.io/dockerconfigjson Secret holding this registry's credentials."""
        encoded = base64.b64encode(json.dumps(self.docker_config()).encode()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": encoded},
        }
