"""A pod's status as kubelet reports it, for restart policy Never: the phase, the conditions
(PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady, Ready, each keeping its
lastTransitionTime while it holds), initContainerStatuses/containerStatuses (waiting
PodInitializing / ContainerCreating / ErrImagePull / ImagePullBackOff, running with startedAt,
terminated with exitCode, reason Completed/Error, startedAt, finishedAt), ready, started,
restartCount, image, imageID, containerID (`bwrap://<64 hex>`), hostIP/podIP and startTime. A failed
init container fails the pod; what never ran of a deleted pod, or what an earlier double started,
ends as ContainerStatusUnknown. `PodStatus` only keeps the state: the pod worker sends it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import LOOPBACK, now


@dataclass
class Condition:
    status: str
    reason: str = ""
    message: str = ""
    since: str = field(default_factory=now)


def waiting_status(container: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": {"reason": reason}},
        "lastState": {},
    }


def _lost_state() -> dict[str, Any]:
    """The state of a container whose process is gone without an exit code."""
    return {
        "terminated": {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
        }
    }


def _containers(spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return list(spec.get("initContainers") or []), list(spec.get("containers") or [])


class PodStatus:
    """The phase, conditions and container statuses of one pod, changed by its worker only."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.conditions: dict[str, Condition] = {}
        self.phase = "Pending"
        self.start_time = now()

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    # containers -----------------------------------------------------------------------------------

    def waiting(self, container: Mapping[str, Any], reason: str) -> None:
        self.statuses[container["name"]] = waiting_status(container, reason)

    def set_waiting(self, container: Mapping[str, Any], reason: str, message: str) -> None:
        waiting: dict[str, str] = {"reason": reason}
        if message:
            waiting["message"] = message
        self.statuses[container["name"]]["state"] = {"waiting": waiting}

    def waiting_message(self, names: Sequence[str], message: str) -> None:
        """Show `message` on those of the containers that wait, keeping their reason."""
        for name in names:
            state = self.statuses[name]["state"]
            if "waiting" in state:
                state["waiting"] = {"reason": state["waiting"]["reason"], "message": message}

    def set_ready_to_start(self, ready: bool) -> None:
        self.conditions["PodReadyToStartContainers"] = Condition("True" if ready else "False")

    def started(self, name: str, image_id: str, *, ready: bool) -> None:
        self.statuses[name].update(
            imageID=image_id,
            containerID=f"bwrap://{secrets.token_hex(32)}",
            started=True,
            ready=ready,
            state={"running": {"startedAt": now()}},
        )

    def is_running(self, name: str) -> bool:
        return "running" in self.statuses[name]["state"]

    def terminated(self, name: str, code: int, *, ready: bool) -> None:
        """A running container's process ended with `code`."""
        status = self.statuses[name]
        status.update(
            ready=ready,
            started=False,
            state={
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": status["state"]["running"]["startedAt"],
                    "finishedAt": now(),
                    "containerID": status["containerID"],
                }
            },
        )

    # the phase ------------------------------------------------------------------------------------

    def settle(self, spec: Mapping[str, Any], *, deleted: bool) -> None:
        """Kubelet's phase once nothing runs any more: for restartPolicy Never (and OnFailure) as
        kubelet; a restartPolicy Always pod stays Running until it is deleted (kubelet would restart
        its exited containers after a back-off; the double does not restart them)."""
        if self.terminal:
            return
        init_containers, containers = _containers(spec)
        inits = [self.statuses[c["name"]] for c in init_containers]
        regular = [self.statuses[c["name"]] for c in containers]
        if any("running" in s["state"] for s in inits + regular):
            return
        if spec.get("restartPolicy") == "Always" and not deleted:
            return
        if any("terminated" in s["state"] and s["state"]["terminated"]["exitCode"] != 0 for s in inits):
            self.phase = "Failed"
            return
        if all("terminated" in s["state"] for s in inits) and all(
            "terminated" in s["state"] for s in regular
        ):
            ok = all(s["state"]["terminated"]["exitCode"] == 0 for s in regular)
            self.phase = "Succeeded" if ok else "Failed"
            return
        if deleted:
            # deleted before it could finish: what never ran counts as failed, as kubelet reports it
            for s in inits + regular:
                if "waiting" in s["state"]:
                    s["state"] = _lost_state()
            self.phase = "Failed"

    def fail_unstarted(self, message: str) -> None:
        for status in self.statuses.values():
            if "waiting" in status["state"]:
                status["state"] = {
                    "terminated": {"exitCode": 128, "reason": "StartError", "message": message}
                }
        self.phase = "Failed"

    def mark_lost(self, spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """The pod was started by an earlier double for this node: its processes are gone."""
        previous = {
            s["name"]: dict(s)
            for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        }
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            s = previous.get(c["name"]) or waiting_status(c, "PodInitializing")
            if "terminated" not in (s.get("state") or {}):
                s.update(ready=False, started=False, state=_lost_state())
            self.statuses[c["name"]] = s
        self.start_time = str(status.get("startTime") or self.start_time)
        self.set_ready_to_start(False)
        self.phase = "Failed"

    # what is sent ---------------------------------------------------------------------------------

    def conditions_now(self, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
        init_containers, containers = _containers(pod.get("spec") or {})
        inits = [c["name"] for c in init_containers]
        regular = [c["name"] for c in containers]
        terminal = self.terminal
        incomplete = [
            n
            for n in inits
            if not (
                "terminated" in self.statuses[n]["state"]
                and self.statuses[n]["state"]["terminated"]["exitCode"] == 0
            )
        ]
        unready = [n for n in regular if not self.statuses[n]["ready"]]

        def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> None:
            wanted = "True" if ok else "False"
            current = self.conditions.get(kind)
            since = current.since if current is not None and current.status == wanted else now()
            self.conditions[kind] = Condition(wanted, "" if ok else reason, "" if ok else message, since)

        condition(
            "Initialized",
            not incomplete,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
        ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
        ready_message = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
        condition("ContainersReady", not unready and not terminal, ready_reason, ready_message)
        condition("Ready", not unready and not terminal, ready_reason, ready_message)
        if terminal:
            condition("PodReadyToStartContainers", False)
        scheduled_since = self.start_time
        for existing in (pod.get("status") or {}).get("conditions") or []:
            if existing.get("type") == "PodScheduled" and existing.get("lastTransitionTime"):
                scheduled_since = existing["lastTransitionTime"]
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"]
        out = []
        for kind in order:
            c = self.conditions.get(kind)
            if c is None:
                continue
            item: dict[str, Any] = {"type": kind, "status": c.status, "lastTransitionTime": c.since}
            if c.reason:
                item["reason"] = c.reason
            if c.message:
                item["message"] = c.message
            out.append(item)
        out.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_since})
        return out

    def body(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """The status subresource's content for `pod` (its latest copy)."""
        init_containers, containers = _containers(pod.get("spec") or {})
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": self.conditions_now(pod),
            "hostIP": LOOPBACK,
            "hostIPs": [{"ip": LOOPBACK}],
            "podIP": LOOPBACK,
            "podIPs": [{"ip": LOOPBACK}],
            "startTime": self.start_time,
            "containerStatuses": [self.statuses[c["name"]] for c in containers],
        }
        if init_containers:
            status["initContainerStatuses"] = [self.statuses[c["name"]] for c in init_containers]
        return status
