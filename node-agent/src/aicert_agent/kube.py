"""The agent's Kubernetes calls, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from aicert.contract.status import REPORTER_AGENT
from aicert.training import FIELD_MANAGER_AGENT, LABEL_ASSURANCE, LABEL_TRAINING
from aicert_kube import TrainingClient


class AgentKube(TrainingClient):
    def __init__(self, api_client: client.ApiClient, node: str) -> None:
        super().__init__(
            api_client,
            field_manager=FIELD_MANAGER_AGENT,
            controller=REPORTER_AGENT,
            instance=f"aicert-agent-{node}",
        )
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.node = node

    def _plain(self, obj: Any) -> Any:
        return self.api_client.sanitize_for_serialization(obj)

    def pods_on_node(self) -> tuple[list[dict[str, Any]], str]:
        result = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", label_selector=LABEL_TRAINING
        )
        version = result.metadata.resource_version if result.metadata else ""
        return self._plain(result.items), str(version)

    def watch_pods(self, resource_version: str, timeout: int = 60) -> Iterator[dict[str, Any]]:
        stream = watch.Watch().stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={self.node}",
            label_selector=LABEL_TRAINING,
            resource_version=resource_version,
            timeout_seconds=timeout,
        )
        for event in stream:
            yield self._plain(event["object"])

    def pods_in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        """Every pod of the namespace, on any node: who else mounts a run's claims."""
        pods: list[dict[str, Any]] = self._plain(self.core.list_namespaced_pod(namespace).items)
        return pods

    def network_policies(self, namespace: str) -> list[dict[str, Any]]:
        policies: list[dict[str, Any]] = self._plain(
            self.networking.list_namespaced_network_policy(namespace).items
        )
        return policies

    def get_claim(self, namespace: str, claim: str) -> dict[str, Any]:
        try:
            pvc: dict[str, Any] = self._plain(
                self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"PVC {namespace}/{claim} does not exist") from None
            raise
        return pvc

    def pv_of_claim(self, namespace: str, claim: str) -> str:
        name = (self.get_claim(namespace, claim).get("spec") or {}).get("volumeName")
        if not name:
            raise LookupError(f"PVC {namespace}/{claim} is not bound to a volume")
        return str(name)

    def label_node(self, level: str | None) -> None:
        """Set (or, with None, remove) this node's aicert.dev/assurance label."""
        self.core.patch_node(self.node, {"metadata": {"labels": {LABEL_ASSURANCE: level}}})
