"""What the operator reads off a Pod, as plain values. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from aicert_contract.pod import Deviation, PodSettings, controller_uid, pod_conformance, recorded_agent_image
from aicert_contract.training import (
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
    agent_image: str | None = None  # the accepted release (its agent image) it was compared with
    unknown_release: str | None = None  # its agent image, when neither accepted release has it

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
    status: Mapping[str, Any],
) -> list[PodView]:
    """The training's own pods: controlled by its uid and named for their attempt. Anything else
    that carries its labels is not the operator's and never counts. Each view says which accepted
    release's contract it was compared with (the one `status` recorded for its attempt, else the
    one its agent image names) and where the pod departs from it."""
    views = []
    recorded = recorded_agent_image(status)
    for pod in pods:
        view = pod_view(pod)
        if controller_uid(pod) != uid or view.attempt < 1 or view.name != pod_name(name, view.attempt):
            continue
        found = pod_conformance(
            pod,
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            attempt=view.attempt,
            settings=settings,
            recorded_agent_image=recorded if view.attempt == status.get("attempt") else None,
        )
        views.append(
            replace(
                view,
                deviations=found.differences,
                agent_image=found.agent_image,
                unknown_release=found.unknown_release,
            )
        )
    return views


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as the API server writes it (a `Z` suffix); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
