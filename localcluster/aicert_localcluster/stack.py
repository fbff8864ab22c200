"""The whole product on one machine: control plane, node double, swtpm per TPM node, operator, agents.

Used by the e2e tests, the cluster demo and the scale benchmark. Everything runs as in production
except where a piece of hardware or kubelet is played: the operator and every agent are separate
processes talking to the real API server with their own ServiceAccount tokens and the RBAC of the
chart helm/aicert (rendered by `helm template`, as release "aicert" in aicert-system), so a missing
permission shows up as a failure. Given the images' layouts (the e2e suite), the operator is the
chart's Deployment and the agent its DaemonSet, run from those images by the node double
(workload_pods), and the training pods' gate and seal containers run from the agent image; without
them (demo, benchmarks) the operator and the agents are host processes and gate and seal run with
the host's Python.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import dev_provision
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster import helm
from aicert_localcluster.cluster import LocalCluster, free_port
from aicert_localcluster.images import ImageStore
from aicert_localcluster.nodes import DEV_AGENT_IMAGE, NodeDouble, NodeSpec
from aicert_localcluster.provisioner import STORAGE_CLASS, LocalProvisioner
from aicert_localcluster.workload_pods import AgentPod, OperatorPods

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "certifiedtrainings.aicert.dev.yaml"
AGENT_REPOSITORY = "registry.local/aicert/agent"  # where the images built by `make images` go
OPERATOR_REPOSITORY = "registry.local/aicert/operator"
OPERATOR_REPLICAS = 2  # as the chart's default: one leads, one stands by
DEV_CA_CONFIGMAP = "aicert-dev-ca"  # the agent DaemonSet's trust bundle (agent.trustBundles)
SYSTEM_NAMESPACE = helm.SYSTEM_NAMESPACE
# What the chart's aicert-training-pods policy says to a non-operator creating a training pod
ADMISSION_PROBE_MESSAGE = "only the aicert operator may create pods with aicert.dev/ labels"


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """A product process (operator or agent) with its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it now (SIGKILL by default: a crash, not a shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _image_values(reference: str) -> dict[str, str]:
    """The chart's image values for `repository@sha256:<hex>`."""
    repository, _, digest = reference.partition("@")
    return {"repository": repository, "digest": digest}


@dataclass
class Stack:
    workdir: Path
    tpm_nodes: tuple[str, ...] = ("gpu-1",)
    plain_nodes: tuple[str, ...] = ("cpu-1",)  # no TPM, no agent
    assurance: str = "dev"  # what a swtpm with a dev CA can honestly claim
    bin_dir: Path | None = None
    audit: bool = False  # kube-apiserver's audit log: requests by client (benchmarks)
    # The agent image's OCI layout (`make images`): the agent runs as the chart's DaemonSet from it
    # (one TPM node), and so do the gate and seal containers. None: the agents are host processes
    # and gate and seal run DEV_AGENT_IMAGE with the host's Python (demo, benchmarks).
    agent_layout: Path | None = None
    # The operator image's OCI layout: the operator runs as the chart's Deployment from it (None: a
    # host process).
    operator_layout: Path | None = None
    agent_image: str = field(init=False)
    operator_image: str | None = field(init=False, default=None)
    cluster: LocalCluster = field(init=False)
    images: ImageStore = field(init=False)
    ca: DevCA = field(init=False)
    swtpms: dict[str, Swtpm] = field(default_factory=dict, init=False)
    nodes: NodeDouble = field(init=False)
    operator: Service | OperatorPods = field(init=False)
    provisioner: LocalProvisioner = field(init=False)
    agents: dict[str, Service | AgentPod] = field(default_factory=dict, init=False)

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def ca_pem(self) -> Path:
        return self.workdir / "ca" / "dev-ca.pem"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self.agent_layout is not None and len(self.tpm_nodes) != 1:
            raise ValueError("the agent DaemonSet reaches one swtpm (agent.tpm.tcti): give one TPM node")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalCluster(self.workdir / "cluster", bin_dir=self.bin_dir, audit=self.audit)
        self.cluster.start()
        self.cluster.wait_ready()
        self.cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "crd/certifiedtrainings.aicert.dev", "--timeout=60s"
        )
        # The chart's ServiceAccounts, RBAC, tenant roles and admission policies (no workloads: the
        # operator and the agents run below as host processes with those ServiceAccounts' tokens).
        manifest = helm.policy_manifest(home=self.workdir / "helm")
        self.cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE)
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
        self.wait_for_admission()
        self.ca = DevCA.load_or_create(self.workdir / "ca")
        self.images = ImageStore(self.workdir / "images")
        self.agent_image = (
            self.images.add_layout(self.agent_layout, AGENT_REPOSITORY)
            if self.agent_layout
            else DEV_AGENT_IMAGE
        )
        for node in self.tpm_nodes:
            tpm = Swtpm(self.workdir / f"tpm-{node}")
            tpm.start()
            with Tpm(tpm.spec) as client:
                dev_provision(client, self.ca)
            self.swtpms[node] = tpm
        specs = [NodeSpec(n, "TrustedLaunch") for n in self.tpm_nodes]
        specs += [NodeSpec(n, None, gpus=0, agentpool="system") for n in self.plain_nodes]
        self.nodes = NodeDouble(
            self.cluster,
            kubelet_root=self.kubelet_root,
            images=self.images,
            nodes=specs,
            agent_image=DEV_AGENT_IMAGE,  # the one reference the node double runs with the host's Python
            python_executable=sys.executable,
        )
        self.nodes.start()
        self.provisioner = LocalProvisioner(
            self.cluster.admin_kubeconfig, self.workdir / "volumes", self.tpm_nodes
        )
        self.provisioner.start()
        self.operator = self._operator() if self.operator_layout is None else self._operator_deployment()
        self.operator.start()
        if self.agent_layout is not None:
            self._agent_daemonset()
        for node in self.tpm_nodes:
            self.agents[node] = (
                self._agent(node)
                if self.agent_layout is None
                else AgentPod(self.cluster, self.nodes, node, SYSTEM_NAMESPACE)
            )
            self.agents[node].start()
        self.wait_for_label()

    def _env(self, kubeconfig: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "AICERT_"))}
        return {**env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **extra}

    def _operator(self) -> Service:
        kubeconfig = self.cluster.kubeconfig_for_service_account(
            SYSTEM_NAMESPACE, "aicert-operator", expiration_seconds=86400
        )
        env = self._env(
            kubeconfig,
            AICERT_AGENT_IMAGE=self.agent_image,
            AICERT_METRICS_PORT=str(free_port()),
            AICERT_HEALTH_PORT=str(free_port()),
            AICERT_LEASE_SECONDS="6",
            AICERT_AGENT_CHECK_SECONDS="1",
        )
        return Service(
            "operator", [sys.executable, "-m", "aicert_operator"], env, self.workdir / "logs" / "operator.log"
        )

    def _operator_deployment(self) -> OperatorPods:
        """The chart's operator Deployment from the operator image (its ports free on this host,
        whose network every pod of the double shares; short lease and agent checks as the host
        operator's)."""
        assert self.operator_layout is not None
        self.operator_image = operator_image = self.images.add_layout(
            self.operator_layout, OPERATOR_REPOSITORY
        )
        values: dict[str, object] = {
            **helm.POLICY_VALUES,
            "operator.deploy": True,
            "operator.image": _image_values(operator_image),
            "agent.image": _image_values(self.agent_image),
            "operator.replicas": OPERATOR_REPLICAS,
            "operator.metricsPort": free_port(),
            "operator.healthPort": free_port(),
            "operator.leaseSeconds": 6,
            "operator.agentCheckSeconds": 1,
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
        """The chart's agent DaemonSet, rendered for the node double: the built agent image, the
        swtpm through a TCTI, the double's kubelet root, the dev CA from a ConfigMap."""
        (node,) = self.tpm_nodes
        values: dict[str, object] = {
            **helm.POLICY_VALUES,
            "agent.deploy": True,
            "agent.image": _image_values(self.agent_image),
            "agent.tpm.access": "tcti",
            "agent.tpm.tcti": self.swtpms[node].spec,
            "agent.kubeletRoot": str(self.kubelet_root),
            "agent.stateDir": str(self.workdir / f"agent-{node}"),
            "agent.assurance": self.assurance,
            "agent.trustBundles": [{"configMap": DEV_CA_CONFIGMAP, "key": "ca.pem"}],
            "agent.metricsPort": free_port(),
            "agent.leaseSeconds": 6,
            "agent.criSocket": "",  # the node double has no CRI; a RealNode's is layout.containerd_socket
        }
        manifest = helm.template(
            values, show_only=["templates/agent-daemonset.yaml"], home=self.workdir / "helm"
        )
        self.cluster.kubectl(
            "create",
            "configmap",
            DEV_CA_CONFIGMAP,
            "-n",
            SYSTEM_NAMESPACE,
            f"--from-file=ca.pem={self.ca_pem}",
        )
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)

    def _agent_pod(self, node: str) -> tuple[str, str]:
        """The agent's pod on `node` (as its DaemonSet would have): a token bound to it names the node.

        The node double runs it as a placeholder; the agent itself runs as a host process with a
        token bound to this pod, so the API server sees what it would see from a DaemonSet pod.
        """
        name = f"aicert-agent-{node}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": {"app": "aicert-agent"}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "aicert-agent",
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "agent",
                        "image": self.agent_image,
                        "command": ["python", "-c", "import time; time.sleep(10**9)"],
                    }
                ],
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        uid = str(self.cluster.kubectl_json("get", "pod", name, "-n", SYSTEM_NAMESPACE)["metadata"]["uid"])
        return name, uid

    def _agent(self, node: str) -> Service:
        kubeconfig = self.cluster.kubeconfig_for_service_account(
            SYSTEM_NAMESPACE, "aicert-agent", bound_pod=self._agent_pod(node), expiration_seconds=86400
        )
        argv = [
            sys.executable,
            "-m",
            "aicert_agent",
            "--tpm",
            self.swtpms[node].spec,
            "--state-dir",
            str(self.workdir / f"agent-{node}"),
            "serve",
            "--node",
            node,
            "--kubelet-root",
            str(self.kubelet_root),
            "--assurance",
            self.assurance,
            "--trust-bundle",
            str(self.ca_pem),
            "--metrics-port",
            str(free_port()),
            "--lease-seconds",
            "6",
        ]
        return Service(
            f"agent-{node}",
            argv,
            self._env(kubeconfig, AICERT_AGENT_IMAGE=self.agent_image),
            self.workdir / "logs" / f"agent-{node}.log",
        )

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
        for service in [*self.agents.values(), getattr(self, "operator", None)]:
            if isinstance(service, Service):  # an AgentPod ends with the node double
                service.kill(signal.SIGTERM)
        if hasattr(self, "nodes"):
            self.nodes.stop()
        if hasattr(self, "provisioner"):
            self.provisioner.stop()
        for tpm in self.swtpms.values():
            tpm.close()
        if hasattr(self, "cluster"):
            self.cluster.stop()

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
