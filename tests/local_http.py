"""A real HTTP server on loopback whose answer a test sets, standing in for Azure's IMDS (GET) or a
transparency log (POST, whose bodies it keeps)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Answer:
    """What the server answers (status, JSON body), and the headers of the requests it got."""

    url: str = ""
    status: int = 200
    body: bytes = b""
    headers: list[dict[str, str]] = field(default_factory=list)
    posted: list[tuple[str, bytes]] = field(default_factory=list)  # (path, body) of each POST
    drip: float = 0.0  # > 0: the body is sent one byte at a time, this many seconds apart

    def reset(self) -> None:
        self.status, self.body = 200, b""
        self.headers.clear()


@contextmanager
def serving(path: str = "/metadata/THIM/amd/certification") -> Iterator[Answer]:
    """Serve `Answer` at http://127.0.0.1:<free port><path> until the block ends."""
    answer = Answer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.headers.append(dict(self.headers))
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if not answer.drip:
                self.wfile.write(answer.body)
                return
            for byte in answer.body:  # a slow server: each byte well within a socket time-out
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(answer.drip)

        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
            answer.posted.append((self.path, self.rfile.read(length)))
            self.do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    answer.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
