"""A sidecar injector that ignores the training pod's opt-outs: the run fails as PodMutated.

A MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, served by the pinned kube-apiserver)
adds a container to every pod created in one namespace, as a mesh's injector would. The
operator sees a pod that differs from its contract where only admission could have changed it: the
run ends Failed with reason PodMutated naming the sidecar, and no certificate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aicert_localcluster.stack import Stack

pytestmark = pytest.mark.e2e

NS = "injected"
POLICY = "e2e-inject-sidecar"
SIDECAR = "injected-proxy"


def _policy(image: str) -> list[dict[str, Any]]:
    # ApplyConfiguration may set no atomic list (command, args): the image's entrypoint it is; the
    # operator deletes the pod before it matters.
    sidecar = f'Object.spec.containers{{name: "{SIDECAR}", image: "{image}"}}'
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {
                            "expression": f"Object{{spec: Object.spec{{containers: [{sidecar}]}}}}"
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {
                "policyName": POLICY,
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}},
            },
        },
    ]


def _probe(image: str) -> dict[str, Any]:
    """A pod of the namespace (the policy matches them all, as a mesh's namespace label does),
    created with dry-run only: does admission inject yet?"""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": NS},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


@pytest.fixture(scope="module")
def injector(stack: Stack, image: str) -> Iterator[None]:
    stack.cluster.kubectl("create", "namespace", NS)
    for manifest in _policy(image):
        stack.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    try:
        deadline = time.monotonic() + 60
        while True:  # the API server takes the policy up within moments
            created = stack.cluster.kubectl(
                "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(_probe(image))
            )
            names = [c["name"] for c in json.loads(created.stdout)["spec"]["containers"]]
            if SIDECAR in names:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the MutatingAdmissionPolicy never injected: {names}")
            time.sleep(0.5)
        yield
    finally:  # the other e2e tests share the API server: leave no injector behind
        stack.cluster.kubectl("delete", "mutatingadmissionpolicybinding", POLICY, "--ignore-not-found")
        stack.cluster.kubectl("delete", "mutatingadmissionpolicy", POLICY, "--ignore-not-found")


def test_a_training_whose_pod_was_injected_fails_as_mutated_without_a_certificate(
    stack: Stack, run: Any, injector: None
) -> None:
    r = run(namespace=NS).apply()
    body = r.wait("Failed", "Succeeded", timeout=120)
    status = body["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PodMutated"), status
    assert f"spec.containers[{SIDECAR}] added" in status["message"], status["message"]
    assert "certificate" not in status and "modelDigest" not in status
    certified = next(c for c in status["conditions"] if c["type"] == "Certified")
    assert (certified["status"], certified["reason"]) == ("False", "PodMutated")
    assert status["attempt"] == 1  # never retried: the next pod would be injected the same way
    deadline = time.monotonic() + 60
    while r.pods():  # the operator deletes the mutated pod
        assert time.monotonic() < deadline, [p["metadata"]["name"] for p in r.pods()]
        time.sleep(0.5)
