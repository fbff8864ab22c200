"""spec.output.oci at the real kube-apiserver with this checkout's CRD: what admission refuses, in
words a person understands (an emptyDir output, a digest in the reference, a scheme), that the field
is immutable like the rest of the spec; and the operator's status writes of a certified run's
publication (its pure `reconcile`, applied server-side with its field manager) keep everything the
operator and the agent wrote before, end with Published True and status.published, and leave the
phase Succeeded."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from aicert_contract.pod import PodSettings
from aicert_contract.publish import CONTAINER_PUSH, push_message
from aicert_contract.status import ConditionType, Reason, set_condition
from aicert_contract.training import FIELD_MANAGER_AGENT, GROUP, PLURAL, TrainingSpec
from aicert_kube import TrainingClient
from aicert_localcluster import LocalCluster
from aicert_operator.kube import Kube
from aicert_operator.observe import ContainerState, PodView
from aicert_operator.publish import certificate_sha256, push_views
from aicert_operator.reconcile import Training, reconcile

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "crds" / "certifiedtrainings.aicert.dev.yaml"
NAMESPACE = "default"
DONE = ContainerState("terminated", exit_code=0)
SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)
DIGEST = "sha256:" + "e" * 64
CLAIM_OUTPUT = {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/out"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("oci")) as running:
        running.kubectl("apply", "--server-side", "-f", str(CRD))
        running.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        yield running


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))  # type: ignore[no-untyped-call]


def body(name: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"image": "registry.example/train@sha256:" + "a" * 64, "output": output},
    }


def create(cluster: LocalCluster, name: str, output: dict[str, Any]) -> tuple[bool, str]:
    done = cluster.kubectl("create", "-f", "-", input=json.dumps(body(name, output)), check=False)
    return done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("output", "says"),
    [
        (
            {"emptyDir": {}, "mountPath": "/out", "oci": {"reference": "registry.example/models/m"}},
            "output.oci needs a volumeClaimTemplate or persistentVolumeClaim output: an emptyDir's files "
            "vanish with the training pod",
        ),
        (
            {**CLAIM_OUTPUT, "oci": {"reference": f"registry.example/models/m@{DIGEST}"}},
            "output.oci.reference must not name a digest",
        ),
        (
            {**CLAIM_OUTPUT, "oci": {"reference": "oci://registry.example/models/m:v1"}},
            "output.oci.reference must be REGISTRY/REPOSITORY[:TAG] (no oci:// scheme",
        ),
        (
            {**CLAIM_OUTPUT, "oci": {"reference": "registry.example/Models/m"}},
            "lower-case repository path components",
        ),
        (
            {**CLAIM_OUTPUT, "oci": {"reference": "registry.example"}},
            "output.oci.reference must be REGISTRY/REPOSITORY[:TAG]",
        ),
        (
            {**CLAIM_OUTPUT, "oci": {"reference": "r.example/m", "pullSecret": {"name": "Not_A_Name"}}},
            "spec.output.oci.pullSecret.name",
        ),
    ],
)
def test_admission_refuses_with_a_message_a_person_understands(
    cluster: LocalCluster, output: dict[str, Any], says: str
) -> None:
    created, stderr = create(cluster, "refused", output)
    assert not created
    assert says in stderr


def test_a_reference_with_a_port_and_tag_and_a_pull_secret_is_admitted_and_immutable(
    cluster: LocalCluster,
) -> None:
    oci = {"reference": "registry.example:5000/team/models/llm:v1.2", "pullSecret": {"name": "push-creds"}}
    created, stderr = create(cluster, "admitted", {**CLAIM_OUTPUT, "oci": oci})
    assert created, stderr
    patch = json.dumps({"spec": {"output": {"oci": {"reference": "evil.example/models/llm:v1"}}}})
    done = cluster.kubectl(
        "patch", "ct", "admitted", "-n", NAMESPACE, "--type=merge", "-p", patch, check=False
    )
    assert done.returncode != 0
    assert "immutable" in done.stderr or "oldSelf" in done.stderr, done.stderr


def as_operator_would(
    kube: Kube, current: dict[str, Any], pods: list[PodView], pushes: list[dict[str, Any]]
) -> dict[str, Any]:
    meta = current["metadata"]
    status = dict(current.get("status") or {})
    training = Training(
        meta["name"],
        meta["namespace"],
        meta["uid"],
        int(meta["generation"]),
        TrainingSpec.model_validate(current["spec"]),
        status,
    )
    views = push_views(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        status=status,
        pods=pushes,
        settings=SETTINGS,
    )
    decision = reconcile(training, pods, dt.datetime.now(dt.UTC), default_deadline=86400, pushes=views)
    written = kube.apply_status(
        meta["namespace"], meta["name"], meta["uid"], decision.status, read_version=meta["resourceVersion"]
    )
    assert written is not None
    return written


def pod(name: str, phase: str) -> PodView:
    states = {"aicert-gate": DONE, "train": DONE, "aicert-seal": DONE}
    return PodView(f"{name}-1", 1, "gpu-1", phase, False, "", "", None, states, uid="pod-uid-1")


def condition(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in found["status"]["conditions"] if c["type"] == kind)


def test_the_publication_is_written_beside_the_certificate_and_the_phase_stays_succeeded(
    cluster: LocalCluster, api: client.ApiClient
) -> None:
    from aicert_contract.publish import push_pod

    name = "published"
    oci = {"reference": "registry.example/models/llm:v1"}
    assert create(cluster, name, {**CLAIM_OUTPUT, "oci": oci})[0]
    kube = Kube(api)
    agent = TrainingClient(
        api, field_manager=FIELD_MANAGER_AGENT, controller="aicert.dev/agent", instance="n"
    )
    current = as_operator_would(
        kube, cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE), [pod(name, "Running")], []
    )
    certificate = '{"a certificate": true}'
    certified = set_condition(
        None,
        ConditionType.CERTIFIED,
        "True",
        Reason.CERTIFIED,
        "certified",
        generation=current["metadata"]["generation"],
        now=dt.datetime.now(dt.UTC),
    )
    current = agent.apply_status(
        NAMESPACE, name, current["metadata"]["uid"], {"certificate": certificate, "conditions": [certified]}
    )
    assert current is not None
    current = as_operator_would(kube, current, [pod(name, "Succeeded")], [])
    assert current["status"]["phase"] == "Succeeded"
    # the next reconcile wants the first push pod: Published False, PushPending
    current = as_operator_would(kube, current, [pod(name, "Succeeded")], [])
    assert (condition(current, "Published")["status"], condition(current, "Published")["reason"]) == (
        "False",
        "PushPending",
    )
    pushed = push_pod(
        name=name,
        namespace=NAMESPACE,
        uid=current["metadata"]["uid"],
        spec=TrainingSpec.model_validate(current["spec"]),
        attempt=1,
        push_try=1,
        settings=SETTINGS,
        certificate_sha256=certificate_sha256(certificate),
        envelope_signature=None,
    )
    terminated = {"exitCode": 0, "message": push_message(digest=DIGEST).decode()}
    pushed["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [{"name": CONTAINER_PUSH, "state": {"terminated": terminated}}],
    }
    current = as_operator_would(kube, current, [pod(name, "Succeeded")], [pushed])
    final = cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE)
    assert final["status"]["phase"] == "Succeeded"
    assert final["status"]["published"] == {
        "reference": f"oci://registry.example/models/llm@{DIGEST}",
        "digest": DIGEST,
    }
    assert condition(final, "Published")["status"] == "True"
    # what the operator and the agent wrote before is all still there
    assert final["status"]["certificate"] == certificate
    assert condition(final, "Certified")["status"] == "True"
    assert condition(final, "Finished")["status"] == "True"
    assert final["status"]["attempt"] == 1 and final["status"]["podName"] == f"{name}-1"
    waited = cluster.kubectl(
        "wait", "--for=condition=Published", f"ct/{name}", "-n", NAMESPACE, "--timeout=10s"
    )
    assert "condition met" in waited.stdout


def test_the_push_pod_as_the_api_server_stores_it_is_the_operators_own(
    cluster: LocalCluster, api: client.ApiClient
) -> None:
    """The API server defaults fields of a pod it stores (a secret volume's mode, the service
    account); the operator must still recognise the push pod it made, or it would never publish."""
    from aicert_contract.publish import push_pod

    name = "stored"
    oci = {"reference": "registry.example/models/llm:v1", "pullSecret": {"name": "push-creds"}}
    assert create(cluster, name, {**CLAIM_OUTPUT, "oci": oci})[0]
    training = cluster.kubectl_json("get", "ct", name, "-n", NAMESPACE)
    status = {"phase": "Succeeded", "attempt": 1, "certificate": "{}", "envelopeSignature": "c2ln"}
    spec = TrainingSpec.model_validate(training["spec"])
    made = push_pod(
        name=name,
        namespace=NAMESPACE,
        uid=training["metadata"]["uid"],
        spec=spec,
        attempt=1,
        push_try=1,
        settings=SETTINGS,
        certificate_sha256=certificate_sha256("{}"),
        envelope_signature="c2ln",
    )
    created = Kube(api).create_pod(made)
    assert created.new
    stored = cluster.kubectl_json("get", "pod", made["metadata"]["name"], "-n", NAMESPACE)
    [view] = push_views(
        name=name,
        namespace=NAMESPACE,
        uid=training["metadata"]["uid"],
        spec=spec,
        status=status,
        pods=[stored],
        settings=SETTINGS,
    )
    assert view.deviations == ()
    changed = json.loads(json.dumps(stored))
    changed["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "tenant-claim"
    [other] = push_views(
        name=name,
        namespace=NAMESPACE,
        uid=training["metadata"]["uid"],
        spec=spec,
        status=status,
        pods=[changed],
        settings=SETTINGS,
    )
    assert other.deviations == ("spec.volumes[output]",)


def portforward(cluster: LocalCluster, pod: str) -> str:
    """A CONNECT into `pod` (as `kubectl port-forward` makes it); its error. Admission judges a
    CONNECT before the API server looks the pod up."""
    done = cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/portforward?ports=8080",
        "-f",
        "/dev/null",
        check=False,
    )
    assert done.returncode != 0
    return done.stderr


def test_nobody_gets_into_a_push_pod(cluster: LocalCluster, helm_home: Path) -> None:
    """A shell in a push pod could write the termination message the operator reads as the pushed
    digest: the chart's no-connect policy denies CONNECT into <training>-<attempt>-push-<try> as
    into the training pod itself, and names nothing else."""
    import time

    from aicert_localcluster import helm

    values = {"operator.deploy": False, "agent.deploy": False}
    manifest = helm.template(values, show_only=["templates/training-admission.yaml"], home=helm_home)
    documents = [d for d in yaml_documents(manifest) if "no-connect" in d["metadata"]["name"]]
    assert len(documents) == 2  # the policy and its binding
    for document in documents:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(document))
    assert create(cluster, "guarded", {**CLAIM_OUTPUT, "oci": {"reference": "r.example/m"}})[0]
    policy = "ValidatingAdmissionPolicy 'aicert-training-pod-no-connect'"
    deadline = time.monotonic() + 90
    while policy not in portforward(cluster, "guarded-1"):  # the policy takes a moment to load
        assert time.monotonic() < deadline, "the no-connect policy never took effect"
        time.sleep(0.5)
    assert policy in portforward(cluster, "guarded-1-push-1")
    assert policy in portforward(cluster, "guarded-12-push-3")
    for other in ("guarded-1-push", "guarded-1-push-x", "guarded-1-pusher-1", "guarded-x-push-1"):
        assert policy not in portforward(cluster, other), other


def yaml_documents(text: str) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(text) if d]
