"""A local RFC 3161 time-stamping authority for the tests: the Go program in localcluster/tsa
(github.com/digitorus/timestamp, the library sigstore's timestamp-authority builds on), built once
from the Go module proxy and cached like the control-plane binaries.

    with LocalTsa(cert_pem, key_pem, at="2025-03-01T00:00:00Z") as tsa:
        tsa.url   # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from aicert_localcluster.binaries import cached_go_build

SOURCE = Path(__file__).resolve().parents[1] / "tsa"


def tsa_binary() -> Path:
    return cached_go_build(SOURCE, "tsa")


class LocalTsa:
    """A running TSA signing with `key_pem` (PKCS#8) as `cert_pem`; `at` fixes the time it certifies."""

    def __init__(self, cert_pem: Path, key_pem: Path, *, at: str | None = None) -> None:
        self.argv = [str(tsa_binary()), "-cert", str(cert_pem), "-key", str(key_pem)]
        if at is not None:
            self.argv += ["-time", at]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> LocalTsa:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"the local TSA did not start: {err.strip()}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.communicate(timeout=10)
