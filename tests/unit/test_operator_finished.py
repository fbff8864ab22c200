"""Status a person and a script can use: the Finished condition (`kubectl wait --for=condition=Finished`
returns on either outcome), Certified on every failure, observedGeneration on every condition, and a
missing or unbound input claim named as such. Pure decisions, no API server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicert_contract.pod import Deviation
from aicert_contract.status import REFUSALS, ConditionType, Reason
from aicert_contract.training import SEAL_REFUSED_EXIT, TrainingSpec
from aicert_operator.observe import ContainerState, PodView
from aicert_operator.reconcile import (
    Decision,
    Training,
    finish_conditions,
    input_claim_missing,
    pod_not_created,
    reconcile,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DEADLINE = 86400
GENERATION = 7  # not 1: a condition that took its generation from anywhere else shows
SPEC = {"image": "r/t@sha256:" + "a" * 64, "output": {"emptyDir": {}, "mountPath": "/out"}}
INPUTS = [
    {"name": "corpus", "persistentVolumeClaim": {"claimName": "corpus-v2"}, "mountPath": "/data"},
    {"name": "tokenizer", "persistentVolumeClaim": {"claimName": "tok"}, "mountPath": "/tok"},
]
DONE = ContainerState("terminated", exit_code=0)
RUNNING = ContainerState("running")
REFUSED = ContainerState("terminated", exit_code=SEAL_REFUSED_EXIT)


def training(status: dict[str, Any] | None = None, **spec: Any) -> Training:
    return Training(
        "run", "ml", "uid-1", GENERATION, TrainingSpec.model_validate({**SPEC, **spec}), status or {}
    )


def pod(phase: str = "Running", node: str | None = "gpu-1", **containers: ContainerState) -> PodView:
    states = {k.replace("_", "-"): v for k, v in containers.items()}
    return PodView("run-1", 1, node, phase, False, "", "", None, states, uid="pod-uid-1")


def unplaced(message: str) -> PodView:
    return PodView("run-1", 1, None, "Pending", False, "", "", message, {}, uid="pod-uid-1")


def conditions(decision: Decision) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in decision.status["conditions"]}


def certified(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "Certified", "status": status, "reason": reason, "message": message}


def run_status(**fields: Any) -> dict[str, Any]:
    return {"attempt": 1, "startTime": "2026-11-23T11:00:00Z", **fields}


# Every way the operator ends a run as Failed, with what the agent had written by then (nothing).
FAILURES = {
    "deadline": lambda: reconcile(
        training(run_status(), activeDeadlineSeconds=600),
        [pod(aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    ),
    "training failed": lambda: reconcile(
        training(run_status()),
        [pod("Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))],
        NOW,
        default_deadline=DEADLINE,
    ),
    "pod mismatch": lambda: reconcile(
        training(run_status()),
        [
            PodView(
                "run-1",
                1,
                "gpu-1",
                "Running",
                False,
                "",
                "",
                None,
                {},
                uid="u",
                deviations=(Deviation("spec.hostPID", "added", True),),
            )
        ],
        NOW,
        default_deadline=DEADLINE,
    ),
    "pod deleted": lambda: reconcile(training(run_status()), [], NOW, default_deadline=DEADLINE),
    "refusal lost": lambda: reconcile(
        training(run_status()),
        [pod("Failed", aicert_gate=DONE, train=DONE, aicert_seal=REFUSED)],
        NOW,
        default_deadline=DEADLINE,
    ),
    "pod rejected": lambda: pod_not_created(
        training(),
        reconcile(training(), [], NOW, default_deadline=DEADLINE),
        'pods "run-1" is forbidden: violates PodSecurity "restricted:latest"',
        name_taken=False,
        transient=False,
        now=NOW,
    ),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_run_the_operator_fails_is_finished_and_not_certified_with_the_failures_reason(
    failure: str,
) -> None:
    decision = FAILURES[failure]()
    status = decision.status
    assert status["phase"] == "Failed"
    got = conditions(decision)
    expected = ("True", status["reason"], status["message"])
    assert (got["Finished"]["status"], got["Finished"]["reason"], got["Finished"]["message"]) == expected
    assert (got["Certified"]["status"], got["Certified"]["reason"], got["Certified"]["message"]) == (
        "False",
        status["reason"],
        status["message"],
    )
    assert status["reason"] not in {"Certified", ""}


def test_the_agents_refusal_stands_and_the_run_is_finished_with_its_reason() -> None:
    refusal = certified("False", "InputsChanged", "input corpus changed during training")
    decision = reconcile(
        training(run_status(conditions=[refusal])),
        [pod("Failed", aicert_gate=DONE, train=DONE, aicert_seal=REFUSED)],
        NOW,
        default_deadline=DEADLINE,
    )
    got = conditions(decision)
    assert "Certified" not in got  # the agent's condition: the operator does not write it
    assert (got["Finished"]["status"], got["Finished"]["reason"], got["Finished"]["message"]) == (
        "True",
        "InputsChanged",
        "input corpus changed during training",
    )


def test_a_certificate_issued_before_the_deadline_is_not_overwritten() -> None:
    issued = certified("True", "Certified", "model sha256:… certified")
    decision = reconcile(
        training(run_status(conditions=[issued]), activeDeadlineSeconds=600),
        [pod(aicert_gate=DONE, train=DONE, aicert_seal=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert decision.status["reason"] == "DeadlineExceeded"
    got = conditions(decision)
    assert "Certified" not in got and got["Finished"]["reason"] == "DeadlineExceeded"


def test_a_certified_run_is_finished_with_reason_certified() -> None:
    status = run_status(
        certificate="{}",
        modelDigest="sha256:" + "b" * 64,
        conditions=[certified("True", "Certified")],
    )
    decision = reconcile(
        training(status),
        [pod("Succeeded", aicert_gate=DONE, train=DONE, aicert_seal=DONE)],
        NOW,
        default_deadline=DEADLINE,
    )
    got = conditions(decision)
    assert decision.status["phase"] == "Succeeded"
    assert (got["Finished"]["status"], got["Finished"]["reason"]) == ("True", "Certified")
    assert "Certified" not in got  # the agent wrote it


RUNNING_RUNS = {
    "creating": (training(), []),
    "scheduling": (training(run_status()), [pod(node=None)]),
    "measuring": (training(run_status()), [pod(aicert_gate=RUNNING)]),
    "training": (training(run_status()), [pod(aicert_gate=DONE, train=RUNNING)]),
    "sealing": (training(run_status()), [pod(aicert_gate=DONE, train=DONE, aicert_seal=RUNNING)]),
    "retrying": (
        training(run_status(), backoffLimit=1),
        [pod("Failed", aicert_gate=DONE, train=ContainerState("terminated", exit_code=2))],
    ),
}


@pytest.mark.parametrize("moment", sorted(RUNNING_RUNS))
def test_a_running_run_is_not_finished_and_says_where_it_is(moment: str) -> None:
    decision = reconcile(*RUNNING_RUNS[moment], NOW, default_deadline=DEADLINE)
    got = conditions(decision)
    assert decision.status["phase"] not in ("Succeeded", "Failed")
    assert (got["Finished"]["status"], got["Finished"]["reason"]) == ("False", decision.status["reason"])
    assert "Certified" not in got


def test_finished_keeps_its_transition_time_while_running_and_moves_when_done() -> None:
    first = reconcile(
        training(run_status()),
        [pod(aicert_gate=RUNNING)],
        NOW - dt.timedelta(minutes=5),
        default_deadline=DEADLINE,
    )
    later = reconcile(
        training(run_status(conditions=first.status["conditions"])),
        [pod(aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert conditions(later)["Finished"]["lastTransitionTime"] == "2026-11-23T11:55:00Z"
    failed = reconcile(
        training(run_status(conditions=later.status["conditions"]), activeDeadlineSeconds=600),
        [pod(aicert_gate=DONE, train=RUNNING)],
        NOW,
        default_deadline=DEADLINE,
    )
    assert conditions(failed)["Finished"]["lastTransitionTime"] == "2026-11-23T12:00:00Z"


def test_finish_conditions_write_certified_only_on_failure_and_only_when_absent() -> None:
    assert set(finish_conditions(training(), "Succeeded", Reason.CERTIFIED, "")) == {ConditionType.FINISHED}
    assert set(finish_conditions(training(), "Training", Reason.TRAINING, "")) == {ConditionType.FINISHED}
    assert set(finish_conditions(training(), "Failed", Reason.POD_FAILED, "")) == {
        ConditionType.FINISHED,
        ConditionType.CERTIFIED,
    }
    refused = training({"conditions": [certified("False", "SealFailed")]})
    assert set(finish_conditions(refused, "Failed", Reason.SEAL_FAILED, "")) == {ConditionType.FINISHED}


# --- observedGeneration ---------------------------------------------------------------------------


def every_decision() -> list[Decision]:
    decisions = [f() for f in FAILURES.values()]
    decisions += [reconcile(*run, NOW, default_deadline=DEADLINE) for run in RUNNING_RUNS.values()]
    decisions.append(
        reconcile(
            training(run_status()),
            [unplaced('persistentvolumeclaim "tok" not found')],
            NOW,
            default_deadline=DEADLINE,
        )
    )
    decisions.append(  # spec.output.oci: the Published condition of a certified run
        reconcile(
            training(
                run_status(phase="Succeeded", certificate="{}"),
                output={
                    "volumeClaimTemplate": {"size": "1Gi"},
                    "mountPath": "/out",
                    "oci": {"reference": "registry.example/models/m:v1"},
                },
            ),
            [],
            NOW,
            default_deadline=DEADLINE,
        )
    )
    decisions.append(
        pod_not_created(
            training(),
            reconcile(training(), [], NOW, default_deadline=DEADLINE),
            "exceeded quota",
            name_taken=False,
            transient=True,
            now=NOW,
        )
    )
    return decisions


def test_every_condition_the_operator_writes_carries_the_observed_generation() -> None:
    written = [c for d in every_decision() for c in d.status["conditions"]]
    assert {c["type"] for c in written} == {t.value for t in ConditionType}
    assert [c for c in written if c.get("observedGeneration") != GENERATION] == []


# Conditions of other kinds of object, with their own shape: the Node's AICertAKChain condition
# (a core NodeCondition: lastHeartbeatTime, no observedGeneration) is built where the agent reports it.
OTHER_OBJECTS_CONDITIONS = {"ak_chain.py"}


def test_no_condition_is_built_but_by_set_condition() -> None:
    """The operator and the agent write CertifiedTraining conditions only through
    aicert_contract.status.set_condition, which sets observedGeneration: no other module spells out
    a condition's transition time (but those that build another object's conditions, named above)."""
    sources = [*(ROOT / "operator" / "src").rglob("*.py"), *(ROOT / "node-agent" / "src").rglob("*.py")]
    sources = [p for p in sources if p.name not in OTHER_OBJECTS_CONDITIONS]
    sources += [p for p in (ROOT / "verifier" / "src").rglob("*.py") if p.name != "status.py"]
    assert [str(p.relative_to(ROOT)) for p in sources if '"lastTransitionTime"' in p.read_text()] == []


# --- a missing or unbound input claim -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "says"),
    [
        (
            '0/3 nodes are available: persistentvolumeclaim "tok" not found. preemption: 0/3 nodes are '
            "available: 3 Preemption is not helpful for scheduling.",
            "input tokenizer: claim tok does not exist; the run waits for it",
        ),
        (
            '0/3 nodes are available: persistentvolumeclaim "corpus-v2" is being deleted.',
            "input corpus: claim corpus-v2 is being deleted; the run waits for it",
        ),
        (
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: …",
            "input one of the claims corpus-v2, tok is not bound to a volume; the run waits for it: 0/3",
        ),
    ],
)
def test_a_missing_or_unbound_input_claim_is_pending_naming_it(scheduler: str, says: str) -> None:
    decision = reconcile(
        training(run_status(), inputs=INPUTS), [unplaced(scheduler)], NOW, default_deadline=DEADLINE
    )
    status = decision.status
    assert (status["phase"], status["reason"]) == ("Pending", "InputClaimMissing")
    assert status["message"].startswith(says) and "needs assurance" not in status["message"]
    got = conditions(decision)
    assert (got["Scheduled"]["status"], got["Scheduled"]["reason"]) == ("False", "InputClaimMissing")
    assert got["Scheduled"]["message"] == status["message"]
    assert (got["Finished"]["status"], got["Finished"]["reason"]) == ("False", "InputClaimMissing")


def test_an_unbound_single_input_claim_is_named() -> None:
    message = input_claim_missing(
        TrainingSpec.model_validate({**SPEC, "inputs": INPUTS[:1]}),
        "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
    )
    assert message is not None and message.startswith("input claim corpus-v2 is not bound to a volume")


@pytest.mark.parametrize(
    "scheduler",
    [
        '0/3 nodes are available: persistentvolumeclaim "someone-elses" not found.',  # not an input's
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    ],
)
def test_anything_else_unschedulable_is_still_about_the_nodes(scheduler: str) -> None:
    decision = reconcile(
        training(run_status(), inputs=INPUTS), [unplaced(scheduler)], NOW, default_deadline=DEADLINE
    )
    assert decision.status["reason"] == "Unschedulable"
    assert "needs assurance vtpm or higher" in decision.status["message"]


def test_without_inputs_unbound_claims_are_not_an_input_claim() -> None:
    spec = TrainingSpec.model_validate(SPEC)
    assert input_claim_missing(spec, "pod has unbound immediate PersistentVolumeClaims") is None


def test_input_claim_missing_is_the_operators_reason_not_a_refusal() -> None:
    assert Reason.INPUT_CLAIM_MISSING not in REFUSALS


# --- the CRD says the same ------------------------------------------------------------------------


def crd_version(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    found: dict[str, Any] = version
    return found


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "crds" / "certifiedtrainings.aicert.dev.yaml",
        ROOT / "helm" / "aicert" / "files" / "certifiedtrainings.aicert.dev.yaml",  # the chart's link
    ],
)
def test_the_crd_accepts_every_condition_type_and_shows_the_reason(path: Path) -> None:
    version = crd_version(path)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    types = status["conditions"]["items"]["properties"]["type"]["enum"]
    assert sorted(types) == sorted(t.value for t in ConditionType)
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Reason"]["jsonPath"] == ".status.reason"
    assert columns["Reason"].get("priority", 0) == 0  # in `kubectl get ct`, not only in -o wide
    shown = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown.index("Reason") == shown.index("Phase") + 1


# --- runs that finished before the operator knew Finished -----------------------------------------

OLD_FAILED = {
    "phase": "Failed",
    "reason": "DeadlineExceeded",
    "message": "the run did not finish within activeDeadlineSeconds=600",
    "observedGeneration": 1,
    "attempt": 1,
    "podName": "run-1",
    "podUID": "pod-uid-1",
    "node": "gpu-1",
    "startTime": "2026-11-20T11:00:00Z",
    "completionTime": "2026-11-20T11:10:00Z",
    "conditions": [
        {
            "type": "Scheduled",
            "status": "True",
            "reason": "Scheduled",
            "message": "on node gpu-1",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-11-20T11:00:05Z",
        }
    ],
}


def test_a_run_failed_before_the_upgrade_gets_finished_and_certified_once_keeping_the_rest() -> None:
    old = training(OLD_FAILED)
    decision = reconcile(old, [], NOW, default_deadline=DEADLINE)
    status = decision.status
    # every field the operator owns is applied again as it was: server-side apply would drop the
    # ones left out
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        k: v for k, v in OLD_FAILED.items() if k != "conditions"
    }
    got = conditions(decision)
    assert got["Scheduled"] == OLD_FAILED["conditions"][0]
    for kind, state in (("Finished", "True"), ("Certified", "False")):
        assert (got[kind]["status"], got[kind]["reason"], got[kind]["message"]) == (
            state,
            "DeadlineExceeded",
            OLD_FAILED["message"],
        )
        assert got[kind]["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert decision.create_attempt is None and decision.events == () and decision.requeue_after is None
    again = reconcile(
        training({**OLD_FAILED, "conditions": status["conditions"]}), [], NOW, default_deadline=DEADLINE
    )
    assert again.status == {}  # written once


def test_a_run_certified_before_the_upgrade_gets_finished_and_the_agents_condition_is_left() -> None:
    agents = certified("True", "Certified", "model certified")
    old = training(
        {
            "phase": "Succeeded",
            "reason": "Certified",
            "message": "certified",
            "attempt": 1,
            "conditions": [agents],
        }
    )
    got = conditions(reconcile(old, [], NOW, default_deadline=DEADLINE))
    assert (got["Finished"]["status"], got["Finished"]["reason"]) == ("True", "Certified")
    assert "Certified" not in got


def test_an_old_refusal_keeps_the_agents_certified_condition() -> None:
    refusal = certified("False", "OutputNotEmpty", "the output held files")
    old = training(
        {
            **OLD_FAILED,
            "reason": "OutputNotEmpty",
            "message": "the output held files",
            "conditions": [refusal],
        }
    )
    got = conditions(reconcile(old, [], NOW, default_deadline=DEADLINE))
    assert (got["Finished"]["status"], got["Finished"]["reason"]) == ("True", "OutputNotEmpty")
    assert "Certified" not in got


def test_an_undocumented_old_reason_is_not_copied_into_a_condition() -> None:
    old = training({**OLD_FAILED, "reason": "Boom\x1b[2J"})
    got = conditions(reconcile(old, [], NOW, default_deadline=DEADLINE))
    assert got["Finished"]["reason"] == got["Certified"]["reason"] == "PodFailed"
