"""The CertifiedTraining status contract: condition types, documented reasons, and the bodies the
operator and the agent send (server-side apply of status fields, events.k8s.io Events).

Reasons are an enum of documented words (docs/crd-reference.md lists them all); none is ever derived
from an exception class name.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict

from aicert.certificate import Assurance
from aicert_contract.training import GROUP, KIND, VERSION, Phase


class ConditionType(enum.StrEnum):
    SCHEDULED = "Scheduled"
    INPUTS_MEASURED = "InputsMeasured"
    TRAINED = "Trained"
    CERTIFIED = "Certified"
    FINISHED = "Finished"  # True once Succeeded or Failed, with the outcome's reason: `kubectl wait`
    PUBLISHED = "Published"  # spec.output.oci: True once the push pod pushed the certified model


class Reason(enum.StrEnum):
    # phases and the operator's conditions
    CREATING = "Creating"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    PENDING = "Pending"
    UNSCHEDULABLE = "Unschedulable"
    NO_CHAINABLE_NODE = "NoChainableNode"  # no node is labelled, and agents say their AK does not chain
    INPUT_CLAIM_MISSING = "InputClaimMissing"  # an input's claim does not exist or is not bound
    WAITING = "Waiting"
    MEASURING = "Measuring"
    MEASURING_INPUTS = "MeasuringInputs"
    MEASURED = "Measured"
    TRAINING = "Training"
    COMPLETED = "Completed"
    SEALING = "Sealing"
    CERTIFIED = "Certified"
    CREATED = "Created"
    # attempts that ended (retried within backoffLimit, then Failed)
    TRAINING_FAILED = "TrainingFailed"
    POD_DELETED = "PodDeleted"
    POD_DELETING = "PodDeleting"
    EVICTED = "Evicted"
    GATE_FAILED = "GateFailed"
    POD_FAILED = "PodFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    # the pod could not be created or started
    POD_REJECTED = "PodRejected"  # the API server refused the pod (PodSecurity, quota, validation)
    POD_NAME_TAKEN = "PodNameTaken"  # a pod that is not this training's holds the attempt's name
    CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"  # e.g. runAsNonRoot and a root image
    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    INVALID_IMAGE_NAME = "InvalidImageName"
    # the agent refused to certify (Certified=False; the run is Failed, never retried)
    POD_MISMATCH = "PodMismatch"  # the live pod is not the contract's pod
    # its gate and seal run an agent image neither the current nor the previous release has
    POD_FROM_UNKNOWN_RELEASE = "PodFromUnknownRelease"
    POD_MUTATED = "PodMutated"  # admission (a sidecar injector) changed the pod as it was created
    NOT_OWNED = "NotOwned"
    IMAGE_MISMATCH = "ImageMismatch"
    IMAGE_UNKNOWN = "ImageUnknown"
    IMAGE_NOT_PINNED = "ImageNotPinned"  # the node holds the image by tag only: its imageID names no manifest
    RUNTIME_IMAGE_MISMATCH = "RuntimeImageMismatch"  # the runtime (CRI) contradicts the pod's status
    ASSURANCE_TOO_LOW = "AssuranceTooLow"
    TRAINING_FINISHED = "TrainingFinished"
    OUTPUT_NOT_EXCLUSIVE = "OutputNotExclusive"
    OUTPUT_NOT_EMPTY = "OutputNotEmpty"
    INPUT_NOT_EXCLUSIVE = "InputNotExclusive"
    NETWORK_NOT_ISOLATED = "NetworkNotIsolated"
    POD_RELABELLED = "PodRelabelled"  # its labels or annotations changed after the gate
    INPUTS_CHANGED = "InputsChanged"
    RESERVED_FILE = "ReservedFile"
    MEASUREMENT_LOG_LOST = "MeasurementLogLost"
    MEASUREMENT_FAILED = "MeasurementFailed"  # a volume could not be hashed
    OUTPUT_TOO_LARGE = "OutputTooLarge"  # over its budget of apparent bytes or entries: not hashed
    INPUT_TOO_LARGE = "InputTooLarge"
    VOLUME_NOT_FOUND = "VolumeNotFound"
    SEAL_FAILED = "SealFailed"
    LOG_FAILED = "LogFailed"
    CERTIFICATE_TOO_LARGE = "CertificateTooLarge"
    CERTIFICATION_REFUSED = "CertificationRefused"  # the agent refused; its condition was lost
    FOREIGN_POD = "ForeignPod"  # Event only: a pod posing as this training's was not measured
    # spec.output.oci, on the Published condition only (the phase stays Succeeded)
    PUBLISHED = "Published"  # the push pod pushed the certified model (status.published)
    PUSH_PENDING = "PushPending"  # a push pod is being created, runs, or waits to retry
    PUSH_FAILED = "PushFailed"  # every try failed, or the push pod could not be made: no retry


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(TypedDict):
    """One of status.conditions, as `set_condition` makes it."""

    type: Annotated[str, ConditionType]  # a ConditionType's value
    status: ConditionStatus
    observedGeneration: NotRequired[int]
    lastTransitionTime: str  # RFC 3339, `timestamp`
    reason: str  # a Reason's value, except on conditions an older release wrote
    message: str  # `status_message`


class PodContract(TypedDict):
    """status.podContract: the contract the pod of one attempt was built with."""

    attempt: int
    agentImage: str  # the image of the pod's aicert-gate and aicert-seal containers
    contractVersion: int


class PublishedModel(TypedDict):
    """status.published: the model manifest the push pod of spec.output.oci pushed."""

    reference: str  # oci://REGISTRY/REPOSITORY@sha256:<hex>
    digest: str  # sha256:<hex>, the model manifest's digest


class TrainingStatus(TypedDict, total=False):
    """The status of a CertifiedTraining. The CRD describes each field and who writes it;
    tests/unit/test_crd_models.py holds this model to the CRD's schema."""

    phase: Phase
    reason: str
    message: str
    observedGeneration: int
    conditions: list[Condition]
    node: str
    podName: str
    podUID: str
    podContract: PodContract
    attempt: int
    assurance: Assurance
    startTime: str
    completionTime: str
    modelDigest: str
    modelShortDigest: str
    certificate: str
    envelopeSignature: str  # base64: the AK's DSSE signature of the certificate's Sigstore bundle
    transparencyLogEntry: str  # JSON text: the bundle's Rekor v2 entry (aicert.tlog)
    published: PublishedModel


# Reasons the agent may put in Certified=False: each ends the run as Failed, never retried.
REFUSALS: Final = frozenset(
    {
        Reason.POD_MISMATCH,
        Reason.POD_FROM_UNKNOWN_RELEASE,
        Reason.POD_MUTATED,
        Reason.NOT_OWNED,
        Reason.IMAGE_MISMATCH,
        Reason.IMAGE_UNKNOWN,
        Reason.IMAGE_NOT_PINNED,
        Reason.RUNTIME_IMAGE_MISMATCH,
        Reason.ASSURANCE_TOO_LOW,
        Reason.TRAINING_FINISHED,
        Reason.OUTPUT_NOT_EXCLUSIVE,
        Reason.OUTPUT_NOT_EMPTY,
        Reason.INPUT_NOT_EXCLUSIVE,
        Reason.NETWORK_NOT_ISOLATED,
        Reason.POD_RELABELLED,
        Reason.INPUTS_CHANGED,
        Reason.RESERVED_FILE,
        Reason.MEASUREMENT_LOG_LOST,
        Reason.MEASUREMENT_FAILED,
        Reason.OUTPUT_TOO_LARGE,
        Reason.INPUT_TOO_LARGE,
        Reason.VOLUME_NOT_FOUND,
        Reason.SEAL_FAILED,
        Reason.LOG_FAILED,
        Reason.CERTIFICATE_TOO_LARGE,
    }
)

REPORTER_OPERATOR: Final = "aicert.dev/operator"
REPORTER_AGENT: Final = "aicert.dev/agent"


# Kubernetes caps a condition's message at 32768 characters and events.k8s.io's note at 1024 bytes;
# this CRD's status.message holds 4096 characters, and the operator copies a refusal's message there.
CONDITION_MESSAGE_MAX: Final = 32768
MESSAGE_MAX_BYTES: Final = 4096
NOTE_MAX_BYTES: Final = 1024
_CUT: Final = "…"


_UNSENDABLE: Final = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def status_message(text: str, *, max_bytes: int = MESSAGE_MAX_BYTES) -> str:
    """`text` as a status or Event may carry it: text the API server decodes, at most `max_bytes`
    bytes of UTF-8 (so at most as many characters), cut with "…" when longer. Every message the
    operator and the agent write passes here.

    - A file name that is not UTF-8 reaches a message as lone surrogates (os.fsdecode), which no
      UTF-8 encoder writes: shown as the name's bytes, `\\xff`.
    - A character beyond the BMP (an emoji in a file name) is sent as a JSON surrogate pair, which
      the YAML decoder of server-side apply refuses: shown as `\\U0001f600`.
    Either would make the API server refuse the whole status write."""
    valid = _UNSENDABLE.sub(_escaped, text)
    encoded = valid.encode("utf-8")
    if len(encoded) <= max_bytes:
        return valid
    room = max_bytes - len(_CUT.encode("utf-8"))
    return encoded[:room].decode("utf-8", "ignore") + _CUT


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes metav1.Time."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Sequence[dict[str, Any]] | None, kind: ConditionType) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def set_condition(
    conditions: Sequence[dict[str, Any]] | None,
    kind: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: str,
    *,
    generation: int,
    now: dt.datetime,
) -> Condition:
    """The condition to write: `lastTransitionTime` moves only when `status` changes."""
    previous = find_condition(conditions, kind)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    return {
        "type": str(kind),
        "status": status,
        "reason": str(reason),
        "message": status_message(message),
        "observedGeneration": generation,
        "lastTransitionTime": since or timestamp(now),
    }


def status_apply_body(name: str, status: dict[str, Any], *, resource_version: str) -> dict[str, Any]:
    """A server-side apply body for the status subresource: only the fields the caller owns, and a
    precondition: the API server refuses the write (409 Conflict) unless the training is still at
    `resource_version`. The caller read that version and checked the training's uid in it, so a
    training deleted and created again under the same name never receives the old run's status.
    (A `metadata.uid` in the body would not do: the status subresource ignores metadata.)"""
    if not resource_version:
        raise ValueError("a status write names the resourceVersion it was decided on")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "resourceVersion": resource_version},
        "status": status,
    }


def object_event(
    *,
    regarding: dict[str, str],
    namespace: str,
    type_: str,
    reason: str,
    message: str,
    controller: str,
    instance: str,
    action: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about the object `regarding` (apiVersion, kind, name, uid and,
    for a namespaced one, namespace), in `namespace`; its note as a status message is written."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{regarding['name']}-", "namespace": namespace},
        "eventTime": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": controller,
        "reportingInstance": instance,
        "action": action,
        "type": type_,
        "reason": reason,
        "note": status_message(message, max_bytes=NOTE_MAX_BYTES),
        "regarding": dict(regarding),
    }


def event_body(
    *,
    namespace: str,
    name: str,
    uid: str,
    type_: str,
    reason: Reason,
    message: str,
    controller: str,
    instance: str,
    action: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about a CertifiedTraining (what `kubectl describe ct` lists)."""
    return object_event(
        regarding={
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        namespace=namespace,
        type_=type_,
        reason=str(reason),
        message=message,
        controller=controller,
        instance=instance,
        action=action,
        now=now,
    )
