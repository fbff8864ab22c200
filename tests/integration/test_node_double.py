"""The node double (localcluster/aicert_localcluster/kubelet/) against a real control plane: it registers
Nodes with its nodes' own credentials, runs the pods bound to them in bubblewrap sandboxes in kubelet
order, keeps volumes in the kubelet layout and reports status like kubelet. No mocks; every wait polls
with a generous deadline and nothing asserts on timing.
"""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aicert.contract.pod import PodSettings, training_pod
from aicert.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    CONTROL_VOLUME,
    MARKER_GATE,
    MARKER_SEALED,
    TrainingSpec,
)
from aicert_agent.markers import write_marker
from aicert_agent.volumes import empty_dir_path, pvc_path
from aicert_localcluster import KubectlError, LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.nodes import (
    DEV_AGENT_IMAGE,
    NodeDouble,
    NodeSpec,
    agent_image_id,
    bind_mount,
    mount_points,
    mounts_under,
    unmount,
)

pytestmark = pytest.mark.integration

DEADLINE = 120.0
T = TypeVar("T")

NODES = [
    NodeSpec("tl-0", "TrustedLaunch", labels={"example.com/pool": "blue"}),
    NodeSpec("cvm-0", "ConfidentialVM", gpus=2),
    NodeSpec("plain-0", None, gpus=0, agentpool="system"),
    NodeSpec("agent-0", "TrustedLaunch"),
]

# One image for every test: `python3 /app/steps.py <step> ...`.
STEPS = b"""
import errno, os, pathlib, signal, socket, sys, time

step, args = sys.argv[1], sys.argv[2:]
print(f"step {step} args {args} cwd {os.getcwd()} host {socket.gethostname()}", flush=True)
if step == "first":
    pathlib.Path("/scratch/order").write_text("first\\n")
elif step == "main":
    order = pathlib.Path("/scratch/order").read_text().split()
    token = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/token").read_text()
    ns = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text()
    print(f"order {order} greeting {os.environ['GREETING']} image-env {os.environ['FROM_IMAGE']}", flush=True)
    print(f"token {len(token) > 100} namespace {ns} node {os.environ['NODE']}", flush=True)
elif step == "fail":
    sys.exit(1)
elif step == "readonly":
    try:
        pathlib.Path("/data/new").write_text("x")
        print("WRITABLE", flush=True)
        sys.exit(2)
    except OSError as exc:
        print(f"read-only {errno.errorcode[exc.errno]} seed {pathlib.Path('/data/seed.txt').read_text()}", flush=True)
    while not pathlib.Path("/data/go").exists():
        time.sleep(0.1)
    print(f"saw go {pathlib.Path('/data/go').read_text()}", flush=True)
elif step == "sleep":
    def stop(signum, frame):
        pathlib.Path("/out/terminated").write_text(f"signal {signum}")
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    print(f"sleeping {args[0]}", flush=True)
    while True:
        time.sleep(0.1)
elif step == "train":
    data = sorted(p.name for p in pathlib.Path("/data").iterdir())
    pathlib.Path("/model/weights.bin").write_text(f"trained on {data}")
    print(f"trained on {data}", flush=True)
"""


def eventually(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll `probe` until it returns something other than None/False; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (KubectlError, json.JSONDecodeError, KeyError, IndexError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}; last error: {last!r}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def image(images: ImageStore) -> str:
    return images.build(
        "registry.local/tests/steps",
        {"steps.py": STEPS},
        entrypoint=["python3", "/app/steps.py"],
        cmd=["main"],
        env={"FROM_IMAGE": "yes"},
    )


@pytest.fixture(scope="module")
def nodes(
    cluster: LocalCluster, images: ImageStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDouble]:
    root = tmp_path_factory.mktemp("kubelet")
    double = NodeDouble(cluster, root, images, NODES, heartbeat_seconds=2.0)
    with double:
        yield double
    assert double.errors == []
    assert mounts_under(root) == [], "the node double left mounts behind"


def kubectl_json(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return result


def namespace(cluster: LocalCluster) -> str:
    name = f"nd-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    eventually(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        f"the default ServiceAccount in {name}",
    )
    return name


def create(cluster: LocalCluster, obj: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(obj))
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def pod_object(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, **spec},
    }


def get_pod(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", "pod", name, "-n", ns)


def wait_phase(cluster: LocalCluster, ns: str, name: str, *phases: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pod = get_pod(cluster, ns, name)
        return pod if pod.get("status", {}).get("phase") in phases else None

    return eventually(probe, f"pod {ns}/{name} to reach {phases}")


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for item in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if item["name"] == name:
            return dict(item)
    raise KeyError(name)


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in pod["status"].get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    raise KeyError(kind)


def wait_gone(cluster: LocalCluster, ns: str, name: str) -> None:
    eventually(
        lambda: "NotFound" in cluster.kubectl("get", "pod", name, "-n", ns, check=False).stderr,
        f"pod {ns}/{name} to disappear",
    )


def pids_running(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline:
                found.append(int(entry))
    return found


def local_volume(cluster: LocalCluster, ns: str, name: str, path: Path, node: str) -> None:
    """A local PV pinned to `node` and a claim the PV controller binds to it (Immediate binding)."""
    objects = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "local-nd"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-nd",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": ns, "name": name},
                "local": {"path": str(path)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-nd",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    manifest = {"apiVersion": "v1", "kind": "List", "items": objects}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    eventually(
        lambda: kubectl_json(cluster, "get", "pvc", name, "-n", ns)["status"].get("phase") == "Bound",
        f"the PV controller to bind claim {name}",
    )


# --- nodes ----------------------------------------------------------------------------------------


def ready_node(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    node = kubectl_json(cluster, "get", "node", name)
    return node if condition(node, "Ready")["status"] == "True" else None


def test_nodes_register_ready_with_gpus_and_aks_labels(cluster: LocalCluster, nodes: NodeDouble) -> None:
    assert nodes.node_names == [n.name for n in NODES]
    for spec in NODES:
        node = eventually(lambda spec=spec: ready_node(cluster, spec.name), f"node {spec.name} to be Ready")
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == spec.name
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.azure.com/agentpool"] == spec.agentpool
        assert "aicert.dev/assurance" not in labels  # the agent's to set
        capacity, allocatable = node["status"]["capacity"], node["status"]["allocatable"]
        for resources in (capacity, allocatable):
            assert {"cpu", "memory", "pods"} <= set(resources)
        if spec.security_type is None:
            assert "kubernetes.azure.com/security-type" not in labels
        else:
            assert labels["kubernetes.azure.com/security-type"] == spec.security_type
        if spec.gpus:
            assert labels["kubernetes.azure.com/accelerator"] == "nvidia"
            assert capacity["nvidia.com/gpu"] == allocatable["nvidia.com/gpu"] == str(spec.gpus)
        else:
            assert "kubernetes.azure.com/accelerator" not in labels
            assert "nvidia.com/gpu" not in capacity
    assert kubectl_json(cluster, "get", "node", "tl-0")["metadata"]["labels"]["example.com/pool"] == "blue"

    # Heartbeats: the node's Lease is held by the node and renewed.
    lease = kubectl_json(cluster, "get", "lease", "tl-0", "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "tl-0"
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    first = lease["spec"]["renewTime"]
    eventually(
        lambda: (
            kubectl_json(cluster, "get", "lease", "tl-0", "-n", "kube-node-lease")["spec"]["renewTime"]
            != first
        ),
        "the node lease to be renewed",
    )


# --- pods -----------------------------------------------------------------------------------------


def test_init_containers_then_containers_run_in_order_and_succeed(
    cluster: LocalCluster, nodes: NodeDouble, image: str
) -> None:
    ns = namespace(cluster)
    pod = pod_object(
        "ordered",
        ns,
        nodeName="cvm-0",
        volumes=[{"name": "scratch", "emptyDir": {}}],
        initContainers=[
            {
                "name": "first",
                "image": image,
                "args": ["first"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        containers=[
            {
                "name": "main",
                "image": image,
                "args": ["main", "$(GREETING)"],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": True}],
            }
        ],
    )
    uid = create(cluster, pod)["metadata"]["uid"]
    done = wait_phase(cluster, ns, "ordered", "Succeeded", "Failed")
    logs = nodes.logs(uid)
    assert done["status"]["phase"] == "Succeeded", (done["status"], logs)

    for name in ("first", "main"):
        status = container_status(done, name)
        terminated = status["state"]["terminated"]
        assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
        assert terminated["startedAt"] and terminated["finishedAt"]
        assert status["imageID"] == image and status["image"] == image
        assert status["restartCount"] == 0
        assert status["containerID"].startswith("bwrap://")
    assert container_status(done, "first")["ready"] is True
    assert container_status(done, "main")["ready"] is False
    assert condition(done, "Initialized")["status"] == "True"
    assert condition(done, "PodScheduled")["status"] == "True"
    assert (
        condition(done, "Ready")["status"] == "False" and condition(done, "Ready")["reason"] == "PodCompleted"
    )
    assert done["status"]["podIP"] == done["status"]["hostIP"] == "127.0.0.1"
    # The init container ran first, the image's workdir, env and entrypoint applied, args expanded.
    assert "step first args [] cwd /app host ordered" in logs["first"]
    assert "step main args ['hello']" in logs["main"]
    assert "order ['first'] greeting hello image-env yes" in logs["main"]
    # The default service-account token volume (projected, via TokenRequest with the node's credentials).
    assert f"token True namespace {ns} node cvm-0" in logs["main"]

    # Terminal: volumes torn down like kubelet does; deleting the pod removes it.
    assert not (nodes.pod_dir(uid) / "volumes").exists()
    cluster.kubectl("delete", "pod", "ordered", "-n", ns, "--wait=false")
    wait_gone(cluster, ns, "ordered")
    eventually(lambda: not nodes.pod_dir(uid).exists(), "the pod directory to be removed")


def test_failed_init_container_fails_the_pod_and_nothing_after_it_starts(
    cluster: LocalCluster, nodes: NodeDouble, image: str
) -> None:
    ns = namespace(cluster)
    pod = pod_object(
        "broken",
        ns,
        nodeName="tl-0",
        automountServiceAccountToken=False,
        initContainers=[
            {"name": "fails", "image": image, "args": ["fail"]},
            {"name": "second", "image": image, "args": ["first"]},
        ],
        containers=[{"name": "main", "image": image}],
    )
    uid = create(cluster, pod)["metadata"]["uid"]
    failed = wait_phase(cluster, ns, "broken", "Failed", "Succeeded")
    assert failed["status"]["phase"] == "Failed"
    terminated = container_status(failed, "fails")["state"]["terminated"]
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"
    assert container_status(failed, "second")["state"]["waiting"]["reason"] == "PodInitializing"
    assert "waiting" in container_status(failed, "main")["state"]
    assert condition(failed, "Initialized")["status"] == "False"
    assert set(nodes.logs(uid)) == {"fails"}


def test_read_only_claim_is_read_only_inside_but_the_host_bind_mount_is_live(
    cluster: LocalCluster, nodes: NodeDouble, image: str, tmp_path: Path
) -> None:
    ns = namespace(cluster)
    pv_dir = tmp_path / "pv-data"
    pv_dir.mkdir()
    (pv_dir / "seed.txt").write_text("seeded")
    pv_name = f"data-{ns}"
    local_volume(cluster, ns, pv_name, pv_dir, "tl-0")
    pod = pod_object(
        "reader",
        ns,
        nodeName="tl-0",
        automountServiceAccountToken=False,
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": pv_name, "readOnly": True}}],
        containers=[
            {
                "name": "main",
                "image": image,
                "args": ["readonly"],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            }
        ],
    )
    uid = create(cluster, pod)["metadata"]["uid"]
    eventually(lambda: "read-only" in nodes.logs(uid).get("main", ""), "the container to try writing")
    assert "read-only EROFS seed seeded" in nodes.logs(uid)["main"]

    # kubelet's layout: a real bind mount of the PV's directory, read-only like the claim.
    host_side = nodes.pod_dir(uid) / "volumes" / "kubernetes.io~local-volume" / pv_name
    assert host_side == pvc_path(nodes.kubelet_root, uid, pv_name)
    assert host_side in mount_points()  # (os.path.ismount cannot see a bind mount within one filesystem)
    with pytest.raises(OSError) as refused:
        (host_side / "through-bind").write_text("x")
    assert refused.value.errno == errno.EROFS
    # A write to the PV directory shows through the bind mount at once (and inside the container).
    (pv_dir / "go").write_text("now")
    assert (host_side / "go").read_text() == "now"

    done = wait_phase(cluster, ns, "reader", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", nodes.logs(uid)
    assert "saw go now" in nodes.logs(uid)["main"]
    assert host_side not in mount_points()  # terminal: unmounted
    assert sorted(p.name for p in pv_dir.iterdir()) == ["go", "seed.txt"]


def test_unknown_digest_is_err_image_pull_and_the_pod_stays_pending(
    cluster: LocalCluster, nodes: NodeDouble
) -> None:
    ns = namespace(cluster)
    missing = "registry.local/tests/missing@sha256:" + "ab" * 32
    pod = pod_object(
        "unpullable",
        ns,
        nodeName="tl-0",
        automountServiceAccountToken=False,
        containers=[{"name": "main", "image": missing}],
    )
    uid = create(cluster, pod)["metadata"]["uid"]

    def waiting() -> dict[str, Any] | None:
        state = container_status(get_pod(cluster, ns, "unpullable"), "main")["state"]
        return state.get("waiting") if state.get("waiting", {}).get("reason") == "ErrImagePull" else None

    waiting_state = eventually(waiting, "ErrImagePull")
    assert "not found in the local image store" in waiting_state["message"]

    def backing_off() -> dict[str, Any] | None:
        state = container_status(get_pod(cluster, ns, "unpullable"), "main")["state"]
        return state.get("waiting") if state.get("waiting", {}).get("reason") == "ImagePullBackOff" else None

    assert "not found in the local image store" in eventually(backing_off, "ImagePullBackOff")["message"]
    pending = get_pod(cluster, ns, "unpullable")
    assert pending["status"]["phase"] == "Pending"
    assert container_status(pending, "main")["imageID"] == ""
    assert nodes.logs(uid) == {}  # never ran

    cluster.kubectl("delete", "pod", "unpullable", "-n", ns, "--wait=false")
    wait_gone(cluster, ns, "unpullable")
    assert nodes.logs(uid) == {}


def test_deleting_a_running_pod_terminates_its_processes_and_removes_it(
    cluster: LocalCluster, nodes: NodeDouble, image: str, tmp_path: Path
) -> None:
    ns = namespace(cluster)
    token = f"token-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    pod = pod_object(
        "sleeper",
        ns,
        nodeName="cvm-0",
        automountServiceAccountToken=False,
        volumes=[{"name": "out", "hostPath": {"path": str(out), "type": "DirectoryOrCreate"}}],
        containers=[
            {
                "name": "main",
                "image": image,
                "args": ["sleep", token],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}],
            }
        ],
    )
    uid = create(cluster, pod)["metadata"]["uid"]
    running = wait_phase(cluster, ns, "sleeper", "Running", "Succeeded", "Failed")
    assert running["status"]["phase"] == "Running"
    status = container_status(running, "main")
    assert status["ready"] is True and status["started"] is True
    assert status["state"]["running"]["startedAt"]
    assert condition(running, "Ready")["status"] == "True"
    eventually(lambda: f"sleeping {token}" in nodes.logs(uid).get("main", ""), "the container to start")
    assert pids_running(token)

    cluster.kubectl("delete", "pod", "sleeper", "-n", ns, "--wait=false")
    wait_gone(cluster, ns, "sleeper")
    assert pids_running(token) == []
    assert (out / "terminated").read_text() == "signal 15"  # SIGTERM first, within the grace period
    eventually(lambda: not nodes.pod_dir(uid).exists(), "the pod directory to be removed")


def test_a_stopped_node_leaves_its_pods_and_a_new_double_fails_them(
    cluster: LocalCluster, images: ImageStore, image: str, tmp_path: Path
) -> None:
    ns = namespace(cluster)
    root = tmp_path / "kubelet"
    specs = [NodeSpec("restart-0", "TrustedLaunch")]
    token = f"token-{uuid.uuid4().hex}"
    pod = pod_object(
        "survivor",
        ns,
        nodeName="restart-0",
        automountServiceAccountToken=False,
        volumes=[{"name": "out", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        containers=[
            {
                "name": "main",
                "image": image,
                "args": ["sleep", token],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}],
            }
        ],
    )
    first = NodeDouble(cluster, root, images, specs, heartbeat_seconds=2.0)
    with first:
        uid = create(cluster, pod)["metadata"]["uid"]
        wait_phase(cluster, ns, "survivor", "Running")
        eventually(lambda: f"sleeping {token}" in first.logs(uid).get("main", ""), "the container to start")
        assert mounts_under(root)  # the Memory emptyDir is a tmpfs
    # The node went away: its processes and mounts are gone, the API is as it was.
    assert first.errors == []
    assert pids_running(token) == []
    assert mounts_under(root) == []
    assert get_pod(cluster, ns, "survivor")["status"]["phase"] == "Running"

    # A new double for the node registers it again and cannot re-attach: the pod is failed.
    second = NodeDouble(cluster, root, images, specs, heartbeat_seconds=2.0)
    with second:
        failed = wait_phase(cluster, ns, "survivor", "Failed")
        terminated = container_status(failed, "main")["state"]["terminated"]
        assert terminated["reason"] == "ContainerStatusUnknown" and terminated["exitCode"] == 137
        cluster.kubectl("delete", "pod", "survivor", "-n", ns, "--wait=false")
        wait_gone(cluster, ns, "survivor")
    assert second.errors == []
    assert mounts_under(root) == []


def test_the_real_scheduler_places_a_pod_by_node_affinity(
    cluster: LocalCluster, nodes: NodeDouble, image: str
) -> None:
    ns = namespace(cluster)
    pod = pod_object(
        "placed",
        ns,
        automountServiceAccountToken=False,
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "example.com/pool", "operator": "In", "values": ["blue"]}
                            ]
                        }
                    ]
                }
            }
        },
        initContainers=[{"name": "first", "image": image, "args": ["noop"]}],
        containers=[
            {
                "name": "main",
                "image": image,
                # The venv of python_executable is at /opt/venv in every sandbox, the repository at /work.
                "command": ["/opt/venv/bin/python", "-c", "import aicert; print('venv', aicert.__name__)"],
                "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"}},
            }
        ],
    )
    uid = create(cluster, pod)["metadata"]["uid"]
    done = wait_phase(cluster, ns, "placed", "Succeeded", "Failed")
    assert done["spec"]["nodeName"] == "tl-0"
    assert done["status"]["phase"] == "Succeeded", nodes.logs(uid)
    assert condition(done, "PodScheduled")["status"] == "True"
    assert "venv aicert" in nodes.logs(uid)["main"]
    # kubelet's Events, recorded with the node's credentials.
    events = kubectl_json(
        cluster, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=placed"
    )
    reasons = {(e["source"].get("component"), e["reason"]) for e in events["items"]}
    assert {("kubelet", "Pulled"), ("kubelet", "Created"), ("kubelet", "Started")} <= reasons


def test_the_operators_pod_runs_gate_train_seal_driven_by_marker_files(
    cluster: LocalCluster, nodes: NodeDouble, image: str, tmp_path: Path
) -> None:
    """The contract with the operator's Pod and the agent's view of the kubelet layout: the agent image
    runs `python -m aicert_agent gate|seal`, the agent finds the volumes where volumes.py says."""
    ns = namespace(cluster)
    data = tmp_path / "training-data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    pv_name = f"inputs-{ns}"
    local_volume(cluster, ns, pv_name, data, "agent-0")
    spec = TrainingSpec.model_validate(
        {
            "image": image,
            "args": ["train"],
            "inputs": [
                {"name": "data", "persistentVolumeClaim": {"claimName": pv_name}, "mountPath": "/data"}
            ],
            "output": {"emptyDir": {}, "mountPath": "/model"},
            "minAssurance": "dev",
        }
    )
    pod = training_pod(
        name="ct",
        namespace=ns,
        uid=str(uuid.uuid4()),
        spec=spec,
        attempt=1,
        settings=PodSettings(DEV_AGENT_IMAGE),
    )
    del pod["metadata"]["ownerReferences"]  # no CertifiedTraining object here
    node_kubeconfig = cluster.kubeconfig_for_node("agent-0")
    cluster.kubectl("label", "node", "agent-0", "aicert.dev/assurance=dev", kubeconfig=node_kubeconfig)
    try:
        uid = create(cluster, pod)["metadata"]["uid"]
        name = pod["metadata"]["name"]

        def gate_running() -> dict[str, Any] | None:
            current = get_pod(cluster, ns, name)
            return current if "running" in container_status(current, CONTAINER_GATE)["state"] else None

        gating = eventually(gate_running, "aicert-gate to run")
        assert gating["spec"]["nodeName"] == "agent-0"
        assert container_status(gating, CONTAINER_GATE)["imageID"] == agent_image_id(DEV_AGENT_IMAGE)
        # Where the agent measures: the input claim's PV, and the control emptyDir (a tmpfs).
        inputs = pvc_path(nodes.kubelet_root, uid, pv_name)
        assert (inputs / "train.csv").read_text() == "x,y\n1,2\n"
        control = empty_dir_path(nodes.kubelet_root, uid, CONTROL_VOLUME)
        assert control in mount_points()
        write_marker(control, MARKER_GATE)

        def sealing() -> dict[str, Any] | None:
            current = get_pod(cluster, ns, name)
            return current if "running" in container_status(current, CONTAINER_SEAL)["state"] else None

        waiting_for_seal = eventually(sealing, "aicert-seal to run")
        train = container_status(waiting_for_seal, CONTAINER_TRAIN)
        assert train["state"]["terminated"]["exitCode"] == 0, nodes.logs(uid)
        assert train["imageID"] == image
        output = empty_dir_path(nodes.kubelet_root, uid, "output")
        assert (output / "weights.bin").read_text() == "trained on ['train.csv']"
        write_marker(control, MARKER_SEALED)

        done = wait_phase(cluster, ns, name, "Succeeded", "Failed")
        logs = nodes.logs(uid)
        assert done["status"]["phase"] == "Succeeded", logs
        assert "inputs measured" in logs[CONTAINER_GATE]
        assert "certified" in logs[CONTAINER_SEAL]
    finally:
        cluster.kubectl("label", "node", "agent-0", "aicert.dev/assurance-", kubeconfig=node_kubeconfig)


# --- images with their own root filesystem ---------------------------------------------------------

OWN_ROOT_PROBE = """
import errno, os, pathlib, sys
import aicert_agent
try:
    pathlib.Path("/var/tmp/written").write_text(sys.argv[1])
    written = "written"
except OSError as exc:
    written = errno.errorcode[exc.errno]
release = pathlib.Path("/etc/os-release").read_text().splitlines()[0]
print(f"python={sys.executable} host-work={os.path.exists('/work')} hosts={os.path.exists('/etc/hosts')} "
      f"{written} {release}", flush=True)
"""


def test_an_image_with_its_own_root_runs_on_it(
    cluster: LocalCluster, nodes: NodeDouble, images: ImageStore, product_images: dict[str, Path]
) -> None:
    """The agent image `make images` builds runs on its own Debian root (not the host's binds), each
    container on a fresh writable layer that never reaches the image; readOnlyRootFilesystem holds."""
    ref = images.add_layout(product_images["aicert-agent"], "registry.local/tests/agent")
    assert images.add_layout(product_images["aicert-agent"], "registry.local/tests/agent") == ref
    ns = namespace(cluster)

    def probe(name: str, read_only: bool) -> dict[str, Any]:
        return {
            "name": name,
            "image": ref,
            "command": ["python", "-c", OWN_ROOT_PROBE, name],
            "securityContext": {"readOnlyRootFilesystem": read_only},
        }

    pod = create(
        cluster,
        pod_object("own-root", ns, nodeName="tl-0", containers=[probe("first", False), probe("ro", True)]),
    )
    done = wait_phase(cluster, ns, "own-root", "Succeeded", "Failed")
    logs = nodes.logs(pod["metadata"]["uid"])
    assert done["status"]["phase"] == "Succeeded", logs
    debian = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"'
    assert logs["first"].strip() == f"python=/opt/venv/bin/python host-work=False hosts=True written {debian}"
    assert logs["ro"].strip() == f"python=/opt/venv/bin/python host-work=False hosts=True EROFS {debian}"
    assert container_status(done, "first")["imageID"] == ref
    image_root = images.resolve(ref).root_dir
    assert (image_root / "opt/venv/bin/python").exists()
    assert not (image_root / "var/tmp/written").exists(), "a container wrote into the image"
    eventually(lambda: mounts_under(nodes.pod_dir(pod["metadata"]["uid"])) == [], "the layers unmounted")


PROPAGATION_PROBE = """
import pathlib, sys, time
seen = pathlib.Path(sys.argv[1]) / "hello"
print("waiting", flush=True)
while not seen.exists():
    time.sleep(0.1)
print(f"saw {seen.read_text()}", flush=True)
"""


def test_host_to_container_a_mount_made_after_the_start_reaches_the_container(
    cluster: LocalCluster, nodes: NodeDouble, image: str
) -> None:
    """As kubelet's root: what is mounted under <kubelet_root>/pods after a container started shows in
    the container that mounts that directory (the agent DaemonSet sees new training volumes)."""
    ns = namespace(cluster)
    pods = nodes.kubelet_root / "pods"
    source, target = pods / f"propagation-{ns}" / "source", pods / f"propagation-{ns}" / "target"
    source.mkdir(parents=True)
    target.mkdir()
    (source / "hello").write_text("the late mount")
    container = {
        "name": "watcher",
        "image": image,
        "command": ["python3", "-c", PROPAGATION_PROBE, str(target)],
        "volumeMounts": [{"name": "pods", "mountPath": str(pods), "mountPropagation": "HostToContainer"}],
    }
    pod = create(
        cluster,
        pod_object(
            "watcher",
            ns,
            nodeName="tl-0",
            containers=[container],
            volumes=[{"name": "pods", "hostPath": {"path": str(pods), "type": "Directory"}}],
        ),
    )
    uid = pod["metadata"]["uid"]
    eventually(lambda: "waiting" in nodes.logs(uid).get("watcher", ""), "the watcher to start")
    bind_mount(source, target, read_only=True)
    try:
        done = wait_phase(cluster, ns, "watcher", "Succeeded", "Failed")
    finally:
        unmount(target)
    assert done["status"]["phase"] == "Succeeded", nodes.logs(uid)
    assert nodes.logs(uid)["watcher"].splitlines()[-1] == "saw the late mount"
