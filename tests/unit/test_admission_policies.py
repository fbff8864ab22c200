"""The admission policies in deploy/ fail closed, and the tenant roles grant no more than they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ADMISSION = DEPLOY / "training-admission.yaml"
OPERATOR = "system:serviceaccount:aicert-system:aicert-operator"
AGENT = "system:serviceaccount:aicert-system:aicert-agent"
BREAK_GLASS = "aicert.dev:break-glass"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def of_kind(kind: str, *paths: Path) -> list[dict[str, Any]]:
    return [d for p in paths for d in documents(p) if d["kind"] == kind]


ALL = sorted(DEPLOY.glob("*.yaml"))
POLICIES = of_kind("ValidatingAdmissionPolicy", *ALL)
BINDINGS = of_kind("ValidatingAdmissionPolicyBinding", *ALL)


def test_the_expected_policies_are_shipped() -> None:
    assert {p["metadata"]["name"] for p in of_kind("ValidatingAdmissionPolicy", ADMISSION)} == {
        "aicert-training-pods",
        "aicert-training-claims",
        "aicert-training-pod-no-connect",
        "aicert-training-pod-no-debug",
        "aicert-exclusive-volumes",
        "aicert-status-writers",
    }


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p["metadata"]["name"])
def test_every_policy_fails_closed_and_is_bound_to_deny(policy: dict[str, Any]) -> None:
    name = policy["metadata"]["name"]
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    bindings = [b for b in BINDINGS if b["spec"]["policyName"] == name]
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


def test_every_binding_names_a_shipped_policy() -> None:
    assert {b["spec"]["policyName"] for b in BINDINGS} <= {p["metadata"]["name"] for p in POLICIES}


def rules(policy: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (resource, operation)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    ]


def by_name(name: str) -> dict[str, Any]:
    return next(p for p in POLICIES if p["metadata"]["name"] == name)


def test_policies_match_what_they_guard() -> None:
    assert set(rules(by_name("aicert-training-pods"))) == {("pods", "CREATE"), ("pods", "UPDATE")}
    assert set(rules(by_name("aicert-training-claims"))) == {
        ("persistentvolumeclaims", "CREATE"),
        ("persistentvolumeclaims", "UPDATE"),
    }
    assert set(rules(by_name("aicert-training-pod-no-connect"))) == {
        (f"pods/{sub}", "CONNECT") for sub in ("exec", "attach", "portforward", "proxy")
    }
    assert rules(by_name("aicert-training-pod-no-debug")) == [("pods/ephemeralcontainers", "UPDATE")]
    assert rules(by_name("aicert-exclusive-volumes")) == [("pods", "CREATE")]
    assert ("certifiedtrainings/status", "UPDATE") in rules(by_name("aicert-status-writers"))


def test_break_glass_bypasses_only_the_no_entry_policies() -> None:
    mentioning = {p["metadata"]["name"] for p in POLICIES if BREAK_GLASS in yaml.safe_dump(p["spec"])}
    assert mentioning == {"aicert-training-pod-no-connect", "aicert-training-pod-no-debug"}
    for name in mentioning:
        (condition,) = by_name(name)["spec"]["matchConditions"]
        assert condition["expression"].startswith("!") and BREAK_GLASS in condition["expression"]


def test_only_operator_and_agent_write_status() -> None:
    text = yaml.safe_dump(by_name("aicert-status-writers")["spec"]["validations"])
    assert OPERATOR in text and AGENT in text


def test_tenant_roles_aggregate_without_update_or_status() -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind("ClusterRole", DEPLOY / "tenant-rbac.yaml")}
    edit, view = roles["aicert-edit"], roles["aicert-view"]
    assert edit["metadata"]["labels"] == {
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
    }
    assert view["metadata"]["labels"] == {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    (edit_rule,) = edit["rules"]
    assert edit_rule["resources"] == ["certifiedtrainings"]
    assert set(edit_rule["verbs"]) == {"get", "list", "watch", "create", "delete", "deletecollection"}
    (view_rule,) = view["rules"]
    assert view_rule["resources"] == ["certifiedtrainings"]
    assert set(view_rule["verbs"]) == {"get", "list", "watch"}
