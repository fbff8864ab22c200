"""Lineage: which of a run's inputs is the output of an earlier certified run.

An earlier run's output volume holds its weights and, beside them, the files aicert writes there:
`manifest.json`, `aicert-certificate.json`, `aicert.sigstore.json`, `model.sig`. A later training
that reads that volume (or a copy of it) as an input records, in its input event and so in its
statement, the earlier certificate's digest (sha256 of its exact bytes) and the earlier run's
subject: the quote then binds the link like every other field.

`parent_in_volume` is the one definition of what counts as a parent. Pure: it is given the input's
manifest (as measured at the gate) and the certificate's bytes (read by the caller, at most
`PARENT_CERTIFICATE_MAX_BYTES`, and only when the manifest lists the file at that size or less).
An input is a parent only when

- it holds `aicert-certificate.json` at its top level, a regular file (not a link) of at most
  `PARENT_CERTIFICATE_MAX_BYTES`,
- the bytes read are the bytes measured (their sha256 is the manifest's entry for that file),
- they parse as a certificate (strict JSON, the certificate's schema), and
- the certificate's subject is the input's own files, less the files aicert writes beside weights:
  `manifest_root` of the manifest without its top-level `OUTPUT_EXCLUDED` entries, exactly as the
  earlier run's output root was computed.

The last condition is what stops a tenant from borrowing lineage: a genuine certificate of a famous
model copied next to one's own data names that model's files, not these, so the input is measured
as plain data and no parent is recorded. Whether the parent certificate itself verifies is for the
verifier to say (`aicert verify --lineage`), with its own trust roots, not for the agent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from aicert.certificate import FormatError, ParentRecord, TrainingCertificate, convert
from aicert.digest import CERTIFICATE_FILE, OUTPUT_EXCLUDED, Manifest, manifest_root
from aicert.digest.manifest import FileEntry
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import loads_strict

# A certificate in a CertifiedTraining's status is at most 1 MiB (the CRD's maxLength), and the file
# beside the weights is that text and a newline. Larger is not a certificate an agent wrote: it is
# never read, the input is plain data.
PARENT_CERTIFICATE_MAX_BYTES: Final = 1_048_576 + 1


@dataclass(frozen=True)
class ParentDecision:
    """Whether an input is an earlier certified run's output, and why (or why not), in words."""

    parent: ParentRecord | None
    reason: str


def certificate_entry(manifest: Manifest) -> FileEntry | None:
    """The manifest's entry for a top-level `aicert-certificate.json`, if there is one."""
    return next((f for f in manifest.files if f.path == CERTIFICATE_FILE), None)


def weights_root(manifest: Manifest) -> str:
    """The root of the manifest's files less the top-level files aicert writes beside weights: what
    an earlier run's certificate names as its subject, when these files are its output."""
    return manifest_root([f for f in manifest.files if f.path not in OUTPUT_EXCLUDED])


def wants_certificate(manifest: Manifest) -> bool:
    """Should the caller read the input's `aicert-certificate.json` (listed, a file, small enough)?"""
    entry = certificate_entry(manifest)
    return entry is not None and not entry.symlink and entry.size <= PARENT_CERTIFICATE_MAX_BYTES


def parent_in_volume(manifest: Manifest, certificate: bytes | None) -> ParentDecision:
    """The parent an input records, from its manifest and the bytes of its `aicert-certificate.json`
    (None: not read). Pure."""
    entry = certificate_entry(manifest)
    if entry is None:
        return ParentDecision(None, f"no {CERTIFICATE_FILE} at its top level")
    if entry.symlink:
        return ParentDecision(None, f"its {CERTIFICATE_FILE} is a symbolic link")
    if entry.size > PARENT_CERTIFICATE_MAX_BYTES:
        return ParentDecision(
            None,
            f"its {CERTIFICATE_FILE} has {entry.size} bytes, more than a certificate "
            f"({PARENT_CERTIFICATE_MAX_BYTES}); not read",
        )
    if certificate is None:
        return ParentDecision(None, f"its {CERTIFICATE_FILE} could not be read")
    digest = hashlib.sha256(certificate).hexdigest()
    if digest != entry.sha256:
        return ParentDecision(None, f"its {CERTIFICATE_FILE} changed after it was measured")
    try:
        raw = loads_strict(certificate, what=CERTIFICATE_FILE, max_bytes=PARENT_CERTIFICATE_MAX_BYTES)
        parsed = convert(raw, TrainingCertificate)
    except (MalformedError, FormatError) as exc:
        return ParentDecision(None, f"its {CERTIFICATE_FILE} is not a certificate: {exc}")
    named = parsed.statement.subject[0].digest.sha256
    held = weights_root(manifest)
    if named != held:
        return ParentDecision(
            None,
            f"its {CERTIFICATE_FILE} certifies model sha256:{named}, but the input's other files hash "
            f"to sha256:{held}: it is another model's certificate",
        )
    return ParentDecision(
        ParentRecord(certificate=digest, subject=held),
        f"the output of an earlier certified run (model sha256:{held}, certificate sha256:{digest})",
    )
