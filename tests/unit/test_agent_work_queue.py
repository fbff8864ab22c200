"""The agent's pod work queue: one worker per pod, latest state wins, failures retried, idle hook exclusive."""

from __future__ import annotations

import threading
from typing import Any

from aicert_agent.work_queue import PodQueue

WAIT = 10.0  # a bound on a hang, not a measured time


def pod(uid: str, version: int, wanted: bool = True) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": str(version)}, "wanted": wanted}


def wanted(p: dict[str, Any]) -> bool:
    return bool(p["wanted"])


def test_a_pod_changed_while_worked_on_is_worked_on_again_with_its_latest_state() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []
    done = threading.Event()

    def work(p: dict[str, Any]) -> None:
        seen.append(p["metadata"]["resourceVersion"])
        if len(seen) == 1:
            started.set()
            assert release.wait(WAIT)
        else:
            done.set()

    queue = PodQueue(work, wanted=wanted, workers=4)
    queue.update("ADDED", pod("a", 1))
    assert started.wait(WAIT)
    queue.update("MODIFIED", pod("a", 2))
    queue.update("MODIFIED", pod("a", 3))  # folded: one more run, with the latest
    release.set()
    assert done.wait(WAIT)
    queue.close()
    assert seen == ["1", "3"]


def test_a_failed_pod_is_tried_again() -> None:
    calls: list[int] = []
    done = threading.Event()

    def work(p: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("422: the operator has not written status.node yet")
        done.set()

    queue = PodQueue(work, wanted=wanted, workers=1, retry_seconds=0.01)
    queue.update("ADDED", pod("a", 1))
    assert done.wait(WAIT)
    queue.close()
    assert len(calls) == 2


def test_pods_that_want_nothing_are_not_worked_on_and_deleted_pods_are_forgotten() -> None:
    worked: list[str] = []
    queue = PodQueue(lambda p: worked.append(p["metadata"]["uid"]), wanted=wanted, workers=1)
    queue.update("ADDED", pod("idle", 1, wanted=False))
    queue.update("ADDED", pod("gone", 1, wanted=False))
    queue.update("DELETED", pod("gone", 2))
    queue.sweep()
    queue.close()
    assert worked == []
    assert [p["metadata"]["uid"] for p in queue.pods()] == ["idle"]


def test_the_idle_hook_never_runs_while_a_pod_is_worked_on_and_holds_off_new_work() -> None:
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def work(p: dict[str, Any]) -> None:
        order.append(f"work {p['metadata']['uid']}")
        if p["metadata"]["uid"] == "a":
            started.set()
            assert release.wait(WAIT)

    queue = PodQueue(work, wanted=wanted, workers=2)
    queue.update("ADDED", pod("a", 1))
    assert started.wait(WAIT)
    assert not queue.when_idle(lambda pods: order.append("rebase"))
    release.set()
    queue.close()  # waits for the worker
    b_done = threading.Event()

    def work_then_tell(p: dict[str, Any]) -> None:
        work(p)
        b_done.set()

    queue = PodQueue(work_then_tell, wanted=wanted, workers=2)
    arrival = threading.Thread(target=queue.update, args=("ADDED", pod("b", 1)))

    def rebase(pods: list[dict[str, Any]]) -> None:
        order.append("rebase")
        arrival.start()  # b's event arrives now; it waits for the hook
        arrival.join(0.05)
        order.append("rebase done")

    assert queue.when_idle(rebase)
    assert b_done.wait(WAIT)
    queue.close()
    assert order == ["work a", "rebase", "rebase done", "work b"]
