"""Does a verified certificate belong to the CertifiedTraining it was read from?

The verifier proves that a TPM certified *some* run. Whoever can write a resource's status could
paste in a genuine certificate of another run; these checks tie the certificate to the resource:

- `resource-identity`: the certified run is this resource (namespace, name and uid);
- `resource-model-digest`: the resource's `status.modelDigest` is the certified output root;
- `resource-phase`: the resource says it succeeded.

Pure functions over the resource as JSON (`kubectl get ... -o json`) and a `VerifiedTraining`:
nothing here talks to a cluster, and nothing here re-checks cryptography.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec

from aicert.verify.errors import MalformedError
from aicert.verify.result import VerifiedTraining

SUCCEEDED = "Succeeded"


class BindingCheck(StrEnum):
    """The resource checks, in the order they run (after every `Check` of the verifier)."""

    RESOURCE_IDENTITY = "resource-identity"
    RESOURCE_MODEL_DIGEST = "resource-model-digest"
    RESOURCE_PHASE = "resource-phase"


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


def check_binding(
    resource: TrainingResource | Mapping[str, Any], result: VerifiedTraining
) -> list[BindingFailure]:
    """Every binding check that fails, in order; empty when the certificate belongs to the resource.

    `result` must come from `Verifier.verify` on the resource's own `status.certificate`.
    Raises MalformedError (exit 2) when `resource` is not a usable CertifiedTraining.
    """
    res = resource if isinstance(resource, TrainingResource) else TrainingResource.from_json(resource)
    statement = result.statement
    failures: list[BindingFailure] = []
    if statement is None:
        failures.append(
            BindingFailure(
                BindingCheck.RESOURCE_IDENTITY,
                f"the certificate is an old AICert proof: it names no run, so it cannot be shown to be "
                f"{_who(res.namespace, res.name, res.uid)}'s",
            )
        )
        failures.append(
            BindingFailure(
                BindingCheck.RESOURCE_MODEL_DIGEST,
                "the certificate is an old AICert proof: it certifies no output root to compare with "
                f"status.modelDigest {res.model_digest or '(not set)'}",
            )
        )
    else:
        run = statement.predicate.run
        if (run.namespace, run.name, run.uid) != (res.namespace, res.name, res.uid):
            failures.append(
                BindingFailure(
                    BindingCheck.RESOURCE_IDENTITY,
                    f"the certificate is for {_who(run.namespace, run.name, run.uid)}, "
                    f"not {_who(res.namespace, res.name, res.uid)}",
                )
            )
        certified = f"sha256:{statement.predicate.outputs.root}"
        if res.model_digest != certified:
            failures.append(
                BindingFailure(
                    BindingCheck.RESOURCE_MODEL_DIGEST,
                    f"status.modelDigest is {res.model_digest or '(not set)'}, "
                    f"but the certificate's output is {certified}",
                )
            )
    if res.phase != SUCCEEDED:
        failures.append(
            BindingFailure(
                BindingCheck.RESOURCE_PHASE,
                f"status.phase is {res.phase or '(not set)'}, not {SUCCEEDED}",
            )
        )
    return failures
