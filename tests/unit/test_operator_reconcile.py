"""The operator's decisions, from observed state alone (no API server needed)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from aicert_contract.pod import Deviation, PodSettings, training_pod
from aicert_contract.status import Reason
from aicert_contract.training import SEAL_REFUSED_EXIT, TrainingSpec
from aicert_operator.observe import ContainerState, PodView, owned_pods
from aicert_operator.reconcile import Event, Training, pod_not_created, reconcile

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DEADLINE = 86400  # the operator's default activeDeadlineSeconds, for specs without one
SPEC = {"image": "r/t@sha256:" + "a" * 64, "output": {"emptyDir": {}, "mountPath": "/out"}}


def training(status: dict[str, Any] | None = None, **spec: Any) -> Training:
    return Training("run", "ml", "uid-1", 1, TrainingSpec.model_validate({**SPEC, **spec}), status or {})


def pod(
    attempt: int = 1, node: str | None = "gpu-1", phase: str = "Pending", **containers: ContainerState
) -> PodView:
    states = {k.replace("_", "-"): v for k, v in containers.items()}
    return PodView(f"run-{attempt}", attempt, node, phase, False, "", "", None, states)


RUNNING = ContainerState("running")
WAITING = ContainerState("waiting", reason="PodInitializing")
DONE = ContainerState("terminated", exit_code=0)


def test_first_look_creates_attempt_one() -> None:
    decision = reconcile(training(), [], NOW, default_deadline=DEADLINE)
    assert decision.create_attempt == 1
    assert decision.status["phase"] == "Pending" and decision.status["podName"] == "run-1"
    assert [e.reason for e in decision.events] == ["Created"]


def test_unschedulable_says_why_and_waits() -> None:
    unplaced = PodView(
        "run-1",
        1,
        None,
        "Pending",
        False,
        "",
        "",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
        {},
    )
    decision = reconcile(
        training({"attempt": 1, "phase": "Pending"}), [unplaced], NOW, default_deadline=DEADLINE
    )
    assert decision.create_attempt is None
    assert decision.status["phase"] == "Pending" and decision.status["reason"] == "Unschedulable"
    assert "needs assurance vtpm or higher" in decision.status["message"]
    scheduled = next(c for c in decision.status["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["observedGeneration"]) == ("False", 1)


@pytest.mark.parametrize(
    ("containers", "phase", "conditions"),
    [
        (
            {"aicert_gate": RUNNING, "train": WAITING},
            "Measuring",
            {"Scheduled": "True", "InputsMeasured": "False"},
        ),
        ({"aicert_gate": DONE, "train": RUNNING}, "Training", {"InputsMeasured": "True", "Trained": "False"}),
        ({"aicert_gate": DONE, "train": DONE, "aicert_seal": RUNNING}, "Sealing", {"Trained": "True"}),
    ],
)
def test_phases_follow_the_pod(
    containers: dict[str, ContainerState], phase: str, conditions: dict[str, str]
) -> None:
    decision = reconcile(
        training({"attempt": 1}),
        [pod(phase="Running" if phase != "Measuring" else "Pending", **containers)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert decision.status["phase"] == phase and decision.status["node"] == "gpu-1"
    got = {c["type"]: c["status"] for c in decision.status["conditions"]}
    assert conditions.items() <= got.items()


def test_succeeded_only_with_a_certificate() -> None:
    done = pod(phase="Succeeded", aicert_gate=DONE, train=DONE, aicert_seal=DONE)
    waiting = reconcile(training({"attempt": 1}), [done], NOW, default_deadline=DEADLINE)
    assert waiting.status["phase"] == "Sealing"
    certified = {
        "attempt": 1,
        "certificate": "{}",
        "modelDigest": "sha256:" + "b" * 64,
        "conditions": [{"type": "Certified", "status": "True", "reason": "Certified", "message": ""}],
    }
    decision = reconcile(training(certified), [done], NOW, default_deadline=DEADLINE)
    assert (
        decision.status["phase"] == "Succeeded"
        and decision.status["completionTime"] == "2026-11-23T12:00:00Z"
    )
    assert decision.events == ()  # the agent's Certified Event says it; the operator's would repeat it


def test_failed_training_without_retries_fails() -> None:
    failed = pod(phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    decision = reconcile(training({"attempt": 1}), [failed], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "TrainingFailed")
    assert "exited with 2" in decision.status["message"] and decision.create_attempt is None


def test_failed_training_is_retried_within_backoff_limit() -> None:
    failed = pod(phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    decision = reconcile(training({"attempt": 1}, backoffLimit=1), [failed], NOW, default_deadline=DEADLINE)
    assert decision.create_attempt == 2 and decision.status["podName"] == "run-2"
    again = pod(attempt=2, phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    final = reconcile(
        training({"attempt": 2}, backoffLimit=1), [failed, again], NOW, default_deadline=DEADLINE
    )
    assert final.status["phase"] == "Failed" and "backoffLimit 1 reached" in final.status["message"]


def test_deleted_pod_is_replaced_then_counted() -> None:
    decision = reconcile(
        training({"attempt": 1, "phase": "Training"}, backoffLimit=1), [], NOW, default_deadline=DEADLINE
    )
    assert decision.create_attempt == 2 and decision.status["reason"] == "PodDeleted"
    assert (
        reconcile(training({"attempt": 1, "phase": "Training"}), [], NOW, default_deadline=DEADLINE).status[
            "phase"
        ]
        == "Failed"
    )


def test_evicted_pod_is_retried() -> None:
    evicted = PodView(
        "run-1", 1, "gpu-1", "Failed", False, "Evicted", "node low on memory", None, {"train": RUNNING}
    )
    assert (
        reconcile(
            training({"attempt": 1}, backoffLimit=2), [evicted], NOW, default_deadline=DEADLINE
        ).create_attempt
        == 2
    )


def test_agent_refusal_is_terminal_and_keeps_its_reason() -> None:
    refused = pod(
        phase="Failed", aicert_gate=DONE, train=DONE, aicert_seal=ContainerState("terminated", exit_code=3)
    )
    status = {
        "attempt": 1,
        "conditions": [
            {
                "type": "Certified",
                "status": "False",
                "reason": "InputsChanged",
                "message": "input data changed during training",
            }
        ],
    }
    decision = reconcile(training(status, backoffLimit=3), [refused], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "InputsChanged")
    assert decision.create_attempt is None


def test_deadline_exceeded_fails_and_stops_the_pod() -> None:
    status = {"attempt": 1, "startTime": "2026-11-23T11:00:00Z"}
    decision = reconcile(
        training(status, activeDeadlineSeconds=600),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "DeadlineExceeded")
    assert decision.delete_pods == ("run-1",)


def test_requeue_at_the_deadline() -> None:
    status = {"attempt": 1, "startTime": "2026-11-23T11:55:00Z"}
    decision = reconcile(
        training(status, activeDeadlineSeconds=600),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert decision.status["phase"] == "Training" and decision.requeue_after == 300


def test_terminal_status_is_left_alone_but_stray_pods_go() -> None:
    finished = {"type": "Finished", "status": "True", "reason": "PodFailed", "message": "failed"}
    decision = reconcile(
        training({"phase": "Failed", "attempt": 1, "conditions": [finished]}),
        [pod(phase="Running", train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert decision.status == {} and decision.delete_pods == ("run-1",)


def test_same_observation_same_decision_and_no_repeated_events() -> None:
    observed = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    first = reconcile(
        training({"attempt": 1, "phase": "Measuring"}), observed, NOW, default_deadline=DEADLINE
    )
    later = NOW + dt.timedelta(minutes=5)
    second = reconcile(
        training(first.status), observed, later, default_deadline=DEADLINE
    )  # a restarted operator, same world
    assert second.status == first.status and second.events == ()
    assert second.create_attempt is None


def test_transition_time_moves_only_when_the_status_does() -> None:
    measuring = reconcile(
        training({"attempt": 1}), [pod(phase="Pending", aicert_gate=RUNNING)], NOW, default_deadline=DEADLINE
    )
    later = NOW + dt.timedelta(minutes=1)
    training_ = reconcile(
        training(measuring.status),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        later,
        default_deadline=DEADLINE,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in training_.status["conditions"]}
    assert times["Scheduled"] == "2026-11-23T12:00:00Z" and times["InputsMeasured"] == "2026-11-23T12:01:00Z"


def test_image_pull_error_is_pending_with_the_reason() -> None:
    pulling = pod(
        phase="Pending",
        aicert_gate=DONE,
        train=ContainerState("waiting", reason="ErrImagePull", message="unknown digest"),
    )
    decision = reconcile(training({"attempt": 1}), [pulling], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Pending",
        "ErrImagePull",
        "unknown digest",
    )


def test_unchanged_status_is_not_applied_again() -> None:
    from aicert_operator.reconcile import status_unchanged

    observed = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    first = reconcile(training({"attempt": 1}), observed, NOW, default_deadline=DEADLINE)
    # what the API server holds after the apply, plus the agent's fields and condition
    stored = {
        **first.status,
        "assurance": "dev",
        "conditions": [*first.status["conditions"], {"type": "Certified", "status": "Unknown"}],
    }
    again = reconcile(training(stored), observed, NOW + dt.timedelta(seconds=30), default_deadline=DEADLINE)
    assert status_unchanged(stored, again.status)
    moved = reconcile(
        training(stored),
        [pod(phase="Running", aicert_gate=DONE, train=DONE, aicert_seal=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert not status_unchanged(stored, moved.status)


# --- the contract's pod, podUID, deadlines ------------------------------------------------------------


def test_a_pod_that_departs_from_the_contract_fails_the_run_and_goes() -> None:
    changed = PodView(
        "run-1",
        1,
        "gpu-1",
        "Running",
        False,
        "",
        "",
        None,
        {"aicert-gate": DONE, "train": RUNNING},
        uid="pod-uid-1",
        deviations=(
            Deviation("spec.initContainers[train].image", "changed", False),
            Deviation("metadata.labels[aicert.dev/attempt]", "changed", False),
        ),
    )
    decision = reconcile(training({"attempt": 1}, backoffLimit=3), [changed], NOW, default_deadline=DEADLINE)
    message = (
        "pod run-1 is not the pod the operator made: spec.initContainers[train].image changed, "
        "metadata.labels[aicert.dev/attempt] changed"
    )
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "PodMismatch",
        message,
    )
    assert decision.delete_pods == ("run-1",) and decision.create_attempt is None
    assert decision.status["completionTime"] == "2026-11-23T12:00:00Z" and decision.requeue_after is None
    assert decision.events == (Event("Warning", Reason.POD_MISMATCH, message),)


def test_the_status_names_the_current_pod_by_uid() -> None:
    running = PodView(
        "run-1",
        1,
        "gpu-1",
        "Running",
        False,
        "",
        "",
        None,
        {"aicert-gate": DONE, "train": RUNNING},
        uid="pod-uid-1",
    )
    decision = reconcile(training({"attempt": 1}), [running], NOW, default_deadline=DEADLINE)
    assert (decision.status["podName"], decision.status["podUID"]) == ("run-1", "pod-uid-1")


def test_a_retry_drops_the_uid_of_the_previous_pod() -> None:
    failed = PodView(
        "run-1",
        1,
        "gpu-1",
        "Failed",
        False,
        "",
        "",
        None,
        {"aicert-gate": DONE, "train": ContainerState("terminated", exit_code=1)},
        uid="pod-uid-1",
    )
    status = {"attempt": 1, "podName": "run-1", "podUID": "pod-uid-1"}
    decision = reconcile(training(status, backoffLimit=1), [failed], NOW, default_deadline=DEADLINE)
    assert decision.create_attempt == 2 and decision.status["podName"] == "run-2"
    assert "podUID" not in decision.status and "node" not in decision.status


def test_default_deadline_applies_without_active_deadline_seconds() -> None:
    status = {"attempt": 1, "startTime": "2026-11-23T11:00:00Z"}
    running = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    expired = reconcile(training(status), running, NOW, default_deadline=1800)
    assert (expired.status["phase"], expired.status["reason"], expired.status["message"]) == (
        "Failed",
        "DeadlineExceeded",
        "the run did not finish within activeDeadlineSeconds=1800",
    )
    assert expired.delete_pods == ("run-1",)
    running_on = reconcile(training(status), running, NOW, default_deadline=7200)
    assert running_on.status["phase"] == "Training" and running_on.requeue_after == 3600
    # the spec's own deadline wins over the default
    own = reconcile(training(status, activeDeadlineSeconds=1800), running, NOW, default_deadline=7200)
    assert own.status["reason"] == "DeadlineExceeded"


def test_first_attempt_requeues_at_the_default_deadline() -> None:
    decision = reconcile(training(), [], NOW, default_deadline=5400)
    assert decision.status["startTime"] == "2026-11-23T12:00:00Z" and decision.requeue_after == 5400


# --- the pod could not be created ---------------------------------------------------------------------


def test_a_taken_pod_name_leaves_the_run_pending() -> None:
    first = reconcile(training(), [], NOW, default_deadline=DEADLINE)
    message = 'pods "run-1" already exists'
    decision = pod_not_created(training(), first, message, name_taken=True, transient=False, now=NOW)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Pending",
        "PodNameTaken",
        message,
    )
    assert decision.status["attempt"] == 0 and "podName" not in decision.status
    assert decision.requeue_after == 10.0 and decision.create_attempt is None
    assert "completionTime" not in decision.status
    assert decision.events == (Event("Warning", Reason.POD_NAME_TAKEN, message),)
    scheduled = decision.status["conditions"]
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in scheduled] == [
        ("Scheduled", "False", "PodNameTaken", message),
        ("Finished", "False", "PodNameTaken", message),
    ]


def test_a_taken_name_on_retry_keeps_the_previous_attempt() -> None:
    failed = pod(phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    status = {"attempt": 1, "podName": "run-1", "podUID": "pod-uid-1", "node": "gpu-1"}
    retry = reconcile(training(status, backoffLimit=1), [failed], NOW, default_deadline=DEADLINE)
    assert retry.create_attempt == 2
    decision = pod_not_created(
        training(status, backoffLimit=1), retry, "taken", name_taken=True, transient=False, now=NOW
    )
    assert (decision.status["attempt"], decision.status["podName"], decision.status["podUID"]) == (
        1,
        "run-1",
        "pod-uid-1",
    )
    assert decision.status["phase"] == "Pending" and decision.status["reason"] == "PodNameTaken"


def test_a_transient_refusal_leaves_the_run_pending() -> None:
    first = reconcile(training(), [], NOW, default_deadline=DEADLINE)
    message = "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1"
    decision = pod_not_created(training(), first, message, name_taken=False, transient=True, now=NOW)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Pending",
        "PodRejected",
        message,
    )
    assert decision.status["attempt"] == 0 and decision.requeue_after == 10.0
    assert "completionTime" not in decision.status
    assert decision.events == (Event("Warning", Reason.POD_REJECTED, message),)


def test_any_other_refusal_fails_the_run() -> None:
    first = reconcile(training(), [], NOW, default_deadline=DEADLINE)
    message = 'pods "run-1" is forbidden: violates PodSecurity "restricted:latest"'
    decision = pod_not_created(training(), first, message, name_taken=False, transient=False, now=NOW)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "PodRejected",
        message,
    )
    assert decision.status["completionTime"] == "2026-11-23T12:00:00Z"
    assert decision.status["attempt"] == 0 and decision.requeue_after is None
    assert decision.events == (Event("Warning", Reason.POD_REJECTED, message),)


# --- the agent's refusal ------------------------------------------------------------------------------


def test_an_undocumented_refusal_reason_becomes_certification_refused() -> None:
    refused = pod(
        phase="Failed",
        aicert_gate=DONE,
        train=DONE,
        aicert_seal=ContainerState("terminated", exit_code=SEAL_REFUSED_EXIT),
    )
    status = {
        "attempt": 1,
        "conditions": [
            {"type": "Certified", "status": "False", "reason": "KeyError", "message": "the agent crashed"}
        ],
    }
    decision = reconcile(training(status, backoffLimit=3), [refused], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "CertificationRefused",
        "the agent crashed",
    )
    assert decision.create_attempt is None


def test_the_gate_exiting_refused_is_the_agents_terminal_refusal() -> None:
    refused = pod(
        node="gpu-1", phase="Failed", aicert_gate=ContainerState("terminated", exit_code=SEAL_REFUSED_EXIT)
    )
    decision = reconcile(training({"attempt": 1}, backoffLimit=3), [refused], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "CertificationRefused",
        "the node agent refused to certify this run",
    )
    assert decision.create_attempt is None and decision.status["completionTime"] == "2026-11-23T12:00:00Z"
    with_reason = {
        "attempt": 1,
        "conditions": [
            {
                "type": "Certified",
                "status": "False",
                "reason": "PodMismatch",
                "message": "spec.hostPID differs",
            }
        ],
    }
    decision = reconcile(training(with_reason, backoffLimit=3), [refused], NOW, default_deadline=DEADLINE)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "PodMismatch")
    assert decision.create_attempt is None


def test_another_gate_failure_is_retried() -> None:
    failed = pod(phase="Failed", aicert_gate=ContainerState("terminated", exit_code=4))
    decision = reconcile(training({"attempt": 1}, backoffLimit=1), [failed], NOW, default_deadline=DEADLINE)
    assert decision.create_attempt == 2 and decision.status["reason"] == "GateFailed"


# --- owned_pods ---------------------------------------------------------------------------------------

SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)


def live(attempt: int = 1, uid: str = "pod-uid-1") -> dict[str, Any]:
    p = copy.deepcopy(
        training_pod(
            name="run",
            namespace="ml",
            uid="uid-1",
            spec=TrainingSpec.model_validate(SPEC),
            attempt=attempt,
            settings=SETTINGS,
        )
    )
    p["metadata"]["uid"] = uid
    p["status"] = {"phase": "Pending"}
    return p


def owned(pods: list[dict[str, Any]]) -> list[PodView]:
    return owned_pods(
        name="run",
        namespace="ml",
        uid="uid-1",
        spec=TrainingSpec.model_validate(SPEC),
        pods=pods,
        settings=SETTINGS,
        status={},
    )


def test_the_operators_own_pod_is_returned_conforming() -> None:
    [view] = owned([live()])
    assert (view.name, view.attempt, view.uid, view.phase, view.deviations) == (
        "run-1",
        1,
        "pod-uid-1",
        "Pending",
        (),
    )


def test_a_pod_with_the_labels_but_another_controller_is_not_owned() -> None:
    impostor = live(uid="pod-uid-x")
    impostor["metadata"]["ownerReferences"][0]["uid"] = "uid-other"
    assert owned([impostor]) == []
    no_owner = live(uid="pod-uid-y")
    del no_owner["metadata"]["ownerReferences"]
    assert owned([no_owner]) == []


@pytest.mark.parametrize(
    ("name", "attempt_label"), [("run-1-evil", "1"), ("run-2", "1"), ("run-1", "0"), ("run-1", "x")]
)
def test_a_pod_not_named_for_its_attempt_is_not_owned(name: str, attempt_label: str) -> None:
    misnamed = live()
    misnamed["metadata"]["name"] = name
    misnamed["metadata"]["labels"]["aicert.dev/attempt"] = attempt_label
    assert owned([misnamed, live(2, "pod-uid-2")]) == owned([live(2, "pod-uid-2")])
    assert [v.name for v in owned([misnamed])] == []


def test_an_owned_pod_that_was_changed_carries_its_deviations() -> None:
    changed = live()
    changed["spec"]["hostNetwork"] = True
    [view] = owned([changed])
    assert view.deviations == (Deviation("spec.hostNetwork", "added", True),)


def test_a_pod_an_injector_mutated_fails_the_run_as_mutated_naming_the_sidecar() -> None:
    injected = live()
    injected["spec"]["containers"].append({"name": "istio-proxy", "image": "docker.io/istio/proxyv2"})
    injected["status"] = {"phase": "Pending"}
    [view] = owned([injected])
    assert view.deviations == (Deviation("spec.containers[istio-proxy]", "added", True),)
    decision = reconcile(training({"attempt": 1}, backoffLimit=3), [view], NOW, default_deadline=DEADLINE)
    message = (
        "pod run-1 was changed by admission when it was created (a mutating webhook or policy, such as "
        "a sidecar injector): spec.containers[istio-proxy] added"
    )
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "PodMutated",
        message,
    )
    certified = next(c for c in decision.status["conditions"] if c["type"] == "Certified")
    assert (certified["status"], certified["reason"]) == ("False", "PodMutated")
    assert decision.delete_pods == ("run-1",) and decision.create_attempt is None
    assert decision.events == (Event("Warning", Reason.POD_MUTATED, message),)


def test_nodes_whose_agent_lease_lapsed_or_is_missing_are_stale() -> None:
    from aicert_operator.liveness import stale_nodes

    leases = {"alive": NOW + dt.timedelta(seconds=5), "dead": NOW - dt.timedelta(seconds=1), "odd": None}
    assert stale_nodes(["alive", "dead", "odd", "never"], leases, NOW) == ["dead", "never", "odd"]
    assert stale_nodes(["alive"], leases, NOW) == []


# --- the operator's maximum deadline (AICERT_MAX_DEADLINE_SECONDS) ------------------------------------

STARTED_AN_HOUR_AGO = {"attempt": 1, "startTime": "2026-11-23T11:00:00Z"}


def test_the_operators_maximum_caps_a_longer_deadline_in_the_spec() -> None:
    """Admission refuses a spec above the maximum; a training created before (or with admission
    off) still ends by it."""
    running = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    spec = training(STARTED_AN_HOUR_AGO, activeDeadlineSeconds=7 * 86400)
    decision = reconcile(spec, running, NOW, default_deadline=DEADLINE, max_deadline=1800)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "DeadlineExceeded")
    assert decision.status["message"] == (
        "the run did not finish within 1800 s, the operator's maximum (activeDeadlineSeconds is 604800)"
    )
    assert decision.delete_pods == ("run-1",)


def test_the_operators_maximum_caps_the_default_deadline() -> None:
    decision = reconcile(training(), [], NOW, default_deadline=7 * 86400, max_deadline=5400)
    assert decision.requeue_after == 5400
    expired = reconcile(
        training(STARTED_AN_HOUR_AGO),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=7 * 86400,
        max_deadline=1800,
    )
    assert expired.status["reason"] == "DeadlineExceeded" and "1800 s" in expired.status["message"]


def test_a_deadline_within_the_maximum_is_the_specs() -> None:
    running = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    decision = reconcile(
        training(STARTED_AN_HOUR_AGO, activeDeadlineSeconds=7200),
        running,
        NOW,
        default_deadline=DEADLINE,
        max_deadline=86400,
    )
    assert decision.status["phase"] == "Training" and decision.requeue_after == 3600


# --- messages the API server accepts --------------------------------------------------------------------


def test_a_long_refusal_message_is_cut_to_what_status_message_holds() -> None:
    """status.message holds 4096 characters; a condition's message up to 32768 (an older agent's)."""
    refused = pod(
        phase="Failed", aicert_gate=DONE, train=DONE, aicert_seal=ContainerState("terminated", exit_code=3)
    )
    certified = {
        "type": "Certified",
        "status": "False",
        "reason": "MeasurementFailed",
        "message": "é" * 16000,
    }
    decision = reconcile(
        training({"attempt": 1, "conditions": [certified]}), [refused], NOW, default_deadline=DEADLINE
    )
    assert decision.status["reason"] == "MeasurementFailed"
    assert len(decision.status["message"].encode()) <= 4096 and decision.status["message"].endswith("…")


def test_an_api_servers_long_refusal_is_cut_too() -> None:
    first = reconcile(training(), [], NOW, default_deadline=DEADLINE)
    message = "admission webhook denied the request: " + "x" * 10_000
    decision = pod_not_created(training(), first, message, name_taken=False, transient=False, now=NOW)
    assert len(decision.status["message"]) <= 4096
    assert all(len(c["message"]) <= 4096 for c in decision.status["conditions"])
