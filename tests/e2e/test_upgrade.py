"""Upgrades keep running trainings: a run between its gate and its seal outlives a chart upgrade to
new agent and operator images (the agents rolled node by node, the operator's replicas replaced),
and is certified once, by the new agent, with the previous release's gate and seal containers."""

from __future__ import annotations

from typing import Any

import pytest

from aicert.trust import TrustStore
from aicert.verify import Verifier
from aicert_contract.pod import CONTRACT_VERSION
from aicert_localcluster.stack import SYSTEM_NAMESPACE, Stack
from tests.e2e.test_run_integrity import events

pytestmark = pytest.mark.e2e


def workload_images(stack: Stack, component: str) -> set[str]:
    """The images the running pods of the chart's operator or agent run."""
    pods = stack.cluster.kubectl_json(
        "get", "pods", "-n", SYSTEM_NAMESPACE, "-l", f"app.kubernetes.io/component={component}"
    )["items"]
    return {
        c["image"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        for c in p["spec"]["containers"]
    }


def test_a_run_between_gate_and_seal_survives_an_upgrade_and_is_certified_once(
    stack: Stack, run: Any
) -> None:
    previous_agent, previous_operator = stack.agent_image, stack.operator_image
    r = run(env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()  # the gate opened: the train container runs and waits for the test
    pod_uid = r.pods()[0]["metadata"]["uid"]
    made_with = {"attempt": 1, "agentImage": previous_agent, "contractVersion": CONTRACT_VERSION}
    assert r.status["podContract"] == made_with
    new_agent, new_operator = stack.release_variant(f"release after {r.name}")
    assert (new_agent, new_operator) != (previous_agent, previous_operator)
    try:
        stack.upgrade(agent_image=new_agent, operator_image=new_operator, previous_agent_image=previous_agent)
        assert workload_images(stack, "agent") == {new_agent}
        assert workload_images(stack, "operator") == {new_operator}
        during = r.status
        assert (during["phase"], during["attempt"], during["podUID"]) == ("Training", 1, pod_uid), during
        r.release()
        status: dict[str, Any] = r.wait("Succeeded", "Failed", timeout=240)["status"]
        assert (status["phase"], status["attempt"], status["podUID"]) == ("Succeeded", 1, pod_uid), status
        assert status["podContract"] == made_with  # built by the previous release, and still says so
        agent_certified = [e for e in events(stack, r.name) if e == ("aicert.dev/agent", "Certified")]
        assert agent_certified == [("aicert.dev/agent", "Certified")]
        verified = Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(
            status["certificate"], model_dir=r.model
        )
        assert verified.statement is not None
        run_identity = verified.statement.predicate.run
        assert (run_identity.id, run_identity.agentImage) == (pod_uid, previous_agent)
        # a run started now is built by the new release
        fresh = run().apply()
        fresh_status = fresh.wait("Succeeded", "Failed", timeout=240)["status"]
        assert fresh_status["phase"] == "Succeeded", fresh_status
        assert fresh_status["podContract"]["agentImage"] == new_agent
    finally:
        # back to the stack's own images for the tests after this one (accepting pods of the variant)
        stack.upgrade(
            agent_image=previous_agent, operator_image=previous_operator, previous_agent_image=new_agent
        )
