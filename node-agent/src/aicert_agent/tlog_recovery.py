"""An entry the log already holds, recovered from its read API: what the agent does when rekor-tiles
refuses a submission as a duplicate.

A seal tried again after the log took its entry (the agent restarted before it kept the answer)
submits the same entry again; rekor-tiles v2.3.0 then answers 409 with the entry's index in the
`X-Log-Index` header (internal/server/service.go) and no proof. The log's read API (C2SP
tlog-tiles: `checkpoint`, `tile/<L>/<N>[.p/<W>]`) holds what makes one: the latest checkpoint, and
the hashes of the Merkle tree in tiles of 256. This module reads them, checks that the leaf at that
index is the one this envelope makes, and computes the inclusion proof of that leaf in the
checkpoint's tree (RFC 6962 PATH). The entry it builds is then checked exactly as an entry the log
sent is (aicert_agent.transparency): read back, proof against a checkpoint the log key signed.
Nothing the log says is trusted before that; the index is only where to look.

Bounded: at most `MAX_FETCHES` requests, each answer read up to its size (a checkpoint up to
`MAX_CHECKPOINT_BYTES`, a tile exactly 32 bytes per hash it must have), all within one deadline.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.tlog import (
    ENTRY_KIND,
    ENTRY_VERSION,
    MAX_CHECKPOINT_BYTES,
    checkpoint_problem,
    leaf_hash,
    log_id,
    node_hash,
)

TILE_WIDTH: Final = 256
HASH_SIZE: Final = 32
READ_CHUNK: Final = 4096
TILE_HEIGHT: Final = 8  # 256 = 2**8: a tile spans 8 levels of the tree
MAX_FETCHES: Final = (
    48  # a tree of 2**63 leaves has 8 tile levels, each needing at most 3 tiles (or 6 requests)
)


class RecoveryError(Exception):
    """The entry could not be recovered from the log's read API; the message says why."""


Fetch = Callable[[str, int], bytes | None]  # (path, most bytes) -> the body, None when the log has none


def tile_path(level: int, index: int, width: int) -> str:
    """tlog-tiles' path of a tile: the index in groups of three digits, all but the last with an x."""
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    encoded = "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encoded}{suffix}"


class TreeReader:
    """The hashes of a tree of `size` leaves, read tile by tile (each tile once) through `fetch`."""

    def __init__(self, fetch: Fetch, size: int) -> None:
        self.fetch, self.size = fetch, size
        self.tiles: dict[tuple[int, int], list[bytes]] = {}

    def _tile(self, level: int, index: int) -> list[bytes]:
        if (level, index) in self.tiles:
            return self.tiles[(level, index)]
        width = min(TILE_WIDTH, (self.size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH)
        if width <= 0:
            raise RecoveryError(f"the log's tree of {self.size} leaves has no tile {level}/{index}")
        data = self.fetch(tile_path(level, index, width), width * HASH_SIZE)
        if data is None and width < TILE_WIDTH:  # the log grew past it: the full tile begins alike
            data = self.fetch(tile_path(level, index, TILE_WIDTH), TILE_WIDTH * HASH_SIZE)
            data = None if data is None or len(data) != TILE_WIDTH * HASH_SIZE else data[: width * HASH_SIZE]
        if data is None or len(data) != width * HASH_SIZE:
            raise RecoveryError(f"the log has no tile {tile_path(level, index, width)} of {width} hashes")
        hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        self.tiles[(level, index)] = hashes
        return hashes

    def node(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree of 2**`level` leaves whose first leaf is index << level."""
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height  # at the tile level's own level of the tree
        tile_index, offset = divmod(first, TILE_WIDTH)
        hashes = self._tile(tile_level, tile_index)[offset : offset + (1 << height)]
        if len(hashes) != 1 << height:
            raise RecoveryError(f"the log's tree of {self.size} leaves has no complete node {level}/{index}")
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def subtree(self, start: int, count: int) -> bytes:
        """MTH(D[start:start+count]) (RFC 6962 2.1) of a subtree the recursion below reaches."""
        if count & (count - 1) == 0:
            level = count.bit_length() - 1
            return self.node(level, start >> level)
        split = 1 << ((count - 1).bit_length() - 1)
        return node_hash(self.subtree(start, split), self.subtree(start + split, count - split))

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(index, D[size]) (RFC 6962 2.1.1), the leaf's sibling first."""
        proof: list[bytes] = []
        start, count, m = 0, self.size, index
        while count > 1:
            split = 1 << ((count - 1).bit_length() - 1)
            if m < split:
                proof.append(self.subtree(start + split, count - split))
                count = split
            else:
                proof.append(self.subtree(start, split))
                start, count, m = start + split, count - split, m - split
        return proof[::-1]


def read_within(answer: Any, most: int, deadline: float) -> bytes:
    """At most `most` + 1 bytes of an HTTP answer (one more than allowed: the caller says too long),
    read in chunks so that a log sending slowly meets `deadline` (time.monotonic()), where a socket
    time-out alone would wait for each chunk anew. TimeoutError once the deadline has passed."""
    body = b""
    while len(body) <= most:
        chunk: bytes = answer.read(min(READ_CHUNK, most + 1 - len(body)))
        if not chunk:
            break
        body += chunk
        if time.monotonic() > deadline:
            raise TimeoutError("the log's answer took longer than its time-out")
    return body


def http_fetch(read_url: str, deadline: float, max_fetches: int = MAX_FETCHES) -> Fetch:
    """GET `read_url`/path, read at most the size asked (one byte more: too long), a 404 as None;
    at most `max_fetches` requests, none after `deadline` (time.monotonic())."""
    done = 0

    def fetch(path: str, most: int) -> bytes | None:
        nonlocal done
        done += 1
        if done > max_fetches:
            raise RecoveryError(f"recovering the entry would take more than {max_fetches} requests")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RecoveryError("recovering the entry took longer than the log's time-out")
        url = read_url.rstrip("/") + "/" + path
        try:
            with urllib.request.urlopen(urllib.request.Request(url), timeout=left) as answer:
                body = read_within(answer, most, deadline)
        except TimeoutError:
            raise RecoveryError("recovering the entry took longer than the log's time-out") from None
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RecoveryError(f"{url} answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RecoveryError(f"{url} did not answer: {exc}") from None
        if len(body) > most:
            raise RecoveryError(f"{url} answered with more than {most} bytes")
        return body

    return fetch


def recovered_entry(fetch: Fetch, index: int, body: bytes, log_key: PublicKeyTypes) -> dict[str, Any]:
    """The TransparencyLogEntry of the leaf `body` at `index`, built from the log's latest checkpoint
    (signed by `log_key`) and tiles. Raises RecoveryError when the log has no such leaf there."""
    raw = fetch("checkpoint", MAX_CHECKPOINT_BYTES)
    if raw is None:
        raise RecoveryError("the log has no checkpoint")
    try:
        note = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecoveryError("the log's checkpoint is not UTF-8 text") from None
    checkpoint, problem = checkpoint_problem(note, [log_key])
    if checkpoint is None:
        raise RecoveryError(f"the log's checkpoint does not check out: {problem}")
    if not 0 <= index < checkpoint.tree_size:
        raise RecoveryError(
            f"the log's checkpoint ({checkpoint.tree_size} entries) does not cover entry {index}"
        )
    tree = TreeReader(fetch, checkpoint.tree_size)
    if tree.node(0, index) != leaf_hash(body):
        raise RecoveryError(f"the log's entry {index} is not this envelope's")
    proof = tree.inclusion_proof(index)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "logIndex": str(index),
        "logId": {"keyId": b64(log_id(checkpoint.origin, log_key))},
        "kindVersion": {"kind": ENTRY_KIND, "version": ENTRY_VERSION},
        "integratedTime": "0",
        "inclusionProof": {
            "logIndex": str(index),
            "rootHash": b64(checkpoint.root_hash),
            "treeSize": str(checkpoint.tree_size),
            "hashes": [b64(h) for h in proof],
            "checkpoint": {"envelope": note},
        },
        "canonicalizedBody": b64(body),
    }
