"""The node agent as users run it: the chart's DaemonSet, its pod run by the node double from the
agent image (`make images`), reaching the node's swtpm through `agent.tpm.access=tcti`.

`AgentPod` is one node's agent with the handle a host-process agent has (`start`, `kill`, `running`,
`tail`, `env["KUBECONFIG"]`), so the e2e tests crash and revive either kind the same way:

- `kill()` crashes it: SIGKILL of the agent container (no SIGTERM, nothing flushed), then the node
  loses the `aicert.dev/agent` label so that the DaemonSet does not bring a new pod meanwhile;
- `start()` labels the node again and waits for the DaemonSet's new pod to run the agent;
- `env["KUBECONFIG"]` is a kubeconfig with a token bound to the current pod, so it names the node
  as the pod's own projected token does (for tests that act with the agent's identity).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cluster import LocalCluster
from .kubelet import NodeDouble

AGENT_NODE_LABEL = "aicert.dev/agent"  # the chart's default agent.nodeSelector
AGENT_CONTAINER = "agent"
AGENT_SELECTOR = "app.kubernetes.io/component=agent"


class AgentPod:
    def __init__(self, cluster: LocalCluster, nodes: NodeDouble, node: str, namespace: str) -> None:
        self.cluster, self.nodes, self.node, self.namespace = cluster, nodes, node, namespace
        self.started_pods: list[str] = []  # the uid of every agent pod seen running, in order

    def _listed(self) -> list[dict[str, Any]]:
        """The agent pods on the node, terminating ones included."""
        listed = self.cluster.kubectl_json(
            "get",
            "pods",
            "-n",
            self.namespace,
            "-l",
            AGENT_SELECTOR,
            "--field-selector",
            f"spec.nodeName={self.node}",
        )
        return list(listed["items"])

    def _pods(self) -> list[dict[str, Any]]:
        return [p for p in self._listed() if not p["metadata"].get("deletionTimestamp")]

    def _running_pod(self) -> dict[str, Any] | None:
        for pod in self._pods():
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if any(s["name"] == AGENT_CONTAINER and "running" in (s.get("state") or {}) for s in statuses):
                return pod
        return None

    @property
    def running(self) -> bool:
        return self._running_pod() is not None

    def start(self, timeout: float = 120) -> None:
        """Label the node for the DaemonSet and wait until its pod runs the agent."""
        self.cluster.kubectl("label", "node", self.node, f"{AGENT_NODE_LABEL}=true", "--overwrite")
        deadline = time.monotonic() + timeout
        while (pod := self._running_pod()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent DaemonSet's pod never ran on {self.node}:\n{self.tail()}")
            time.sleep(0.3)
        uid = str(pod["metadata"]["uid"])
        if uid not in self.started_pods:
            self.started_pods.append(uid)

    def kill(self, timeout: float = 60) -> None:
        """Crash the agent (SIGKILL) and keep it down until `start()`."""
        pod = self._running_pod()
        if pod is not None:
            self.nodes.crash(str(pod["metadata"]["uid"]), AGENT_CONTAINER)
        self.cluster.kubectl("label", "node", self.node, f"{AGENT_NODE_LABEL}-")
        deadline = time.monotonic() + timeout
        while self._listed():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent pod on {self.node} was never removed")
            time.sleep(0.3)

    @property
    def env(self) -> Mapping[str, str]:
        pod = self._running_pod()
        if pod is None:
            raise RuntimeError(f"no agent runs on {self.node}")
        bound = (str(pod["metadata"]["name"]), str(pod["metadata"]["uid"]))
        kubeconfig = self.cluster.kubeconfig_for_service_account(
            self.namespace, str(pod["spec"]["serviceAccountName"]), bound_pod=bound
        )
        return {"KUBECONFIG": str(kubeconfig)}

    def tail(self, lines: int = 40) -> str:
        """The last lines of the agent container's output, of every pod it ran in."""
        out: list[str] = []
        for uid in self.started_pods:
            path: Path | None = self.nodes.log_paths(uid).get(AGENT_CONTAINER)
            if path is not None and path.exists():
                out += path.read_text(errors="replace").splitlines()
        return "\n".join(out[-lines:])
