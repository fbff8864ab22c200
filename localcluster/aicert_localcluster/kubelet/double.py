"""`NodeDouble` plays kubelet for a set of nodes against a running cluster, with no real kubelet and no
container engine: `start()` registers every node and starts its heartbeat and pod watch threads, each
pod bound to one of the nodes gets a `PodWorker`, and `stop()` (or leaving the `with` block) ends every
pod's processes and unmounts its volumes without touching the API, like a node that goes away (a later
double for the same node marks the pods it finds already started as Failed). Internal failures are
logged (logger "aicert_localcluster.nodes") and kept in `errors`; each container's output is in
`<kubelet_root>/pod-logs/<namespace>_<pod>_<uid>/<container>.log` (`logs(uid)` reads them).

As kubelet requires of its root, `<kubelet_root>/pods` is a shared mount while the double runs, so a
container that mounts it with `mountPropagation: HostToContainer` (the agent's DaemonSet) sees the
volumes mounted there after it started.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from ..images import ImageStore
from .client import KubeClient, WatchStream, log, now
from .node import Node, NodeSpec
from .sandbox import (
    DEFAULT_HOST_BINDS,
    DEV_AGENT_IMAGE,
    VENV_MOUNT,
    RunImage,
    host_binds_for,
    run_image,
)
from .volumes import bind_mount, make_shared, mount_points, unmount
from .worker import PodWorker


class ClusterAccess(Protocol):
    """What the double needs of a LocalCluster."""

    def kubeconfig_for_node(self, node_name: str) -> Path: ...


class NodeDouble:
    """Plays kubelet for `nodes` against a running cluster. A context manager (start/stop)."""

    def __init__(
        self,
        cluster: ClusterAccess,
        kubelet_root: Path,
        images: ImageStore,
        nodes: Sequence[NodeSpec],
        agent_image: str = DEV_AGENT_IMAGE,
        python_executable: str = sys.executable,
        *,
        bwrap: str = "/usr/bin/bwrap",
        host_binds: Sequence[str] = DEFAULT_HOST_BINDS,
        venv_mount: str | None = VENV_MOUNT,
        max_grace_seconds: float = 5.0,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names: {names}")
        self.cluster = cluster
        self.kubelet_root = Path(kubelet_root).resolve()
        self.images = images
        self.specs = list(nodes)
        self.agent_image = agent_image
        self.python_executable = python_executable
        self.bwrap = bwrap
        self.max_grace_seconds = max_grace_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.host_binds = host_binds_for(python_executable, host_binds, venv_mount)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._nodes: list[Node] = []
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()
        self._streams: set[WatchStream] = set()
        self._errors: list[str] = []
        self._started_at = now()
        self._boot_id = secrets.token_hex(16)
        self._running = False
        self._pods_mount: Path | None = None  # the bind that makes <kubelet_root>/pods a shared mount

    # lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def node_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def errors(self) -> list[str]:
        """Internal failures so far (each also logged); a healthy run leaves this empty."""
        with self._lock:
            return list(self._errors)

    def start(self) -> None:
        """Register every node (synchronously: the Nodes exist and are Ready when this returns), then
        start the heartbeats and the pod watches."""
        if self._running:
            raise RuntimeError("the node double is already running")
        self._stop.clear()
        pods = self.kubelet_root / "pods"
        pods.mkdir(parents=True, exist_ok=True)
        if pods.resolve() not in mount_points():
            bind_mount(pods, pods, read_only=False)
            self._pods_mount = pods
        make_shared(pods)
        nodes = []
        for spec in self.specs:
            kube = KubeClient(
                self.cluster.kubeconfig_for_node(spec.name), self.kubelet_root / "credentials" / spec.name
            )
            node = Node(self, spec, kube)
            node.register()
            nodes.append(node)
        self._nodes = nodes
        self._running = True
        for node in nodes:
            for target, what in ((node.heartbeat_loop, "heartbeat"), (node.watch_loop, "pods")):
                thread = threading.Thread(target=target, name=f"node {node.name} {what}", daemon=True)
                node.threads.append(thread)
                thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop like a node that goes away: processes end, volumes are unmounted, the API is left as
        it is. Idempotent."""
        if not self._running:
            return
        self._stop.set()
        with self._lock:
            streams, workers = list(self._streams), list(self._workers.values())
        for stream in streams:
            stream.close()
        for worker in workers:
            worker.wake()
        deadline = time.monotonic() + timeout
        for node in self._nodes:
            for thread in node.threads:
                thread.join(max(deadline - time.monotonic(), 0.1))
        for worker in workers:
            worker.thread.join(max(deadline - time.monotonic(), 0.1))
        with self._lock:
            self._workers.clear()
        if self._pods_mount is not None:
            try:
                unmount(self._pods_mount)
            except OSError as exc:
                self._record_error(f"unmount {self._pods_mount}: {exc}")
            self._pods_mount = None
        self._running = False

    # pods -----------------------------------------------------------------------------------------

    def _on_pod(self, node: Node, pod: dict[str, Any], *, deleted: bool = False) -> None:
        uid = str(pod["metadata"]["uid"])
        with self._lock:
            if self.stopping:
                return
            worker = self._workers.get(uid)
            if worker is None:
                if deleted or uid in self._finished:
                    return
                worker = PodWorker(self, node, pod)
                self._workers[uid] = worker
                worker.thread.start()
                return
        if deleted:
            worker.mark_gone()
        else:
            worker.update(pod)

    def _forget_missing(self, node: Node, seen: set[str]) -> None:
        with self._lock:
            missing = [w for uid, w in self._workers.items() if w.node is node and uid not in seen]
        for worker in missing:
            worker.mark_gone()

    def _forget(self, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]
            if not self.stopping:
                self._finished.add(worker.uid)

    @contextlib.contextmanager
    def _track(self, stream: WatchStream) -> Iterator[None]:
        with self._lock:
            self._streams.add(stream)
        try:
            if self.stopping:
                stream.close()
            yield
        finally:
            with self._lock:
                self._streams.discard(stream)
            stream.close()

    def _record_error(self, message: str) -> None:
        log.error("node double: %s", message, exc_info=sys.exc_info()[0] is not None)
        with self._lock:
            self._errors.append(message)

    def _image(self, ref: str) -> RunImage:
        return run_image(
            self.images, ref, agent_image=self.agent_image, python_executable=self.python_executable
        )

    # inspection -----------------------------------------------------------------------------------

    def log_paths(self, pod_uid: str) -> dict[str, Path]:
        """Each container's log file (`<kubelet_root>/pod-logs/<ns>_<pod>_<uid>/<container>.log`)."""
        found: dict[str, Path] = {}
        for directory in (self.kubelet_root / "pod-logs").glob(f"*_{pod_uid}"):
            for path in sorted(directory.glob("*.log")):
                found[path.stem] = path
        return found

    def logs(self, pod_uid: str) -> dict[str, str]:
        """Each started container's output so far (stdout and stderr together), by container name."""
        return {name: path.read_text(errors="replace") for name, path in self.log_paths(pod_uid).items()}

    def crash(self, pod_uid: str, container: str) -> None:
        """Kill a running container of a pod on these nodes with SIGKILL (KeyError: no such pod)."""
        with self._lock:
            worker = self._workers[pod_uid]
        worker.crash(container)

    def pod_dir(self, pod_uid: str) -> Path:
        return self.kubelet_root / "pods" / pod_uid
