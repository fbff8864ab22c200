"""What the agent asks the API server for, and when it may ask less (docs/performance.md, the
request budget): the node label is written again at most once a minute, not after every renewal;
a pod its training does not name yet is looked at after a doubling delay, not at every sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from aicert_agent import node_agent
from aicert_agent.node_agent import AgentConfig, NodeAgent
from aicert_agent.pacing import RELABEL_SECONDS, WAIT_MAX_SECONDS, next_wait, relabel_due
from aicert_agent.volumes import empty_dir_path
from aicert_contract.pod import PodSettings
from aicert_contract.training import (
    CONTAINER_GATE,
    CONTROL_VOLUME,
    GROUP,
    KIND,
    LABEL_ATTEMPT,
    LABEL_TRAINING,
    LABEL_TRAINING_UID,
)


def test_the_label_is_due_when_never_written_or_once_a_minute() -> None:
    assert relabel_due(None, 5.0)
    assert not relabel_due(100.0, 100.0 + RELABEL_SECONDS - 0.5)
    assert relabel_due(100.0, 100.0 + RELABEL_SECONDS)


class Labels:
    def __init__(self) -> None:
        self.written: list[str | None] = []

    def label_node(self, level: str | None) -> None:
        self.written.append(level)


def test_renewals_write_the_label_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is renewed every 10 s (a third of 30 s): six renewals, one label write."""
    kube = Labels()
    agent = NodeAgent.__new__(NodeAgent)  # only what relabel uses
    agent.kube = cast(Any, kube)
    agent.config = cast(Any, type("Config", (), {"assurance": "vtpm"}))
    agent._labelled_at = 1000.0  # start() labelled the node
    clock = [1000.0]
    monkeypatch.setattr(node_agent.time, "monotonic", lambda: clock[0])
    for _ in range(6):
        clock[0] += 10.0
        agent.relabel()
    assert kube.written == ["vtpm"]  # at 1060 s
    clock[0] += 10.0
    agent.relabel()
    assert kube.written == ["vtpm"]


def test_a_waiting_pod_is_looked_at_after_a_doubling_delay() -> None:
    assert [next_wait(None), next_wait(2.0), next_wait(4.0), next_wait(8.0)] == [
        2.0,
        4.0,
        8.0,
        WAIT_MAX_SECONDS,
    ]


class Trainings:
    """An API server whose training does not name its pod yet (a busy operator)."""

    def __init__(self) -> None:
        self.reads = 0

    def get_training(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        spec = {"image": "r/t@sha256:" + "a" * 64, "output": {"emptyDir": {}, "mountPath": "/out"}}
        return {"metadata": {"name": "run", "namespace": "ml", "uid": "t-1"}, "spec": spec, "status": {}}


def waiting_pod() -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "pod-1",
            "name": "run-1",
            "namespace": "ml",
            "labels": {LABEL_TRAINING: "run", LABEL_TRAINING_UID: "t-1", LABEL_ATTEMPT: "1"},
            "ownerReferences": [
                {"apiVersion": f"{GROUP}/v1alpha1", "kind": KIND, "uid": "t-1", "controller": True}
            ],
        },
        "spec": {"nodeName": "gpu-1"},
        "status": {
            "initContainerStatuses": [
                {"name": CONTAINER_GATE, "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}}}
            ]
        },
    }


def test_a_pod_its_training_does_not_name_yet_is_not_read_at_every_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator names the pod (status.podUID, status.node) only once it saw it bound; a busy
    operator takes tens of seconds. Sweeps come every 2 s: the training is read at 0, 2, 6, 14, 22 s."""
    kube = Trainings()
    agent = NodeAgent.__new__(NodeAgent)  # only what the gate's first look uses
    agent.kube = cast(Any, kube)
    agent.config = AgentConfig(
        node="gpu-1",
        kubelet_root=tmp_path,
        assurance="dev",
        pod=PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64),
    )
    agent._waiting, agent._claims = {}, {}
    empty_dir_path(tmp_path, "pod-1", CONTROL_VOLUME).mkdir(parents=True)
    clock = [0.0]
    monkeypatch.setattr(node_agent.time, "monotonic", lambda: clock[0])
    pod = waiting_pod()
    read_at = []
    while clock[0] <= 24.0:
        if agent.wants_work(pod):
            before = kube.reads
            agent.reconcile_pod(pod)
            if kube.reads > before:
                read_at.append(clock[0])
        clock[0] += 2.0
    assert read_at == [0.0, 2.0, 6.0, 14.0, 22.0]
