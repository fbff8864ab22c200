"""The operator's Kubernetes calls, and nothing else (kubernetes client, synchronous)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert.training import FIELD_MANAGER_OPERATOR, GROUP, KIND, LABEL_TRAINING_UID, PLURAL, VERSION

APPLY = "application/apply-patch+yaml"


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)

    def get_training(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    def list_pods(self, namespace: str, training_uid: str) -> list[dict[str, Any]]:
        """A consistent read (served by etcd, not a cache), so a pod just created is always seen."""
        result = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_TRAINING_UID}={training_uid}"
        )
        pods: list[dict[str, Any]] = client.ApiClient().sanitize_for_serialization(result.items)
        return pods

    def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create the pod; False when it already exists (an earlier attempt at the same decision)."""
        try:
            body: Any = pod  # the client accepts plain dicts
            self.core.create_namespaced_pod(
                pod["metadata"]["namespace"], body, field_manager=FIELD_MANAGER_OPERATOR
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Server-side apply of the operator's status fields; the agent's fields are not touched."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "status": status,
        }
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER_OPERATOR,
                force=True,
                _content_type=APPLY,
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: there is no status left to write
                raise

    def emit(self, training: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = training["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}-", namespace=meta["namespace"]),
            event_time=now,
            reporting_controller="aicert.dev/operator",
            reporting_instance="aicert-operator",
            action="Reconcile",
            type=type_,
            reason=reason,
            note=message[:1024],
            regarding=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
        )
        self.events.create_namespaced_event(meta["namespace"], event)
