"""Start and stop a software TPM (swtpm) on loopback for tests and the demo.

    with Swtpm() as tpm:           # fresh state in a temporary directory
        print(tpm.spec)            # "swtpm:host=127.0.0.1,port=P" (control channel on P + 1)
        tpm.restart()              # like a reboot: same state, PCRs reset

It binds 127.0.0.1 unless told another local address (a test node's IP, for the agent pods of that
node). ``python -m aicert_agent.tpm.swtpm [--state DIR]`` runs one until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"

_TPM_ST_NO_SESSIONS = 0x8001
_TPM_CC_SHUTDOWN = 0x00000145
_TPM_CC_GET_RANDOM = 0x0000017B
_TPM_SU_CLEAR = 0x0000


class SwtpmError(RuntimeError):
    pass


def _tpm_command(host: str, port: int, code: int, params: bytes, timeout: float) -> int:
    """Send one TPM command (no sessions) to a swtpm data port; return the response code."""
    command = struct.pack(">HII", _TPM_ST_NO_SESSIONS, 10 + len(params), code) + params
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(command)
        header = b""
        while len(header) < 10:
            chunk = conn.recv(10 - len(header))
            if not chunk:
                raise ConnectionError("swtpm closed the connection")
            header += chunk
    _tag, _size, rc = struct.unpack(">HII", header)
    return int(rc)


def _port_pair_is_free(port: int) -> bool:
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, p))
            except OSError:
                return False
    return True


def _free_port_pair() -> int:
    """A port P such that P and P + 1 are free on 127.0.0.1 right now (raced, so callers retry)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _port_pair_is_free(port):
            return port
    raise SwtpmError("found no two consecutive free TCP ports on 127.0.0.1")


class Swtpm:
    """A swtpm process (TPM 2.0, TCP on loopback) over a state directory.

    `state_dir` None: a temporary directory, deleted by `close()`. A given directory is kept.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        binary: str = "swtpm",
        start_timeout: float = 15.0,
        host: str = HOST,
        port: int | None = None,
    ) -> None:
        """`host`: the local address to bind; `port`: the data port (control on port + 1), else free
        ports on 127.0.0.1 are picked."""
        found = shutil.which(binary)
        if found is None:
            raise SwtpmError(f"{binary!r} not found on PATH (Debian: apt-get install swtpm swtpm-tools)")
        self._binary = found
        self._owns_state = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="swtpm-")) if state_dir is None else Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / "swtpm.log"
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = port
        self.host = host

    # -- properties ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise SwtpmError("swtpm has not been started")
        return self._port

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def spec(self) -> str:
        """The TPM spec the agent takes (``--tpm``): ``swtpm:host=127.0.0.1,port=P``."""
        return f"swtpm:host={self.host},port={self.port}"

    @property
    def tcti(self) -> str:
        """The same as a tpm2-tools TCTI string (``TPM2TOOLS_TCTI``)."""
        return self.spec

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Swtpm:
        """Start swtpm (on new free ports the first time, on the same ports after that)."""
        if self.running:
            return self
        attempts = 1 if self._port is not None else 5
        last_error: Exception | None = None
        for _ in range(attempts):
            port = self._port if self._port is not None else _free_port_pair()
            try:
                self._spawn(port)
            except SwtpmError as e:
                last_error = e
                continue
            self._port = port
            return self
        raise SwtpmError(f"swtpm did not start: {last_error}")

    def _spawn(self, port: int) -> None:
        args = [
            self._binary,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.state_dir}",
            "--server",
            f"type=tcp,port={port},bindaddr={self.host}",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr={self.host}",
            "--flags",
            "not-need-init,startup-clear",
            "--log",
            f"file={self.log_path}",
        ]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + self._start_timeout
        while True:
            if proc.poll() is not None:
                raise SwtpmError(f"swtpm exited with {proc.returncode}: {self._log_tail()}")
            try:
                rc = _tpm_command(self.host, port, _TPM_CC_GET_RANDOM, struct.pack(">H", 8), timeout=1.0)
            except OSError:
                rc = None
            if rc == 0:
                break
            if time.monotonic() > deadline:
                self._kill(proc)
                raise SwtpmError(f"swtpm on port {port} did not answer within {self._start_timeout}s")
            time.sleep(0.05)
        self._proc = proc

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() or "(no log output)"
        except OSError:
            return ""

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, *, orderly: bool = True) -> None:
        """Stop swtpm, keeping its state.

        `orderly`: send TPM2_Shutdown(CLEAR) first, as an OS does before a reboot (a TPM counts
        unorderly shutdowns against its dictionary-attack limit). Best effort: skipped when a
        client still holds the connection. Then SIGTERM (SIGKILL after 5 s).
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if orderly and proc.poll() is None and self._port is not None:
            with contextlib.suppress(OSError):
                _tpm_command(
                    self.host, self._port, _TPM_CC_SHUTDOWN, struct.pack(">H", _TPM_SU_CLEAR), timeout=2.0
                )
        self._kill(proc)

    def restart(self, *, orderly: bool = True) -> None:
        """Stop and start again on the same state directory and ports: a reboot (PCRs reset)."""
        self.stop(orderly=orderly)
        self.start()

    def close(self) -> None:
        """Stop, and delete the state directory if it is a temporary one this object made."""
        self.stop()
        if self._owns_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Swtpm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run a swtpm on 127.0.0.1 until interrupted.")
    parser.add_argument("--state", type=Path, default=None, help="state directory (default: temporary)")
    args = parser.parse_args()
    with Swtpm(args.state) as tpm:
        print(tpm.spec, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while tpm.running:
                time.sleep(1)


if __name__ == "__main__":
    main()
