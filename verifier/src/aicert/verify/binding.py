"""Does a verified certificate belong to the CertifiedTraining it was read from?

The verifier proves that a TPM certified *some* run. Whoever can write a resource's status could
paste in a genuine certificate of another run; these checks tie the certificate to the resource:

- `resource-identity`: the certified run is this resource (namespace, name and uid);
- `resource-model-digest`: the resource's `status.modelDigest` is the certified output root;
- `resource-phase`: the resource says it succeeded.

Pure functions over the resource as JSON (`kubectl get ... -o json`) and a `VerifiedTraining`:
nothing here talks to a cluster, and nothing here re-checks cryptography. All three always run;
each records itself, passed or failed, in a `CheckLog` of `BindingCheck` (aicert.verify.checklog).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from aicert.verify.checklog import CheckLog
from aicert.verify.errors import BindingCheck, MalformedError
from aicert.verify.result import VerifiedTraining

__all__ = ["BindingCheck", "BindingFailure", "TrainingResource", "check_binding"]

SUCCEEDED = "Succeeded"


class BindingFailure(msgspec.Struct, frozen=True):
    check: BindingCheck
    reason: str

    def __str__(self) -> str:
        return f"{self.check}: {self.reason}"


class TrainingResource(msgspec.Struct, frozen=True):
    """The fields of a CertifiedTraining that the checks read, shape-checked."""

    namespace: str
    name: str
    uid: str
    phase: str | None
    model_digest: str | None
    certificate: str | None
    envelope_signature: str | None = None  # the AK's signature of the certificate's Sigstore bundle
    transparency_log_entry: str | None = None  # the bundle's Rekor v2 entry, JSON text

    @classmethod
    def from_json(cls, obj: object) -> TrainingResource:
        """Raises MalformedError naming the field when the object is not a usable resource."""
        if not isinstance(obj, Mapping):
            raise MalformedError("", "the resource is not a JSON object")
        metadata = _object(obj, "metadata", required=True)
        status = _object(obj, "status", required=False)
        return cls(
            namespace=_required(metadata, "metadata.namespace"),
            name=_required(metadata, "metadata.name"),
            uid=_required(metadata, "metadata.uid"),
            phase=_string(status, "status.phase"),
            model_digest=_string(status, "status.modelDigest"),
            certificate=_string(status, "status.certificate") or None,
            envelope_signature=_string(status, "status.envelopeSignature") or None,
            transparency_log_entry=_string(status, "status.transparencyLogEntry") or None,
        )


def _object(parent: Mapping[str, Any], field: str, *, required: bool) -> Mapping[str, Any]:
    value = parent.get(field)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        what = "missing" if value is None else f"not an object but {type(value).__name__}"
        raise MalformedError(field, f"is {what}")
    return value


def _string(parent: Mapping[str, Any], field: str) -> str | None:
    value = parent.get(field.rpartition(".")[2])
    if value is not None and not isinstance(value, str):
        raise MalformedError(field, f"is not a string but {type(value).__name__}")
    return value


def _required(parent: Mapping[str, Any], field: str) -> str:
    value = _string(parent, field)
    if not value:
        raise MalformedError(field, "is missing")
    return value


def _who(namespace: str | None, name: str, uid: str | None) -> str:
    return f"{namespace or '(no namespace)'}/{name} (uid {uid or 'none'})"


def _identity_problems(res: TrainingResource, result: VerifiedTraining) -> tuple[str | None, str | None]:
    """Why the certified run is not this resource, and why its output is not status.modelDigest
    (None: it is)."""
    statement = result.statement
    if statement is None:
        return (
            f"the certificate is an old AICert proof: it names no run, so it cannot be shown to be "
            f"{_who(res.namespace, res.name, res.uid)}'s",
            "the certificate is an old AICert proof: it certifies no output root to compare with "
            f"status.modelDigest {res.model_digest or '(not set)'}",
        )
    identity = digest = None
    run = statement.predicate.run
    if (run.namespace, run.name, run.uid) != (res.namespace, res.name, res.uid):
        identity = (
            f"the certificate is for {_who(run.namespace, run.name, run.uid)}, "
            f"not {_who(res.namespace, res.name, res.uid)}"
        )
    certified = f"sha256:{statement.predicate.outputs.root}"
    if res.model_digest != certified:
        digest = (
            f"status.modelDigest is {res.model_digest or '(not set)'}, "
            f"but the certificate's output is {certified}"
        )
    return identity, digest


def check_binding(
    resource: TrainingResource | Mapping[str, Any],
    result: VerifiedTraining,
    log: CheckLog[BindingCheck] | None = None,
) -> list[BindingFailure]:
    """Every binding check that fails, in order; empty when the certificate belongs to the resource.

    `result` must come from `Verifier.verify` on the resource's own `status.certificate`. Each check
    records itself in `log` (passed or failed) as it runs; `log.finish()` then lists those that
    passed. Raises MalformedError (exit 2) when `resource` is not a usable CertifiedTraining.
    """
    res = resource if isinstance(resource, TrainingResource) else TrainingResource.from_json(resource)
    log = log if log is not None else CheckLog(BindingCheck)
    identity, digest = _identity_problems(res, result)
    phase = None if res.phase == SUCCEEDED else f"status.phase is {res.phase or '(not set)'}, not {SUCCEEDED}"
    failures: list[BindingFailure] = []
    for check, problem in (
        (BindingCheck.RESOURCE_IDENTITY, identity),
        (BindingCheck.RESOURCE_MODEL_DIGEST, digest),
        (BindingCheck.RESOURCE_PHASE, phase),
    ):
        if problem is None:
            log.passed(check)
        else:
            log.failed(check, problem)
            failures.append(BindingFailure(check, problem))
    return failures
