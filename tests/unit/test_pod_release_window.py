"""Upgrades keep running trainings: a pod built by the previous release is accepted, nothing else.

The attacker's view first: a tenant (or anyone who can touch a pod) must not get a pod accepted by
claiming "previous release" with an image of their choosing, by mixing releases, or by changing the
rest of the pod while it carries a previous release's agent image. Only the exact digests the
chart configured count, and the whole rest of the pod must be that release's contract.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from aicert_agent.pod_check import Action, Verdict, check_pod
from aicert_contract.pod import (
    CONTRACT_VERSION,
    ContractError,
    Deviation,
    PodConformance,
    PodSettings,
    pod_agent_image,
    pod_conformance,
    pod_contract_record,
    recorded_agent_image,
    training_pod,
)
from aicert_contract.status import REFUSALS, Reason
from aicert_contract.training import TrainingSpec
from aicert_operator.observe import ContainerState, PodView, owned_pods
from aicert_operator.reconcile import Training, reconcile

CURRENT = "registry.example/aicert/agent@sha256:" + "c" * 64
PREVIOUS = "registry.example/aicert/agent@sha256:" + "b" * 64
OLDER = "registry.example/aicert/agent@sha256:" + "a" * 64  # two releases ago
ATTACKER = "evil.example/agent@sha256:" + "e" * 64
SETTINGS = PodSettings(agent_image=CURRENT, previous_agent_image=PREVIOUS)
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "d" * 64,
    "command": ["python", "train.py"],
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
    "minAssurance": "dev",
}
GATE_IMAGE = "spec.initContainers[aicert-gate].image"
SEAL_IMAGE = "spec.containers[aicert-seal].image"


def built_by(agent_image: str, **settings: Any) -> dict[str, Any]:
    """The pod of attempt 2 as the release whose agent image is `agent_image` made it."""
    p = training_pod(
        name="run",
        namespace="ml",
        uid="u1",
        spec=TrainingSpec.model_validate(SPEC),
        attempt=2,
        settings=PodSettings(agent_image=agent_image, **settings),
    )
    p = copy.deepcopy(p)
    p["metadata"]["uid"] = "pod-uid-2"
    p["spec"]["nodeName"] = "gpu-1"
    return p


def conformance(
    pod: dict[str, Any], settings: PodSettings = SETTINGS, recorded: str | None = None
) -> PodConformance:
    return pod_conformance(
        pod,
        name="run",
        namespace="ml",
        uid="u1",
        spec=TrainingSpec.model_validate(SPEC),
        attempt=2,
        settings=settings,
        recorded_agent_image=recorded,
    )


def set_agent_images(pod: dict[str, Any], gate: str, seal: str) -> dict[str, Any]:
    pod["spec"]["initContainers"][0]["image"] = gate
    pod["spec"]["containers"][0]["image"] = seal
    return pod


def training(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "run", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": SPEC,
        "status": {"attempt": 2, "podUID": "pod-uid-2", "node": "gpu-1", "phase": "Training", **status},
    }


def agent_verdict(pod: dict[str, Any], settings: PodSettings = SETTINGS, **status: Any) -> Verdict:
    return check_pod(pod, training(**status), settings, "dev")


# --- honest pods of either release ----------------------------------------------------------------------


@pytest.mark.parametrize("image", [CURRENT, PREVIOUS])
def test_a_pod_built_by_the_current_or_the_previous_release_conforms(image: str) -> None:
    found = conformance(built_by(image))
    assert found == PodConformance(agent_image=image, differences=())
    assert found.conforms and found.unknown_release is None
    assert agent_verdict(built_by(image)) == Verdict(Action.MEASURE)


def test_a_previous_release_pod_recorded_as_such_conforms() -> None:
    assert conformance(built_by(PREVIOUS), recorded=PREVIOUS).conforms


# --- attacks: claiming "previous release" ----------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        ATTACKER,  # an image of the attacker's choice, pinned
        OLDER,  # an honest but older agent image: outside the window
        "registry.example/aicert/agent@sha256:" + "b" * 63 + "c",  # one hex digit off the previous digest
        "registry.example/aicert/agent:v1@sha256:" + "b" * 64,  # the previous digest behind a tag
        "mirror.example/aicert/agent@sha256:" + "b" * 64,  # the previous digest from another repository
        "registry.example/aicert/agent@sha256:" + "B" * 64,  # the previous digest in upper case
    ],
)
def test_a_pod_from_any_other_agent_image_is_from_an_unknown_release(image: str) -> None:
    pod = set_agent_images(built_by(CURRENT), image, image)
    found = conformance(pod)
    assert not found.conforms
    assert found.agent_image is None and found.unknown_release == image
    assert set(found.deviations) == {GATE_IMAGE, SEAL_IMAGE}
    verdict = agent_verdict(pod)
    assert (verdict.action, verdict.reason) == (Action.REFUSE, Reason.POD_FROM_UNKNOWN_RELEASE)
    assert image in verdict.message and verdict.reason in REFUSALS


def test_at_the_gate_a_pod_of_an_agent_image_this_agent_does_not_know_waits() -> None:
    """A newer release's pod on a node whose agent has not been replaced yet: nothing is measured,
    nothing refused, until this node's agent is the release that knows it (or the gate times out)."""
    newer = set_agent_images(built_by(CURRENT), ATTACKER, ATTACKER)
    assert check_pod(newer, training(), SETTINGS, "dev", gated=False) == Verdict(Action.WAIT)
    # a tampered pod of an accepted release is refused at the gate all the same
    tampered = built_by(PREVIOUS)
    _host_pid(tampered)
    assert check_pod(tampered, training(), SETTINGS, "dev", gated=False).reason is Reason.POD_MUTATED
    mixed = set_agent_images(built_by(CURRENT), CURRENT, ATTACKER)
    assert check_pod(mixed, training(), SETTINGS, "dev", gated=False).reason is Reason.POD_MISMATCH


def test_without_a_previous_release_configured_its_pods_are_from_an_unknown_release() -> None:
    only_current = PodSettings(agent_image=CURRENT)
    found = conformance(built_by(PREVIOUS), only_current)
    assert not found.conforms and found.unknown_release == PREVIOUS
    assert agent_verdict(built_by(PREVIOUS), only_current).reason is Reason.POD_FROM_UNKNOWN_RELEASE


def test_recording_an_attacker_image_in_the_status_does_not_make_it_a_release() -> None:
    pod = built_by(ATTACKER)
    found = conformance(pod, recorded=ATTACKER)
    assert not found.conforms and found.unknown_release == ATTACKER
    contract = pod_contract_record(2, ATTACKER)
    assert agent_verdict(pod, podContract=contract).reason is Reason.POD_FROM_UNKNOWN_RELEASE


@pytest.mark.parametrize(("gate", "seal"), [(PREVIOUS, CURRENT), (CURRENT, PREVIOUS), (PREVIOUS, ATTACKER)])
def test_a_pod_mixing_releases_is_a_mismatch(gate: str, seal: str) -> None:
    pod = set_agent_images(built_by(CURRENT), gate, seal)
    found = conformance(pod)
    assert pod_agent_image(pod) is None
    assert not found.conforms and found.unknown_release is None and found.deviations
    assert agent_verdict(pod).reason is Reason.POD_MISMATCH


def test_a_pod_swapped_to_the_other_release_after_it_was_made_is_a_mismatch() -> None:
    """The status says the current release made this attempt's pod; its containers now run the
    previous release's agent image (`kubectl set image` on a live pod): not the pod that was made."""
    swapped = set_agent_images(built_by(CURRENT), PREVIOUS, PREVIOUS)
    assert conformance(swapped).conforms  # on its own it looks like the previous release's pod
    found = conformance(swapped, recorded=CURRENT)
    assert not found.conforms and found.unknown_release is None
    assert set(found.deviations) == {GATE_IMAGE, SEAL_IMAGE}
    verdict = agent_verdict(swapped, podContract=pod_contract_record(2, CURRENT))
    assert verdict.reason is Reason.POD_MISMATCH


def test_a_record_of_another_attempt_is_not_this_pods_record() -> None:
    assert recorded_agent_image({"attempt": 2, "podContract": pod_contract_record(1, CURRENT)}) is None
    assert recorded_agent_image({"attempt": 2, "podContract": pod_contract_record(2, CURRENT)}) == CURRENT
    assert recorded_agent_image({"attempt": 2, "podContract": {"attempt": 2, "agentImage": 7}}) is None
    assert recorded_agent_image({"attempt": 2, "podContract": "x"}) is None


def _privileged(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"][1]["securityContext"] = {"privileged": True}


def _gate_command(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"][0]["command"] = ["sh", "-c", "touch /control/gate-open"]


def _seal_command(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["command"] = ["sleep", "infinity"]


def _host_pid(pod: dict[str, Any]) -> None:
    pod["spec"]["hostPID"] = True


def _extra_container(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"].append({"name": "sidecar", "image": PREVIOUS})


def _writable_input(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"][1]["volumeMounts"][0]["readOnly"] = False


@pytest.mark.parametrize(
    ("tamper", "path"),
    [
        (_privileged, "spec.initContainers[train].securityContext"),
        (_gate_command, "spec.initContainers[aicert-gate].command"),
        (_seal_command, "spec.containers[aicert-seal].command"),
        (_host_pid, "spec.hostPID"),
        (_extra_container, "spec.containers[sidecar]"),
        (_writable_input, "spec.initContainers[train].volumeMounts[/data]"),
    ],
)
def test_a_previous_release_pod_must_still_be_that_releases_contract(tamper: Any, path: str) -> None:
    pod = built_by(PREVIOUS)
    tamper(pod)
    found = conformance(pod)
    assert (found.agent_image, found.deviations) == (PREVIOUS, (path,))
    assert not found.conforms
    verdict = agent_verdict(pod)
    # each is a part of a pod only its creation sets: refused as made at admission
    assert (verdict.action, verdict.reason) == (Action.REFUSE, Reason.POD_MUTATED)
    assert path in verdict.message


def test_a_previous_release_pod_with_another_gate_timeout_is_a_mismatch() -> None:
    """The previous release's contract is this one with its agent image: other settings too must
    be the same (an upgrade that changes the gate timeout cannot keep running pods)."""
    pod = built_by(PREVIOUS, gate_timeout_seconds=60)
    found = conformance(pod)
    assert found.agent_image == PREVIOUS
    assert found.deviations == ("spec.initContainers[aicert-gate].command",)


# --- the operator sees the same -------------------------------------------------------------------------


def _owned(pod: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    pod = copy.deepcopy(pod)
    pod["status"] = {"phase": "Running"}
    [view] = owned_pods(
        name="run",
        namespace="ml",
        uid="u1",
        spec=TrainingSpec.model_validate(SPEC),
        pods=[pod],
        settings=SETTINGS,
        status=status or {},
    )
    return view


def test_the_operator_accepts_the_previous_release_and_names_its_image() -> None:
    view = _owned(built_by(PREVIOUS))
    assert (view.deviations, view.agent_image, view.unknown_release) == ((), PREVIOUS, None)


def test_the_operator_sees_an_unknown_release_and_a_swap() -> None:
    view = _owned(built_by(OLDER))
    assert (view.agent_image, view.unknown_release) == (None, OLDER)
    swapped = set_agent_images(built_by(CURRENT), PREVIOUS, PREVIOUS)
    view = _owned(swapped, {"attempt": 2, "podContract": pod_contract_record(2, CURRENT)})
    assert view.agent_image == CURRENT and {d.path for d in view.deviations} == {GATE_IMAGE, SEAL_IMAGE}


# --- settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "previous",
    [
        "registry.example/aicert/agent:v1",
        "registry.example/aicert/agent@sha256:" + "b" * 63,
        "sha256:" + "b" * 64,
    ],
)
def test_the_previous_agent_image_must_be_pinned_by_digest(previous: str) -> None:
    with pytest.raises(ContractError, match="previous agent image"):
        PodSettings(agent_image=CURRENT, previous_agent_image=previous)
    with pytest.raises(ContractError, match="AICERT_PREVIOUS_AGENT_IMAGE"):
        PodSettings.from_env({"AICERT_AGENT_IMAGE": CURRENT, "AICERT_PREVIOUS_AGENT_IMAGE": previous})


def test_the_previous_agent_image_comes_from_the_environment() -> None:
    assert PodSettings.from_env({"AICERT_AGENT_IMAGE": CURRENT}).accepted_agent_images == (CURRENT,)
    empty = {"AICERT_AGENT_IMAGE": CURRENT, "AICERT_PREVIOUS_AGENT_IMAGE": ""}
    assert PodSettings.from_env(empty).accepted_agent_images == (CURRENT,)
    both = {"AICERT_AGENT_IMAGE": CURRENT, "AICERT_PREVIOUS_AGENT_IMAGE": PREVIOUS}
    assert PodSettings.from_env(both) == SETTINGS
    assert SETTINGS.accepted_agent_images == (CURRENT, PREVIOUS)
    same = PodSettings(agent_image=CURRENT, previous_agent_image=CURRENT)
    assert same.accepted_agent_images == (CURRENT,)


def test_the_record_names_the_attempt_the_image_and_the_contract_version() -> None:
    assert pod_contract_record(3, PREVIOUS) == {
        "attempt": 3,
        "agentImage": PREVIOUS,
        "contractVersion": CONTRACT_VERSION,
    }


# --- the operator's decisions ---------------------------------------------------------------------------

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
TRAINING = ContainerState("running")
DONE = ContainerState("terminated", exit_code=0)


def view(**fields: Any) -> PodView:
    base = PodView(
        "run-2",
        2,
        "gpu-1",
        "Running",
        False,
        "",
        "",
        None,
        {"aicert-gate": DONE, "train": TRAINING, "aicert-seal": TRAINING},
        uid="pod-uid-2",
        agent_image=PREVIOUS,
    )
    return replace(base, **fields)


def decide(pod: PodView, **status: Any) -> Any:
    spec = TrainingSpec.model_validate({**SPEC, "backoffLimit": 3})
    state = {"attempt": 2, "phase": "Training", "podUID": "pod-uid-2", "startTime": "2026-12-07T11:00:00Z"}
    return reconcile(
        Training("run", "ml", "u1", 1, spec, {**state, **status}), [pod], NOW, default_deadline=86400
    )


def test_a_previous_release_pod_keeps_training_and_its_contract_is_recorded() -> None:
    decision = decide(view())
    assert decision.status["phase"] == "Training" and not decision.delete_pods
    assert decision.status["podContract"] == pod_contract_record(2, PREVIOUS)


def test_the_recorded_contract_of_the_attempt_stays() -> None:
    recorded = pod_contract_record(2, PREVIOUS)
    assert decide(view(), podContract=recorded).status["podContract"] == recorded
    # a record of an earlier attempt is not this attempt's: it is replaced by what the pod shows
    decision = decide(view(agent_image=CURRENT), podContract=pod_contract_record(1, PREVIOUS))
    assert decision.status["podContract"] == pod_contract_record(2, CURRENT)


def test_a_pod_from_an_unknown_release_fails_the_run_and_is_deleted_never_retried() -> None:
    images = (Deviation(GATE_IMAGE, "changed", False), Deviation(SEAL_IMAGE, "changed", False))
    decision = decide(view(agent_image=None, unknown_release=OLDER, deviations=images))
    status = decision.status
    assert (status["phase"], status["reason"]) == ("Failed", "PodFromUnknownRelease")
    assert OLDER in status["message"] and decision.create_attempt is None
    assert decision.delete_pods == ("run-2",)
    assert "podContract" not in status  # no accepted release built it
    assert [e.reason for e in decision.events] == [Reason.POD_FROM_UNKNOWN_RELEASE]


def test_a_tampered_previous_release_pod_is_a_mismatch() -> None:
    decision = decide(view(deviations=(Deviation("metadata.labels[aicert.dev/attempt]", "changed", False),)))
    assert (decision.status["phase"], decision.status["reason"]) == ("Failed", "PodMismatch")
    assert decision.delete_pods == ("run-2",) and "podContract" not in decision.status
