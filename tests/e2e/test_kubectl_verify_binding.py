"""`kubectl aicert verify NAME` accepts only the resource's own certificate (aicert.verify.binding).

A genuine certificate of another run, pasted into a CertifiedTraining's status, verifies
cryptographically; the plugin must still refuse it, naming the binding check that failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster.stack import Stack

pytestmark = pytest.mark.e2e

# What helm/aicert/templates/training-admission.yaml (aicert-status-writers) answers anyone but the operator and agent
STATUS_WRITERS_DENIAL = "only the aicert operator and node agent may"


def kubectl_aicert(stack: Stack, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,  # HOME included: kubectl keeps its cache there
        "KUBECONFIG": str(stack.cluster.admin_kubeconfig),
        "KUBECTL": str(stack.cluster.bin_dir / "kubectl"),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "aicert.cli.kubectl_plugin",
            "verify",
            name,
            "-n",
            "default",
            "--trust-bundle",
            str(stack.ca_pem),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def write_status(stack: Stack, name: str, status: dict[str, Any]) -> str:
    """Merge-patch the status as the cluster admin; where an admission policy allows only the
    operator and the agent to write status, as the operator. Returns who wrote it."""
    patch = ["patch", "ct", name, "--namespace=default", "--subresource=status", "--type=merge"]
    body = json.dumps({"status": status})
    done = stack.cluster.kubectl(*patch, "-p", body, check=False)
    if done.returncode == 0:
        return "admin"
    assert STATUS_WRITERS_DENIAL in done.stderr, done.stderr
    stack.cluster.kubectl(*patch, "-p", body, kubeconfig=Path(stack.operator.env["KUBECONFIG"]))
    return "operator"


def test_only_the_resources_own_certificate_verifies(stack: Stack, run: Any) -> None:
    a, b = run().apply(), run().apply()
    trainings = {r.name: r.wait("Succeeded", "Failed") for r in (a, b)}
    assert {n: t["status"]["phase"] for n, t in trainings.items()} == dict.fromkeys(trainings, "Succeeded"), {
        n: t["status"] for n, t in trainings.items()
    }
    uid = {n: t["metadata"]["uid"] for n, t in trainings.items()}

    genuine = kubectl_aicert(stack, b.name)
    assert genuine.returncode == 0, genuine.stderr
    assert "resource-identity, resource-model-digest, resource-phase" in genuine.stdout

    # B's status now holds A's certificate (and A's model digest, so that only the identity differs)
    status_a = trainings[a.name]["status"]
    writer = write_status(
        stack, b.name, {"certificate": status_a["certificate"], "modelDigest": status_a["modelDigest"]}
    )
    print(f"status written as {writer}")  # shown with -rP: whether admission let the admin write it
    pasted = kubectl_aicert(stack, b.name)
    assert pasted.returncode == 1, (writer, pasted.stdout, pasted.stderr)
    assert pasted.stderr == (
        f"NOT VERIFIED  check resource-identity failed: the certificate is for default/{a.name} "
        f"(uid {uid[a.name]}), not default/{b.name} (uid {uid[b.name]})\n"
    )
    as_json = kubectl_aicert(stack, b.name, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["check"] == "resource-identity"

    # A's own certificate, but a status naming another model
    write_status(stack, a.name, {"modelDigest": "sha256:" + "0" * 64})
    other_model = kubectl_aicert(stack, a.name)
    assert other_model.returncode == 1, (writer, other_model.stdout, other_model.stderr)
    assert other_model.stderr == (
        f"NOT VERIFIED  check resource-model-digest failed: status.modelDigest is sha256:{'0' * 64}, "
        f"but the certificate's output is {status_a['modelDigest']}\n"
    )
    for r in (a, b):
        stack.cluster.kubectl("delete", "ct", r.name)
