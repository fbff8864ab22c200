"""spec.output.oci, the pure parts: the push pod the contract builds, its termination message, and
the operator's decisions (which push pod to create, the Published condition, status.published),
including a restarted operator and a pod that is not the operator's."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from aicert_contract.network import network_policy, selecting
from aicert_contract.pod import PodSettings, training_pod
from aicert_contract.publish import (
    CONTAINER_PUSH,
    PUSH_DEADLINE_SECONDS,
    PUSH_MESSAGE_MAX_BYTES,
    PUSH_NOT_CERTIFIED_EXIT,
    PUSH_RETRY_SECONDS,
    PUSH_TRIES,
    parse_push_message,
    published_reference,
    push_message,
    push_pod,
    push_pod_name,
)
from aicert_contract.status import ConditionType, Reason
from aicert_contract.training import LABEL_ATTEMPT, LABEL_TRAINING, LABEL_TRAINING_UID, TrainingSpec
from aicert_operator.publish import certificate_sha256, push_views
from aicert_operator.reconcile import Decision, Training, reconcile, status_unchanged

NOW = dt.datetime(2026, 12, 7, 20, 0, tzinfo=dt.UTC)
DEADLINE = 86400
SETTINGS = PodSettings(agent_image="registry.example/aicert/agent@sha256:" + "b" * 64)
CERTIFICATE = '{"certificate": "text"}'
SIGNATURE = "c2lnbmF0dXJl"
DIGEST = "sha256:" + "d" * 64
OCI = {"reference": "registry.example:5000/models/llm:v1", "pullSecret": {"name": "push-creds"}}
SPEC: dict[str, Any] = {
    "image": "r/t@sha256:" + "a" * 64,
    "output": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/out", "oci": OCI},
}


def spec(**output: Any) -> TrainingSpec:
    return TrainingSpec.model_validate({**SPEC, "output": {**SPEC["output"], **output}})


def succeeded(**extra: Any) -> dict[str, Any]:
    """A run the operator and the agent finished: certified, Finished written."""
    return {
        "phase": "Succeeded",
        "reason": "Certified",
        "message": "the training's outputs are certified",
        "observedGeneration": 1,
        "attempt": 2,
        "podName": "run-2",
        "podUID": "pod-uid-2",
        "node": "gpu-1",
        "startTime": "2026-12-07T19:00:00Z",
        "completionTime": "2026-12-07T19:30:00Z",
        "certificate": CERTIFICATE,
        "envelopeSignature": SIGNATURE,
        "conditions": [
            {
                "type": "Trained",
                "status": "True",
                "reason": "Completed",
                "message": "m",
                "lastTransitionTime": "t",
            },
            {
                "type": "Certified",
                "status": "True",
                "reason": "Certified",
                "message": "m",
                "lastTransitionTime": "t",
            },
            {
                "type": "Finished",
                "status": "True",
                "reason": "Certified",
                "message": "m",
                "lastTransitionTime": "t",
            },
        ],
        **extra,
    }


def training(status: dict[str, Any], the_spec: TrainingSpec | None = None) -> Training:
    return Training("run", "ml", "uid-1", 1, the_spec or spec(), status)


def live_push(
    push_try: int = 1,
    *,
    phase: str = "Running",
    exit_code: int | None = None,
    message: str | None = None,
    finished: str = "2026-12-07T19:59:50Z",
    the_spec: TrainingSpec | None = None,
) -> dict[str, Any]:
    pod = copy.deepcopy(
        push_pod(
            name="run",
            namespace="ml",
            uid="uid-1",
            spec=the_spec or spec(),
            attempt=2,
            push_try=push_try,
            settings=SETTINGS,
            certificate_sha256=certificate_sha256(CERTIFICATE),
            envelope_signature=SIGNATURE,
        )
    )
    pod["metadata"]["uid"] = f"push-uid-{push_try}"
    pod["status"] = {"phase": phase}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "finishedAt": finished}
        if message is not None:
            terminated["message"] = message
        pod["status"]["containerStatuses"] = [{"name": CONTAINER_PUSH, "state": {"terminated": terminated}}]
    return pod


def decide(status: dict[str, Any], pods: list[dict[str, Any]], now: dt.datetime = NOW) -> Decision:
    t = training(status)
    views = push_views(
        name="run", namespace="ml", uid="uid-1", spec=t.spec, status=status, pods=pods, settings=SETTINGS
    )
    return reconcile(t, [], now, default_deadline=DEADLINE, pushes=views)


def published(decision: Decision) -> dict[str, Any]:
    return next(c for c in decision.status["conditions"] if c["type"] == ConditionType.PUBLISHED)


# --- the push pod -----------------------------------------------------------------------------------


def test_the_push_pod_is_restricted_tokenless_and_bounded() -> None:
    pod = live_push()
    pod_spec = pod["spec"]
    assert pod["metadata"]["name"] == push_pod_name("run", 2, 1) == "run-2-push-1"
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["activeDeadlineSeconds"] == PUSH_DEADLINE_SECONDS
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod_spec["containers"]
    assert container["image"] == SETTINGS.agent_image
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsUser": 65532,
    }
    assert all(m["readOnly"] for m in container["volumeMounts"])
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CertifiedTraining", "uid-1", True)


def test_the_push_pod_carries_the_log_entry_so_the_pushed_bundle_keeps_it() -> None:
    entry = json.dumps({"logIndex": "7"}, separators=(",", ":"))

    def command(**extra: Any) -> list[str]:
        pod = push_pod(
            name="run",
            namespace="ml",
            uid="uid-1",
            spec=spec(),
            attempt=2,
            push_try=1,
            settings=SETTINGS,
            certificate_sha256=certificate_sha256(CERTIFICATE),
            envelope_signature=SIGNATURE,
            **extra,
        )
        return list(pod["spec"]["containers"][0]["command"])

    with_entry = command(transparency_log_entry=entry)
    assert with_entry[with_entry.index("--transparency-log-entry") + 1] == entry
    assert "--transparency-log-entry" not in command()  # no log configured: no entry in the status


def test_the_push_pod_mounts_the_attempts_claim_read_only_and_the_pull_secret() -> None:
    volumes = {v["name"]: v for v in live_push()["spec"]["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "run-2-output", "readOnly": True}
    assert volumes["registry-config"]["secret"] == {
        "secretName": "push-creds",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        "defaultMode": 0o444,
    }
    command = live_push()["spec"]["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "aicert_agent", "push"]
    assert command[command.index("--certificate-sha256") + 1] == certificate_sha256(CERTIFICATE)
    assert command[command.index("--registry-config") + 1] == "/var/run/aicert/registry/config.json"
    assert "--plain-http" not in command


def test_without_a_pull_secret_no_secret_is_mounted() -> None:
    pod = live_push(the_spec=spec(oci={"reference": "r.example/m", "plainHttp": True}))
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["output"]
    command = pod["spec"]["containers"][0]["command"]
    assert "--registry-config" not in command and "--plain-http" in command


def test_the_push_pod_runs_as_the_training_user_who_wrote_the_files() -> None:
    the_spec = TrainingSpec.model_validate({**SPEC, "securityContext": {"runAsUser": 1000, "fsGroup": 2000}})
    pod = live_push(the_spec=the_spec)
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert "runAsUser" not in pod["spec"]["containers"][0]["securityContext"]


def test_neither_the_agent_nor_the_attempts_network_policy_takes_it_for_the_training_pod() -> None:
    """The agent watches pods labelled with a training's name; the attempt's NetworkPolicy (no
    egress by default) selects the training's uid and attempt: the push pod has neither label set."""
    labels = live_push()["metadata"]["labels"]
    assert LABEL_TRAINING not in labels and LABEL_ATTEMPT not in labels
    assert labels[LABEL_TRAINING_UID] == "uid-1"
    policy = network_policy(name="run", namespace="ml", uid="uid-1", attempt=2, egress="none")
    assert selecting([policy], labels) == []
    trained = training_pod(name="run", namespace="ml", uid="uid-1", spec=spec(), attempt=2, settings=SETTINGS)
    assert selecting([policy], trained["metadata"]["labels"]) == [policy]  # the control


def test_no_push_pod_for_an_output_without_a_claim() -> None:
    no_claim = TrainingSpec.model_validate(
        {**SPEC, "output": {"emptyDir": {}, "mountPath": "/o", "oci": OCI}}
    )
    with pytest.raises(ValueError, match="needs an output claim"):
        push_pod(
            name="run",
            namespace="ml",
            uid="uid-1",
            spec=no_claim,
            attempt=1,
            push_try=1,
            settings=SETTINGS,
            certificate_sha256="0" * 64,
            envelope_signature=None,
        )


# --- its termination message ------------------------------------------------------------------------


def test_a_message_round_trips() -> None:
    assert parse_push_message(push_message(digest=DIGEST).decode()).digest == DIGEST
    assert (
        parse_push_message(push_message(error="401 from the registry").decode()).error
        == "401 from the registry"
    )


def test_a_long_error_is_cut_and_stays_json() -> None:
    data = push_message(error="é" * 10_000)
    assert len(data) <= PUSH_MESSAGE_MAX_BYTES
    assert json.loads(data)["error"].endswith("…")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "left no termination message"),
        ("", "left no termination message"),
        ("pushed!", "is not JSON"),
        ('["sha256:x"]', "is not one digest or one error"),
        ('{"digest": "sha256:abc"}', "names no sha256 digest"),
        ('{"digest": "' + DIGEST.upper() + '"}', "names no sha256 digest"),
        ('{"digest": "' + DIGEST + '", "error": ""}', "is not one digest or one error"),
        ('{"error": 3}', "is not one digest or one error"),
        ('{"digest": "' + DIGEST + '"}' + " " * PUSH_MESSAGE_MAX_BYTES, "is too long"),
    ],
)
def test_a_malformed_message_is_no_result(text: str | None, why: str) -> None:
    outcome = parse_push_message(text)
    assert outcome.digest is None
    assert why in outcome.error


def test_the_published_reference_is_by_digest_without_the_tag() -> None:
    assert published_reference("registry.example:5000/models/llm:v1", DIGEST) == (
        f"oci://registry.example:5000/models/llm@{DIGEST}"
    )


# --- the operator's decisions -----------------------------------------------------------------------


def test_a_succeeded_run_gets_its_first_push_pod_and_stays_succeeded() -> None:
    decision = decide(succeeded(), [])
    assert decision.create_push == 1
    assert decision.create_attempt is None
    condition = published(decision)
    assert (condition["status"], condition["reason"]) == ("False", Reason.PUSH_PENDING)
    assert "run-2-push-1" in condition["message"]
    # every field the operator owns is applied again (server-side apply drops what a write leaves out)
    for key in ("phase", "reason", "attempt", "podName", "podUID", "node", "startTime", "completionTime"):
        assert decision.status[key] == succeeded()[key], key
    assert {c["type"] for c in decision.status["conditions"]} == {"Trained", "Finished", "Published"}


def test_a_run_without_output_oci_or_not_succeeded_pushes_nothing() -> None:
    plain = TrainingSpec.model_validate(
        {**SPEC, "output": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/o"}}
    )
    decision = reconcile(training(succeeded(), plain), [], NOW, default_deadline=DEADLINE)
    assert decision.create_push is None and decision.status == {}
    failed = decide({**succeeded(), "phase": "Failed"}, [])
    assert failed.create_push is None and failed.status == {}


def test_a_running_push_pod_is_pending_and_not_made_again() -> None:
    decision = decide(succeeded(), [live_push()])
    assert decision.create_push is None
    assert published(decision)["reason"] == Reason.PUSH_PENDING


def test_a_pushed_model_is_published_with_its_digest() -> None:
    done = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    decision = decide(succeeded(), [done])
    condition = published(decision)
    assert (condition["status"], condition["reason"]) == ("True", Reason.PUBLISHED)
    reference = f"oci://registry.example:5000/models/llm@{DIGEST}"
    assert decision.status["published"] == {"reference": reference, "digest": DIGEST}
    assert reference in condition["message"]
    assert decision.status["phase"] == "Succeeded"
    assert [e.reason for e in decision.events] == [Reason.PUBLISHED]


def test_once_published_nothing_more_is_done_or_written() -> None:
    done = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    first = decide(succeeded(), [done])
    settled = {**succeeded(), **first.status}
    again = decide(settled, [done])
    assert again.create_push is None and again.events == ()
    assert status_unchanged(settled, again.status)
    assert decide(settled, []).create_push is None  # the push pod deleted since: the status keeps it


def test_a_restarted_operator_decides_the_same_and_finds_the_result_in_the_pod() -> None:
    """The status write of Published was lost (the operator stopped): the next operator finds the
    result in the pod's termination message; and while a try runs, nothing is created twice."""
    done = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    pending = {**succeeded(), **decide(succeeded(), []).status}
    assert decide(pending, [done]).status["published"]["digest"] == DIGEST
    assert decide(pending, [live_push()]).create_push is None
    assert decide(pending, [live_push()]) == decide(pending, [live_push()])


def test_a_failed_try_is_retried_after_a_delay() -> None:
    failed = live_push(phase="Failed", exit_code=2, message=push_message(error="503 from registry").decode())
    soon = decide(succeeded(), [failed])  # it ended 10 s before NOW
    assert soon.create_push is None
    assert soon.requeue_after == pytest.approx(PUSH_RETRY_SECONDS - 10)
    assert "503 from registry" in published(soon)["message"]
    later = decide(succeeded(), [failed], NOW + dt.timedelta(seconds=PUSH_RETRY_SECONDS))
    assert later.create_push == 2
    assert published(later)["reason"] == Reason.PUSH_PENDING


def test_after_the_last_try_publishing_fails_and_stops() -> None:
    pods = [
        live_push(t, phase="Failed", exit_code=2, message=push_message(error=f"try {t} failed").decode())
        for t in range(1, PUSH_TRIES + 1)
    ]
    decision = decide(succeeded(), pods, NOW + dt.timedelta(hours=1))
    condition = published(decision)
    assert (condition["status"], condition["reason"]) == ("False", Reason.PUSH_FAILED)
    assert f"try {PUSH_TRIES} failed" in condition["message"]
    assert decision.create_push is None and decision.status["phase"] == "Succeeded"
    assert [e.type for e in decision.events] == ["Warning"]
    settled = {**succeeded(), **decision.status}
    assert decide(settled, [], NOW + dt.timedelta(hours=2)).create_push is None


def test_files_that_are_not_the_certified_ones_are_not_retried() -> None:
    refused = live_push(
        phase="Failed",
        exit_code=PUSH_NOT_CERTIFIED_EXIT,
        message=push_message(error="these are not the certified weights, nothing was pushed").decode(),
    )
    decision = decide(succeeded(), [refused], NOW + dt.timedelta(hours=1))
    assert decision.create_push is None
    assert published(decision)["reason"] == Reason.PUSH_FAILED
    assert "not the certified weights" in published(decision)["message"]


def test_a_push_pod_stuck_past_its_deadline_is_a_failed_try() -> None:
    stuck = live_push(phase="Failed")
    stuck["status"].update(
        reason="DeadlineExceeded", message="Pod was active on the node longer than allowed"
    )
    decision = decide(succeeded(), [stuck], NOW + dt.timedelta(hours=1))
    assert decision.create_push == 2
    assert "DeadlineExceeded" in published(decision)["message"]


def test_a_pod_with_the_push_pods_name_that_the_operator_did_not_make_is_never_a_result() -> None:
    """A tenant who creates pods in the namespace makes run-2-push-1 first, mounting a claim of its
    own (or exiting 0 with a digest of its choosing): its message is not used, and publishing fails."""
    impostor = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    impostor["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "tenant-weights"
    decision = decide(succeeded(), [impostor])
    assert "published" not in decision.status
    condition = published(decision)
    assert (condition["status"], condition["reason"]) == ("False", Reason.PUSH_FAILED)
    assert "is not the push pod the operator makes" in condition["message"]


def test_a_pod_of_another_training_or_misnamed_is_not_seen() -> None:
    other = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    other["metadata"]["ownerReferences"][0]["uid"] = "uid-other"
    misnamed = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    misnamed["metadata"]["name"] = "run-2-push-9"
    assert decide(succeeded(), [other, misnamed]).create_push == 1


def test_a_push_pod_of_an_earlier_attempt_does_not_count() -> None:
    earlier = live_push(phase="Succeeded", exit_code=0, message=push_message(digest=DIGEST).decode())
    earlier = json.loads(json.dumps(earlier).replace("run-2-output", "run-1-output"))
    earlier["metadata"]["name"] = "run-1-push-1"
    earlier["metadata"]["labels"]["aicert.dev/push-attempt"] = "1"
    assert decide(succeeded(), [earlier]).create_push == 1


def test_the_reconcile_that_ends_a_run_succeeded_looks_again_to_publish() -> None:
    """Nothing else may come to wake the operator once the run is Succeeded (its own status write
    is not an event it acts on): the write that ends the run asks for the next look, which makes
    the push pod."""
    from aicert_operator.observe import ContainerState, PodView

    done = ContainerState("terminated", exit_code=0)
    containers = {"aicert-gate": done, "train": done, "aicert-seal": done}
    pod = PodView("run-1", 1, "gpu-1", "Succeeded", False, "", "", None, containers, uid="pod-uid-1")
    status = {
        "phase": "Sealing",
        "attempt": 1,
        "startTime": "2026-12-07T19:00:00Z",
        "certificate": CERTIFICATE,
        "conditions": [
            {
                "type": "Certified",
                "status": "True",
                "reason": "Certified",
                "message": "m",
                "lastTransitionTime": "t",
            }
        ],
    }
    ending = reconcile(training(status), [pod], NOW, default_deadline=DEADLINE)
    assert ending.status["phase"] == "Succeeded"
    assert ending.requeue_after is not None and ending.requeue_after <= 1.0
    plain = TrainingSpec.model_validate(
        {**SPEC, "output": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/o"}}
    )
    assert reconcile(training(status, plain), [pod], NOW, default_deadline=DEADLINE).requeue_after is None
