"""The agent's Kubernetes calls, and nothing else."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from aicert.training import FIELD_MANAGER_AGENT, GROUP, KIND, LABEL_ASSURANCE, LABEL_TRAINING, PLURAL, VERSION

APPLY = "application/apply-patch+yaml"


class AgentKube:
    def __init__(self, api_client: client.ApiClient, node: str) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)
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

    def get_training(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    def pv_of_claim(self, namespace: str, claim: str) -> str:
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        name = pvc.spec.volume_name if pvc.spec else None
        if not name:
            raise LookupError(f"PVC {namespace}/{claim} is not bound to a volume")
        return str(name)

    def label_node(self, level: str | None) -> None:
        """Set (or, with None, remove) this node's aicert.dev/assurance label."""
        self.core.patch_node(self.node, {"metadata": {"labels": {LABEL_ASSURANCE: level}}})

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "status": status,
        }
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER_AGENT,
            force=True,
            _content_type=APPLY,
        )

    def emit(self, namespace: str, name: str, uid: str, type_: str, reason: str, message: str) -> None:
        event = client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name}-", namespace=namespace),
            event_time=dt.datetime.now(dt.UTC),
            reporting_controller="aicert.dev/agent",
            reporting_instance=f"aicert-agent-{self.node}",
            action="Certify",
            type=type_,
            reason=reason,
            note=message[:1024],
            regarding=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=name, namespace=namespace, uid=uid
            ),
        )
        self.events.create_namespaced_event(namespace, event)
