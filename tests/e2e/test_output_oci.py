"""spec.output.oci on the whole stack: a certified run whose spec names a registry that requires
credentials (distribution with htpasswd, listening on a node's IP where pods reach it) and a pull
secret ends Succeeded and Published; the operator's push pod (the agent image, the output claim
read-only, the Secret as a volume, no token) pushed the model, and `aicert verify oci://…@digest`
verifies what the registry holds. A tenant cannot exec into a push pod (the no-connect policy).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicert_contract.publish import CONTAINER_PUSH, PUSH_DEADLINE_SECONDS
from aicert_localcluster.registry import Registry
from aicert_localcluster.stack import Stack

pytestmark = pytest.mark.e2e

CREDENTIALS = ("pusher", secrets.token_urlsafe(12))
SECRET = "push-creds"
NS = "team-oci"


@pytest.fixture(scope="module")
def private_registry(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that requires basic auth, on a node's IP (a pod has no route to the host's 127.0.0.1)."""
    node = next(iter(stack.nodes.values()))
    with Registry(
        tmp_path_factory.mktemp("push-registry"), credentials=CREDENTIALS, address=node.node_ip
    ) as running:
        yield running


def wait_published(stack: Stack, name: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = stack.get("certifiedtraining", name, NS).get("status") or {}
        published = next((c for c in status.get("conditions") or [] if c["type"] == "Published"), None)
        if published is not None and (published["status"] == "True" or published["reason"] == "PushFailed"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never got Published: {status}\n{stack.operator.tail()}")
        time.sleep(0.5)


def test_a_certified_model_is_pushed_from_the_cluster_and_verifies(
    stack: Stack, run: Any, private_registry: Registry, tmp_path: Path
) -> None:
    tenant = stack.tenant(NS)  # a team with the built-in `edit` role in its namespace
    secret = private_registry.pull_secret(SECRET, NS)
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    r = run(namespace=NS)
    r.body["spec"]["output"]["oci"] = {
        "reference": f"{private_registry.host}/models/e2e:v1",
        "pullSecret": {"name": SECRET},
        "plainHttp": True,
    }
    r.apply()
    finished = r.wait("Succeeded", "Failed", timeout=300)["status"]
    assert finished["phase"] == "Succeeded", finished
    status = wait_published(stack, r.name)
    published = next(c for c in status["conditions"] if c["type"] == "Published")
    assert (published["status"], published["reason"]) == ("True", "Published"), published["message"]
    assert status["phase"] == "Succeeded"
    digest = status["published"]["digest"]
    reference = status["published"]["reference"]
    assert reference == f"oci://{private_registry.host}/models/e2e@{digest}"

    # the push pod the operator made: as the contract builds it, and it ended with the digest
    [pod] = stack.cluster.kubectl_json("get", "pods", "-n", NS, "-l", f"aicert.dev/push-of={r.name}")["items"]
    assert pod["metadata"]["name"] == f"{r.name}-1-push-1"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["activeDeadlineSeconds"] == PUSH_DEADLINE_SECONDS
    [container] = pod["status"]["containerStatuses"]
    assert container["name"] == CONTAINER_PUSH
    assert json.loads(container["state"]["terminated"]["message"]) == {"digest": digest}

    # what the registry holds verifies offline, with the pull secret's credentials
    config = tmp_path / "config.json"
    config.write_bytes(base64.b64decode(secret["data"][".dockerconfigjson"]))
    argv = ["verify", reference, "--trust-bundle", str(stack.ca_pem), "--registry-config", str(config)]
    argv.append("--plain-http")
    done = subprocess.run([sys.executable, "-m", "aicert.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("VERIFIED"), done.stdout

    # the team cannot get into a push pod, whose termination message the operator reads as the digest
    entry = stack.cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{NS}/pods/{r.name}-1-push-1/portforward?ports=8080",
        "-f",
        "/dev/null",
        kubeconfig=tenant,
        check=False,
    )
    assert entry.returncode != 0
    assert "ValidatingAdmissionPolicy 'aicert-training-pod-no-connect'" in entry.stderr, entry.stderr
