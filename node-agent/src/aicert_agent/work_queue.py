"""The pods of one node, worked on as their watch events arrive.

- At most one worker per pod at a time; a pod that changes while it is worked on is worked on again,
  with its latest state, as soon as that worker is done (no event is lost, none is worked twice at once).
- A pod whose work raised is tried again after `retry_seconds` (an API server refusing a status write
  while the operator catches up must not wait for the next sweep).
- `sweep` offers every pod again (a safety net for anything an event did not show).
- `when_idle` runs a function only while no pod is worked on, and no work starts until it returns:
  the agent re-bases its measurement log there, so no run can begin in between.

Nothing here knows Kubernetes beyond a pod's `metadata.uid`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("aicert_agent")

Pod = dict[str, Any]


def _uid(pod: Pod) -> str:
    return str(pod["metadata"]["uid"])


class PodQueue:
    def __init__(
        self,
        work: Callable[[Pod], None],
        *,
        wanted: Callable[[Pod], bool],
        workers: int,
        retry_seconds: float = 1.0,
    ) -> None:
        self._work = work
        self._wanted = wanted
        self._retry_seconds = retry_seconds
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pod")
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._closed = False

    # --- what the watch shows ----------------------------------------------------------------

    def replace_all(self, pods: list[Pod]) -> None:
        """A fresh list of the node's pods (at start, and whenever the watch restarts)."""
        with self._lock:
            self._pods = {_uid(p): p for p in pods}
        self.sweep()

    def update(self, event_type: str, pod: Pod) -> None:
        uid = _uid(pod)
        with self._lock:
            if event_type == "DELETED":
                self._pods.pop(uid, None)
                return
            self._pods[uid] = pod
        self.offer(uid)

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    # --- work ----------------------------------------------------------------------------------

    def sweep(self) -> None:
        for pod in self.pods():
            self.offer(_uid(pod))

    def offer(self, uid: str) -> None:
        """Work on the pod if it wants work now; if a worker has it, once more when that is done."""
        with self._lock:
            pod = self._pods.get(uid)
            if self._closed or pod is None or not self._wanted(pod):
                return
            if uid in self._busy:
                self._again.add(uid)
                return
            self._busy.add(uid)
        self._pool.submit(self._run, uid)

    def _run(self, uid: str) -> None:
        failed = False
        try:
            with self._lock:
                pod = self._pods.get(uid)
            if pod is not None:
                self._work(pod)
        except Exception:
            failed = True
            log.exception("pod %s: trying again in %g s", uid, self._retry_seconds)
        finally:
            with self._lock:
                self._busy.discard(uid)
                again = uid in self._again
                self._again.discard(uid)
        if failed:
            timer = threading.Timer(self._retry_seconds, self.offer, (uid,))
            timer.daemon = True
            timer.start()
        elif again:
            self.offer(uid)

    def when_idle(self, fn: Callable[[list[Pod]], None]) -> bool:
        """Run `fn(pods)` if no pod is being worked on, holding off new work until it returns."""
        with self._lock:
            if self._busy:
                return False
            fn(list(self._pods.values()))
            return True

    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)
