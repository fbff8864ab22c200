"""What the operator reads off a Pod, as plain values. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from aicert.contract.pod import Deviation, PodSettings, controller_uid, pod_differences, training_pod
from aicert.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    LABEL_ATTEMPT,
    TrainingSpec,
    pod_name,
)


@dataclass(frozen=True)
class ContainerState:
    state: str  # "waiting" | "running" | "terminated" | "unknown"
    exit_code: int | None = None
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PodView:
    name: str
    attempt: int
    node: str | None
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool
    reason: str  # e.g. Evicted
    message: str
    unschedulable: str | None  # the scheduler's message when it could not place the pod
    containers: dict[str, ContainerState]
    uid: str = ""
    deviations: tuple[Deviation, ...] = ()  # where the pod differs from the contract's pod (empty: conforms)

    def container(self, name: str) -> ContainerState:
        return self.containers.get(name, ContainerState("unknown"))


def _container_state(status: dict[str, Any]) -> ContainerState:
    state = status.get("state") or {}
    for kind in ("terminated", "running", "waiting"):
        if kind in state and state[kind] is not None:
            detail = state[kind] or {}
            return ContainerState(
                kind,
                exit_code=detail.get("exitCode"),
                reason=str(detail.get("reason") or ""),
                message=str(detail.get("message") or ""),
            )
    return ContainerState("unknown")


def pod_view(pod: dict[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = {
        c["name"]: _container_state(c)
        for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if c.get("name") in (CONTAINER_GATE, CONTAINER_TRAIN, CONTAINER_SEAL)
    }
    unschedulable = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            unschedulable = str(condition.get("message") or condition.get("reason") or "not scheduled")
    try:
        attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    return PodView(
        name=str(meta.get("name")),
        attempt=attempt,
        node=spec.get("nodeName"),
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        unschedulable=unschedulable,
        containers=containers,
        uid=str(meta.get("uid") or ""),
    )


def owned_pods(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: TrainingSpec,
    pods: list[dict[str, Any]],
    settings: PodSettings,
) -> list[PodView]:
    """The training's own pods: controlled by its uid and named for their attempt. Anything else
    that carries its labels is not the operator's and never counts. Each view says where the pod
    departs from the contract."""
    views = []
    for pod in pods:
        view = pod_view(pod)
        if controller_uid(pod) != uid or view.attempt < 1 or view.name != pod_name(name, view.attempt):
            continue
        expected = training_pod(
            name=name, namespace=namespace, uid=uid, spec=spec, attempt=view.attempt, settings=settings
        )
        views.append(replace(view, deviations=tuple(pod_differences(pod, expected))))
    return views
