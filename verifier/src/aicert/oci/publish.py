"""What goes up with a certified model, each piece checked against the certificate before anything
is uploaded. Shared by `kubectl aicert push` (the certificate from the CertifiedTraining's status,
the weights from a local directory) and the push pod of `spec.output.oci` (the weights, the
certificate, its bundle and model.sig from the attempt's output claim, each held to what the
operator's arguments name).

`NotCertified` means the files are not the certified ones (a weight changed since the seal, a
certificate or model.sig swapped): nothing is pushed. A malformed certificate is `MalformedError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.digest.manifest import OUTPUT_EXCLUDED, FileEntry, Manifest
from aicert.oci.documents import ARTIFACT_CERTIFICATE, ARTIFACT_SIGSTORE_BUNDLE, Attachment
from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE, MODEL_SIGNATURE_FILE
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, loads_strict, read_bounded_file


class NotCertified(Exception):
    """The files to push are not the ones the certificate names; `reason` says which differs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def certified_root(certificate_text: str, *, field: str) -> str:
    """The output root the certificate names as its subject. MalformedError naming `field`.<path>."""
    from aicert.verify.document import load_document

    try:
        document = load_document(certificate_text)
    except MalformedError as exc:
        raise MalformedError(f"{field}.{exc.field}".rstrip("."), exc.reason) from None
    if document.certificate is None:
        raise MalformedError(field, "is an old AICert proof, which names no model root")
    subjects = document.certificate.statement.subject
    if len(subjects) != 1:
        raise MalformedError(f"{field}.statement.subject", f"has {len(subjects)} entries, not one")
    return subjects[0].digest.sha256


def certificate_attachment(certificate_text: str) -> Attachment:
    """The certificate as the file the agent writes beside the weights (and `kubectl aicert get`
    writes): the status's text and a newline. A later run that read that file records its sha256 as
    its parent's, and `aicert verify --lineage oci://…` fetches the parent by that digest."""
    return Attachment(ARTIFACT_CERTIFICATE, CERTIFICATE_FILE, certificate_text.encode() + b"\n")


def bundle_attachment(
    certificate_text: str, envelope_signature: str, transparency_log_entry: str | None = None
) -> Attachment:
    """The certificate's Sigstore bundle, rebuilt from the certificate, the envelope's signature
    (status.envelopeSignature) and the log entry when there is one (status.transparencyLogEntry):
    the bytes the agent wrote beside the weights."""
    from aicert.bundle import bundle_bytes, rebuild_bundle

    return Attachment(
        ARTIFACT_SIGSTORE_BUNDLE,
        BUNDLE_FILE,
        bundle_bytes(rebuild_bundle(certificate_text, envelope_signature, transparency_log_entry)),
    )


def read_beside_weights(directory: Path, filename: str, *, field: str) -> bytes | None:
    """directory/`filename` (a regular file of at most 16 MiB), or None when it is not there."""
    path = directory / filename
    if not path.exists() and not path.is_symlink():
        return None
    return read_bounded_file(path, limit=CERTIFICATE_MAX_BYTES, field=field)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def certificate_beside_weights(directory: Path, expected_sha256: str) -> str:
    """The certificate the agent wrote beside the weights (aicert-certificate.json: the status's text
    and a newline), refused unless its text hashes to `expected_sha256` (the sha256 of the status's
    certificate, which the operator names)."""
    data = read_beside_weights(directory, CERTIFICATE_FILE, field=CERTIFICATE_FILE)
    if data is None:
        raise NotCertified(f"{CERTIFICATE_FILE} is not beside the weights")
    text = data.removesuffix(b"\n")
    if sha256_hex(text) != expected_sha256:
        raise NotCertified(
            f"{CERTIFICATE_FILE} beside the weights is not the certificate in the status "
            f"(sha256 {sha256_hex(text)}, not {expected_sha256})"
        )
    try:
        return text.decode()
    except UnicodeDecodeError:
        raise MalformedError(CERTIFICATE_FILE, "is not UTF-8") from None


def check_weights(manifest: Manifest, root: str, where: str) -> None:
    """NotCertified unless the hashed weights are the certified root."""
    if manifest.root != root:
        raise NotCertified(
            f"the weights in {where} hash to {manifest.root} ({manifest.file_count} files), but the "
            f"certificate names {root}: these are not the certified weights, nothing was pushed"
        )


@dataclass(frozen=True)
class _Envelope:
    payload: bytes
    payload_type: str
    signature: bytes


def _envelope(data: bytes) -> _Envelope:
    try:
        doc = loads_strict(data, what=MODEL_SIGNATURE_FILE, max_bytes=CERTIFICATE_MAX_BYTES)
        envelope = doc["dsseEnvelope"]
        (signature,) = envelope["signatures"]
        return _Envelope(
            base64.b64decode(envelope["payload"], validate=True),
            str(envelope["payloadType"]),
            base64.b64decode(signature["sig"], validate=True),
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise MalformedError(MODEL_SIGNATURE_FILE, "is not a Sigstore bundle of one DSSE signature") from None


def model_signature_attachment(
    directory: Path, certificate_text: str, files: list[FileEntry]
) -> Attachment | None:
    """model.sig from beside the weights, when it is there, refused (NotCertified) unless it is the
    AK's OMS signature over exactly these files under the certified output's name: a model.sig from
    another run, or edited, is not pushed beside these weights."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from aicert.bundle import IN_TOTO_PAYLOAD_TYPE, pae
    from aicert.model_signature import oms_payload
    from aicert.verify.envelope import dsse_signature_problem

    data = read_beside_weights(directory, MODEL_SIGNATURE_FILE, field=MODEL_SIGNATURE_FILE)
    if data is None:
        return None
    envelope = _envelope(data)
    certificate: Any = json.loads(certificate_text)
    try:
        name = str(certificate["statement"]["predicate"]["outputs"]["name"])
        key = load_pem_public_key(certificate["evidence"]["ak"]["public"].encode())
    except (KeyError, TypeError, ValueError):
        raise MalformedError("certificate", "names no output name or AK public key") from None
    try:
        expected = oms_payload(files, name, OUTPUT_EXCLUDED)
    except ValueError as exc:
        raise NotCertified(f"{MODEL_SIGNATURE_FILE}: {exc}") from None
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE or envelope.payload != expected:
        raise NotCertified(f"{MODEL_SIGNATURE_FILE} does not sign these weights under output {name!r}")
    problem = dsse_signature_problem(key, envelope.signature, pae(envelope.payload_type, envelope.payload))
    if problem:
        raise NotCertified(f"{MODEL_SIGNATURE_FILE}: {problem}")
    return Attachment(ARTIFACT_SIGSTORE_BUNDLE, MODEL_SIGNATURE_FILE, data)
