"""`aicert pull oci://REGISTRY/REPO@sha256:… DIR`: a certified model out of a registry, into a
directory laid out as the agent lays out an output: the weights and, beside them, the certificate's
exact bytes as `aicert-certificate.json` (and its Sigstore bundle and model.sig, when they check).

Such a directory, copied into a claim a training reads, is an input the agent recognises as an
earlier run's output (`aicert.lineage.parent_in_volume`): the training records the certificate's
digest, the one `aicert verify --lineage oci://REGISTRY/REPO` then fetches the certificate by.

Nothing is written unless the model verifies: the layers are pulled (each checked against its digest
while it streams) into a directory made beside DIR, the certificates attached to the model are
verified against those weights as `aicert verify oci://…` verifies them, and only when one verifies
are the files written beside the weights and the directory renamed to DIR, in one step. On any
failure the directory beside DIR is removed: DIR is never half written.

The extras are written only when they belong to the certificate that verified; otherwise they are
left out, and the result says why (the certificate is what a later training needs):
- `aicert.sigstore.json`: a referrer titled so that verifies on its own, with the same verifier,
  and carries the same statement;
- `model.sig`: a referrer titled so whose DSSE payload is the OMS statement of exactly the pulled
  weights (under the certified output's name) and whose signature verifies with the certificate's AK.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aicert.bundle import IN_TOTO_PAYLOAD_TYPE, is_bundle, pae
from aicert.digest.manifest import OUTPUT_EXCLUDED, FileEntry
from aicert.model_signature import oms_payload
from aicert.oci.client import RegistryClient
from aicert.oci.documents import ARTIFACT_CERTIFICATE, ARTIFACT_SIGSTORE_BUNDLE
from aicert.oci.errors import OciError
from aicert.oci.reference import OciReference
from aicert.oci.transfer import Referrer, attachments_of, model_manifest, pull_model
from aicert.oci.verified import Attempts, first_verified
from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE, MODEL_SIGNATURE_FILE
from aicert.verify import MalformedError, VerificationError, VerifiedTraining, Verifier
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, loads_strict


class NotVerified(Exception):
    """No certificate attached to the model verifies against its weights: nothing was written."""

    def __init__(self, attempts: Attempts, passed_over: Sequence[str]) -> None:
        super().__init__("no certificate verified")
        self.attempts = attempts
        self.passed_over = list(passed_over)


@dataclass(frozen=True)
class Pulled:
    directory: Path
    certificate: Referrer  # the certificate referrer that verified, its bytes now DIR/aicert-certificate.json
    result: VerifiedTraining
    files: tuple[FileEntry, ...]  # the weights
    written: tuple[str, ...]  # the files written beside the weights
    not_written: tuple[str, ...]  # attachments left out, with why
    not_used: tuple[str, ...]  # the other certificate referrers, with why


def check_destination(destination: Path) -> None:
    """DIR must not exist, or be an empty directory (not a link); its parent must be a directory."""
    if os.path.lexists(destination):
        if destination.is_symlink() or not destination.is_dir():
            raise MalformedError("DIR", f"{destination} exists and is not a directory")
        try:
            with os.scandir(destination) as entries:
                if next(entries, None) is not None:
                    raise MalformedError("DIR", f"{destination} is not empty")
        except OSError as exc:
            raise MalformedError("DIR", f"cannot read {destination}: {exc.strerror}") from None
    if not destination.absolute().parent.is_dir():
        raise MalformedError("DIR", f"{destination.absolute().parent} is not a directory")


def pull_certified(
    client: RegistryClient,
    reference: OciReference,
    destination: Path,
    verifier: Verifier,
    *,
    at: dt.datetime | None = None,
) -> Pulled:
    """Pull the model `reference` (a digest) into `destination` if a certificate attached to it
    verifies against its weights. Raises MalformedError (DIR), OciError (the registry; OciContentError
    for bytes that are not those named) or NotVerified, having written nothing."""
    if reference.digest is None:
        raise MalformedError("REFERENCE", f"{reference} names no digest: pull oci://REGISTRY/REPO@sha256:…")
    destination = Path(os.path.abspath(destination))  # `.` or `a/..` name a directory and its parent
    check_destination(destination)
    repository, digest = reference.repository, reference.digest
    manifest = model_manifest(client, repository, digest)
    certificates = attachments_of(
        client, repository, digest, ARTIFACT_CERTIFICATE, max_bytes=CERTIFICATE_MAX_BYTES
    )
    if not certificates.referrers:
        passed = "; ".join(certificates.passed_over)
        raise OciError(
            f"no certificate ({ARTIFACT_CERTIFICATE}) is attached to {reference}"
            + (f" (passed over: {passed})" if passed else "")
        )
    extras = attachments_of(
        client, repository, digest, ARTIFACT_SIGSTORE_BUNDLE, max_bytes=CERTIFICATE_MAX_BYTES
    )
    parent = destination.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.aicert-pull-", dir=parent))
    try:
        files = tuple(pull_model(client, manifest, repository, staging))
        attempts = first_verified(
            verifier, certificates.referrers, staging, shown_as=f"{reference}'s weights (pulled)", at=at
        )
        if attempts.verified is None:
            raise NotVerified(attempts, certificates.passed_over)
        certificate, result = attempts.verified
        checks: dict[str, Callable[[bytes], str | None]] = {
            BUNDLE_FILE: lambda data: bundle_problem(data, verifier, result, at),
            MODEL_SIGNATURE_FILE: lambda data: model_signature_problem(data, certificate.data, result, files),
        }
        written, not_written = [CERTIFICATE_FILE], []
        _create(staging / CERTIFICATE_FILE, certificate.data)
        for name, problem_of in checks.items():
            reasons = []
            for candidate in (r for r in extras.referrers if r.title == name):
                problem = problem_of(candidate.data)
                if problem is None:
                    _create(staging / name, candidate.data)
                    written.append(name)
                    break
                reasons.append(f"{candidate.digest}: {problem}")
            else:
                if reasons:
                    not_written.append(f"{name}: " + "; ".join(reasons))
        os.chmod(staging, 0o755 & ~_umask())
        os.rename(staging, destination)  # replaces an empty DIR; fails if DIR filled up meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    not_used = attempts.not_used() + [f"passed over: {p}" for p in certificates.passed_over]
    return Pulled(
        destination, certificate, result, files, tuple(written), tuple(not_written), tuple(not_used)
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _create(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as sink:
        sink.write(data)


def bundle_problem(
    data: bytes, verifier: Verifier, certified: VerifiedTraining, at: dt.datetime | None
) -> str | None:
    """None when `data` is a Sigstore bundle that verifies and carries the statement `certified` has."""
    try:
        if not is_bundle(loads_strict(data, what=BUNDLE_FILE, max_bytes=CERTIFICATE_MAX_BYTES)):
            return "is not a Sigstore bundle"
        result = verifier.verify(data, at=at)
    except VerificationError as exc:
        return f"does not verify: check {exc.check} failed: {exc.reason}"
    except MalformedError as exc:
        return f"is unusable: {exc}"
    if result.statement != certified.statement:
        return "carries another statement than the certificate"
    return None


def model_signature_problem(
    data: bytes, certificate: bytes, certified: VerifiedTraining, files: Sequence[FileEntry]
) -> str | None:
    """None when `data` is an OMS signature, by the certificate's AK, of exactly `files`."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from aicert.verify.envelope import dsse_signature_problem

    assert certified.statement is not None
    try:
        doc = loads_strict(data, what=MODEL_SIGNATURE_FILE, max_bytes=CERTIFICATE_MAX_BYTES)
        envelope = doc["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        [signature_entry] = envelope["signatures"]
        signature = base64.b64decode(signature_entry["sig"], validate=True)
    except MalformedError as exc:
        return f"is unusable: {exc}"
    except (KeyError, TypeError, ValueError, binascii.Error):
        return "is not a DSSE envelope with one signature"
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        return f"payloadType {payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE}"
    try:
        expected = oms_payload(files, certified.statement.predicate.outputs.name, OUTPUT_EXCLUDED)
    except ValueError as exc:
        return str(exc)
    if payload != expected:
        return "signs other files than the pulled weights"
    try:
        raw = loads_strict(certificate, what=CERTIFICATE_FILE, max_bytes=CERTIFICATE_MAX_BYTES)
        key = load_pem_public_key(raw["evidence"]["ak"]["public"].encode())
    except (MalformedError, KeyError, TypeError, ValueError, UnsupportedAlgorithm):
        return "the certificate names no AK key to check it with"
    return dsse_signature_problem(key, signature, pae(payload_type, payload))
