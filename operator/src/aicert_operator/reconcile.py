"""reconcile(training, pods, now) -> Decision: every operator decision, pure and testable.

The operator owns status.phase/reason/message, the Scheduled, InputsMeasured, Trained and Finished
conditions, attempt, node, podName, podUID and the times. The agent owns the Certified condition,
the certificate, modelDigest and assurance (server-side apply keeps the two apart), except on a run
the operator fails before the agent said anything: then the operator writes Certified False with
the failure's reason, so that no finished run is left without it (`finish_conditions`; a run that
finished under an older operator gets both once, `finished_afterwards`). State comes from
what is observed each time: a restarted operator decides exactly what the previous one would have.

`pods` are the training's own pods only (`observe.owned_pods`): a pod that merely carries its labels
never sets the phase, the attempt or the node. `podUID` names the one pod the agent may certify.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aicert_contract.pod import pod_contract_record, refusal
from aicert_contract.status import (
    REFUSALS,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    set_condition,
    status_message,
    timestamp,
)
from aicert_contract.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    SEAL_REFUSED_EXIT,
    TERMINAL_PHASES,
    TrainingSpec,
    pod_name,
)
from aicert_operator.nodes import NodeFacts, no_chainable_node
from aicert_operator.observe import PodView, parse_time
from aicert_operator.publish import Publication, PushView, publication


@dataclass(frozen=True)
class Training:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: TrainingSpec
    status: dict[str, Any]

    def condition(self, kind: ConditionType) -> dict[str, Any] | None:
        return find_condition(self.status.get("conditions"), kind)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: Reason
    message: str


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]  # the operator's fields, applied with server-side apply
    create_attempt: int | None = None
    delete_pods: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    create_push: int | None = None  # spec.output.oci: the try whose push pod to create


# After the write that ends a run Succeeded, when the next reconcile (spec.output.oci) starts the push.
PUBLISH_LOOK_SECONDS = 1.0

# The conditions an outcome sets: each type's status, reason and message.
Wanted = dict[ConditionType, tuple[ConditionStatus, Reason, str]]


@dataclass
class _Outcome:
    phase: str
    reason: Reason
    message: str
    conditions: Wanted = field(default_factory=dict)
    create_attempt: int | None = None
    delete: tuple[str, ...] = ()
    events: list[Event] = field(default_factory=list)
    complete: bool = False


def _conditions(training: Training, wanted: Wanted, now: dt.datetime) -> list[Condition]:
    current = training.status.get("conditions")
    return [
        set_condition(current, kind, status, reason, message, generation=training.generation, now=now)
        for kind, (status, reason, message) in wanted.items()
    ]


def _retry_or_fail(training: Training, pod: PodView, reason: Reason, message: str) -> _Outcome:
    retries_used = pod.attempt - 1
    if retries_used < training.spec.backoffLimit:
        nxt = pod.attempt + 1
        return _Outcome(
            "Pending",
            reason,
            f"{message}; starting attempt {nxt} of {training.spec.backoffLimit + 1}",
            create_attempt=nxt,
            events=[Event("Warning", reason, f"attempt {pod.attempt}: {message}; retrying as attempt {nxt}")],
        )
    limit = training.spec.backoffLimit
    suffix = f" (backoffLimit {limit} reached)" if limit else ""
    return _Outcome(
        "Failed", reason, message + suffix, events=[Event("Warning", reason, message + suffix)], complete=True
    )


_WAITING_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError")


def _from_pod(training: Training, pod: PodView, nodes: Sequence[NodeFacts]) -> _Outcome:
    gate, train, seal = (pod.container(n) for n in (CONTAINER_GATE, CONTAINER_TRAIN, CONTAINER_SEAL))
    if pod.unknown_release is not None:
        message = (
            f"pod {pod.name} was built with agent image {pod.unknown_release}, which is neither this "
            "release's nor the previous release's: an upgrade skipped a release, or the pod was changed"
        )
        reason = Reason.POD_FROM_UNKNOWN_RELEASE
        outcome = _Outcome("Failed", reason, message, events=[Event("Warning", reason, message)])
        outcome.complete, outcome.delete = True, (pod.name,)
        return outcome
    if pod.deviations:
        reason, message = refusal(pod.name, pod.deviations)
        outcome = _Outcome("Failed", reason, message, events=[Event("Warning", reason, message)])
        outcome.complete, outcome.delete = True, (pod.name,)
        return outcome
    if pod.phase == "Failed":
        if any(c.state == "terminated" and c.exit_code == SEAL_REFUSED_EXIT for c in (gate, seal)):
            certified = training.condition(ConditionType.CERTIFIED) or {}
            reason = _reason(certified.get("reason"), Reason.CERTIFICATION_REFUSED)
            if reason not in REFUSALS:  # a stale condition, not the agent's refusal
                reason = Reason.CERTIFICATION_REFUSED
            message = str(certified.get("message") or "the node agent refused to certify this run")
            return _Outcome(
                "Failed", reason, message, events=[Event("Warning", reason, message)], complete=True
            )
        if train.state == "terminated" and train.exit_code not in (0, None):
            return _retry_or_fail(
                training, pod, Reason.TRAINING_FAILED, f"the train container exited with {train.exit_code}"
            )
        if pod.reason == "Evicted":
            return _retry_or_fail(training, pod, Reason.EVICTED, pod.message or "the pod was evicted")
        if gate.state == "terminated" and gate.exit_code not in (0, None):
            return _retry_or_fail(
                training, pod, Reason.GATE_FAILED, f"aicert-gate exited with {gate.exit_code}"
            )
        return _retry_or_fail(training, pod, Reason.POD_FAILED, pod.message or pod.reason or "the pod failed")
    if pod.node is None:
        message = pod.unschedulable or "waiting for the scheduler"
        assurance = training.spec.minAssurance
        claim_missing = input_claim_missing(training.spec, pod.unschedulable)
        if claim_missing is not None:
            return _Outcome(
                "Pending",
                Reason.INPUT_CLAIM_MISSING,
                claim_missing,
                conditions={ConditionType.SCHEDULED: ("False", Reason.INPUT_CLAIM_MISSING, claim_missing)},
            )
        unchainable = no_chainable_node(assurance, nodes) if pod.unschedulable else None
        if unchainable is not None:
            return _Outcome(
                "Pending",
                Reason.NO_CHAINABLE_NODE,
                unchainable,
                conditions={ConditionType.SCHEDULED: ("False", Reason.NO_CHAINABLE_NODE, unchainable)},
            )
        if pod.unschedulable:
            return _Outcome(
                "Pending",
                Reason.UNSCHEDULABLE,
                f"no node can run it yet (needs assurance {assurance} or higher): {message}",
                conditions={ConditionType.SCHEDULED: ("False", Reason.UNSCHEDULABLE, message)},
            )
        return _Outcome(
            "Pending",
            Reason.SCHEDULING,
            message,
            conditions={ConditionType.SCHEDULED: ("False", Reason.PENDING, message)},
        )
    conditions: Wanted = {ConditionType.SCHEDULED: ("True", Reason.SCHEDULED, f"on node {pod.node}")}
    for container in (gate, train):
        if container.state == "waiting" and container.reason in _WAITING_REASONS:
            message = container.message or container.reason
            waiting = "waiting for the image" if "Image" in container.reason else "the container cannot start"
            conditions[ConditionType.INPUTS_MEASURED] = ("False", Reason.WAITING, waiting)
            return _Outcome("Pending", Reason(container.reason), message, conditions=conditions)
    if gate.state != "terminated":
        measuring = "the node agent is measuring the inputs"
        conditions[ConditionType.INPUTS_MEASURED] = ("False", Reason.MEASURING, measuring)
        return _Outcome("Measuring", Reason.MEASURING_INPUTS, measuring, conditions=conditions)
    conditions[ConditionType.INPUTS_MEASURED] = (
        "True",
        Reason.MEASURED,
        "the node agent measured the inputs",
    )
    if train.state != "terminated":
        conditions[ConditionType.TRAINED] = ("False", Reason.TRAINING, "the train container is running")
        return _Outcome("Training", Reason.TRAINING, "the train container is running", conditions=conditions)
    conditions[ConditionType.TRAINED] = ("True", Reason.COMPLETED, "the train container exited 0")
    certified = training.condition(ConditionType.CERTIFIED) or {}
    if pod.phase == "Succeeded" and certified.get("status") == "True" and training.status.get("certificate"):
        return _Outcome(  # no Event: the agent's `Certified` Event, with the model digest, says it
            "Succeeded",
            Reason.CERTIFIED,
            "the training's outputs are certified",
            conditions=conditions,
            complete=True,
        )
    return _Outcome(
        "Sealing",
        Reason.SEALING,
        "the node agent is measuring the outputs and quoting",
        conditions=conditions,
    )


# What kube-scheduler's VolumeBinding plugin says of a pod's claims (its PreFilter and Filter).
_CLAIM_NOT_FOUND = re.compile(r'persistentvolumeclaim "([^"]+)" (not found|is being deleted)')
_CLAIMS_UNBOUND = "pod has unbound immediate PersistentVolumeClaims"


def input_claim_missing(spec: TrainingSpec, unschedulable: str | None) -> str | None:
    """The message of an `InputClaimMissing` condition when the scheduler's `unschedulable` message
    says an input's claim does not exist, is being deleted or is not bound; None otherwise. The run
    then waits for the claim (until its deadline), and says which one it waits for."""
    if not unschedulable:
        return None
    inputs = {i.persistentVolumeClaim.claimName: i.name for i in spec.inputs}
    for match in _CLAIM_NOT_FOUND.finditer(unschedulable):
        claim, state = match[1], match[2]
        if claim in inputs:
            what = "does not exist" if state == "not found" else "is being deleted"
            return f"input {inputs[claim]}: claim {claim} {what}; the run waits for it"
    if _CLAIMS_UNBOUND in unschedulable and inputs:
        claims = ", ".join(sorted(inputs))
        one = "claim" if len(inputs) == 1 else "one of the claims"
        return f"input {one} {claims} is not bound to a volume; the run waits for it: {unschedulable}"
    return None


def finish_conditions(training: Training, phase: str, reason: Reason, message: str) -> Wanted:
    """Finished: True once the run is Succeeded or Failed, with the outcome's reason and message
    (what `kubectl wait --for=condition=Finished` waits for, either way); False while it runs, with
    the current reason. A Failed run also gets Certified False with the failure's reason, unless
    the agent already wrote Certified (its refusal, or a certificate issued before the run failed):
    the agent's word stands, and the two writers never fight over the condition."""
    if phase not in TERMINAL_PHASES:
        return {ConditionType.FINISHED: ("False", reason, message)}
    wanted: Wanted = {ConditionType.FINISHED: ("True", reason, message)}
    if phase == "Failed" and training.condition(ConditionType.CERTIFIED) is None:
        wanted[ConditionType.CERTIFIED] = ("False", reason, message)
    return wanted


# The status fields the operator owns; server-side apply drops those a write of its leaves out.
_OPERATOR_FIELDS = (
    "phase",
    "reason",
    "message",
    "observedGeneration",
    "attempt",
    "podName",
    "podUID",
    "podContract",
    "node",
    "startTime",
    "completionTime",
    "published",
)
_OPERATOR_CONDITIONS = (
    ConditionType.SCHEDULED,
    ConditionType.INPUTS_MEASURED,
    ConditionType.TRAINED,
    ConditionType.PUBLISHED,
)


def finished_afterwards(training: Training, phase: str, now: dt.datetime) -> dict[str, Any]:
    """For a run that finished before the operator wrote Finished (an older release): its status as
    it is, with `finish_conditions` added; once written, nothing ({}). Everything else the operator
    owns is applied again unchanged, since an apply that left it out would remove it."""
    if training.condition(ConditionType.FINISHED) is not None:
        return {}
    status = {k: training.status[k] for k in _OPERATOR_FIELDS if k in training.status}
    kept = [c for c in training.status.get("conditions") or [] if c.get("type") in _OPERATOR_CONDITIONS]
    default = Reason.CERTIFIED if phase == "Succeeded" else Reason.POD_FAILED
    reason = _reason(status.get("reason"), default)
    message = str(status.get("message") or f"the run ended {phase}")
    status["conditions"] = [
        *kept,
        *_conditions(training, finish_conditions(training, phase, reason, message), now),
    ]
    return status


def _deadline(training: Training, default_deadline: int, max_deadline: int | None) -> tuple[int, str]:
    """The run's deadline in seconds, and how a DeadlineExceeded message names it."""
    own = training.spec.activeDeadlineSeconds
    deadline = own or default_deadline
    if max_deadline is not None and deadline > max_deadline:
        if own:
            return max_deadline, f"{max_deadline} s, the operator's maximum (activeDeadlineSeconds is {own})"
        return max_deadline, f"{max_deadline} s, the operator's maximum"
    return deadline, f"activeDeadlineSeconds={deadline}"


def reconcile(
    training: Training,
    pods: list[PodView],
    now: dt.datetime,
    *,
    default_deadline: int,
    max_deadline: int | None = None,
    nodes: Sequence[NodeFacts] = (),
    pushes: Sequence[PushView] = (),
) -> Decision:
    """`pods`: the training's own pods (observe.owned_pods). `default_deadline`: seconds, for a spec
    without activeDeadlineSeconds; `max_deadline`: the operator's cap on either (None: none).
    `nodes`: what the node watch showed (aicert_operator.nodes), for why a pod waits for a node.
    `pushes`: the training's push pods (publish.push_views), for spec.output.oci."""
    status = training.status
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        leftovers = tuple(p.name for p in pods if not p.deleting and p.phase not in ("Succeeded", "Failed"))
        finished = finished_afterwards(training, str(phase), now)
        wanted = publication(training.name, training.spec, status, pushes, now)
        if wanted is None:
            return Decision(status=finished, delete_pods=leftovers)
        return published_decision(training, finished, wanted, now, leftovers)

    attempt = max([int(status.get("attempt") or 0), *(p.attempt for p in pods)])
    current = next((p for p in pods if p.attempt == attempt), None) if attempt else None
    started = parse_time(status.get("startTime")) or now
    deadline, named = _deadline(training, default_deadline, max_deadline)
    if attempt and now >= started + dt.timedelta(seconds=deadline):
        message = f"the run did not finish within {named}"
        outcome = _Outcome(
            "Failed",
            Reason.DEADLINE_EXCEEDED,
            message,
            events=[Event("Warning", Reason.DEADLINE_EXCEEDED, message)],
            complete=True,
        )
        outcome.delete = tuple(p.name for p in pods if not p.deleting)
    elif attempt == 0:
        outcome = _Outcome(
            "Pending",
            Reason.CREATING,
            "creating the pod of attempt 1",
            create_attempt=1,
            events=[Event("Normal", Reason.CREATED, f"created pod {pod_name(training.name, 1)}")],
        )
    elif current is None:
        gone = PodView(
            pod_name(training.name, attempt), attempt, None, "Failed", False, "PodDeleted", "", None, {}
        )
        outcome = _retry_or_fail(
            training, gone, Reason.POD_DELETED, f"the pod of attempt {attempt} was deleted"
        )
    elif current.deleting:
        outcome = _Outcome(
            str(phase or "Pending"),
            _reason(status.get("reason"), Reason.POD_DELETING),
            "the pod is being deleted",
        )
    else:
        outcome = _from_pod(training, current, nodes)

    if outcome.create_attempt is not None:
        attempt = outcome.create_attempt
    pod = next((p for p in pods if p.attempt == attempt), None)
    new_status: dict[str, Any] = {
        "phase": outcome.phase,
        "reason": str(outcome.reason),
        "message": status_message(outcome.message),
        "observedGeneration": training.generation,
        "attempt": attempt,
        "podName": pod_name(training.name, attempt),
        "startTime": timestamp(started),
        "conditions": _conditions(
            training,
            {
                **outcome.conditions,
                **finish_conditions(training, outcome.phase, outcome.reason, outcome.message),
            },
            now,
        ),
    }
    if pod is not None:
        new_status["podUID"] = pod.uid
        if pod.node:
            new_status["node"] = pod.node
    contract = pod_contract(status, attempt, pod)
    if contract is not None:
        new_status["podContract"] = contract
    if outcome.complete:
        new_status["completionTime"] = timestamp(now)
    events = tuple(outcome.events) if (outcome.phase != phase or outcome.create_attempt) else ()
    requeue = None
    if not outcome.complete:
        requeue = max(1.0, (started + dt.timedelta(seconds=deadline) - now).total_seconds())
    elif outcome.phase == "Succeeded" and training.spec.output.oci is not None:
        requeue = PUBLISH_LOOK_SECONDS  # its own write wakes nothing: look again to start the push
    return Decision(
        status=new_status,
        create_attempt=outcome.create_attempt,
        delete_pods=outcome.delete,
        events=events,
        requeue_after=requeue,
    )


def published_decision(
    training: Training,
    finished: dict[str, Any],
    wanted: Publication,
    now: dt.datetime,
    leftovers: tuple[str, ...],
) -> Decision:
    """The status write of a Succeeded run's publication: everything the operator owns applied again
    (server-side apply would drop what a write leaves out), with the Published condition and, once
    pushed, status.published. An Event when the condition's reason changes."""
    status = finished or {k: training.status[k] for k in _OPERATOR_FIELDS if k in training.status}
    kept = [
        c
        for c in status.get("conditions") or training.status.get("conditions") or []
        if c.get("type") in (*_OPERATOR_CONDITIONS, ConditionType.FINISHED)
        and c.get("type") != ConditionType.PUBLISHED
    ]
    state, reason, message = wanted.condition
    status = {
        **status,
        "conditions": [*kept, *_conditions(training, {ConditionType.PUBLISHED: wanted.condition}, now)],
    }
    if wanted.published is not None:
        status["published"] = wanted.published
    current = training.condition(ConditionType.PUBLISHED) or {}
    events: tuple[Event, ...] = ()
    if current.get("reason") != reason:
        kind = "Normal" if state == "True" or reason == Reason.PUSH_PENDING else "Warning"
        events = (Event(kind, reason, message),)
    return Decision(
        status=status,
        delete_pods=leftovers,
        events=events,
        requeue_after=wanted.requeue_after,
        create_push=wanted.create_try,
    )


def pod_contract(status: dict[str, Any], attempt: int, pod: PodView | None) -> dict[str, Any] | None:
    """status.podContract for `attempt`: what the status recorded when the operator made its pod;
    else, for a pod that conforms to an accepted release (made before the operator recorded it,
    or its write lost), that release's. None before the attempt's pod exists."""
    recorded = status.get("podContract")
    if isinstance(recorded, dict) and recorded.get("attempt") == attempt:
        return recorded
    if pod is not None and pod.attempt == attempt and pod.agent_image is not None and not pod.deviations:
        return dict(pod_contract_record(attempt, pod.agent_image))
    return None


def _reason(value: Any, default: Reason) -> Reason:
    """A reason read back from the status; anything not documented becomes `default`."""
    try:
        return Reason(value)
    except ValueError:
        return default


def pod_not_created(
    training: Training,
    decision: Decision,
    message: str,
    *,
    name_taken: bool,
    transient: bool,
    now: dt.datetime,
) -> Decision:
    """The pod `decision` wanted could not be created. A name held by a pod that is not this
    training's, or a transient refusal (quota), leaves the run Pending and the attempt unchanged; any
    other refusal (PodSecurity, validation) cannot pass with this immutable spec: Failed."""
    reason = Reason.POD_NAME_TAKEN if name_taken else Reason.POD_REJECTED
    kept = ("attempt", "podName", "podUID", "podContract", "node")
    keep = {k: v for k, v in training.status.items() if k in kept}
    phase = "Pending" if name_taken or transient else "Failed"
    wanted = {
        ConditionType.SCHEDULED: ("False", reason, message),
        **finish_conditions(training, phase, reason, message),
    }
    status: dict[str, Any] = {
        **decision.status,
        **keep,
        "phase": phase,
        "attempt": int(training.status.get("attempt") or 0),
        "reason": str(reason),
        "message": status_message(message),
        "conditions": _conditions(training, wanted, now),
    }
    if not status["attempt"]:
        status.pop("podName", None)
    if phase == "Pending":
        return Decision(status=status, events=(Event("Warning", reason, message),), requeue_after=10.0)
    status["completionTime"] = timestamp(now)
    return Decision(status=status, events=(Event("Warning", reason, message),))


def status_unchanged(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when every field the operator wants is already there: applying would change nothing."""
    for key, value in desired.items():
        if key != "conditions":
            if current.get(key) != value:
                return False
            continue
        present = {c.get("type"): c for c in current.get("conditions") or []}
        if any(present.get(c["type"]) != c for c in value):
            return False
    return True
