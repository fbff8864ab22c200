"""A fake Azure Resource Manager for `aicert aks`: a local HTTPS server that records every request.

It serves what the commands call, as ARM does:

- `GET …/managedClusters/{cluster}`, `GET …/agentPools`, `GET …/agentPools/{pool}` (404 with an ARM
  error body when absent);
- `PUT …/agentPools/{pool}`: a long-running operation. With `lro = "Azure-AsyncOperation"` it
  answers 201 (new) or 200 (update) with an `Azure-AsyncOperation` URL, whose status is
  `InProgress` for `in_progress_polls` polls, then `Succeeded` (or `Failed` with
  `operation_error`); the final GET of the pool then shows `provisioningState: Succeeded`. With
  `lro = "Location"` the PUT's answer carries a `Location` URL instead, which answers 202 while in
  progress, then 200 with the pool. `put_error` makes the PUT itself fail (status, code, message);
- `GET /subscriptions/{id}/providers/Microsoft.Compute/skus`: the region's resource SKUs, in two
  pages joined by `nextLink`.

Requests must carry `api-version` (else 400 MissingApiVersionParameter) and `Authorization: Bearer
<token>` (else 401). `issue_tls` makes the self-signed CA the client must trust; `FixedToken` is
a TokenCredential that always gives the same token.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from azure.core.credentials import AccessToken

from aicert_localcluster.pki import ClusterPKI

TOKEN = "fake-arm-token"
OPERATIONS_API_VERSION = "2016-03-30"  # what AKS puts in its Azure-AsyncOperation URLs


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the self-signed CA the client trusts
    certificate: Path  # the server's chain (leaf for 127.0.0.1 and localhost)
    key: Path


def issue_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files in
    `directory` (the local cluster's PKI, which makes the same for kube-apiserver)."""
    pki = ClusterPKI.create(directory, server_ips=("127.0.0.1",), server_names=("localhost",))
    return TlsFiles(pki.ca_cert_file, pki.apiserver.cert, pki.apiserver.key)


class FixedToken:
    """An azure-core TokenCredential that always gives `token`; `scopes` records what was asked."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, 4102444800)  # 2100-01-01: never refreshed during a test


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, or None

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


def vm_sku(name: str, *capabilities: tuple[str, str], location: str = "westeurope") -> dict[str, Any]:
    """A Compute resource SKU entry for a VM size, as `GET …/Microsoft.Compute/skus` lists it."""
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "locations": [location],
        "capabilities": [{"name": k, "value": v} for k, v in capabilities],
        "restrictions": [],
    }


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@dataclass
class FakeArm:
    subscription: str
    resource_group: str
    cluster: str
    location: str = "westeurope"
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> properties
    skus: list[dict[str, Any]] = field(default_factory=list)
    lro: str = "Azure-AsyncOperation"  # or "Location"
    in_progress_polls: int = 2
    operation_error: dict[str, str] | None = None  # the operation ends Failed with this error
    put_error: tuple[int, str, str] | None = None  # (status, code, message): the PUT itself fails
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _polls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cluster_path(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.cluster}"
        )

    def pool_path(self, name: str) -> str:
        return f"{self.cluster_path}/agentPools/{name}"

    def operation_path(self, kind: str, operation: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/providers/Microsoft.ContainerService"
            f"/locations/{self.location}/{kind}/{operation}"
        )

    def skus_path(self) -> str:
        return f"/subscriptions/{self.subscription}/providers/Microsoft.Compute/skus"

    def pool_json(self, name: str) -> dict[str, Any]:
        return {
            "id": self.pool_path(name),
            "name": name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": self.pools[name],
        }

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request, in order."""
        return [(r.method, r.path) for r in self.requests]

    # -- serving -------------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(request)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, {}, arm_error("InvalidAuthenticationToken", "the access token is invalid")
            if not request.api_version:
                return 400, {}, arm_error("MissingApiVersionParameter", "the api-version is missing")
            return self._route(request)

    def _route(self, request: Request) -> tuple[int, dict[str, str], Any]:
        path, method = request.path, request.method
        if method == "GET" and path == self.cluster_path:
            return 200, {}, self._cluster_json()
        if method == "GET" and path == f"{self.cluster_path}/agentPools":
            return 200, {}, {"value": [self.pool_json(name) for name in self.pools]}
        pool = re.fullmatch(re.escape(self.cluster_path) + r"/agentPools/([^/]+)", path)
        if pool and method == "GET":
            return self._get_pool(pool.group(1))
        if pool and method == "PUT":
            return self._put_pool(pool.group(1), request.body)
        operation = re.fullmatch(re.escape(self.operation_path("operations", "")) + r"([^/]+)", path)
        if operation and method == "GET":
            return self._operation_status(operation.group(1))
        result = re.fullmatch(re.escape(self.operation_path("operationresults", "")) + r"([^/]+)", path)
        if result and method == "GET":
            return self._operation_result(result.group(1))
        if method == "GET" and path == self.skus_path():
            return self._skus(request)
        return 404, {}, arm_error("ResourceNotFound", f"the resource {path} was not found")

    def _cluster_json(self) -> dict[str, Any]:
        return {
            "id": self.cluster_path,
            "name": self.cluster,
            "type": "Microsoft.ContainerService/ManagedClusters",
            "location": self.location,
            "properties": {"kubernetesVersion": "1.33.2", "provisioningState": "Succeeded"},
        }

    def _get_pool(self, name: str) -> tuple[int, dict[str, str], Any]:
        if name not in self.pools:
            return 404, {}, arm_error("NotFound", f"agent pool {name} not found")
        return 200, {}, self.pool_json(name)

    def _put_pool(self, name: str, body: Any) -> tuple[int, dict[str, str], Any]:
        if self.put_error:
            status, code, message = self.put_error
            return status, {}, arm_error(code, message)
        existed = name in self.pools
        properties = dict(body["properties"])
        properties["provisioningState"] = "Updating" if existed else "Creating"
        self.pools[name] = properties
        operation = f"op-{len(self._polls) + 1}-{name}"
        self._polls[operation] = 0
        kind, header = (
            ("operationresults", "Location") if self.lro == "Location" else ("operations", self.lro)
        )
        status_url = f"{self.url}{self.operation_path(kind, operation)}?api-version={OPERATIONS_API_VERSION}"
        return (200 if existed else 201), {header: status_url}, self.pool_json(name)

    def _advance(self, operation: str) -> bool:
        """Count a poll; True once the operation is over."""
        self._polls[operation] += 1
        return self._polls[operation] > self.in_progress_polls

    def _finish(self, name: str) -> None:
        self.pools[name]["provisioningState"] = "Failed" if self.operation_error else "Succeeded"

    def _operation_status(self, operation: str) -> tuple[int, dict[str, str], Any]:
        if operation not in self._polls:
            return 404, {}, arm_error("NotFound", f"operation {operation} not found")
        name = operation.split("-", 2)[2]
        if not self._advance(operation):
            return 200, {}, {"name": operation, "status": "InProgress"}
        self._finish(name)
        if self.operation_error:
            return 200, {}, {"name": operation, "status": "Failed", "error": self.operation_error}
        return 200, {}, {"name": operation, "status": "Succeeded"}

    def _operation_result(self, operation: str) -> tuple[int, dict[str, str], Any]:
        name = operation.split("-", 2)[2]
        if not self._advance(operation):
            location = f"{self.url}{self.operation_path('operationresults', operation)}"
            return 202, {"Location": f"{location}?api-version={OPERATIONS_API_VERSION}"}, None
        self._finish(name)
        return 200, {}, self.pool_json(name)

    def _skus(self, request: Request) -> tuple[int, dict[str, str], Any]:
        wanted = re.fullmatch(r"location eq '([^']+)'", request.query.get("$filter", ""))
        skus = [s for s in self.skus if not wanted or wanted.group(1) in s.get("locations", [])]
        half = len(skus) // 2
        if request.query.get("$skiptoken") == "2":
            return 200, {}, {"value": skus[half:]}
        query = {
            "api-version": "2021-07-01",
            "$skiptoken": "2",
            **({"$filter": wanted.group(0)} if wanted else {}),
        }
        next_link = f"{self.url}{self.skus_path()}?{urlencode(query)}"
        return 200, {}, {"value": skus[:half], "nextLink": next_link}

    # -- lifecycle -----------------------------------------------------------------------------

    def serve(self, tls: TlsFiles) -> ThreadingHTTPServer:
        """Start serving on 127.0.0.1 (a free port) in a thread; `url` is set. Stop with
        `server.shutdown(); server.server_close()`."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                status, headers, body = fake.handle(request)
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-ms-request-id", f"fake-{len(fake.requests)}")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.certificate, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-arm", daemon=True).start()
        return server
