"""Log a sealed certificate's Sigstore bundle in a Rekor v2 transparency log (the agent's `--tlog-url`).

The agent sends Rekor v2's CreateEntryRequest (`POST <url>/api/v2/log/entries`, rekor-tiles'
api/proto/rekor/v2/entry.proto) for the bundle's DSSE envelope: a `hashedrekord` v0.0.2 over the
envelope's PAE with the AK's public key as verifier (aicert.tlog says why not the `dsse` type:
rekor-tiles v2.3.0 refuses it). The log answers, once a checkpoint covers the entry, with a
TransparencyLogEntry, which goes into the bundle's `verificationMaterial.tlogEntries` only after it
checks out with the verifier's own code: the entry of this envelope, included under a checkpoint
the configured log key signed.

One try, bounded: the request times out after `TIMEOUT_SECONDS` (Rekor v2 answers only once a
checkpoint includes the entry; rekor-tiles' CLIENTS.md asks clients to wait at least 20 s), the
answer is read up to `MAX_RESPONSE_BYTES`. A log that is down, slow or wrong costs the certificate
nothing: the caller writes the bundle without the entry and says so in the status.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aicert.bundle import read_bundle
from aicert.tlog import (
    ENTRY_STATUS_MAX_BYTES,
    TLOG_FIELD,
    hashedrekord_request,
    inclusion_problem,
    read_tlog_entry,
)
from aicert.verify.errors import MalformedError

ENTRIES_PATH = "/api/v2/log/entries"
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 256 * 1024  # an entry with a 64-hash proof and an RSA-4096 key is under 12 KiB
BUNDLE_FIELDS = ("logIndex", "logId", "kindVersion", "integratedTime", "inclusionProof", "canonicalizedBody")


@dataclass(frozen=True)
class TransparencyLog:
    """Where the agent logs bundles (`--tlog-url`) and the log's key (`--tlog-key`)."""

    url: str
    key: PublicKeyTypes
    timeout: float = TIMEOUT_SECONDS


class TransparencyLogError(Exception):
    """The log could not be asked, or its answer is not an included entry of this envelope."""


def load_log_key(pem: bytes) -> PublicKeyTypes:
    """The log's public key (`--tlog-key`), PEM."""
    try:
        return load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise TransparencyLogError(f"the transparency log key is not a PEM public key: {exc}") from None


def transparency_log(url: str | None, key_file: Path | None) -> TransparencyLog | None:
    """The log `--tlog-url` and `--tlog-key` name (both or neither), its key read at start."""
    if url is None and key_file is None:
        return None
    if url is None or key_file is None:
        raise TransparencyLogError("--tlog-url and --tlog-key go together (chart: agent.transparencyLog)")
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise TransparencyLogError(f"--tlog-key {key_file}: {exc.strerror or exc}") from None
    return TransparencyLog(url, load_log_key(pem))


def _post(url: str, request: dict[str, Any], timeout: float) -> bytes:
    http = urllib.request.Request(
        url.rstrip("/") + ENTRIES_PATH,
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            body: bytes = answer.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", "replace").strip()
        raise TransparencyLogError(f"the log at {url} answered {exc.code}: {detail[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TransparencyLogError(f"the log at {url} did not answer: {exc}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise TransparencyLogError(f"the log at {url} answered with more than {MAX_RESPONSE_BYTES} bytes")
    return body


def log_entry(
    bundle: dict[str, Any],
    ak_public_pem: str,
    url: str,
    log_key: PublicKeyTypes,
    *,
    timeout: float = TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Submit `bundle`'s envelope to the log at `url`; the TransparencyLogEntry it answers, as the
    bundle keeps it, once it checks out against `log_key`."""
    try:
        _, envelope = read_bundle(bundle)
    except MalformedError as exc:
        raise TransparencyLogError(f"the bundle does not read back: {exc}") from None
    ak_key = load_pem_public_key(ak_public_pem.encode())
    try:
        request = hashedrekord_request(envelope.signed_bytes, envelope.signature, ak_key)
    except ValueError as exc:
        raise TransparencyLogError(str(exc)) from None
    body = _post(url, request, timeout)
    try:
        answer = json.loads(body)
    except ValueError:
        raise TransparencyLogError(f"the log at {url} answered with no JSON") from None
    if not isinstance(answer, dict):
        raise TransparencyLogError(f"the log at {url} answered with no TransparencyLogEntry")
    kept = {key: copy.deepcopy(answer[key]) for key in BUNDLE_FIELDS if key in answer}
    try:
        entry = read_tlog_entry(kept, f"{TLOG_FIELD}[0]")
    except MalformedError as exc:
        raise TransparencyLogError(
            f"the log at {url} answered with an entry aicert cannot read: {exc}"
        ) from None
    problem = inclusion_problem(entry, envelope.signed_bytes, envelope.signature, ak_key, [log_key])
    if problem:
        raise TransparencyLogError(
            f"the log at {url} answered with an entry that does not check out: {problem}"
        )
    if len(entry_status_text(kept).encode()) > ENTRY_STATUS_MAX_BYTES:
        raise TransparencyLogError(
            f"the log at {url} answered with an entry larger than the status holds "
            f"({ENTRY_STATUS_MAX_BYTES} bytes)"
        )
    return kept


def entry_status_text(entry: dict[str, Any]) -> str:
    """The entry as `status.transparencyLogEntry` holds it: compact JSON, in the bundle's key order,
    so that `kubectl aicert get` rebuilds the agent's bundle byte for byte."""
    return json.dumps(entry, separators=(",", ":"))


def with_log_entry(bundle: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """`bundle` carrying `entry` in its verification material."""
    logged = copy.deepcopy(bundle)
    logged["verificationMaterial"]["tlogEntries"] = [entry]
    return logged
