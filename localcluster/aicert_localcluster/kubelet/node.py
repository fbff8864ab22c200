"""The nodes of the double: each `NodeSpec` becomes a Node registered with that node's own credentials
(`cluster.kubeconfig_for_node`: CN=system:node:<name>, so the Node authorizer and NodeRestriction apply to
everything the double does for it), with the AKS labels (`kubernetes.azure.com/security-type` unless the
node has no TPM, `kubernetes.azure.com/accelerator=nvidia` when it has GPUs,
`kubernetes.azure.com/agentpool`, `kubernetes.io/hostname`, `kubernetes.io/os`), Ready, capacity and
allocatable (cpu, memory, pods, ephemeral-storage, `nvidia.com/gpu`). A heartbeat renews the node's
Lease in `kube-node-lease` every few seconds and refreshes the Ready condition every minute, so the node
lifecycle controller keeps it Ready; `aicert.dev/assurance` is never set (the agent labels its node).
The node loop lists and watches the pods bound to the node (field selector `spec.nodeName=<node>`) and
hands every pod event to the double.
"""

from __future__ import annotations

import hashlib
import platform
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .client import LOOPBACK, MERGE_PATCH, ApiError, KubeClient, log, now, now_micro

if TYPE_CHECKING:
    from .double import NodeDouble

SecurityType = Literal["TrustedLaunch", "ConfidentialVM"]

LABEL_SECURITY_TYPE = "kubernetes.azure.com/security-type"
LABEL_ACCELERATOR = "kubernetes.azure.com/accelerator"
LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
LABEL_MODE = "kubernetes.azure.com/mode"
LABEL_ASSURANCE = "aicert.dev/assurance"  # the agent's, never ours
GPU_RESOURCE = "nvidia.com/gpu"
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40


def _kubernetes_version() -> str:
    try:
        from ..binaries import kubernetes_version

        return kubernetes_version()
    except Exception:
        return "v0.0.0"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class NodeSpec:
    """One node: an AKS GPU node of the given security type (None: a node without a TPM)."""

    name: str
    security_type: SecurityType | None
    gpus: int = 1
    agentpool: str = "gpu"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()  # set at registration only (NodeRestriction)
    cpu: str = "8"
    memory: str = "64Gi"
    max_pods: int = 110

    def node_labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            LABEL_AGENTPOOL: self.agentpool,
            "agentpool": self.agentpool,
            LABEL_MODE: "user",
        }
        if self.security_type is not None:
            labels[LABEL_SECURITY_TYPE] = self.security_type
        if self.gpus > 0:
            labels[LABEL_ACCELERATOR] = "nvidia"
        labels.update(self.labels)
        if LABEL_ASSURANCE in labels:
            raise ValueError(f"node {self.name}: {LABEL_ASSURANCE} is the agent's to set, not the node's")
        return labels

    def resources(self) -> dict[str, str]:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.max_pods),
            "ephemeral-storage": "100Gi",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        }
        if self.gpus > 0:
            resources[GPU_RESOURCE] = str(self.gpus)
        return resources


class Node:
    """One registered node: its Lease heartbeat and its pod watch, each run in a thread by the double."""

    def __init__(self, double: NodeDouble, spec: NodeSpec, kube: KubeClient) -> None:
        self.double, self.spec, self.kube = double, spec, kube
        self.name = spec.name
        self.uid = ""
        self.threads: list[threading.Thread] = []

    # registration and heartbeat -------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        heartbeat = now()
        resources = self.spec.resources()

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": self.double._started_at,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
                ),
                condition(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                condition(
                    "Ready", "True", "KubeletReady", "kubelet is posting ready status (aicert node double)"
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.sha256(self.name.encode()).hexdigest()[:32],
                "systemUUID": hashlib.sha256(b"uuid" + self.name.encode()).hexdigest()[:32],
                "bootID": self.double._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "aicert node double (bubblewrap)",
                "containerRuntimeVersion": "bwrap://0.8",
                "kubeletVersion": _kubernetes_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    def register(self) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.spec.node_labels(),
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {},
            "status": self._status(),
        }
        if self.spec.taints:
            body["spec"]["taints"] = [dict(t) for t in self.spec.taints]
        try:
            node = self.kube.request("POST", "/api/v1/nodes", body=body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = self.kube.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                body={"metadata": {"labels": self.spec.node_labels()}},
                content_type=MERGE_PATCH,
            )
        self.uid = str(node["metadata"]["uid"])
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            body={"status": self._status()},
            content_type=MERGE_PATCH,
        )

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            self.kube.request("PATCH", f"{path}/{self.name}", body={"spec": spec}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
            self.kube.request(
                "POST",
                path,
                body={
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": NODE_LEASE_NAMESPACE,
                        "ownerReferences": [owner],
                    },
                    "spec": spec,
                },
            )

    def heartbeat_loop(self) -> None:
        beats = 0
        while not self.double._stop.wait(self.double.heartbeat_seconds):
            beats += 1
            try:
                self.renew_lease()
                if beats % 6 == 0:
                    self.post_status()
            except Exception as exc:
                if not self.double.stopping:
                    log.warning("node %s: heartbeat failed: %s", self.name, exc)

    # pods -----------------------------------------------------------------------------------------

    def watch_loop(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.name}"}
        while not self.double.stopping:
            try:
                listed = self.kube.request("GET", "/api/v1/pods", query=selector)
                version = str(listed["metadata"]["resourceVersion"])
                seen = set()
                for pod in listed.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.double._on_pod(self, pod)
                self.double._forget_missing(self, seen)
                while not self.double.stopping:
                    stream = self.kube.watch(
                        "/api/v1/pods",
                        {
                            **selector,
                            "resourceVersion": version,
                            "allowWatchBookmarks": "true",
                            "timeoutSeconds": "60",
                        },
                        timeout=90,
                    )
                    expired = False
                    with self.double._track(stream):
                        for event in stream:
                            kind, obj = event.get("type"), event.get("object") or {}
                            if kind == "ERROR":
                                expired = True
                                break
                            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                            if kind == "BOOKMARK":
                                continue
                            self.double._on_pod(self, obj, deleted=kind == "DELETED")
                    if expired:
                        break
            except Exception as exc:
                if self.double.stopping:
                    return
                log.warning("node %s: pod watch failed, listing again: %s", self.name, exc)
                self.double._stop.wait(1.0)
