"""A real node (localcluster/aicert_localcluster/realnode): the pinned upstream kubelet, containerd,
runc and CNI plugins run one node of a LocalCluster. Checked on the real kubelet: the Node becomes
Ready with GPUs as an extended resource; a pod from a locally imported image is scheduled on a GPU,
writes to an emptyDir at the path kubelet gives it, runs to completion and has its logs; its imageID
is the manifest digest; the agent finds a pod's local PV and emptyDir where its volumes module says
(under kubelet's root as the node's mount namespace shows it, where the agent's DaemonSet looks), and a
marker it writes there reaches the container; and after stop() nothing the node made is left on the
host.

Needs root, the node binaries (localcluster/build.py builds them once) and Debian's busybox-static
(the test image). Every wait polls with a deadline; nothing asserts on timing (the figures are
printed: pytest -s shows them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.realnode_tools import (
    busybox_image,
    cluster_for_real_nodes,
    condition,
    eventually,
    pod_manifest,
    succeeded,
    wait_pod,
)

from aicert_agent.markers import write_marker
from aicert_agent.volumes import empty_dir_path, pvc_path
from aicert_contract.training import CONTROL_VOLUME, MARKER_GATE
from aicert_localcluster import LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import GPU_RESOURCE, KUBELET_SYSCTLS, RealNode, free_node_index, host
from aicert_localcluster.realnode.config import KUBELET_ROOT

pytestmark = pytest.mark.integration

NODE = "real-gpu-0"
GPUS = 2


def iptables_chains() -> set[str]:
    """Every (family, table, chain) on the host, as `iptables-save`/`ip6tables-save` list them."""
    chains = set()
    for tool in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in subprocess.run([tool], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add(f"{tool}:{table}:{line[1:].split()[0]}")
    return chains


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has exited: it holds no mount or namespace)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@dataclass(frozen=True)
class HostView:
    """What the host looks like, in the respects a real node might change it."""

    chains: frozenset[str]
    links: frozenset[str]
    sysctls: dict[str, str]
    run_netns: frozenset[str]
    fixed_dirs: dict[str, bool]
    ledger_exists: bool

    @classmethod
    def now(cls, fixed: list[Path]) -> HostView:
        keys = [*KUBELET_SYSCTLS, "net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"]
        netns = Path("/run/netns")
        return cls(
            chains=frozenset(iptables_chains()),
            links=frozenset(host.link_names()),
            sysctls={
                k: (Path("/proc/sys") / k).read_text().strip()
                for k in keys
                if (Path("/proc/sys") / k).exists()
            },
            run_netns=frozenset(p.name for p in netns.iterdir()) if netns.is_dir() else frozenset(),
            fixed_dirs={str(p): p.exists() for p in fixed},
            ledger_exists=host.LEDGER_DIR.exists(),
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from cluster_for_real_nodes(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def before(cluster: LocalCluster) -> HostView:
    """The host before the node starts (the cluster itself changes none of it)."""
    return HostView.now([Path("/var/lib/cni"), Path("/var/lib/kubelet"), Path("/var/log/containers")])


@pytest.fixture(scope="module")
def node(
    cluster: LocalCluster, before: HostView, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    real = RealNode(cluster, tmp_path_factory.mktemp("node"), name=NODE, index=free_node_index(), gpus=GPUS)
    started = time.monotonic()
    real.start()
    print(
        f"\n[figures] node started in {time.monotonic() - started:.1f}s; "
        f"Ready {real.ready_at - real.kubelet_started_at:.2f}s after kubelet started"
    )
    try:
        yield real
    finally:
        real.stop()  # idempotent: test_stop_leaves_nothing stops it first


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def busybox(node: RealNode, store: ImageStore) -> str:
    """Debian's static busybox as an OCI image (/app/busybox), imported into the node by digest."""
    reference = busybox_image(store, "registry.local/realnode/busybox")
    assert node.import_image(store.layout, reference) == reference
    return reference


# ------------------------------------------------------------------------------------------------


def test_node_is_ready_with_its_gpus(cluster: LocalCluster, node: RealNode) -> None:
    obj = cluster.kubectl_json("get", "node", NODE)
    assert condition(obj, "Ready")
    status = obj["status"]
    assert status["capacity"][GPU_RESOURCE] == str(GPUS)
    assert status["allocatable"][GPU_RESOURCE] == str(GPUS)
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.2"
    assert info["containerRuntimeVersion"] == "containerd://2.4.2"
    assert {"type": "InternalIP", "address": node.node_ip} in status["addresses"]
    assert node.node_ip.startswith("10.244.") and node.node_ip.endswith(".1")


def test_pod_runs_to_completion_from_an_imported_image(
    cluster: LocalCluster, node: RealNode, busybox: str
) -> None:
    """Scheduled on a GPU, the pod writes into its emptyDir, which is a directory under kubelet's
    root-dir on the host; it ends once the test writes `done` there (the same directory, seen from
    the host), and its logs come back through the API server from kubelet."""
    script = (
        "echo hello from the real node; echo written-in-pod > /scratch/proof; "
        "while [ ! -e /scratch/done ]; do sleep 0.1; done; echo finished"
    )
    applied = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("first", busybox, script, gpus=1)))
    running = wait_pod(cluster, "first", lambda pod: condition(pod, "Ready"), "Ready")
    print(f"\n[figures] first pod Ready {time.monotonic() - applied:.2f}s after kubectl apply")
    assert running["spec"]["nodeName"] == NODE
    uid = running["metadata"]["uid"]
    scratch = node.layout.kubelet_root / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / "scratch"
    proof = eventually(
        lambda: (scratch / "proof").read_text() if (scratch / "proof").exists() else None, "proof"
    )
    assert proof == "written-in-pod\n"
    (scratch / "done").write_text("")

    finished = wait_pod(cluster, "first", succeeded, "Succeeded")
    (state,) = finished["status"]["containerStatuses"]
    assert state["state"]["terminated"]["exitCode"] == 0
    logs = cluster.kubectl("logs", "first", "-n", "default").stdout
    assert logs == "hello from the real node\nfinished\n"


def test_image_id_is_the_manifest_digest(
    cluster: LocalCluster, node: RealNode, busybox: str, store: ImageStore
) -> None:
    """imageID is repo@sha256:<manifest digest>, as after a pull by digest; the digest is the sha256
    of the manifest bytes in the layout (not the config's digest, which a tag-only import gives)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("digest", busybox, "echo ok")))
    done = wait_pod(cluster, "digest", succeeded, "Succeeded")
    (state,) = done["status"]["containerStatuses"]
    assert state["imageID"] == busybox
    repository, digest = busybox.split("@")
    assert repository == "registry.local/realnode/busybox"
    manifest = (store.blobs / digest.removeprefix("sha256:")).read_bytes()
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert json.loads(manifest)["config"]["digest"] != digest
    listed = node.ctr("images", "ls", "--quiet").stdout.split()
    assert busybox in listed
    assert not any(name.startswith(repository + ":") for name in listed)  # no tag: only the digest name


def test_kubelet_status_updates_keep_the_gpus(cluster: LocalCluster, node: RealNode, busybox: str) -> None:
    """Once kubelet has sent a status of its own after the GPU patch (it lists the busybox image, which
    was imported after it), the Node still has the GPUs in capacity and allocatable."""

    def updated() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.kubectl_json("get", "node", NODE)["status"]
        names = [name for image in status.get("images") or [] for name in image.get("names") or []]
        return status if busybox in names else None

    status = eventually(updated, "kubelet's status update listing the imported image")
    assert status["capacity"][GPU_RESOURCE] == str(GPUS)
    assert status["allocatable"][GPU_RESOURCE] == str(GPUS)


def local_claim(cluster: LocalCluster, name: str, path: Path) -> None:
    """A `local` PV of `path` pinned to the node, and a claim bound to it by name."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": name},
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    for obj in (pv, claim):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def test_the_agent_finds_a_pods_volumes_where_kubelet_mounts_them(
    cluster: LocalCluster, node: RealNode, busybox: str, tmp_path: Path
) -> None:
    """The agent's view of kubelet's volume layout (aicert_agent.volumes), on the real kubelet: a
    claim's local PV is at pvc_path and an emptyDir at empty_dir_path, under kubelet's root as the
    agent's DaemonSet sees it (in the node's mount namespace, where kubelet mounts them); a marker
    the agent writes into the control emptyDir there is what the container sees."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    local_claim(cluster, "inputs", data)
    script = (
        "cat /data/train.csv > /control/seen; "
        f"while [ ! -e /control/{MARKER_GATE} ]; do sleep 0.1; done; cat /control/{MARKER_GATE}"
    )
    manifest = pod_manifest("volumes", busybox, script)
    manifest["spec"]["volumes"] = [
        {"name": CONTROL_VOLUME, "emptyDir": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "inputs", "readOnly": True}},
    ]
    manifest["spec"]["containers"][0]["volumeMounts"] = [
        {"name": CONTROL_VOLUME, "mountPath": "/control"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    running = wait_pod(cluster, "volumes", lambda pod: condition(pod, "Ready"), "Ready")
    uid = running["metadata"]["uid"]
    # kubelet's root as a process in the node's mount namespace sees it (the agent pod's hostPath)
    in_node = Path(f"/proc/{host.pids_in_namespace('mnt', node.mount_namespace)[0]}/root")
    kubelet_root = in_node / KUBELET_ROOT.relative_to("/")

    inputs = pvc_path(kubelet_root, uid, "inputs")
    assert inputs.parent.name == "kubernetes.io~local-volume"
    assert (inputs / "train.csv").read_text() == "x,y\n1,2\n"
    control = empty_dir_path(kubelet_root, uid, CONTROL_VOLUME)
    seen = eventually(lambda: (control / "seen").read_text() if (control / "seen").exists() else None, "seen")
    assert seen == "x,y\n1,2\n"
    write_marker(control, MARKER_GATE, "gate open")

    wait_pod(cluster, "volumes", succeeded, "Succeeded")
    assert cluster.kubectl("logs", "volumes", "-n", "default").stdout == "gate open"


def test_stop_leaves_nothing(cluster: LocalCluster, node: RealNode, busybox: str, before: HostView) -> None:
    """With a pod running, note everything the node made (processes, its mount namespace and mounts,
    the pod's network namespace and veth, the cgroup tree, the bridge); stop; check each is gone and
    the host is as it was (iptables chains, links, sysctls, /run/netns, the fixed directories)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("sleeper", busybox, "sleep 3600")))
    wait_pod(cluster, "sleeper", lambda pod: condition(pod, "Ready"), "Ready")

    container_pids = host.pids_in_cgroup(node.layout.cgroup_root)
    namespace_pids = host.pids_in_namespace("mnt", node.mount_namespace)
    assert container_pids and namespace_pids
    pod_netns = {host.namespace_of(pid, "net") for pid in container_pids}
    pod_netns.discard(host.namespace_of(os.getpid(), "net"))
    assert pod_netns, "the pod has a network namespace of its own"
    veths = host.ports_of(node.layout.bridge)
    assert veths, "the pod's veth is on the node's bridge"
    holder = namespace_pids[0]
    node_mounts = host.mounts_under(
        [node.workdir, node.layout.run, *node.layout.private_dirs],
        Path(f"/proc/{holder}/mountinfo").read_text(),
    )
    assert any("kubernetes.io~projected" in m.mount_point for m in node_mounts), "kubelet mounted the token"
    assert any(m.fstype == "overlay" for m in node_mounts), "containerd mounted the pod's root filesystem"
    assert iptables_chains() == before.chains, "the running node added iptables chains"

    node.stop()
    node.stop()  # idempotent

    node_pids = [*container_pids, *namespace_pids]
    assert [pid for pid in node_pids if running(pid)] == []
    # an exited shim was re-parented to init, which reaps it in its own time
    eventually(
        lambda: not [pid for pid in node_pids if Path(f"/proc/{pid}").exists()], "every node process reaped"
    )
    assert host.pids_in_cgroup(node.layout.cgroup_root) == []
    assert host.pids_in_namespace("mnt", node.mount_namespace) == []
    for netns in pod_netns:
        assert host.pids_in_namespace("net", netns) == [], f"a process is still in the pod's {netns}"
    roots = [node.workdir, node.layout.run]
    assert host.mounts_under(roots, host.host_mountinfo()) == []
    assert not host.cgroup_exists(node.layout.cgroup_root)
    assert node.layout.bridge not in host.link_names()
    # a veth goes when its network namespace is freed, which the kernel does in the background
    eventually(lambda: not (veths & host.link_names()), f"the pod's veth {veths} gone")
    assert not node.layout.run.exists()

    after = HostView.now([Path(p) for p in before.fixed_dirs])
    assert after.chains == before.chains
    assert after.sysctls == before.sysctls
    assert after.run_netns == before.run_netns
    assert after.fixed_dirs == before.fixed_dirs
    assert after.ledger_exists == before.ledger_exists
    assert after.links - before.links == set()
