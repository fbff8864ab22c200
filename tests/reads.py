"""Counting what is read: the bytes every os.readv returns, from any thread (the hashing code reads
with readv), so a test can tell a refusal before any byte was read from one after."""

from __future__ import annotations

import threading


class Reads:
    """Counts the bytes every os.readv returns, from any thread."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def reset(self) -> None:
        """Count from here: what the test read to set things up is not the code under test's."""
        with self._lock:
            self.bytes = 0
