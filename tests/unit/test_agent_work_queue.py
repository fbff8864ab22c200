"""The agent's pod work queue: one worker per pod, latest state wins, failures retried, idle hook
exclusive; gates and seals in lanes of their own, tenants served in turn, work of a pod that goes
away cancelled."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from aicert.digest import HashingCancelled, hash_tree
from aicert_agent.work_queue import PodQueue

WAIT = 10.0  # a bound on a hang, not a measured time
GiB = 1 << 30


def pod(
    uid: str,
    version: int = 1,
    wanted: bool = True,
    *,
    lane: str = "seal",
    tenant: str = "ml",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "resourceVersion": str(version), "namespace": tenant}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "wanted": wanted, "lane": lane}


def wanted(p: dict[str, Any]) -> bool:
    return bool(p["wanted"])


def lane(p: dict[str, Any]) -> str:
    return str(p["lane"])


def deleting(p: dict[str, Any]) -> bool:
    return bool(p["metadata"].get("deletionTimestamp"))


def test_a_pod_changed_while_worked_on_is_worked_on_again_with_its_latest_state() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []
    done = threading.Event()

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
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

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
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
    queue = PodQueue(lambda p, _c: worked.append(p["metadata"]["uid"]), wanted=wanted, workers=1)
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

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
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

    def work_then_tell(p: dict[str, Any], cancel: threading.Event) -> None:
        work(p, cancel)
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


# --- liveness: no tenant stalls another ----------------------------------------------------------


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)
    return path


def test_a_gate_is_served_while_every_seal_worker_hashes_an_output(tmp_path: Path) -> None:
    """Two seals of one tenant hash huge (sparse) outputs with every seal worker; another tenant's
    gate still measures its input, and deleting the seals' pods stops their hashing."""
    outputs = {uid: _sparse(tmp_path / uid / "weights.bin", 16 * GiB) for uid in ("seal-1", "seal-2")}
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    hashing = {uid: threading.Event() for uid in outputs}
    gate_done = threading.Event()
    outcome: dict[str, str] = {}

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
        uid = p["metadata"]["uid"]
        if p["lane"] == "gate":
            outcome[uid] = hash_tree(data).root
            gate_done.set()
            return
        first = [True]

        def progress(_n: int) -> None:  # the seal holds its worker until the gate is done
            if first.pop() if first else False:
                hashing[uid].set()
                gate_done.wait(WAIT)

        try:
            manifest = hash_tree(outputs[uid], cancel=cancel, progress=progress)
            outcome[uid] = f"hashed {manifest.total_bytes}"
        except HashingCancelled:
            outcome[uid] = "cancelled"

    queue = PodQueue(work, wanted=wanted, workers={"gate": 1, "seal": 2}, lane=lane, stop=deleting)
    for uid in outputs:
        queue.update("ADDED", pod(uid, lane="seal", tenant="attacker"))
    assert all(e.wait(WAIT) for e in hashing.values())  # every seal worker is hashing now
    queue.update("ADDED", pod("gate-1", lane="gate", tenant="victim"))
    assert gate_done.wait(WAIT)
    assert outcome["gate-1"] == hash_tree(data).root
    queue.update("MODIFIED", pod("seal-1", 2, lane="seal", tenant="attacker", deleting=True))
    queue.update("DELETED", pod("seal-2", 2, lane="seal", tenant="attacker"))
    queue.close()
    assert outcome == {"gate-1": hash_tree(data).root, "seal-1": "cancelled", "seal-2": "cancelled"}


def test_the_work_of_a_pod_that_goes_away_is_cancelled_and_no_other() -> None:
    started = {uid: threading.Event() for uid in ("kept", "deleted", "deleting", "unlisted")}
    finished = {uid: threading.Event() for uid in started}
    cancelled: dict[str, bool] = {}
    release = threading.Event()

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
        uid = p["metadata"]["uid"]
        started[uid].set()
        if uid == "kept":
            assert release.wait(WAIT)
        else:
            assert cancel.wait(WAIT)
        cancelled[uid] = cancel.is_set()
        finished[uid].set()

    queue = PodQueue(work, wanted=wanted, workers=4, stop=deleting)
    for uid in started:
        queue.update("ADDED", pod(uid))
    assert all(e.wait(WAIT) for e in started.values())
    queue.update("DELETED", pod("deleted", 2))
    queue.update("MODIFIED", pod("deleting", 2, deleting=True))
    queue.replace_all([pod("kept", 2), pod("deleting", 3, deleting=True)])  # a relist: unlisted is gone
    release.set()
    assert all(e.wait(WAIT) for e in finished.values())
    queue.close()
    assert cancelled == {"kept": False, "deleted": True, "deleting": True, "unlisted": True}


def test_closing_the_queue_cancels_the_work_in_flight() -> None:
    """The agent is stopping: a long hash stops too (every step is safe to repeat after a restart)."""
    started = threading.Event()
    cancelled: list[bool] = []

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
        started.set()
        cancelled.append(cancel.wait(WAIT))

    queue = PodQueue(work, wanted=wanted, workers=1)
    queue.update("ADDED", pod("a"))
    assert started.wait(WAIT)
    queue.close()
    assert cancelled == [True]


def test_a_tenant_with_many_pods_waiting_does_not_take_every_turn() -> None:
    order: list[str] = []
    first_started, release, all_done = threading.Event(), threading.Event(), threading.Event()

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
        order.append(p["metadata"]["uid"])
        if p["metadata"]["uid"] == "a1":
            first_started.set()
            assert release.wait(WAIT)
        if len(order) == 4:
            all_done.set()

    queue = PodQueue(work, wanted=wanted, workers={"seal": 1}, lane=lane)
    queue.update("ADDED", pod("a1", tenant="a"))
    assert first_started.wait(WAIT)
    for uid in ("a2", "a3"):
        queue.update("ADDED", pod(uid, tenant="a"))
    queue.update("ADDED", pod("b1", tenant="b"))  # after a's, but b has nothing in progress
    release.set()
    assert all_done.wait(WAIT)
    queue.close()
    assert order == ["a1", "b1", "a2", "a3"]


def test_a_pod_waiting_in_one_lane_moves_to_the_lane_its_latest_state_needs() -> None:
    busy_started, release, moved = threading.Event(), threading.Event(), threading.Event()
    lanes: dict[str, str] = {}

    def work(p: dict[str, Any], cancel: threading.Event) -> None:
        uid = p["metadata"]["uid"]
        lanes[uid] = threading.current_thread().name.split("-")[1]
        if uid == "busy":
            busy_started.set()
            assert release.wait(WAIT)
        else:
            moved.set()

    queue = PodQueue(work, wanted=wanted, workers={"gate": 1, "seal": 1}, lane=lane)
    queue.update("ADDED", pod("busy", lane="seal"))
    assert busy_started.wait(WAIT)
    queue.update("ADDED", pod("moving", lane="seal"))  # waits behind busy
    queue.update("MODIFIED", pod("moving", 2, lane="gate"))
    assert moved.wait(WAIT)  # served while busy still holds the only seal worker
    release.set()
    queue.close()
    assert lanes == {"busy": "seal", "moving": "gate"}
