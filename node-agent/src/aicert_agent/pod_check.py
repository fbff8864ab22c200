"""May the agent measure this pod for this training? Pure: the decision, not the API calls.

The agent measures a pod only when it is exactly the pod the operator made for the attempt the
training's status names (by uid), unchanged (as the current or the previous release made it), on a node of sufficient assurance, while the training
runs, with volumes and network that nobody else shares. This holds even with the admission policies
switched off: they keep tenants out, this check keeps the agent from certifying what got through.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aicert.certificate import ASSURANCE_ORDER, Assurance
from aicert_contract.pod import PodSettings, controller_uid, pod_conformance, recorded_agent_image, refusal
from aicert_contract.status import Reason
from aicert_contract.training import LABEL_ATTEMPT, LABEL_TRAINING_UID, TERMINAL_PHASES, TrainingSpec


class Action(enum.Enum):
    MEASURE = "measure"
    WAIT = "wait"  # not yet named by the training's status: look again later
    REFUSE = "refuse"  # the training's own pod, in a state that cannot be certified
    REFUSE_FOREIGN = "refuse-foreign"  # not the training's pod: stop it, leave the status alone


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: Reason | None = None
    message: str = ""


MEASURE = Verdict(Action.MEASURE)


def check_pod(
    pod: Mapping[str, Any],
    training: Mapping[str, Any],
    settings: PodSettings,
    node_assurance: Assurance,
    *,
    gated: bool = True,
) -> Verdict:
    """`gated`: the pod's gate is open (or done). Before that, a pod of an agent image this agent
    does not accept waits: it may be the next release's, made while this node's agent has not
    been replaced yet (a DaemonSet roll, or OnDelete); nothing is measured for it meanwhile, and
    the operator fails a pod of an older release itself. After the gate it is refused."""
    meta, tmeta = pod.get("metadata") or {}, training.get("metadata") or {}
    status = training.get("status") or {}
    name, uid = str(tmeta.get("name")), str(tmeta.get("uid"))
    pod_name, pod_uid = str(meta.get("name")), str(meta.get("uid"))
    labels = meta.get("labels") or {}
    if controller_uid(pod) != uid or labels.get(LABEL_TRAINING_UID) != uid:
        return Verdict(
            Action.REFUSE_FOREIGN,
            Reason.NOT_OWNED,
            f"pod {pod_name} carries the labels of CertifiedTraining {name} but is not controlled by it",
        )
    if status.get("phase") in TERMINAL_PHASES:
        return Verdict(
            Action.REFUSE_FOREIGN,
            Reason.TRAINING_FINISHED,
            f"CertifiedTraining {name} is already {status['phase']}",
        )
    named_uid, attempt = status.get("podUID"), int(status.get("attempt") or 0)
    try:
        pod_attempt = int(labels.get(LABEL_ATTEMPT, ""))
    except ValueError:
        pod_attempt = -1
    if not named_uid or attempt < pod_attempt:
        return Verdict(Action.WAIT)  # the operator has created it but not yet named it
    if named_uid != pod_uid:
        return Verdict(
            Action.REFUSE_FOREIGN,
            Reason.FOREIGN_POD,
            f"pod {pod_name} is not the pod of attempt {attempt} of CertifiedTraining {name}",
        )
    # The agent writes a training's status only once that status names the node (admission lets it
    # write for trainings on its own node only): until the operator has recorded where the pod
    # was bound, wait, as for the pod's uid.
    pod_node = (pod.get("spec") or {}).get("nodeName")
    if not status.get("node"):
        return Verdict(Action.WAIT)
    if status["node"] != pod_node:
        return Verdict(
            Action.REFUSE_FOREIGN,
            Reason.FOREIGN_POD,
            f"pod {pod_name} runs on {pod_node}, but CertifiedTraining {name} says its pod runs on {status['node']}",
        )
    spec = TrainingSpec.model_validate(training.get("spec") or {})
    found = pod_conformance(
        pod,
        name=name,
        namespace=str(tmeta.get("namespace")),
        uid=uid,
        spec=spec,
        attempt=attempt,
        settings=settings,
        recorded_agent_image=recorded_agent_image(status),
    )
    if found.unknown_release is not None:
        if not gated:
            return Verdict(Action.WAIT)
        accepted = " or ".join(settings.accepted_agent_images)
        return Verdict(
            Action.REFUSE,
            Reason.POD_FROM_UNKNOWN_RELEASE,
            f"pod {pod_name} was built with agent image {found.unknown_release}; this release accepts only "
            f"pods built with {accepted} (the current and the previous release)",
        )
    if not found.conforms:
        if found.differences:  # PodMutated when admission made every difference, else PodMismatch
            reason, message = refusal(pod_name, found.differences)
        else:  # no accepted release: a pod with no agreeing agent image differs from every contract
            reason, message = Reason.POD_MISMATCH, f"pod {pod_name} is not the pod the operator made"
        return Verdict(Action.REFUSE, reason, message)
    if ASSURANCE_ORDER[node_assurance] < ASSURANCE_ORDER[spec.minAssurance]:
        return Verdict(
            Action.REFUSE,
            Reason.ASSURANCE_TOO_LOW,
            f"this node's assurance is {node_assurance}; the training requires {spec.minAssurance} or higher",
        )
    return MEASURE


# --- volumes and network: what other objects in the namespace say ---------------------------------

EXCLUSIVE_OUTPUT_MODES = frozenset({"ReadWriteOncePod"})
EXCLUSIVE_INPUT_MODES = frozenset({"ReadOnlyMany", "ReadWriteOncePod"})


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str


def _mounts(pod: Mapping[str, Any]) -> Iterable[tuple[str, bool]]:
    """(claim name, read-only) for each PVC volume of the pod."""
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim = volume.get("persistentVolumeClaim")
        if claim:
            yield str(claim.get("claimName")), bool(claim.get("readOnly"))


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def volume_problem(
    spec: TrainingSpec,
    claims: Mapping[str, Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    own_uid: str,
    *,
    output_claim: str | None,
) -> Problem | None:
    """The output must be this pod's alone, the inputs unwritable by anyone: by the claims' access
    modes, and by what the other live pods of the namespace mount now. `claims`: name -> PVC, for
    every input claim and `output_claim` (the attempt's, see aicert_contract.training.output_claim)."""
    if output_claim is not None:
        modes = set((claims[output_claim].get("spec") or {}).get("accessModes") or [])
        if not modes or not modes <= EXCLUSIVE_OUTPUT_MODES:
            return Problem(
                Reason.OUTPUT_NOT_EXCLUSIVE,
                f"output claim {output_claim} has access modes {sorted(modes)}; it must be ReadWriteOncePod "
                "so that no other pod can write into the run's output",
            )
    for item in spec.inputs:
        claim = item.persistentVolumeClaim.claimName
        modes = set((claims[claim].get("spec") or {}).get("accessModes") or [])
        if not modes or not modes <= EXCLUSIVE_INPUT_MODES:
            return Problem(
                Reason.INPUT_NOT_EXCLUSIVE,
                f"input claim {claim} has access modes {sorted(modes)}; it must be ReadOnlyMany or "
                "ReadWriteOncePod so that nobody can change the inputs during the run",
            )
    inputs = {i.persistentVolumeClaim.claimName for i in spec.inputs}
    for other in pods:
        if (other.get("metadata") or {}).get("uid") == own_uid or not _live(other):
            continue
        other_name = (other.get("metadata") or {}).get("name")
        for claim, read_only in _mounts(other):
            if claim == output_claim:
                return Problem(
                    Reason.OUTPUT_NOT_EXCLUSIVE, f"pod {other_name} also mounts the output claim {claim}"
                )
            if claim in inputs and not read_only:
                return Problem(
                    Reason.INPUT_NOT_EXCLUSIVE, f"pod {other_name} mounts the input claim {claim} writable"
                )
    return None


def network_problem(spec: TrainingSpec, record: Mapping[str, Any], opened: list[str]) -> Problem | None:
    """With `egress: none`, no moment since the gate may have left the pod egress. `record`: the
    ledger's (aicert_agent.network_ledger), `opened`: the moments it saw egress open. An `unknown`
    record is certified as such: a verifier's `egress: none` policy then refuses it."""
    if spec.network.egress == "none" and record.get("egress") == "allowed":
        names = ", ".join(str(p.get("name")) for p in record.get("policies") or []) or "none"
        when = "; ".join(opened[:2]) or "now"
        return Problem(
            Reason.NETWORK_NOT_ISOLATED,
            f"spec.network.egress is none but the pod had egress: {when} (NetworkPolicies that selected it: {names})",
        )
    return None


def relabel_problem(change: str | None) -> Problem | None:
    """A training pod's labels and annotations are frozen once the agent registered it: a relabel
    can bring it under other NetworkPolicies (or Services) for a while, even when undone."""
    if change is None:
        return None
    return Problem(Reason.POD_RELABELLED, f"the training pod was relabelled: {change}")
