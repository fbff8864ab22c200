"""A small Kubernetes REST client (the scale benchmark's: many requests from many threads with little
overhead): JSON over HTTPS with the credentials of one kubeconfig (client certificate or bearer token,
CA inline or from a file; a JSON kubeconfig, or YAML through PyYAML), one TLS connection per request so
that threads can share it, and `ApiError` for an error status.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def _load_kubeconfig(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        loaded: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        import importlib

        yaml: Any = importlib.import_module("yaml")  # a YAML kubeconfig: PyYAML comes with `kubernetes`
        loaded = yaml.safe_load(text)
    return loaded


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            found: dict[str, Any] = item[what]
            return found
    raise ValueError(f"kubeconfig has no {what} named {name!r}")


class KubeClient:
    """JSON over HTTPS with the credentials of one kubeconfig (client certificate or token)."""

    def __init__(self, kubeconfig: Path, credentials_dir: Path) -> None:
        config = _load_kubeconfig(kubeconfig)
        context = _named(config["contexts"], config["current-context"], "context")
        cluster = _named(config["clusters"], context["cluster"], "cluster")
        user = _named(config["users"], context["user"], "user")
        self.server = str(cluster["server"]).rstrip("/")
        parsed = urllib.parse.urlsplit(self.server)
        self.host = parsed.hostname or LOOPBACK
        self.port = parsed.port or 443
        if "certificate-authority-data" in cluster:
            ctx = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        else:
            ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if "token" in user:
            self._headers["Authorization"] = f"Bearer {user['token']}"
        if "client-certificate-data" in user or "client-certificate" in user:
            credentials_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            cert, key = credentials_dir / "client.crt", credentials_dir / "client.key"
            for target, data_key, file_key in (
                (cert, "client-certificate-data", "client-certificate"),
                (key, "client-key-data", "client-key"),
            ):
                data = (
                    base64.b64decode(user[data_key])
                    if data_key in user
                    else Path(user[file_key]).read_bytes()
                )
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            ctx.load_cert_chain(str(cert), str(key))
        self._ssl = ctx

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ssl, timeout=timeout)

    @staticmethod
    def _target(path: str, query: Mapping[str, str] | None) -> str:
        return path + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._connect(timeout)
        try:
            conn.request(method, self._target(path, query), body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise self._error(response.status, data)
        if not data:
            return {}
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    @staticmethod
    def _error(status: int, data: bytes) -> ApiError:
        try:
            body = json.loads(data)
            return ApiError(status, str(body.get("reason", "")), str(body.get("message", data[:500])))
        except ValueError:
            return ApiError(status, "", data[:500].decode(errors="replace"))
