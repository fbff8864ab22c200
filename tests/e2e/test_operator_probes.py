"""The operator's probes on real kubelets: both replicas Ready (a standby too), and a wedged leader
restarted by its liveness probe while the standby takes the Lease.

The wedge is the whole operator process frozen (SIGSTOP through containerd): it neither answers its
probes nor renews the Lease, as a process stuck in a hung call or a blocked event loop would look
from outside. Nothing here asserts how long anything takes; the figures are printed (`-s`).
"""

from __future__ import annotations

import datetime as dt
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


def ready_after_start(pod: dict[str, Any]) -> float:
    """Seconds from the operator container's start to the pod's Ready condition (API timestamps)."""
    started = operator_container(pod)["state"]["running"]["startedAt"]
    (condition,) = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    parse = dt.datetime.fromisoformat
    return (parse(condition["lastTransitionTime"]) - parse(started)).total_seconds()


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
    for pod in pods:
        print(f"{pod['metadata']['name']}: Ready {ready_after_start(pod):.0f}s after its container started")
    (leader_pod,) = [p for p in pods if p["metadata"]["name"] == leader]
    (standby,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] != leader]
    restarts = operator_container(leader_pod)["restartCount"]
    node = stack.node_of(leader_pod)
    container_id = operator_container(leader_pod)["containerID"]
    bare = container_id.partition("://")[2]

    node.ctr("tasks", "kill", "--signal", "SIGSTOP", bare)  # the leader wedges
    wedged = time.monotonic()
    seen: dict[str, float] = {}  # what happened, and when (seconds after the wedge)
    try:

        def recovered() -> bool:
            pod = next((p for p in operator_pods(stack) if p["metadata"]["name"] == leader), None)
            now = time.monotonic() - wedged
            if pod is not None and not ready(pod):
                seen.setdefault("the wedged leader unready", now)
            if lease_holder(stack, {standby}):
                seen.setdefault("the standby holds the Lease", now)
            if pod is not None and operator_container(pod)["restartCount"] > restarts:
                seen.setdefault("kubelet restarted the wedged container", now)
            return len(seen) == 3

        eventually(recovered, f"unready, lease taken over and restarted (seen: {seen})", stack)
    finally:
        node.ctr("tasks", "kill", "--signal", "SIGCONT", bare, check=False)  # if it was never restarted
    for what, after in sorted(seen.items(), key=lambda item: item[1]):
        print(f"{what} {after:.1f}s after the wedge")

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
