"""A private Rekor v2 transparency log for the tests: rekor-tiles' server with Tessera's POSIX
(filesystem) storage driver (cmd/rekor-server/posix, pinned in localcluster/rekor-tiles/go.mod and
built once, see `ensure_rekor_server`), on 127.0.0.1, writing only under `directory`.

    with LocalRekor(tmp_path) as rekor:
        rekor.url        # http://127.0.0.1:PORT
        rekor.key_pem    # the log's Ed25519 public key (PEM): the key a verifier pins

The flags are those of rekor-tiles' posix-compose.yml less what a test does not need (no witness,
no persistent antispam): `--storage-dir`, `--signer-filepath` (an Ed25519 PKCS#8 key made here),
`--hostname` (the checkpoint's origin), and a 1 s checkpoint interval so that an entry is answered
quickly (Rekor v2 answers once a checkpoint includes it).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from aicert_localcluster.binaries import (
    LOCALCLUSTER_DIR,
    Binary,
    Log,
    _locked,
    _required_version,
    _stderr,
    build_one,
    cache_root,
    is_current,
)

REKOR_MODULE_DIR = LOCALCLUSTER_DIR / "rekor-tiles"
REKOR_MODULE = "github.com/sigstore/rekor-tiles/v2"
ORIGIN = "aicert-test-log"
START_SECONDS = 60.0


def rekor_version() -> str:
    """The pinned rekor-tiles version, e.g. "v2.3.0" (from localcluster/rekor-tiles/go.mod)."""
    return _required_version(REKOR_MODULE_DIR / "go.mod", REKOR_MODULE)


def rekor_server_binary() -> Binary:
    """rekor-tiles' Rekor v2 server with Tessera's POSIX (filesystem) storage driver: the private
    transparency log the integration tests submit bundles to, on 127.0.0.1."""
    return Binary(
        "rekor-server",
        REKOR_MODULE_DIR,
        f"{REKOR_MODULE}/cmd/rekor-server/posix",
        (),
        f"\nmod\t{REKOR_MODULE}\t{rekor_version()}\t",
        buildinfo=True,
    )


def ensure_rekor_server(*, jobs: int = 2, log: Log = _stderr) -> Path:
    """The pinned rekor-server (posix), built once into ~/.cache/aicert/rekor-tiles-<version>/bin/."""
    binary = rekor_server_binary()
    out_dir = cache_root() / f"rekor-tiles-{rekor_version()}" / "bin"
    with _locked(out_dir.parent):
        out_dir.mkdir(parents=True, exist_ok=True)
        if not is_current(binary, out_dir / binary.name):
            build_one(binary, out_dir, jobs=jobs, log=log)
    return out_dir / binary.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRekor:
    def __init__(self, directory: Path, *, origin: str = ORIGIN) -> None:
        self.directory = directory
        self.origin = origin
        key = ed25519.Ed25519PrivateKey.generate()
        self.key_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        self._private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalRekor:
        binary = ensure_rekor_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        signer = self.directory / "log-key.pem"
        signer.write_bytes(self._private_pem)
        signer.chmod(0o600)
        (self.directory / "log.pub.pem").write_bytes(self.key_pem)
        argv = [
            str(binary),
            "serve",
            "--http-address=127.0.0.1",
            f"--http-port={self.port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={free_port()}",
            f"--http-metrics-port={free_port()}",
            f"--hostname={self.origin}",
            f"--storage-dir={self.directory / 'log'}",
            f"--signer-filepath={signer}",
            "--checkpoint-interval=1s",
        ]
        log = (self.directory / "rekor-server.log").open("wb")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = (self.directory / "rekor-server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rekor-server exited {self._process.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if b"SERVING" in answer.read(256):
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"rekor-server did not answer on {self.url} within {START_SECONDS:g} s")

    def close(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
