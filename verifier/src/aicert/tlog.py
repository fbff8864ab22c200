"""A Rekor v2 transparency log entry in a Sigstore bundle, and what proves it offline.

Rekor v2 (rekor-tiles) logs a DSSE envelope as a `hashedrekord` v0.0.2 entry over the envelope's
pre-authentication encoding (PAE): rekor-tiles v2.3.0 refuses the `dsse` request type ("invalid
type, must be hashedrekord", internal/server/service.go) and its CLIENTS.md says a DSSE client logs
sha256(PAE) and the envelope's signature. The entry is the log's leaf: its canonical JSON (RFC 8785)

    {"apiVersion": "0.0.2", "kind": "hashedrekord",
     "spec": {"hashedRekordV002": {
        "data": {"algorithm": "SHA2_256", "digest": <base64 sha256(PAE)>},
        "signature": {"content": <base64 the envelope's signature>,
                      "verifier": {"keyDetails": <e.g. PKIX_RSA_PKCS1V15_2048_SHA256>,
                                   "publicKey": {"rawBytes": <base64 the AK's SubjectPublicKeyInfo>}}}}}}

The log answers with a TransparencyLogEntry (sigstore protobuf-specs, JSON as protojson writes
it), which the bundle keeps in `verificationMaterial.tlogEntries`:

    {"logIndex": "3", "logId": {"keyId": <b64>}, "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
     "integratedTime": "0", "canonicalizedBody": <b64 the leaf>,
     "inclusionProof": {"logIndex": "3", "rootHash": <b64>, "treeSize": "4", "hashes": [<b64>, …],
                        "checkpoint": {"envelope": <a signed note, below>}}}

A checkpoint is a signed note (golang.org/x/mod/sumdb/note, C2SP tlog-checkpoint): the text
"<origin>\\n<tree size>\\n<base64 root hash>\\n[extension lines]" then a blank line and signature
lines "— <name> <base64(4-byte key hash || signature)>". rekor-tiles signs with Ed25519 (key hash:
sha256(name || "\\n" || 0x01 || key)[:4]) or ECDSA (key hash: sha256(SubjectPublicKeyInfo)[:4],
ASN.1 signature over sha256 of the text) (pkg/note/note.go). The Merkle tree is RFC 6962's
(leaf: sha256(0x00 || leaf), node: sha256(0x01 || left || right)); an inclusion proof is checked
as RFC 9162 section 2.1.3.2 says.

Everything here is pure: bytes in, a problem (a sentence) or None out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.jcs import canonical
from aicert.verify.errors import MalformedError

ENTRY_KIND: Final = "hashedrekord"
ENTRY_VERSION: Final = "0.0.2"
TLOG_FIELD: Final = "verificationMaterial.tlogEntries"
MAX_PROOF_HASHES: Final = 64  # a tree of 2**63 leaves needs 63
MAX_BODY_BYTES: Final = 64 * 1024  # a hashedrekord leaf with an RSA-4096 key is under 2 KiB
MAX_CHECKPOINT_BYTES: Final = 16 * 1024
MAX_INT64: Final = 2**63 - 1
# The entry as JSON text in a CertifiedTraining's status (status.transparencyLogEntry's maxLength in
# the CRD): a rekor-tiles entry with a 64-hash proof and an RSA-4096 key is under 12 KiB.
ENTRY_STATUS_MAX_BYTES: Final = 32 * 1024
NOTE_DASH: Final = "\u2014 "  # a signature line begins with an em dash and a space


# --- RFC 6962 / RFC 9162 Merkle tree ---------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes | None:
    """The root an inclusion proof of the leaf hash `leaf` at `index` leads to in a tree of `size`
    leaves (RFC 9162 2.1.3.2), or None when the proof cannot be one (wrong length, index not in
    the tree)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None  # more hashes than the path has
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# --- the entry as the bundle carries it ---------------------------------------------------------


class TlogEntry(msgspec.Struct, frozen=True):
    log_index: int
    log_id: bytes
    kind: str
    version: str
    body: bytes  # canonicalizedBody: the leaf
    proof_index: int
    tree_size: int
    root_hash: bytes
    proof: tuple[bytes, ...]
    checkpoint: str


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _object(value: Any, field: str, keys: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedError(field, f"is {_kind(value)}, not an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise MalformedError(f"{field}.{unknown[0]}", "is not a field of a Rekor v2 entry aicert reads")
    missing = sorted(required - set(value))
    if missing:
        raise MalformedError(f"{field}.{missing[0]}", "is missing")
    return value


def _int64(value: Any, field: str) -> int:
    """protojson writes int64 as a decimal string; accept that or a JSON integer."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise MalformedError(field, f"is {_kind(value)}, not a non-negative int64")
    if not 0 <= number <= MAX_INT64:
        raise MalformedError(field, "is not a non-negative int64")
    return number


def _b64(value: Any, field: str, *, size: int | None = None, limit: int = MAX_BODY_BYTES) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(field, f"is {_kind(value)}, not a base64 string")
    if len(value) > limit * 4 // 3 + 4:
        raise MalformedError(field, f"is longer than {limit} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError(field, "is not valid base64") from None
    if size is not None and len(data) != size:
        raise MalformedError(field, f"has {len(data)} bytes, not {size}")
    return data


def read_tlog_entry(raw: Any, field: str) -> TlogEntry:
    """A bundle's transparency log entry, read (not checked). Raises MalformedError naming the field."""
    top = _object(
        raw,
        field,
        {
            "logIndex",
            "logId",
            "kindVersion",
            "integratedTime",
            "inclusionPromise",
            "inclusionProof",
            "canonicalizedBody",
        },
        {"logIndex", "logId", "kindVersion", "inclusionProof", "canonicalizedBody"},
    )
    if top.get("inclusionPromise") is not None:
        raise MalformedError(
            f"{field}.inclusionPromise", "is a Rekor v1 promise; aicert reads Rekor v2 inclusion proofs"
        )
    log_id = _object(top["logId"], f"{field}.logId", {"keyId"}, {"keyId"})
    kind_version = _object(
        top["kindVersion"], f"{field}.kindVersion", {"kind", "version"}, {"kind", "version"}
    )
    for key in ("kind", "version"):
        if not isinstance(kind_version[key], str):
            raise MalformedError(f"{field}.kindVersion.{key}", f"is {_kind(kind_version[key])}, not a string")
    if "integratedTime" in top:
        _int64(top["integratedTime"], f"{field}.integratedTime")
    where = f"{field}.inclusionProof"
    proof = _object(
        top["inclusionProof"],
        where,
        {"logIndex", "rootHash", "treeSize", "hashes", "checkpoint"},
        {"logIndex", "rootHash", "treeSize", "hashes", "checkpoint"},
    )
    hashes_raw = proof["hashes"]
    if not isinstance(hashes_raw, list):
        raise MalformedError(f"{where}.hashes", f"is {_kind(hashes_raw)}, not an array")
    if len(hashes_raw) > MAX_PROOF_HASHES:
        raise MalformedError(
            f"{where}.hashes", f"has {len(hashes_raw)} hashes; a proof has at most {MAX_PROOF_HASHES}"
        )
    checkpoint = _object(proof["checkpoint"], f"{where}.checkpoint", {"envelope"}, {"envelope"})["envelope"]
    if not isinstance(checkpoint, str):
        raise MalformedError(f"{where}.checkpoint.envelope", f"is {_kind(checkpoint)}, not a string")
    try:
        size = len(checkpoint.encode())
    except UnicodeEncodeError:  # a lone surrogate, from a reader less strict than aicert verify's
        raise MalformedError(f"{where}.checkpoint.envelope", "is not UTF-8 text") from None
    if size > MAX_CHECKPOINT_BYTES:
        raise MalformedError(f"{where}.checkpoint.envelope", f"is longer than {MAX_CHECKPOINT_BYTES} bytes")
    return TlogEntry(
        log_index=_int64(top["logIndex"], f"{field}.logIndex"),
        log_id=_b64(log_id["keyId"], f"{field}.logId.keyId", limit=64),
        kind=kind_version["kind"],
        version=kind_version["version"],
        body=_b64(top["canonicalizedBody"], f"{field}.canonicalizedBody"),
        proof_index=_int64(proof["logIndex"], f"{where}.logIndex"),
        tree_size=_int64(proof["treeSize"], f"{where}.treeSize"),
        root_hash=_b64(proof["rootHash"], f"{where}.rootHash", size=32),
        proof=tuple(_b64(h, f"{where}.hashes[{i}]", size=32) for i, h in enumerate(hashes_raw)),
        checkpoint=checkpoint,
    )


# --- the entry a bundle's envelope makes ----------------------------------------------------------


def key_details(key: PublicKeyTypes) -> str:
    """The sigstore PublicKeyDetails of an AK's key, as the AK signs (SHA-256)."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in (2048, 3072, 4096):
        return f"PKIX_RSA_PKCS1V15_{key.key_size}_SHA256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "PKIX_ECDSA_P256_SHA_256"
    raise ValueError("a Rekor v2 entry of the AK needs an RSA 2048/3072/4096 or ECDSA P-256 key")


def spki_der(key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # only with an entry

    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hashedrekord_request(signed: bytes, signature: bytes, key: PublicKeyTypes) -> dict[str, Any]:
    """Rekor v2's CreateEntryRequest (JSON, api/proto/rekor/v2/entry.proto and hashedrekord.proto in
    rekor-tiles) logging the signature `signature` over `signed` (a DSSE PAE) by `key`."""
    return {
        "hashedRekordRequestV002": {
            "digest": _std_b64(hashlib.sha256(signed).digest()),
            "signature": {
                "content": _std_b64(signature),
                "verifier": {
                    "publicKey": {"rawBytes": _std_b64(spki_der(key))},
                    "keyDetails": key_details(key),
                },
            },
        }
    }


def expected_body(signed: bytes, signature: bytes, key: PublicKeyTypes) -> bytes:
    """The leaf the log makes of that request (rekor-tiles' hashedrekord.ToLogEntry, protojson,
    then JSON canonicalisation): what the entry of this envelope must be, byte for byte."""
    request = hashedrekord_request(signed, signature, key)["hashedRekordRequestV002"]
    return canonical(
        {
            "apiVersion": ENTRY_VERSION,
            "kind": ENTRY_KIND,
            "spec": {
                "hashedRekordV002": {
                    "data": {"algorithm": "SHA2_256", "digest": request["digest"]},
                    "signature": request["signature"],
                }
            },
        }
    )


# --- checkpoints (signed notes) -------------------------------------------------------------------


class Checkpoint(msgspec.Struct, frozen=True):
    origin: str
    tree_size: int
    root_hash: bytes


def log_id(origin: str, key: PublicKeyTypes) -> bytes:
    """The log's key ID in full (rekor-tiles' `logId.keyId`): the digest whose first 4 bytes a
    checkpoint's signature line names, for `key` signing as `origin` (pkg/note)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # only with an entry

    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return hashlib.sha256(spki_der(key)).digest()
    raise ValueError("a log key is Ed25519 or ECDSA")


def log_key_id(origin: str, key: PublicKeyTypes) -> bytes:
    """The 4-byte key hash a signature line names, for `key` signing as `origin` (pkg/note)."""
    return log_id(origin, key)[:4]


def _note_signature_valid(key: PublicKeyTypes, signature: bytes, text: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, text)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
            key.verify(signature, text, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, KeyError):
        return False
    return True


def checkpoint_problem(note: str, keys: list[PublicKeyTypes]) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint a signed note carries, if one of `keys` signed it; else why not."""
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not text:
        return None, "the checkpoint is not a signed note (no blank line before its signatures)"
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        return None, "the checkpoint has fewer than three lines (origin, tree size, root hash)"
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or not (size_text.isascii() and size_text.isdigit()) or len(size_text) > 19:
        return None, "the checkpoint's origin or tree size line is not one"
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        root = b""
    if len(root) != 32:
        return None, "the checkpoint's root hash line is not a base64 SHA-256 hash"
    checkpoint = Checkpoint(origin, int(size_text), root)
    ids = {}
    for key in keys:
        try:
            ids[log_key_id(origin, key)] = key
        except ValueError:
            continue
    for line in signatures.split("\n"):
        if not line.startswith(NOTE_DASH):
            continue
        name, _, encoded = line.removeprefix(NOTE_DASH).partition(" ")
        if name != origin:
            continue
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        signer = ids.get(blob[:4])
        if signer is not None and _note_signature_valid(signer, blob[4:], text.encode()):
            return checkpoint, None
    return None, f"the checkpoint of {origin!r} is not signed by a pinned log key"


# --- the check ------------------------------------------------------------------------------------


def inclusion_problem(
    entry: TlogEntry, signed: bytes, signature: bytes, ak_key: PublicKeyTypes, log_keys: list[PublicKeyTypes]
) -> str | None:
    """None when `entry` proves, against a checkpoint signed by one of `log_keys`, that the log holds
    the entry of the envelope whose PAE is `signed` and whose signature by `ak_key` is `signature`."""
    if (entry.kind, entry.version) != (ENTRY_KIND, ENTRY_VERSION):
        return (
            f"the entry is a {entry.kind} {entry.version}; aicert checks {ENTRY_KIND} {ENTRY_VERSION} entries"
        )
    checkpoint, problem = checkpoint_problem(entry.checkpoint, log_keys)
    if checkpoint is None:
        return problem
    if entry.tree_size != checkpoint.tree_size:
        return f"the inclusion proof is for a tree of {entry.tree_size} entries, the checkpoint's has {checkpoint.tree_size}"
    if entry.root_hash != checkpoint.root_hash:
        return "the inclusion proof's root hash is not the checkpoint's"
    if entry.proof_index != entry.log_index:
        return f"the inclusion proof is for entry {entry.proof_index}, not the logged entry {entry.log_index}"
    root = root_from_inclusion_proof(
        entry.log_index, entry.tree_size, leaf_hash(entry.body), list(entry.proof)
    )
    if root != checkpoint.root_hash:
        return (
            f"the inclusion proof of entry {entry.log_index} does not lead from the entry's leaf hash to "
            "the checkpoint's root hash"
        )
    try:
        wanted = expected_body(signed, signature, ak_key)
    except ValueError as exc:
        return str(exc)
    if entry.body != wanted:
        return "the logged entry is not this bundle's envelope (another digest, signature or key)"
    return None


__all__ = [
    "ENTRY_STATUS_MAX_BYTES",
    "TLOG_FIELD",
    "Checkpoint",
    "TlogEntry",
    "checkpoint_problem",
    "expected_body",
    "hashedrekord_request",
    "inclusion_problem",
    "key_details",
    "leaf_hash",
    "log_id",
    "log_key_id",
    "node_hash",
    "read_tlog_entry",
    "root_from_inclusion_proof",
]
