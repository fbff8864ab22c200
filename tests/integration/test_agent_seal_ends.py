"""How a run ends on a node: certified once, or refused with a documented reason; never a loop.

The node agent as it runs on a node (`NodeAgent.reconcile_pod`), against the real kube-apiserver of
localcluster/ (the CRD, its schema, server-side apply, Events), a provisioned swtpm, a real
measurement log and real files in a kubelet-layout directory. Only the pod is not in the API: it is
the operator's pod (`training_pod`) with the container states kubelet would report, so each test
decides when the gate runs and when the seal does. The clock of the seal's back-off is the test's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.integration.conftest import ProvisionedTpm

from aicert.bundle import rebuild_bundle
from aicert.digest import (
    BUNDLE_FILE,
    CERTIFICATE_FILE,
    MANIFEST_FILE,
    MODEL_SIGNATURE_FILE,
    OUTPUT_EXCLUDED,
    hash_tree,
)
from aicert_agent.cri_client import CriClient
from aicert_agent.kube import AgentKube
from aicert_agent.local_run import ak_identity
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.network_ledger import NETWORK_POLICIES, NetworkLedger
from aicert_agent.node_agent import AgentConfig, NodeAgent
from aicert_agent.sealing import SealFailures
from aicert_agent.tpm.client import Quote, Tpm
from aicert_agent.volumes import empty_dir_path
from aicert_contract.network import network_policy
from aicert_contract.pod import PodSettings, training_pod
from aicert_contract.status import (
    MESSAGE_MAX_BYTES,
    REPORTER_OPERATOR,
    ConditionType,
    Reason,
    find_condition,
    set_condition,
    status_apply_body,
    status_message,
)
from aicert_contract.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    CONTROL_VOLUME,
    FIELD_MANAGER_OPERATOR,
    GROUP,
    MARKER_GATE,
    MARKER_REFUSED,
    MARKER_SEALED,
    PLURAL,
    VERSION,
    TrainingSpec,
)
from aicert_kube import TrainingClient
from aicert_localcluster import LocalCluster

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
NAMESPACE = "ml"
NODE = "gpu-1"
DIGEST = "sha256:" + "a" * 64
SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)
SPEC: dict[str, Any] = {
    "image": f"registry.example/train@{DIGEST}",
    "command": ["python", "train.py"],
    "output": {"emptyDir": {}, "mountPath": "/out"},
    "minAssurance": "dev",
}
ATTEMPTS = 3
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
RUNNING = {"running": {"startedAt": "2026-12-01T10:00:00Z"}}


# --- the cluster, the TPM, the node ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("seal-ends")) as running:
        running.kubectl("apply", "-f", str(CRD))
        running.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        running.kubectl("create", "namespace", NAMESPACE)
        yield running


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))  # type: ignore[no-untyped-call]


class QuotingTpm:
    """The TPM, counting its seal quotes (over the boot PCRs and PCR 23; the checkpoint quote taken
    after each extend covers PCR 23 alone); `during_quote` runs while the agent waits for one."""

    def __init__(self, tpm: Tpm) -> None:
        self.tpm = tpm
        self.quotes = 0
        self.during_quote: Callable[[], None] | None = None

    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> Quote:
        if len(set(pcrs)) == 1:  # a checkpoint
            return self.tpm.quote(pcrs, extra_data)
        self.quotes += 1
        if self.during_quote is not None:
            self.during_quote()
        return self.tpm.quote(pcrs, extra_data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tpm, name)


@pytest.fixture
def tpm(provisioned_tpm: ProvisionedTpm) -> Iterator[QuotingTpm]:
    with provisioned_tpm.open() as opened:
        yield QuotingTpm(opened)


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    """One node's agent and kubelet directory, and one training's pod on it."""

    api: client.ApiClient
    tpm: QuotingTpm
    root: Path
    training: dict[str, Any]
    pod_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    clock: Clock = field(default_factory=Clock)
    tsa_url: str | None = None
    image_id: str = f"registry.example/train@{DIGEST}"  # the train container's, as kubelet reports it
    runtime: CriClient | None = None  # --cri-socket
    agent: NodeAgent = field(init=False)

    def __post_init__(self) -> None:
        self.agent = self.start_agent()

    def start_agent(self) -> NodeAgent:
        """A (re)started agent: the same log, TPM and kubelet directory, nothing kept in memory."""
        agent = NodeAgent(
            AgentConfig(
                node=NODE,
                kubelet_root=self.root / "kubelet",
                assurance="dev",
                pod=SETTINGS,
                tsa_url=self.tsa_url,
                seal_attempts=ATTEMPTS,
            ),
            AgentKube(self.api, NODE),
            self.tpm,
            MeasurementLog(self.root / "state" / "log.jsonl", 23),
            ak_identity(self.tpm.tpm, ()),
            None,  # type: ignore[arg-type]  # the trust store: only `start` checks the AK with it
            self.network(),
            runtime=self.runtime,
        )
        agent.log.recover(self.tpm)  # what `start` does first
        agent.sealer.clock = self.clock
        return agent

    def network(self) -> NetworkLedger:
        """The agent's network ledger, from its state file, with the policies listed."""
        ledger = NetworkLedger(self.root / "state" / "network.json")
        self.list_policies(ledger)
        return ledger

    def list_policies(self, ledger: NetworkLedger) -> None:
        """The NetworkPolicies as the API server lists them now (what policy_watch keeps current)."""
        listed = client.NetworkingV1Api(self.api).list_network_policy_for_all_namespaces(
            _preload_content=False
        )
        body = json.loads(listed.data)
        ledger.listed(NETWORK_POLICIES, body["items"], body["metadata"]["resourceVersion"])

    @property
    def name(self) -> str:
        return str(self.training["metadata"]["name"])

    @property
    def output(self) -> Path:
        return empty_dir_path(self.root / "kubelet", self.pod_uid, "output")

    @property
    def control(self) -> Path:
        return empty_dir_path(self.root / "kubelet", self.pod_uid, CONTROL_VOLUME)

    def pod(self, *, sealing: bool) -> dict[str, Any]:
        meta = self.training["metadata"]
        made = training_pod(
            name=meta["name"],
            namespace=NAMESPACE,
            uid=meta["uid"],
            spec=TrainingSpec.model_validate(SPEC),
            attempt=1,
            settings=SETTINGS,
        )
        made = json.loads(json.dumps(made))
        made["metadata"]["uid"] = self.pod_uid
        made["spec"]["nodeName"] = NODE
        done = {"terminated": {"exitCode": 0}}
        if sealing:
            made["status"] = {
                "phase": "Running",
                "initContainerStatuses": [
                    {"name": CONTAINER_GATE, "state": done},
                    {
                        "name": CONTAINER_TRAIN,
                        "state": done,
                        "imageID": self.image_id,
                        "containerID": f"containerd://{'c' * 64}",
                    },
                ],
                "containerStatuses": [{"name": CONTAINER_SEAL, "state": RUNNING}],
            }
        else:
            made["status"] = {
                "phase": "Pending",
                "initContainerStatuses": [{"name": CONTAINER_GATE, "state": RUNNING}],
            }
        return dict(made)

    def gate(self) -> None:
        """kubelet set up the volumes, the gate runs: the agent measures and opens it."""
        self.output.mkdir(parents=True)
        self.control.mkdir(parents=True)
        self.list_policies(self.agent.network)  # the operator's policy came after the agent started
        self.agent.reconcile_pod(self.pod(sealing=False))
        assert (self.control / MARKER_GATE).exists()

    def seal(self) -> None:
        """One pass of the agent's queue over the pod while its seal container runs."""
        pod = self.pod(sealing=True)
        if self.agent.wants_work(pod):
            self.agent.reconcile_pod(pod)

    def status(self) -> dict[str, Any]:
        return dict(read_training(self.api, self.name).get("status") or {})

    def certified(self) -> dict[str, Any]:
        return find_condition(self.status().get("conditions"), "Certified") or {}  # type: ignore[arg-type]


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def read_training(api: client.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name))


def create_training(api: client.ApiClient, name: str) -> dict[str, Any]:
    body: Any = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CertifiedTraining", "metadata": {"name": name}}
    body["spec"] = SPEC
    return dict(custom(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body))


def operator(api: client.ApiClient) -> TrainingClient:
    """The operator's identity as far as status goes (its field manager)."""
    return TrainingClient(
        api, field_manager=FIELD_MANAGER_OPERATOR, controller=REPORTER_OPERATOR, instance="test"
    )


def name_pod(api: client.ApiClient, training: dict[str, Any], pod_uid: str) -> dict[str, Any]:
    """What the operator writes once it created the attempt's pod: the agent measures only that pod."""
    meta = training["metadata"]
    written = operator(api).apply_status(
        NAMESPACE,
        meta["name"],
        meta["uid"],
        {"phase": "Measuring", "attempt": 1, "podName": f"{meta['name']}-1", "podUID": pod_uid, "node": NODE},
    )
    assert written is not None
    policy: Any = network_policy(
        name=meta["name"], namespace=NAMESPACE, uid=meta["uid"], attempt=1, egress="none"
    )
    client.NetworkingV1Api(api).create_namespaced_network_policy(NAMESPACE, policy)
    return dict(written)


@pytest.fixture
def node(api: client.ApiClient, tpm: QuotingTpm, tmp_path: Path) -> Node:
    name = f"run-{uuid.uuid4().hex[:8]}"
    training = create_training(api, name)
    made = Node(api, tpm, tmp_path, training)
    made.training = name_pod(api, training, made.pod_uid)
    return made


def weights(node: Node) -> None:
    (node.output / "weights.bin").write_bytes(b"trained")


# --- a run that ends well ----------------------------------------------------------------------------


def test_a_run_is_certified_with_one_quote(node: Node) -> None:
    node.gate()
    weights(node)
    node.seal()
    assert node.certified()["reason"] == "Certified"
    assert node.status()["modelDigest"] == f"sha256:{hash_tree(node.output, exclude=OUTPUT_EXCLUDED).root}"
    assert (node.output / MANIFEST_FILE).exists()
    assert (node.control / MARKER_SEALED).exists() and node.tpm.quotes == 1
    assert json.loads((node.output / CERTIFICATE_FILE).read_text())["statement"]
    # the Sigstore bundle beside it, and in the status the signature it is rebuilt from (the CRD's
    # schema took it), byte for byte
    status = node.status()
    rebuilt = rebuild_bundle(status["certificate"], status["envelopeSignature"])
    assert (node.output / BUNDLE_FILE).read_bytes() == json.dumps(
        rebuilt, separators=(",", ":")
    ).encode() + b"\n"
    assert json.loads((node.output / MODEL_SIGNATURE_FILE).read_text())["dsseEnvelope"]  # model.sig
    node.seal()
    assert node.tpm.quotes == 1  # sealed: nothing more to do


# --- A: a name the training prepared -------------------------------------------------------------------


def test_a_directory_named_like_the_certificates_temporary_file_does_not_stall_the_seal(node: Node) -> None:
    """The training creates `.aicert-certificate.json.tmp/` in its output: the agent used to take a
    new quote at every pass, for ever, and the run stayed Sealing until its deadline."""
    node.gate()
    weights(node)
    (node.output / ".aicert-certificate.json.tmp").mkdir()
    (node.output / ".manifest.json.tmp").mkdir()
    node.seal()
    assert node.certified()["reason"] == "Certified"
    assert (node.control / MARKER_SEALED).exists() and node.tpm.quotes == 1


# --- B: bounded tries ----------------------------------------------------------------------------------


def closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"  # nothing listens: connection refused


def tries(node: Node) -> int:
    """How many seal tries failed, as the agent counts them in the pod's control volume."""
    failures = SealFailures.read(node.control)
    return 0 if failures is None else failures.count


def test_a_tsa_that_never_answers_ends_the_run_as_seal_failed_after_bounded_tries(node: Node) -> None:
    node.tsa_url = closed_port_url()
    node.agent = node.start_agent()
    node.gate()
    weights(node)
    node.seal()
    assert tries(node) == 1 and not (node.control / MARKER_REFUSED).exists()
    node.seal()  # backing off: no new try before the back-off ends
    assert tries(node) == 1
    for _ in range(10):  # each pass after the back-off tries once more, until the tries are used
        node.clock.now += 3600
        node.seal()
    assert node.tpm.quotes == 1  # the seal's quote is kept in the log: a try does not quote again
    certified = node.certified()
    assert (certified["status"], certified["reason"]) == ("False", "SealFailed")
    assert f"sealing failed {ATTEMPTS} times" in certified["message"] and "TSA" in certified["message"]
    assert (node.control / MARKER_REFUSED).read_text().startswith("SealFailed: ")


def test_the_count_of_failed_seals_survives_an_agent_restart(node: Node) -> None:
    node.tsa_url = closed_port_url()
    node.agent = node.start_agent()
    node.gate()
    weights(node)
    for _ in range(ATTEMPTS - 1):
        node.seal()
        node.clock.now += 3600
        node.agent = node.start_agent()  # a restart forgets everything it kept in memory
    assert tries(node) == ATTEMPTS - 1 and node.certified() == {}
    node.seal()
    assert node.certified()["reason"] == "SealFailed"
    assert f"sealing failed {ATTEMPTS} times" in node.certified()["message"] and node.tpm.quotes == 1


def test_a_certificate_that_cannot_be_written_ends_the_run_as_seal_failed(node: Node) -> None:
    """Any error after the quote, not only the TSA: here the certificate's own name is a directory
    (the output was measured before it appeared, so the reserved-name check does not see it)."""
    node.tsa_url = closed_port_url()
    node.agent = node.start_agent()
    node.gate()
    weights(node)
    node.seal()  # measured and quoted; the TSA fails
    (node.output / CERTIFICATE_FILE).mkdir()
    node.tsa_url = None
    node.agent = node.start_agent()
    for _ in range(10):
        node.clock.now += 3600
        node.seal()
    assert node.certified()["reason"] == "SealFailed" and node.tpm.quotes == 1
    assert f"sealing failed {ATTEMPTS} times" in node.certified()["message"]
    assert "Is a directory" in node.certified()["message"]


# --- the image: held by digest, and the runtime's word -----------------------------------------------


def test_a_train_image_held_by_tag_only_is_refused_as_not_pinned(node: Node) -> None:
    """kubelet reports the bare config digest of an image the node holds by tag only: even with
    the pinned digest's hex, it names no manifest."""
    node.image_id = DIGEST
    node.gate()
    weights(node)
    node.seal()
    certified = node.certified()
    assert (certified["status"], certified["reason"]) == ("False", "ImageNotPinned")
    assert "by tag only" in certified["message"] and node.tpm.quotes == 0


def test_the_pinned_digest_from_another_repository_is_refused(node: Node) -> None:
    node.image_id = f"evil.example/train@{DIGEST}"
    node.gate()
    weights(node)
    node.seal()
    assert node.certified()["reason"] == "ImageMismatch" and node.tpm.quotes == 0


def test_a_runtime_that_does_not_answer_ends_the_run_as_seal_failed(node: Node) -> None:
    """--cri-socket names no runtime: the image cannot be cross-checked, so the seal fails, is tried
    again after its back-off, and the run is refused; it is never certified on the status alone."""
    node.runtime = CriClient(node.root / "no-runtime.sock", timeout=2)
    node.agent = node.start_agent()
    node.gate()
    weights(node)
    for _ in range(10):
        node.seal()
        node.clock.now += 3600
    certified = node.certified()
    assert (certified["status"], certified["reason"]) == ("False", "SealFailed")
    assert "/runtime.v1.RuntimeService/ContainerStatus" in certified["message"]
    assert "UNAVAILABLE" in certified["message"] and node.tpm.quotes == 0


# --- C: a file name that is not UTF-8 -------------------------------------------------------------------


def test_an_output_file_named_with_invalid_utf8_is_refused_and_the_refusal_lands(node: Node) -> None:
    """The refusal used to carry the name's surrogates: the API server refused the status write,
    the marker could not be written, and the agent re-hashed everything twice a second."""
    node.gate()
    weights(node)
    with open(os.path.join(os.fsencode(node.output), b"w\xffe\xfe.bin"), "wb") as f:
        f.write(b"x")
    node.seal()
    certified = node.certified()
    assert (certified["status"], certified["reason"]) == ("False", "MeasurementFailed")
    assert "w\\xffe\\xfe.bin: file name is not valid UTF-8" in certified["message"]
    assert "w\\xffe\\xfe.bin" in (node.control / MARKER_REFUSED).read_text()
    assert not node.agent.wants_work(node.pod(sealing=True))  # refused: nothing more to do
    events = client.EventsV1Api(node.api).list_namespaced_event(NAMESPACE).items
    assert any(e.reason == "MeasurementFailed" and e.regarding.name == node.name for e in events)


def test_a_refusal_message_of_any_length_lands(node: Node) -> None:
    node.gate()
    weights(node)
    deep = os.fsencode(node.output)
    for _ in range(14):  # 14 names of 240 bytes, then one of 250 bytes that are not UTF-8
        deep = os.path.join(deep, ("é" * 120).encode())
        os.mkdir(deep)
    os.mkdir(os.path.join(deep, b"\xff" * 250))  # shown as 1000 characters of \xff escapes
    node.seal()
    certified = node.certified()
    assert certified["reason"] == "MeasurementFailed"
    assert len(certified["message"].encode()) <= MESSAGE_MAX_BYTES and certified["message"].endswith("…")
    assert node.status().get("certificate") is None and (node.control / MARKER_REFUSED).exists()


# --- E: status by uid -------------------------------------------------------------------------------------


def test_a_training_replaced_while_its_run_is_sealed_never_gets_the_old_runs_status(node: Node) -> None:
    """Deleted and created again under the same name while the agent quotes: the new training is
    another run; the certificate of the old one must not land in its status."""
    node.gate()
    weights(node)
    replaced: dict[str, Any] = {}

    def replace_training() -> None:
        node.tpm.during_quote = None
        custom(node.api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, node.name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                replaced.update(create_training(node.api, node.name))
                return
            except ApiException as exc:
                if exc.status != 409:  # still being deleted
                    raise
                time.sleep(0.2)
        raise AssertionError("the training could not be created again")

    node.tpm.during_quote = replace_training
    node.seal()
    assert node.tpm.quotes == 1
    after = read_training(node.api, node.name)
    assert after["metadata"]["uid"] == replaced["metadata"]["uid"] != node.training["metadata"]["uid"]
    assert after.get("status") is None  # nothing of the old run
    assert not (node.control / MARKER_SEALED).exists()
    node.seal()  # the next pass: the pod is not the new training's; it is stopped, no new quote
    assert node.tpm.quotes == 1 and (node.control / MARKER_REFUSED).read_text().startswith("NotOwned: ")
    assert read_training(node.api, node.name).get("status") is None


def test_no_status_write_reaches_a_training_created_again_under_the_same_name(api: client.ApiClient) -> None:
    name = f"uid-{uuid.uuid4().hex[:8]}"
    old = create_training(api, name)
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    new = create_training(api, name)
    old_uid, old_version = old["metadata"]["uid"], old["metadata"]["resourceVersion"]
    # the agent: the uid is checked on a fresh read, the write is conditional on that read
    assert AgentKube(api, NODE).apply_status(NAMESPACE, name, old_uid, {"assurance": "dev"}) is None
    # ... also when it first tries the version it read earlier in its pass (the old training's)
    agent = AgentKube(api, NODE)
    assert (
        agent.apply_status(NAMESPACE, name, old_uid, {"assurance": "dev"}, known_version=old_version) is None
    )
    # the operator: its write is conditional on the version it decided from, the old training's
    assert (
        operator(api).apply_status(NAMESPACE, name, old_uid, {"phase": "Failed"}, read_version=old_version)
        is None
    )
    with pytest.raises(ApiException) as refused:  # what the precondition does: 409 Conflict
        custom(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            name,
            status_apply_body(name, {"assurance": "dev"}, resource_version=old_version),
            field_manager="test",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    assert refused.value.status == 409
    assert read_training(api, name).get("status") is None  # untouched
    new_uid = new["metadata"]["uid"]
    written = AgentKube(api, NODE).apply_status(NAMESPACE, name, new_uid, {"assurance": "dev"})
    assert written is not None and written["status"] == {"assurance": "dev"}
    # the version just written: the next write lands on it without reading the training first
    reads: list[str] = []
    agent.get_training = lambda *args: reads.append("read") or None  # type: ignore[method-assign]
    again = agent.apply_status(
        NAMESPACE, name, new_uid, {"assurance": "vtpm"}, known_version=written["metadata"]["resourceVersion"]
    )
    assert again is not None and again["status"] == {"assurance": "vtpm"} and reads == []


def test_a_message_with_any_character_lands(api: client.ApiClient) -> None:
    """What the API server's YAML decoder takes: not only Latin text (a file name can hold anything)."""
    name = f"chars-{uuid.uuid4().hex[:8]}"
    training = create_training(api, name)
    hostile = "é 模型 😀 \x00\x07\x1b\x7f\u2028\ufeff \udcff \ud800 end"
    condition = set_condition(
        None, ConditionType.CERTIFIED, "False", Reason.MEASUREMENT_FAILED, hostile, generation=1, now=NOW
    )
    written = AgentKube(api, NODE).apply_status(
        NAMESPACE, name, training["metadata"]["uid"], {"conditions": [condition]}
    )
    assert written is not None
    landed = find_condition(read_training(api, name)["status"]["conditions"], ConditionType.CERTIFIED)
    assert landed is not None and landed["message"] == status_message(hostile)
    assert landed["message"].startswith("é 模型 \\U0001f600 ") and landed["message"].endswith(
        " \\xff \\ud800 end"
    )
