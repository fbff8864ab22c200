"""What the agent reads of a training pod's status and of its run's log entries. Pure."""

from __future__ import annotations

from typing import Any

from aicert.events import INPUT, OUTPUT, RUN, SEAL
from aicert_agent.measurement_log import Entry
from aicert_agent.pod_plan import PodFacts, RunProgress
from aicert_contract.training import CONTAINER_GATE, CONTAINER_SEAL, CONTAINER_TRAIN


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if c.get("name") == name:
            return dict(c)
    return {}


def _running(container: dict[str, Any]) -> bool:
    return bool((container.get("state") or {}).get("running"))


def _terminated(container: dict[str, Any]) -> dict[str, Any] | None:
    state = container.get("state") or {}
    return state.get("terminated")


def pod_facts(pod: dict[str, Any]) -> PodFacts:
    phase = (pod.get("status") or {}).get("phase")
    gate = _terminated(container_status(pod, CONTAINER_GATE))
    train = _terminated(container_status(pod, CONTAINER_TRAIN))
    return PodFacts(
        terminal=phase in ("Succeeded", "Failed") or bool(pod["metadata"].get("deletionTimestamp")),
        gate_running=_running(container_status(pod, CONTAINER_GATE)),
        gate_done=gate is not None and gate.get("exitCode") == 0,
        train_exit=None if train is None else int(train.get("exitCode", -1)),
        seal_running=_running(container_status(pod, CONTAINER_SEAL)),
    )


def run_progress(entries: list[Entry], run: str) -> RunProgress:
    kinds = [e.type for e in entries if e.run == run]
    return RunProgress(
        started=RUN in kinds,
        inputs_measured=kinds.count(INPUT),
        output_measured=OUTPUT in kinds,
        sealed=SEAL in kinds,
    )
