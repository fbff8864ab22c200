"""Faults only a real node can have (issue: real nodes): kubelet or containerd crashing while a
training runs, the train container OOM-killed by the kernel, an image the registry does not hold.
Each ends in one clear state: certified once, or a documented failure reason, never a second or a
wrong certificate."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aicert.trust import TrustStore
from aicert.verify import Verifier
from aicert_localcluster.realnode import faults
from aicert_localcluster.stack import Stack
from tests.e2e.test_run_integrity import events


def certified_once(stack: Stack, r: Any) -> dict[str, Any]:
    """The run's final status, after checking it was certified exactly once, on attempt 1, with a
    certificate that verifies against the weights on disk."""
    status: dict[str, Any] = r.wait("Succeeded", "Failed", timeout=240)["status"]
    assert (status["phase"], status["attempt"]) == ("Succeeded", 1), status
    assert [e for e in events(stack, r.name) if e == ("aicert.dev/agent", "Certified")] == [
        ("aicert.dev/agent", "Certified")
    ]
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(status["certificate"], model_dir=r.model)
    return status


@pytest.mark.parametrize("component", ["kubelet", "containerd"])
def test_a_node_component_crashing_mid_run_is_certified_once(stack: Stack, run: Any, component: str) -> None:
    """kubelet or containerd SIGKILLed between the gate and the seal and started again, as systemd
    would: the containers run on (their shims are their own), the node reports the same pod, and the
    run is certified once."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    pod_uid = r.pods()[0]["metadata"]["uid"]
    faults.crash_and_restart(stack.nodes[r.node], component)
    r.release()
    status = certified_once(stack, r)
    assert status["podUID"] == pod_uid


def test_a_node_rebooted_mid_run_is_retried_and_certified_once(stack: Stack, run: Any) -> None:
    """Every process of the node killed at once, /run emptied (the agent's state with it), the TPM
    power-cycled (PCRs reset), the node booted again, between the gate and the seal: kubelet reports
    the vanished train container as exited 255, attempt 1 fails as TrainingFailed with nothing
    certified, and attempt 2 (backoffLimit 1) runs from its own gate to its own seal on the
    rebooted state and is certified once."""
    r = run(env={"WAIT_FOR_RELEASE": "1"}, backoffLimit=1).per_attempt_output().apply()
    r.wait_started()
    stack.reboot(r.node)
    r.wait_started(attempt=2, timeout=240)
    r.release(attempt=2)
    status = r.wait("Succeeded", "Failed", timeout=300)["status"]
    assert (status["phase"], status["attempt"]) == ("Succeeded", 2), status
    assert [e for e in events(stack, r.name) if e == ("aicert.dev/agent", "Certified")] == [
        ("aicert.dev/agent", "Certified")
    ]
    warnings = stack.cluster.kubectl_json(
        "get", "events.events.k8s.io", "--field-selector", f"regarding.name={r.name},reason=TrainingFailed"
    )["items"]
    assert any("exited with 255" in (e.get("note") or "") for e in warnings), warnings
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(status["certificate"], model_dir=r.output_dir(2))


def test_an_oom_killed_training_is_not_certified(stack: Stack, run: Any) -> None:
    """The kernel kills the train container at its memory limit: the run fails as TrainingFailed
    with the exit code kubelet reports (137), and nothing is certified."""
    r = run(
        env={"HOSTILE": "oom"},
        resources={"limits": {"memory": "96Mi"}, "requests": {"memory": "96Mi"}},
        backoffLimit=0,
    ).apply()
    status = r.wait("Succeeded", "Failed", timeout=180)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TrainingFailed"), status
    assert "137" in status["message"]
    assert "certificate" not in status
    (pod,) = r.pods()
    train = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "train")
    assert train["state"]["terminated"]["reason"] == "OOMKilled"


def test_an_image_the_registry_lacks_waits_with_the_pull_error(stack: Stack, run: Any, image: str) -> None:
    """spec.image pinned to a digest the registry does not hold: the run waits with kubelet's pull
    error as its reason (the deadline ends it), and nothing is measured or certified."""
    missing = image.rpartition("@")[0] + "@sha256:" + "0" * 64
    r = run()
    r.body["spec"]["image"] = missing
    r.apply()
    deadline = time.monotonic() + 120
    while (status := r.status).get("reason") not in ("ErrImagePull", "ImagePullBackOff"):
        assert time.monotonic() < deadline, status
        assert status.get("phase") not in ("Succeeded", "Failed"), status
        time.sleep(0.5)
    assert "certificate" not in status and status["phase"] == "Pending"
    assert not [e for e in events(stack, r.name) if e[0] == "aicert.dev/agent"]
    stack.cluster.kubectl("delete", "ct", r.name, "--wait=true")
