"""Log a sealed certificate's Sigstore bundle in a Rekor v2 transparency log (the agent's `--tlog-url`).

The agent sends Rekor v2's CreateEntryRequest (`POST <url>/api/v2/log/entries`, rekor-tiles'
api/proto/rekor/v2/entry.proto) for the bundle's DSSE envelope: a `hashedrekord` v0.0.2 over the
envelope's PAE with the AK's public key as verifier (aicert.tlog says why not the `dsse` type:
rekor-tiles v2.3.0 refuses it). The log answers, once a checkpoint covers the entry, with a
TransparencyLogEntry, which goes into the bundle's `verificationMaterial.tlogEntries` only after it
checks out with the verifier's own code: the entry of this envelope, included under a checkpoint
the configured log key signed.

A seal tried again submits the same envelope (the signature is kept in the pod's control volume
before the log sees it, `LogRecord`) and keeps the entry recorded after the first answer. When the
agent stopped between the log's answer and that record, rekor-tiles refuses the second submission
as a duplicate (409, the index in `X-Log-Index`) and the entry is recovered from the log's read API
(aicert_agent.tlog_recovery), then checked like an answer.

One try, bounded: the request, and a recovery after it, take at most `TIMEOUT_SECONDS` (Rekor v2
answers only once a checkpoint includes the entry; rekor-tiles' CLIENTS.md asks clients to wait at
least 20 s), the answer is read up to `MAX_RESPONSE_BYTES`. A log that is down, slow or wrong costs
the certificate nothing: the caller writes the bundle without the entry and says so in the status.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aicert.bundle import Envelope, read_bundle
from aicert.tlog import (
    ENTRY_STATUS_MAX_BYTES,
    TLOG_FIELD,
    expected_body,
    hashedrekord_request,
    inclusion_problem,
    read_tlog_entry,
)
from aicert.verify.envelope import envelope_problem
from aicert.verify.errors import MalformedError
from aicert_agent.tlog_recovery import RecoveryError, http_fetch, read_within, recovered_entry

log = logging.getLogger("aicert_agent")

LOG_RECORD = "tlog-entry"  # the agent's record of a bundle's submission, in a pod's control volume
ENTRIES_PATH = "/api/v2/log/entries"
DUPLICATE_INDEX_HEADER = "X-Log-Index"  # rekor-tiles' answer to an entry it holds (409)
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 256 * 1024  # an entry with a 64-hash proof and an RSA-4096 key is under 12 KiB
BUNDLE_FIELDS = ("logIndex", "logId", "kindVersion", "integratedTime", "inclusionProof", "canonicalizedBody")


@dataclass(frozen=True)
class TransparencyLog:
    """Where the agent logs bundles (`--tlog-url`) and the log's key (`--tlog-key`)."""

    url: str
    key: PublicKeyTypes
    timeout: float = TIMEOUT_SECONDS
    read_url: str | None = None  # the log's read API (C2SP tlog-tiles), `--tlog-read-url`; None: `url`


class TransparencyLogError(Exception):
    """The log could not be asked, or its answer is not an included entry of this envelope."""


def load_log_key(pem: bytes) -> PublicKeyTypes:
    """The log's public key (`--tlog-key`), PEM."""
    try:
        return load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise TransparencyLogError(f"the transparency log key is not a PEM public key: {exc}") from None


def transparency_log(
    url: str | None, key_file: Path | None, read_url: str | None = None
) -> TransparencyLog | None:
    """The log `--tlog-url` and `--tlog-key` name (both or neither), its key read at start, and
    where its read API is (`--tlog-read-url`, default the same URL)."""
    if url is None and key_file is None:
        if read_url is not None:
            raise TransparencyLogError("--tlog-read-url needs --tlog-url and --tlog-key")
        return None
    if url is None or key_file is None:
        raise TransparencyLogError("--tlog-url and --tlog-key go together (chart: agent.transparencyLog)")
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise TransparencyLogError(f"--tlog-key {key_file}: {exc.strerror or exc}") from None
    return TransparencyLog(url, load_log_key(pem), read_url=read_url)


class DuplicateEntry(Exception):
    """The log already holds this entry (rekor-tiles: 409, the index in `X-Log-Index`)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"the log already holds the entry, at index {index}")
        self.index = index


def _post(url: str, request: dict[str, Any], timeout: float) -> bytes:
    http = urllib.request.Request(
        url.rstrip("/") + ENTRIES_PATH,
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    deadline = time.monotonic() + timeout  # for the whole answer, not for each read
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            body = read_within(answer, MAX_RESPONSE_BYTES, deadline)
    except urllib.error.HTTPError as exc:
        index = exc.headers.get(DUPLICATE_INDEX_HEADER, "") if exc.headers else ""
        if exc.code == 409 and index.isascii() and index.isdigit() and len(index) <= 19:
            raise DuplicateEntry(int(index)) from None
        detail = exc.read(512).decode("utf-8", "replace").strip()
        raise TransparencyLogError(f"the log at {url} answered {exc.code}: {detail[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TransparencyLogError(f"the log at {url} did not answer: {exc}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise TransparencyLogError(f"the log at {url} answered with more than {MAX_RESPONSE_BYTES} bytes")
    return body


def _envelope(bundle: dict[str, Any], ak_public_pem: str) -> tuple[Envelope, PublicKeyTypes]:
    try:
        _, envelope = read_bundle(bundle)
    except MalformedError as exc:
        raise TransparencyLogError(f"the bundle does not read back: {exc}") from None
    return envelope, load_pem_public_key(ak_public_pem.encode())


def checked_entry(
    raw: Any, envelope: Envelope, ak_key: PublicKeyTypes, log_key: PublicKeyTypes, source: str
) -> dict[str, Any]:
    """`raw` (a TransparencyLogEntry as JSON), as the bundle keeps it, once it is an entry of this
    envelope included under a checkpoint `log_key` signed, small enough for the status. `source`
    says where it came from ("the log at URL answered with")."""
    if not isinstance(raw, dict):
        raise TransparencyLogError(f"{source} no TransparencyLogEntry")
    kept = {key: copy.deepcopy(raw[key]) for key in BUNDLE_FIELDS if key in raw}
    try:
        entry = read_tlog_entry(kept, f"{TLOG_FIELD}[0]")
    except MalformedError as exc:
        raise TransparencyLogError(f"{source} an entry aicert cannot read: {exc}") from None
    problem = inclusion_problem(entry, envelope.signed_bytes, envelope.signature, ak_key, [log_key])
    if problem:
        raise TransparencyLogError(f"{source} an entry that does not check out: {problem}")
    if len(entry_status_text(kept).encode()) > ENTRY_STATUS_MAX_BYTES:
        raise TransparencyLogError(
            f"{source} an entry larger than the status holds ({ENTRY_STATUS_MAX_BYTES} bytes)"
        )
    return kept


def log_entry(
    bundle: dict[str, Any],
    ak_public_pem: str,
    url: str,
    log_key: PublicKeyTypes,
    *,
    timeout: float = TIMEOUT_SECONDS,
    read_url: str | None = None,
) -> dict[str, Any]:
    """Submit `bundle`'s envelope to the log at `url`; the TransparencyLogEntry it answers, as the
    bundle keeps it, once it checks out against `log_key`. When the log already holds the entry
    (a seal tried again), the entry is recovered from its read API at `read_url` (default: `url`)
    and checked alike; all of it within `timeout`."""
    deadline = time.monotonic() + timeout
    envelope, ak_key = _envelope(bundle, ak_public_pem)
    try:
        request = hashedrekord_request(envelope.signed_bytes, envelope.signature, ak_key)
    except ValueError as exc:
        raise TransparencyLogError(str(exc)) from None
    try:
        body = _post(url, request, timeout)
    except DuplicateEntry as duplicate:
        reader = read_url or url
        leaf = expected_body(envelope.signed_bytes, envelope.signature, ak_key)
        try:
            raw = recovered_entry(http_fetch(reader, deadline), duplicate.index, leaf, log_key)
        except RecoveryError as exc:
            raise TransparencyLogError(
                f"the log at {url} already holds the entry (index {duplicate.index}) and it could not "
                f"be recovered from {reader}: {exc}"
            ) from None
        return checked_entry(raw, envelope, ak_key, log_key, f"the log at {reader} holds")
    try:
        answer = json.loads(body)
    except ValueError:
        raise TransparencyLogError(f"the log at {url} answered with no JSON") from None
    return checked_entry(answer, envelope, ak_key, log_key, f"the log at {url} answered with")


def kept_entry(
    raw: Any, bundle: dict[str, Any], ak_public_pem: str, log_key: PublicKeyTypes
) -> dict[str, Any]:
    """An entry the agent kept (its `LogRecord`), checked as an answer of the log is."""
    envelope, ak_key = _envelope(bundle, ak_public_pem)
    return checked_entry(raw, envelope, ak_key, log_key, "the agent's record of the log's answer holds")


def entry_status_text(entry: dict[str, Any]) -> str:
    """The entry as `status.transparencyLogEntry` holds it: compact JSON, in the bundle's key order,
    so that `kubectl aicert get` rebuilds the agent's bundle byte for byte."""
    return json.dumps(entry, separators=(",", ":"))


@dataclass(frozen=True)
class LogRecord:
    """What the agent keeps in a pod's control volume (`LOG_RECORD`, written durably) of a bundle's
    submission: the envelope's payload (its sha256), the AK's signature that was submitted, and the
    entry once the log answered with one that checks out. A seal tried again (the agent restarted,
    a write failed) submits the same envelope, so the log holds one entry of it, and keeps that
    entry without asking the log; both are checked again before use (`reused`)."""

    payload_sha256: str
    signature: str  # base64, as the envelope carries it
    entry: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"payloadSha256": self.payload_sha256, "signature": self.signature, "entry": self.entry}
        ).encode()

    @classmethod
    def of(cls, bundle: dict[str, Any], entry: dict[str, Any] | None = None) -> LogRecord:
        envelope = bundle["dsseEnvelope"]
        digest = hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest()
        return cls(digest, envelope["signatures"][0]["sig"], entry)

    @classmethod
    def read(cls, control: Path) -> LogRecord | None:
        """The record, or None when there is none or it is not one (then the seal submits afresh)."""
        try:
            raw = (control / LOG_RECORD).read_bytes()
        except FileNotFoundError:
            return None
        try:
            if len(raw) > MAX_RESPONSE_BYTES:
                raise ValueError("too large")
            record = json.loads(raw)
            entry = record["entry"]
            if not isinstance(entry, dict | None):
                raise ValueError("the entry is not an object")
            return cls(str(record["payloadSha256"]), str(record["signature"]), entry)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s/%s is unreadable (%s); the bundle is submitted afresh", control, LOG_RECORD, exc)
            return None


def reused(record: LogRecord | None, bundle: dict[str, Any], ak_public_pem: str) -> dict[str, Any] | None:
    """`bundle` signed with the record's signature, when the record is of this bundle's payload and
    its signature is the AK's over this envelope; else None."""
    if record is None or record.payload_sha256 != LogRecord.of(bundle).payload_sha256:
        return None
    signed = copy.deepcopy(bundle)
    signed["dsseEnvelope"]["signatures"][0]["sig"] = record.signature
    try:
        _, envelope = read_bundle(signed)
    except MalformedError:
        return None
    _, original = read_bundle(bundle)
    ak_key = load_pem_public_key(ak_public_pem.encode())
    if envelope_problem(envelope, ak_key, original.subject) is not None:
        return None
    return signed


def with_log_entry(bundle: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """`bundle` carrying `entry` in its verification material."""
    logged = copy.deepcopy(bundle)
    logged["verificationMaterial"]["tlogEntries"] = [entry]
    return logged
