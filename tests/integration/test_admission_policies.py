"""The chart's admission policies fail closed, and the tenant roles grant no more than they say.

Read from the chart as the e2e stack applies it: `helm template` of helm/aicert, release "aicert"
in aicert-system (the `chart_policies` fixture renders it once per session).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

OPERATOR = "system:serviceaccount:aicert-system:aicert-operator"
AGENT = "system:serviceaccount:aicert-system:aicert-agent"
BREAK_GLASS = "aicert.dev:break-glass"
TRAINING_ADMISSION = {
    "aicert-training-pods",
    "aicert-training-claims",
    "aicert-training-pod-no-connect",
    "aicert-training-pod-no-debug",
    "aicert-exclusive-volumes",
    "aicert-status-writers",
    "aicert-training-deadline",
}
AGENT_NODE_POLICY = {
    "aicert-agent-own-node",
    "aicert-agent-own-trainings",
    "aicert-agent-own-lease",
    "aicert-operator-unlabels-only",
}


def of_kind(kind: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def by_name(name: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [p for p in of_kind("ValidatingAdmissionPolicy", documents) if p["metadata"]["name"] == name]
    return policy


def test_the_expected_policies_are_shipped(chart_policies: list[dict[str, Any]]) -> None:
    names = {p["metadata"]["name"] for p in of_kind("ValidatingAdmissionPolicy", chart_policies)}
    assert names == TRAINING_ADMISSION | AGENT_NODE_POLICY


@pytest.mark.parametrize("name", sorted(TRAINING_ADMISSION | AGENT_NODE_POLICY))
def test_every_policy_fails_closed_and_is_bound_to_deny(
    name: str, chart_policies: list[dict[str, Any]]
) -> None:
    policy = by_name(name, chart_policies)
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    bindings = [
        b
        for b in of_kind("ValidatingAdmissionPolicyBinding", chart_policies)
        if b["spec"]["policyName"] == name
    ]
    assert bindings, f"{name} has no binding: it would enforce nothing"
    for binding in bindings:
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert "matchResources" not in binding["spec"], "a binding narrower than its policy"
        if "paramKind" in policy["spec"]:
            assert policy["spec"]["paramKind"] == {
                "apiVersion": "aicert.dev/v1alpha1",
                "kind": "CertifiedTraining",
            }
            ref = binding["spec"]["paramRef"]
            assert ref == {"selector": {}, "parameterNotFoundAction": "Allow"}  # namespace: the request's
    for validation in policy["spec"]["validations"]:
        assert validation.get("message") or validation.get("messageExpression"), (name, validation)


def test_every_binding_names_a_shipped_policy(chart_policies: list[dict[str, Any]]) -> None:
    bound = {b["spec"]["policyName"] for b in of_kind("ValidatingAdmissionPolicyBinding", chart_policies)}
    assert bound == {p["metadata"]["name"] for p in of_kind("ValidatingAdmissionPolicy", chart_policies)}


def rules(policy: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (resource, operation)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    ]


def test_policies_match_what_they_guard(chart_policies: list[dict[str, Any]]) -> None:
    def of(name: str) -> list[tuple[str, str]]:
        return rules(by_name(name, chart_policies))

    assert set(of("aicert-training-pods")) == {("pods", "CREATE"), ("pods", "UPDATE")}
    assert set(of("aicert-training-claims")) == {
        ("persistentvolumeclaims", "CREATE"),
        ("persistentvolumeclaims", "UPDATE"),
    }
    assert set(of("aicert-training-pod-no-connect")) == {
        (f"pods/{sub}", "CONNECT") for sub in ("exec", "attach", "portforward", "proxy")
    }
    assert of("aicert-training-pod-no-debug") == [("pods/ephemeralcontainers", "UPDATE")]
    assert of("aicert-exclusive-volumes") == [("pods", "CREATE")]
    assert ("certifiedtrainings/status", "UPDATE") in of("aicert-status-writers")
    assert set(of("aicert-training-deadline")) == {
        ("certifiedtrainings", "CREATE"),
        ("certifiedtrainings", "UPDATE"),
    }


def test_the_default_deadline_cap_is_the_crds_own_limit(chart_policies: list[dict[str, Any]]) -> None:
    """By default the policy refuses nothing the CRD's schema admits; a cluster lowers it."""
    crd = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    limit = schema["properties"]["spec"]["properties"]["activeDeadlineSeconds"]["maximum"]
    (validation,) = by_name("aicert-training-deadline", chart_policies)["spec"]["validations"]
    assert f"object.spec.activeDeadlineSeconds <= {limit}" in validation["expression"]


def test_break_glass_bypasses_only_the_no_entry_policies(chart_policies: list[dict[str, Any]]) -> None:
    policies = of_kind("ValidatingAdmissionPolicy", chart_policies)
    mentioning = {p["metadata"]["name"] for p in policies if BREAK_GLASS in yaml.safe_dump(p["spec"])}
    assert mentioning == {"aicert-training-pod-no-connect", "aicert-training-pod-no-debug"}
    for name in mentioning:
        (condition,) = by_name(name, chart_policies)["spec"]["matchConditions"]
        assert condition["expression"].startswith("!") and BREAK_GLASS in condition["expression"]


def test_only_operator_and_agent_write_status(chart_policies: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump(by_name("aicert-status-writers", chart_policies)["spec"]["validations"])
    assert OPERATOR in text and AGENT in text


def test_the_policies_name_the_stacks_identities(chart_policies: list[dict[str, Any]]) -> None:
    """The ServiceAccounts the policies trust are the ones the chart creates and binds."""
    accounts = {
        f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
        for sa in of_kind("ServiceAccount", chart_policies)
    }
    assert accounts == {OPERATOR, AGENT}
    text = yaml.safe_dump(of_kind("ValidatingAdmissionPolicy", chart_policies))
    named = set(re.findall(r"system:serviceaccount:[a-z0-9.-]+:[a-z0-9.-]+", text))
    assert named == accounts


def test_tenant_roles_aggregate_without_update_or_status(chart_policies: list[dict[str, Any]]) -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind("ClusterRole", chart_policies)}
    edit, view = roles["aicert-edit"], roles["aicert-view"]

    def aggregation(role: dict[str, Any]) -> dict[str, str]:
        labels: dict[str, str] = role["metadata"]["labels"]
        return {k: v for k, v in labels.items() if k.startswith("rbac.authorization.k8s.io/")}

    assert aggregation(edit) == {
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
    }
    assert aggregation(view) == {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    (edit_rule,) = edit["rules"]
    assert edit_rule["resources"] == ["certifiedtrainings"]
    assert set(edit_rule["verbs"]) == {"get", "list", "watch", "create", "delete", "deletecollection"}
    (view_rule,) = view["rules"]
    assert view_rule["resources"] == ["certifiedtrainings"]
    assert set(view_rule["verbs"]) == {"get", "list", "watch"}
