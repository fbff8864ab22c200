"""The agent's Kubernetes calls, and nothing else. Objects are read as plain JSON (`raw_json`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert_contract.status import REPORTER_AGENT
from aicert_contract.training import FIELD_MANAGER_AGENT, LABEL_ASSURANCE, LABEL_TRAINING
from aicert_kube import TrainingClient, raw_json


class AgentKube(TrainingClient):
    def __init__(self, api_client: client.ApiClient, node: str) -> None:
        super().__init__(
            api_client,
            field_manager=FIELD_MANAGER_AGENT,
            controller=REPORTER_AGENT,
            instance=f"aicert-agent-{node}",
        )
        self.core = client.CoreV1Api(api_client)
        self.node = node

    def pods_on_node(self) -> tuple[list[dict[str, Any]], str]:
        result = raw_json(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={self.node}",
            label_selector=LABEL_TRAINING,
        )
        return list(result["items"]), str(result["metadata"].get("resourceVersion", ""))

    def watch_pods(self, resource_version: str, timeout: int = 60) -> Iterator[tuple[str, dict[str, Any]]]:
        """The pods bound to this node as they change: (ADDED|MODIFIED|DELETED, plain object)."""
        response: Any = self.core.list_pod_for_all_namespaces(  # a streamed urllib3 response
            field_selector=f"spec.nodeName={self.node}",
            label_selector=LABEL_TRAINING,
            resource_version=resource_version,
            timeout_seconds=timeout,
            watch=True,
            _preload_content=False,
        )
        try:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":  # e.g. 410 Gone: the caller lists afresh
                    status = event.get("object") or {}
                    raise ApiException(status=status.get("code"), reason=status.get("message"))
                yield str(event.get("type")), event["object"]
        finally:
            response.release_conn()

    def pods_in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods that have not finished, on any node: who else mounts a run's claims
        (a finished pod's volumes are unmounted)."""
        live = "status.phase!=Succeeded,status.phase!=Failed"
        return list(raw_json(self.core.list_namespaced_pod, namespace, field_selector=live)["items"])

    def get_claim(self, namespace: str, claim: str) -> dict[str, Any]:
        try:
            pvc: dict[str, Any] = raw_json(
                self.core.read_namespaced_persistent_volume_claim, claim, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"PVC {namespace}/{claim} does not exist") from None
            raise
        return pvc

    def volumes(self) -> list[dict[str, Any]]:
        """Every PersistentVolume: which other PVs share the storage of a run's claims."""
        return list(raw_json(self.core.list_persistent_volume)["items"])

    def label_node(self, level: str | None) -> None:
        """Set (or, with None, remove) this node's aicert.dev/assurance label."""
        self.core.patch_node(self.node, {"metadata": {"labels": {LABEL_ASSURANCE: level}}})

    def report_ak_chain(self, condition: dict[str, str], event: dict[str, Any] | None) -> None:
        """Set this node's AICertAKChain condition; with `event`, also record it about the node."""
        self.core.patch_node_status(self.node, {"status": {"conditions": [condition]}})
        if event is not None:
            body: Any = event  # the client accepts plain dicts
            self.events.create_namespaced_event(event["metadata"]["namespace"], body)

    def node_uid(self) -> str:
        return str(raw_json(self.core.read_node, self.node)["metadata"]["uid"])
