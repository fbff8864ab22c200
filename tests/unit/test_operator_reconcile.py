"""The operator's decisions, from observed state alone (no API server needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from aicert.training import TrainingSpec
from aicert_operator.observe import ContainerState, PodView
from aicert_operator.reconcile import Training, reconcile

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
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
    decision = reconcile(training(), [], NOW)
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
    decision = reconcile(training({"attempt": 1, "phase": "Pending"}), [unplaced], NOW)
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
    )
    assert decision.status["phase"] == phase and decision.status["node"] == "gpu-1"
    got = {c["type"]: c["status"] for c in decision.status["conditions"]}
    assert conditions.items() <= got.items()


def test_succeeded_only_with_a_certificate() -> None:
    done = pod(phase="Succeeded", aicert_gate=DONE, train=DONE, aicert_seal=DONE)
    waiting = reconcile(training({"attempt": 1}), [done], NOW)
    assert waiting.status["phase"] == "Sealing"
    certified = {
        "attempt": 1,
        "certificate": "{}",
        "modelDigest": "sha256:" + "b" * 64,
        "conditions": [{"type": "Certified", "status": "True", "reason": "Certified", "message": ""}],
    }
    decision = reconcile(training(certified), [done], NOW)
    assert (
        decision.status["phase"] == "Succeeded"
        and decision.status["completionTime"] == "2026-11-23T12:00:00Z"
    )
    assert [e.reason for e in decision.events] == ["Certified"]


def test_failed_training_without_retries_fails() -> None:
    failed = pod(phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    decision = reconcile(training({"attempt": 1}), [failed], NOW)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "TrainingFailed")
    assert "exited with 2" in decision.status["message"] and decision.create_attempt is None


def test_failed_training_is_retried_within_backoff_limit() -> None:
    failed = pod(phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    decision = reconcile(training({"attempt": 1}, backoffLimit=1), [failed], NOW)
    assert decision.create_attempt == 2 and decision.status["podName"] == "run-2"
    again = pod(attempt=2, phase="Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))
    final = reconcile(training({"attempt": 2}, backoffLimit=1), [failed, again], NOW)
    assert final.status["phase"] == "Failed" and "backoffLimit 1 reached" in final.status["message"]


def test_deleted_pod_is_replaced_then_counted() -> None:
    decision = reconcile(training({"attempt": 1, "phase": "Training"}, backoffLimit=1), [], NOW)
    assert decision.create_attempt == 2 and decision.status["reason"] == "PodDeleted"
    assert reconcile(training({"attempt": 1, "phase": "Training"}), [], NOW).status["phase"] == "Failed"


def test_evicted_pod_is_retried() -> None:
    evicted = PodView(
        "run-1", 1, "gpu-1", "Failed", False, "Evicted", "node low on memory", None, {"train": RUNNING}
    )
    assert reconcile(training({"attempt": 1}, backoffLimit=2), [evicted], NOW).create_attempt == 2


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
    decision = reconcile(training(status, backoffLimit=3), [refused], NOW)
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "InputsChanged")
    assert decision.create_attempt is None


def test_deadline_exceeded_fails_and_stops_the_pod() -> None:
    status = {"attempt": 1, "startTime": "2026-11-23T11:00:00Z"}
    decision = reconcile(
        training(status, activeDeadlineSeconds=600),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        NOW,
    )
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "DeadlineExceeded")
    assert decision.delete_pods == ("run-1",)


def test_requeue_at_the_deadline() -> None:
    status = {"attempt": 1, "startTime": "2026-11-23T11:55:00Z"}
    decision = reconcile(
        training(status, activeDeadlineSeconds=600),
        [pod(phase="Running", aicert_gate=DONE, train=RUNNING)],
        NOW,
    )
    assert decision.status["phase"] == "Training" and decision.requeue_after == 300


def test_terminal_status_is_left_alone_but_stray_pods_go() -> None:
    decision = reconcile(
        training({"phase": "Failed", "attempt": 1}), [pod(phase="Running", train=RUNNING)], NOW
    )
    assert decision.status == {} and decision.delete_pods == ("run-1",)


def test_same_observation_same_decision_and_no_repeated_events() -> None:
    observed = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    first = reconcile(training({"attempt": 1, "phase": "Measuring"}), observed, NOW)
    later = NOW + dt.timedelta(minutes=5)
    second = reconcile(training(first.status), observed, later)  # a restarted operator, same world
    assert second.status == first.status and second.events == ()
    assert second.create_attempt is None


def test_transition_time_moves_only_when_the_status_does() -> None:
    measuring = reconcile(training({"attempt": 1}), [pod(phase="Pending", aicert_gate=RUNNING)], NOW)
    later = NOW + dt.timedelta(minutes=1)
    training_ = reconcile(
        training(measuring.status), [pod(phase="Running", aicert_gate=DONE, train=RUNNING)], later
    )
    times = {c["type"]: c["lastTransitionTime"] for c in training_.status["conditions"]}
    assert times["Scheduled"] == "2026-11-23T12:00:00Z" and times["InputsMeasured"] == "2026-11-23T12:01:00Z"


def test_image_pull_error_is_pending_with_the_reason() -> None:
    pulling = pod(
        phase="Pending",
        aicert_gate=DONE,
        train=ContainerState("waiting", reason="ErrImagePull", message="unknown digest"),
    )
    decision = reconcile(training({"attempt": 1}), [pulling], NOW)
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Pending",
        "ErrImagePull",
        "unknown digest",
    )


def test_unchanged_status_is_not_applied_again() -> None:
    from aicert_operator.reconcile import status_unchanged

    observed = [pod(phase="Running", aicert_gate=DONE, train=RUNNING)]
    first = reconcile(training({"attempt": 1}), observed, NOW)
    # what the API server holds after the apply, plus the agent's fields and condition
    stored = {
        **first.status,
        "assurance": "dev",
        "conditions": [*first.status["conditions"], {"type": "Certified", "status": "Unknown"}],
    }
    again = reconcile(training(stored), observed, NOW + dt.timedelta(seconds=30))
    assert status_unchanged(stored, again.status)
    moved = reconcile(
        training(stored), [pod(phase="Running", aicert_gate=DONE, train=DONE, aicert_seal=RUNNING)], NOW
    )
    assert not status_unchanged(stored, moved.status)
