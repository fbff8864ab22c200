"""What a pod on this node needs from the agent next. Pure: a restarted agent decides the same.

The decision uses only what survives a restart: the pod (from the API server), the run's
events in the measurement log, the marker files, and whether the status already holds this
run's certificate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Step(enum.Enum):
    BEGIN = "begin"  # log the run event
    MEASURE_INPUTS = "measure-inputs"
    OPEN_GATE = "open-gate"
    FINISH = "finish"  # re-hash inputs, measure outputs, seal, publish, mark sealed
    PUBLISH = "publish"  # sealed in the log, certificate not yet in the status
    MARK_SEALED = "mark-sealed"  # certificate in the status, marker missing
    REFUSE_LOG_LOST = "refuse-log-lost"


@dataclass(frozen=True)
class PodFacts:
    """kubelet mounts every volume before it starts a container, so the agent reads or writes a
    pod's volumes only while one of the pod's own containers is running: the gate before
    training (inputs, gate marker), the seal after it (outputs, seal marker). Before that the
    host paths may still be empty mount points."""

    terminal: bool  # Succeeded, Failed or being deleted
    gate_running: bool
    gate_done: bool
    train_exit: int | None  # None while not terminated
    seal_running: bool


@dataclass(frozen=True)
class RunProgress:
    started: bool
    inputs_measured: int
    output_measured: bool
    sealed: bool


@dataclass(frozen=True)
class Markers:
    gate: bool
    sealed: bool
    refused: bool


GATE_LANE = "gate"
SEAL_LANE = "seal"


def work_lane(pod: PodFacts) -> str:
    """Gates and seals are worked on by workers of their own: a seal hashing a big output never
    holds up another run's gate (its inputs' measurement, which its training waits for)."""
    return GATE_LANE if pod.gate_running else SEAL_LANE


def lanes(workers: int) -> dict[str, int]:
    """The agent's lanes, `workers` each."""
    return {GATE_LANE: workers, SEAL_LANE: workers}


def may_act(pod: PodFacts, markers: Markers) -> bool:
    """Can the agent do anything for this pod now? Only while its gate runs and is not yet open,
    or while its seal runs (then kubelet has its volumes mounted), and not once it is sealed or
    refused. Otherwise the agent need not even read the pod's training."""
    if pod.terminal or markers.sealed or markers.refused:
        return False
    return (pod.gate_running and not markers.gate) or pod.seal_running


def plan(
    pod: PodFacts, run: RunProgress, markers: Markers, inputs_expected: int, certified: bool
) -> list[Step]:
    if pod.terminal or markers.sealed or markers.refused:
        return []
    if certified or run.sealed:
        if not pod.seal_running:
            return []  # its control volume may not be mounted (or not any more)
        return [Step.MARK_SEALED] if certified else [Step.PUBLISH]
    if not pod.gate_done:
        if not pod.gate_running or markers.gate:
            # volumes may not be mounted yet; or the gate is open and training may be writing its
            # output (the pod we were given is older than the marker): the gate opens once
            return []
        steps = [] if run.started else [Step.BEGIN]
        if run.inputs_measured < inputs_expected:
            steps.append(Step.MEASURE_INPUTS)
        return [*steps, Step.OPEN_GATE]
    if not run.started or run.inputs_measured < inputs_expected:
        # The gate opened, so this agent measured the inputs once, but the log no longer says so
        # (the node rebooted, or the log was re-based): no honest certificate can be made.
        return [Step.REFUSE_LOG_LOST]
    if pod.train_exit == 0 and pod.seal_running:
        return [Step.FINISH]
    return []


@dataclass(frozen=True)
class PodRun:
    """One pod on the node, as the re-basing decision sees it."""

    uid: str
    terminal: bool
    finished: bool  # its sealed or refused marker is written: the agent is done with it


def run_in_flight(pods: list[PodRun], runs_in_log: set[str]) -> bool:
    """Is any run between its first measurement and its end? Only then must the log's epoch be
    kept; otherwise the agent re-bases, so certificates carry only concurrent runs' entries (an
    idle or unscheduled pod never holds the log open)."""
    return any(p.uid in runs_in_log and not p.terminal and not p.finished for p in pods)
