"""A training that waits for a node its agent cannot vouch for says so: `NoChainableNode`.

The agent of a node whose AK certificate does not chain to a trusted root leaves the node
unlabelled and sets its condition AICertAKChain False (the missing issuer in the message). The
operator learns the nodes from a watch (`NodeView`), not per training, and `no_chainable_node`
decides, pure, whether a Pending run's wait is that.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from aicert_contract.training import LABEL_ASSURANCE, NODE_CONDITION_AK_CHAIN, TrainingSpec
from aicert_operator.nodes import NodeFacts, NodeView, no_chainable_node, node_facts
from aicert_operator.observe import PodView
from aicert_operator.reconcile import Training, reconcile

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
SPEC = {"image": "r/t@sha256:" + "a" * 64, "output": {"emptyDir": {}, "mountPath": "/out"}}
MISSING = (
    "missing issuer subject=CN=Global Virtual TPM CA - 03 authorityKeyId=ab12: "
    "no certificate of that issuer among the candidates"
)
UNSCHEDULABLE = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."


def node(
    name: str, assurance: str | None = None, chain: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}
    if assurance is not None:
        body["metadata"]["labels"][LABEL_ASSURANCE] = assurance
    conditions = [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]
    if chain is not None:
        status, reason, message = chain
        conditions.append(
            {"type": NODE_CONDITION_AK_CHAIN, "status": status, "reason": reason, "message": message}
        )
    body["status"] = {"conditions": conditions}
    return body


UNCHAINED = ("False", "AKIssuerMissing", MISSING)
CHAINED = ("True", "AKChained", "the AK chains to a trusted root through 1 intermediate(s)")


def test_node_facts_read_the_label_and_the_ak_chain_condition() -> None:
    assert node_facts(node("gpu-1", "vtpm", CHAINED)) == NodeFacts(
        "gpu-1", "vtpm", True, "AKChained", CHAINED[2]
    )
    assert node_facts(node("gpu-2", None, UNCHAINED)) == NodeFacts(
        "gpu-2", None, False, "AKIssuerMissing", MISSING
    )
    assert node_facts(node("cpu-1")) == NodeFacts("cpu-1", None, None, "", "")


def test_the_view_keeps_the_latest_facts_of_each_node_and_forgets_deleted_ones() -> None:
    view = NodeView()
    view.see(node("gpu-1", None, UNCHAINED))
    view.see(node("gpu-2", "vtpm", CHAINED))
    view.see(node("gpu-1", "vtpm", CHAINED))  # the agent restarted with the intermediate
    assert view.nodes() == [
        node_facts(node("gpu-1", "vtpm", CHAINED)),
        node_facts(node("gpu-2", "vtpm", CHAINED)),
    ]
    view.see(node("gpu-2"), deleted=True)
    assert [n.name for n in view.nodes()] == ["gpu-1"]


def test_the_view_names_the_labelled_nodes_the_liveness_loop_looks_at() -> None:
    view = NodeView()
    view.see(node("gpu-2", "vtpm", CHAINED))
    view.see(node("cpu-1"))
    view.see(node("gpu-1", "dev"))
    assert view.labelled() == ["gpu-1", "gpu-2"]
    view.see(node("gpu-2"))  # the operator's liveness loop (or the agent) took the label off
    assert view.labelled() == ["gpu-1"]
    view.see(node("gpu-1", "dev"), deleted=True)
    assert view.labelled() == []


def facts(*bodies: dict[str, Any]) -> list[NodeFacts]:
    return [node_facts(b) for b in bodies]


def test_an_unchainable_node_and_no_labelled_one_is_named_with_its_missing_issuer() -> None:
    message = no_chainable_node("vtpm", facts(node("gpu-1", None, UNCHAINED), node("cpu-1")))
    assert message == (
        "no node carries aicert.dev/assurance vtpm or higher; the agent of node gpu-1 cannot chain "
        f"its AK certificate (AKIssuerMissing: {MISSING}); each node's condition AICertAKChain says why, "
        "and agent.akChain gives the agents a missing intermediate"
    )


def test_several_unchainable_nodes_are_named_in_order_and_bounded() -> None:
    nodes = facts(*(node(f"gpu-{i:02}", None, UNCHAINED) for i in range(12, 0, -1)))
    message = no_chainable_node("dev", nodes)
    assert message is not None
    assert message.startswith(
        "no node carries aicert.dev/assurance dev or higher; the agents of nodes gpu-01, gpu-02, gpu-03 "
        "and 9 more cannot chain their AK certificates (AKIssuerMissing: "
    )
    assert message.count(MISSING) == 1  # the first node's message stands for the rest


@pytest.mark.parametrize(
    ("bodies", "minimum"),
    [
        pytest.param([], "vtpm", id="no-nodes"),
        pytest.param([node("cpu-1"), node("gpu-1", None, CHAINED)], "vtpm", id="chained-but-unlabelled"),
        pytest.param(
            [node("gpu-1", "vtpm", CHAINED), node("gpu-2", None, UNCHAINED)], "vtpm", id="one-can-run-it"
        ),
        pytest.param(
            [node("gpu-1", "cvm", CHAINED), node("gpu-2", None, UNCHAINED)], "vtpm", id="a-higher-level"
        ),
    ],
)
def test_no_message_when_no_unchainable_node_explains_the_wait(
    bodies: list[dict[str, Any]], minimum: str
) -> None:
    assert no_chainable_node(minimum, facts(*bodies)) is None


def test_a_node_labelled_below_the_minimum_does_not_count_as_one_that_can_run_it() -> None:
    message = no_chainable_node("vtpm", facts(node("dev-1", "dev", CHAINED), node("gpu-1", None, UNCHAINED)))
    assert message is not None and "node gpu-1 cannot chain" in message


def test_an_unknown_label_value_counts_as_no_label() -> None:
    message = no_chainable_node("dev", facts(node("odd-1", "gold", CHAINED), node("gpu-1", None, UNCHAINED)))
    assert message is not None and "node gpu-1 cannot chain" in message


# --- in the training's status ----------------------------------------------------------------------


def unplaced(unschedulable: str | None = UNSCHEDULABLE) -> PodView:
    return PodView("run-1", 1, None, "Pending", False, "", "", unschedulable, {})


def decide(pod: PodView, nodes: list[NodeFacts]) -> dict[str, Any]:
    training = Training(
        "run", "ml", "uid-1", 1, TrainingSpec.model_validate(SPEC), {"attempt": 1, "phase": "Pending"}
    )
    return reconcile(training, [pod], NOW, default_deadline=86400, nodes=nodes).status


def test_a_pending_run_says_no_node_can_chain_its_ak() -> None:
    status = decide(unplaced(), facts(node("gpu-1", None, UNCHAINED)))
    assert (status["phase"], status["reason"]) == ("Pending", "NoChainableNode")
    assert "node gpu-1 cannot chain" in status["message"] and MISSING in status["message"]
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "NoChainableNode")
    assert scheduled["message"] == status["message"]


def test_without_unchainable_nodes_the_run_is_unschedulable_as_before() -> None:
    status = decide(unplaced(), facts(node("gpu-1", None, CHAINED)))
    assert status["reason"] == "Unschedulable"


def test_a_pod_the_scheduler_has_not_judged_yet_is_still_scheduling() -> None:
    status = decide(unplaced(None), facts(node("gpu-1", None, UNCHAINED)))
    assert status["reason"] == "Scheduling"


def test_a_missing_input_claim_is_said_before_the_nodes() -> None:
    spec = {
        **SPEC,
        "inputs": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}
        ],
    }
    training = Training("run", "ml", "uid-1", 1, TrainingSpec.model_validate(spec), {"attempt": 1})
    pod = unplaced('persistentvolumeclaim "data-pvc" not found')
    decision = reconcile(
        training, [pod], NOW, default_deadline=86400, nodes=facts(node("gpu-1", None, UNCHAINED))
    )
    assert decision.status["reason"] == "InputClaimMissing"
