"""A CertifiedTraining end to end against the real upstream control plane (issue 4's scenarios)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aicert.trust import TrustStore
from aicert.verify import Verifier
from aicert_localcluster.cluster import KubectlError
from aicert_localcluster.stack import AGENT_REPOSITORY, OPERATOR_REPOSITORY, SYSTEM_NAMESPACE, Stack

pytestmark = pytest.mark.e2e


def certificate_of(status: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(status["certificate"])
    return loaded


def verify_offline(stack: Stack, certificate: Path, model: Path) -> subprocess.CompletedProcess[str]:
    """`aicert verify CERTIFICATE --trust-bundle <dev CA> --model MODEL`, as a user runs it."""
    argv = ["verify", str(certificate), "--trust-bundle", str(stack.ca_pem), "--model", str(model)]
    return subprocess.run([sys.executable, "-m", "aicert.cli", *argv], capture_output=True, text=True)


def wait_finished(stack: Stack, name: str, timeout: int = 600) -> dict[str, Any]:
    """`kubectl wait --for=condition=Finished`, as a pipeline waits for a run either way; the run then."""
    kubectl = [str(stack.cluster.bin_dir / "kubectl"), f"--kubeconfig={stack.cluster.admin_kubeconfig}"]
    argv = ["wait", "--for=condition=Finished", f"ct/{name}", "-n", "default", f"--timeout={timeout}s"]
    done = subprocess.run([*kubectl, *argv], capture_output=True, text=True, timeout=timeout + 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"certifiedtraining.aicert.dev/{name} condition met"
    body: dict[str, Any] = stack.cluster.kubectl_json("get", "ct", name, "-n", "default")
    return body


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_happy_path_certificate_verifies_offline(stack: Stack, run: Any, tmp_path: Path) -> None:
    r = run().apply()
    body = wait_finished(stack, r.name)
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Scheduled": "True",
        "InputsMeasured": "True",
        "Trained": "True",
        "Certified": "True",
        "Finished": "True",
    }
    assert conditions_of(status)["Finished"] == ("True", "Certified")
    assert all(c["observedGeneration"] == body["metadata"]["generation"] for c in status["conditions"])
    cert = certificate_of(status)
    predicate = cert["statement"]["predicate"]
    assert (predicate["run"]["namespace"], predicate["run"]["name"], predicate["run"]["uid"]) == (
        "default",
        r.name,
        body["metadata"]["uid"],
    )
    assert predicate["node"]["name"] == status["node"] in stack.tpm_nodes
    assert status["modelDigest"] == "sha256:" + predicate["outputs"]["root"]
    selected = {
        phase: stack.cluster.kubectl(
            "get",
            "ct",
            "--field-selector",
            f"status.phase={phase},status.node={status['node']}",
            "-o",
            "name",
        ).stdout.split()
        for phase in ("Succeeded", "Failed")
    }
    assert f"certifiedtraining.aicert.dev/{r.name}" in selected["Succeeded"]
    assert f"certifiedtraining.aicert.dev/{r.name}" not in selected["Failed"]
    result = Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(
        status["certificate"], model_dir=r.model, data_dirs={"data": r.data}
    )
    assert result.assurance == "dev"
    # the certificate travels with the weights: the same one is in the output volume
    assert (r.model / "aicert-certificate.json").read_text() == status["certificate"] + "\n"
    # the CLI, as a user runs it, on the certificate fetched with kubectl jsonpath
    fetched = stack.cluster.kubectl("get", "ct", r.name, "-o", "jsonpath={.status.certificate}").stdout
    (tmp_path / "cert.json").write_text(fetched)
    cli = verify_offline(stack, tmp_path / "cert.json", r.model)
    assert cli.returncode == 0, cli.stderr
    events = stack.cluster.kubectl_json(
        "get", "events.events.k8s.io", "--field-selector", f"regarding.name={r.name}"
    )
    seen = {(e.get("reportingController"), e["reason"]) for e in events["items"]}
    assert {("aicert.dev/operator", "Created"), ("aicert.dev/agent", "Certified")} <= seen
    assert ("aicert.dev/operator", "Certified") not in seen  # one Event for one certificate
    (pod,) = r.pods()
    node = pod["spec"]["nodeName"]
    assert node in stack.tpm_nodes
    table = stack.cluster.kubectl("get", "certifiedtrainings", r.name).stdout
    assert "Succeeded" in table and node in table and status["modelShortDigest"] in table
    # the gate and seal containers ran from the agent image this checkout builds, pulled by digest
    statuses = {
        c["name"]: c for c in [*pod["status"]["initContainerStatuses"], *pod["status"]["containerStatuses"]]
    }
    assert stack.agent_image.startswith(f"{AGENT_REPOSITORY}@sha256:")
    assert statuses["aicert-gate"]["imageID"] == statuses["aicert-seal"]["imageID"] == stack.agent_image
    # and so did the agent that certified it: the chart's DaemonSet's pod on that node
    (agent,) = [
        p
        for p in stack.cluster.kubectl_json(
            "get", "pods", "-n", SYSTEM_NAMESPACE, "-l", "app.kubernetes.io/component=agent"
        )["items"]
        if p["spec"]["nodeName"] == node
    ]
    assert agent["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert agent["status"]["containerStatuses"][0]["imageID"] == stack.agent_image
    # and the operator that drove it: the chart's Deployment, one replica leading, one standing by
    operators = stack.cluster.kubectl_json(
        "get", "pods", "-n", SYSTEM_NAMESPACE, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert len(operators) == 2
    assert {p["status"]["containerStatuses"][0]["imageID"] for p in operators} == {stack.operator_image}
    assert stack.operator_image.startswith(f"{OPERATOR_REPOSITORY}@sha256:")
    lease = stack.get("lease", "aicert-operator", SYSTEM_NAMESPACE)
    assert lease["spec"]["holderIdentity"] in {p["metadata"]["name"] for p in operators}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["spec"].update(image="registry.local/e2e/job:latest"), "image must be pinned by digest"),
        (
            lambda b: b["spec"]["inputs"].append(dict(b["spec"]["inputs"][0], mountPath="/other")),
            "input names must be unique",
        ),
        (
            lambda b: b["spec"]["output"].update(emptyDir={}),
            "output needs exactly one of volumeClaimTemplate, persistentVolumeClaim or emptyDir",
        ),
        (lambda b: b["metadata"].update(name="x" * 51), "metadata.name must be at most 50 characters"),
        (
            lambda b: b["spec"]["output"].update(maxBytes=0),
            "spec.output.maxBytes in body should be greater than or equal to 1",
        ),
    ],
    ids=["unpinned-image", "duplicate-input", "two-outputs", "long-name", "zero-max-bytes"],
)
def test_bad_specs_are_refused_at_admission(stack: Stack, run: Any, change: Any, message: str) -> None:
    r = run()
    change(r.body)
    with pytest.raises(KubectlError) as err:
        r.apply()
    assert message in err.value.stderr
    assert (
        stack.cluster.kubectl("get", "ct", r.body["metadata"]["name"], check=False).returncode != 0
    )  # nothing created


def test_spec_is_immutable(stack: Stack, run: Any) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.body["spec"]["gpus"] = 2
    with pytest.raises(KubectlError) as err:
        r.apply()
    assert "spec is immutable" in err.value.stderr
    r.wait_started()
    r.release()
    assert r.wait("Succeeded", "Failed")["status"]["phase"] == "Succeeded"


def test_failing_training_fails_without_certificate(stack: Stack, run: Any) -> None:
    r = run(env={"EXIT_CODE": "4"}).apply()
    status = wait_finished(stack, r.name)["status"]  # kubectl wait returns on a failure too
    assert (status["phase"], status["reason"]) == ("Failed", "TrainingFailed")
    assert "exited with 4" in status["message"] and "certificate" not in status
    got = conditions_of(status)
    assert (got["Finished"], got["Certified"]) == (("True", "TrainingFailed"), ("False", "TrainingFailed"))
    table = stack.cluster.kubectl("get", "ct", r.name, "-n", "default").stdout.splitlines()
    assert table[1].split()[1:3] == ["Failed", "TrainingFailed"]


def test_deleted_pod_is_retried_and_certified_once(stack: Stack, run: Any) -> None:
    """Each attempt writes to a claim of its own, so a retry starts from an empty output."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}, backoffLimit=1).per_attempt_output().apply()
    r.wait_started(attempt=1)
    stack.cluster.kubectl("delete", "pod", f"{r.name}-1", "--wait=false")
    r.wait("Pending", "Measuring", "Training")
    r.wait_started(attempt=2)
    r.release(attempt=2)
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2, status
    cert = certificate_of(status)
    assert cert["statement"]["predicate"]["run"]["attempt"] == 2
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(status["certificate"], model_dir=r.output_dir(2))
    claim = stack.get("pvc", f"{r.name}-2-output")
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"] and claim["status"]["phase"] == "Bound"
    assert (r.output_dir(1) / "started").exists()  # attempt 1's leftovers stayed in attempt 1's claim
    events = stack.cluster.kubectl_json(
        "get", "events.events.k8s.io", "--field-selector", f"regarding.name={r.name}"
    )
    assert [e["reason"] for e in events["items"] if e.get("reportingController") == "aicert.dev/agent"].count(
        "Certified"
    ) == 1


def test_operator_killed_mid_run(stack: Stack, run: Any) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    stack.operator.kill()
    stack.operator.start()
    r.release()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 1
    assert [p["metadata"]["name"] for p in r.pods()] == [f"{r.name}-1"]


def test_agent_killed_between_gate_and_seal(stack: Stack, run: Any) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    stack.agents[r.node].kill()
    r.release()
    stack.agents[r.node].start()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status  # the log survived the agent: the run is certified
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(status["certificate"], model_dir=r.model)


def test_input_changed_during_training_fails(stack: Stack, run: Any) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    (r.data / "train.csv").write_text("x,y\n1,2\n3,5\n")  # someone writes to the shared volume
    r.release()
    status = r.wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InputsChanged")
    assert "input data changed during training" in status["message"] and "certificate" not in status


def test_no_node_at_the_requested_assurance_stays_pending(stack: Stack, run: Any) -> None:
    r = run(minAssurance="vtpm").apply()
    status = r.wait("Pending")["status"]
    for _ in range(100):
        if status.get("reason") == "Unschedulable":
            break
        status = r.wait("Pending")["status"]
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert (status["reason"], scheduled["status"], scheduled["reason"]) == (
        "Unschedulable",
        "False",
        "Unschedulable",
    )
    assert "needs assurance vtpm or higher" in status["message"]
    stack.cluster.kubectl("delete", "ct", r.name)


def test_a_missing_input_claim_is_named_while_the_run_waits(stack: Stack, run: Any) -> None:
    missing = {"name": "data", "persistentVolumeClaim": {"claimName": "no-such-claim"}, "mountPath": "/data"}
    r = run(inputs=[missing]).apply()
    status = r.wait_reason("InputClaimMissing")
    assert status["phase"] == "Pending"
    assert status["message"].startswith("input data: claim no-such-claim does not exist")
    assert conditions_of(status)["Scheduled"] == ("False", "InputClaimMissing")
    assert conditions_of(status)["Finished"] == ("False", "InputClaimMissing")
    stack.cluster.kubectl("delete", "ct", r.name)


def test_deadline_exceeded_fails(stack: Stack, run: Any) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1"}, activeDeadlineSeconds=3).apply()
    status = wait_finished(stack, r.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    got = conditions_of(status)
    assert (got["Finished"], got["Certified"]) == (
        ("True", "DeadlineExceeded"),
        ("False", "DeadlineExceeded"),
    )
    assert r.pods() == [] or all(p["metadata"].get("deletionTimestamp") for p in r.pods())


def test_kubectl_plugin_verifies_by_name(stack: Stack, run: Any, tmp_path: Path) -> None:
    r = run().apply()
    assert r.wait("Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    env = {
        **os.environ,  # HOME included: kubectl keeps its cache there
        "KUBECONFIG": str(stack.cluster.admin_kubeconfig),
        "KUBECTL": str(stack.cluster.bin_dir / "kubectl"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aicert.cli.kubectl_plugin",
            "verify",
            r.name,
            "-n",
            "default",
            "--trust-bundle",
            str(stack.ca_pem),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "VERIFIED  assurance: dev" in done.stdout
    # kept before the resource goes: `kubectl aicert get` writes it, `aicert verify` checks the copy
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "aicert.cli.kubectl_plugin",
            "get",
            r.name,
            "-n",
            "default",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert got.returncode == 0, got.stderr
    kept, bundle = tmp_path / "aicert-certificate.json", tmp_path / "aicert.sigstore.json"
    assert sorted(got.stdout.split()) == sorted(
        [str(kept), str(bundle)]
    )  # the bundle rebuilt from the status
    for copy in (kept, bundle):
        checked = verify_offline(stack, copy, r.model)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "envelope-signature" in checked.stdout.split("  checks   ")[1].splitlines()[0]


def test_agent_may_act_only_for_its_own_node(stack: Stack, run: Any) -> None:
    """The chart's agent-node-policy.yaml: the agent's token names gpu-1; RBAC alone would allow more."""
    agent = Path(stack.agents["gpu-1"].env["KUBECONFIG"])
    other = stack.cluster.kubectl(
        "label", "node", "cpu-1", "aicert.dev/assurance=vtpm", kubeconfig=agent, check=False
    )
    assert other.returncode != 0 and "may only label its own node, not cpu-1" in other.stderr
    own = stack.cluster.kubectl("label", "node", "gpu-1", "aicert.dev/probe=1", kubeconfig=agent, check=False)
    assert own.returncode == 0, own.stderr
    stack.cluster.kubectl("label", "node", "gpu-1", "aicert.dev/probe-")
    r = run(minAssurance="cvm").apply()  # never scheduled: status.node stays unset
    r.wait("Pending")
    patch = json.dumps({"status": {"modelDigest": "sha256:" + "0" * 64}})
    forged = stack.cluster.kubectl(
        "patch",
        "ct",
        r.name,
        "--namespace=default",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
        kubeconfig=agent,
        check=False,
    )
    assert forged.returncode != 0 and "may only certify trainings running on its node" in forged.stderr
    stack.cluster.kubectl("delete", "ct", r.name)
