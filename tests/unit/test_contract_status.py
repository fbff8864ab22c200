"""The status contract: conditions and the Event bodies the operator and the agent send."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from aicert_contract.status import (
    CONDITION_MESSAGE_MAX,
    MESSAGE_MAX_BYTES,
    REFUSALS,
    ConditionType,
    Reason,
    event_body,
    set_condition,
    status_apply_body,
    status_message,
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


def test_event_note_is_cut_to_1024_bytes() -> None:
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
    assert body["note"].startswith("x" * 1000 + "y" * 20) and body["note"].endswith("…")
    assert len(body["note"].encode("utf-8")) <= 1024


def test_status_apply_body_carries_only_the_given_fields_and_a_precondition() -> None:
    assert status_apply_body("run", {"phase": "Pending"}, resource_version="42") == {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "run", "resourceVersion": "42"},
        "status": {"phase": "Pending"},
    }


def test_a_status_body_is_always_conditional() -> None:
    with pytest.raises(ValueError, match="resourceVersion"):
        status_apply_body("run", {"phase": "Pending"}, resource_version="")


@pytest.mark.parametrize("reason", [Reason.CERTIFICATION_REFUSED, Reason.FOREIGN_POD, Reason.TRAINING_FAILED])
def test_reasons_that_are_not_agent_refusals(reason: Reason) -> None:
    assert reason not in REFUSALS


def test_every_refusal_is_a_documented_reason() -> None:
    assert all(Reason(str(r)) is r for r in REFUSALS) and len(REFUSALS) == 25


def test_every_reason_is_documented() -> None:
    """docs/crd-reference.md lists every reason a status or Event can carry."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "crd-reference.md").read_text()
    assert [r.value for r in Reason if f"`{r.value}`" not in doc] == []


# --- messages the API server accepts ------------------------------------------------------------------

# What os.fsdecode gives for a file name whose bytes are not UTF-8 (b"w\xffe\xfe.bin"): lone surrogates,
# which no UTF-8 encoder writes; the API server refuses a status or Event that carries them.
UNDECODABLE = os.fsdecode(b"w\xffe\xfe.bin")


def test_a_name_that_is_not_utf8_shows_its_bytes_as_escapes() -> None:
    message = status_message(f"/out/{UNDECODABLE}: file name is not valid UTF-8")
    assert message == "/out/w\\xffe\\xfe.bin: file name is not valid UTF-8"
    message.encode("utf-8")  # strict: raises on a surrogate


def test_any_lone_surrogate_is_escaped_and_text_of_the_bmp_is_kept() -> None:
    assert status_message("a\ud800b") == "a\\ud800b"
    assert status_message("poids é 模型 \n\t\x00") == "poids é 模型 \n\t\x00"


def test_a_character_beyond_the_bmp_is_escaped() -> None:
    """JSON writes it as a surrogate pair, which the API server's YAML decoder refuses."""
    assert status_message("model 😀.bin") == "model \\U0001f600.bin"


def test_a_long_message_is_cut_to_the_bound_in_utf8_bytes() -> None:
    message = status_message("é" * MESSAGE_MAX_BYTES)
    assert len(message.encode("utf-8")) <= MESSAGE_MAX_BYTES and message.endswith("…")
    assert status_message("x" * MESSAGE_MAX_BYTES) == "x" * MESSAGE_MAX_BYTES  # at the bound: whole
    assert MESSAGE_MAX_BYTES <= 4096  # status.message (the operator copies a refusal's) holds 4096


def test_a_long_undecodable_name_is_escaped_before_it_is_cut() -> None:
    message = status_message(UNDECODABLE * 2000, max_bytes=100)
    assert len(message.encode("utf-8")) <= 100 and "\\xff" in message and "\udcff" not in message


@pytest.mark.parametrize("reason", sorted(REFUSALS))
def test_every_refusal_condition_is_valid_utf8_and_bounded(reason: Reason) -> None:
    hostile = f"{UNDECODABLE} " * 10_000
    condition = set_condition(None, ConditionType.CERTIFIED, "False", reason, hostile, generation=1, now=NOW)
    encoded = condition["message"].encode("utf-8")
    assert 0 < len(encoded) <= MESSAGE_MAX_BYTES <= CONDITION_MESSAGE_MAX
    body = event_body(
        namespace="ml",
        name="run",
        uid="u1",
        type_="Warning",
        reason=reason,
        message=hostile,
        controller="aicert.dev/agent",
        instance="node-1",
        action="Certify",
        now=NOW,
    )
    assert 0 < len(body["note"].encode("utf-8")) <= 1024
