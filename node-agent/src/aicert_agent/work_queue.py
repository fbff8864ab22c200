"""The pods of one node, worked on as their watch events arrive.

- At most one worker per pod at a time; a pod that changes while it is worked on is worked on again,
  with its latest state, as soon as that worker is done (no event is lost, none is worked twice at once).
- Lanes: each pod waits in the lane its latest state needs (`lane(pod)`; the agent's are `gate` and
  `seal`), and every lane has workers of its own, so long work in one lane (hashing a big output at a
  seal) never holds up another (measuring a run's inputs at its gate).
- Tenants take turns: in a lane, a free worker takes the waiting pod whose tenant (`tenant(pod)`, the
  namespace) has the fewest pods in progress there, then the one served longest ago, then the oldest
  pod; a tenant with many pods waiting does not take every turn.
- Cancellation: the work gets an event that is set when its pod goes away (a DELETED event, a pod
  `stop(pod)` says is ending, a pod missing from a fresh list) or when the queue closes. The work
  stops when it sees it (the agent's hashing checks it between chunks); the pod's next worker, if
  any, gets a fresh event.
- A pod whose work raised is tried again after `retry_seconds` (an API server refusing a status write
  while the operator catches up must not wait for the next sweep).
- `sweep` offers every pod again (a safety net for anything an event did not show).
- `when_idle` runs a function only while no pod is worked on or waiting, and no work starts until it
  returns: the agent re-bases its measurement log there, so no run can begin in between.

Nothing here knows Kubernetes beyond a pod's `metadata.uid` and `metadata.namespace`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aicert_agent")

Pod = dict[str, Any]
Work = Callable[[Pod, threading.Event], None]

DEFAULT_LANE = "pods"


def _uid(pod: Pod) -> str:
    return str(pod["metadata"]["uid"])


def namespace(pod: Pod) -> str:
    return str(pod["metadata"].get("namespace") or "")


def _one_lane(_pod: Pod) -> str:
    return DEFAULT_LANE


def _never(_pod: Pod) -> bool:
    return False


@dataclass(frozen=True)
class _InProgress:
    lane: str
    tenant: str
    cancel: threading.Event


class PodQueue:
    def __init__(
        self,
        work: Work,
        *,
        wanted: Callable[[Pod], bool],
        workers: int | Mapping[str, int],
        lane: Callable[[Pod], str] = _one_lane,
        tenant: Callable[[Pod], str] = namespace,
        stop: Callable[[Pod], bool] = _never,
        retry_seconds: float = 1.0,
    ) -> None:
        """`workers`: how many pods each lane works on at once (an int: one lane, `DEFAULT_LANE`)."""
        lanes = {DEFAULT_LANE: workers} if isinstance(workers, int) else dict(workers)
        if not lanes or min(lanes.values()) < 1:
            raise ValueError(f"every lane needs a worker: {lanes}")
        self._work = work
        self._wanted = wanted
        self._lane = lane
        self._tenant = tenant
        self._stop = stop
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pods: dict[str, Pod] = {}
        self._busy: dict[str, _InProgress] = {}
        self._again: set[str] = set()
        self._waiting: dict[str, list[str]] = {name: [] for name in lanes}
        self._served: dict[tuple[str, str], int] = {}  # (lane, tenant) -> the turn it last had
        self._turns = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, args=(name,), name=f"pod-{name}-{i}", daemon=True)
            for name, count in lanes.items()
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    # --- what the watch shows ----------------------------------------------------------------

    def replace_all(self, pods: list[Pod]) -> None:
        """A fresh list of the node's pods (at start, and whenever the watch restarts)."""
        with self._lock:
            fresh = {_uid(p): p for p in pods}
            for uid in (set(self._pods) | set(self._busy)) - set(fresh):
                self._forget(uid)
            for uid, pod in fresh.items():
                if self._stop(pod):
                    self._cancel(uid)
            self._pods = fresh
        self.sweep()

    def update(self, event_type: str, pod: Pod) -> None:
        uid = _uid(pod)
        with self._lock:
            if event_type == "DELETED":
                self._pods.pop(uid, None)
                self._forget(uid)
                return
            self._pods[uid] = pod
            if self._stop(pod):
                self._cancel(uid)
        self.offer(uid)

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def _cancel(self, uid: str) -> None:
        """The pod is ending: its work in progress should stop. Holds the lock."""
        busy = self._busy.get(uid)
        if busy is not None and not busy.cancel.is_set():
            log.info("pod %s is going away: stopping its work", uid)
            busy.cancel.set()

    def _forget(self, uid: str) -> None:
        """The pod is gone: cancel its work, drop it from the lanes. Holds the lock."""
        self._cancel(uid)
        self._again.discard(uid)
        self._forget_waiting(uid)

    # --- work ----------------------------------------------------------------------------------

    def sweep(self) -> None:
        for pod in self.pods():
            self.offer(_uid(pod))

    def offer(self, uid: str) -> None:
        """Work on the pod if it wants work now; if a worker has it, once more when that is done."""
        with self._lock:
            pod = self._pods.get(uid)
            if self._closed or pod is None:
                return
            if not self._wanted(pod):
                self._forget_waiting(uid)
                return
            if uid in self._busy:
                self._again.add(uid)
                return
            lane = self._lane(pod)
            if lane not in self._waiting:
                raise ValueError(f"pod {uid}: no lane {lane!r} (lanes: {sorted(self._waiting)})")
            if uid in self._waiting[lane]:
                return
            self._forget_waiting(uid)  # it may wait in another lane: its latest state decides
            self._waiting[lane].append(uid)
            self._ready.notify_all()

    def _forget_waiting(self, uid: str) -> None:
        """Holds the lock."""
        for waiting in self._waiting.values():
            if uid in waiting:
                waiting.remove(uid)

    def _next(self, lane: str) -> str:
        """The waiting pod of `lane` to work on next (tenants take turns). Holds the lock."""
        waiting = self._waiting[lane]
        in_progress = Counter(b.tenant for b in self._busy.values() if b.lane == lane)

        def turn(i: int) -> tuple[int, int, int]:
            tenant = self._tenant(self._pods[waiting[i]])
            return in_progress[tenant], self._served.get((lane, tenant), -1), i

        uid = waiting.pop(min(range(len(waiting)), key=turn))
        self._turns += 1
        self._served[(lane, self._tenant(self._pods[uid]))] = self._turns
        return uid

    def _serve(self, lane: str) -> None:
        """One worker of `lane`, until the queue closes."""
        while True:
            with self._ready:
                while not self._closed and not self._waiting[lane]:
                    self._ready.wait()
                if self._closed:
                    return
                uid = self._next(lane)
                pod = self._pods[uid]
                cancel = threading.Event()
                self._busy[uid] = _InProgress(lane, self._tenant(pod), cancel)
            self._run(uid, pod, cancel)

    def _run(self, uid: str, pod: Pod, cancel: threading.Event) -> None:
        failed = False
        try:
            self._work(pod, cancel)
        except Exception:
            failed = True
            log.exception("pod %s: trying again in %g s", uid, self._retry_seconds)
        finally:
            with self._lock:
                self._busy.pop(uid, None)
                again = uid in self._again
                self._again.discard(uid)
        if failed:
            timer = threading.Timer(self._retry_seconds, self.offer, (uid,))
            timer.daemon = True
            timer.start()
        elif again:
            self.offer(uid)

    def when_idle(self, fn: Callable[[list[Pod]], None]) -> bool:
        """Run `fn(pods)` if no pod is being worked on or waits, holding off new work until it returns."""
        with self._lock:
            if self._busy or any(self._waiting.values()):
                return False
            fn(list(self._pods.values()))
            return True

    def idle(self) -> bool:
        with self._lock:
            return not self._busy and not any(self._waiting.values())

    def close(self) -> None:
        """Stop: the work in progress is cancelled (its cancel event is set) and waited for; waiting
        pods are dropped (the agent's steps are safe to repeat: a restarted agent takes them up)."""
        with self._lock:
            self._closed = True
            for busy in self._busy.values():
                busy.cancel.set()
            for waiting in self._waiting.values():
                waiting.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
