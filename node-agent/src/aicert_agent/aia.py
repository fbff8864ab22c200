"""Fetch an issuer's certificate from a caIssuers URL (AIA) for the AK chain: the agent's edge.

Bounded: plain HTTP only (redirects only to plain HTTP), at most `MAX_BYTES` read, every socket
operation under `timeout` and the whole answer under `timeout` too (a server trickling bytes is cut
off). An answer that reads as certificates (DER or PEM) is cached on disk under the agent's state
directory, keyed by the URL, and served from there next time: a node restart does not fetch again,
unless the cached answer does not serve (not the issuer, or an issuer no longer valid: renewed at the
same URL), when the URL is fetched again and the cache overwritten.
A cached file is only a candidate, held to the same name and signature checks as a fetched one
(`aicert.trust.issuers.assemble_path`), so a cache someone wrote into can lead nowhere.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from aicert.boundedfile import FileRefused, read_regular_file
from aicert.trust.issuers import FetchError
from aicert.trust.pem import load_certificates

MAX_BYTES = 64 * 1024
"""An issuer certificate is 1 to 2 KiB; 64 KiB leaves room for a PEM bundle and no more."""

DEFAULT_TIMEOUT_SECONDS = 10.0
CACHE_DIR_NAME = "aia-cache"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.lower().startswith("http://"):
            raise FetchError(f"redirected to {newurl}, which is not plain HTTP")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


class AiaFetcher:
    """`fetch(url) -> bytes` for `assemble_path`, with an on-disk cache in `cache_dir`."""

    def __init__(
        self, cache_dir: Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, max_bytes: int = MAX_BYTES
    ) -> None:
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(_HttpOnlyRedirects())

    def cache_path(self, url: str) -> Path:
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest() + ".cert")

    def __call__(self, url: str, *, fresh: bool = False) -> bytes:
        """The answer at `url`, from the cache unless `fresh` (then fetched, and cached anew)."""
        if not url.lower().startswith("http://"):
            raise FetchError("only plain HTTP caIssuers URLs are fetched")
        cached = None if fresh else self._cached(url)
        if cached is not None:
            return cached
        data = self._download(url)
        try:
            load_certificates(data)
        except ValueError as exc:
            raise FetchError(f"the answer is not a certificate ({exc})") from None
        self._store(url, data)
        return data

    def _cached(self, url: str) -> bytes | None:
        path = self.cache_path(url)
        try:
            data = read_regular_file(path, limit=self.max_bytes)
            load_certificates(data)
        except (FileRefused, OSError, ValueError):
            return None  # absent or damaged: fetch again (and overwrite)
        return data

    def _download(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                chunks: list[bytes] = []
                size = 0
                while chunk := response.read(4096):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError(f"the answer is larger than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"the answer took longer than {self.timeout:g} s")
                    chunks.append(chunk)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise FetchError(f"no answer ({reason})") from None
        return b"".join(chunks)

    def _store(self, url: str, data: bytes) -> None:
        path = self.cache_path(url)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only costs a fetch at the next start
