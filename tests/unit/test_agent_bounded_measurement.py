"""No tenant can stall the node: the agent measures a run's volumes within a budget.

The attack (seen on a real cluster): `gpus: 0` runs write one sparse 8 TiB file each; the agent read
every apparent byte, for hours, with all its workers, while other tenants' runs waited. Here the
agent is the real `NodeAgent` with the real pod contract, real files under a kubelet-like directory
and the real hashing; only the API server (a recorder of what the agent writes) and the TPM log (the
run's earlier entries, given) stand in. Bytes read are counted at os.readv, which the hasher reads
with; nothing is timed.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import ValidationError
from tests.reads import Reads

from aicert.digest import INPUT_EXCLUDED, Manifest, hash_tree
from aicert.events import INPUT, RUN
from aicert_agent.measurement_log import Entry
from aicert_agent.measuring import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    LimitsError,
    MeasureLimits,
    filesystem_size,
    input_budget,
    output_budget,
)
from aicert_agent.network_ledger import NETWORK_POLICIES, NetworkLedger
from aicert_agent.node_agent import AgentConfig, NodeAgent, PodContext, pod_facts
from aicert_agent.pod_plan import GATE_LANE, SEAL_LANE, work_lane
from aicert_agent.recorder import RunRecorder
from aicert_agent.volumes import empty_dir_path, pod_volumes_dir
from aicert_contract.pod import PodSettings, training_pod
from aicert_contract.status import REFUSALS, Reason
from aicert_contract.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    CONTROL_VOLUME,
    MARKER_GATE,
    MARKER_REFUSED,
    MAX_EXACT_INTEGER,
    TrainingSpec,
)

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)
IMAGE = "registry.example/train@sha256:" + "a" * 64
POD_UID = "pod-uid-7"


def spec(**output: Any) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "gpus": 0,
        "command": ["python", "train.py"],
        "network": {"egress": "allowed"},  # no NetworkPolicy to fake: not what these tests are about
        "inputs": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"},
            {"name": "more", "persistentVolumeClaim": {"claimName": "more-pvc"}, "mountPath": "/more"},
        ],
        "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out", **output},
    }


class Cluster:
    """What the agent reads from and writes to the API server."""

    def __init__(self, training: dict[str, Any], claims: dict[str, dict[str, Any]]) -> None:
        self.training, self.claims = training, claims
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def get_training(self, namespace: str, name: str) -> dict[str, Any]:
        return self.training

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.claims[name]

    def pods_in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return []

    def volumes(self) -> list[dict[str, Any]]:
        return []

    def apply_status(
        self, namespace: str, name: str, uid: str, status: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        assert uid == self.training["metadata"]["uid"]
        self.statuses.append(status)
        return self.training

    def emit(
        self, namespace: str, name: str, uid: str, type_: str, reason: str, message: str, action: str
    ) -> None:
        self.events.append((type_, str(reason)))

    def refusal(self) -> tuple[str, str] | None:
        for status in self.statuses:
            for condition in status.get("conditions") or []:
                if condition["status"] == "False":
                    return condition["reason"], condition["message"]
        return None


class Log:
    def __init__(self, entries: list[Entry]) -> None:
        self._entries = entries

    def entries(self) -> list[Entry]:
        return list(self._entries)


class SealReached(Exception):
    """The agent measured everything and went on to seal (with the TPM these tests do not have)."""


class Recorded:
    """Stands in for RunRecorder (the TPM side): keeps what the agent would log."""

    def __init__(self) -> None:
        self.inputs: dict[str, Manifest] = {}
        self.outputs: dict[str, Manifest] = {}
        self.began = False
        self.sealed = False

    def begin(self, **_fields: Any) -> None:
        self.began = True

    def input(self, name: str, manifest: Manifest, *, parent: object = None) -> None:
        self.inputs[name] = manifest

    def image(self, ref: str, digest: str) -> None:
        pass

    def output(self, name: str, manifest: Manifest, **_fields: Any) -> None:
        self.outputs[name] = manifest

    def seal(self, **_fields: Any) -> None:
        self.sealed = True
        raise SealReached  # the agent counts it as a failed try and backs off (sealing.Sealer)


class RecordingAgent(NodeAgent):
    recorded: Recorded

    def _recorder(self, ctx: PodContext, entries: list[Entry]) -> RunRecorder:
        return cast(RunRecorder, self.recorded)


class Node:
    """A node's kubelet directory with one training pod's volumes, and the agent of the node."""

    def __init__(
        self, root: Path, spec_: dict[str, Any], limits: MeasureLimits, capacity: dict[str, str]
    ) -> None:
        self.root = root / "kubelet"
        self.spec = spec_
        self.volumes = pod_volumes_dir(self.root, POD_UID)
        self.control = empty_dir_path(self.root, POD_UID, CONTROL_VOLUME)
        self.control.mkdir(parents=True)
        claims = {}
        for claim, mode in (
            ("data-pvc", "ReadOnlyMany"),
            ("more-pvc", "ReadOnlyMany"),
            ("out-pvc", "ReadWriteOncePod"),
        ):
            (self.volumes / "kubernetes.io~local-volume" / f"pv-{claim}").mkdir(parents=True)
            claims[claim] = {
                "metadata": {"name": claim, "namespace": "ml"},
                "spec": {"accessModes": [mode], "volumeName": f"pv-{claim}"},
                "status": {
                    "phase": "Bound",
                    **({"capacity": {"storage": capacity[claim]}} if claim in capacity else {}),
                },
            }
        self.training = {
            "metadata": {"name": "run", "namespace": "ml", "uid": "u1", "generation": 1},
            "spec": spec_,
            "status": {"attempt": 1, "podUID": POD_UID, "node": "node-1", "phase": "Measuring"},
        }
        self.cluster = Cluster(self.training, claims)
        self.limits = limits
        self.entries: list[Entry] = []
        self.network = NetworkLedger(None)  # no NetworkPolicy in the namespace
        self.network.listed(NETWORK_POLICIES, [], "1")

    def volume(self, claim: str) -> Path:
        return self.volumes / "kubernetes.io~local-volume" / f"pv-{claim}"

    @property
    def output(self) -> Path:
        if "emptyDir" in self.spec["output"]:
            return empty_dir_path(self.root, POD_UID, "output")
        return self.volume("out-pvc")

    def agent(self) -> RecordingAgent:
        config = AgentConfig(
            node="node-1", kubelet_root=self.root, assurance="vtpm", pod=SETTINGS, limits=self.limits
        )
        made = RecordingAgent(
            config,
            cast(Any, self.cluster),
            None,
            cast(Any, Log(self.entries)),
            cast(Any, None),
            cast(Any, None),
            self.network,
        )
        made.recorded = Recorded()
        return made

    def pod(self, *, at: str) -> dict[str, Any]:
        """The operator's pod of attempt 1, as the kubelet reports it at the gate or at the seal."""
        pod = copy.deepcopy(
            training_pod(
                name="run",
                namespace="ml",
                uid="u1",
                spec=TrainingSpec.model_validate(self.spec),
                attempt=1,
                settings=SETTINGS,
            )
        )
        pod["metadata"]["uid"] = POD_UID
        pod["spec"]["nodeName"] = "node-1"
        if at == "gate":
            pod["status"] = {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": CONTAINER_GATE, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
                ],
            }
        else:
            done = {"terminated": {"exitCode": 0}}
            pod["status"] = {
                "phase": "Running",
                "initContainerStatuses": [
                    {"name": CONTAINER_GATE, "state": done},
                    {"name": CONTAINER_TRAIN, "state": done, "imageID": IMAGE},
                ],
                "containerStatuses": [
                    {"name": CONTAINER_SEAL, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
                ],
            }
        return pod

    def gate_measured(self) -> None:
        """The gate measured the inputs and opened (as a seal finds it)."""
        self.entries.append(Entry(0, b"", RUN, POD_UID, {"salt": "s"}))
        for seq, (name, claim) in enumerate((("data", "data-pvc"), ("more", "more-pvc")), 1):
            manifest = hash_tree(self.volume(claim), exclude=INPUT_EXCLUDED)
            content = {"name": name, "root": manifest.root, "bytes": manifest.total_bytes, "salt": "s"}
            self.entries.append(Entry(seq, b"", INPUT, POD_UID, content))
        (self.control / MARKER_GATE).write_text("")


def make_node(
    tmp_path: Path,
    *,
    limits: MeasureLimits | None = None,
    capacity: dict[str, str] | None = None,
    **output: Any,
) -> Node:
    node = Node(tmp_path, spec(**output), limits or MeasureLimits(), capacity or {})
    (node.volume("data-pvc") / "train.csv").write_bytes(b"x,y\n1,2\n")
    (node.volume("more-pvc") / "labels.txt").write_bytes(b"cat\ndog\n")
    return node


def sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)
    return path


def too_large(volume: str, limit: str) -> float:
    return (
        REGISTRY.get_sample_value("aicert_agent_volumes_too_large_total", {"volume": volume, "limit": limit})
        or 0.0
    )


def input_bytes(node: Node) -> int:
    return sum(f.stat().st_size for c in ("data-pvc", "more-pvc") for f in node.volume(c).iterdir())


# --- the attack -------------------------------------------------------------------------------------


def test_a_sparse_8_tib_output_is_refused_as_output_too_large_without_reading_it(
    tmp_path: Path, reads: Reads
) -> None:
    node = make_node(tmp_path)
    node.gate_measured()
    sparse(node.output / "weights.bin", 8 * TiB)
    before = too_large("output", "filesystem") + too_large("output", "agent")
    reads.reset()
    node.agent().reconcile_pod(node.pod(at="seal"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "OutputTooLarge"
    assert "8796093022208 bytes (8.0 TiB)" in refusal[1] and "sparse" in refusal[1]
    assert (node.control / MARKER_REFUSED).read_text().startswith("OutputTooLarge: ")
    assert ("Warning", "OutputTooLarge") in node.cluster.events
    assert reads.bytes == input_bytes(node)  # the inputs' re-hash; not one byte of the output
    assert too_large("output", "filesystem") + too_large("output", "agent") == before + 1


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ({"limits": MeasureLimits(output_bytes=1 * MiB)}, "AICERT_MAX_OUTPUT_BYTES (the agent's setting)"),
        ({"maxBytes": 1 * MiB}, "spec.output.maxBytes"),
        ({"capacity": {"out-pvc": "1Mi"}}, "the capacity of claim out-pvc (status.capacity.storage)"),
    ],
    ids=["agent", "spec", "claim-capacity"],
)
def test_the_smallest_limit_refuses_and_is_named(
    tmp_path: Path, reads: Reads, setting: dict[str, Any], names: str
) -> None:
    node = make_node(tmp_path, **setting)
    node.gate_measured()
    (node.output / "weights.bin").write_bytes(os.urandom(MiB + 1))
    reads.reset()
    node.agent().reconcile_pod(node.pod(at="seal"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "OutputTooLarge"
    assert f"more than its budget of {MiB} bytes (1.0 MiB) set by {names};" in refusal[1]
    assert reads.bytes == input_bytes(node)


def test_an_empty_dir_output_may_not_hold_more_than_its_size_limit(tmp_path: Path, reads: Reads) -> None:
    node = make_node(tmp_path)
    node.spec["output"] = {"emptyDir": {"sizeLimit": "1Mi"}, "mountPath": "/out"}
    node.gate_measured()
    node.output.mkdir(parents=True)
    sparse(node.output / "weights.bin", 2 * MiB)
    reads.reset()
    node.agent().reconcile_pod(node.pod(at="seal"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "OutputTooLarge"
    assert "set by spec.output.emptyDir.sizeLimit;" in refusal[1]


def test_an_output_within_every_limit_is_measured(tmp_path: Path) -> None:
    node = make_node(tmp_path, maxBytes=1 * MiB, capacity={"out-pvc": "1Mi"})
    node.gate_measured()
    (node.output / "weights.bin").write_bytes(os.urandom(MiB))  # exactly the budget
    agent = node.agent()
    agent.reconcile_pod(node.pod(at="seal"))
    assert agent.recorded.sealed
    assert node.cluster.refusal() is None
    assert agent.recorded.outputs["model"].total_bytes == MiB


def test_too_many_files_in_the_output_are_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path, limits=MeasureLimits(files=10))
    node.gate_measured()
    for i in range(11):
        (node.output / f"f{i}").write_bytes(b"")
    node.agent().reconcile_pod(node.pod(at="seal"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "OutputTooLarge"
    assert "more than 10 files, directories and links" in refusal[1] and "AICERT_MAX_FILES" in refusal[1]


# --- inputs: at the gate and again at the seal ----------------------------------------------------


def test_a_sparse_input_is_refused_at_the_gate_as_input_too_large_without_reading_it(
    tmp_path: Path, reads: Reads
) -> None:
    node = make_node(tmp_path)
    sparse(node.volume("data-pvc") / "huge.bin", 8 * TiB)
    agent = node.agent()
    reads.reset()
    agent.reconcile_pod(node.pod(at="gate"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "InputTooLarge"
    assert refusal[1].startswith("input data holds 8796093022216 bytes")
    assert not (node.control / MARKER_GATE).exists() and (node.control / MARKER_REFUSED).exists()
    assert agent.recorded.inputs == {} and reads.bytes == 0


def test_the_inputs_of_a_run_share_one_budget(tmp_path: Path) -> None:
    node = make_node(tmp_path, limits=MeasureLimits(input_bytes=1 * MiB))
    (node.volume("data-pvc") / "train.csv").write_bytes(os.urandom(600 * KiB))
    (node.volume("more-pvc") / "labels.txt").write_bytes(os.urandom(600 * KiB))
    agent = node.agent()
    agent.reconcile_pod(node.pod(at="gate"))
    refusal = node.cluster.refusal()
    assert list(agent.recorded.inputs) == ["data"]  # each fits alone; together they do not
    assert refusal is not None and refusal[0] == "InputTooLarge"
    assert refusal[1].startswith("input more holds 614400 bytes")
    assert (
        f"for all of a run's inputs together: {600 * KiB} bytes of it went to the inputs measured before"
        in refusal[1]
    )


def test_an_input_grown_sparse_during_training_is_refused_at_the_seal_unread(
    tmp_path: Path, reads: Reads
) -> None:
    node = make_node(tmp_path)
    node.gate_measured()
    sparse(node.volume("more-pvc") / "labels.txt", 8 * TiB)
    reads.reset()
    node.agent().reconcile_pod(node.pod(at="seal"))
    refusal = node.cluster.refusal()
    assert refusal is not None and refusal[0] == "InputTooLarge"
    assert refusal[1].startswith("input more again holds")
    assert reads.bytes == (node.volume("data-pvc") / "train.csv").stat().st_size


# --- cancellation -----------------------------------------------------------------------------------


def test_a_cancelled_measurement_refuses_nothing_and_leaves_the_pod_to_its_end(tmp_path: Path) -> None:
    """The pod is going away: its hashing stops, and neither a refusal nor a certificate is written."""
    node = make_node(tmp_path)
    node.gate_measured()
    sparse(node.output / "weights.bin", 4 * GiB)
    cancel = threading.Event()
    cancel.set()
    before = REGISTRY.get_sample_value("aicert_agent_measurements_cancelled_total") or 0.0
    agent = node.agent()
    agent.reconcile_pod(node.pod(at="seal"), cancel)
    assert node.cluster.statuses == [] and node.cluster.events == []
    assert not (node.control / MARKER_REFUSED).exists() and agent.recorded.outputs == {}
    assert REGISTRY.get_sample_value("aicert_agent_measurements_cancelled_total") == before + 1


def test_gates_and_seals_are_worked_on_in_lanes_of_their_own(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert work_lane(pod_facts(node.pod(at="gate"))) == GATE_LANE
    assert work_lane(pod_facts(node.pod(at="seal"))) == SEAL_LANE


# --- the settings ------------------------------------------------------------------------------------


def test_limits_come_from_the_environment_as_quantities() -> None:
    assert MeasureLimits.from_env({}) == MeasureLimits(
        DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_FILES
    )
    assert DEFAULT_MAX_OUTPUT_BYTES == DEFAULT_MAX_INPUT_BYTES == 1 * TiB
    limits = MeasureLimits.from_env(
        {"AICERT_MAX_OUTPUT_BYTES": "2Ti", "AICERT_MAX_INPUT_BYTES": "500G", "AICERT_MAX_FILES": "20000"}
    )
    assert limits == MeasureLimits(2 * TiB, 500 * 10**9, 20000)


@pytest.mark.parametrize("bad", ["0", "-1", "lots", "1.5", "100m"])
def test_an_unusable_limit_is_refused_naming_its_variable(bad: str) -> None:
    with pytest.raises(LimitsError, match=r"^AICERT_MAX_INPUT_BYTES: "):
        MeasureLimits.from_env({"AICERT_MAX_INPUT_BYTES": bad})


def test_the_budget_is_the_smallest_limit(tmp_path: Path) -> None:
    fs = filesystem_size(tmp_path)
    assert fs is not None and fs > 0
    claim = {"metadata": {"name": "out"}, "status": {"capacity": {"storage": "3Gi"}}}
    parsed = TrainingSpec.model_validate(spec(maxBytes=2 * GiB))
    budget = output_budget(MeasureLimits(output_bytes=5 * GiB), parsed, tmp_path, claim)
    assert [(limit.bytes, limit.kind) for limit in budget.limits] == [
        (5 * GiB, "agent"),
        (2 * GiB, "spec"),
        (3 * GiB, "capacity"),
        (fs, "filesystem"),
    ]
    assert budget.binding.kind == "spec" or fs < 2 * GiB
    assert budget.reason is Reason.OUTPUT_TOO_LARGE and Reason.OUTPUT_TOO_LARGE in REFUSALS
    spent = input_budget(MeasureLimits(input_bytes=5 * GiB), tmp_path, {"status": {}}, spent=4 * GiB)
    assert spent.binding.bytes == 1 * GiB or fs < 1 * GiB
    assert spent.reason is Reason.INPUT_TOO_LARGE and Reason.INPUT_TOO_LARGE in REFUSALS


@pytest.mark.parametrize("bad", [0, -5, MAX_EXACT_INTEGER + 1, "1Gi"])
def test_spec_output_max_bytes_is_a_positive_exact_integer(bad: Any) -> None:
    with pytest.raises(ValidationError, match="maxBytes"):
        TrainingSpec.model_validate(spec(maxBytes=bad))
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field = schema["properties"]["spec"]["properties"]["output"]["properties"]["maxBytes"]
    assert (field["type"], field["minimum"], field["maximum"]) == ("integer", 1, MAX_EXACT_INTEGER)


def test_a_file_grown_after_the_walk_is_named_in_the_refusal(tmp_path: Path) -> None:
    from aicert.digest import BudgetExceeded
    from aicert_agent.measuring import _refusal

    budget = output_budget(
        MeasureLimits(output_bytes=1 * MiB), TrainingSpec.model_validate(spec()), tmp_path, None
    )
    grown = BudgetExceeded(str(tmp_path / "weights.bin"), "bytes", 8 * TiB, 1 * MiB, "is 8 TiB now")
    refusal = _refusal("the output", tmp_path, budget, grown)
    assert refusal.reason is Reason.OUTPUT_TOO_LARGE
    assert refusal.message.endswith(
        f"; {tmp_path / 'weights.bin'} grew while it was measured, and hashing stopped there"
    )
