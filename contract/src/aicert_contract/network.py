"""The training pod's network: the NetworkPolicy the operator creates, and how to tell from the
policies that select a pod whether it can reach anything. Pure.

By default (`spec.network.egress: none`) the pod is isolated both ways: no ingress, no egress.
With `egress: allowed` only ingress is denied. NetworkPolicies are enforced by the cluster's network
plugin; the API server stores them whether or not anything enforces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aicert.jcs import sha256_jcs
from aicert_contract.pod import owner_reference
from aicert_contract.training import LABEL_ATTEMPT, LABEL_TRAINING_UID, pod_name


def network_policy(*, name: str, namespace: str, uid: str, attempt: int, egress: str) -> dict[str, Any]:
    """The attempt's NetworkPolicy, named like its pod and owned by the training."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {LABEL_TRAINING_UID: uid, LABEL_ATTEMPT: str(attempt)}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [] if egress == "none" else [{}],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": pod_name(name, attempt),
            "namespace": namespace,
            "labels": {LABEL_TRAINING_UID: uid, LABEL_ATTEMPT: str(attempt)},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": spec,
    }


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches every pod."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown operator: assume it does not select (fail closed for isolation)
    return True


def selecting(policies: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
    return [p for p in policies if _matches((p.get("spec") or {}).get("podSelector") or {}, labels)]


def _types(spec: Mapping[str, Any]) -> set[str]:
    declared = spec.get("policyTypes")
    if declared:
        return set(declared)
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def allows_egress(policy: Mapping[str, Any]) -> bool:
    """Does this policy, on its own, allow the pods it selects some egress?"""
    spec = policy.get("spec") or {}
    return "Egress" in _types(spec) and bool(spec.get("egress"))


def egress_denied(policies: Iterable[Mapping[str, Any]]) -> bool:
    """True when the policies that select a pod leave it no egress at all: at least one isolates
    egress, and none allows any (policies are additive)."""
    specs = [p.get("spec") or {} for p in policies]
    isolating = [s for s in specs if "Egress" in _types(s)]
    return bool(isolating) and not any(s.get("egress") for s in isolating)


def policy_record(policy: Mapping[str, Any]) -> dict[str, str]:
    """What the certificate records of a policy: its name and the digest of its spec."""
    meta = policy.get("metadata") or {}
    return {"name": str(meta.get("name")), "spec": sha256_jcs(policy.get("spec") or {}).hex()}
