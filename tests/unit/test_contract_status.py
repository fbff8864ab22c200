"""The status contract: conditions and the Event bodies the operator and the agent send."""

from __future__ import annotations

import datetime as dt

import pytest

from aicert.contract.status import (
    REFUSALS,
    ConditionType,
    Reason,
    event_body,
    set_condition,
    status_apply_body,
    timestamp,
)

NOW = dt.datetime(2026, 11, 23, 12, 0, 5, 123456, tzinfo=dt.UTC)
EARLIER = "2026-11-23T11:00:00Z"
SCHEDULED = {
    "type": "Scheduled",
    "status": "False",
    "reason": "Pending",
    "message": "waiting for the scheduler",
    "observedGeneration": 1,
    "lastTransitionTime": EARLIER,
}


def test_a_new_condition_starts_now() -> None:
    assert set_condition(
        None, ConditionType.SCHEDULED, "False", Reason.PENDING, "waiting", generation=3, now=NOW
    ) == {
        "type": "Scheduled",
        "status": "False",
        "reason": "Pending",
        "message": "waiting",
        "observedGeneration": 3,
        "lastTransitionTime": "2026-11-23T12:00:05Z",
    }


def test_transition_time_stays_while_the_status_does() -> None:
    condition = set_condition(
        [SCHEDULED],
        ConditionType.SCHEDULED,
        "False",
        Reason.UNSCHEDULABLE,
        "0/3 nodes are available",
        generation=2,
        now=NOW,
    )
    assert condition == {
        "type": "Scheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available",
        "observedGeneration": 2,
        "lastTransitionTime": EARLIER,
    }


def test_transition_time_moves_when_the_status_changes() -> None:
    condition = set_condition(
        [SCHEDULED], ConditionType.SCHEDULED, "True", Reason.SCHEDULED, "on node gpu-1", generation=2, now=NOW
    )
    assert (condition["status"], condition["reason"], condition["lastTransitionTime"]) == (
        "True",
        "Scheduled",
        "2026-11-23T12:00:05Z",
    )
    assert condition["observedGeneration"] == 2


def test_only_the_same_condition_type_counts() -> None:
    trained = {**SCHEDULED, "type": "Trained", "status": "True"}
    condition = set_condition(
        [trained], ConditionType.SCHEDULED, "True", Reason.SCHEDULED, "", generation=1, now=NOW
    )
    assert condition["lastTransitionTime"] == "2026-11-23T12:00:05Z"


def test_timestamps_are_utc_to_the_second() -> None:
    local = dt.datetime(2026, 11, 23, 13, 0, 5, 999999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert timestamp(local) == "2026-11-23T12:00:05Z"


def test_event_body_is_about_the_training() -> None:
    body = event_body(
        namespace="ml",
        name="run",
        uid="u1",
        type_="Warning",
        reason=Reason.POD_MISMATCH,
        message="pod run-1 is not the pod the operator made",
        controller="aicert.dev/operator",
        instance="aicert-operator-7d9f",
        action="Reconcile",
        now=NOW,
    )
    assert body == {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "run-", "namespace": "ml"},
        "eventTime": "2026-11-23T12:00:05.123456Z",
        "reportingController": "aicert.dev/operator",
        "reportingInstance": "aicert-operator-7d9f",
        "action": "Reconcile",
        "type": "Warning",
        "reason": "PodMismatch",
        "note": "pod run-1 is not the pod the operator made",
        "regarding": {
            "apiVersion": "aicert.dev/v1alpha1",
            "kind": "CertifiedTraining",
            "name": "run",
            "namespace": "ml",
            "uid": "u1",
        },
    }


def test_event_note_is_truncated_to_1024_characters() -> None:
    body = event_body(
        namespace="ml",
        name="run",
        uid="u1",
        type_="Normal",
        reason=Reason.CERTIFIED,
        message="x" * 1000 + "y" * 1000,
        controller="aicert.dev/agent",
        instance="node-1",
        action="Certify",
        now=NOW,
    )
    assert body["note"] == "x" * 1000 + "y" * 24 and len(body["note"]) == 1024


def test_status_apply_body_carries_only_the_given_fields() -> None:
    assert status_apply_body("run", {"phase": "Pending"}) == {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "run"},
        "status": {"phase": "Pending"},
    }


@pytest.mark.parametrize("reason", [Reason.CERTIFICATION_REFUSED, Reason.FOREIGN_POD, Reason.TRAINING_FAILED])
def test_reasons_that_are_not_agent_refusals(reason: Reason) -> None:
    assert reason not in REFUSALS


def test_every_refusal_is_a_documented_reason() -> None:
    assert all(Reason(str(r)) is r for r in REFUSALS) and len(REFUSALS) == 21


def test_every_reason_is_documented() -> None:
    """docs/crd-reference.md lists every reason a status or Event can carry."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "crd-reference.md").read_text()
    assert [r.value for r in Reason if f"`{r.value}`" not in doc] == []
