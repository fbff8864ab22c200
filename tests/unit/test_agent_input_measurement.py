"""The node agent measures an input volume whole: a top-level manifest.json in it is data.

The agent's Kubernetes and TPM edges are replaced by a recorder that keeps what the agent would
log, and by a fixed path for each claim; the measuring steps themselves run unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from tests.lineage_runs import certify, weights
from tests.soft_node import soft_node

from aicert.certificate import ParentRecord
from aicert.digest import CERTIFICATE_FILE, Manifest, hash_tree
from aicert.events import INPUT
from aicert_agent.measurement_log import Entry
from aicert_agent.network_ledger import NetworkLedger
from aicert_agent.node_agent import AgentConfig, NodeAgent, PodContext, Refusal
from aicert_agent.pod_plan import Step
from aicert_agent.recorder import RunRecorder
from aicert_contract.pod import PodSettings
from aicert_contract.status import Reason
from aicert_contract.training import TrainingSpec

POD_UID = "pod-uid-1"
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
}


class Recorded:
    """Stands in for RunRecorder: keeps the input measurements the agent logs."""

    def __init__(self) -> None:
        self.inputs: dict[str, Manifest] = {}
        self.parents: dict[str, ParentRecord | None] = {}

    def input(self, name: str, manifest: Manifest, *, parent: ParentRecord | None = None) -> None:
        self.inputs[name] = manifest
        self.parents[name] = parent


class MeasuringAgent(NodeAgent):
    """The agent with its volumes at fixed paths and its cluster checks passing."""

    claims: dict[str, Path]
    recorded: Recorded

    def _recorder(self, ctx: PodContext, entries: list[Entry]) -> RunRecorder:
        return cast(RunRecorder, self.recorded)

    def _claim_path(self, ctx: PodContext, claim: str) -> Path:
        return self.claims[claim]

    def _claim(self, ctx: PodContext, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"phase": "Bound"}}

    def _check_volumes(self, ctx: PodContext) -> None:
        pass

    def _network(self, ctx: PodContext) -> dict[str, Any]:
        return {"egress": "none", "policies": []}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "train.csv").write_text("x,y\n1,2\n")
    (directory / "manifest.json").write_text('{"labels": "as shipped"}')
    return directory


def agent(data: Path, tmp_path: Path) -> MeasuringAgent:
    config = AgentConfig(
        node="node-1",
        kubelet_root=tmp_path / "kubelet",
        assurance="dev",
        pod=PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64),
    )
    made = MeasuringAgent(
        config, cast(Any, None), None, cast(Any, None), cast(Any, None), cast(Any, None), NetworkLedger(None)
    )
    made.claims = {"data-pvc": data, "out-pvc": tmp_path / "out"}
    made.recorded = Recorded()
    return made


def context() -> PodContext:
    pod = {"metadata": {"uid": POD_UID, "namespace": "ml", "labels": {}}, "status": {}}
    training = {"metadata": {"name": "run", "namespace": "ml", "uid": "t-1"}}
    return PodContext(pod, training, TrainingSpec.model_validate(SPEC))


def test_the_gate_measures_an_inputs_manifest_json(data: Path, tmp_path: Path) -> None:
    measuring = agent(data, tmp_path)
    measuring._do(Step.MEASURE_INPUTS, context(), [])
    measured = measuring.recorded.inputs["data"]
    assert [f.path for f in measured.files] == ["manifest.json", "train.csv"]
    assert measured.root == hash_tree(data).root


def test_the_gate_records_the_parent_of_an_earlier_runs_output(data: Path, tmp_path: Path) -> None:
    """An input holding a certified run's output records that run's certificate (tests.lineage_runs
    makes it as the agent does); the same certificate beside other data records nothing."""
    node = soft_node(tmp_path / "node")
    base = weights(tmp_path / "base", b"base weights")
    certify(node, "base", base, {})
    measuring = agent(base, tmp_path)
    measuring._do(Step.MEASURE_INPUTS, context(), [])
    parent = measuring.recorded.parents["data"]
    assert (
        parent is not None
        and parent.subject
        == json.loads((base / CERTIFICATE_FILE).read_bytes())["statement"]["subject"][0]["digest"]["sha256"]
    )
    (data / CERTIFICATE_FILE).write_bytes((base / CERTIFICATE_FILE).read_bytes())  # borrowed
    borrowing = agent(data, tmp_path)
    borrowing._do(Step.MEASURE_INPUTS, context(), [])
    assert borrowing.recorded.parents["data"] is None


def test_the_seal_notices_a_changed_manifest_json_in_an_input(data: Path, tmp_path: Path) -> None:
    measuring = agent(data, tmp_path)
    measuring._do(Step.MEASURE_INPUTS, context(), [])
    gate = measuring.recorded.inputs["data"]
    entry = Entry(0, b"", INPUT, POD_UID, {"name": "data", "root": gate.root})
    (data / "manifest.json").write_text('{"labels": "changed while training"}')
    with pytest.raises(Refusal) as refusal:
        measuring._finish(context(), cast(RunRecorder, measuring.recorded), [entry])
    assert refusal.value.reason is Reason.INPUTS_CHANGED
    assert "input data changed during training" in refusal.value.message
