"""What the operator's watches have shown it: the latest CertifiedTrainings and their pods. Pure.

Reconciling from this view instead of reading each training and listing its pods afresh saves two
requests per reconcile. A watch can lag behind what the API server holds, never run ahead, so the
view is trusted only where lagging is harmless:

- a stale training makes the conditional status write fail (resourceVersion precondition) and the
  next reconcile reads it afresh (`needs_read`);
- a pod missing from the view while the status names its attempt could look like a deleted pod:
  `needs_pod_list` says when to list consistently, and `merge_pods` keeps whichever copy of a pod is
  newer, so a later watch event that is older than the listed copy never moves the view back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from aicert_contract.training import LABEL_TRAINING_UID
from aicert_operator.observe import PodView


def _version(obj: Mapping[str, Any]) -> int | None:
    """The object's resourceVersion as a number (etcd revisions are), or None when it is not one."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    if current is None:
        return True
    new, old = _version(candidate), _version(current)
    return new is None or old is None or new >= old


def needs_pod_list(status: Mapping[str, Any], pods: Iterable[PodView]) -> bool:
    """True when the status names an attempt whose pod the view does not hold: the watch may not have
    shown it yet, and deciding without it would take a live pod for a deleted one."""
    attempt = int(status.get("attempt") or 0)
    return attempt > 0 and not any(p.attempt == attempt for p in pods)


class WatchView:
    def __init__(self) -> None:
        self._trainings: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # training uid -> pod uid -> pod
        self._needs_read: set[str] = set()

    # --- trainings -----------------------------------------------------------------------------

    def see_training(self, key: str, body: Mapping[str, Any]) -> None:
        current = self._trainings.get(key)
        if _newer(body, current):
            self._trainings[key] = copy.deepcopy(dict(body))

    def forget_training(self, key: str) -> None:
        self._trainings.pop(key, None)
        self._needs_read.discard(key)

    def training(self, key: str) -> dict[str, Any] | None:
        """The latest body the watch showed, or None when it must be read from the API server."""
        if key in self._needs_read:
            return None
        return self._trainings.get(key)

    def mark_stale(self, key: str) -> None:
        """A write based on the view's copy found the training changed: read it afresh next time."""
        self._needs_read.add(key)

    def read(self, key: str, body: Mapping[str, Any]) -> None:
        """A fresh read replaces the view's copy and clears `mark_stale`."""
        self._needs_read.discard(key)
        self._trainings[key] = copy.deepcopy(dict(body))

    # --- pods ----------------------------------------------------------------------------------

    def see_pod(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_TRAINING_UID)
        uid = meta.get("uid")
        if not owner or not uid:
            return
        pods = self._pods.setdefault(str(owner), {})
        if deleted:
            pods.pop(str(uid), None)
            if not pods:
                self._pods.pop(str(owner), None)
            return
        if _newer(body, pods.get(str(uid))):
            pods[str(uid)] = copy.deepcopy(dict(body))

    def merge_pods(self, training_uid: str, listed: Iterable[Mapping[str, Any]]) -> None:
        """A consistent list of the training's pods: it is the truth for what exists; for each pod the
        newer of the listed and the watched copy is kept."""
        current = self._pods.get(training_uid, {})
        merged: dict[str, dict[str, Any]] = {}
        for pod in listed:
            uid = str((pod.get("metadata") or {}).get("uid") or "")
            known = current.get(uid)
            merged[uid] = known if known is not None and not _newer(pod, known) else copy.deepcopy(dict(pod))
        self._pods[training_uid] = merged

    def pods(self, training_uid: str) -> list[dict[str, Any]]:
        return list(self._pods.get(training_uid, {}).values())
