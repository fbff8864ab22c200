"""The operator's Kubernetes calls, and nothing else (kubernetes client, synchronous)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert_contract.status import REPORTER_OPERATOR
from aicert_contract.training import (
    AGENT_LEASE_PREFIX,
    FIELD_MANAGER_OPERATOR,
    LABEL_ASSURANCE,
    LABEL_TRAINING_UID,
)
from aicert_kube import TrainingClient


@dataclass(frozen=True)
class Created:
    pod: dict[str, Any]  # the created pod, or the one that already held its name
    new: bool


class Rejected(Exception):
    """The API server refused an object of the attempt; `transient` when retrying may succeed (quota)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _raise_rejected(exc: ApiException) -> None:
    if exc.status in (400, 403, 422):
        message = _api_message(exc)
        raise Rejected(message, transient="exceeded quota" in message) from None


class Kube(TrainingClient):
    def __init__(self, api_client: client.ApiClient, instance: str = "aicert-operator") -> None:
        super().__init__(
            api_client, field_manager=FIELD_MANAGER_OPERATOR, controller=REPORTER_OPERATOR, instance=instance
        )
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def list_pods(self, namespace: str, training_uid: str) -> list[dict[str, Any]]:
        """A consistent read (served by etcd, not a cache), so a pod just created is always seen."""
        result = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_TRAINING_UID}={training_uid}"
        )
        pods: list[dict[str, Any]] = self.api_client.sanitize_for_serialization(result.items)
        return pods

    def create_pod(self, pod: dict[str, Any]) -> Created:
        """Create the pod. When its name is taken, return the pod holding it (ours from an earlier try
        at the same decision, or somebody else's: the caller checks)."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            body: Any = pod  # the client accepts plain dicts
            created = self.core.create_namespaced_pod(namespace, body, field_manager=FIELD_MANAGER_OPERATOR)
        except ApiException as exc:
            if exc.status == 409:
                existing = self.core.read_namespaced_pod(name, namespace)
                return Created(self.api_client.sanitize_for_serialization(existing), new=False)
            _raise_rejected(exc)
            raise
        return Created(self.api_client.sanitize_for_serialization(created), new=True)

    def create_claim(self, claim: dict[str, Any]) -> None:
        """Create the attempt's output claim; one already there is the agent's to judge (it must be
        ReadWriteOncePod and empty)."""
        try:
            body: Any = claim
            self.core.create_namespaced_persistent_volume_claim(
                claim["metadata"]["namespace"], body, field_manager=FIELD_MANAGER_OPERATOR
            )
        except ApiException as exc:
            if exc.status == 409:
                return
            _raise_rejected(exc)
            raise

    def create_network_policy(self, policy: dict[str, Any]) -> None:
        """Create the attempt's NetworkPolicy; one already there is left as it is (the agent judges
        every policy that selects the pod, whoever made it)."""
        try:
            body: Any = policy
            self.networking.create_namespaced_network_policy(
                policy["metadata"]["namespace"], body, field_manager=FIELD_MANAGER_OPERATOR
            )
        except ApiException as exc:
            if exc.status == 409:
                return
            _raise_rejected(exc)
            raise

    def agent_leases(self, namespace: str) -> dict[str, dt.datetime | None]:
        """Node -> until when its agent's lease is valid."""
        found: dict[str, dt.datetime | None] = {}
        for lease in self.coordination.list_namespaced_lease(namespace).items:
            name = str(lease.metadata.name if lease.metadata else "")
            if name.startswith(AGENT_LEASE_PREFIX):
                spec = lease.spec
                found[name.removeprefix(AGENT_LEASE_PREFIX)] = (
                    spec.renew_time + dt.timedelta(seconds=spec.lease_duration_seconds or 0)
                    if spec is not None and spec.renew_time is not None
                    else None
                )
        return found

    def unlabel_node(self, node: str) -> None:
        self.core.patch_node(node, {"metadata": {"labels": {LABEL_ASSURANCE: None}}})

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise
