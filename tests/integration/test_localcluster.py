"""The local control plane (localcluster/): real etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, checked through kubectl and the kubernetes Python client. No mocks; every wait polls
with a generous deadline and nothing asserts on timing.

The first run builds the binaries (tens of minutes on 2 cores; see localcluster/README.md), later runs
reuse ~/.cache/aicert.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config

from aicert_localcluster import KubectlError, LocalCluster, LocalClusterError, kubernetes_version

pytestmark = pytest.mark.integration

DEADLINE = 90.0
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll `probe` until it returns something other than None/False; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (KubectlError, json.JSONDecodeError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last error: {last}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("localcluster")) as running:
        yield running


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    """The kubernetes Python client (what the operator and agent use) with this kubeconfig."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]


def apply(cluster: LocalCluster, *objects: dict[str, Any], kubeconfig: Path | None = None) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), kubeconfig=kubeconfig)


def create(cluster: LocalCluster, obj: dict[str, Any], kubeconfig: Path | None = None) -> dict[str, Any]:
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(obj), kubeconfig=kubeconfig)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def get(cluster: LocalCluster, *args: str, kubeconfig: Path | None = None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        cluster.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    return result


def namespace(cluster: LocalCluster, name: str) -> str:
    """Create a namespace and wait for its default ServiceAccount (pods need it to be admitted)."""
    cluster.kubectl("create", "namespace", name)
    eventually(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        f"the default ServiceAccount in {name}",
    )
    return name


def node_object(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
    }


def register_ready_node(cluster: LocalCluster, name: str) -> Path:
    """What a kubelet does, through the node's own credentials: create the Node, then report it Ready
    with capacity through the status subresource."""
    kubeconfig = cluster.kubeconfig_for_node(name)
    create(cluster, node_object(name), kubeconfig=kubeconfig)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "1"}
    status = {
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "registered by the test",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
    }
    # kubectl patch --subresource=status would GET nodes/status first, which a node may not; kubelet
    # PATCHes it directly.
    core_api(kubeconfig).patch_node_status(name, status)
    return kubeconfig


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "example.invalid/none:1"}], **spec},
    }


# ------------------------------------------------------------------------------------------------


def test_readyz_with_the_cluster_ca(cluster: LocalCluster) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cluster.ca_file))  # verifies the serving cert's SAN too
    with urllib.request.urlopen(cluster.server + "/readyz", context=context, timeout=10) as response:
        assert response.read().decode() == "ok"
    assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_component_versions_are_the_pinned_ones(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == kubernetes_version()


def test_admin_creates_a_namespace_with_the_python_client(cluster: LocalCluster) -> None:
    api = core_api(cluster.admin_kubeconfig)
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="created-by-admin")))
    names = [ns.metadata.name for ns in api.list_namespace().items if ns.metadata]
    assert "created-by-admin" in names


def test_rbac_is_enforced(cluster: LocalCluster) -> None:
    ns = namespace(cluster, "rbac")
    kubeconfig = cluster.kubeconfig_for_service_account(ns, "reader")
    denied = cluster.kubectl("get", "pods", "--all-namespaces", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert cluster.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).returncode != 0

    cluster.kubectl("create", "role", "pod-reader", "-n", ns, "--verb=get,list,watch", "--resource=pods")
    cluster.kubectl(
        "create", "rolebinding", "reader", "-n", ns, "--role=pod-reader", f"--serviceaccount={ns}:reader"
    )
    eventually(
        lambda: cluster.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).returncode == 0,
        "the RoleBinding to take effect",
    )
    # Still nothing cluster-wide.
    assert cluster.kubectl("get", "pods", "-A", kubeconfig=kubeconfig, check=False).returncode != 0


def test_node_registers_itself_but_cannot_modify_another_node(cluster: LocalCluster) -> None:
    kubeconfig_a = cluster.kubeconfig_for_node("node-a")
    kubeconfig_b = cluster.kubeconfig_for_node("node-b")
    create(cluster, node_object("node-a"), kubeconfig=kubeconfig_a)
    create(cluster, node_object("node-b"), kubeconfig=kubeconfig_b)
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig_a).stdout)
    assert whoami["status"]["userInfo"]["username"] == "system:node:node-a"
    assert "system:nodes" in whoami["status"]["userInfo"]["groups"]

    # Its own labels: fine. Another node's: NodeRestriction says no.
    cluster.kubectl("label", "node", "node-a", "example.com/own=yes", kubeconfig=kubeconfig_a)
    assert get(cluster, "node", "node-a")["metadata"]["labels"]["example.com/own"] == "yes"
    refused = cluster.kubectl(
        "label", "node", "node-b", "example.com/other=yes", kubeconfig=kubeconfig_a, check=False
    )
    assert refused.returncode != 0
    assert "node-a" in refused.stderr and "node-b" in refused.stderr
    assert "example.com/other" not in get(cluster, "node", "node-b")["metadata"]["labels"]
    # Nor create a Node in another name.
    stolen = cluster.kubectl(
        "create", "-f", "-", input=json.dumps(node_object("node-c")), kubeconfig=kubeconfig_a, check=False
    )
    assert stolen.returncode != 0
    # Nor read secrets it has no pod for (Node authorizer).
    assert cluster.kubectl("get", "secrets", "-A", kubeconfig=kubeconfig_a, check=False).returncode != 0


def test_scheduler_binds_a_pod_to_a_ready_node(cluster: LocalCluster) -> None:
    ns = namespace(cluster, "sched")
    register_ready_node(cluster, "sched-node")
    train = pod("train", nodeSelector={"kubernetes.io/hostname": "sched-node"})
    train["metadata"]["namespace"] = ns
    train["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}
    }
    create(cluster, train)
    node_name = eventually(
        lambda: get(cluster, "pod", "train", "-n", ns)["spec"].get("nodeName"),
        "the scheduler to bind the pod",
    )
    assert node_name == "sched-node"
    cluster.kubectl("delete", "pod", "train", "-n", ns, "--grace-period=0", "--force", "--wait=false")


def test_garbage_collector_deletes_dependents(cluster: LocalCluster) -> None:
    ns = namespace(cluster, "gc")
    owner = create(
        cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": ns}}
    )
    dependent = pod("dependent", schedulerName="nobody")  # never bound, so deletion needs no kubelet
    dependent["metadata"] = {
        "name": "dependent",
        "namespace": ns,
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        ],
    }
    create(cluster, dependent)
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    eventually(
        lambda: "NotFound" in cluster.kubectl("get", "pod", "dependent", "-n", ns, check=False).stderr,
        "the garbage collector to delete the dependent pod",
    )


def test_persistent_volume_claim_binds(cluster: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(cluster, "storage")
    apply(
        cluster,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "local"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "weights-pv"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(tmp_path / "pv"), "type": "DirectoryOrCreate"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "weights", "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    eventually(
        lambda: get(cluster, "pvc", "weights", "-n", ns).get("status", {}).get("phase") == "Bound",
        "the PV controller to bind the claim",
    )
    assert get(cluster, "pvc", "weights", "-n", ns)["spec"]["volumeName"] == "weights-pv"
    assert get(cluster, "pv", "weights-pv")["status"]["phase"] == "Bound"


def test_pod_bound_service_account_token_carries_the_node_name(cluster: LocalCluster) -> None:
    ns = namespace(cluster, "tokens")
    register_ready_node(cluster, "token-node")
    cluster.kubectl("create", "serviceaccount", "agent", "-n", ns)
    agent_pod = pod("agent", nodeName="token-node", serviceAccountName="agent")
    agent_pod["metadata"]["namespace"] = ns
    uid = create(cluster, agent_pod)["metadata"]["uid"]

    kubeconfig = cluster.kubeconfig_for_service_account(ns, "agent", bound_pod=("agent", uid))
    review = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{ns}:agent"
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["agent"]
    assert user["extra"]["authentication.kubernetes.io/node-name"] == ["token-node"]

    # The token works for real requests once RBAC allows them, and dies with its pod.
    cluster.kubectl("create", "role", "pods", "-n", ns, "--verb=get,list", "--resource=pods")
    cluster.kubectl("create", "rolebinding", "agent", "-n", ns, "--role=pods", f"--serviceaccount={ns}:agent")
    eventually(
        lambda: (
            "agent" in cluster.kubectl("get", "pods", "-n", ns, "-o", "name", kubeconfig=kubeconfig).stdout
        ),
        "the bound token to list pods",
    )
    cluster.kubectl("delete", "pod", "agent", "-n", ns, "--grace-period=0", "--force")
    eventually(
        lambda: (
            "Unauthorized"
            in cluster.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).stderr
        ),
        "the token to be rejected after its pod is gone",
    )


def test_validating_admission_policy_is_enforced(cluster: LocalCluster) -> None:
    ns = namespace(cluster, "vap")
    apply(
        cluster,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "no-forbidden-data"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.data) || !('forbidden' in object.data)",
                        "message": "no forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "no-forbidden-data"},
            "spec": {
                "policyName": "no-forbidden-data",
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            },
        },
    )

    def rejected() -> bool:
        name = f"probe-{time.monotonic_ns()}"
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"forbidden": "1"},
        }
        result = cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(obj), check=False)
        return result.returncode != 0 and "no forbidden" in result.stderr

    eventually(rejected, "the ValidatingAdmissionPolicy to reject")
    allowed = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}, "data": {"ok": "1"}}
    cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(allowed))


def test_stop_ends_every_process_and_is_idempotent(cluster: LocalCluster, tmp_path: Path) -> None:
    other = LocalCluster(tmp_path / "second", bin_dir=cluster.bin_dir)
    other.start()
    pids = [p.popen.pid for p in other._processes]
    assert len(pids) == 4 and other.running
    assert other.kubectl("get", "--raw", "/readyz").stdout == "ok"
    other.stop()
    other.stop()
    assert not other.running
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert set(other.logs()) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    assert all(path.stat().st_size > 0 for path in other.logs().values())


def test_failed_start_raises_with_the_log_tail(cluster: LocalCluster, tmp_path: Path) -> None:
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        (broken / name).symlink_to(cluster.bin_dir / name)
    (broken / "etcd").write_text("#!/bin/sh\necho 'etcd: cannot start: disk on fire' >&2\nexit 3\n")
    os.chmod(broken / "etcd", 0o755)
    failing = LocalCluster(tmp_path / "broken", bin_dir=broken)
    with pytest.raises(LocalClusterError, match="disk on fire") as raised:
        failing.start(timeout=30)
    assert "etcd exited with code 3" in str(raised.value)
    assert not failing.running
    failing.stop()  # idempotent after a failed start too


def test_kubectl_error_carries_stderr(cluster: LocalCluster) -> None:
    with pytest.raises(subprocess.CalledProcessError) as raised:
        cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default")
    assert "NotFound" in str(raised.value)
