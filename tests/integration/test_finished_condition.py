"""`kubectl wait --for=condition=Finished` against the real kube-apiserver with this checkout's CRD:
the status is written as the operator writes it (its pure `reconcile`, applied server-side with its
field manager; the agent's Certified and certificate with the agent's), and the wait returns for a
certified run and for a failed one alike. `kubectl get ct` shows the reason beside the phase."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from aicert_contract.status import ConditionType, Reason, set_condition
from aicert_contract.training import FIELD_MANAGER_AGENT, GROUP, PLURAL, TrainingSpec
from aicert_kube import TrainingClient
from aicert_localcluster import LocalCluster
from aicert_operator.kube import Kube
from aicert_operator.observe import ContainerState, PodView
from aicert_operator.reconcile import Training, reconcile

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
NAMESPACE = "default"
DEADLINE = 600
DONE = ContainerState("terminated", exit_code=0)
RUNNING = ContainerState("running")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("finished")) as running:
        running.kubectl("apply", "--server-side", "-f", str(CRD))
        running.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        yield running


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))  # type: ignore[no-untyped-call]


def create(cluster: LocalCluster, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "image": "registry.example/train@sha256:" + "a" * 64,
            "output": {"emptyDir": {}, "mountPath": "/out"},
            "activeDeadlineSeconds": DEADLINE,
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    created: dict[str, Any] = cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE)
    return created


def as_operator_would(
    kube: Kube, body: dict[str, Any], pods: list[PodView], now: dt.datetime
) -> dict[str, Any]:
    """One reconcile of `body` and its status write, as the operator's handler does them."""
    meta = body["metadata"]
    training = Training(
        meta["name"],
        meta["namespace"],
        meta["uid"],
        int(meta["generation"]),
        TrainingSpec.model_validate(body["spec"]),
        dict(body.get("status") or {}),
    )
    decision = reconcile(training, pods, now, default_deadline=86400)
    written = kube.apply_status(
        meta["namespace"], meta["name"], meta["uid"], decision.status, read_version=meta["resourceVersion"]
    )
    assert written is not None
    return written


def pod(name: str, phase: str, **containers: ContainerState) -> PodView:
    states = {k.replace("_", "-"): v for k, v in containers.items()}
    return PodView(f"{name}-1", 1, "gpu-1", phase, False, "", "", None, states, uid="pod-uid-1")


def wait_finished(cluster: LocalCluster, name: str, timeout: str) -> subprocess.Popen[str]:
    cmd = [
        str(cluster.bin_dir / "kubectl"),
        f"--kubeconfig={cluster.admin_kubeconfig}",
        "wait",
        "--for=condition=Finished",
        f"ct/{name}",
        "-n",
        NAMESPACE,
        f"--timeout={timeout}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def not_finished(cluster: LocalCluster, name: str) -> None:
    """No Finished condition yet: a short wait runs out (what it says, not how long it took)."""
    done = wait_finished(cluster, name, "2s")
    out, err = done.communicate(timeout=60)
    assert done.returncode != 0 and "timed out" in err, (out, err)


def finished(waiting: subprocess.Popen[str]) -> str:
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    return out


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in body["status"]["conditions"] if c["type"] == kind)
    return found


def test_wait_for_finished_returns_for_a_certified_run(cluster: LocalCluster, api: client.ApiClient) -> None:
    kube = Kube(api)
    agent = TrainingClient(
        api, field_manager=FIELD_MANAGER_AGENT, controller="aicert.dev/agent", instance="n"
    )
    name = "certified"
    start = dt.datetime.now(dt.UTC)
    body = as_operator_would(
        kube, create(cluster, name), [pod(name, "Running", aicert_gate=DONE, train=RUNNING)], start
    )
    waiting = wait_finished(cluster, name, "120s")
    not_finished(cluster, name)
    assert waiting.poll() is None
    certified = set_condition(
        None,
        ConditionType.CERTIFIED,
        "True",
        Reason.CERTIFIED,
        "model certified",
        generation=body["metadata"]["generation"],
        now=start,
    )
    written = agent.apply_status(
        NAMESPACE,
        name,
        body["metadata"]["uid"],
        {"certificate": "{}", "modelDigest": "sha256:" + "b" * 64, "conditions": [certified]},
    )
    assert written is not None
    body = as_operator_would(
        kube, written, [pod(name, "Succeeded", aicert_gate=DONE, train=DONE, aicert_seal=DONE)], start
    )
    assert body["status"]["phase"] == "Succeeded"
    assert finished(waiting).strip() == f"certifiedtraining.{GROUP}/{name} condition met"
    final = cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE)
    assert (condition(final, "Finished")["status"], condition(final, "Finished")["reason"]) == (
        "True",
        "Certified",
    )
    assert condition(final, "Certified")["status"] == "True"
    assert all(
        c["observedGeneration"] == final["metadata"]["generation"] for c in final["status"]["conditions"]
    )


def test_wait_for_finished_returns_for_a_failed_run_and_certified_is_false(
    cluster: LocalCluster, api: client.ApiClient
) -> None:
    kube = Kube(api)
    name = "too-slow"
    start = dt.datetime.now(dt.UTC)
    body = as_operator_would(
        kube, create(cluster, name), [pod(name, "Running", aicert_gate=DONE, train=RUNNING)], start
    )
    assert condition(body, "Finished")["status"] == "False"
    waiting = wait_finished(cluster, name, "120s")
    not_finished(cluster, name)
    later = start + dt.timedelta(seconds=DEADLINE + 1)
    body = as_operator_would(kube, body, [pod(name, "Running", aicert_gate=DONE, train=RUNNING)], later)
    assert (body["status"]["phase"], body["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    finished(waiting)
    final = cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE)
    for kind, status in (("Finished", "True"), ("Certified", "False")):
        got = condition(final, kind)
        assert (got["status"], got["reason"]) == (status, "DeadlineExceeded")
        assert got["message"] == final["status"]["message"]
    table = cluster.kubectl("get", "ct", name, "-n", NAMESPACE).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PHASE", "REASON"]
    assert table[1].split()[:3] == [name, "Failed", "DeadlineExceeded"]


def test_a_run_failed_under_an_older_operator_gets_finished_and_keeps_its_status(
    cluster: LocalCluster, api: client.ApiClient
) -> None:
    kube = Kube(api)
    name = "failed-before"
    created = create(cluster, name)
    meta = created["metadata"]
    start = dt.datetime.now(dt.UTC)
    scheduled = set_condition(
        None, ConditionType.SCHEDULED, "True", Reason.SCHEDULED, "on node gpu-1", generation=1, now=start
    )
    old_status = {  # what an operator without Finished wrote, with the operator's field manager
        "phase": "Failed",
        "reason": "TrainingFailed",
        "message": "the train container exited with 2",
        "observedGeneration": 1,
        "attempt": 1,
        "podName": f"{name}-1",
        "node": "gpu-1",
        "startTime": "2026-11-20T11:00:00Z",
        "completionTime": "2026-11-20T11:10:00Z",
        "conditions": [scheduled],
    }
    written = kube.apply_status(NAMESPACE, name, meta["uid"], old_status)
    assert written is not None
    waiting = wait_finished(cluster, name, "120s")
    not_finished(cluster, name)
    after = as_operator_would(kube, written, [], start)
    finished(waiting)
    assert {k: v for k, v in after["status"].items() if k != "conditions"} == {
        k: v for k, v in old_status.items() if k != "conditions"
    }
    assert condition(after, "Scheduled") == scheduled
    for kind, status in (("Finished", "True"), ("Certified", "False")):
        got = condition(after, kind)
        assert (got["status"], got["reason"], got["message"]) == (
            status,
            "TrainingFailed",
            old_status["message"],
        )
