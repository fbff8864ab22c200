"""The life of one pod on a node double, in a thread of its own: set up its volumes (retried while a
claim is unbound or a ConfigMap missing), pull each image from the `ImageStore` (ErrImagePull, then
ImagePullBackOff with back-off, while the digest is not there), run the init containers one after the
other and then the containers all at once in their sandboxes, record each exit, report every change
through the pod's status subresource with the node's credentials, and record kubelet's Events. When
the pod ends its volumes are torn down; a pod with a deletionTimestamp has its processes sent SIGTERM,
then SIGKILL after min(grace period, `max_grace_seconds`), its terminal status reported, and is then
deleted with gracePeriodSeconds=0 (the uid as precondition) and its pod directory removed; a pod whose
object disappears is stopped and cleaned the same way. A pod already started by an earlier double for
the node is marked Failed (it cannot be re-attached). A failure fails only this pod.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..images import ImageNotFound, ImageStoreError
from .client import MERGE_PATCH, ApiError, KubeClient, log, now
from .env import Retry, container_command, container_env, expand
from .rootfs import ContainerRoots
from .sandbox import Processes, RunImage, capabilities_for, sandbox_argv
from .status import PodStatus
from .volumes import PodVolumes, safe_rmtree

if TYPE_CHECKING:
    from .double import NodeDouble
    from .node import Node

POLL_SECONDS = 0.1
PULL_BACKOFF_MAX_SECONDS = 10.0
T = TypeVar("T")


class Aborted(Exception):
    """The pod was deleted, or the node stops: stop what you are doing."""


class PodWorker:
    def __init__(self, double: NodeDouble, node: Node, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.double, self.node = double, node
        self.uid, self.namespace, self.name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.deleting = threading.Event()
        self.gone = threading.Event()
        self.done = threading.Event()
        self._procs = Processes()
        self._status = PodStatus()
        self._volumes = PodVolumes(self, self.pod_dir)
        self._roots = ContainerRoots(self.pod_dir)
        self.thread = threading.Thread(
            target=self._main, name=f"pod {self.namespace}/{self.name}", daemon=True
        )
        if meta.get("deletionTimestamp"):
            self.deleting.set()

    # events from the watch ------------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
            self._wake.set()

    def mark_gone(self) -> None:
        self.gone.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def pod(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.pod.get("spec") or {}
        return spec

    @property
    def kube(self) -> KubeClient:
        return self.node.kube

    # paths ----------------------------------------------------------------------------------------

    @property
    def pod_dir(self) -> Path:
        return self.double.kubelet_root / "pods" / self.uid

    @property
    def log_dir(self) -> Path:
        return self.double.kubelet_root / "pod-logs" / f"{self.namespace}_{self.name}_{self.uid}"

    # control --------------------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.double.stopping or self.gone.is_set() or self.deleting.is_set()

    def _check(self) -> None:
        if self._stopping():
            raise Aborted()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
        self._check()

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.spec
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        if self.double.stopping:
            grace = 0.5
        return float(min(float(grace), self.double.max_grace_seconds))

    def _record_error(self, message: str) -> None:
        self.double._record_error(f"pod {self.namespace}/{self.name}: {message}")

    # the life of the pod ----------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._guarded(self._run)
            self._guarded(self._stop_processes)
            self._guarded(self._teardown_volumes)
            while not self._stopping():
                self._wake.wait(1.0)
                self._wake.clear()
            if not self.double.stopping:
                if self.deleting.is_set() and not self.gone.is_set():
                    self._guarded(self._delete_object)
                self._guarded(lambda: safe_rmtree(self.pod_dir))
        finally:
            self.done.set()
            self.double._forget(self)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._record_error(repr(exc))

    def _run(self) -> None:
        try:
            self._lifecycle()
        except Aborted:
            pass
        except Exception as exc:
            self._record_error(repr(exc))
            self._kill_all(0.5)
            if not self._stopping() and not self._status.terminal:
                self._status.fail_unstarted(f"node double error: {exc}")
                self._report()

    def _stop_processes(self) -> None:
        """After the pod ended or was aborted: end what still runs, report the terminal status."""
        killed = self._kill_all(self._grace())
        if self.double.stopping or self.gone.is_set() or not self._status.statuses:
            return
        phase = self._status.phase
        self._settle()
        if killed or phase != self._status.phase:
            self._report()

    def _teardown_volumes(self) -> None:
        # a node that goes away keeps its files, like a kubelet that stops (not containers' layers)
        self._roots.teardown(self._record_error)
        self._volumes.teardown(self._record_error, keep_files=lambda: self.double.stopping)

    def _lifecycle(self) -> None:
        status = self.pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return  # finished before we saw it (another double): nothing to run
        self._check()
        previous = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if any(set(c.get("state") or {}) & {"running", "terminated"} for c in previous):
            self._status.mark_lost(self.spec, status)  # started by an earlier double: cannot re-attach
            self._report()
            return
        self._status.start_time = str(status.get("startTime") or self._status.start_time)
        spec = self.spec
        inits = list(spec.get("initContainers") or [])
        regular = list(spec.get("containers") or [])
        for c in inits:
            self._status.waiting(c, "PodInitializing")
        for c in regular:
            self._status.waiting(c, "PodInitializing" if inits else "ContainerCreating")
        self._status.set_ready_to_start(False)
        self._report()

        names = [c["name"] for c in [*inits, *regular]]
        self._retrying(self._volumes.setup, lambda retry: self._status.waiting_message(names, retry.message))
        self._status.set_ready_to_start(True)
        self._report()

        for c in inits:
            code = self._run_to_completion(c)
            if code != 0:
                self._status.phase = "Failed"
                self._report()
                return
        for c in regular:
            self._status.set_waiting(c, "ContainerCreating", "")
        self._report()
        for c in regular:
            self._start(c)
        self._wait_all()
        self._settle()
        self._report()
        while spec.get("restartPolicy") == "Always":
            self._sleep(1.0)  # Running, its containers exited, until it is deleted (Aborted)

    def _retrying(self, action: Callable[[], T], on_retry: Callable[[Retry], None]) -> T:
        """Run `action` until it stops raising Retry, showing each Retry (`on_retry`) meanwhile."""
        delay = 1.0
        while True:
            self._check()
            try:
                return action()
            except Retry as retry:
                on_retry(retry)
                self._report()
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

    def _settle(self) -> None:
        self._status.settle(self.spec, deleted=self.deleting.is_set() or self.gone.is_set())

    # containers -------------------------------------------------------------------------------------

    def _pull(self, container: Mapping[str, Any]) -> RunImage:
        ref = str(container.get("image", ""))
        backoff = 2.0
        while True:
            self._check()
            try:
                image = self.double._image(ref)
                self._event(
                    container, "Normal", "Pulled", f'Container image "{ref}" already present on machine'
                )
                return image
            except (ImageNotFound, ImageStoreError) as exc:
                message = str(exc)
                self._status.set_waiting(container, "ErrImagePull", message)
                self._report()
                self._event(container, "Warning", "Failed", f'Failed to pull image "{ref}": {message}')
                self._sleep(2.0)
                self._status.set_waiting(
                    container, "ImagePullBackOff", f'Back-off pulling image "{ref}": ErrImagePull: {message}'
                )
                self._report()
                self._event(container, "Normal", "BackOff", f'Back-off pulling image "{ref}"')
                self._sleep(backoff)
                backoff = min(backoff * 2, PULL_BACKOFF_MAX_SECONDS)

    def _prepare(self, container: Mapping[str, Any]) -> tuple[RunImage, list[str], dict[str, str]]:
        def attempt() -> tuple[RunImage, list[str], dict[str, str]]:
            image = self._pull(container)
            env = container_env(self, container, image)
            return image, container_command(container, image, env, self.double.python_executable), env

        return self._retrying(
            attempt, lambda retry: self._status.set_waiting(container, retry.reason, retry.message)
        )

    def _start(self, container: Mapping[str, Any]) -> None:
        name = str(container["name"])
        image, argv, env = self._prepare(container)
        mounts = []
        for mount in container.get("volumeMounts") or []:
            source, claim_read_only = self._volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / expand(str(mount["subPath"]), env)
                source.mkdir(parents=True, exist_ok=True)
            mounts.append((source, str(mount["mountPath"]), bool(mount.get("readOnly")) or claim_read_only))
        security = container.get("securityContext") or {}
        root = self._roots.mount(name, image.root_dir) if image.root_dir is not None else None
        command = sandbox_argv(
            bwrap=self.double.bwrap,
            host_binds=list(self.double.host_binds),
            app_dir=image.app_dir,
            mounts=mounts,
            root=root,
            workdir=str(container.get("workingDir") or image.workdir or "/"),
            hostname=self.name[:63],
            capabilities=capabilities_for(security),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            argv=argv,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pid = self._procs.start(name, command, env, self.log_dir / f"{name}.log")
        self._status.started(name, image.image_id, ready=name not in self._init_names())
        if name not in self._init_names():
            self._status.phase = "Running"  # initialized, and a container runs
        log.info("pod %s/%s: started %s (pid %d): %s", self.namespace, self.name, name, pid, argv)
        self._report()
        self._event(container, "Normal", "Created", f"Created container: {name}")
        self._event(container, "Normal", "Started", f"Started container {name}")

    def _containers(self) -> list[dict[str, Any]]:
        return [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]

    def _event(self, container: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event about the pod's container, as kubelet records them (best effort)."""
        if self.double.stopping:
            return
        name = str(container["name"])
        field_path = f"spec.{'initContainers' if name in self._init_names() else 'containers'}{{{name}}}"
        timestamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "fieldPath": field_path,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{self.namespace}/events", body=event)
        except (ApiError, OSError) as exc:
            log.debug("pod %s/%s: event %s not recorded: %s", self.namespace, self.name, reason, exc)

    def crash(self, container: str) -> None:
        """SIGKILL the container's processes at once, as a crash (no SIGTERM first)."""
        self._procs.kill(container)
        self.wake()

    def _init_names(self) -> set[str]:
        return {c["name"] for c in self.spec.get("initContainers") or []}

    def _run_to_completion(self, container: Mapping[str, Any]) -> int:
        self._start(container)
        self._wait_all()
        return self._procs.wait(str(container["name"]))

    def _wait_all(self) -> None:
        """Until no process runs, recording each exit as it happens."""
        while self._procs.running():
            self._sleep(POLL_SECONDS)
            self._reap()
        self._reap()

    def _reap(self) -> None:
        """Record the exit of every process that ended; report when something changed."""
        changed = False
        for name in self._procs.names():
            if not self._status.is_running(name):
                continue
            code = self._procs.exit_code(name)
            if code is not None:
                self._status.terminated(name, code, ready=name in self._init_names() and code == 0)
                log.info("pod %s/%s: %s exited %d", self.namespace, self.name, name, code)
                changed = True
        if changed:
            self._report()

    def _kill_all(self, grace: float) -> bool:
        running = self._procs.running()
        if not running:
            return False
        if not self.double.stopping:
            for c in self._containers():
                if self._procs.is_running(c["name"]):
                    self._event(c, "Normal", "Killing", f"Stopping container {c['name']}")
        self._procs.terminate(running, grace)
        for name in self._procs.names():
            if self._status.is_running(name):
                self._status.terminated(name, self._procs.wait(name), ready=False)
        return True

    # the API ---------------------------------------------------------------------------------------

    def _report(self) -> None:
        """Patch the pod's status subresource (merge patch: the lists are replaced whole)."""
        if self.double.stopping or self.gone.is_set():
            return
        body = {"metadata": {"uid": self.uid}, "status": self._status.body(self.pod)}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"

        def settled(exc: ApiError) -> bool:
            if exc.status == 404:
                self.mark_gone()
                return True
            if exc.status < 500 and exc.status != 429:
                raise exc
            return False

        self._call(
            lambda: self.kube.request("PATCH", path, body=body, content_type=MERGE_PATCH),
            settled,
            attempts=5,
            what=f"report the status of {self.namespace}/{self.name}",
        )

    def _delete_object(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        self._call(
            lambda: self.kube.request("DELETE", path, body=body),
            lambda exc: exc.status in (404, 409),  # gone already, or a new pod of the same name
            attempts=10,
            what=f"delete {self.namespace}/{self.name}",
        )

    def _call(
        self,
        request: Callable[[], object],
        settled: Callable[[ApiError], bool],
        *,
        attempts: int,
        what: str,
    ) -> None:
        """Make an API request, again after a connection error or an error status that `settled`
        neither settles nor raises, pausing longer each time; give up quietly when the node stops."""
        for attempt in range(attempts):
            try:
                request()
                return
            except ApiError as exc:
                if settled(exc):
                    return
                error: Exception = exc
            except OSError as exc:
                error = exc
            if self.double.stopping:
                return
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not {what}: {error}")
