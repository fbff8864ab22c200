"""The operator's maximum deadline at the real kube-apiserver: the chart's training-deadline policy,
rendered with `operator.maxDeadlineSeconds`, refuses a CertifiedTraining that asks for more, and
leaves a training created before the cap was lowered updatable and deletable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster import LocalCluster, helm

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
CAP = 3600
NAMESPACE = "default"


def training(name: str, deadline: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "registry.example/train@sha256:" + "a" * 64,
        "output": {"emptyDir": {}, "mountPath": "/out"},
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    body = {"apiVersion": "aicert.dev/v1alpha1", "kind": "CertifiedTraining", "spec": spec}
    return body | {"metadata": {"name": name, "namespace": NAMESPACE}}


def create(cluster: LocalCluster, name: str, deadline: int | None) -> tuple[bool, str]:
    done = cluster.kubectl("create", "-f", "-", input=json.dumps(training(name, deadline)), check=False)
    return done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, helm_home: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("deadline")) as running:
        running.kubectl("apply", "-f", str(CRD))
        running.kubectl(
            "wait", "--for=condition=Established", "crd/certifiedtrainings.aicert.dev", "--timeout=60s"
        )
        assert create(running, "older", 86400)[0]  # before the cap: the operator ends it by the cap
        values = {"operator.deploy": False, "agent.deploy": False, "operator.maxDeadlineSeconds": CAP}
        manifest = helm.template(
            values,
            show_only=["templates/training-admission.yaml"],
            home=helm_home,
        )
        running.kubectl("apply", "-f", "-", input=manifest)
        deadline = time.monotonic() + 90
        while create(running, "probe", CAP + 1)[0]:  # the policy takes a moment to load
            running.kubectl("delete", "certifiedtraining", "probe", "-n", NAMESPACE)
            assert time.monotonic() < deadline, "the training-deadline policy never took effect"
            time.sleep(0.5)
        yield running


def test_a_training_asking_for_more_than_the_cap_is_refused_with_the_reason(cluster: LocalCluster) -> None:
    created, stderr = create(cluster, "too-long", CAP + 1)
    assert not created
    assert "aicert-training-deadline" in stderr
    assert (
        f"spec.activeDeadlineSeconds of CertifiedTraining {NAMESPACE}/too-long is {CAP + 1}: "
        f"this cluster lets a run take at most {CAP} seconds (operator.maxDeadlineSeconds)"
    ) in stderr


@pytest.mark.parametrize(("name", "deadline"), [("at-the-cap", CAP), ("below", 60), ("unset", None)])
def test_a_training_within_the_cap_is_admitted(
    cluster: LocalCluster, name: str, deadline: int | None
) -> None:
    created, stderr = create(cluster, name, deadline)
    assert created, stderr


def test_a_training_created_before_the_cap_can_still_be_updated_and_deleted(cluster: LocalCluster) -> None:
    """An UPDATE that keeps the value (labels, finalizers) must not be refused: a training the
    policy refused to update could never lose a finalizer, and would never go away."""
    cluster.kubectl("label", "certifiedtraining", "older", "team=ml", "-n", NAMESPACE)
    patch = json.dumps({"metadata": {"finalizers": ["example.com/hold"]}})
    cluster.kubectl("patch", "certifiedtraining", "older", "-n", NAMESPACE, "--type=merge", "-p", patch)
    cluster.kubectl(
        "patch",
        "certifiedtraining",
        "older",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    cluster.kubectl("delete", "certifiedtraining", "older", "-n", NAMESPACE, "--wait=true", "--timeout=60s")
