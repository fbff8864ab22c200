"""The whole product on one machine: control plane, real nodes, a swtpm per TPM node, operator, agents.

Used by the e2e tests, the cluster demo and the scale benchmark. Everything runs as on AKS except the
hardware: upstream kubelet, containerd and runc run every pod (realnode), the operator is the chart
helm/aicert's Deployment and the agent its DaemonSet (release "aicert" in aicert-system, with the
chart's RBAC and admission policies), all from the images `make images` builds. Each TPM node has a
swtpm of its own, provisioned with a dev CA, listening on the node's IP, where that node's agent pod
reaches it (agent.tpm.tcti). Pods reach the API server at the cluster's own address
(values kubernetesService: there is no kube-proxy here). kube-network-policies enforces the
cluster's NetworkPolicies for every node's pods, their traffic to their own node included.

    with Stack(workdir, agent_layout=..., operator_layout=...) as stack:
        ref = stack.build_image("registry.local/job", files={...}, entrypoint=[...])
        stack.cluster.kubectl("apply", ...)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import dev_provision
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster import helm
from aicert_localcluster.cluster import LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.node_labels import aks_node_labels
from aicert_localcluster.provisioner import STORAGE_CLASS, LocalProvisioner
from aicert_localcluster.realnode import RealNode, RealNodeError, faults, free_node_index
from aicert_localcluster.realnode.netpol import NetworkPolicyEnforcer, NetworkPolicyError
from aicert_localcluster.registry import Registry
from aicert_localcluster.workload_pods import AgentPod, OperatorPods

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "certifiedtrainings.aicert.dev.yaml"
# The stack's registry serves this name to the nodes (as ACR serves <name>.azurecr.io): images keep
# one name on every machine and in every run, whatever port the registry has.
REGISTRY_NAME = "registry.local"
AGENT_REPOSITORY = f"{REGISTRY_NAME}/aicert/agent"  # the images built by `make images`
OPERATOR_REPOSITORY = f"{REGISTRY_NAME}/aicert/operator"
OPERATOR_REPLICAS = 2  # as the chart's default: one leads, one stands by
DEV_CA_CONFIGMAP = "aicert-dev-ca"  # the agent DaemonSet's trust bundle (agent.trustBundles)
SYSTEM_NAMESPACE = helm.SYSTEM_NAMESPACE
SWTPM_PORT = 2321  # on each TPM node's IP (control channel on the next port)
GPUS_PER_NODE = 2  # a run and a copy of its pod (red-team tests) fit on one node
# What the chart's aicert-training-pods policy says to a non-operator creating a training pod
ADMISSION_PROBE_MESSAGE = "only the aicert operator may create pods with aicert.dev/ labels"


def _image_values(reference: str) -> dict[str, str]:
    """The chart's image values for `repository@sha256:<hex>`."""
    repository, _, digest = reference.partition("@")
    return {"repository": repository, "digest": digest}


@dataclass
class Stack:
    workdir: Path
    # The OCI layouts of the agent and operator images (`make images`): the chart's DaemonSet and
    # Deployment run from them, and the training pods' gate and seal containers from the agent's.
    agent_layout: Path
    operator_layout: Path
    tpm_nodes: tuple[str, ...] = ("gpu-1", "gpu-2")
    plain_nodes: tuple[str, ...] = ("cpu-1",)  # no TPM, no agent: the system pool, with the operator
    assurance: str = "dev"  # what a swtpm with a dev CA can honestly claim
    bin_dir: Path | None = None  # the control plane's binaries (None: built or found in the cache)
    node_bin_dir: Path | None = None  # the nodes' binaries (likewise)
    audit: bool = False  # kube-apiserver's audit log: requests by client (benchmarks)
    agent_image: str = field(init=False)  # registry.local/aicert/agent@sha256:..., as the nodes pull it
    operator_image: str = field(init=False)
    previous_agent_image: str | None = field(default=None, init=False)  # agent.previousImage (`upgrade`)
    cluster: LocalCluster = field(init=False)
    registry: Registry = field(init=False)
    enforcer: NetworkPolicyEnforcer = field(init=False)
    images: ImageStore = field(init=False)
    ca: DevCA = field(init=False)
    swtpms: dict[str, Swtpm] = field(default_factory=dict, init=False)
    nodes: dict[str, RealNode] = field(default_factory=dict, init=False)
    operator: OperatorPods = field(init=False)
    provisioner: LocalProvisioner = field(init=False)
    agents: dict[str, AgentPod] = field(default_factory=dict, init=False)

    @property
    def ca_pem(self) -> Path:
        return self.workdir / "ca" / "dev-ca.pem"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalCluster(
            self.workdir / "cluster", bin_dir=self.bin_dir, audit=self.audit, pod_network=True
        )
        self.cluster.start()
        self.cluster.wait_ready()
        self.cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "crd/certifiedtrainings.aicert.dev", "--timeout=60s"
        )
        # The chart's ServiceAccounts, RBAC, tenant roles and admission policies; its workloads below.
        manifest = helm.policy_manifest(home=self.workdir / "helm")
        self.cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE)
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
        self.wait_for_admission()
        self.ca = DevCA.load_or_create(self.workdir / "ca")
        self.images = ImageStore(self.workdir / "images")
        self.registry = Registry(self.workdir / "registry")
        self.registry.start()
        self.agent_image = self._publish(self.images.add_layout(self.agent_layout, AGENT_REPOSITORY))
        self.operator_image = self._publish(self.images.add_layout(self.operator_layout, OPERATOR_REPOSITORY))
        self._start_nodes()
        # NetworkPolicies enforced for every node's pods (kube-network-policies, one for the host)
        self.enforcer = NetworkPolicyEnforcer(
            self.cluster, self.workdir / "netpol", nodes=list(self.nodes.values())
        )
        self.enforcer.start()
        for name in self.tpm_nodes:
            node = self.nodes[name]
            tpm = Swtpm(self.workdir / f"tpm-{name}", host=node.node_ip, port=SWTPM_PORT)
            tpm.start()
            self.swtpms[name] = tpm
            with Tpm(tpm.spec) as client:
                dev_provision(client, self.ca)
        self.provisioner = LocalProvisioner(
            self.cluster.admin_kubeconfig, self.workdir / "volumes", self.tpm_nodes
        )
        self.provisioner.start()
        self.operator = self._operator_deployment()
        self.operator.start()
        self._agent_daemonset()
        for name in self.tpm_nodes:
            self.agents[name] = AgentPod(self.cluster, self.nodes, name, SYSTEM_NAMESPACE)
            self.agents[name].start()
        self.wait_for_label()

    def _start_nodes(self) -> None:
        """Every node; the agent image on the TPM nodes, the operator's on the plain ones (the pools
        whose pods use them)."""
        for name in [*self.tpm_nodes, *self.plain_nodes]:
            tpm = name in self.tpm_nodes
            # One after another, from this thread: a node's processes die with the thread that
            # started them (PR_SET_PDEATHSIG), so never from a pool's worker thread.
            self.nodes[name] = self._start_node(
                name,
                registries=[self.registry.host],
                gpus=GPUS_PER_NODE if tpm else 0,
                labels=aks_node_labels(
                    "TrustedLaunch" if tpm else None,
                    gpus=GPUS_PER_NODE if tpm else 0,
                    agentpool="gpu" if tpm else "system",
                ),
            )

    def _start_node(
        self, name: str, *, registries: list[str], gpus: int, labels: Mapping[str, str]
    ) -> RealNode:
        """A started node on the lowest free index (another one if someone else claims it first)."""
        for attempt in range(1, 6):
            node = RealNode(
                self.cluster,
                self.workdir / f"node-{name}",
                name=name,
                index=free_node_index(),
                gpus=gpus,
                bin_dir=self.node_bin_dir,
                labels=labels,
                registries=registries,
                registry_names={REGISTRY_NAME: registries[0]},
            )
            try:
                node.start()
            except RealNodeError as exc:
                if "is in use" not in str(exc) or attempt == 5:
                    raise
                continue
            return node
        raise AssertionError("unreachable")

    def build_image(
        self,
        repository: str,
        files: Mapping[str, bytes],
        entrypoint: list[str],
        cmd: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/app",
    ) -> str:
        """A training image: the agent image's Debian, Python and venv with `files` under /app on top
        (FROM the agent image, as its user), pushed to the stack's registry; returns its digest
        reference there, which nodes pull."""
        reference = self.images.build(
            repository,
            files=files,
            entrypoint=entrypoint,
            cmd=cmd,
            env=dict(env or {}),
            workdir=workdir,
            base=self.agent_image,
        )
        return self._publish(reference)

    def _publish(self, local_reference: str) -> str:
        """Push an image of the local store (named registry.local/...) to the registry (which checks
        the digest it serves); the nodes pull it under that same name and digest, which this returns."""
        self.registry.push(self.images.layout, local_reference)
        return local_reference

    def _chart_values(self) -> dict[str, object]:
        values: dict[str, object] = {
            **helm.POLICY_VALUES,
            "operator.image": _image_values(self.operator_image),
            "agent.image": _image_values(self.agent_image),
            "kubernetesService.host": self.cluster.api_address,
            "kubernetesService.port": str(self.cluster.apiserver_port),
        }
        if self.previous_agent_image is not None:
            values["agent.previousImage"] = _image_values(self.previous_agent_image)
        return values

    def release_variant(self, marker: str) -> tuple[str, str]:
        """The agent and operator images of a new release, as far as digests go: the stack's current
        ones with a file /app/release holding `marker` on top (same code, another digest), pushed to
        the registry. Returns (agent image, operator image)."""
        files = {"release": marker.encode()}
        agent = self.images.build(
            AGENT_REPOSITORY,
            files=files,
            entrypoint=["/opt/venv/bin/aicert-agent"],  # images/agent.Dockerfile's
            cmd=None,
            workdir="/",
            base=self.agent_image,
        )
        operator = self.images.build(
            OPERATOR_REPOSITORY,
            files=files,
            entrypoint=["/opt/venv/bin/python", "-m", "aicert_operator"],  # images/operator.Dockerfile's
            cmd=None,
            workdir="/",
            base=self.operator_image,
        )
        return self._publish(agent), self._publish(operator)

    def upgrade(
        self, *, agent_image: str, operator_image: str, previous_agent_image: str | None, timeout: float = 300
    ) -> None:
        """What `helm upgrade` does to the workloads, as this stack deploys them (`helm template` and
        server-side apply, as GitOps does: no `lookup`, so the previous agent image is given as
        agent.previousImage): the operator Deployment and the agent DaemonSet with these images,
        rolled out (the agents node by node, the chart's default strategy). Returns once every
        replica and every node's agent runs the new images and the nodes carry their label again."""
        self.agent_image, self.operator_image = agent_image, operator_image
        self.previous_agent_image = previous_agent_image
        replaced = self.operator
        self.operator = self._operator_deployment()
        self.operator.started_pods = replaced.started_pods  # tail() goes on over the old replicas' logs
        self._apply_agent_daemonset()
        daemonset = next(
            d["metadata"]["name"]
            for d in self.cluster.kubectl_json("get", "daemonsets", "-n", SYSTEM_NAMESPACE)["items"]
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
        )
        for workload in (f"daemonset/{daemonset}", f"deployment/{self.operator.deployment}"):
            self.cluster.kubectl(
                "rollout", "status", workload, "-n", SYSTEM_NAMESPACE, f"--timeout={int(timeout)}s"
            )
        self.operator.start(timeout)
        for agent in self.agents.values():
            agent.start(timeout)
        self.wait_for_label(timeout)

    def _operator_deployment(self) -> OperatorPods:
        """The chart's operator Deployment (short lease and agent checks), on the plain nodes."""
        values: dict[str, object] = {
            **self._chart_values(),
            "operator.deploy": True,
            "operator.replicas": OPERATOR_REPLICAS,
            "operator.leaseSeconds": 6,
            "operator.agentCheckSeconds": 1,
            "operator.nodeSelector": {"kubernetes.azure.com/agentpool": "system"},
        }
        manifest = helm.template(
            values, show_only=["templates/operator-deployment.yaml"], home=self.workdir / "helm"
        )
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
        name = next(
            d["metadata"]["name"]
            for d in self.cluster.kubectl_json("get", "deployments", "-n", SYSTEM_NAMESPACE)["items"]
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
        )
        return OperatorPods(self.cluster, self.nodes, SYSTEM_NAMESPACE, name, OPERATOR_REPLICAS)

    def _agent_daemonset(self) -> None:
        """The chart's agent DaemonSet: each pod reaches its node's swtpm on the node's IP, trusts the
        dev CA from a ConfigMap; kubelet's root and the state directory are the chart's defaults."""
        self.cluster.kubectl(
            "create",
            "configmap",
            DEV_CA_CONFIGMAP,
            "-n",
            SYSTEM_NAMESPACE,
            f"--from-file=ca.pem={self.ca_pem}",
        )
        self._apply_agent_daemonset()

    def _apply_agent_daemonset(self) -> None:
        values: dict[str, object] = {
            **self._chart_values(),
            "agent.deploy": True,
            "agent.tpm.access": "tcti",
            "agent.tpm.tcti": f"swtpm:host=$(AICERT_HOST_IP),port={SWTPM_PORT}",
            "agent.assurance": self.assurance,
            "agent.trustBundles": [{"configMap": DEV_CA_CONFIGMAP, "key": "ca.pem"}],
            "agent.leaseSeconds": 6,
        }
        manifest = helm.template(
            values, show_only=["templates/agent-daemonset.yaml"], home=self.workdir / "helm"
        )
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)

    def reboot(self, name: str) -> None:
        """Power-cycle node `name` (realnode.faults.reboot): every process gone, /run emptied, its
        swtpm restarted meanwhile (PCRs reset, keys and certificates kept in its NV), then booted."""
        tpm = self.swtpms.get(name)

        def power_cycle_tpm() -> None:
            if tpm is not None:
                tpm.stop(orderly=False)
                tpm.start()

        faults.reboot(self.nodes[name], while_off=power_cycle_tpm)

    def node_of(self, pod: Mapping[str, Any]) -> RealNode:
        """The node a pod is bound to."""
        return self.nodes[str(pod["spec"]["nodeName"])]

    def wait_for_label(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for node in self.tpm_nodes:
            while True:
                labels = self.cluster.kubectl_json("get", "node", node)["metadata"].get("labels", {})
                if labels.get("aicert.dev/assurance") == self.assurance:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"agent on {node} never labelled its node:\n{self.agents[node].tail()}"
                    )
                time.sleep(0.5)

    def wait_for_admission(self, timeout: float = 60) -> None:
        """Wait until the chart's admission policies are enforced, and fail if a policy does not type-check.

        Policies take a moment to load: a harmless probe, a server-side dry-run create of a pod with
        an aicert.dev/ label by the admin (not the operator), must be denied before the stack is ready.
        """
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "aicert-admission-probe",
                "namespace": "default",
                "labels": {"aicert.dev/training": "aicert-admission-probe"},
            },
            "spec": {"containers": [{"name": "probe", "image": "probe"}]},
        }
        deadline = time.monotonic() + timeout
        while True:
            done = self.cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
            )
            if done.returncode != 0 and ADMISSION_PROBE_MESSAGE in done.stderr:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"admission policies not enforced after {timeout}s: {done.stderr}")
            time.sleep(0.2)
        while True:
            policies = [
                p
                for p in self.cluster.kubectl_json("get", "validatingadmissionpolicies")["items"]
                if p["metadata"]["name"].startswith("aicert-")
            ]
            checked = [
                p
                for p in policies
                if (p.get("status") or {}).get("observedGeneration") == p["metadata"]["generation"]
            ]
            if len(checked) == len(policies):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("admission policies were never type-checked")
            time.sleep(0.2)
        warnings = [
            f"{p['metadata']['name']}: {w['fieldRef']}: {w['warning']}"
            for p in policies
            for w in ((p.get("status") or {}).get("typeChecking") or {}).get("expressionWarnings") or []
        ]
        if warnings:
            raise RuntimeError("admission policies do not type-check:\n" + "\n".join(warnings))

    def stop(self) -> None:
        """Stop the nodes (their pods with them), the swtpms, the provisioner and the control plane;
        raise RealNodeError at the end if a node could not undo what it changed on the host."""
        problems: list[str] = []
        nodes, self.nodes = self.nodes, {}
        for node in nodes.values():
            try:
                node.stop()
            except RealNodeError as exc:
                problems.append(str(exc))
        if hasattr(self, "enforcer"):
            try:
                self.enforcer.stop()
            except NetworkPolicyError as exc:
                problems.append(str(exc))
        if hasattr(self, "provisioner"):
            self.provisioner.stop()
        for tpm in self.swtpms.values():
            tpm.close()
        self.swtpms = {}
        if hasattr(self, "registry"):
            self.registry.stop()
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if problems:
            raise RealNodeError("; ".join(problems))

    # --- helpers for tests and the demo ---------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        return self.cluster.kubectl_json("get", kind, name, "-n", namespace)

    def wait_for(
        self, name: str, phases: tuple[str, ...], namespace: str = "default", timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = self.get("certifiedtraining", name, namespace)
            if (body.get("status") or {}).get("phase") in phases:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{namespace}/{name} stayed {body.get('status')!r}\n--- operator\n{self.operator.tail()}\n"
                    + "\n".join(f"--- {n}\n{a.tail()}" for n, a in self.agents.items())
                )
            time.sleep(0.3)

    def tenant(self, namespace: str, name: str = "tenant") -> Path:
        """A tenant: ServiceAccount `name` in `namespace` (both created if missing) bound by a RoleBinding
        to the built-in `edit` ClusterRole, as a team's CI would be; returns a kubeconfig for it.

        Waits until RBAC (and the aggregation of the chart's tenant roles into `edit`) lets it create
        pods and CertifiedTrainings there.
        """
        kubeconfig = self.cluster.kubeconfig_for_service_account(namespace, name)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{name}-edit", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(binding))
        deadline = time.monotonic() + 30
        for resource in ("pods", "certifiedtrainings.aicert.dev"):
            while (
                self.cluster.kubectl(
                    "auth", "can-i", "create", resource, "-n", namespace, kubeconfig=kubeconfig, check=False
                ).stdout.strip()
                != "yes"
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{namespace}/{name} never got to create {resource}")
                time.sleep(0.2)
        return kubeconfig

    def claim_template(self, size: str = "1Gi") -> dict[str, str]:
        """A `spec.output.volumeClaimTemplate` this stack provisions (see claim_dir)."""
        return {"storageClassName": STORAGE_CLASS, "size": size}

    def claim_dir(self, claim: str, namespace: str = "default") -> Path:
        """Where the provisioner keeps a claim's volume on the host."""
        return self.provisioner.path(namespace, claim)

    def local_volume(
        self,
        name: str,
        size: str = "1Gi",
        namespace: str = "default",
        access_mode: str = "ReadWriteOncePod",
        path: Path | None = None,
    ) -> Path:
        """A local PV (a host directory, on the TPM nodes) and a PVC bound to it; returns the directory
        (`path` when given: a second PV on the storage of another).

        `local` rather than `hostPath`: kubelet bind-mounts local PVs under the pod's volume
        directory, which is where the agent measures them in production too. The default access
        mode is what a run's output needs; inputs use ReadOnlyMany.
        """
        nodes = ", ".join(self.tpm_nodes)
        path = path or self.workdir / "volumes" / namespace / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # the training runs as its image's user (the agent image's, 65532)
        manifest = f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{namespace}-{name}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [{access_mode}]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {{namespace: {namespace}, name: {name}}}
  local: {{path: {path}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{nodes}]}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  accessModes: [{access_mode}]
  storageClassName: ""
  volumeName: pv-{namespace}-{name}
  resources: {{requests: {{storage: {size}}}}}
"""
        self.cluster.kubectl("apply", "-f", "-", input=manifest)
        return path
