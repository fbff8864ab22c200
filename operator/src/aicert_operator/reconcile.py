"""reconcile(training, pods, now) -> Decision: every operator decision, pure and testable.

The operator owns status.phase/reason/message, the Scheduled, InputsMeasured and Trained
conditions, attempt, node, podName and the times. The agent owns the Certified condition, the
certificate, modelDigest and assurance (server-side apply keeps the two apart). State comes from
what is observed each time: a restarted operator decides exactly what the previous one would have.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aicert.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    SEAL_REFUSED_EXIT,
    TERMINAL_PHASES,
    TrainingSpec,
    pod_name,
)
from aicert_operator.observe import PodView


@dataclass(frozen=True)
class Training:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: TrainingSpec
    status: dict[str, Any]

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.status.get("conditions") or [] if c.get("type") == kind), None)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]  # the operator's fields, applied with server-side apply
    create_attempt: int | None = None
    delete_pods: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None


@dataclass
class _Outcome:
    phase: str
    reason: str
    message: str
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # type -> status, reason, msg
    create_attempt: int | None = None
    delete: tuple[str, ...] = ()
    events: list[Event] = field(default_factory=list)
    complete: bool = False


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _conditions(
    training: Training, wanted: dict[str, tuple[str, str, str]], now: dt.datetime
) -> list[dict[str, Any]]:
    """The operator's conditions, keeping lastTransitionTime when a status did not change."""
    result = []
    for kind, (status, reason, message) in wanted.items():
        previous = training.condition(kind)
        since = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": training.generation,
                "lastTransitionTime": since or _timestamp(now),
            }
        )
    return result


def _retry_or_fail(training: Training, pod: PodView, reason: str, message: str) -> _Outcome:
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


def _from_pod(training: Training, pod: PodView) -> _Outcome:
    gate, train, seal = (pod.container(n) for n in (CONTAINER_GATE, CONTAINER_TRAIN, CONTAINER_SEAL))
    scheduled = ("True", "Scheduled", f"on node {pod.node}") if pod.node else None
    if pod.phase == "Failed":
        if seal.state == "terminated" and seal.exit_code == SEAL_REFUSED_EXIT:
            certified = training.condition("Certified") or {}
            reason = str(certified.get("reason") or "CertificationRefused")
            message = str(certified.get("message") or "the node agent refused to certify this run")
            return _Outcome(
                "Failed", reason, message, events=[Event("Warning", reason, message)], complete=True
            )
        if train.state == "terminated" and train.exit_code not in (0, None):
            return _retry_or_fail(
                training, pod, "TrainingFailed", f"the train container exited with {train.exit_code}"
            )
        if pod.reason == "Evicted":
            return _retry_or_fail(training, pod, "Evicted", pod.message or "the pod was evicted")
        if gate.state == "terminated" and gate.exit_code not in (0, None):
            return _retry_or_fail(training, pod, "GateFailed", f"aicert-gate exited with {gate.exit_code}")
        return _retry_or_fail(training, pod, "PodFailed", pod.message or pod.reason or "the pod failed")
    if pod.node is None:
        message = pod.unschedulable or "waiting for the scheduler"
        assurance = training.spec.minAssurance
        return _Outcome(
            "Pending",
            "Unschedulable" if pod.unschedulable else "Scheduling",
            f"no node can run it yet (needs assurance {assurance} or higher): {message}"
            if pod.unschedulable
            else message,
            conditions={"Scheduled": ("False", "Unschedulable" if pod.unschedulable else "Pending", message)},
        )
    assert scheduled is not None
    conditions = {"Scheduled": scheduled}
    for container in (gate, train):
        if container.state == "waiting" and container.reason in (
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
        ):
            message = container.message or container.reason
            conditions["InputsMeasured"] = ("False", "Waiting", "waiting for the image")
            return _Outcome("Pending", container.reason, message, conditions=conditions)
    if gate.state != "terminated":
        conditions["InputsMeasured"] = ("False", "Measuring", "the node agent is measuring the inputs")
        return _Outcome(
            "Measuring", "MeasuringInputs", "the node agent is measuring the inputs", conditions=conditions
        )
    conditions["InputsMeasured"] = ("True", "Measured", "the node agent measured the inputs")
    if train.state != "terminated":
        conditions["Trained"] = ("False", "Training", "the train container is running")
        return _Outcome("Training", "Training", "the train container is running", conditions=conditions)
    conditions["Trained"] = ("True", "Completed", "the train container exited 0")
    certified = training.condition("Certified") or {}
    if pod.phase == "Succeeded" and certified.get("status") == "True" and training.status.get("certificate"):
        return _Outcome(
            "Succeeded",
            "Certified",
            "the training's outputs are certified",
            conditions=conditions,
            events=[
                Event("Normal", "Certified", f"model {training.status.get('modelDigest', '')} certified")
            ],
            complete=True,
        )
    return _Outcome(
        "Sealing", "Sealing", "the node agent is measuring the outputs and quoting", conditions=conditions
    )


def reconcile(training: Training, pods: list[PodView], now: dt.datetime) -> Decision:
    status = training.status
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        leftovers = tuple(p.name for p in pods if not p.deleting and p.phase not in ("Succeeded", "Failed"))
        return Decision(status={}, delete_pods=leftovers)

    attempt = max([int(status.get("attempt") or 0), *(p.attempt for p in pods)])
    current = next((p for p in pods if p.attempt == attempt), None) if attempt else None
    started = _parse_time(status.get("startTime")) or now
    deadline = training.spec.activeDeadlineSeconds
    if attempt and deadline is not None and now >= started + dt.timedelta(seconds=deadline):
        message = f"the run did not finish within activeDeadlineSeconds={deadline}"
        outcome = _Outcome(
            "Failed",
            "DeadlineExceeded",
            message,
            events=[Event("Warning", "DeadlineExceeded", message)],
            complete=True,
        )
        outcome.delete = tuple(p.name for p in pods if not p.deleting)
    elif attempt == 0:
        outcome = _Outcome(
            "Pending",
            "Creating",
            "creating the pod of attempt 1",
            create_attempt=1,
            events=[Event("Normal", "Created", f"created pod {pod_name(training.name, 1)}")],
        )
    elif current is None:
        gone = PodView(
            pod_name(training.name, attempt), attempt, None, "Failed", False, "PodDeleted", "", None, {}
        )
        outcome = _retry_or_fail(training, gone, "PodDeleted", f"the pod of attempt {attempt} was deleted")
    elif current.deleting:
        outcome = _Outcome(
            str(phase or "Pending"), str(status.get("reason") or "PodDeleting"), "the pod is being deleted"
        )
    else:
        outcome = _from_pod(training, current)

    if outcome.create_attempt is not None:
        attempt = outcome.create_attempt
    pod = next((p for p in pods if p.attempt == attempt), None)
    new_status: dict[str, Any] = {
        "phase": outcome.phase,
        "reason": outcome.reason,
        "message": outcome.message,
        "observedGeneration": training.generation,
        "attempt": attempt,
        "podName": pod_name(training.name, attempt),
        "startTime": _timestamp(started),
        "conditions": _conditions(training, outcome.conditions, now),
    }
    if pod is not None and pod.node:
        new_status["node"] = pod.node
    if outcome.complete:
        new_status["completionTime"] = _timestamp(now)
    events = tuple(outcome.events) if (outcome.phase != phase or outcome.create_attempt) else ()
    requeue = None
    if not outcome.complete and deadline is not None:
        requeue = max(1.0, (started + dt.timedelta(seconds=deadline) - now).total_seconds())
    return Decision(
        status=new_status,
        create_attempt=outcome.create_attempt,
        delete_pods=outcome.delete,
        events=events,
        requeue_after=requeue,
    )


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
