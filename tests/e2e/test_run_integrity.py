"""The run's boundary as the agent and the operator enforce it, even where admission does not.

tests/e2e/test_tenant_attacks.py shows the admission policies refusing a tenant; here the same kinds
of attack get past admission (switched off, or not covered by it) and must still end with no
certificate for anything but the operator's pod, alone with its volumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicert.cli.verify import summary
from aicert.trust import TrustStore
from aicert.verify import Policy, Verifier
from aicert_localcluster import helm
from aicert_localcluster.stack import Stack

pytestmark = pytest.mark.e2e


@contextmanager
def admission_off(stack: Stack) -> Iterator[None]:
    """As if the cluster had none of the chart's training-admission.yaml: the agent's checks stand alone."""
    admission = helm.training_admission_manifest(home=stack.workdir / "helm")
    bindings = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(admission)
        if doc and doc["kind"] == "ValidatingAdmissionPolicyBinding"
    ]
    stack.cluster.kubectl("delete", "validatingadmissionpolicybinding", *bindings)
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default", "labels": {"aicert.dev/training": "probe"}},
        "spec": {"containers": [{"name": "probe", "image": "probe"}]},
    }
    deadline = time.monotonic() + 30
    while stack.cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
    ).returncode:
        assert time.monotonic() < deadline, "the admission policies stayed in force"
        time.sleep(0.2)
    try:
        yield
    finally:
        stack.cluster.kubectl("apply", "--server-side", "-f", "-", input=admission)
        stack.wait_for_admission()


def events(stack: Stack, name: str, namespace: str = "default") -> list[tuple[str, str]]:
    found = stack.cluster.kubectl_json(
        "get", "events.events.k8s.io", "-n", namespace, "--field-selector", f"regarding.name={name}"
    )
    return [(e.get("reportingController", ""), e["reason"]) for e in found["items"]]


def sleeping_pod(name: str, image: str, node: str, claim: str | None = None) -> dict[str, Any]:
    """A plain pod (no aicert labels) placed with nodeName that sleeps, mounting `claim` writable."""
    container: dict[str, Any] = {
        "name": "sleep",
        "image": image,
        "command": ["/opt/venv/bin/python", "-c", "import time; time.sleep(600)"],
    }
    spec: dict[str, Any] = {"nodeName": node, "restartPolicy": "Never", "containers": [container]}
    if claim is not None:
        container["volumeMounts"] = [{"name": "claim", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "claim", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def wait_pod_phase(stack: Stack, name: str, *phases: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod: dict[str, Any] = stack.get("pod", name)
        if (pod.get("status") or {}).get("phase") in phases:
            return pod
        assert time.monotonic() < deadline, f"pod {name} stayed {pod.get('status')}"
        time.sleep(0.3)


def test_a_copy_of_the_training_pod_is_never_certified(stack: Stack, run: Any) -> None:
    """Admission off: a pod with every label, annotation and owner reference of the real one, bound to
    the TPM node, running another command, is refused as foreign; the honest run is certified.

    The copy writes to an emptyDir: with the honest pod's ReadWriteOncePod output claim, kubelet would
    never start it (the claim is in use), which stops this copy before the agent has to."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    honest = stack.get("pod", f"{r.name}-1")
    forged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{r.name}-forged",
            "namespace": "default",
            "labels": honest["metadata"]["labels"],
            "annotations": honest["metadata"].get("annotations") or {},
            "ownerReferences": honest["metadata"]["ownerReferences"],
        },
        "spec": json.loads(json.dumps(honest["spec"])),
    }
    train = next(c for c in forged["spec"]["initContainers"] if c["name"] == "train")
    train["args"] = ["/data", "/tmp"]  # "trains" on nothing and writes elsewhere
    forged["spec"]["volumes"] = [
        {"name": v["name"], "emptyDir": {}} if v["name"] == "output" else v for v in forged["spec"]["volumes"]
    ]
    # spec.nodeName stays the honest pod's: the copy runs beside it, on the same TPM node
    with admission_off(stack):
        stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(forged))
    done = wait_pod_phase(stack, f"{r.name}-forged", "Succeeded", "Failed")
    gate = next(c for c in done["status"]["initContainerStatuses"] if c["name"] == "aicert-gate")
    assert (done["status"]["phase"], gate["state"]["terminated"]["exitCode"]) == ("Failed", 3)
    assert ("aicert.dev/agent", "ForeignPod") in events(stack, r.name)
    r.release()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    cert = json.loads(status["certificate"])
    assert cert["statement"]["predicate"]["run"]["id"] == honest["metadata"]["uid"] == status["podUID"]
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(status["certificate"], model_dir=r.model)


def test_output_that_is_not_empty_is_refused(run: Any) -> None:
    """A finished run's output claim reused: files already there would be certified as this run's."""
    r = run()
    (r.model / "weights.bin").write_text("from another run")
    status = r.apply().wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OutputNotEmpty"), status
    assert "weights.bin" in status["message"] and "certificate" not in status


def test_output_claim_that_others_could_write_is_refused(stack: Stack, run: Any) -> None:
    r = run()
    stack.cluster.kubectl("delete", "pvc", f"{r.name}-model", "--wait=false")
    stack.cluster.kubectl("delete", "pv", f"pv-default-{r.name}-model", "--wait=false")
    stack.local_volume(f"{r.name}-shared-model", access_mode="ReadWriteOnce")
    r.body["spec"]["output"]["persistentVolumeClaim"]["claimName"] = f"{r.name}-shared-model"
    status = r.apply().wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OutputNotExclusive"), status
    assert "ReadWriteOncePod" in status["message"]


def test_a_second_writer_of_an_input_is_refused(stack: Stack, run: Any, image: str) -> None:
    """Admission off: another pod mounts the input claim writable while the run trains."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    writer = sleeping_pod(f"{r.name}-writer", image, "gpu-1", claim=f"{r.name}-data")
    with admission_off(stack):
        stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(writer))
    try:
        wait_pod_phase(stack, f"{r.name}-writer", "Running")
        r.release()
        status = r.wait("Succeeded", "Failed")["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "InputNotExclusive"), status
        assert f"{r.name}-writer" in status["message"] and "certificate" not in status
    finally:
        stack.cluster.kubectl("delete", "pod", f"{r.name}-writer", "--wait=false")


def test_a_second_pv_on_the_inputs_directory_is_refused(stack: Stack, run: Any) -> None:
    """Two static PVs on one directory: the second, writable, is held by a claim in another
    namespace. Claim names differ, so only the backing storage shows it."""
    r = run()
    stack.cluster.kubectl("create", "namespace", "storage-b")
    try:
        stack.local_volume("prep", namespace="storage-b", access_mode="ReadWriteOnce", path=r.data)
        status = r.apply().wait("Succeeded", "Failed")["status"]
    finally:
        stack.cluster.kubectl("delete", "namespace", "storage-b", "--wait=false")
        stack.cluster.kubectl("delete", "pv", "pv-storage-b-prep", "--wait=false")
    assert (status["phase"], status["reason"]) == ("Failed", "InputNotExclusive"), status
    assert (
        "PV pv-storage-b-prep (claim storage-b/prep) is backed by the storage of input claim"
        in status["message"]
    )
    assert "certificate" not in status


def test_a_second_pv_on_the_inputs_directory_made_during_training_is_refused(stack: Stack, run: Any) -> None:
    """The same storage bound to a second, writable claim after the gate opened: the gate saw no
    other PV, the seal must (its check reads the volumes as they are then, not as the gate saw them)."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()  # the gate is open: training runs
    stack.cluster.kubectl("create", "namespace", "storage-c")
    try:
        stack.local_volume("late", namespace="storage-c", access_mode="ReadWriteOnce", path=r.data)
        r.release()
        status = r.wait("Succeeded", "Failed")["status"]
    finally:
        stack.cluster.kubectl("delete", "namespace", "storage-c", "--wait=false")
        stack.cluster.kubectl("delete", "pv", "pv-storage-c-late", "--wait=false")
    assert (status["phase"], status["reason"]) == ("Failed", "InputNotExclusive"), status
    assert (
        "PV pv-storage-c-late (claim storage-c/late) is backed by the storage of input claim"
        in status["message"]
    )
    assert "certificate" not in status


def test_egress_opened_by_a_tenant_policy_is_refused(stack: Stack, run: Any) -> None:
    """NetworkPolicies add up: a tenant's allow-all for the training pods defeats the deny-all."""
    r = run()
    allow = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{r.name}-open", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"aicert.dev/training": r.name}},
            "policyTypes": ["Egress"],
            "egress": [{}],
        },
    }
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(allow))
    status = r.apply().wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "NetworkNotIsolated"), status
    assert f"{r.name}-open" in status["message"]


def test_an_allow_all_policy_that_lived_seconds_between_gate_and_seal_is_refused(
    stack: Stack, run: Any
) -> None:
    """Red team, round two, attack 2: open egress after the gate, close it before the seal."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    allow = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{r.name}-brief", "namespace": "default"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(allow))
    stack.cluster.kubectl("delete", "networkpolicy", f"{r.name}-brief")
    r.release()
    status = r.wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "NetworkNotIsolated"), status
    assert f"NetworkPolicy {r.name}-brief allowed egress" in status["message"]
    assert "certificate" not in status


def test_a_relabel_undone_before_the_seal_is_refused(stack: Stack, run: Any) -> None:
    """Red team, round two, attack 1: with admission off, `app=web` for a while brings the pod under
    the platform's allow-egress policy for web pods; the tenant removes it before the seal."""
    web = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-egress", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(web))
    try:
        with admission_off(stack):
            r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
            r.wait_started()
            pod = f"{r.name}-1"
            stack.cluster.kubectl("label", "pod", pod, "app=web")
            stack.cluster.kubectl("label", "pod", pod, "app-")
            r.release()
            status = r.wait("Succeeded", "Failed")["status"]
    finally:
        stack.cluster.kubectl("delete", "networkpolicy", "web-egress")
    assert (status["phase"], status["reason"]) == ("Failed", "PodRelabelled"), status
    assert "its labels changed after the gate: app added" in status["message"]
    assert "certificate" not in status


def test_isolation_is_certified_and_a_policy_can_require_it(stack: Stack, run: Any) -> None:
    r = run().apply()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    network = json.loads(status["certificate"])["statement"]["predicate"]["run"]["network"]
    assert network["egress"] == "none"
    assert [p["name"] for p in network["policies"]] == [f"{r.name}-1"]
    trust = TrustStore.from_pem_file(stack.ca_pem)
    result = Verifier(trust, policy=Policy(egress="none")).verify(status["certificate"])
    assert f"  network  egress none  ({r.name}-1)" in summary(result).splitlines()
    opened = run(network={"egress": "allowed"}).apply()
    status = opened.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    with pytest.raises(Exception, match="policy-egress"):
        Verifier(trust, policy=Policy(egress="none")).verify(status["certificate"])


def test_training_in_a_restricted_namespace(stack: Stack, run: Any) -> None:
    """PodSecurity `restricted` admits the operator's pod: server dry-run, then a whole run."""
    ns = "restricted-team"
    stack.cluster.kubectl("create", "namespace", ns)
    stack.cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    r = run(namespace=ns).apply()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    pod = stack.get("pod", f"{r.name}-1", ns)
    pod["metadata"] = {"name": "dry-run-copy", "namespace": ns}
    pod.pop("status", None)
    pod["spec"].pop("nodeName", None)
    done = stack.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert done.returncode == 0, done.stderr


def test_a_refused_pod_is_a_visible_pending_state(stack: Stack, run: Any) -> None:
    """A quota refuses the pod: the API server's message reaches the status; the run starts once it
    is lifted."""
    ns = "quota-team"
    stack.cluster.kubectl("create", "namespace", ns)
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods", "namespace": ns},
        "spec": {"hard": {"pods": "0"}},
    }
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(quota))
    r = run(namespace=ns).apply()
    status = r.wait_reason("PodRejected")
    assert status["phase"] == "Pending" and "exceeded quota" in status["message"]
    stack.cluster.kubectl("delete", "resourcequota", "no-pods", "-n", ns)
    assert r.wait("Succeeded", "Failed", timeout=120)["status"]["phase"] == "Succeeded"


def test_a_pod_holding_the_attempts_name_is_not_adopted(stack: Stack, run: Any, image: str) -> None:
    r = run()
    squatter = sleeping_pod(f"{r.name}-1", image, "cpu-1")
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(squatter))
    r.apply()
    status = r.wait_reason("PodNameTaken")
    assert status["phase"] == "Pending" and "podUID" not in status
    stack.cluster.kubectl("delete", "pod", f"{r.name}-1", "--wait=true")
    status = r.wait("Succeeded", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status


def test_a_retry_on_a_shared_output_claim_is_refused(stack: Stack, run: Any) -> None:
    """With the user's own output claim, a retry finds attempt 1's files: it must not certify them."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}, backoffLimit=1).apply()
    r.wait_started()
    stack.cluster.kubectl("delete", "pod", f"{r.name}-1", "--wait=false")
    status = r.wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"], status["attempt"]) == ("Failed", "OutputNotEmpty", 2), status
    assert "started" in status["message"] and "certificate" not in status


def node_labels(stack: Stack, node: str) -> dict[str, str]:
    return dict(stack.get("node", node)["metadata"].get("labels") or {})


def test_a_node_whose_agent_died_takes_no_new_runs(stack: Stack, run: Any) -> None:
    """The agents' leases lapse, the operator removes the nodes' assurance label: a new run waits
    (Unschedulable) instead of landing where nothing can measure it, and runs once an agent is back."""
    for agent in stack.agents.values():
        agent.kill()
    try:
        deadline = time.monotonic() + 30
        while any("aicert.dev/assurance" in node_labels(stack, node) for node in stack.tpm_nodes):
            assert time.monotonic() < deadline, "a dead agent's node kept its label"
            time.sleep(0.3)
        r = run().apply()
        status = r.wait_reason("Unschedulable")
    finally:
        for agent in stack.agents.values():
            agent.start()
    stack.wait_for_label()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status


def test_agents_and_operator_touch_only_their_own_liveness_objects(stack: Stack) -> None:
    agent = Path(stack.agents["gpu-1"].env["KUBECONFIG"])
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "aicert-agent-cpu-1", "namespace": "aicert-system"},
        "spec": {"holderIdentity": "gpu-1"},
    }
    other = stack.cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(lease), kubeconfig=agent, check=False
    )
    operator = Path(stack.operator.env["KUBECONFIG"])
    relabel = stack.cluster.kubectl(
        "patch",
        "node",
        "cpu-1",
        "-p",
        '{"metadata":{"labels":{"team":"x"}}}',
        "--dry-run=server",
        kubeconfig=operator,
        check=False,
    )
    assert "may only renew its own lease aicert-agent-gpu-1" in other.stderr, other.stderr
    assert "may only remove the aicert.dev/assurance label" in relabel.stderr, relabel.stderr
