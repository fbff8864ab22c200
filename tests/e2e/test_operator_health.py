"""The operator's probes on real kubelets: both replicas Ready (a standby too), and a wedged leader
restarted by its liveness probe while the standby takes the Lease.

The wedge is the whole operator process frozen (SIGSTOP through containerd): it neither answers its
probes nor renews the Lease, as a process stuck in a hung call or a blocked event loop would look
from outside. Nothing here asserts how long anything takes; the figures are printed (`-s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from aicert_localcluster.stack import SYSTEM_NAMESPACE, Stack

pytestmark = pytest.mark.e2e

T = TypeVar("T")
SELECTOR = "app.kubernetes.io/component=operator"


def eventually(check: Callable[[], T | None], what: str, stack: Stack, timeout: float = 240) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}\n{stack.operator.describe()}\n{stack.operator.tail()}")
        time.sleep(0.5)


def operator_pods(stack: Stack) -> list[dict[str, Any]]:
    listed = stack.cluster.kubectl_json("get", "pods", "-n", SYSTEM_NAMESPACE, "-l", SELECTOR)
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def operator_container(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [s for s in pod["status"]["containerStatuses"] if s["name"] == "operator"]
    return dict(status)


def lease_holder(stack: Stack, pod_names: set[str]) -> str | None:
    """The holder of the operator's Lease (the Lease some operator pod holds), if it is one of them."""
    for lease in stack.cluster.kubectl_json("get", "leases", "-n", SYSTEM_NAMESPACE)["items"]:
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if holder in pod_names:
            return str(holder)
    return None


def all_ready_with_a_leader(stack: Stack) -> tuple[list[dict[str, Any]], str] | None:
    pods = operator_pods(stack)
    if len(pods) != 2 or not all(ready(p) for p in pods):
        return None
    holder = lease_holder(stack, {p["metadata"]["name"] for p in pods})
    return (pods, holder) if holder is not None else None


def test_both_replicas_ready_and_a_wedged_leader_restarted_while_the_standby_leads(stack: Stack) -> None:
    began = time.monotonic()
    pods, leader = eventually(
        lambda: all_ready_with_a_leader(stack), "both operator replicas Ready, one holding the Lease", stack
    )
    print(f"\nboth operator replicas Ready {time.monotonic() - began:.1f}s after the stack was up")
    (leader_pod,) = [p for p in pods if p["metadata"]["name"] == leader]
    (standby,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] != leader]
    restarts = operator_container(leader_pod)["restartCount"]
    node = stack.node_of(leader_pod)
    container_id = operator_container(leader_pod)["containerID"]
    bare = container_id.partition("://")[2]

    node.ctr("tasks", "kill", "--signal", "SIGSTOP", bare)  # the leader wedges
    wedged = time.monotonic()
    try:

        def leader_unready() -> bool:
            pod = next((p for p in operator_pods(stack) if p["metadata"]["name"] == leader), None)
            return pod is not None and not ready(pod)

        eventually(leader_unready, "the wedged leader stops being Ready", stack)
        print(f"the wedged leader is unready after {time.monotonic() - wedged:.1f}s")
        eventually(
            lambda: lease_holder(stack, {standby}),
            "the standby takes the Lease from the wedged leader",
            stack,
        )
        print(f"the standby holds the Lease after {time.monotonic() - wedged:.1f}s")

        def restarted_by_liveness() -> bool:
            pod = next((p for p in operator_pods(stack) if p["metadata"]["name"] == leader), None)
            return pod is not None and operator_container(pod)["restartCount"] > restarts

        eventually(restarted_by_liveness, "kubelet restarts the wedged leader's container", stack)
        print(f"kubelet restarted the wedged container after {time.monotonic() - wedged:.1f}s")
    finally:
        node.ctr("tasks", "kill", "--signal", "SIGCONT", bare, check=False)  # if it was never restarted

    events = stack.cluster.kubectl_json(
        "get", "events", "-n", SYSTEM_NAMESPACE, f"--field-selector=involvedObject.name={leader}"
    )["items"]
    assert any(
        e.get("reason") == "Unhealthy" and "Liveness probe failed" in e.get("message", "") for e in events
    ), "the restart came from the liveness probe"

    pods, new_leader = eventually(
        lambda: all_ready_with_a_leader(stack), "both replicas Ready again after the restart", stack
    )
    print(f"both replicas Ready again {time.monotonic() - wedged:.1f}s after the wedge")
    assert new_leader == standby  # the restarted replica came back as the standby, and is Ready
    assert {p["metadata"]["name"] for p in pods} == {leader, standby}
