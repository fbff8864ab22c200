"""RealNode: upstream kubelet, containerd and runc running one node of a LocalCluster on this machine.

    with LocalCluster(tmp / "cluster") as cluster, RealNode(cluster, tmp / "node", name="gpu-0",
                                                           index=free_node_index(), gpus=2) as node:
        ref = node.import_image(store.layout, store.build(...))   # repo@sha256:<manifest hex>
        # or pull: RealNode(..., registries=[registry.host]) trusts a local Registry over http
        cluster.kubectl("apply", ...)                              # pods with nodeName gpu-0 run here

What a node changes on the host, and how stop() undoes it (localcluster/README.md, "Real nodes"):
- a bridge `aicertbr<N>` holding the node IP 10.244.N.1/24, pods in 10.244.N.0/24 (deleted);
- a cgroup `/aicert-node-<N>` in every hierarchy, kubelet's cgroupRoot (every process in it killed,
  the tree removed);
- a mount namespace of its own (a holder process, `unshare --mount --propagation slave`) in which
  containerd and kubelet run and make all their mounts, with the node's own directories bind-mounted
  over the fixed paths they use (config.NodeLayout.private_dirs): its mounts die with it, and two nodes
  never share /var/lib/kubelet/device-plugins or /var/log/containers;
- kubelet's six kernel settings and the fixed paths' directories, through the host ledger (restored
  and removed after the last node on the machine).
The node shares the host's network namespace (kubelet must reach the API server on 127.0.0.1); each
pod has its own, made by containerd and the bridge CNI plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ..binaries import ensure_node_binaries
from ..cluster import KUBELET_CLIENT_USER, LocalCluster, _die_with_parent, _tail, free_port
from ..images import ImageStore
from . import host
from .archive import pause_image, write_oci_archive
from .config import (
    CRI_NAMESPACE,
    KUBELET_ROOT,
    KUBELET_SYSCTLS,
    MAX_INDEX,
    NODE_SYSCTLS,
    NodeLayout,
    cni_config,
    containerd_config,
    kubelet_args,
    kubelet_config,
    registry_hosts,
    to_toml,
)

GPU_RESOURCE = "nvidia.com/gpu"
STOP_GRACE_SECONDS = 10.0
KILL_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.1
APISERVER_BINDING = "aicert-localcluster:kube-apiserver-kubelet-client"


class RealNodeError(RuntimeError):
    """The node failed to start or become ready, or stop() could not undo everything it changed."""


def free_node_index() -> int:
    """The lowest node index whose bridge name, 10.244.N.0/24 network and cgroup are all unused here
    right now (RealNode.start claims it by making its bridge, and fails if it was taken meanwhile)."""
    links, networks = host.link_names(), host.ipv4_networks_in_use()
    for index in range(1, MAX_INDEX + 1):
        layout = NodeLayout(Path("/"), Path("/"), index)
        if (
            layout.bridge not in links
            and layout.node_ip.rsplit(".", 1)[0] not in networks
            and not host.cgroup_exists(layout.cgroup_root)
        ):
            return index
    raise RealNodeError("no free node index: 254 bridges or networks 10.244.N.0/24 are in use")


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]


class RealNode:
    """One node of `cluster` run by the pinned kubelet, containerd and runc (see the module docstring).

    A context manager; `start()` returns once the Node is Ready (with `gpus` nvidia.com/gpu in its
    capacity and allocatable when gpus > 0); `stop()` is idempotent and raises RealNodeError naming
    whatever it could not undo.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        name: str,
        index: int,
        gpus: int = 0,
        bin_dir: Path | None = None,
        ledger: host.HostLedger | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[str] = (),
        registries: Sequence[str] = (),
        registry_names: Mapping[str, str] | None = None,
    ) -> None:
        """`labels` and `taints` (key=value:Effect) are the Node's from its registration on;
        `registries` (host:port) are served over plain http (see trust_registry); `registry_names`
        maps names images use (registry.local) to one of them."""
        self.cluster = cluster
        self.name = name
        self.gpus = gpus
        self.labels = dict(labels or {})
        self.taints = tuple(taints)
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else ensure_node_binaries()
        run = Path(tempfile.gettempdir()) / f"aicert-node-{index}-{secrets.token_hex(4)}"
        self.layout = NodeLayout(self.workdir, run, index)
        self.ledger = ledger if ledger is not None else host.HostLedger()
        self.images = ImageStore(self.workdir / "images")
        self.registries = list(registries)  # host:port of registries served over plain http
        self.registry_names = dict(registry_names or {})
        self.mount_namespace = ""  # "mnt:[<inode>]" of the node's mount namespace, once made
        self.kubelet_started_at = 0.0  # time.monotonic() when kubelet was started
        self.ready_at = 0.0  # time.monotonic() when start() saw the Node Ready
        self._holder_id = f"{os.getpid()}:{self.workdir}"
        self._holder: subprocess.Popen[bytes] | None = None
        self._processes: dict[str, _Process] = {}
        self._undo: list[str] = []  # what start() changed, in order: "ledger", "bridge", "cgroup", "run"
        self._lock = threading.Lock()

    # lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def node_ip(self) -> str:
        return self.layout.node_ip

    def start(self, timeout: float = 180) -> None:
        """Make the bridge, cgroup and mount namespace, start containerd (with the pause image
        imported) and kubelet, and wait until the Node is Ready. On failure everything is undone."""
        if self._undo:
            raise RealNodeError(f"node {self.name} is already running")
        deadline = time.monotonic() + timeout
        try:
            self._prepare()
            self._start_namespace(deadline)
            sandbox = pause_image(self.images, self.bin_dir / "pause")
            self._write_containerd_config(sandbox)
            self._start_containerd(deadline)
            self.import_image(self.images.layout, sandbox)
            self._authorize_apiserver()
            self._start_kubelet()
            self.wait_ready(max(deadline - time.monotonic(), 1.0))
        except BaseException as exc:
            try:
                self.stop()
            except RealNodeError as undo:
                raise RealNodeError(f"start failed ({exc}); undoing it failed too: {undo}") from exc
            raise

    def _prepare(self) -> None:
        layout = self.layout
        if layout.bridge in host.link_names():
            raise RealNodeError(f"link {layout.bridge} exists: node index {layout.index} is in use")
        if layout.node_ip.rsplit(".", 1)[0] in host.ipv4_networks_in_use():
            raise RealNodeError(f"network {layout.pod_subnet} is in use on this host")
        if host.cgroup_exists(layout.cgroup_root):
            raise RealNodeError(f"cgroup {layout.cgroup_root} exists: node index {layout.index} is in use")
        layout.run.mkdir(mode=0o700)
        self._undo.append("run")
        for directory in (
            layout.log_dir,
            layout.pod_logs_dir,
            layout.config_dir,
            layout.ipam_dir,
            layout.cni_conf_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        for private in layout.private_dirs.values():
            private.mkdir(parents=True, exist_ok=True)
        self._undo.append("ledger")  # before: a join that fails half-way is left all the same
        self.ledger.join(self._holder_id, sysctls=NODE_SYSCTLS, directories=list(layout.private_dirs))
        for key, value in NODE_SYSCTLS.items():  # kubelet sets its own; the node sets the rest
            if key not in KUBELET_SYSCTLS:
                (host.PROC / "sys" / key).write_text(value)
        # `ip link add` fails if the bridge exists, so it claims the index: what follows is this node's
        host.create_bridge(layout.bridge, layout.node_ip, mac=layout.bridge_mac)
        self._undo.append("bridge")
        self._undo.append("cgroup")  # before: a tree made in only some hierarchies is removed too
        host.create_cgroup(layout.cgroup_root)

    def stop(self) -> None:
        """Stop kubelet, every container, containerd and the shims; then remove the cgroup tree, the
        bridge and the run directory, and leave the host ledger. Idempotent. Raises RealNodeError
        listing whatever could not be undone (after trying everything)."""
        with self._lock:
            undo, self._undo = self._undo, []
        if not undo:
            return
        problems: list[str] = []
        self._stop_process("kubelet")
        problems += self._kill_until_gone("container", lambda: host.pids_in_cgroup(self.layout.cgroup_root))
        self._stop_process("containerd")
        holder_pid = self._holder.pid if self._holder is not None else -1
        problems += self._kill_until_gone(
            "shim",
            lambda: [p for p in host.pids_in_namespace("mnt", self.mount_namespace) if p != holder_pid],
        )
        if self._holder is not None:
            with contextlib.suppress(ProcessLookupError):
                self._holder.kill()
            self._holder.wait()
            self._holder = None
        problems += self._kill_until_gone(
            "mount-namespace", lambda: host.pids_in_namespace("mnt", self.mount_namespace)
        )
        roots = [self.workdir, self.layout.run]
        for mount in reversed(host.mounts_under(roots, host.host_mountinfo())):
            done = subprocess.run(["umount", "-l", mount.mount_point], capture_output=True, text=True)
            if done.returncode != 0:
                problems.append(f"mount {mount.mount_point}: {done.stderr.strip()}")
        if "cgroup" in undo:
            problems += self._retry(lambda: host.remove_cgroup(self.layout.cgroup_root))
        if "bridge" in undo:
            problems += host.delete_bridge(self.layout.bridge)
        if "ledger" in undo:
            problems += self.ledger.leave(self._holder_id)
        if "run" in undo:
            shutil.rmtree(self.layout.run, ignore_errors=True)
        if problems:
            raise RealNodeError(f"node {self.name}: could not undo: " + "; ".join(problems))

    def _stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self._processes.pop(name, None)
        if process is None:
            return
        if process.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(sig)
            try:
                process.popen.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.kill()
                process.popen.wait()
        process.handle.close()

    @staticmethod
    def _kill_until_gone(what: str, find: Callable[[], list[int]]) -> list[str]:
        """SIGKILL every process `find` returns until it returns none (or the deadline passes)."""
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        while True:
            pids = find()
            if not pids:
                return []
            if time.monotonic() >= deadline:
                return [f"{what} processes {pids} still running"]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _retry(attempt: Callable[[], list[str]]) -> list[str]:
        """Repeat an undo step until it reports no problem or the deadline passes (a cgroup can stay
        busy for a moment after its last process was killed)."""
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        while True:
            problems = attempt()
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(POLL_SECONDS)

    # processes ------------------------------------------------------------------------------------

    def _nsenter(self) -> list[str]:
        if self._holder is None:
            raise RealNodeError("the node's mount namespace is not there")
        return ["nsenter", f"--target={self._holder.pid}", "--mount", "--"]

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = self.layout.log_dir / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - closed in _stop_process
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        handle.flush()
        env = dict(
            os.environ, PATH=f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        )
        popen = subprocess.Popen(
            [*self._nsenter(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        process = _Process(name, popen, log, handle)
        self._processes[name] = process
        return process

    def _check_alive(self) -> None:
        for process in self._processes.values():
            code = process.popen.poll()
            if code is not None:
                raise RealNodeError(
                    f"{process.name} of node {self.name} exited with code {code}; tail of {process.log}:\n"
                    f"{_tail(process.log)}"
                )

    def _poll(self, ready: Callable[[], bool], deadline: float, what: str, log: str) -> None:
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() >= deadline:
                path = self.layout.log_dir / f"{log}.log"
                raise RealNodeError(f"node {self.name}: {what} not in time; tail of {path}:\n{_tail(path)}")
            time.sleep(POLL_SECONDS)

    def logs(self) -> dict[str, Path]:
        return {name: self.layout.log_dir / f"{name}.log" for name in ("containerd", "kubelet")}

    # the mount namespace --------------------------------------------------------------------------

    def _start_namespace(self, deadline: float) -> None:
        own = host.namespace_of(os.getpid(), "mnt")
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "slave", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        holder = self._holder

        def unshared() -> bool:
            if holder.poll() is not None:
                raise RealNodeError(f"unshare --mount exited with code {holder.returncode}")
            namespace = host.namespace_of(holder.pid, "mnt")
            return namespace not in ("", own)

        self._poll(unshared, deadline, "its mount namespace", "containerd")
        self.mount_namespace = host.namespace_of(holder.pid, "mnt")
        for fixed, private in self.layout.private_dirs.items():
            done = subprocess.run(
                [*self._nsenter(), "mount", "--bind", str(private), str(fixed)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if done.returncode != 0:
                raise RealNodeError(f"bind-mounting {private} over {fixed}: {done.stderr.strip()}")
        # kubelet's root shared, as on a node booted by systemd: the volumes kubelet mounts under it
        # reach containers that mount it with HostToContainer propagation (the aicert agent's).
        done = subprocess.run(
            [*self._nsenter(), "mount", "--make-rshared", str(KUBELET_ROOT)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RealNodeError(f"making {KUBELET_ROOT} shared: {done.stderr.strip()}")

    # containerd -----------------------------------------------------------------------------------

    def _write_containerd_config(self, sandbox_image: str) -> None:
        config = containerd_config(self.layout, self.bin_dir, sandbox_image)
        (self.layout.config_dir / "containerd.toml").write_text(to_toml(config))
        self._write_registry_hosts()
        cni = json.dumps(cni_config(self.layout), indent=2)
        (self.layout.cni_conf_dir / "10-aicert-bridge.conflist").write_text(cni)

    def trust_registry(self, registry: str) -> None:
        """Let containerd pull from `registry` (host:port, e.g. Registry.host) over plain http; also
        while the node runs (containerd reads its hosts directory at every pull)."""
        if registry not in self.registries:
            self.registries.append(registry)
        self._write_registry_hosts()

    def _write_registry_hosts(self) -> None:
        for relative, text in registry_hosts(self.registries, self.registry_names).items():
            path = self.layout.registry_hosts_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _start_containerd(self, deadline: float) -> None:
        config = self.layout.config_dir / "containerd.toml"
        self._spawn("containerd", [str(self.bin_dir / "containerd"), f"--config={config}"])

        def serving() -> bool:
            if not self.layout.containerd_socket.exists():
                return False
            plugins = self.ctr("plugins", "ls", check=False)
            if plugins.returncode != 0:
                return False
            # columns: TYPE ID PLATFORMS STATUS
            cri = [
                line.split()
                for line in plugins.stdout.splitlines()
                if line.split()[:2] == ["io.containerd.grpc.v1", "cri"]
            ]
            if cri and cri[0][-1] != "ok":
                raise RealNodeError(f"containerd's CRI plugin did not load: {' '.join(cri[0])}")
            return bool(cri)

        self._poll(serving, deadline, "containerd with its CRI plugin", "containerd")

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """containerd's own client on this node's socket, in the CRI's namespace (k8s.io)."""
        cmd = [
            str(self.bin_dir / "ctr"),
            f"--address={self.layout.containerd_socket}",
            f"--namespace={CRI_NAMESPACE}",
            *args,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RealNodeError(f"{' '.join(cmd[3:])} failed (exit {done.returncode}): {done.stderr.strip()}")
        return done

    def import_image(self, layout: Path, reference: str) -> str:
        """Import the image `reference` (`repo@sha256:<manifest hex>`) of the OCI layout at `layout`
        into containerd under that digest reference (and no other name), unpacked for the CRI.
        Returns the reference; a pod using it runs without a pull and reports it as its imageID."""
        archive = self.workdir / "imports" / f"{reference.rsplit(':', 1)[-1]}.tar"
        repository, digest = write_oci_archive(layout, reference, archive)
        try:
            self.ctr(
                "images",
                "import",
                "--base-name",
                repository,
                "--digests",
                "--snapshotter",
                "overlayfs",
                str(archive),
            )
        finally:
            archive.unlink(missing_ok=True)
        imported = f"{repository}@{digest}"
        if imported not in self.ctr("images", "ls", "--quiet").stdout.split():
            raise RealNodeError(f"containerd does not list {imported} after importing it")
        return imported

    def kill_container(self, container_id: str) -> None:
        """SIGKILL a container's process (`containerd://<id>` as a pod status names it): a crash,
        which kubelet sees and handles as it would any other."""
        runtime, _, bare = container_id.partition("://")
        if runtime != "containerd" or not bare:
            raise RealNodeError(f"not a containerd container ID: {container_id!r}")
        self.ctr("tasks", "kill", "--signal", "SIGKILL", bare)

    def container_logs(self, namespace: str, pod: str, uid: str, container: str) -> list[Path]:
        """The log files kubelet keeps for `container` of a pod (one per run of it, oldest first)."""
        directory = self.layout.pod_logs_dir / f"{namespace}_{pod}_{uid}" / container
        if not directory.is_dir():
            return []
        return sorted(directory.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)

    # kubelet --------------------------------------------------------------------------------------

    def _authorize_apiserver(self) -> None:
        """kubelet authorizes the API server's calls (logs, exec) by SubjectAccessReview: bind its
        client identity to system:kubelet-api-admin, as kubeadm does."""
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": APISERVER_BINDING},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}
            ],
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))

    def _start_kubelet(self) -> None:
        layout = self.layout
        serving = self.cluster.kubelet_serving_cert(self.name, layout.node_ip)
        config = kubelet_config(
            layout,
            port=free_port(),
            healthz_port=free_port(),
            client_ca_file=self.cluster.ca_file,
            tls_cert_file=serving.cert,
            tls_key_file=serving.key,
        )
        config_file = layout.config_dir / "kubelet.json"
        config_file.write_text(json.dumps(config, indent=2))
        kubeconfig = self.cluster.kubeconfig_for_node(self.name)
        args = kubelet_args(
            layout,
            name=self.name,
            config_file=config_file,
            kubeconfig=kubeconfig,
            labels=self.labels,
            taints=self.taints,
        )
        self.kubelet_started_at = time.monotonic()
        self._spawn("kubelet", [str(self.bin_dir / "kubelet"), *args])

    def node(self) -> dict[str, Any] | None:
        """The Node object (None until kubelet registered it)."""
        done = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
        if done.returncode != 0:
            return None
        node: dict[str, Any] = json.loads(done.stdout)
        return node

    def _advertise_gpus(self, node: dict[str, Any]) -> bool:
        """Patch nvidia.com/gpu into the Node's status capacity and allocatable, as the Kubernetes docs
        advertise an extended resource (kubelet keeps both in its later status updates; patching
        allocatable too saves waiting for its next one). True once both say `gpus`."""
        status = node.get("status") or {}
        wanted = str(self.gpus)
        fields = ("capacity", "allocatable")
        if all((status.get(f) or {}).get(GPU_RESOURCE) == wanted for f in fields):
            return True
        patch = {"status": {f: {GPU_RESOURCE: wanted} for f in fields}}
        self.cluster.kubectl(
            "patch", "node", self.name, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )
        return False

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the Node exists, is Ready and (gpus > 0) has its GPUs allocatable."""
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            node = self.node()
            if node is None:
                return False
            if self.gpus and not self._advertise_gpus(node):
                return False
            conditions = (node.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        self._poll(ready, deadline, "Node Ready", "kubelet")
        if not self.ready_at:
            self.ready_at = time.monotonic()
