"""The operator and the agent as users run them: the chart's Deployment and DaemonSet, their pods run
by the real nodes from the images `make images` builds.

`AgentPod` (one node's agent) and `OperatorPods` (the operator's replicas) give the e2e tests one
handle for either (`start`, `kill`, `running`, `tail`, `env["KUBECONFIG"]`):

- `kill()` crashes it: SIGKILL of the container's process through containerd (nothing flushed, no
  SIGTERM), then the workload is kept from bringing a pod back meanwhile: the agent's node loses its
  `aicert.dev/agent` label (the DaemonSet's nodeSelector), the operator's Deployment is scaled to 0,
  and the old pods go (kubelet may have restarted the killed container for the moment before);
- `start()` undoes that and waits until a new pod runs the container;
- `env["KUBECONFIG"]` is a kubeconfig with a token of the workload's ServiceAccount bound to a
  running pod (for an agent, that names the node, as its projected token does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .cluster import LocalCluster
from .realnode import RealNode, RealNodeError

AGENT_NODE_LABEL = "aicert.dev/agent"  # the chart's default agent.nodeSelector


def log_text(line: str) -> str:
    """The text of one line of a CRI container log (`<time> <stream> <P|F> <text>`)."""
    parts = line.split(" ", 3)
    return parts[3] if len(parts) == 4 and parts[2] in ("P", "F") else line


class WorkloadPods:
    """The pods of one chart workload (`selector`), whose container `container` is the product."""

    def __init__(
        self,
        cluster: LocalCluster,
        nodes: Mapping[str, RealNode],
        namespace: str,
        selector: str,
        container: str,
    ) -> None:
        self.cluster, self.nodes, self.namespace = cluster, nodes, namespace
        self.selector, self.container = selector, container
        self.started_pods: list[dict[str, Any]] = []  # every pod seen running, in order

    def _listed(self) -> list[dict[str, Any]]:
        """The workload's pods, terminating ones included."""
        listed = self.cluster.kubectl_json("get", "pods", "-n", self.namespace, "-l", self.selector)
        return list(listed["items"])

    def _running_pods(self) -> list[dict[str, Any]]:
        running = []
        for pod in self._listed():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if any(s["name"] == self.container and "running" in (s.get("state") or {}) for s in statuses):
                running.append(pod)
        return running

    @property
    def running(self) -> bool:
        return bool(self._running_pods())

    def _wait_running(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(pods := self._running_pods()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.selector}: {len(pods)} of {count} pods run:\n{self.describe()}\n{self.tail()}"
                )
            time.sleep(0.3)
        seen = {p["metadata"]["uid"] for p in self.started_pods}
        self.started_pods += [p for p in pods if p["metadata"]["uid"] not in seen]

    def describe(self) -> str:
        """Each pod's phase, node and container states, and the namespace's warning events."""
        lines = []
        for pod in self._listed():
            status = pod.get("status") or {}
            states = [
                f"{c['name']}: {next(iter(c.get('state') or {'?': None}))} "
                f"{((c.get('state') or {}).get('waiting') or (c.get('state') or {}).get('terminated') or {}).get('message', '')}"
                for c in [
                    *(status.get("initContainerStatuses") or []),
                    *(status.get("containerStatuses") or []),
                ]
            ]
            lines.append(
                f"{pod['metadata']['name']} on {pod['spec'].get('nodeName')}: {status.get('phase')} {states}"
            )
        events = self.cluster.kubectl(
            "get", "events", "-n", self.namespace, "--field-selector=type=Warning", check=False
        ).stdout
        return "\n".join([*lines, events])

    def _container_id(self, pod: Mapping[str, Any]) -> str:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status["name"] == self.container and status.get("containerID"):
                return str(status["containerID"])
        raise RealNodeError(f"pod {pod['metadata']['name']} has no {self.container} container ID")

    def _crash(self, hold: Callable[[], object], timeout: float) -> None:
        """SIGKILL every running container, then `hold` (keep new pods from coming), then wait until
        the old pods are gone."""
        for pod in self._running_pods():
            self.nodes[pod["spec"]["nodeName"]].kill_container(self._container_id(pod))
        hold()
        deadline = time.monotonic() + timeout
        while self._listed():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.selector}: the pods were never removed")
            time.sleep(0.3)

    @property
    def env(self) -> Mapping[str, str]:
        pods = self._running_pods()
        if not pods:
            raise RuntimeError(f"no pod of {self.selector} runs")
        pod = pods[0]
        bound = (str(pod["metadata"]["name"]), str(pod["metadata"]["uid"]))
        kubeconfig = self.cluster.kubeconfig_for_service_account(
            self.namespace, str(pod["spec"]["serviceAccountName"]), bound_pod=bound
        )
        return {"KUBECONFIG": str(kubeconfig)}

    def tail(self, lines: int = 40) -> str:
        """The last lines of the container's output, over every pod and restart it ran in."""
        out: list[str] = []
        for pod in self.started_pods:
            node = self.nodes.get(str(pod["spec"].get("nodeName")))
            if node is None:
                continue
            meta = pod["metadata"]
            for path in node.container_logs(meta["namespace"], meta["name"], meta["uid"], self.container):
                try:
                    out += [log_text(line) for line in path.read_text(errors="replace").splitlines()]
                except OSError:
                    continue
        return "\n".join(out[-lines:])


class AgentPod(WorkloadPods):
    """One node's agent: the chart's DaemonSet's pod on `node`."""

    def __init__(
        self, cluster: LocalCluster, nodes: Mapping[str, RealNode], node: str, namespace: str
    ) -> None:
        selector = "app.kubernetes.io/component=agent"
        super().__init__(cluster, nodes, namespace, selector, container="agent")
        self.node = node

    def _listed(self) -> list[dict[str, Any]]:
        return [p for p in super()._listed() if p["spec"].get("nodeName") == self.node]

    def start(self, timeout: float = 120) -> None:
        """Label the node for the DaemonSet and wait until its pod runs the agent."""
        self.cluster.kubectl("label", "node", self.node, f"{AGENT_NODE_LABEL}=true", "--overwrite")
        self._wait_running(1, timeout)

    def kill(self, timeout: float = 60) -> None:
        """Crash the agent (SIGKILL) and keep it down until `start()`."""
        self._crash(lambda: self.cluster.kubectl("label", "node", self.node, f"{AGENT_NODE_LABEL}-"), timeout)


class OperatorPods(WorkloadPods):
    """The operator's replicas: the chart's Deployment `deployment`."""

    def __init__(
        self,
        cluster: LocalCluster,
        nodes: Mapping[str, RealNode],
        namespace: str,
        deployment: str,
        replicas: int,
    ) -> None:
        selector = "app.kubernetes.io/component=operator"
        super().__init__(cluster, nodes, namespace, selector, container="operator")
        self.deployment, self.replicas = deployment, replicas

    def _scale(self, replicas: int) -> None:
        self.cluster.kubectl(
            "scale", "deployment", self.deployment, "-n", self.namespace, f"--replicas={replicas}"
        )

    def start(self, timeout: float = 120) -> None:
        """Scale the Deployment back up and wait until every replica runs."""
        self._scale(self.replicas)
        self._wait_running(self.replicas, timeout)

    def kill(self, timeout: float = 60) -> None:
        """Crash every replica (SIGKILL) and keep the operator down until `start()`."""
        self._crash(lambda: self._scale(0), timeout)
